"""Validation rules and formula fields: load-time checks and evaluation."""

from __future__ import annotations

import datetime as dt
import decimal
import re
from pathlib import Path
from typing import Any

import pytest
from celpy.evaluation import CELEvalError

from metadata_engine.errors import DefinitionError
from metadata_engine.expressions import _to_cel as to_cel
from metadata_engine.expressions import compile_expression
from metadata_engine.loader import compile_documents, load_definition
from metadata_engine.model import Entity
from metadata_engine.record_rules import (
    apply_record_rules,
    compiled_rules,
    formula_fields,
)
from tests.definitions.builders import (
    documents,
    entity,
    field,
    manifest,
    problems_of,
    write_folder,
)

DEAL = "entities/deal.json"
ADMIN = {"id": "u-1", "role": "admin"}
NOW = dt.datetime(2026, 12, 4, 22, 0, tzinfo=dt.UTC)


def rule(name: str, when: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"name": name, "when": when, "message": name}
    document.update(changes)
    return document


def deal(*fields: dict[str, Any], rules: list[dict[str, Any]] | None = None) -> Any:
    """Return documents of a ``deal`` entity with an amount and a stage."""
    base = [
        field("amount", "decimal"),
        field("quantity", "integer"),
        field("stage", "text"),
        field("close_date", "date"),
    ]
    extra: dict[str, Any] = {"validation_rules": rules} if rules else {}
    return documents(entity("deal", *base, *fields, **extra))


def compiled_deal(*fields: dict[str, Any], rules: list[dict] | None = None) -> Entity:
    return compile_documents(deal(*fields, rules=rules)).entity("deal")


def fails_with(docs: dict, text: str) -> None:
    """Assert that compiling ``docs`` reports a problem containing ``text``."""
    with pytest.raises(DefinitionError, match=re.escape(text)):
        compile_documents(docs)


# Load-time checks


def test_syntax_error_has_pointer() -> None:
    docs = deal(field("total", "decimal", formula="amount * * 2.0"))
    problems = problems_of(lambda: compile_documents(docs))
    assert [p.pointer for p in problems] == ["/fields/5/formula"]
    assert problems[0].file == DEAL
    assert "line 1, column 10" in problems[0].message


def test_unknown_name_suggests_field() -> None:
    docs = deal(rules=[rule("positive", "amont < 0.0")])
    fails_with(docs, "unknown name 'amont'; did you mean 'amount'?")


def test_unknown_function_rejected() -> None:
    docs = deal(rules=[rule("blank", "stage.trim() == ''")])
    fails_with(docs, "unknown function 'trim' at line 1, column 7")


def test_formula_result_type_checked() -> None:
    docs = deal(field("label", "integer", formula="stage + '!'"))
    fails_with(docs, "formula of field 'label' returns a string, which a 'integer'")


def test_decimal_compared_with_int() -> None:
    docs = deal(rules=[rule("too_big", "amount > 100")])
    fails_with(docs, "compares a double and an int, which CEL does not convert")


def test_mixed_arithmetic_rejected() -> None:
    docs = deal(field("total", "decimal", formula="amount * quantity"))
    fails_with(docs, "applies '*' to a double and an int")


def test_formula_cycle_shows_chain() -> None:
    docs = deal(
        field("a", "integer", formula="b + 1"),
        field("b", "integer", formula="c + 1"),
        field("c", "integer", formula="a + 1"),
    )
    problems = problems_of(lambda: compile_documents(docs))
    assert len(problems) == 1
    assert "form a cycle: a -> b -> c -> a" in problems[0].message
    assert problems[0].pointer == "/fields/5/formula"


def test_formula_reading_itself_rejected() -> None:
    docs = deal(field("a", "integer", formula="a + 1"))
    fails_with(docs, "form a cycle: a -> a")


def test_condition_must_be_bool() -> None:
    docs = deal(rules=[rule("odd", "quantity % 2")])
    fails_with(docs, "condition of validation rule 'odd' returns an int, not a bool")


def test_rule_field_must_exist() -> None:
    docs = deal(rules=[rule("r", "quantity < 0", fields=["quantty"])])
    fails_with(docs, "shows its message on 'quantty', which is not a field")


def test_duplicate_rule_name() -> None:
    docs = deal(rules=[rule("r", "quantity < 0"), rule("r", "quantity > 9")])
    fails_with(docs, "validation rule name 'r' appears more than once")


def test_formula_with_default_rejected() -> None:
    docs = deal(field("total", "integer", formula="quantity * 2", default=0))
    fails_with(docs, "formula field 'total' cannot have 'default'")


