"""Load-time checks of the validation rules, formula fields and field
expression options (``required_when``, ``default_expr``, ``read_only_when``,
``visible_when``) of one entity.

Every expression is compiled here, so that a definition with a bad rule or
formula is rejected with its file and JSON pointer before any record is
saved. The checks report syntax errors with line and column, unknown names
and functions, the limits of ``expressions``, results that cannot fit their
field, and cycles among formulas.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from metadata_engine.expression_types import (
    FIELD_CEL_TYPES,
    FUNCTION_TYPES,
    infer_type,
    unknown_functions,
    with_article,
)
from metadata_engine.expressions import Expression, ExpressionError, compile_expression
from metadata_engine.field_checks import Report
from metadata_engine.layout_checks import suggest

Document = Mapping[str, Any]

#: Names every expression may read besides the entity's fields, with their
#: CEL types: the time of the write (UTC), its date, and the writing user as
#: a map with the keys ``id`` and ``role``.
VARIABLES: Mapping[str, str] = {"now": "timestamp", "today": "timestamp", "user": "map"}
#: CEL result types that each field type with a formula can store.
FORMULA_RESULTS: Mapping[str, frozenset[str]] = {
    "text": frozenset({"string"}),
    "long_text": frozenset({"string"}),
    "integer": frozenset({"int"}),
    "decimal": frozenset({"double", "int"}),
    "currency": frozenset({"double", "int"}),
    "percent": frozenset({"double", "int"}),
    "boolean": frozenset({"bool"}),
    "date": frozenset({"timestamp"}),
    "datetime": frozenset({"timestamp"}),
}
#: Field properties that make no sense on a computed field.
FORMULA_CONFLICTS: tuple[str, ...] = ("default", "required")
#: CEL result types that ``default_expr`` may return for each field type:
#: those of formulas, plus the text-like and list types a user can type in.
DEFAULT_RESULTS: Mapping[str, frozenset[str]] = {
    **FORMULA_RESULTS,
    "email": frozenset({"string"}),
    "phone": frozenset({"string"}),
    "url": frozenset({"string"}),
    "picklist": frozenset({"string"}),
    "multi_picklist": frozenset({"list"}),
}
#: Field properties whose value is a CEL expression.
EXPRESSION_KEYS: tuple[str, ...] = (
    "formula", "required_when", "default_expr", "read_only_when", "visible_when",
)
#: Field properties that make a field read-only whatever the result of
#: ``read_only_when``.
ALWAYS_READ_ONLY: tuple[str, ...] = ("read_only", "formula", "rollup")


@dataclass
class _Context:
    report: Report
    entity: str
    allowed: frozenset[str]
    types: Mapping[str, str | None]
    #: Formula field name to (its index in ``fields``, the fields it reads).
    formulas: dict[str, tuple[int, frozenset[str]]] = field(default_factory=dict)


def check_record_rules(
    report: Report,
    entity: Document,
    by_name: Mapping[str, Document],
    skipped: Collection[str],
) -> None:
    """Report every problem of the formulas and validation rules of ``entity``.

    ``by_name`` contains the entity's schema-valid fields and ``skipped``
    the names of fields that failed validation, which still count as
    existing.
    """
    rules = entity.get("validation_rules", [])
    has_formulas = any(
        key in item for item in entity["fields"] for key in EXPRESSION_KEYS
    )
    if not rules and not has_formulas:
        return
    types: dict[str, str | None] = {name: None for name in skipped}
    for name, item in by_name.items():
        types[name] = FIELD_CEL_TYPES.get(str(item["type"]))
    _check_shadowed(report, entity, by_name)
    types.update(VARIABLES)
    context = _Context(report, entity["name"], frozenset(types), types)
    for index, item in enumerate(entity["fields"]):
        if "formula" in item and by_name.get(item["name"]) is item:
            _check_formula(context, index, item)
        if "required_when" in item and by_name.get(item["name"]) is item:
            subject = f"required_when of {item['name']!r}"
            _check_condition(context, f"/fields/{index}/required_when",
                             item["required_when"], subject)
        if by_name.get(item["name"]) is item:
            _check_field_expressions(context, index, item)
    _check_cycles(context)
    names: set[str] = set()
    for index, rule in enumerate(rules):
        _check_rule(context, f"/validation_rules/{index}", rule, names, by_name)


def _check_shadowed(
    report: Report, entity: Document, by_name: Mapping[str, Document]
) -> None:
    for index, item in enumerate(entity["fields"]):
        name = item["name"]
        if name in VARIABLES and by_name.get(name) is item:
            report(
                f"/fields/{index}/name",
                f"field name {name!r} hides the expression variable of the "
                f"same name in the rules and formulas of entity {entity['name']!r}",
                "rename the field; expressions reserve the names "
                + ", ".join(VARIABLES),
            )


def _check_formula(context: _Context, index: int, item: Document) -> None:
    pointer = f"/fields/{index}"
    name, field_type = item["name"], item["type"]
    for key in FORMULA_CONFLICTS:
        if key in item:
            context.report(
                f"{pointer}/{key}",
                f"formula field {name!r} cannot have {key!r}, because its value "
                "is always computed",
                f"remove {key!r}, or remove the formula",
            )
    accepted = FORMULA_RESULTS.get(field_type)
    if accepted is None:
        context.report(
            f"{pointer}/type",
            f"field {name!r} of type {field_type!r} cannot have a formula",
            "use one of the types " + ", ".join(FORMULA_RESULTS),
        )
        return
    compiled = _compile(context, f"{pointer}/formula", item["formula"], "formula")
    if compiled is None:
        return
    expression, result = compiled
    if result is not None and result != "null_type" and result not in accepted:
        context.report(
            f"{pointer}/formula",
            f"formula of field {name!r} returns {with_article(result)}, which a "
            f"{field_type!r} field cannot store",
            f"make the formula return a {' or '.join(sorted(accepted))}, or change "
            "the field type",
        )
    reads = expression.names - frozenset(VARIABLES)
    context.formulas[name] = (index, frozenset(reads))


def _check_rule(
    context: _Context,
    pointer: str,
    rule: Document,
    names: set[str],
    by_name: Mapping[str, Document],
) -> None:
    name = rule["name"]
    if name in names:
        context.report(
            f"{pointer}/name",
            f"validation rule name {name!r} appears more than once in entity "
            f"{context.entity!r}",
            "give every validation rule of an entity a unique name",
        )
    names.add(name)
    compiled = _compile(context, f"{pointer}/when", rule["when"], "condition")
    if compiled is not None and compiled[1] not in (None, "bool", "null_type"):
        context.report(
            f"{pointer}/when",
            f"condition of validation rule {name!r} returns "
            f"{with_article(compiled[1])}, not a bool",
            "write a condition that is true when the record is invalid",
        )
    for position, field_name in enumerate(rule.get("fields", [])):
        if field_name not in context.types or field_name in VARIABLES:
            context.report(
                f"{pointer}/fields/{position}",
                f"validation rule {name!r} shows its message on {field_name!r}, "
                f"which is not a field of entity {context.entity!r}",
                suggest(field_name, by_name)
                + "name a field, or remove fields to show the message on the "
                "whole record",
            )


def _check_condition(
    context: _Context,
    pointer: str,
    source: str,
    subject: str,
    hint: str = "write a condition that is true when the field is required",
) -> None:
    compiled = _compile(context, pointer, source, "condition")
    if compiled is not None and compiled[1] not in (None, "bool", "null_type"):
        context.report(
            pointer,
            f"{subject} returns {with_article(compiled[1])}, not a bool",
            hint,
        )


def _check_field_expressions(context: _Context, index: int, item: Document) -> None:
    """Report the problems of ``default_expr``, ``read_only_when`` and
    ``visible_when`` of one field."""
    pointer = f"/fields/{index}"
    name = item["name"]
    if "default_expr" in item:
        _check_default_expr(context, pointer, item)
    if "read_only_when" in item:
        fixed = [key for key in ALWAYS_READ_ONLY if item.get(key)]
        if item["type"] == "auto_number":
            fixed.append("type auto_number")
        if fixed:
            context.report(
                f"{pointer}/read_only_when",
                f"field {name!r} is always read-only because of {fixed[0]!r}, so "
                "its read_only_when has no effect",
                f"remove read_only_when, or remove {fixed[0]!r}",
            )
        else:
            _check_condition(
                context, f"{pointer}/read_only_when", item["read_only_when"],
                f"read_only_when of {name!r}",
                "write a condition that is true while the field may not change",
            )
    if "visible_when" in item:
        _check_condition(
            context, f"{pointer}/visible_when", item["visible_when"],
            f"visible_when of {name!r}",
            "write a condition that is true when the form shows the field",
        )


def _check_default_expr(context: _Context, pointer: str, item: Document) -> None:
    name, field_type = item["name"], item["type"]
    where = f"{pointer}/default_expr"
    if "default" in item:
        context.report(
            where,
            f"field {name!r} has both default and default_expr",
            "keep default for a fixed value or default_expr for a computed one",
        )
        return
    computed = [key for key in ("formula", "rollup") if key in item]
    if computed:
        context.report(
            where,
            f"field {name!r} has a {computed[0]} and default_expr, but its value "
            "is always computed",
            f"remove default_expr, or remove the {computed[0]}",
        )
        return
    accepted = DEFAULT_RESULTS.get(field_type)
    if accepted is None:
        context.report(
            where,
            f"field {name!r} of type {field_type!r} cannot have default_expr",
            "use default_expr on one of the types " + ", ".join(DEFAULT_RESULTS),
        )
        return
    compiled = _compile(context, where, item["default_expr"], "default_expr")
    if compiled is None:
        return
    result = compiled[1]
    if result is not None and result != "null_type" and result not in accepted:
        context.report(
            where,
            f"default_expr of field {name!r} returns {with_article(result)}, which "
            f"a {field_type!r} field cannot store",
            f"make default_expr return a {' or '.join(sorted(accepted))}, or "
            "change the field type",
        )


def _compile(
    context: _Context, pointer: str, source: str, noun: str
) -> tuple[Expression, str | None] | None:
    """Compile ``source`` and report its problems. Return the expression and
    its static type, or None if it has a problem."""
    try:
        expression = compile_expression(source, context.allowed)
    except ExpressionError as err:
        context.report(pointer, f"invalid {noun}: {err}", _hint(err))
        return None
    assert expression.tree is not None
    failed = False
    for function, token in unknown_functions(expression.tree):
        failed = True
        context.report(
            pointer,
            f"invalid {noun}: unknown function {function!r} at line {token.line}, "
            f"column {token.column} in {source!r}",
            suggest(function, FUNCTION_TYPES)
            + "use one of: "
            + ", ".join(sorted(FUNCTION_TYPES)),
        )
    result, problems = infer_type(expression.tree, context.types)
    for problem in problems:
        failed = True
        where = f" at line {problem.line}, column {problem.column}"
        context.report(
            pointer,
            f"invalid {noun}: {problem.message}{where} in {source!r}",
            "change the expression so that both sides have the same type",
        )
    return None if failed else (expression, result)


def _hint(err: ExpressionError) -> str:
    if err.message.startswith("unknown name"):
        return "expressions read the entity's fields and " + ", ".join(VARIABLES)
    if err.message.startswith("invalid CEL syntax"):
        return "correct the CEL syntax at the given line and column"
    return "simplify the expression"


def _check_cycles(context: _Context) -> None:
    """Report each cycle of formulas that read each other once, with its chain."""
    reported: set[frozenset[str]] = set()
    acyclic: set[str] = set()
    for start in context.formulas:
        chain = _cycle_from(start, context.formulas, [], acyclic)
        if chain is None or frozenset(chain) in reported:
            continue
        reported.add(frozenset(chain))
        index = context.formulas[chain[0]][0]
        context.report(
            f"/fields/{index}/formula",
            "formula fields of entity "
            f"{context.entity!r} form a cycle: {' -> '.join([*chain, chain[0]])}",
            "make one formula of the cycle read no formula of the cycle",
        )


def _cycle_from(
    name: str,
    formulas: Mapping[str, tuple[int, frozenset[str]]],
    path: list[str],
    acyclic: set[str],
) -> list[str] | None:
    """Return the formulas of a cycle reachable from ``name``, or None.

    ``acyclic`` collects the formulas from which no cycle is reachable, so
    that each is searched once.
    """
    if name in path:
        return path[path.index(name) :]
    if name not in formulas or name in acyclic:
        return None
    for read in sorted(formulas[name][1]):
        cycle = _cycle_from(read, formulas, [*path, name], acyclic)
        if cycle is not None:
            return cycle
    acyclic.add(name)
    return None
