"""Expressions in metadata: CEL, compiled once and bounded.

Tenant metadata will use one expression language for validation rules,
formulas, defaults, visibility and workflow guards (decision record 0004).
This module compiles a CEL expression with the ``cel-python`` package. It
rejects, before anything runs, what could stall a worker or reach beyond
the record. That is a source over ``MAX_SOURCE_LENGTH`` characters, nesting
deeper than ``MAX_NESTING``, a comprehension macro (``all``, ``exists``,
``exists_one``, ``map``, ``filter``) inside another, or a name that is not
among the given fields. Errors carry the line and column of the problem.
Validation rules and formula fields (``record_rules``) use them.

Evaluation takes plain values only (text, numbers, booleans, dates, lists
of those, and maps of text to those) and bounds the lists and texts a
comprehension could iterate, so the cost of one evaluation is bounded by
the expression's size times ``MAX_LIST_ITEMS``. CEL has no loops,
assignment or I/O, and nothing here uses ``eval``. Most expressions run as
Python closures over plain values (``expression_closures.compile_native``).
They hand every error and every unusual operand back to closures that call
cel-python's operators, or to its interpreter for the forms that those do
not compile.
"""

from __future__ import annotations

import datetime as dt
import decimal
import difflib
import operator
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.evaluation import CELEvalError, boolean

from metadata_engine.expression_closures import (
    INT64_MAX,
    INT64_MIN,
    Closure,
    Fallback,
    NativeClosure,
    compile_closure,
    compile_native,
    literal_constant,
)

#: Maximum length of an expression, in characters.
MAX_SOURCE_LENGTH = 2_000
#: Deepest nesting of sub-expressions (parentheses, arguments, operands).
MAX_NESTING = 12
#: Maximum number of items of a list value an expression may receive.
MAX_LIST_ITEMS = 1_000
#: Maximum length of a text value an expression may receive, in characters.
MAX_TEXT_LENGTH = 10_000
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})

_ENVIRONMENT = celpy.Environment()
_MIDNIGHT_UTC = dt.time(tzinfo=dt.UTC)


#: cel-python's comparison operators, wrapped once: its own ``bool_eq`` and
#: ``bool_lt`` wrap ``operator.eq`` and ``operator.lt`` again on every call.
_EQUALS = boolean(operator.eq)
_COMPARISONS: dict[str, Any] = {
    "_<_": boolean(operator.lt),
    "_<=_": boolean(operator.le),
    "_>_": boolean(operator.gt),
    "_>=_": boolean(operator.ge),
}


def _equals_null_safe(left: Any, right: Any) -> Any:
    """Return ``left == right``, where null equals only null.

    cel-python 0.5.0 raises "no such overload" for ``1 == null`` and for
    ``null != [1]``, so ``field == null`` would fail on a number or list
    field that has a value. Here a comparison of null with any other value
    returns false instead.
    """
    if left is None or right is None:
        if isinstance(left, CELEvalError) or isinstance(right, CELEvalError):
            return left if isinstance(left, CELEvalError) else right
        return celtypes.BoolType(left is None and right is None)
    return _EQUALS(left, right)


def _differs_null_safe(left: Any, right: Any) -> Any:
    """Return ``left != right``, where null equals only null."""
    equal = _equals_null_safe(left, right)
    if isinstance(equal, celtypes.BoolType):
        return celtypes.BoolType(not equal)
    return equal


#: Functions that replace cel-python's own in every compiled program.
_FUNCTIONS: dict[str, Any] = {
    "_==_": _equals_null_safe,
    "_!=_": _differs_null_safe,
    **_COMPARISONS,
}
_LITERAL = literal_constant(_ENVIRONMENT)


