"""Run the rule tests a definition carries, without a database.

A rule test case gives a record in the JSON form the API accepts. It states
what the entity's validation rules and formula fields must make of it: the
messages expected per field, no message at all, or the value of a formula.
``run_rule_tests`` loads each record through the entity's schema, adds the
fields' defaults and calls ``apply_record_rules``, the function that
``RecordService`` calls on every write. ``metacrm validate`` and every apply
reject a definition whose cases fail, with one problem per failed case.
"""

from __future__ import annotations

import decimal
import logging
import threading
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError

from metadata_engine.errors import DefinitionError, Problem
from metadata_engine.model import Definition, Entity, Field, RuleCase, RuleTest
from metadata_engine.record_rules import apply_record_rules
from metadata_engine.validation import build_schema
from metadata_engine.values import parse_datetime

from .serialize import value_to_json

log = logging.getLogger(__name__)

#: User id of the writing user that every case runs as.
USER_ID = "00000000-0000-7000-8000-000000000001"
#: Role of the writing user when a case gives none.
DEFAULT_ROLE = "admin"
DECIMAL_TYPES = frozenset({"decimal", "currency", "percent"})

_PASSED: set[str] = set()
_PASSED_LOCK = threading.Lock()


def check_rule_tests(definition: Definition) -> None:
    """Raise ``DefinitionError`` listing every failed case of the
    definition's rule tests. A definition that passed once in this process
    is not run again."""
    if not definition.rule_tests:
        return
    with _PASSED_LOCK:
        if definition.content_hash in _PASSED:
            return
    problems = run_rule_tests(definition)
    if problems:
        raise DefinitionError(problems)
    with _PASSED_LOCK:
        _PASSED.add(definition.content_hash)


def count_rule_cases(definition: Definition) -> int:
    return sum(len(test.cases) for test in definition.rule_tests)


def run_rule_tests(definition: Definition) -> list[Problem]:
    """Run every case and return one problem per case that failed."""
    problems: list[Problem] = []
    for test in definition.rule_tests:
        for index, case in enumerate(test.cases):
            problem = run_case(definition, test, index, case)
            if problem is not None:
                problems.append(problem)
    log.info(
        "ran %d rule test cases of %s: %d failed",
        count_rule_cases(definition),
        definition.name,
        len(problems),
    )
    return problems


def run_case(
    definition: Definition, test: RuleTest, index: int, case: RuleCase
) -> Problem | None:
    """Run one case and return a problem if it failed, else None."""
    file = f"rule_tests/{test.name}.json"
    pointer = f"/cases/{index}"
    entity = definition.entity(case.entity)
    locale = definition.default_locale
    try:
        record = _load_record(entity, case, locale)
    except ValidationError as err:
        return Problem(
            file,
            f"{pointer}/record",
            f"case {case.description!r}: its record does not fit {entity.name}: "
            f"{err.messages}",
            "give values of the fields' types, as the API accepts them",
        )
    user = {"id": USER_ID, "role": case.role or DEFAULT_ROLE}
    errors = apply_record_rules(entity, record, user, locale, case.now)
    failures = _error_failures(case, errors)
    failures += _computed_failures(entity, case, record)
    if not failures:
        return None
    return Problem(
        file,
        pointer,
        f"rule test failed: {case.description!r}: {'; '.join(failures)}",
        "change the entity's validation rules or formulas, or the test if its "
        "expectation is wrong",
    )


def _load_record(entity: Entity, case: RuleCase, locale: str) -> dict[str, Any]:
    """Load the case's record as the API would, with the fields' defaults.

    Raises ValidationError for a value that does not fit its field. Required
    fields may be missing, because a case tests rules, not required fields.
    """
    data = dict(case.record)
    for field in entity.fields:
        if field.writable and field.default is not None:
            data.setdefault(field.name, field.default)
    schema = build_schema(entity, locale)()
    return dict(schema.load(data, partial=True))


def _error_failures(case: RuleCase, errors: Mapping[str, list[str]]) -> list[str]:
    if case.valid and errors:
        return [f"expected a valid record, but got {_describe(errors)}"]
    failures: list[str] = []
    for key, expected in case.errors.items():
        messages = errors.get(key, [])
        for text in expected:
            if not any(text in message for message in messages):
                failures.append(
                    f"expected a message for {key!r} containing {text!r}, but got "
                    f"{messages!r}"
                )
    return failures


def _computed_failures(
    entity: Entity, case: RuleCase, record: Mapping[str, Any]
) -> list[str]:
    failures: list[str] = []
    for name, expected in case.computed.items():
        field = entity.field(name)
        actual = record.get(name)
        if not _same_value(field, actual, expected):
            failures.append(
                f"expected {name} to be {expected!r}, but it is "
                f"{value_to_json(field, actual)!r}"
            )
    return failures


def _same_value(field: Field, actual: Any, expected: Any) -> bool:
    """Return True if the stored value ``actual`` equals the JSON ``expected``."""
    if actual is None or expected is None:
        return actual is None and expected is None
    if field.type in DECIMAL_TYPES:
        try:
            return decimal.Decimal(str(expected)) == actual
        except decimal.InvalidOperation:
            return False
    if field.type == "datetime" and isinstance(expected, str):
        return parse_datetime(expected) == actual
    if field.type in ("integer", "boolean"):
        # True == 1 in Python, but not in a record.
        return type(expected) is type(actual) and expected == actual
    return bool(value_to_json(field, actual) == expected)


def _describe(errors: Mapping[str, list[str]]) -> str:
    return "; ".join(f"{key}: {' '.join(texts)}" for key, texts in errors.items())
