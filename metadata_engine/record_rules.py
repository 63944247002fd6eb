"""Formula fields and validation rules, evaluated on every write of a record.

``apply_record_rules`` is the single entry point. The record service must
call it with the whole record as it will be stored (defaults, stored values
and the input merged), so that the same rules run for the UI, the API and
imports.
It fills in every formula field, in dependency order, and then evaluates
every validation rule, collecting all failures rather than the first.

Expressions see plain values: each field of the entity by name, ``now``
(the write's time, UTC), ``today`` (its date) and ``user`` (a map with the
keys ``id`` and ``role``). A field without a value is ``null``, and so is a
text that is empty or only white space, so ``x == null`` tests for a blank
field of any type. Dates are CEL timestamps at 00:00 UTC. Decimal, currency
and percent values are CEL doubles and integers are CEL ints.

Each entity's expressions are compiled once and kept in ``Entity.derived``.

"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metadata_engine.expressions import (
    Expression,
    ExpressionError,
    compile_expression,
    to_cel,
)
from metadata_engine.fieldtypes import TEXT_TYPES
from metadata_engine.messages import messages_for
from metadata_engine.model import Entity, Field, ValidationRule
from metadata_engine.record_rule_checks import VARIABLES

logger = logging.getLogger("metadata_engine")

#: Key of the compiled rules in ``Entity.derived``.
CACHE_KEY = "record_rules"
#: Error key of a message about the record as a whole.
RECORD_KEY = "_schema"


@dataclass(frozen=True)
class CompiledRules:
    """An entity's formulas, in the order to compute them, and its rules."""

    formulas: tuple[tuple[Field, Expression], ...]
    rules: tuple[tuple[ValidationRule, Expression], ...]
    #: Names of the fields that any of the expressions reads.
    reads: frozenset[str]


def compiled_rules(entity: Entity) -> CompiledRules:
    """Return the compiled formulas and rules of ``entity``, compiling them on
    the first call for this entity object.

    Raises ValueError for an expression that does not compile, which the
    checks of ``load_definition`` reject before an entity exists.
    """
    cached = entity.derived.get(CACHE_KEY)
    if cached is None:
        # Two threads may both compile, which is harmless: the results are
        # equal, and the last one stored stays.
        cached = _compile(entity)
        entity.derived[CACHE_KEY] = cached
    assert isinstance(cached, CompiledRules)
    return cached


def formula_fields(entity: Entity) -> tuple[str, ...]:
    """Return the names of the formula fields of ``entity``, which an update
    must write whenever it writes the record."""
    return tuple(field.name for field in entity.fields if field.formula)


def apply_record_rules(
    entity: Entity,
    record: dict[str, Any],
    user: Mapping[str, Any],
    locale: str | None = "en",
    now: dt.datetime | None = None,
) -> dict[str, list[str]]:
    """Compute the formula fields of ``record`` in place, then evaluate the
    validation rules.

    Returns the messages of every failed rule, keyed by field name or
    ``_schema``, or an empty dict when the record is valid. ``record`` is
    the whole record as it will be stored. ``user`` contains the writing
    user's ``id`` and ``role``. A formula or rule that fails to evaluate
    adds a message for its field instead of raising. A failed formula
    leaves its field empty.
    """
    errors = dependency_errors(entity, record, locale)
    compiled = compiled_rules(entity)
    if not compiled.formulas and not compiled.rules:
        return errors
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    values = {
        name: _expression_value(entity.field(name), record.get(name))
        for name in compiled.reads
    }
    values.update(
        now=moment,
        today=moment.date(),
        user={"id": user.get("id"), "role": user.get("role")},
    )
    messages = messages_for(locale)
    # Each value is converted to CEL once per record, not once per expression.
    converted: dict[str, Any] = {}
    for field, expression in compiled.formulas:
        value = _compute(
            entity, field, expression, (values, converted), messages, errors
        )
        record[field.name] = value
        if field.name in values:
            values[field.name] = _expression_value(field, value)
            converted.pop(field.name, None)
    for rule, expression in compiled.rules:
        _check(entity, rule, expression, (values, converted), locale, errors)
    return errors


