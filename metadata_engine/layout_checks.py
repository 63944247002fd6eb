"""Semantic checks of what refers to fields: forms, list views, filters, indexes."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from metadata_engine import fieldtypes, rules, values
from metadata_engine.field_checks import Report
from metadata_engine.model import FORM_MODES, SYSTEM_COLUMNS

Document = Mapping[str, Any]


def suggest(value: str, choices: Collection[str]) -> str:
    """Return ``"did you mean 'x'? "`` for a close match, or an empty string."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


@dataclass(frozen=True)
class EntityFields:
    """The valid fields of one entity, by name.

    ``skipped`` names fields that failed schema validation and were left out.
    References to them are not reported, because their own problem is.
    """

    entity: str
    by_name: Mapping[str, Document]
    skipped: Collection[str] = ()

    def column_type(self, name: str) -> str | None:
        """Return the type of a field or system column, or None if neither exists."""
        if name in self.by_name:
            return str(self.by_name[name]["type"])
        return rules.SYSTEM_COLUMN_TYPES.get(name)

    def unknown_column_hint(self, name: str) -> str:
        return (
            suggest(name, [*self.by_name, *SYSTEM_COLUMNS])
            + f"choose from the fields {', '.join(self.by_name)} and the system "
            + f"columns {', '.join(SYSTEM_COLUMNS)}"
        )


def check_indexes(report: Report, entity: Document, fields: EntityFields) -> None:
    seen: dict[tuple[bool, tuple[str, ...]], str] = {}
    for kind, noun in (("indexes", "index"), ("unique", "unique constraint")):
        for index, item in enumerate(entity.get(kind, [])):
            pointer = f"/{kind}/{index}"
            names = tuple(item["fields"])
            for position, name in enumerate(names):
                column_type = fields.column_type(name)
                if column_type is None and name not in fields.skipped:
                    report(
                        f"{pointer}/fields/{position}",
                        f"{noun} refers to {name!r}, which is not a field of "
                        f"entity {fields.entity!r}",
                        fields.unknown_column_hint(name),
                    )
                elif column_type == "multi_picklist":
                    report(
                        f"{pointer}/fields/{position}",
                        f"multi_picklist field {name!r} cannot be indexed, because "
                        "it is stored as a JSON list",
                        f"remove {name!r} from the {noun}",
                    )
            signature = (kind == "unique", names)
            if signature in seen:
                report(
                    pointer,
                    f"{noun} on {list(names)!r} repeats the one at {seen[signature]}",
                    "remove the duplicate entry",
                )
            seen.setdefault(signature, pointer)


def check_form(report: Report, form: Document, fields: EntityFields) -> None:
    first_seen: dict[str, str] = {}
    create_fields: set[str] = set()
    for section_index, section in enumerate(form["sections"]):
        section_modes = section.get("modes", FORM_MODES)
        for item_index, item in enumerate(section["fields"]):
            pointer = f"/form/sections/{section_index}/fields/{item_index}"
            if isinstance(item, str):
                name, modes = item, FORM_MODES
            else:
                name, modes = item["field"], item.get("modes", FORM_MODES)
                pointer += "/field"
            if name in fields.skipped:
                continue
            if name not in fields.by_name:
                report(
                    pointer,
                    f"form refers to {name!r}, which is not a field of entity "
                    f"{fields.entity!r}",
                    suggest(name, fields.by_name)
                    + f"use one of: {', '.join(fields.by_name)}",
                )
                continue
            if name in first_seen:
                report(
                    pointer,
                    f"field {name!r} appears more than once in the form, first at "
                    f"{first_seen[name]}",
                    "list each field once; use modes to show it only in some modes",
                )
                continue
            first_seen[name] = pointer
            if "create" in section_modes and "create" in modes:
                create_fields.add(name)
    _check_create_mode(report, fields, create_fields)


def _check_create_mode(
    report: Report, fields: EntityFields, create_fields: Collection[str]
) -> None:
    for name, field in fields.by_name.items():
        needs_input = (
            field.get("required")
            and "default" not in field
            and not field.get("read_only")
            and field["type"] != "auto_number"
        )
        if needs_input and name not in create_fields:
            report(
                "/form",
                f"required field {name!r} is not shown in the form's create mode, "
                "so no record can be created there",
                "add it to a section shown in create mode, give it a default, or "
                "make it optional",
            )


def check_list_view(
    report: Report, pointer: str, view: Document, fields: EntityFields
) -> None:
    for index, column in enumerate(view["columns"]):
        if fields.column_type(column) is None and column not in fields.skipped:
            report(
                f"{pointer}/columns/{index}",
                f"list view {view['name']!r} shows column {column!r}, which does not "
                "exist",
                fields.unknown_column_hint(column),
            )
    for index, key in enumerate(view.get("sort", [])):
        name = key.removeprefix("-")
        column_type = fields.column_type(name)
        if column_type is None:
            if name not in fields.skipped:
                report(
                    f"{pointer}/sort/{index}",
                    f"list view {view['name']!r} sorts by {name!r}, which does not "
                    "exist",
                    fields.unknown_column_hint(name),
                )
        elif not fieldtypes.get(column_type).sortable:
            report(
                f"{pointer}/sort/{index}",
                f"list view {view['name']!r} cannot sort by {name!r}, because "
                f"fields of type {column_type!r} are not sortable",
                "sort by a field of another type",
            )
    for index, condition in enumerate(view.get("filters", [])):
        check_filter(report, f"{pointer}/filters/{index}", condition, fields)


def check_filter(
    report: Report, pointer: str, condition: Document, fields: EntityFields
) -> None:
    name, op, value = condition["field"], condition["op"], condition["value"]
    column_type = fields.column_type(name)
    if column_type is None:
        if name not in fields.skipped:
            report(
                f"{pointer}/field",
                f"filter refers to {name!r}, which does not exist",
                fields.unknown_column_hint(name),
            )
        return
    # The API's table of operators, so that a saved filter never uses an
    # operator that the API would reject.
    allowed = fieldtypes.get(column_type).operators
    if op not in allowed:
        report(
            f"{pointer}/op",
            f"operator {op!r} does not apply to {name!r} of type {column_type!r}",
            f"use one of: {', '.join(allowed)}",
        )
        return
    field = fields.by_name.get(name, {"name": name, "type": column_type})
    problem = filter_value_problem(field, op, value)
    if problem:
        report(
            f"{pointer}/value",
            f"value {value!r} of filter '{name} {op}' is invalid: {problem}",
            "give a value of the field's type",
        )


def filter_value_problem(field: Document, op: str, value: Any) -> str:
    """Return why ``value`` cannot be used with ``field`` and ``op``, or ''."""
    if op == "isnull":
        return "" if isinstance(value, bool) else "expected true or false"
    is_multi_picklist = field["type"] == "multi_picklist"
    if op in ("startswith", "contains", "icontains") and not is_multi_picklist:
        return "" if isinstance(value, str) else "expected a string"
    if op in ("contains", "icontains"):
        return values.option_problem(field, value)
    if value is None:
        return "null matches nothing; use the operator 'isnull'"
    if op != "in":
        return values.value_problem(field, value, constraints=False)
    # A saved filter is JSON, so "in" takes a list rather than the URL's
    # comma-separated string.
    if not isinstance(value, list) or not value:
        return "expected a non-empty list"
    for item in value:
        problem = values.value_problem(field, item, constraints=False)
        if problem:
            return f"item {item!r}: {problem}"
    return ""
