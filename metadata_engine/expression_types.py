"""Static types of CEL expressions, as far as the parse tree shows them.

cel-python 0.5.0 has no type checker, so a formula that returns text for a
number field, or a rule that compares a decimal field with the integer
literal ``100``, would only fail when a user saves a record. This module
infers the type of each sub-expression from literals, operators, known
functions and the types of the fields, and reports what must fail at run
time. A type it cannot see is ``None`` and is never reported.

Types are CEL type names: ``bool``, ``int``, ``uint``, ``double``,
``string``, ``bytes``, ``timestamp``, ``duration``, ``list``, ``map`` and
``null_type``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import lark

from metadata_engine.expressions import MACROS

#: CEL type of the values a field of each metadata type gets in an expression.
FIELD_CEL_TYPES: Mapping[str, str] = {
    "text": "string",
    "long_text": "string",
    "email": "string",
    "phone": "string",
    "url": "string",
    "picklist": "string",
    "lookup": "string",
    "auto_number": "string",
    "integer": "int",
    "decimal": "double",
    "currency": "double",
    "percent": "double",
    "boolean": "bool",
    "date": "timestamp",
    "datetime": "timestamp",
    "multi_picklist": "list",
}
#: Result type of each function of cel-python's standard environment that is
#: called as ``f(x)`` or ``x.f()``; ``None`` when it depends on the argument.
FUNCTION_TYPES: Mapping[str, str | None] = {
    "bool": "bool",
    "bytes": "bytes",
    "double": "double",
    "duration": "duration",
    "int": "int",
    "uint": "uint",
    "string": "string",
    "timestamp": "timestamp",
    "size": "int",
    "has": "bool",
    "type": None,
    "list": "list",
    "map": "map",
    "contains": "bool",
    "startsWith": "bool",
    "endsWith": "bool",
    "matches": "bool",
    "getDate": "int",
    "getDayOfMonth": "int",
    "getDayOfWeek": "int",
    "getDayOfYear": "int",
    "getFullYear": "int",
    "getMonth": "int",
    "getHours": "int",
    "getMinutes": "int",
    "getSeconds": "int",
    "getMilliseconds": "int",
    "all": "bool",
    "exists": "bool",
    "exists_one": "bool",
    "filter": "list",
}
_NUMBERS = frozenset({"int", "uint", "double"})
_ARITHMETIC = {
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
}


@dataclass(frozen=True)
class TypeProblem:
    """A sub-expression that must fail when evaluated, with its position."""

    message: str
    line: int | None
    column: int | None


@dataclass
class _Inference:
    names: Mapping[str, str | None]
    problems: list[TypeProblem]

    def problem(self, node: lark.Tree, message: str) -> None:
        line, column = _position(node)
        self.problems.append(TypeProblem(message, line, column))

    def infer(self, node: lark.Tree | lark.Token) -> str | None:
        if not isinstance(node, lark.Tree):
            return None
        handler = _HANDLERS.get(str(node.data))
        if handler is not None:
            return handler(self, node)
        children = _trees(node)
        if len(children) == 1:
            return self.infer(children[0])
        for child in children:
            self.infer(child)
        return None


def infer_type(
    tree: lark.Tree, names: Mapping[str, str | None]
) -> tuple[str | None, list[TypeProblem]]:
    """Return the CEL type of ``tree`` (or None) and the problems found.

    ``names`` maps each name the expression may read to its CEL type.
    """
    inference = _Inference(names, [])
    return inference.infer(tree), inference.problems


def unknown_functions(tree: lark.Tree) -> Iterator[tuple[str, lark.Token]]:
    """Yield every called function that cel-python 0.5.0 does not define."""
    for node in tree.iter_subtrees():
        if node.data == "ident_arg":
            token = node.children[0]
        elif node.data == "member_dot_arg" and len(node.children) > 1:
            token = node.children[1]
        else:
            continue
        if isinstance(token, lark.Token) and str(token) not in FUNCTION_TYPES:
            yield str(token), token


def with_article(type_name: str) -> str:
    """Return ``type_name`` after "a" or "an": "an int", "a double"."""
    article = "an" if type_name[:1] in "aeiou" else "a"
    return f"{article} {type_name}"


def _trees(node: lark.Tree) -> list[lark.Tree]:
    return [child for child in node.children if isinstance(child, lark.Tree)]


def _position(node: lark.Tree) -> tuple[int | None, int | None]:
    for token in node.scan_values(lambda value: isinstance(value, lark.Token)):
        return token.line, token.column
    return None, None


def _expr(inference: _Inference, node: lark.Tree) -> str | None:
    children = _trees(node)
    if len(children) != 3:
        return inference.infer(children[0]) if children else None
    inference.infer(children[0])
    first, second = inference.infer(children[1]), inference.infer(children[2])
    if first == "null_type":
        return second
    if second == "null_type" or first == second:
        return first
    return None


def _logical(inference: _Inference, node: lark.Tree) -> str | None:
    children = _trees(node)
    if len(children) == 1:
        return inference.infer(children[0])
    for child in children:
        inference.infer(child)
    return "bool"


def _single(inference: _Inference, node: lark.Tree) -> str | None:
    """Return the type of a node with one child; None for any other shape."""
    children = _trees(node)
    if len(children) == 1:
        return inference.infer(children[0])
    for child in children:
        inference.infer(child)
    return None


def _binary(node: lark.Tree) -> tuple[lark.Tree, lark.Tree, lark.Tree] | None:
    """Split a binary node into (operator, left operand, right operand).

    The grammar puts the left operand inside the operator node, as in
    ``relation: [relation_lt(relation), addition]``.
    """
    children = _trees(node)
    if len(children) != 2:
        return None
    operator, right = children
    operands = _trees(operator)
    if len(operands) != 1:
        return None
    return operator, operands[0], right


def _relation(inference: _Inference, node: lark.Tree) -> str | None:
    parts = _binary(node)
    if parts is None:
        return _single(inference, node)
    operator, left_node, right_node = parts
    left, right = inference.infer(left_node), inference.infer(right_node)
    if operator.data != "relation_in":
        mixed = _check_mixed(inference, operator, left, right, "compares")
        if not mixed and operator.data in _ORDERINGS:
            _check_ordering(inference, operator, left, right)
    return "bool"


#: Relations that order their operands, which CEL defines only for two
#: operands of the same type.
_ORDERINGS = frozenset({"relation_lt", "relation_le", "relation_gt", "relation_ge"})


def _check_ordering(
    inference: _Inference, node: lark.Tree, left: str | None, right: str | None
) -> None:
    """Report an ordering of two different known types, such as a text
    field compared with a number, which fails on every record."""
    unknown = (None, "null_type", "dyn")
    if left in unknown or right in unknown or left == right:
        return
    inference.problem(
        node,
        f"the expression orders {with_article(str(left))} against "
        f"{with_article(str(right))}, which CEL cannot compare: compare values "
        "of the same type, for example a date field with timestamp(\"2026-01-01"
        "T00:00:00Z\")",
    )


def _arithmetic(inference: _Inference, node: lark.Tree) -> str | None:
    parts = _binary(node)
    if parts is None or str(parts[0].data) not in _ARITHMETIC:
        return _single(inference, node)
    operator, left_node, right_node = parts
    left, right = inference.infer(left_node), inference.infer(right_node)
    symbol = _ARITHMETIC[str(operator.data)]
    if _check_mixed(inference, operator, left, right, f"applies {symbol!r} to"):
        return None
    return _arithmetic_result(symbol, left, right)


def _arithmetic_result(symbol: str, left: str | None, right: str | None) -> str | None:
    if left is None or right is None:
        return None
    if left == right and left in _NUMBERS:
        return left
    if symbol == "+" and left == right and left in ("string", "list", "bytes"):
        return left
    if symbol == "-" and left == right == "timestamp":
        return "duration"
    if symbol in "+-" and left == "timestamp" and right == "duration":
        return "timestamp"
    if symbol in "+-" and left == right == "duration":
        return "duration"
    return None


def _check_mixed(
    inference: _Inference,
    node: lark.Tree,
    left: str | None,
    right: str | None,
    verb: str,
) -> bool:
    """Report two different number types, which CEL never converts."""
    if left in _NUMBERS and right in _NUMBERS and left != right:
        inference.problem(
            node,
            f"the expression {verb} {with_article(left)} and "
            f"{with_article(right)}, which CEL does not "
            "convert: decimal, currency and percent fields are doubles, so write "
            "100.0 rather than 100, or convert with double(...) or int(...)",
        )
        return True
    return False


def _unary(inference: _Inference, node: lark.Tree) -> str | None:
    children = _trees(node)
    if len(children) == 2:
        operand = inference.infer(children[1])
        if children[0].data == "unary_not":
            return "bool"
        return operand if operand in _NUMBERS or operand == "duration" else None
    return inference.infer(children[0]) if children else None


def _member(inference: _Inference, node: lark.Tree) -> str | None:
    children = _trees(node)
    if len(children) != 1:
        return None
    child = children[0]
    if child.data == "member_dot_arg":
        for argument in _trees(child):
            inference.infer(argument)
        name = str(child.children[1])
        if name in MACROS:
            return "list" if name in ("map", "filter") else "bool"
        return FUNCTION_TYPES.get(name)
    if child.data in ("member_dot", "member_index", "member_object"):
        for part in _trees(child):
            inference.infer(part)
        return None
    return inference.infer(child)


def _primary(inference: _Inference, node: lark.Tree) -> str | None:
    children = _trees(node)
    if not children:
        return None
    child = children[0]
    if child.data == "ident":
        token = child.children[0]
        return inference.names.get(str(token))
    if child.data == "literal":
        return _literal_type(str(child.children[0]))
    if child.data == "ident_arg":
        for argument in _trees(child):
            inference.infer(argument)
        name = str(child.children[0])
        return None if name in MACROS else FUNCTION_TYPES.get(name)
    if child.data == "list_lit":
        inference.infer(child)
        return "list"
    if child.data == "map_lit":
        inference.infer(child)
        return "map"
    return inference.infer(child)


def _literal_type(text: str) -> str | None:
    lowered = text.lower()
    if text in ("true", "false"):
        return "bool"
    if text == "null":
        return "null_type"
    if lowered.startswith(("b'", 'b"', "br", "rb")):
        return "bytes"
    if text[:1] in ("'", '"') or lowered.startswith(("r'", 'r"')):
        return "string"
    if lowered.endswith("u"):
        return "uint"
    if lowered.startswith(("0x", "-0x")):
        return "int"
    if any(mark in lowered for mark in (".", "e")):
        return "double"
    return "int"


_HANDLERS = {
    "expr": _expr,
    "conditionalor": _logical,
    "conditionaland": _logical,
    "relation": _relation,
    "addition": _arithmetic,
    "multiplication": _arithmetic,
    "unary": _unary,
    "member": _member,
    "primary": _primary,
}
