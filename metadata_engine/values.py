"""Checks that a JSON value fits a field: used for defaults and saved filters.

Field documents here are schema-valid dicts, so type-specific properties
have the right JSON types when present.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from metadata_engine import rules

ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(value: str) -> date | None:
    """Parse an ISO 8601 date in the ``YYYY-MM-DD`` form, or return None."""
    if not ISO_DATE.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def parse_datetime(value: str) -> datetime | None:
    """Parse an ISO 8601 date and time, taking a value without an offset as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def max_length(field: Mapping[str, Any]) -> int | None:
    """Return the field's maximum length in characters, default included."""
    field_type = field["type"]
    if field_type not in rules.MAX_LENGTHS:
        return None
    return int(field.get("max_length", rules.MAX_LENGTHS[field_type]))


def precision_and_scale(field: Mapping[str, Any]) -> tuple[int, int]:
    return (
        int(field.get("precision", rules.PRECISION)),
        int(field.get("scale", rules.SCALE)),
    )


def value_problem(field: Mapping[str, Any], value: Any, *, constraints: bool) -> str:
    """Return why ``value`` does not fit ``field``, or an empty string if it does.

    With ``constraints`` the value must also meet the field's max_length,
    pattern, minimum, maximum, precision and scale, as a default must.
    A filter value only needs the right type and, for picklists, an option.
    """
    field_type = field["type"]
    if value is None:
        return "null is not a value"
    if field_type in rules.MAX_LENGTHS or field_type in ("lookup", "auto_number"):
        return _text_problem(field, value, constraints)
    if field_type == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return "expected an integer"
        return _range_problem(field, value) if constraints else ""
    if field_type in rules.DECIMAL_TYPES:
        if not is_number(value):
            return "expected a number"
        return _decimal_problem(field, value) if constraints else ""
    if field_type == "boolean":
        return "" if isinstance(value, bool) else "expected true or false"
    if field_type == "date":
        return _date_problem(field, value, constraints)
    if field_type == "datetime":
        if isinstance(value, str) and parse_datetime(value) is not None:
            return ""
        return "expected an ISO 8601 date and time such as '2024-12-31T09:30:00Z'"
    if field_type == "picklist":
        return option_problem(field, value)
    if field_type == "multi_picklist":
        return _multi_picklist_problem(field, value)
    return f"unsupported field type {field_type!r}"


def option_problem(field: Mapping[str, Any], value: Any) -> str:
    """Return why ``value`` is not one of the field's option values, or ''."""
    values = [option["value"] for option in field.get("options", [])]
    if isinstance(value, str) and value in values:
        return ""
    return f"expected one of the option values: {', '.join(values)}"


def _text_problem(field: Mapping[str, Any], value: Any, constraints: bool) -> str:
    if not isinstance(value, str):
        return "expected a string"
    if not constraints:
        return ""
    limit = max_length(field)
    if limit is not None and len(value) > limit:
        return f"is {len(value)} characters long, more than max_length {limit}"
    pattern = field.get("pattern")
    if pattern is None:
        return ""
    try:
        matches = re.fullmatch(pattern, value) is not None
    except re.error:
        return ""  # the invalid pattern is reported on its own
    return "" if matches else f"does not match the pattern {pattern!r}"


def _range_problem(field: Mapping[str, Any], value: Any) -> str:
    minimum, maximum = field.get("minimum"), field.get("maximum")
    if minimum is not None and value < minimum:
        return f"is below the minimum {minimum!r}"
    if maximum is not None and value > maximum:
        return f"is above the maximum {maximum!r}"
    return ""


def _decimal_problem(field: Mapping[str, Any], value: int | float) -> str:
    problem = _range_problem(field, value)
    if problem:
        return problem
    precision, scale = precision_and_scale(field)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return "expected a finite number"
    if not number.is_finite():
        return "expected a finite number"
    exponent = number.as_tuple().exponent
    places = max(0, -exponent) if isinstance(exponent, int) else 0
    if places > scale:
        return f"has {places} decimal places, more than scale {scale}"
    whole_digits = len(str(abs(int(number)))) if int(number) else 0
    if whole_digits > precision - scale:
        return (
            f"has {whole_digits} digits before the decimal point, more than "
            f"precision - scale = {precision - scale}"
        )
    return ""


def _date_problem(field: Mapping[str, Any], value: Any, constraints: bool) -> str:
    parsed = parse_date(value) if isinstance(value, str) else None
    if parsed is None:
        return "expected an ISO 8601 date such as '2024-12-31'"
    if not constraints:
        return ""
    minimum = parse_date(field.get("minimum", ""))
    maximum = parse_date(field.get("maximum", ""))
    if minimum is not None and parsed < minimum:
        return f"is before the minimum {field['minimum']!r}"
    if maximum is not None and parsed > maximum:
        return f"is after the maximum {field['maximum']!r}"
    return ""


def _multi_picklist_problem(field: Mapping[str, Any], value: Any) -> str:
    if not isinstance(value, list):
        return "expected a list of option values"
    for item in value:
        problem = option_problem(field, item)
        if problem:
            return f"item {item!r}: {problem}"
    if len(set(value)) != len(value):
        return "lists an option more than once"
    return ""
