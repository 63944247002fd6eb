"""Compile a CEL parse tree into nested Python closures, a faster evaluator.

cel-python 0.5.0 interprets the lark parse tree on every evaluation, and
its visitor spends most of its time building ``typing`` subscripts for
``cast`` calls and setting up an activation. These closures call the same
cel-python operator and function implementations with the same values, in
the same order, and turn the same exceptions into ``CELEvalError`` values,
so results and errors match the interpreter without the tree walk. One
difference remains: a ValueError or OverflowError in a comparison becomes an
error value here, where the interpreter raises it.
benchmarks/bench_rules.py measures the difference.

Only the common forms are compiled: literals, field names, the logical,
relational, arithmetic and unary operators, the conditional operator, list
literals, function calls and method calls. ``compile_closure`` returns None
for anything else (macros, ``has``, field selection such as ``user.role``,
indexing, maps), and the caller then keeps the interpreter for the whole
expression. tests/test_record_rules.py compares both evaluators on a table
of expressions and values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.evaluation import CELEvalError, base_functions

#: Evaluates a compiled sub-expression against an activation of CEL values.
Closure = Callable[[Mapping[str, Any]], Any]

_RELATIONS = {
    "relation_lt": "_<_",
    "relation_le": "_<=_",
    "relation_ge": "_>=_",
    "relation_gt": "_>_",
    "relation_eq": "_==_",
    "relation_ne": "_!=_",
    "relation_in": "_in_",
}
_ARITHMETIC = {
    "addition_add": "_+_",
    "addition_sub": "_-_",
    "multiplication_mul": "_*_",
    "multiplication_div": "_/_",
    "multiplication_mod": "_%_",
}
_UNARY = {"unary_not": "!_", "unary_neg": "-_"}
#: Function-like macros that the interpreter handles itself.
_SPECIAL_CALLS = frozenset({"has", "dyn"})
_MACROS = frozenset({"map", "filter", "all", "exists", "exists_one", "reduce", "min"})


class _Unsupported(Exception):
    """A form of expression that the closures do not compile."""


def compile_closure(
    tree: lark.Tree, functions: Mapping[str, Any], constant: Callable[[str], Any]
) -> Closure | None:
    """Return a closure equivalent to ``tree``, or None if it uses a form
    that only the interpreter evaluates.

    ``functions`` replaces entries of cel-python's ``base_functions`` as in
    ``Environment.program``, and ``constant`` evaluates a literal's source.
    """
    table = {**base_functions, **functions}
    try:
        return _Compiler(table, constant).node(tree)
    except _Unsupported:
        return None


class _Compiler:
    def __init__(
        self, functions: Mapping[str, Any], constant: Callable[[str], Any]
    ) -> None:
        self.functions = functions
        self.constant = constant

    def node(self, tree: lark.Tree | lark.Token) -> Closure:
        if not isinstance(tree, lark.Tree):
            raise _Unsupported(repr(tree))
        method = getattr(self, f"_{tree.data}", None)
        if method is None:
            raise _Unsupported(str(tree.data))
        closure: Closure = method(tree)
        return closure

    def _only_child(self, tree: lark.Tree) -> Closure:
        if len(tree.children) != 1:
            raise _Unsupported(str(tree.data))
        return self.node(tree.children[0])

    def _expr(self, tree: lark.Tree) -> Closure:
        if len(tree.children) == 1:
            return self.node(tree.children[0])
        if len(tree.children) != 3:
            raise _Unsupported("expr")
        condition, first, second = (self.node(child) for child in tree.children)
        choose = self.functions["_?_:_"]

        def run(values: Mapping[str, Any]) -> Any:
            test = condition(values)
            left = right = celtypes.BoolType(False)
            try:
                if test:
                    left = first(values)
                else:
                    right = second(values)
                return choose(test, left, right)
            except TypeError as err:
                return _overload_error("_?_:_", err)

        return run

    def _logical(self, tree: lark.Tree, name: str) -> Closure:
        if len(tree.children) == 1:
            return self.node(tree.children[0])
        left, right = (self.node(child) for child in tree.children)
        function = self.functions[name]

        def run(values: Mapping[str, Any]) -> Any:
            first, second = left(values), right(values)
            try:
                return function(first, second)
            except TypeError as err:
                return _overload_error(name, err)

        return run

    def _conditionalor(self, tree: lark.Tree) -> Closure:
        return self._logical(tree, "_||_")

    def _conditionaland(self, tree: lark.Tree) -> Closure:
        return self._logical(tree, "_&&_")

    def _binary(self, tree: lark.Tree, names: Mapping[str, str]) -> Closure:
        """Compile ``[operator(left), right]``; the grammar nests the left
        operand inside the operator node."""
        if len(tree.children) == 1:
            return self.node(tree.children[0])
        operator, right_tree = tree.children
        if not isinstance(operator, lark.Tree) or operator.data not in names:
            raise _Unsupported(str(tree.data))
        label = str(operator.data)
        function = self.functions[names[label]]
        left, right = self._only_child(operator), self.node(right_tree)

        def run(values: Mapping[str, Any]) -> Any:
            first, second = left(values), right(values)
            try:
                return function(first, second)
            except TypeError as err:
                return _overload_error(repr(label), err)
            except ZeroDivisionError as err:
                return _error("modulus or divide by zero", err)
            except (ValueError, OverflowError) as err:
                return _error("return error for overflow", err)

        return run

    def _relation(self, tree: lark.Tree) -> Closure:
        return self._binary(tree, _RELATIONS)

    def _addition(self, tree: lark.Tree) -> Closure:
        return self._binary(tree, _ARITHMETIC)

    def _multiplication(self, tree: lark.Tree) -> Closure:
        return self._binary(tree, _ARITHMETIC)

    def _unary(self, tree: lark.Tree) -> Closure:
        if len(tree.children) == 1:
            return self.node(tree.children[0])
        operator, operand_tree = tree.children
        if not isinstance(operator, lark.Tree) or operator.data not in _UNARY:
            raise _Unsupported("unary")
        label = str(operator.data)
        function = self.functions[_UNARY[label]]
        operand = self.node(operand_tree)

        def run(values: Mapping[str, Any]) -> Any:
            value = operand(values)
            try:
                return function(value)
            except TypeError as err:
                return _overload_error(repr(label), err)
            except ValueError as err:
                return _error("return error for overflow", err)

        return run

    def _member(self, tree: lark.Tree) -> Closure:
        return self._only_child(tree)

    def _member_dot_arg(self, tree: lark.Tree) -> Closure:
        target, name = self.node(tree.children[0]), str(tree.children[1])
        if name in _MACROS or name not in self.functions:
            raise _Unsupported(name)
        arguments = self._arguments(
            tree.children[2] if len(tree.children) > 2 else None
        )
        function = self.functions[name]

        def run(values: Mapping[str, Any]) -> Any:
            value = target(values)
            listed = arguments(values)
            if isinstance(value, CELEvalError):
                return value
            if isinstance(listed, CELEvalError):
                return listed
            return _call(function, [value, *listed])

        return run

    def _primary(self, tree: lark.Tree) -> Closure:
        child = tree.children[0]
        if not isinstance(child, lark.Tree):
            raise _Unsupported("primary")
        if child.data == "literal":
            value = self.constant(str(child.children[0]))
            return lambda values: value
        if child.data == "paren_expr":
            return self._only_child(child)
        if child.data == "ident":
            return _variable(str(child.children[0]))
        if child.data == "list_lit":
            if not child.children:
                return lambda values: celtypes.ListType()
            return self._arguments(child.children[0])
        if child.data == "ident_arg":
            return self._call(child)
        raise _Unsupported(str(child.data))

    def _call(self, tree: lark.Tree) -> Closure:
        name = str(tree.children[0])
        if name in _SPECIAL_CALLS or name not in self.functions:
            raise _Unsupported(name)
        arguments = self._arguments(
            tree.children[1] if len(tree.children) > 1 else None
        )
        function = self.functions[name]

        def run(values: Mapping[str, Any]) -> Any:
            listed = arguments(values)
            if isinstance(listed, CELEvalError):
                return listed
            return _call(function, list(listed))

        return run

    def _arguments(self, tree: lark.Tree | lark.Token | None) -> Closure:
        """Compile an ``exprlist``: a ListType of the values, or the first
        error among them."""
        if tree is None:
            return lambda values: celtypes.ListType()
        if not isinstance(tree, lark.Tree) or tree.data != "exprlist":
            raise _Unsupported("exprlist")
        items = [self.node(child) for child in tree.children]

        def run(values: Mapping[str, Any]) -> Any:
            results = [item(values) for item in items]
            for result in results:
                if isinstance(result, CELEvalError):
                    return result
            return celtypes.ListType(results)

        return run


def _variable(name: str) -> Closure:
    def run(values: Mapping[str, Any]) -> Any:
        try:
            return values[name]
        except KeyError as err:
            return _error(f"undeclared reference to {name!r}", err)

    return run


def _call(function: Any, arguments: list[Any]) -> Any:
    for argument in arguments:
        if isinstance(argument, CELEvalError):
            return argument
    try:
        return function(*arguments)
    except ValueError as err:
        return _error("return error for overflow", err)
    except (TypeError, AttributeError) as err:
        return _error("no such overload", err)


def _overload_error(operator: str, err: Exception) -> CELEvalError:
    return _error(f"found no matching overload for {operator}", err)


def _error(message: str, err: Exception) -> CELEvalError:
    value = CELEvalError(message, err.__class__, err.args)
    value.__cause__ = err
    return value


def literal_constant(environment: celpy.Environment) -> Callable[[str], Any]:
    """Return a function that evaluates the source of one CEL literal with
    the interpreter, remembering the values of recent literals."""

    @functools.lru_cache(maxsize=4096)
    def evaluate(source: str) -> Any:
        return environment.program(environment.compile(source)).evaluate({})

    return evaluate