def test_formula_on_picklist_rejected() -> None:
    grades = [{"value": "a", "label": "A"}]
    docs = deal(field("grade", "picklist", options=grades, formula="'a'"))
    fails_with(docs, "field 'grade' of type 'picklist' cannot have a formula")


def test_field_named_today_rejected() -> None:
    docs = deal(field("today", "date"), rules=[rule("r", "quantity < 0")])
    fails_with(docs, "field name 'today' hides the expression variable")


def test_deep_nesting_rejected() -> None:
    source = "(" * 20 + "quantity" + ")" * 20 + " < 0"
    fails_with(deal(rules=[rule("r", source)]), "nests deeper than 12 levels")


def test_long_condition_rejected() -> None:
    source = " || ".join(["quantity < 0"] * 200)
    problems = problems_of(lambda: compile_documents(deal(rules=[rule("r", source)])))
    assert problems[0].pointer == "/validation_rules/0/when"


def test_extension_appends_rules(tmp_path: Path) -> None:
    base = tmp_path / "base"
    write_folder(base, {"definition.json": manifest(), DEAL: deal()[DEAL]})
    extra = {
        "name": "deal",
        "extend": True,
        "validation_rules": [rule("bad", "quantity <")],
    }
    top = write_folder(
        tmp_path / "top",
        {"definition.json": manifest(extends="../base"), DEAL: extra},
    )
    problems = problems_of(lambda: load_definition(top))
    assert problems[0].file == DEAL
    assert problems[0].pointer == "/validation_rules/0/when"


def test_extension_rules_compile(tmp_path: Path) -> None:
    base_rules = [rule("negative", "quantity < 0")]
    base_deal = entity(
        "deal", field("quantity", "integer"), validation_rules=base_rules
    )
    write_folder(tmp_path / "base", {"definition.json": manifest(), DEAL: base_deal})
    extra = {
        "name": "deal",
        "extend": True,
        "validation_rules": [rule("big", "quantity > 9")],
    }
    top = write_folder(
        tmp_path / "top",
        {"definition.json": manifest(extends="../base"), DEAL: extra},
    )
    compiled = load_definition(top).entity("deal")
    assert [r.name for r in compiled.validation_rules] == ["negative", "big"]


# Evaluation


def test_formula_fills_record() -> None:
    compiled = compiled_deal(
        field("double_quantity", "integer", formula="quantity * 2")
    )
    record: dict[str, Any] = {"name": "x", "quantity": 21}
    assert apply_record_rules(compiled, record, ADMIN) == {}
    assert record["double_quantity"] == 42


def test_formula_field_is_read_only() -> None:
    compiled = compiled_deal(
        field("double_quantity", "integer", formula="quantity * 2")
    )
    assert not compiled.field("double_quantity").writable
    assert formula_fields(compiled) == ("double_quantity",)


def test_formulas_run_in_dependency_order() -> None:
    compiled = compiled_deal(
        field("with_tax", "decimal", formula="net * 1.2"),
        field("net", "decimal", formula="amount - 10.0"),
    )
    record: dict[str, Any] = {"amount": decimal.Decimal("110")}
    apply_record_rules(compiled, record, ADMIN)
    assert record["net"] == decimal.Decimal("100.00")
    assert record["with_tax"] == decimal.Decimal("120.00")


def test_missing_and_blank_are_null() -> None:
    compiled = compiled_deal(
        field("no_stage", "boolean", formula="stage == null"),
        field("no_amount", "boolean", formula="amount == null"),
    )
    for value in (None, "", "   "):
        record: dict[str, Any] = {"stage": value, "amount": decimal.Decimal("1")}
        apply_record_rules(compiled, record, ADMIN)
        assert record["no_stage"] is True
        assert record["no_amount"] is False


def test_every_failure_reported() -> None:
    rules = [
        rule("negative", "quantity < 0", fields=["quantity"]),
        rule("no_stage", "stage == null"),
        rule("odd", "quantity % 2 != 0", fields=["quantity"]),
    ]
    errors = apply_record_rules(compiled_deal(rules=rules), {"quantity": -3}, ADMIN)
    assert errors == {"quantity": ["negative", "odd"], "_schema": ["no_stage"]}


def test_message_in_user_locale() -> None:
    message = {"en": "Too many", "zh-CN": "太多了"}
    rules = [rule("many", "quantity > 9", message=message)]
    errors = apply_record_rules(
        compiled_deal(rules=rules), {"quantity": 10}, ADMIN, "zh-CN"
    )
    assert errors == {"_schema": ["太多了"]}


def test_rule_on_null_becomes_message() -> None:
    rules = [rule("positive", "amount <= 0.0", fields=["amount"])]
    errors = apply_record_rules(compiled_deal(rules=rules), {}, ADMIN)
    assert len(errors["amount"]) == 1
    assert "'positive' could not be checked: a value is empty" in errors["amount"][0]