class ExpressionError(ValueError):
    """An expression that cannot be compiled or evaluated, with the line and
    column (both from 1) of the problem when it has one."""

    def __init__(
        self, message: str, source: str, line: int | None = None,
        column: int | None = None,
    ) -> None:
        where = f" at line {line}, column {column}" if line and column else ""
        super().__init__(f"{message}{where} in {source!r}")
        self.message = message
        self.source = source
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Expression:
    """A compiled expression and the field names it reads."""

    source: str
    names: frozenset[str]
    _program: Any = field(repr=False, compare=False)
    #: The lark parse tree, for static checks such as ``expression_types``.
    tree: lark.Tree | None = field(default=None, repr=False, compare=False)
    #: The same expression as Python closures over cel-python values
    #: (``expression_closures``), or None when it uses a form that only
    #: ``_program`` evaluates.
    _closure: Closure | None = field(default=None, repr=False, compare=False)
    #: The same expression as closures over plain values, or None when it
    #: uses a form that they do not compile. It raises ``Fallback`` where
    #: cel-python must decide, and ``evaluate_plain`` then uses the others.
    _native: NativeClosure | None = field(default=None, repr=False, compare=False)

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """Evaluate with ``values`` (field name to plain value) and return a
        plain Python value; names the expression reads and ``values`` lacks
        are null."""
        return self.evaluate_plain(
            {name: to_plain(self.source, name, values.get(name)) for name in self.names}
        )

    def evaluate_plain(self, activation: Mapping[str, Any]) -> Any:
        """Evaluate with ``activation``, which maps each name the expression
        reads to a value already converted by ``to_plain``, so that several
        expressions over one record share one conversion.

        The native closures run first. Where they raise ``Fallback`` (an
        error, or operands that cel-python treats in its own way), the
        expression runs again through cel-python's semantics, so both paths
        return the same value or raise the same ``ExpressionError``, apart
        from the case in the NOTE of ``expression_closures``.
        """
        if self._native is not None:
            try:
                return self._native(activation)
            except (Fallback, KeyError):
                pass
        return self.evaluate_cel(
            {
                name: _to_cel(self.source, name, activation.get(name))
                for name in self.names
            }
        )

    def evaluate_cel(self, activation: Mapping[str, Any]) -> Any:
        """Evaluate with ``activation``, which maps each name the expression
        reads to a value already converted by ``to_cel``. Several expressions
        over one record can then share one conversion."""
        run = self._closure or self._program.evaluate
        try:
            result = run(activation)
        except celpy.CELEvalError as err:
            raise ExpressionError(f"evaluation failed: {err}", self.source) from err
        except (TypeError, ValueError, ArithmeticError, LookupError) as err:
            # cel-python lets some Python errors escape its evaluator, such
            # as a ValueError in a comparison; they are evaluation errors too.
            raise ExpressionError(f"evaluation failed: {err!r}", self.source) from err
        if isinstance(result, celpy.CELEvalError):
            raise ExpressionError(f"evaluation failed: {result}", self.source)
        return _from_cel(result)


def compile_expression(source: str, names: Collection[str]) -> Expression:
    """Parse and check ``source``, which may read the fields in ``names``.

    Raises ``ExpressionError`` naming the problem and its position.
    """
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("an expression must be non-empty text", str(source))
    if len(source) > MAX_SOURCE_LENGTH:
        raise ExpressionError(
            f"the expression has {len(source)} characters, more than "
            f"{MAX_SOURCE_LENGTH}; split it into several rules",
            source[:60] + "…",
        )
    try:
        tree = _ENVIRONMENT.compile(source)
    except celpy.CELParseError as err:
        first_line = str(err).splitlines()[0] if str(err) else "invalid syntax"
        raise ExpressionError(
            f"invalid CEL syntax near {first_line!r}", source,
            getattr(err, "line", None), getattr(err, "column", None),
        ) from err
    _check_nesting(source, tree)
    used = _check_names(source, tree, frozenset(names))
    program = _ENVIRONMENT.program(tree, _FUNCTIONS)
    closure = compile_closure(tree, _FUNCTIONS, _LITERAL)
    native = compile_native(tree, _LITERAL)
    return Expression(source, used, program, tree, closure, native)


def _check_nesting(source: str, tree: lark.Tree) -> None:
    def walk(node: lark.Tree, depth: int, in_macro: bool) -> None:
        if node.data == "expr":
            depth += 1
            if depth > MAX_NESTING:
                line, column = _position(node)
                raise ExpressionError(
                    f"the expression nests deeper than {MAX_NESTING} levels; "
                    "simplify it or split it into several rules",
                    source, line, column,
                )
        macro = _macro_name(node)
        if macro is not None and in_macro:
            line, column = _position(node)
            raise ExpressionError(
                f"the macro {macro!r} is inside another comprehension; nested "
                "comprehensions are not allowed because their cost multiplies",
                source, line, column,
            )
        for child in node.children:
            if isinstance(child, lark.Tree):
                walk(child, depth, in_macro or macro is not None)

    walk(tree, 0, False)


def _check_names(
    source: str, tree: lark.Tree, allowed: frozenset[str]
) -> frozenset[str]:
    bound: set[str] = set()
    for node in tree.iter_subtrees():
        if _macro_name(node) is not None:
            bound.update(_macro_variables(node))
    used: set[str] = set()
    for name, token in _identifiers(tree):
        if name in bound:
            continue
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            guess = f"did you mean {close[0]!r}? " if close else ""
            raise ExpressionError(
                f"unknown name {name!r}; {guess}use one of the entity's fields: "
                + ", ".join(sorted(allowed)[:20]),
                source, token.line, token.column,
            )
        used.add(name)
    return frozenset(used)


def _identifiers(tree: lark.Tree) -> Iterator[tuple[str, lark.Token]]:
    """Yield the free-standing identifiers: ``primary`` idents, not the
    member names after a dot or the names of called functions."""
    for node in tree.iter_subtrees():
        if node.data != "primary":
            continue
        for child in node.children:
            if isinstance(child, lark.Tree) and child.data == "ident":
                token = child.children[0]
                if isinstance(token, lark.Token):
                    yield str(token), token


def _macro_name(node: lark.Tree) -> str | None:
    if node.data != "member_dot_arg" or len(node.children) < 2:
        return None
    name = node.children[1]
    if isinstance(name, lark.Token) and str(name) in MACROS:
        return str(name)
    return None


