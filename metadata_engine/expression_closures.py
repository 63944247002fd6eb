"""Compile a CEL parse tree into nested Python closures, two kinds of them.

cel-python 0.5.0 interprets the lark parse tree on every evaluation, and
its visitor spends most of its time building ``typing`` subscripts for
``cast`` calls and setting up an activation. This module has two faster
evaluators, and ``Expression.evaluate_plain`` tries them in this order:

- ``compile_native`` builds closures over plain Python values (None, bool,
  int, float, str, datetime, timedelta, list, dict). They handle what
  validation rules and formulas mostly use: literals, names, field
  selection (``user.role``), indexing, list literals, the logical,
  relational, arithmetic and unary operators, the conditional operator,
  ``size``, ``int``, ``double``, ``string``, the text methods, the
  timestamp and duration getters without a time zone, and the ``all``,
  ``exists``, ``exists_one``, ``filter`` and ``map`` macros over lists.
  They raise ``Fallback`` for any error and for operand types that
  cel-python treats in its own way, so they return a value only where
  cel-python returns the same one.
  tests/test_expression_native.py checks this on generated expressions.
- ``compile_closure`` builds closures that call cel-python's operator and
  function implementations with cel-python's values, in the same order,
  and turn the same exceptions into ``CELEvalError`` values, so results
  and errors match the interpreter without the tree walk. One difference
  remains: a ValueError or OverflowError in a comparison becomes an error
  value here, where the interpreter raises it. They compile literals,
  names, the operators, list literals and function and method calls, and
  ``compile_closure`` returns None for anything else (macros, ``has``,
  field selection, indexing, maps). The caller then keeps the interpreter
  for the whole expression. tests/test_record_rules.py compares them with
  the interpreter on a table of expressions and values.

benchmarks/bench_rules.py measures the result.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import operator
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


# Native closures over plain Python values -------------------------------------
#
# ``compile_native`` builds closures that take and return plain values: None,
# bool, int, float, str, datetime (aware, UTC), timedelta, list and dict. They
# compute only what they can compute exactly as cel-python 0.5.0 does. They
# raise ``Fallback`` for anything else: an int64 overflow, a division by
# zero, a missing map key, or operand types that an operator does not pair
# natively. The caller then evaluates the whole expression again with
# cel-python's semantics (``compile_closure`` above, or the interpreter), so
# CEL error values never appear here. Every error, and every quirk of
# cel-python's mixed-type operators, comes from cel-python itself.
#
# NOTE: one result differs. When these closures reach a result before a
# failing operand, as in ``true || xs.all(v, v > 0)`` with a null ``xs``,
# they return it as CEL specifies, where cel-python 0.5.0 lets the macro's
# TypeError escape and the whole expression fails.

#: Evaluates a compiled sub-expression against a mapping of plain values.
NativeClosure = Callable[[Mapping[str, Any]], Any]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: Types whose values ``==`` and ``in`` compare natively, only with their own
#: type: cel-python rejects or coerces mixed pairs in ways left to it.
_EQUATABLE = frozenset({bool, int, float, str, dt.datetime, dt.timedelta})
#: Types whose values ``<``, ``<=``, ``>`` and ``>=`` order natively.
_ORDERED = _EQUATABLE
_TIMESTAMP_GETTERS: dict[str, Callable[[dt.datetime], int]] = {
    "getFullYear": lambda moment: moment.year,
    "getMonth": lambda moment: moment.month - 1,
    "getDate": lambda moment: moment.day,
    "getDayOfMonth": lambda moment: moment.day - 1,
    "getDayOfWeek": lambda moment: moment.isoweekday() % 7,
    "getDayOfYear": lambda moment: moment.timetuple().tm_yday - 1,
    "getHours": lambda moment: moment.hour,
    "getMinutes": lambda moment: moment.minute,
    "getSeconds": lambda moment: moment.second,
    "getMilliseconds": lambda moment: moment.microsecond // 1000,
}
_DURATION_GETTERS: dict[str, Callable[[dt.timedelta], int]] = {
    "getHours": lambda span: int(span.total_seconds() / 60 / 60),
    "getMinutes": lambda span: int(span.total_seconds() / 60),
    "getSeconds": lambda span: int(span.total_seconds()),
    "getMilliseconds": lambda span: int(span.total_seconds() * 1000),
}
#: cel-python's largest duration, in seconds (``DurationType.MaxSeconds``).
_MAX_DURATION_SECONDS = 315_576_000_000


class Fallback(Exception):
    """A value or operation that native closures leave to cel-python."""


def compile_native(
    tree: lark.Tree, constant: Callable[[str], Any]
) -> NativeClosure | None:
    """Return a closure over plain values equivalent to ``tree``, or None if
    it uses a form that only cel-python evaluates.

    ``constant`` evaluates a literal's source to a cel-python value. The
    closure raises ``Fallback`` where cel-python must decide the result.
    """
    try:
        return _NativeCompiler(constant).node(tree)
    except _Unsupported:
        return None


def _checked_int(value: int) -> int:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise Fallback("int64 overflow")


def _equals(left: Any, right: Any) -> bool:
    """Return ``left == right`` as the null-safe ``_==_`` of expressions.py."""
    if left is None or right is None:
        return left is None and right is None
    kind = type(left)
    if kind is type(right) and kind in _EQUATABLE:
        return bool(left == right)
    raise Fallback("==")


def _differs(left: Any, right: Any) -> bool:
    return not _equals(left, right)


def _ordering(compare: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool]:
    def run(left: Any, right: Any) -> bool:
        kind = type(left)
        if kind is type(right) and kind in _ORDERED:
            return bool(compare(left, right))
        if kind is float and type(right) is int:
            # cel-python orders a double against an int (float's own
            # comparison), but not an int against a double.
            return bool(compare(left, right))
        raise Fallback("ordering")

    return run


def _contained(item: Any, container: Any) -> bool:
    kind = type(item)
    if type(container) not in (list, dict):
        raise Fallback("in")
    if kind in _EQUATABLE:
        for candidate in container:
            if type(candidate) is not kind:
                raise Fallback("in")
            if candidate == item:
                return True
        return False
    if item is None:
        # cel-python's strings compare unequal to null, where its other
        # types raise an error.
        for candidate in container:
            if type(candidate) is not str:
                raise Fallback("in")
        return False
    raise Fallback("in")


def _add(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind is int and type(right) is int:
        return _checked_int(left + right)
    if kind is float and type(right) in (float, int):
        return float(left + right)
    if kind is str and type(right) is str:
        return left + right
    raise Fallback("+")


def _subtract(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind is int and type(right) is int:
        return _checked_int(left - right)
    if kind is float and type(right) in (float, int):
        return float(left - right)
    if kind is dt.datetime and type(right) is dt.datetime:
        span = left - right
        if abs(span.total_seconds()) > _MAX_DURATION_SECONDS:
            raise Fallback("duration range")
        return span
    raise Fallback("-")


def _multiply(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind is int and type(right) is int:
        return _checked_int(left * right)
    if kind is float and type(right) in (float, int):
        return float(left * right)
    raise Fallback("*")


def _divide(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind is int and type(right) is int and right != 0:
        # CEL truncates toward zero, where Python's // floors.
        sign = -1 if (left < 0) != (right < 0) else 1
        return _checked_int(sign * (abs(left) // abs(right)))
    if kind is float and type(right) is float and right != 0:
        return left / right
    # cel-python rejects a double divided by an int, and decides the zero
    # divisors: an error for ints, infinity for doubles.
    raise Fallback("/")


def _modulo(left: Any, right: Any) -> Any:
    if type(left) is int and type(right) is int and right != 0:
        sign = -1 if left < 0 else 1
        return _checked_int(sign * (abs(left) % abs(right)))
    raise Fallback("%")


def _negate(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        return _checked_int(-value)
    if kind is float:
        return -value
    raise Fallback("-_")


def _not(value: Any) -> bool:
    if type(value) is bool:
        return not value
    raise Fallback("!_")


def _size(value: Any) -> int:
    if type(value) in (str, list, dict):
        return len(value)
    raise Fallback("size")


def _to_double(value: Any) -> float:
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        return float(value)
    raise Fallback("double")


def _to_int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return value
    if kind is float and math.isfinite(value):
        return _checked_int(math.trunc(value))
    raise Fallback("int")


def _to_string(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value
    if kind is int:
        return str(value)
    raise Fallback("string")


def _text_method(test: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    def run(text: Any, part: Any) -> bool:
        if type(text) is str and type(part) is str:
            return test(text, part)
        raise Fallback("text method")

    return run


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "relation_lt": _ordering(operator.lt),
    "relation_le": _ordering(operator.le),
    "relation_gt": _ordering(operator.gt),
    "relation_ge": _ordering(operator.ge),
    "relation_eq": _equals,
    "relation_ne": _differs,
    "relation_in": _contained,
    "addition_add": _add,
    "addition_sub": _subtract,
    "multiplication_mul": _multiply,
    "multiplication_div": _divide,
    "multiplication_mod": _modulo,
}
#: The Python operators that the comparisons of ``_BINARY`` apply to two
#: operands of one type of ``_EQUATABLE``.
_SAME_TYPE_OPERATORS: dict[Callable[[Any, Any], Any], Callable[[Any, Any], Any]] = {
    _BINARY["relation_lt"]: operator.lt,
    _BINARY["relation_le"]: operator.le,
    _BINARY["relation_gt"]: operator.gt,
    _BINARY["relation_ge"]: operator.ge,
    _BINARY["relation_eq"]: operator.eq,
    _BINARY["relation_ne"]: operator.ne,
}
_UNARY_NATIVE: dict[str, Callable[[Any], Any]] = {
    "unary_not": _not,
    "unary_neg": _negate,
}
_FUNCTIONS_NATIVE: dict[str, Callable[..., Any]] = {
    "size": _size,
    "double": _to_double,
    "int": _to_int,
    "string": _to_string,
}
_METHODS_NATIVE: dict[str, Callable[..., Any]] = {
    "size": _size,
    "contains": _text_method(lambda text, part: part in text),
    "startsWith": _text_method(str.startswith),
    "endsWith": _text_method(str.endswith),
}


def _getter(name: str) -> Callable[[Any], int]:
    on_timestamp = _TIMESTAMP_GETTERS.get(name)
    on_duration = _DURATION_GETTERS.get(name)

    def run(value: Any) -> int:
        kind = type(value)
        if kind is dt.datetime and on_timestamp is not None:
            return on_timestamp(value.astimezone(dt.UTC))
        if kind is dt.timedelta and on_duration is not None:
            return _checked_int(on_duration(value))
        raise Fallback(name)

    return run


#: A compiled sub-expression: a constant, a name to look up, or a closure.
#: Operators specialise on constants and names, which saves a call each.
_Node = tuple[str, Any]


class _NativeCompiler:
    def __init__(self, constant: Callable[[str], Any]) -> None:
        self.constant = constant

    def node(self, tree: lark.Tree | lark.Token) -> NativeClosure:
        return _as_closure(self.part(tree))

    def part(self, tree: lark.Tree | lark.Token) -> _Node:
        if not isinstance(tree, lark.Tree):
            raise _Unsupported(repr(tree))
        method = getattr(self, f"_{tree.data}", None)
        if method is None:
            raise _Unsupported(str(tree.data))
        node: _Node = method(tree)
        return node

    def _single(self, tree: lark.Tree) -> _Node:
        if len(tree.children) != 1:
            raise _Unsupported(str(tree.data))
        return self.part(tree.children[0])

    def _expr(self, tree: lark.Tree) -> _Node:
        if len(tree.children) == 1:
            return self.part(tree.children[0])
        if len(tree.children) != 3:
            raise _Unsupported("expr")
        condition, first, second = (self.node(child) for child in tree.children)

        def run(values: Mapping[str, Any]) -> Any:
            test = condition(values)
            if test is True:
                return first(values)
            if test is False:
                return second(values)
            raise Fallback("?:")

        return ("closure", run)

    def _logical(self, tree: lark.Tree, absorbing: bool) -> _Node:
        """Compile a chain of ``&&`` (``absorbing`` False) or ``||`` (True):
        the first operand equal to ``absorbing`` decides the result."""
        if len(tree.children) == 1:
            return self.part(tree.children[0])
        operands: list[NativeClosure] = []
        node: lark.Tree | lark.Token = tree
        while isinstance(node, lark.Tree) and node.data == tree.data:
            if len(node.children) == 1:
                break
            left, right = node.children
            operands.append(self.node(right))
            node = left
        operands.append(self.node(node))
        operands.reverse()
        parts = tuple(operands)
        neutral = not absorbing

        def run(values: Mapping[str, Any]) -> bool:
            for part in parts:
                result = part(values)
                if result is absorbing:
                    return absorbing
                if result is not neutral:
                    raise Fallback("&& or ||")
            return neutral

        return ("closure", run)

    def _conditionaland(self, tree: lark.Tree) -> _Node:
        return self._logical(tree, False)

    def _conditionalor(self, tree: lark.Tree) -> _Node:
        return self._logical(tree, True)

    def _binary(self, tree: lark.Tree) -> _Node:
        """Compile ``[operator(left), right]``; the grammar nests the left
        operand inside the operator node."""
        if len(tree.children) == 1:
            return self.part(tree.children[0])
        operator_tree, right_tree = tree.children
        if not isinstance(operator_tree, lark.Tree):
            raise _Unsupported(str(tree.data))
        label = str(operator_tree.data)
        function = _BINARY.get(label)
        if function is None:
            raise _Unsupported(label)
        left = self._single(operator_tree)
        right = self.part(right_tree)
        if label in ("relation_eq", "relation_ne") and right == ("constant", None):
            left, right = right, left
        if label in ("relation_eq", "relation_ne") and left == ("constant", None):
            return _null_test(right, label == "relation_eq")
        return _apply_binary(function, left, right)

    def _relation(self, tree: lark.Tree) -> _Node:
        return self._binary(tree)

    def _addition(self, tree: lark.Tree) -> _Node:
        return self._binary(tree)

    def _multiplication(self, tree: lark.Tree) -> _Node:
        return self._binary(tree)

    def _unary(self, tree: lark.Tree) -> _Node:
        if len(tree.children) == 1:
            return self.part(tree.children[0])
        operator_tree, operand_tree = tree.children
        if not isinstance(operator_tree, lark.Tree):
            raise _Unsupported("unary")
        function = _UNARY_NATIVE.get(str(operator_tree.data))
        if function is None:
            raise _Unsupported(str(operator_tree.data))
        return _apply_unary(function, self.node(operand_tree))

    def _member(self, tree: lark.Tree) -> _Node:
        return self._single(tree)

    def _member_dot(self, tree: lark.Tree) -> _Node:
        target, key = self.node(tree.children[0]), str(tree.children[1])

        def run(values: Mapping[str, Any]) -> Any:
            value = target(values)
            if type(value) is dict and key in value:
                return value[key]
            raise Fallback(f".{key}")

        return ("closure", run)

    def _member_index(self, tree: lark.Tree) -> _Node:
        target, index = (self.node(child) for child in tree.children)

        def run(values: Mapping[str, Any]) -> Any:
            value, key = target(values), index(values)
            if type(value) is list and type(key) is int and 0 <= key < len(value):
                return value[key]
            if type(value) is dict and type(key) is str and key in value:
                return value[key]
            raise Fallback("[]")

        return ("closure", run)

    def _member_dot_arg(self, tree: lark.Tree) -> _Node:
        target = self.node(tree.children[0])
        name = str(tree.children[1])
        argument_tree = tree.children[2] if len(tree.children) > 2 else None
        if name in _NATIVE_MACROS:
            return self._macro(name, target, argument_tree)
        arguments = self._argument_list(argument_tree)
        if not arguments and name in _TIMESTAMP_GETTERS:
            return _apply_unary(_getter(name), target)
        method = _METHODS_NATIVE.get(name)
        if method is None:
            raise _Unsupported(name)
        if name == "contains" and not _is_cel_string(tree.children[0]):
            # cel-python's ``contains`` fails on the Python str that its
            # ``+`` returns, so only names and literals are compiled here.
            raise _Unsupported(name)
        if name == "size" and not arguments:
            return _apply_unary(method, target)
        if len(arguments) != 1:
            raise _Unsupported(name)
        return _apply_binary(method, ("closure", target), ("closure", arguments[0]))

    def _macro(
        self, name: str, target: NativeClosure, argument_tree: Any
    ) -> _Node:
        if not isinstance(argument_tree, lark.Tree) or len(argument_tree.children) != 2:
            raise _Unsupported(name)
        variable = _bound_name(argument_tree.children[0])
        body = self.node(argument_tree.children[1])
        return ("closure", _NATIVE_MACROS[name](target, variable, body))

    def _primary(self, tree: lark.Tree) -> _Node:
        child = tree.children[0]
        if not isinstance(child, lark.Tree):
            raise _Unsupported("primary")
        if child.data == "literal":
            return ("constant", self._literal(str(child.children[0])))
        if child.data == "paren_expr":
            return self._single(child)
        if child.data == "ident":
            return ("name", str(child.children[0]))
        if child.data == "list_lit":
            items = self._argument_list(child.children[0] if child.children else None)
            return ("closure", lambda values: [item(values) for item in items])
        if child.data == "ident_arg":
            return self._call(child)
        raise _Unsupported(str(child.data))

    def _literal(self, source: str) -> Any:
        try:
            value = self.constant(source)
        except Exception as err:  # cel-python raises several kinds here
            raise _Unsupported(source) from err
        return _plain_constant(value, source)

    def _call(self, tree: lark.Tree) -> _Node:
        name = str(tree.children[0])
        function = _FUNCTIONS_NATIVE.get(name)
        arguments = self._argument_list(
            tree.children[1] if len(tree.children) > 1 else None
        )
        if function is None or len(arguments) != 1:
            raise _Unsupported(name)
        return _apply_unary(function, arguments[0])

    def _argument_list(
        self, tree: lark.Tree | lark.Token | None
    ) -> tuple[NativeClosure, ...]:
        if tree is None:
            return ()
        if not isinstance(tree, lark.Tree) or tree.data != "exprlist":
            raise _Unsupported("exprlist")
        return tuple(self.node(child) for child in tree.children)


def _is_cel_string(tree: lark.Tree | lark.Token) -> bool:
    """Return True if ``tree`` is a name or a literal, which cel-python
    stores as its own string type when it is text."""
    while isinstance(tree, lark.Tree) and tree.data in ("member", "primary"):
        if len(tree.children) != 1:
            return False
        tree = tree.children[0]
    return isinstance(tree, lark.Tree) and tree.data in ("ident", "literal")


def _plain_constant(value: Any, source: str) -> Any:
    if value is None:
        return None
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, celtypes.IntType):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    # Unsigned ints and bytes have no plain counterpart here.
    raise _Unsupported(source)


def _bound_name(tree: lark.Tree | lark.Token) -> str:
    """Return the identifier that a macro's first argument binds."""
    if isinstance(tree, lark.Tree):
        identifiers = [
            token
            for node in tree.iter_subtrees()
            if node.data == "ident"
            for token in node.children
        ]
        if len(identifiers) == 1:
            return str(identifiers[0])
    raise _Unsupported("macro variable")