#: Plain values by name, and the CEL values converted from them so far.
Inputs = tuple[Mapping[str, Any], dict[str, Any]]


def _evaluate(entity: Entity, expression: Expression, inputs: Inputs) -> Any:
    """Evaluate ``expression``, converting only the values not converted yet;
    a value that cannot be converted raises ``ExpressionError``."""
    values, converted = inputs
    for name in expression.names:
        if name not in converted:
            converted[name] = to_cel(entity.name, name, values.get(name))
    return expression.evaluate_cel({name: converted[name] for name in expression.names})


# Compiling --------------------------------------------------------------------


def _compile(entity: Entity) -> CompiledRules:
    names = [*entity.field_names, *VARIABLES]
    formulas = {
        field.name: (field, _compile_one(entity, field.name, field.formula, names))
        for field in entity.fields
        if field.formula
    }
    rules = tuple(
        (rule, _compile_one(entity, rule.name, rule.when, names))
        for rule in entity.validation_rules
    )
    ordered = tuple(formulas[name] for name in _dependency_order(entity, formulas))
    reads = set().union(*(expression.names for _, expression in (*ordered, *rules)))
    return CompiledRules(ordered, rules, frozenset(reads - set(VARIABLES)))


def _compile_one(
    entity: Entity, owner: str, source: str | None, names: list[str]
) -> Expression:
    try:
        return compile_expression(source or "", names)
    except ExpressionError as err:
        raise ValueError(
            f"expression of {entity.name}.{owner} does not compile: {err}; load "
            "the definition with load_definition, which reports such problems"
        ) from err


def _dependency_order(
    entity: Entity, formulas: Mapping[str, tuple[Field, Expression]]
) -> list[str]:
    """Return formula names so that each comes after the formulas it reads."""
    ordered: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        if name in visiting:
            chain = " -> ".join([*visiting[visiting.index(name) :], name])
            raise ValueError(f"formulas of {entity.name!r} form a cycle: {chain}")
        visiting.append(name)
        for read in sorted(formulas[name][1].names):
            if read in formulas:
                visit(read)
        visiting.pop()
        ordered.append(name)

    for name in formulas:
        visit(name)
    return ordered


# Evaluating -------------------------------------------------------------------


def _expression_value(field: Field, value: Any) -> Any:
    """Return ``value`` as expressions see it: blank text becomes null."""
    if isinstance(value, str) and field.type in TEXT_TYPES and not value.strip():
        return None
    return value


def _compute(
    entity: Entity,
    field: Field,
    expression: Expression,
    inputs: Inputs,
    messages: Mapping[str, str],
    errors: dict[str, list[str]],
) -> Any:
    try:
        result = _evaluate(entity, expression, inputs)
    except ExpressionError as err:
        logger.warning("formula of %s.%s failed: %s", entity.name, field.name, err)
        reason = _reason(err, messages)
        errors.setdefault(field.name, []).append(
            messages["formula_failed"].format(reason=reason)
        )
        return None
    try:
        return stored_value(field, result)
    except ValueError:
        logger.warning(
            "formula of %s.%s returned %r, which does not fit a %s field",
            entity.name,
            field.name,
            result,
            field.type,
        )
        reason = messages["reason_result"].format(value=result, type=field.type)
        errors.setdefault(field.name, []).append(
            messages["formula_failed"].format(reason=reason)
        )
        return None


def _check(
    entity: Entity,
    rule: ValidationRule,
    expression: Expression,
    inputs: Inputs,
    locale: str | None,
    errors: dict[str, list[str]],
) -> None:
    keys = rule.fields or (RECORD_KEY,)
    messages = messages_for(locale)
    try:
        result = _evaluate(entity, expression, inputs)
    except ExpressionError as err:
        logger.warning(
            "validation rule %s of %s failed: %s", rule.name, entity.name, err
        )
        reason = _reason(err, messages)
        for key in keys:
            errors.setdefault(key, []).append(
                messages["rule_failed"].format(rule=rule.name, reason=reason)
            )
        return
    if result is None or result is False:
        return
    if result is True:
        text = rule.message.get(locale)
    else:
        reason = messages["reason_result"].format(value=result, type="bool")
        text = messages["rule_failed"].format(rule=rule.name, reason=reason)
    for key in keys:
        errors.setdefault(key, []).append(text)


