"""One converter per field type: column type, validation field, text parser.

Each ``FieldType`` turns a metadata field into the SQLAlchemy column type
that stores it, the marshmallow field that validates it, and a parser for
values that arrive as text (CSV cells, URL query strings). New types are added
with ``register`` without editing any central function.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError, fields, validate

from .model import Field
from .sqltypes import EncryptedText, ExactDecimal, JSONList, UTCDateTime

Messages = Mapping[str, str]

TRUE_WORDS = frozenset({"true", "yes", "y", "1", "on", "t", "是"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "off", "f", "否"})
PHONE_PATTERN = re.compile(r"^\+?[0-9 ()./\-]{3,40}(?:\s*(?:x|ext\.?)\s*[0-9]{1,6})?$")
#: Decimal exponents beyond this are rejected before any arithmetic, so text
#: such as 1e999999 cannot overflow the decimal context.
MAX_DECIMAL_EXPONENT = 40
TEXT_TYPES = frozenset({"text", "long_text", "email", "phone", "url", "picklist"})
NUMBER_TYPES = frozenset({"integer", "decimal", "currency", "percent"})

#: Operators allowed in filters, per field type.
ALL_OPERATORS = (
    "eq",
    "ne",
    "lt",
    "lte",
    "gt",
    "gte",
    "in",
    "contains",
    "icontains",
    "startswith",
    "isnull",
)
ORDERED_OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "isnull")
TEXT_OPERATORS = ALL_OPERATORS


class ParseError(ValueError):
    """Raised when a text value cannot be converted to a field's type."""

    def __init__(self, message_key: str, **params: Any) -> None:
        self.message_key = message_key
        self.params = params
        super().__init__(message_key)


class FieldType:
    """Base converter: a text column validated as a string."""

    name = "text"
    operators: tuple[str, ...] = TEXT_OPERATORS
    sortable = True

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return text_column(field, sa.String(field.max_length or 255))

    def schema_field(self, field: Field, messages: Messages) -> fields.Field:
        return fields.String(
            validate=self.validators(field, messages),
            error_messages={
                **base_errors(messages),
                "invalid": messages["invalid_text"],
            },
            **self.common(field, messages),
        )

    def validators(self, field: Field, messages: Messages) -> list[Any]:
        checks: list[Any] = []
        if field.max_length:
            checks.append(
                validate.Length(max=field.max_length, error=messages["max_length"])
            )
        if field.pattern:
            # The whole value must match, as when defaults are checked.
            full = re.compile(f"(?:{field.pattern})\\Z")
            checks.append(validate.Regexp(full, error=messages["pattern"]))
        checks.extend(masked_value_guard(field, messages))
        return checks

    def common(self, field: Field, messages: Messages) -> dict[str, Any]:
        """Return the keyword arguments every marshmallow field gets.

        Presence of required fields is checked by the schema on create, not
        here, so that a partial update may leave them out.
        """
        return {
            "required": False,
            "allow_none": not field.required,
            "metadata": {"description": field.label.get()},
        }

    def parse_text(self, field: Field, raw: str) -> Any:
        """Convert a non-empty text value (a CSV cell, a query parameter)."""
        return raw


class LongTextType(FieldType):
    name = "long_text"
    sortable = False

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return text_column(field, sa.Text())


class EmailType(FieldType):
    name = "email"

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return text_column(field, sa.String(254))

    def schema_field(self, field: Field, messages: Messages) -> fields.Field:
        return fields.Email(
            validate=[
                validate.Length(max=254, error=messages["max_length"]),
                *masked_value_guard(field, messages),
            ],
            error_messages={
                **base_errors(messages),
                "invalid": messages["invalid_email"],
            },
            **self.common(field, messages),
        )


class PhoneType(FieldType):
    name = "phone"

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return text_column(field, sa.String(40))

    def schema_field(self, field: Field, messages: Messages) -> fields.Field:
        return fields.String(
            validate=[
                validate.Regexp(PHONE_PATTERN, error=messages["invalid_phone"]),
                *masked_value_guard(field, messages),
            ],
            error_messages={
                **base_errors(messages),
                "invalid": messages["invalid_phone"],
            },
            **self.common(field, messages),
        )


class UrlType(FieldType):
    name = "url"

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return text_column(field, sa.String(2048))

    def schema_field(self, field: Field, messages: Messages) -> fields.Field:
        return fields.Url(
            schemes={"http", "https"},
            validate=[
                validate.Length(max=2048, error=messages["max_length"]),
                *masked_value_guard(field, messages),
            ],
            error_messages={
                **base_errors(messages),
                "invalid": messages["invalid_url"],
            },
            **self.common(field, messages),
        )


class IntegerType(FieldType):
    name = "integer"
    operators = ORDERED_OPERATORS

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return sa.BigInteger()

    def schema_field(self, field: Field, messages: Messages) -> fields.Field:
        return WholeNumber(
            validate=range_validators(field, messages, -(2**63), 2**63 - 1),
            error_messages={
                **base_errors(messages),
                "invalid": messages["invalid_integer"],
                "too_large": messages["too_large"],
            },
            **self.common(field, messages),
        )

    def parse_text(self, field: Field, raw: str) -> Any:
        text = raw.strip().replace(",", "")
        try:
            number = decimal.Decimal(text)
            whole = number == number.to_integral_value()
        except decimal.DecimalException:
            raise ParseError("invalid_integer") from None
        if not number.is_finite() or not whole:
            raise ParseError("invalid_integer")
        if not -(2**63) <= number < 2**63:
            raise ParseError("too_large")
        return int(number)