def _as_closure(node: _Node) -> NativeClosure:
    kind, payload = node
    if kind == "constant":
        return lambda values: payload
    if kind == "name":
        return operator.itemgetter(payload)
    closure: NativeClosure = payload
    return closure


def _null_test(node: _Node, equal: bool) -> _Node:
    kind, payload = node
    if kind == "constant":
        return ("constant", (payload is None) is equal)
    if kind == "name":
        if equal:
            return ("closure", lambda values: values[payload] is None)
        return ("closure", lambda values: values[payload] is not None)
    operand: NativeClosure = payload
    if equal:
        return ("closure", lambda values: operand(values) is None)
    return ("closure", lambda values: operand(values) is not None)


def _apply_unary(function: Callable[[Any], Any], operand: NativeClosure) -> _Node:
    return ("closure", lambda values: function(operand(values)))


def _apply_binary(
    function: Callable[[Any, Any], Any], left: _Node, right: _Node
) -> _Node:
    """Return ``function(left, right)``, with a closure shaped for the kinds
    of the operands. Two constants are not folded, so that errors stay at
    run time as in cel-python."""
    left_kind, left_value = left
    right_kind, right_value = right
    same_type = _SAME_TYPE_OPERATORS.get(function)
    if (
        left_kind == "name"
        and right_kind == "constant"
        and same_type is not None
        and type(right_value) in _EQUATABLE
    ):
        return ("closure", _compare_name(function, same_type, left_value, right_value))
    if left_kind == "name" and right_kind == "constant":
        return (
            "closure",
            lambda values: function(values[left_value], right_value),
        )
    if left_kind == "name" and right_kind == "name":
        return (
            "closure",
            lambda values: function(values[left_value], values[right_value]),
        )
    if left_kind == "constant" and right_kind == "name":
        return (
            "closure",
            lambda values: function(left_value, values[right_value]),
        )
    first, second = _as_closure(left), _as_closure(right)
    return ("closure", lambda values: function(first(values), second(values)))