def _reason(err: ExpressionError, messages: Mapping[str, str]) -> str:
    """Return a short, translated reason for an evaluation error; the full
    error, which can be long, goes to the log only."""
    text = str(err.__cause__ or err)
    if "divide by zero" in text or "ZeroDivisionError" in text:
        return messages["reason_division"]
    if "no matching overload" in text or "no such overload" in text:
        return messages["reason_type"]
    return messages["reason_other"]


# Results ----------------------------------------------------------------------


def stored_value(field: Field, result: Any) -> Any:
    """Convert a formula's result to the Python value its field stores.

    Raises ValueError if the result does not fit the field's type, length or
    precision.
    """
    if result is None:
        return None
    if field.type in TEXT_TYPES:
        return _text(field, result)
    if field.type == "integer":
        if isinstance(result, bool) or not isinstance(result, int):
            raise ValueError(f"{result!r} is not an integer")
        return result
    if field.type in ("decimal", "currency", "percent"):
        return _decimal(field, result)
    if field.type == "boolean":
        if not isinstance(result, bool):
            raise ValueError(f"{result!r} is not a bool")
        return result
    if field.type in ("date", "datetime"):
        if not isinstance(result, dt.datetime):
            raise ValueError(f"{result!r} is not a timestamp")
        moment = result.astimezone(dt.UTC)
        return moment.date() if field.type == "date" else moment
    raise ValueError(f"a {field.type} field cannot have a formula")


def _text(field: Field, result: Any) -> str:
    if not isinstance(result, str):
        raise ValueError(f"{result!r} is not a string")
    if field.max_length is not None and len(result) > field.max_length:
        raise ValueError(f"{len(result)} characters, more than {field.max_length}")
    return result


def _decimal(field: Field, result: Any) -> decimal.Decimal:
    if isinstance(result, bool) or not isinstance(result, int | float):
        raise ValueError(f"{result!r} is not a number")
    if isinstance(result, float) and not math.isfinite(result):
        raise ValueError(f"{result!r} is not a finite number")
    scale = field.scale if field.scale is not None else 2
    precision = field.precision if field.precision is not None else 18
    number = decimal.Decimal(repr(result) if isinstance(result, float) else result)
    quantized = number.quantize(
        decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP
    )
    if quantized.adjusted() >= precision - scale:
        raise ValueError(f"{result!r} has more than {precision - scale} digits")
    return quantized


def has_record_rules(entity: Entity) -> bool:
    """Return True if ``entity`` has formula fields, validation rules or
    dependent picklists."""
    compiled = compiled_rules(entity)
    dependent = any(field.depends_on for field in entity.fields)
    return bool(compiled.formulas or compiled.rules or dependent)


def dependency_errors(
    entity: Entity, record: Mapping[str, Any], locale: str | None
) -> dict[str, list[str]]:
    """Return a message for each dependent picklist of ``record`` whose value
    its controlling field's value does not allow."""
    errors: dict[str, list[str]] = {}
    messages = messages_for(locale)
    for field in entity.fields:
        if not field.depends_on:
            continue
        value = record.get(field.name)
        chosen = value if isinstance(value, list) else [value]
        chosen = [item for item in chosen if item not in (None, "")]
        if not chosen:
            continue
        controlling = record.get(field.depends_on)
        allowed = field.allowed_options(controlling)
        rejected = [item for item in chosen if item not in allowed]
        if rejected:
            label = entity.field(field.depends_on).label.get(locale)
            errors[field.name] = [messages["dependent_option"].format(
                input=rejected[0], field=label, value=controlling,
                choices=", ".join(allowed) or "-",
            )]
    return errors