class DecimalType(FieldType):
    name = "decimal"
    operators = ORDERED_OPERATORS

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return ExactDecimal(
            field.precision or 18, field.scale if field.scale is not None else 2
        )

    def schema_field(self, field: Field, messages: Messages) -> fields.Field:
        precision = field.precision or 18
        scale = field.scale if field.scale is not None else 2
        checks = range_validators(field, messages, None, None)
        checks.append(DigitsValidator(precision, scale, messages))
        return fields.Decimal(
            as_string=True,
            allow_nan=False,
            validate=checks,
            error_messages={
                **base_errors(messages),
                "invalid": messages["invalid_decimal"],
                "special": messages["invalid_decimal"],
            },
            **self.common(field, messages),
        )

    def parse_text(self, field: Field, raw: str) -> Any:
        text = raw.strip().replace(",", "").lstrip("$¥€£").rstrip("%").strip()
        try:
            number = decimal.Decimal(text)
        except decimal.DecimalException:
            raise ParseError("invalid_decimal") from None
        if not number.is_finite() or abs(number.adjusted()) > MAX_DECIMAL_EXPONENT:
            raise ParseError("invalid_decimal")
        return number


class CurrencyType(DecimalType):
    name = "currency"


class PercentType(DecimalType):
    name = "percent"


class BooleanType(FieldType):
    name = "boolean"
    operators = ("eq", "ne", "isnull")

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return sa.Boolean()

    def schema_field(self, field: Field, messages: Messages) -> fields.Field:
        return fields.Boolean(
            truthy=set(TRUE_WORDS) | {True},
            falsy=set(FALSE_WORDS) | {False},
            error_messages={
                **base_errors(messages),
                "invalid": messages["invalid_boolean"],
            },
            **self.common(field, messages),
        )

    def parse_text(self, field: Field, raw: str) -> Any:
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ParseError("invalid_boolean")


class DateType(FieldType):
    name = "date"
    operators = ORDERED_OPERATORS

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return sa.Date()

    def schema_field(self, field: Field, messages: Messages) -> fields.Field:
        return fields.Date(
            format="iso",
            validate=range_validators(field, messages, None, None, parse_date),
            error_messages={
                **base_errors(messages),
                "invalid": messages["invalid_date"],
                "format": messages["invalid_date"],
            },
            **self.common(field, messages),
        )

    def parse_text(self, field: Field, raw: str) -> Any:
        try:
            return dt.date.fromisoformat(raw.strip())
        except ValueError:
            raise ParseError("invalid_date") from None


class DateTimeType(FieldType):
    name = "datetime"
    operators = ORDERED_OPERATORS

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return UTCDateTime()

    def schema_field(self, field: Field, messages: Messages) -> fields.Field:
        return fields.AwareDateTime(
            format="iso",
            default_timezone=dt.UTC,
            validate=[_in_utc_range(messages)],
            error_messages={
                **base_errors(messages),
                "invalid": messages["invalid_datetime"],
                "format": messages["invalid_datetime"],
            },
            **self.common(field, messages),
        )

    def parse_text(self, field: Field, raw: str) -> Any:
        text = raw.strip().replace("Z", "+00:00")
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ParseError("invalid_datetime") from None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        try:
            return value.astimezone(dt.UTC)
        except OverflowError:
            raise ParseError("invalid_datetime") from None


class PicklistType(FieldType):
    name = "picklist"
    operators = ("eq", "ne", "in", "isnull")

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return sa.String(100)

    def schema_field(self, field: Field, messages: Messages) -> fields.Field:
        choices = [option.value for option in field.options]
        return fields.String(
            validate=[validate.OneOf(choices, error=messages["choice"])],
            error_messages={
                **base_errors(messages),
                "invalid": messages["invalid_text"],
            },
            **self.common(field, messages),
        )


class MultiPicklistType(FieldType):
    name = "multi_picklist"
    operators = ("contains", "isnull")
    sortable = False

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return JSONList()

    def schema_field(self, field: Field, messages: Messages) -> fields.Field:
        choices = [option.value for option in field.options]
        return fields.List(
            fields.String(validate=[validate.OneOf(choices, error=messages["choice"])]),
            error_messages={
                **base_errors(messages),
                "invalid": messages["invalid_list"],
            },
            **self.common(field, messages),
        )

    def parse_text(self, field: Field, raw: str) -> Any:
        return [part.strip() for part in re.split(r"[;,]", raw) if part.strip()]


class LookupType(FieldType):
    name = "lookup"
    operators = ("eq", "ne", "in", "isnull")

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return sa.String(36)

    def schema_field(self, field: Field, messages: Messages) -> fields.Field:
        return fields.String(
            validate=[validate.Length(min=1, max=36, error=messages["invalid_id"])],
            error_messages={**base_errors(messages), "invalid": messages["invalid_id"]},
            **self.common(field, messages),
        )