def test_division_by_zero_becomes_message() -> None:
    compiled = compiled_deal(field("per_item", "integer", formula="100 / quantity"))
    record: dict[str, Any] = {"quantity": 0}
    errors = apply_record_rules(compiled, record, ADMIN)
    assert errors == {
        "per_item": [
            "This value could not be computed: it divides by zero. Ask an "
            "administrator to correct the formula."
        ]
    }
    assert record["per_item"] is None


def test_result_beyond_precision_rejected() -> None:
    formula = "amount * 1000000.0"
    compiled = compiled_deal(field("big", "decimal", precision=6, formula=formula))
    errors = apply_record_rules(compiled, {"amount": decimal.Decimal("5")}, ADMIN)
    assert "the result 5000000.0 is not a valid decimal value" in errors["big"][0]


def test_decimal_result_rounded_half_up() -> None:
    compiled = compiled_deal(field("half", "decimal", formula="amount / 2.0"))
    record: dict[str, Any] = {"amount": decimal.Decimal("0.05")}
    apply_record_rules(compiled, record, ADMIN)
    assert record["half"] == decimal.Decimal("0.03")


def test_user_and_today_visible() -> None:
    rules = [rule("admins_only", "user.role != 'admin' && quantity > 5")]
    compiled = compiled_deal(
        field("age_days", "integer", formula="(today - close_date).getHours() / 24"),
        rules=rules,
    )
    record: dict[str, Any] = {"quantity": 6, "close_date": dt.date(2026, 12, 1)}
    rep = {"id": "u-2", "role": "sales_rep"}
    assert apply_record_rules(compiled, record, rep, now=NOW) == {
        "_schema": ["admins_only"]
    }
    assert record["age_days"] == 3
    assert apply_record_rules(compiled, record, ADMIN, now=NOW) == {}


def test_date_formula_stores_date() -> None:
    formula = "close_date + duration('720h')"
    compiled = compiled_deal(field("renewal", "date", formula=formula))
    record: dict[str, Any] = {"close_date": dt.date(2026, 1, 1)}
    apply_record_rules(compiled, record, ADMIN)
    assert record["renewal"] == dt.date(2026, 1, 31)


def test_rules_compiled_once() -> None:
    compiled = compiled_deal(rules=[rule("negative", "quantity < 0")])
    assert compiled_rules(compiled) is compiled_rules(compiled)


# The closure evaluator against cel-python's interpreter

EQUIVALENCE_SOURCES = [
    "quantity < 0 && stage != 'won'",
    "quantity > 9 || amount >= 10.5",
    "amount == null || amount > 0.0",
    "stage in ['won', 'lost']",
    "quantity + 1",
    "quantity / 0",
    "amount / 0.0",
    "quantity % 3",
    "-quantity",
    "!flag",
    "flag ? stage : null",
    "quantity > 0 ? 'many' : 'none'",
    "size(stage) > 2",
    "stage.startsWith('w')",
    "stage + '!'",
    "int(amount) + quantity",
    "double(quantity) * amount",
    "(close_date - timestamp('2026-01-01T00:00:00Z')).getHours() / 24",
    "close_date + duration('24h') > close_date",
    "close_date.getDayOfWeek()",
    "[quantity, 1][0]",
    "9223372036854775807 + quantity",
    "stage.matches('^w.*')",
    "quantity == amount",
]
EQUIVALENCE_VALUES: list[dict[str, Any]] = [
    {},
    {
        "quantity": 3,
        "amount": 2.5,
        "stage": "won",
        "flag": True,
        "close_date": dt.date(2026, 3, 1),
    },
    {"quantity": -1, "amount": 0.0, "stage": "", "flag": False},
    {"quantity": 0, "stage": None, "flag": None, "close_date": None},
]


def outcome(run: Any, activation: dict[str, Any]) -> Any:
    """Return ("error",) for an evaluation error, else (type, value)."""
    try:
        result = run(activation)
    except CELEvalError:
        return ("error",)
    if isinstance(result, CELEvalError):
        return ("error",)
    return (type(result).__name__, result)


@pytest.mark.parametrize("source", EQUIVALENCE_SOURCES)
def test_closures_match_interpreter(source: str) -> None:
    names = {"quantity", "amount", "stage", "flag", "close_date"}
    expression = compile_expression(source, names)
    closure = expression._closure
    if source != "[quantity, 1][0]":
        assert closure is not None
    if closure is None:
        return
    for values in EQUIVALENCE_VALUES:
        activation = {name: to_cel(source, name, values.get(name)) for name in names}
        expected = outcome(expression._program.evaluate, activation)
        assert outcome(closure, activation) == expected, values
