"""Semantic checks of rule tests (``rule_tests/NAME.json``).

These run on merged, schema-valid documents after the entity checks and
report every case that names an unknown entity, field or role, gives a value
that does not fit its field, or expects nothing or two contradicting things.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from typing import Any

from metadata_engine import values
from metadata_engine.field_checks import Report
from metadata_engine.layout_checks import EntityFields, suggest
from metadata_engine.model import ADMIN_ROLE
from metadata_engine.permission_checks import References, ReportFor

Document = Mapping[str, Any]
#: Error key of messages about the record as a whole.
RECORD_KEY = "_schema"
DECIMAL_TYPES = frozenset({"decimal", "currency", "percent"})


def check_rule_tests(
    report_for: ReportFor,
    tests: Mapping[str, Document],
    roles: Mapping[str, Document],
    refs: References,
) -> None:
    """Check the rule tests ``tests`` (merged documents by key) against the
    declared ``roles`` and entities."""
    role_names = sorted({ADMIN_ROLE, *(doc["name"] for doc in roles.values())})
    for key, document in tests.items():
        report = report_for(key)
        for index, case in enumerate(document["cases"]):
            _check_case(report, f"/cases/{index}", case, role_names, refs)


def _check_case(
    report: Report,
    pointer: str,
    case: Document,
    role_names: list[str],
    refs: References,
) -> None:
    _check_expectations(report, pointer, case)
    _check_now(report, pointer, case)
    role = case.get("user", {}).get("role")
    if (
        role is not None
        and role not in role_names
        and not refs.is_broken("roles", role)
    ):
        report(
            f"{pointer}/user/role",
            f"rule case {case['description']!r} uses role {role!r}, which is not "
            "declared",
            suggest(role, role_names)
            + f"declared roles: {', '.join(role_names)}; or add roles/{role}.json",
        )
    entity = case["entity"]
    if entity in refs.entities:
        fields = refs.fields_of(entity)
        _check_record(report, f"{pointer}/record", case["record"], fields)
        _check_error_keys(report, f"{pointer}/errors", case, fields)
        _check_computed(report, f"{pointer}/computed", case, fields)
    elif entity not in refs.broken_entities:
        known = sorted(refs.entities)
        report(
            f"{pointer}/entity",
            f"rule case {case['description']!r} uses entity {entity!r}, which does "
            "not exist",
            suggest(entity, known) + f"use one of the entities: {', '.join(known)}",
        )


def _check_expectations(report: Report, pointer: str, case: Document) -> None:
    if "errors" in case and case.get("valid"):
        report(
            pointer,
            f"rule case {case['description']!r} expects both errors and a valid record",
            'remove "valid" or "errors"',
        )
    if not ("errors" in case or "valid" in case or "computed" in case):
        report(
            pointer,
            f"rule case {case['description']!r} expects nothing",
            'add "errors", "valid": true or "computed"',
        )


def _check_now(report: Report, pointer: str, case: Document) -> None:
    now = case.get("now")
    if now is not None and values.parse_datetime(now) is None:
        report(
            f"{pointer}/now",
            f"invalid date and time {now!r} in rule case {case['description']!r}",
            "give an ISO 8601 date and time with an offset, such as "
            '"2026-01-31T09:00:00Z"',
        )


def _check_record(
    report: Report, pointer: str, record: Document, fields: EntityFields
) -> None:
    for name, value in record.items():
        if name in fields.skipped:
            continue
        field = fields.by_name.get(name)
        if field is None:
            report(
                f"{pointer}/{name}",
                f"field {name!r} is not a field of entity {fields.entity!r}",
                suggest(name, fields.by_name)
                + f"use one of: {', '.join(fields.by_name)}",
            )
        elif _is_read_only(field):
            report(
                f"{pointer}/{name}",
                f"field {name!r} of entity {fields.entity!r} is read-only, so a "
                "record cannot give it a value",
                f'remove {name!r} from "record"; to check a formula\'s result, '
                'put it in "computed"',
            )
        elif value is not None:
            _check_value(report, f"{pointer}/{name}", name, field, value)


def _check_value(
    report: Report, pointer: str, name: str, field: Document, value: Any
) -> None:
    if field["type"] in DECIMAL_TYPES and isinstance(value, str):
        # The API takes decimals as strings too, such as "19.99".
        number = _decimal_or_none(value)
        if number is None:
            report(
                pointer,
                f"value {value!r} of field {name!r} is invalid: it is not a number",
                'give a number such as 19.99 or "19.99", or null for an empty field',
            )
            return
        value = float(number)
    problem = values.value_problem(field, value, constraints=False)
    if problem:
        report(
            pointer,
            f"value {value!r} of field {name!r} is invalid: {problem}",
            "give a value of the field's type, or null for an empty field",
        )


def _check_error_keys(
    report: Report, pointer: str, case: Document, fields: EntityFields
) -> None:
    known = [RECORD_KEY, *fields.by_name]
    for key in case.get("errors", {}):
        if key in known or key in fields.skipped:
            continue
        report(
            f"{pointer}/{key}",
            f"errors name {key!r}, which is not a field of entity {fields.entity!r}",
            suggest(key, known)
            + f"use a field name, or {RECORD_KEY!r} for messages about the record",
        )


def _check_computed(
    report: Report, pointer: str, case: Document, fields: EntityFields
) -> None:
    formulas = [name for name, doc in fields.by_name.items() if "formula" in doc]
    for name in case.get("computed", {}):
        if name in formulas or name in fields.skipped:
            continue
        listed = ", ".join(formulas) or "none"
        report(
            f"{pointer}/{name}",
            f"computed names {name!r}, which is not a formula field of entity "
            f"{fields.entity!r}",
            suggest(name, formulas) + f"formula fields of the entity: {listed}",
        )


def _decimal_or_none(text: str) -> decimal.Decimal | None:
    try:
        number = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        return None
    return number if number.is_finite() else None


def _is_read_only(field: Document) -> bool:
    return bool(
        field.get("read_only") or field["type"] == "auto_number" or "formula" in field
    )