def _macro_variables(node: lark.Tree) -> set[str]:
    """Return the variable a macro binds: its first argument's identifier."""
    arguments = node.children[2] if len(node.children) > 2 else None
    if not isinstance(arguments, lark.Tree) or not arguments.children:
        return set()
    first = arguments.children[0]
    if not isinstance(first, lark.Tree):
        return set()
    return {name for name, _ in _identifiers(first)}


def _position(node: lark.Tree) -> tuple[int | None, int | None]:
    for token in node.scan_values(lambda value: isinstance(value, lark.Token)):
        return token.line, token.column
    return None, None


def to_cel(source: str, name: str, value: Any) -> Any:
    """Return ``value`` as a CEL value for ``evaluate_cel``; ``source`` names
    the expression or record in the error for a value that is not plain."""
    return _to_cel(source, name, value)


def to_plain(source: str, name: str, value: Any) -> Any:
    """Return ``value`` in the form ``evaluate_plain`` takes: dates become
    datetimes at 00:00 UTC, datetimes move to UTC, decimals become floats,
    tuples become lists and maps become dicts with text keys.

    Raises ``ExpressionError``, naming ``source`` and the field ``name``, for
    a value that is not plain, an int outside int64, or a text, list or map
    longer than an expression may read.
    """
    if value is None or value is True or value is False:
        return value
    kind = type(value)
    if kind is dt.date:
        return dt.datetime.combine(value, _MIDNIGHT_UTC)
    if kind is str:
        return _checked_text(source, name, value)
    if kind is int:
        return _checked_int(source, name, value)
    if kind is float:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _checked_int(source, name, int(value))
    if isinstance(value, float | decimal.Decimal):
        return float(value)
    if isinstance(value, str):
        return _checked_text(source, name, value[:])
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, _MIDNIGHT_UTC)
    if isinstance(value, Mapping):
        _check_items(source, name, len(value), "entries")
        return {str(key): to_plain(source, name, item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        _check_items(source, name, len(value), "items")
        return [to_plain(source, name, item) for item in value]
    raise _not_plain(source, name, value)


def _checked_text(source: str, name: str, value: str) -> str:
    if len(value) > MAX_TEXT_LENGTH:
        raise ExpressionError(
            f"field {name!r} has {len(value)} characters, more than "
            f"{MAX_TEXT_LENGTH} that an expression may read", source,
        )
    return value


def _checked_int(source: str, name: str, value: int) -> int:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise ExpressionError(
        f"field {name!r} contains {value!r}, outside the 64-bit range of CEL "
        "ints; store it in a decimal field", source,
    )


def _check_items(source: str, name: str, count: int, unit: str) -> None:
    if count > MAX_LIST_ITEMS:
        raise ExpressionError(
            f"field {name!r} has {count} {unit}, more than "
            f"{MAX_LIST_ITEMS} that an expression may read", source,
        )


def _not_plain(source: str, name: str, value: Any) -> ExpressionError:
    return ExpressionError(
        f"field {name!r} contains a {type(value).__name__}, which expressions "
        "cannot read; pass text, numbers, booleans, dates, lists or maps of "
        "text to these", source,
    )


def _to_cel(source: str, name: str, value: Any) -> Any:
    """Return ``value`` as a CEL value; only plain values are accepted."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(_checked_int(source, name, int(value)))
    if isinstance(value, float | decimal.Decimal):
        # NOTE: CEL has no decimal type, so decimals compare as doubles;
        # amounts beyond 15 significant digits lose precision here.
        return celtypes.DoubleType(float(value))
    if isinstance(value, str):
        if len(value) > MAX_TEXT_LENGTH:
            raise ExpressionError(
                f"field {name!r} has {len(value)} characters, more than "
                f"{MAX_TEXT_LENGTH} that an expression may read", source,
            )
        return celtypes.StringType(value)
    if isinstance(value, dt.datetime):
        return celtypes.TimestampType(value.astimezone(dt.UTC))
    if isinstance(value, dt.date):
        return celtypes.TimestampType(
            dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)
        )
    if isinstance(value, Mapping):
        if len(value) > MAX_LIST_ITEMS:
            raise ExpressionError(
                f"field {name!r} has {len(value)} entries, more than "
                f"{MAX_LIST_ITEMS} that an expression may read", source,
            )
        return celtypes.MapType(
            {
                celtypes.StringType(str(key)): _to_cel(source, name, item)
                for key, item in value.items()
            }
        )
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST_ITEMS:
            raise ExpressionError(
                f"field {name!r} has {len(value)} items, more than "
                f"{MAX_LIST_ITEMS} that an expression may read", source,
            )
        return celtypes.ListType([_to_cel(source, name, item) for item in value])
    raise ExpressionError(
        f"field {name!r} contains a {type(value).__name__}, which expressions "
        "cannot read; pass text, numbers, booleans, dates, lists or maps of "
        "text to these", source,
    )


def _from_cel(value: Any) -> Any:
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, celtypes.IntType | celtypes.UintType):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    if isinstance(value, celtypes.ListType):
        return [_from_cel(item) for item in value]
    return value