def _compare_name(
    function: Callable[[Any, Any], Any],
    same_type: Callable[[Any, Any], Any],
    name: str,
    constant: Any,
) -> NativeClosure:
    """Compare the value of ``name`` with ``constant``, calling the Python
    operator directly when the value has the constant's type, which is the
    common case, and ``function`` otherwise."""
    kind = type(constant)

    def run(values: Mapping[str, Any]) -> Any:
        value = values[name]
        if type(value) is kind:
            return same_type(value, constant)
        return function(value, constant)

    return run


def _all(target: NativeClosure, variable: str, body: NativeClosure) -> NativeClosure:
    def run(values: Mapping[str, Any]) -> bool:
        scope = dict(values)
        for item in _iterable(target(values)):
            scope[variable] = item
            result = body(scope)
            if result is False:
                return False
            if result is not True:
                raise Fallback("all")
        return True

    return run


def _exists(
    target: NativeClosure, variable: str, body: NativeClosure
) -> NativeClosure:
    def run(values: Mapping[str, Any]) -> bool:
        scope = dict(values)
        for item in _iterable(target(values)):
            scope[variable] = item
            result = body(scope)
            if result is True:
                return True
            if result is not False:
                raise Fallback("exists")
        return False

    return run


def _exists_one(
    target: NativeClosure, variable: str, body: NativeClosure
) -> NativeClosure:
    def run(values: Mapping[str, Any]) -> bool:
        scope = dict(values)
        found = 0
        for item in _iterable(target(values)):
            scope[variable] = item
            result = body(scope)
            if type(result) is not bool:
                raise Fallback("exists_one")
            found += result
        return found == 1

    return run


def _filter(
    target: NativeClosure, variable: str, body: NativeClosure
) -> NativeClosure:
    def run(values: Mapping[str, Any]) -> list[Any]:
        scope = dict(values)
        kept = []
        for item in _iterable(target(values)):
            scope[variable] = item
            result = body(scope)
            if type(result) is not bool:
                raise Fallback("filter")
            if result:
                kept.append(item)
        return kept

    return run


def _map(target: NativeClosure, variable: str, body: NativeClosure) -> NativeClosure:
    def run(values: Mapping[str, Any]) -> list[Any]:
        scope = dict(values)
        mapped = []
        for item in _iterable(target(values)):
            scope[variable] = item
            mapped.append(body(scope))
        return mapped

    return run


def _iterable(value: Any) -> list[Any]:
    """Return ``value`` if it is a list; a macro over a map or anything else
    is left to cel-python."""
    if type(value) is list:
        return value
    raise Fallback("macro target")


_NATIVE_MACROS: dict[
    str, Callable[[NativeClosure, str, NativeClosure], NativeClosure]
] = {
    "all": _all,
    "exists": _exists,
    "exists_one": _exists_one,
    "filter": _filter,
    "map": _map,
}
