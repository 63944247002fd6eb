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

from metadata_engine.expression_closures import INT64_MAX, INT64_MIN
from metadata_engine.expressions import (
    MAX_TEXT_LENGTH,
    Expression,
    ExpressionError,
    compile_expression,
    to_plain,
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
    #: Those of ``reads`` whose blank text expressions see as null.
    text_reads: frozenset[str] = frozenset()
    #: Names among ``now``, ``today`` and ``user`` that any expression reads.
    variables: frozenset[str] = frozenset()
    #: Whether the entity has dependent picklists to check on every write.
    has_dependents: bool = False


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
    compiled = compiled_rules(entity)
    errors: dict[str, list[str]] = {}
    if compiled.has_dependents:
        errors = dependency_errors(entity, record, locale)
    if not compiled.formulas and not compiled.rules:
        return errors
    inputs = _read_values(entity, compiled, record, user, now)
    values = inputs[0]
    messages = messages_for(locale)
    for field, expression in compiled.formulas:
        value = _compute(entity, field, expression, inputs, messages, errors)
        record[field.name] = value
        if field.name in values:
            values[field.name] = _expression_value(field, value)
            _convert(entity, field.name, inputs)
    for rule, expression in compiled.rules:
        _check(entity, rule, expression, inputs, locale, errors)
    return errors


def read_rule_values(
    entity: Entity,
    compiled: CompiledRules,
    record: Mapping[str, Any],
    user: Mapping[str, Any],
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Return the values that the compiled rules and formulas of ``entity``
    read from ``record``, as ``Expression.evaluate_plain`` takes them."""
    return _read_values(entity, compiled, record, user, now)[1]


def _read_values(
    entity: Entity,
    compiled: CompiledRules,
    record: Mapping[str, Any],
    user: Mapping[str, Any],
    now: dt.datetime | None,
) -> Inputs:
    """Return the value of every name that the expressions read, and of no
    other field (blank text is null), with the same values converted by
    ``to_plain``, once per record rather than once per expression."""
    values: dict[str, Any] = {}
    converted: dict[str, Any] = {}
    inputs: Inputs = (values, converted, set())
    for name in compiled.reads:
        value: Any = record.get(name)
        kind = type(value)
        if kind is str and name in compiled.text_reads and not value.strip():
            value = None
            kind = type(None)
        values[name] = value
        if (
            kind in _UNCHANGED
            or (kind is str and len(value) <= MAX_TEXT_LENGTH)
            or (kind is int and INT64_MIN <= value <= INT64_MAX)
        ):
            converted[name] = value
        elif kind is dt.date:
            converted[name] = dt.datetime.combine(value, _MIDNIGHT_UTC)
        else:
            _convert(entity, name, inputs)
    if compiled.variables:
        moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        values.update(
            now=moment,
            today=moment.date(),
            user={"id": user.get("id"), "role": user.get("role")},
        )
        for name in ("now", "today", "user"):
            _convert(entity, name, inputs)
    return inputs


def _convert(entity: Entity, name: str, inputs: Inputs) -> None:
    """Convert ``values[name]``. A value that cannot be converted goes into
    ``broken``, and each expression that reads it reports the problem."""
    values, converted, broken = inputs
    try:
        converted[name] = to_plain(entity.name, name, values[name])
    except ExpressionError:
        converted.pop(name, None)
        broken.add(name)
    else:
        broken.discard(name)


#: Types of the values that ``to_plain`` returns unchanged, whatever they are.
_UNCHANGED = frozenset({type(None), bool, float})
#: A date is a CEL timestamp at this time of its day, as in ``to_plain``.
_MIDNIGHT_UTC = dt.time(tzinfo=dt.UTC)
#: Values by name, the same values converted by ``to_plain``, and the names
#: of the values that could not be converted.
Inputs = tuple[dict[str, Any], dict[str, Any], set[str]]


def _evaluate(entity: Entity, expression: Expression, inputs: Inputs) -> Any:
    """Evaluate ``expression`` with the converted values. It raises
    ``ExpressionError`` if it reads a value that could not be converted."""
    values, converted, broken = inputs
    if broken:
        for name in expression.names & broken:
            to_plain(entity.name, name, values[name])
    return expression.evaluate_plain(converted)



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
    fields = frozenset(reads - set(VARIABLES))
    return CompiledRules(
        ordered,
        rules,
        fields,
        text_reads=frozenset(
            name for name in fields if entity.field(name).type in TEXT_TYPES
        ),
        variables=frozenset(reads & set(VARIABLES)),
        has_dependents=any(field.depends_on for field in entity.fields),
    )


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
        # Nearly always every value converted, so one call less is made.
        if inputs[2]:
            result = _evaluate(entity, expression, inputs)
        else:
            result = expression.evaluate_plain(inputs[1])
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
    try:
        # Nearly always every value converted, so one call less is made.
        if inputs[2]:
            result = _evaluate(entity, expression, inputs)
        else:
            result = expression.evaluate_plain(inputs[1])
    except ExpressionError as err:
        logger.warning(
            "validation rule %s of %s failed: %s", rule.name, entity.name, err
        )
        messages = messages_for(locale)
        reason = _reason(err, messages)
        for key in keys:
            errors.setdefault(key, []).append(
                messages["rule_failed"].format(rule=rule.name, reason=reason)
            )
        return
    if result is None or result is False:
        return
    messages = messages_for(locale)
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


# Field expression options -----------------------------------------------------
#
# ``default_expr``, ``read_only_when`` and ``visible_when`` see the same names
# as formulas and rules: the record's fields, ``now``, ``today`` and ``user``.

#: Key of the compiled field expression options in ``Entity.derived``.
FIELD_EXPRESSIONS_KEY = "field_expressions"


@dataclass(frozen=True)
class FieldExpressions:
    """An entity's compiled field expression options, each with its field,
    in field order."""

    defaults: tuple[tuple[Field, Expression], ...]
    read_only: tuple[tuple[Field, Expression], ...]
    visible: tuple[tuple[Field, Expression], ...]


def field_expressions(entity: Entity) -> FieldExpressions:
    """Return the compiled ``default_expr``, ``read_only_when`` and
    ``visible_when`` options of ``entity``, compiling them on the first call
    for this entity object.

    Raises ValueError for an expression that does not compile, which
    ``load_definition`` rejects before an entity exists.
    """
    cached = entity.derived.get(FIELD_EXPRESSIONS_KEY)
    if cached is None:
        # As with compiled_rules, a second thread compiling too is harmless.
        cached = FieldExpressions(
            defaults=_compile_option(entity, "default_expr"),
            read_only=_compile_option(entity, "read_only_when"),
            visible=_compile_option(entity, "visible_when"),
        )
        entity.derived[FIELD_EXPRESSIONS_KEY] = cached
    assert isinstance(cached, FieldExpressions)
    return cached


def _compile_option(
    entity: Entity, option: str
) -> tuple[tuple[Field, Expression], ...]:
    names = [*entity.field_names, *VARIABLES]
    compiled: list[tuple[Field, Expression]] = []
    for field in entity.fields:
        source = getattr(field, option)
        if not source:
            continue
        try:
            compiled.append((field, compile_expression(source, names)))
        except ExpressionError as err:
            raise ValueError(
                f"{option} of {entity.name}.{field.name} does not compile: {err}; "
                "load the definition with load_definition, which reports such "
                "problems"
            ) from err
    return tuple(compiled)


def fill_default_expressions(
    entity: Entity,
    record: dict[str, Any],
    user: Mapping[str, Any],
    now: dt.datetime | None = None,
    locale: str | None = "en",
) -> dict[str, list[str]]:
    """Set each field of a new ``record`` that has ``default_expr`` and no
    value to the expression's result, in place.

    Every expression reads ``record`` as it was passed in (the input with
    the static defaults), not the results of other ``default_expr`` options.
    Returns a message for each default that failed to evaluate or whose
    result does not fit its field, whose field then stays empty.
    """
    errors: dict[str, list[str]] = {}
    missing = [
        (field, expression)
        for field, expression in field_expressions(entity).defaults
        if _expression_value(field, record.get(field.name)) is None
    ]
    if not missing:
        return errors
    values = _option_inputs(entity, record, user, now)
    messages = messages_for(locale)
    for field, expression in missing:
        try:
            result = expression.evaluate(values)
        except ExpressionError as err:
            logger.warning("default_expr of %s.%s failed: %s",
                           entity.name, field.name, err)
            reason = _reason(err, messages)
            errors[field.name] = [messages["default_failed"].format(reason=reason)]
            continue
        try:
            value = default_value(field, result)
        except ValueError as err:
            logger.warning("default_expr of %s.%s returned %r, which does not fit: %s",
                           entity.name, field.name, result, err)
            reason = messages["reason_result"].format(value=result, type=field.type)
            errors[field.name] = [messages["default_failed"].format(reason=reason)]
            continue
        if value is not None:
            record[field.name] = value
    return errors


def default_value(field: Field, result: Any) -> Any:
    """Convert a ``default_expr`` result to the Python value ``field``
    stores, checking options and the field's minimum and maximum.

    Raises ValueError if the result does not fit the field.
    """
    # NOTE: the format of email, phone and url values and a text field's
    # pattern are not checked here, because the schema that checks them
    # runs on the input, before defaults are filled in.
    if result is None:
        return None
    if field.type == "multi_picklist":
        if not isinstance(result, list) or not all(
            isinstance(item, str) for item in result
        ):
            raise ValueError(f"{result!r} is not a list of strings")
        chosen = list(result)
    else:
        chosen = [stored_value(field, result)]
    if field.options:
        allowed = {option.value for option in field.options}
        for item in chosen:
            if item not in allowed:
                raise ValueError(f"{item!r} is not an option of the field")
    if field.type == "multi_picklist":
        return chosen
    value = chosen[0]
    if field.minimum is not None and value < field.minimum:
        raise ValueError(f"{value!r} is less than the minimum {field.minimum!r}")
    if field.maximum is not None and value > field.maximum:
        raise ValueError(f"{value!r} is greater than the maximum {field.maximum!r}")
    return value


def read_only_errors(
    entity: Entity,
    stored: Mapping[str, Any] | None,
    changes: Mapping[str, Any],
    user: Mapping[str, Any],
    locale: str | None = "en",
    now: dt.datetime | None = None,
) -> dict[str, list[str]]:
    """Return a message for each field of ``changes`` that its
    ``read_only_when`` makes read-only.

    On update, ``stored`` is the stored record: a field is rejected when its
    value in ``changes`` differs from the stored one and the condition is
    true on ``stored``. On create, ``stored`` is None and ``changes`` the
    input: a field is rejected when the input gives it a value and the
    condition is true on the input. A condition that fails to evaluate
    rejects the change too, with a message asking to correct it.
    """
    errors: dict[str, list[str]] = {}
    subject = changes if stored is None else stored
    values: dict[str, Any] | None = None
    messages = messages_for(locale)
    for field, expression in field_expressions(entity).read_only:
        if field.name not in changes:
            continue
        new = changes[field.name]
        if stored is None:
            if _expression_value(field, new) is None:
                continue
        elif same_value(field, stored.get(field.name), new):
            continue
        if values is None:
            values = _option_inputs(entity, subject, user, now)
        try:
            result = expression.evaluate(values)
        except ExpressionError as err:
            logger.warning("read_only_when of %s.%s failed: %s",
                           entity.name, field.name, err)
            reason = _reason(err, messages)
            errors[field.name] = [messages["read_only_failed"].format(reason=reason)]
            continue
        if result is True:
            errors[field.name] = [messages["read_only_while"].format(
                condition=field.read_only_when
            )]
        elif result is not None and result is not False:
            reason = messages["reason_result"].format(value=result, type="bool")
            errors[field.name] = [messages["read_only_failed"].format(reason=reason)]
    return errors


def read_only_fields(
    entity: Entity,
    record: Mapping[str, Any],
    user: Mapping[str, Any],
    now: dt.datetime | None = None,
) -> frozenset[str]:
    """Return the names of the fields whose ``read_only_when`` is true on
    ``record``, for a form to show them read-only. A condition that fails
    to evaluate leaves its field editable, and the save reports it."""
    names: set[str] = set()
    options = field_expressions(entity).read_only
    if not options:
        return frozenset()
    values = _option_inputs(entity, record, user, now)
    for field, expression in options:
        try:
            if expression.evaluate(values) is True:
                names.add(field.name)
        except ExpressionError as err:
            logger.info("read_only_when of %s.%s failed: %s",
                        entity.name, field.name, err)
    return frozenset(names)


def visibility(
    entity: Entity,
    record: Mapping[str, Any],
    user: Mapping[str, Any],
    now: dt.datetime | None = None,
) -> dict[str, bool]:
    """Return, for each field with ``visible_when``, whether forms and
    detail pages show it for ``record``.

    A field is shown when its condition is true, and also when the condition
    fails to evaluate, so that a faulty condition never hides a value. A
    false or null result hides it. This is presentation only: the API and
    exports return the field whatever the condition's result.
    """
    options = field_expressions(entity).visible
    if not options:
        return {}
    values = _option_inputs(entity, record, user, now)
    shown: dict[str, bool] = {}
    for field, expression in options:
        try:
            shown[field.name] = expression.evaluate(values) is True
        except ExpressionError as err:
            # Debug only: a form evaluates while the user types, and half
            # typed records often fail, for example by comparing null.
            logger.debug("visible_when of %s.%s failed: %s",
                         entity.name, field.name, err)
            shown[field.name] = True
    return shown


def same_value(field: Field, old: Any, new: Any) -> bool:
    """Return True if a stored value and an input value of ``field`` are the
    same value: blank text equals null, datetimes are compared in UTC,
    numbers by value and multi-picklist choices in any order."""
    old, new = _expression_value(field, old), _expression_value(field, new)
    if old is None or new is None:
        return old is None and new is None
    if isinstance(old, dt.datetime) and isinstance(new, dt.datetime):
        return _as_utc(old) == _as_utc(new)
    if isinstance(old, list) and isinstance(new, list):
        return sorted(map(str, old)) == sorted(map(str, new))
    numbers = (int, float, decimal.Decimal)
    if (
        isinstance(old, numbers) and isinstance(new, numbers)
        and not isinstance(old, bool) and not isinstance(new, bool)
    ):
        return decimal.Decimal(str(old)) == decimal.Decimal(str(new))
    return bool(old == new)


def _as_utc(moment: dt.datetime) -> dt.datetime:
    """Return ``moment`` in UTC; a naive datetime is taken to be UTC, as the
    database stores it."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _option_inputs(
    entity: Entity,
    record: Mapping[str, Any],
    user: Mapping[str, Any],
    now: dt.datetime | None,
) -> dict[str, Any]:
    """Return the plain values a field expression option reads: every field
    of ``record`` (absent ones are null), ``now``, ``today`` and ``user``."""
    moment = _as_utc(now or dt.datetime.now(dt.UTC))
    values: dict[str, Any] = {
        field.name: _expression_value(field, record.get(field.name))
        for field in entity.fields
    }
    values.update(
        now=moment,
        today=moment.date(),
        user={"id": user.get("id"), "role": user.get("role")},
    )
    return values
