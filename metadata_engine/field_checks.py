"""Semantic checks of one field document (after schema validation)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from metadata_engine import rules, values

#: Records a problem: (pointer, message, hint).
Report = Callable[[str, str, str], None]

#: Field types that may be sensitive (stored encrypted): the text-like types.
SENSITIVE_TYPES: tuple[str, ...] = ("text", "long_text", "email", "phone", "url")
#: Flags a sensitive field cannot carry, each with the reason.
SENSITIVE_CONFLICTS: tuple[tuple[str, str], ...] = (
    (
        "unique",
        "every value is encrypted with a random nonce, so equal values differ "
        "in storage and a unique constraint cannot compare them",
    ),
    ("indexed", "an index over encrypted values cannot serve any query"),
    (
        "searchable",
        "text search compares stored values, and these are encrypted",
    ),
)


def check_field(
    report: Report, pointer: str, field: Mapping[str, Any], entities: Collection[str]
) -> None:
    """Report every problem of ``field`` located at ``pointer`` in its entity."""
    field_type = field["type"]
    if field_type == "lookup":
        _check_lookup(report, pointer, field, entities)
    if field_type in ("picklist", "multi_picklist"):
        _check_options(report, pointer, field)
    if field_type in rules.DECIMAL_TYPES:
        _check_scale(report, pointer, field)
    if field_type == "text":
        _check_pattern(report, pointer, field)
    _check_range(report, pointer, field)
    _check_default(report, pointer, field)
    _check_flags(report, pointer, field)


def _check_lookup(
    report: Report, pointer: str, field: Mapping[str, Any], entities: Collection[str]
) -> None:
    target = field["target"]
    if target not in entities:
        close = difflib.get_close_matches(target, list(entities), n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        report(
            f"{pointer}/target",
            f"lookup field {field['name']!r} targets entity {target!r}, "
            "which does not exist",
            guess + f"use one of the entities: {', '.join(sorted(entities))}",
        )
    if field.get("on_delete") == "set_null" and field.get("required"):
        report(
            f"{pointer}/on_delete",
            f"required lookup field {field['name']!r} cannot use on_delete 'set_null'",
            "use 'restrict' or 'cascade', or make the field optional",
        )


def _check_options(report: Report, pointer: str, field: Mapping[str, Any]) -> None:
    seen: set[str] = set()
    for index, option in enumerate(field["options"]):
        value = option["value"]
        if value in seen:
            report(
                f"{pointer}/options/{index}/value",
                f"option value {value!r} appears more than once in field "
                f"{field['name']!r}",
                "give every option a unique value",
            )
        seen.add(value)


def _check_scale(report: Report, pointer: str, field: Mapping[str, Any]) -> None:
    precision, scale = values.precision_and_scale(field)
    if scale > precision:
        where = "/scale" if "scale" in field else "/precision"
        report(
            pointer + where,
            f"scale {scale} of field {field['name']!r} is greater than its "
            f"precision {precision}",
            "use a scale no greater than the precision, which defaults to 18",
        )


def _check_pattern(report: Report, pointer: str, field: Mapping[str, Any]) -> None:
    pattern = field.get("pattern")
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as err:
        report(
            f"{pointer}/pattern",
            f"pattern {pattern!r} of field {field['name']!r} is not a valid Python "
            f"regular expression: {err}",
            "fix the expression; it uses the syntax of Python's re module",
        )


def _check_range(report: Report, pointer: str, field: Mapping[str, Any]) -> None:
    minimum, maximum = field.get("minimum"), field.get("maximum")
    if minimum is None or maximum is None:
        return
    if field["type"] == "date":
        for key in ("minimum", "maximum"):
            if values.parse_date(field[key]) is None:
                report(
                    f"{pointer}/{key}",
                    f"{key} {field[key]!r} of field {field['name']!r} is not a date",
                    "use an existing date in the form YYYY-MM-DD",
                )
        low, high = values.parse_date(minimum), values.parse_date(maximum)
        if low is None or high is None:
            return
        ordered = low <= high
    else:
        ordered = minimum <= maximum
    if not ordered:
        report(
            f"{pointer}/minimum",
            f"minimum {minimum!r} of field {field['name']!r} is greater than its "
            f"maximum {maximum!r}",
            "swap the two values or correct one of them",
        )


def _check_default(report: Report, pointer: str, field: Mapping[str, Any]) -> None:
    if "default" not in field:
        return
    default = field["default"]
    if field["type"] in ("lookup", "auto_number"):
        report(
            f"{pointer}/default",
            f"field {field['name']!r} of type {field['type']!r} cannot have a default",
            "remove default",
        )
        return
    problem = values.value_problem(field, default, constraints=True)
    if problem:
        report(
            f"{pointer}/default",
            f"default {default!r} of field {field['name']!r} does not fit the field: "
            f"{problem}",
            f"give a default that is a valid {field['type']!r} value for this field",
        )


def _check_flags(report: Report, pointer: str, field: Mapping[str, Any]) -> None:
    name = field["name"]
    if field["type"] == "multi_picklist":
        for flag in ("unique", "indexed"):
            if field.get(flag):
                report(
                    f"{pointer}/{flag}",
                    f"multi_picklist field {name!r} cannot be {flag}, because it is "
                    "stored as a JSON list",
                    f"remove {flag!r}",
                )
    has_default = "default" in field or "default_expr" in field
    if field.get("required") and field.get("read_only") and not has_default:
        report(
            f"{pointer}/read_only",
            f"field {name!r} is required and read-only but has no default, so no "
            "user can create a record",
            "give it a default or a default_expr, or drop required or read_only",
        )


def check_sensitive(
    report: Report, pointer: str, entity: str, field: Mapping[str, Any]
) -> None:
    """Report a ``sensitive`` flag on a type that cannot be encrypted, or
    together with a flag that needs the plaintext in the database."""
    qualified = f"{entity}.{field['name']}"
    if not field.get("sensitive"):
        if "unmasked_roles" in field:
            report(
                f"{pointer}/unmasked_roles",
                f"field {qualified!r} sets unmasked_roles but is not sensitive",
                'add "sensitive": true or remove unmasked_roles',
            )
        return
    field_type = field["type"]
    if field_type not in SENSITIVE_TYPES:
        report(
            f"{pointer}/sensitive",
            f"field {qualified!r} of type {field_type!r} cannot be sensitive: "
            "only text-like values are encrypted",
            "remove sensitive, or use one of the types "
            + ", ".join(SENSITIVE_TYPES),
        )
    for flag, reason in SENSITIVE_CONFLICTS:
        if field.get(flag):
            report(
                f"{pointer}/{flag}",
                f"sensitive field {qualified!r} cannot be {flag}, because {reason}",
                f"remove {flag!r}, or remove sensitive to store the value in "
                "plaintext",
            )
