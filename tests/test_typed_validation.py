"""The importer's fast check of typed rows must agree with a full load."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from metadata_engine.loader import load_definition
from metadata_engine.validation import build_schema

ALL_TYPES = Path(__file__).parent / "definitions" / "all_types"
VALID: dict[str, Any] = {
    "title": "Widget",
    "code": "AB12",
    "quantity": 5,
    "ratio": Decimal("0.5"),
    "price": Decimal("10.00"),
    "active": True,
    "due_on": dt.date(2030, 1, 1),
    "happened_at": dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC),
    "email": "a@example.com",
    "phone": "+1 555 0100",
    "website": "https://example.com",
}

CASES: list[dict[str, Any]] = [
    {},
    {"title": "x" * 21},
    {"title": None},
    {"code": "abc"},
    {"code": "AB123"},
    {"quantity": -1},
    {"quantity": 1001},
    {"ratio": Decimal("2")},
    {"ratio": Decimal("0.12345")},
    {"price": Decimal("-1")},
    {"due_on": dt.date(1999, 12, 31)},
    {"email": "not-an-email"},
    {"phone": "call me"},
    {"website": "ftp://example.com"},
    {"colour": "no-such-colour"},
    {"tags": ["no-such-tag"]},
    {"nonsense": "x"},
]


@pytest.fixture(scope="module")
def schema() -> Any:
    definition = load_definition(ALL_TYPES)
    return build_schema(definition.entity("sample"), "en")()


@pytest.mark.parametrize("change", CASES)
def test_typed_check_matches_load(schema: Any, change: dict[str, Any]) -> None:
    row = {**VALID, **change}
    assert schema.is_typed(row)
    try:
        schema.load(row)
        expected: dict[str, Any] = {}
    except ValidationError as err:
        expected = {key: flat(messages) for key, messages in err.messages.items()}
    assert schema.validate_typed(row) == expected


def flat(messages: Any) -> list[str]:
    """Merge the per-item errors of a list field, as validate_typed does."""
    if isinstance(messages, dict):
        return [text for item in messages.values() for text in item]
    return list(messages)


@pytest.mark.parametrize(
    "row",
    [
        {"quantity": "5"},
        {"quantity": True},
        {"due_on": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)},
        {"happened_at": dt.datetime(2030, 1, 1)},
        {"price": 10.5},
        {"tags": "a;b"},
    ],
)
def test_untyped_rows_detected(schema: Any, row: dict[str, Any]) -> None:
    assert not schema.is_typed(row)
