"""CEL expressions in metadata: compiled once, bounded, plain values only."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from metadata_engine.expressions import (
    MAX_LIST_ITEMS,
    MAX_SOURCE_LENGTH,
    ExpressionError,
    compile_expression,
)

FIELDS = {"amount", "stage", "close_date", "tags", "name"}


def test_rule_evaluates_record_values() -> None:
    rule = compile_expression('amount > 0 && stage != "closed_lost"', FIELDS)
    assert rule.names == {"amount", "stage"}
    assert rule.evaluate({"amount": decimal.Decimal("12.50"), "stage": "proposal"})
    assert not rule.evaluate({"amount": decimal.Decimal("0"), "stage": "proposal"})


def test_missing_value_is_null() -> None:
    rule = compile_expression("stage == null", FIELDS)
    assert rule.evaluate({}) is True


def test_dates_compare_as_timestamps() -> None:
    rule = compile_expression('close_date < timestamp("2027-01-01T00:00:00Z")', FIELDS)
    assert rule.evaluate({"close_date": dt.date(2026, 12, 31)}) is True
    assert rule.evaluate({"close_date": dt.date(2027, 1, 1)}) is False


def test_macro_over_list_field() -> None:
    rule = compile_expression('tags.exists(t, t == "vip")', FIELDS)
    assert rule.evaluate({"tags": ["new", "vip"]}) is True
    assert rule.evaluate({"tags": []}) is False


def test_syntax_error_has_position() -> None:
    with pytest.raises(ExpressionError, match="line 1, column 10") as caught:
        compile_expression("amount > > 0", FIELDS)
    assert (caught.value.line, caught.value.column) == (1, 10)


def test_unknown_name_rejected() -> None:
    with pytest.raises(ExpressionError, match="unknown name 'amont'"):
        compile_expression("amont > 0", FIELDS)


def test_macro_variable_is_not_a_field() -> None:
    rule = compile_expression("tags.all(t, size(t) < 20)", FIELDS)
    assert rule.names == {"tags"}


def test_nested_comprehension_rejected() -> None:
    with pytest.raises(ExpressionError, match="nested comprehensions"):
        compile_expression("tags.all(t, tags.exists(u, u == t))", FIELDS)


def test_deep_nesting_rejected() -> None:
    source = "(" * 20 + "amount" + ")" * 20
    with pytest.raises(ExpressionError, match="nests deeper than"):
        compile_expression(source, FIELDS)


def test_long_source_rejected() -> None:
    source = " || ".join(["amount > 0"] * 300)
    assert len(source) > MAX_SOURCE_LENGTH
    with pytest.raises(ExpressionError, match="more than 2000"):
        compile_expression(source, FIELDS)


def test_oversized_list_rejected() -> None:
    rule = compile_expression("tags.all(t, t != '')", FIELDS)
    with pytest.raises(ExpressionError, match="more than 1000 that an"):
        rule.evaluate({"tags": ["x"] * (MAX_LIST_ITEMS + 1)})


def test_objects_rejected() -> None:
    rule = compile_expression("amount > 0", FIELDS)
    with pytest.raises(ExpressionError, match="contains a object"):
        rule.evaluate({"amount": object()})


def test_evaluation_error_reported() -> None:
    rule = compile_expression("amount / 0 > 1", FIELDS)
    with pytest.raises(ExpressionError, match="evaluation failed"):
        rule.evaluate({"amount": 5})