class AutoNumberType(FieldType):
    name = "auto_number"

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        return sa.String(64)


#: Start of a masked value as the API and UI show it (``•••• 1234``).
MASKED_PREFIX = "••••"
MASKED_VALUE_MESSAGE = (
    "This is a masked value, not the real one: send the real value or leave "
    "the field out."
)


def masked_value_guard(field: Field, messages: Messages) -> list[Any]:
    """Return a validator that rejects a masked value written back into a
    sensitive field, which would replace the real value with the mask."""
    if not field.sensitive:
        return []
    message = messages.get("masked_value", MASKED_VALUE_MESSAGE)

    def check(value: str) -> None:
        if isinstance(value, str) and value.startswith(MASKED_PREFIX):
            raise ValidationError(message)

    return [check]


def text_column(
    field: Field, plain: sa.types.TypeEngine[Any]
) -> sa.types.TypeEngine[Any]:
    """Return ``plain``, or an encrypted column if the field is sensitive."""
    # NOTE: migrations never change a column's type, so on PostgreSQL a field
    # made sensitive after its table exists keeps VARCHAR(n), which is too
    # short for ciphertext. Writes to it then fail.
    if field.sensitive:
        return EncryptedText(f"{field.entity}.{field.name}")
    return plain


class WholeNumber(fields.Integer):
    """An integer that also accepts integral text such as ``"42"`` (HTML forms
    send text), but rejects fractions instead of truncating them."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        if isinstance(value, str):
            try:
                value = decimal.Decimal(value.strip())
            except decimal.InvalidOperation:
                raise self.make_error("invalid", input=value) from None
        if isinstance(value, float):
            value = decimal.Decimal(value) if value == value else None
        if isinstance(value, decimal.Decimal) or value is None:
            if value is None or not _is_whole(value):
                raise self.make_error("invalid", input=value)
            value = int(value)
        return super()._validated(value)


def _is_whole(value: decimal.Decimal) -> bool:
    return value.is_finite() and value == value.to_integral_value()


class DigitsValidator(validate.Validator):
    """Checks that a decimal fits NUMERIC(precision, scale)."""

    def __init__(self, precision: int, scale: int, messages: Messages) -> None:
        self.precision = precision
        self.scale = scale
        self.messages = messages

    def __call__(self, value: decimal.Decimal) -> decimal.Decimal:
        _, digits, exponent = value.normalize().as_tuple()
        if not isinstance(exponent, int):
            raise ValidationError(self.messages["invalid_decimal"])
        places = max(-exponent, 0)
        if places > self.scale:
            raise ValidationError(
                self.messages["decimal_places"].format(places=self.scale)
            )
        # Digits before the decimal point: 1E+20 has 21, 123.45 has 3.
        whole_digits = max(len(digits) + exponent, 0) if any(digits) else 0
        if whole_digits > self.precision - self.scale:
            raise ValidationError(
                self.messages["decimal_digits"].format(
                    digits=self.precision - self.scale
                )
            )
        return value


def _in_utc_range(messages: Messages) -> Callable[[dt.datetime], None]:
    """Reject datetimes that overflow when converted to UTC, such as
    9999-12-31T23:59:59-12:00."""

    def check(value: dt.datetime) -> None:
        try:
            value.astimezone(dt.UTC)
        except OverflowError:
            raise ValidationError(messages["invalid_datetime"]) from None

    return check


def base_errors(messages: Messages) -> dict[str, str]:
    return {"required": messages["required"], "null": messages["null"]}


def parse_date(value: Any) -> Any:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def range_validators(
    field: Field,
    messages: Messages,
    lowest: Any,
    highest: Any,
    convert: Callable[[Any], Any] = lambda value: value,
) -> list[Any]:
    """Return a Range validator from the field's minimum and maximum."""
    minimum = convert(field.minimum) if field.minimum is not None else lowest
    maximum = convert(field.maximum) if field.maximum is not None else highest
    if minimum is None and maximum is None:
        return []
    if minimum is not None and maximum is not None:
        error = messages["range"]
    elif minimum is not None:
        error = messages["min"]
    else:
        error = messages["max"]
    return [validate.Range(min=minimum, max=maximum, error=error)]


_REGISTRY: dict[str, FieldType] = {}


def register(field_type: FieldType) -> None:
    """Add or replace the converter for ``field_type.name``."""
    _REGISTRY[field_type.name] = field_type


def get(type_name: str) -> FieldType:
    """Return the converter for ``type_name``; raise ``KeyError`` if none."""
    return _REGISTRY[type_name]


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


for _converter in (
    FieldType(),
    LongTextType(),
    IntegerType(),
    DecimalType(),
    CurrencyType(),
    PercentType(),
    BooleanType(),
    DateType(),
    DateTimeType(),
    EmailType(),
    PhoneType(),
    UrlType(),
    PicklistType(),
    MultiPicklistType(),
    LookupType(),
    AutoNumberType(),
):
    register(_converter)
