"""Display values of records as text for one locale.

Numbers get the locale's grouping and decimal signs (Babel CLDR data),
currencies their ISO code, dates the locale's medium format. The functions
return plain strings, and templates escape them and decide the markup (badges,
links), so nothing here produces HTML.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from typing import Any

from babel import dates, numbers

from metadata_engine.model import Field, Option

from .i18n import babel_name

TRUE_MARK = "✓"
FALSE_MARK = "—"
#: Colours a picklist option may carry: CSS hex notation, 3 or 6 digits.
HEX_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


def format_value(field: Field, value: Any, locale: str) -> str:
    """Return ``value`` of ``field`` as display text in ``locale``.

    Picklist values become their option labels, lookups stay ids (the caller
    knows the titles), and ``None`` becomes an empty string.
    """
    if value is None or value == "" or value == []:
        return ""
    formatter = FORMATTERS.get(field.type)
    if formatter is None:
        return str(value)
    return formatter(field, value, locale)


def format_count(number: int, locale: str) -> str:
    return numbers.format_decimal(number, locale=babel_name(locale))


def format_integer(field: Field, value: Any, locale: str) -> str:
    return numbers.format_decimal(int(value), locale=babel_name(locale))


def decimal_pattern(scale: int) -> str:
    """Return a CLDR number pattern with grouping and exactly ``scale`` places."""
    if scale <= 0:
        return "#,##0"
    return "#,##0." + "0" * scale


def field_scale(field: Field) -> int:
    return field.scale if field.scale is not None else 2


def format_decimal(field: Field, value: Any, locale: str) -> str:
    return numbers.format_decimal(
        decimal.Decimal(str(value)),
        format=decimal_pattern(field_scale(field)),
        locale=babel_name(locale),
        decimal_quantization=True,
    )


def format_currency(field: Field, value: Any, locale: str) -> str:
    """Format an amount with the ISO code in front: ``USD 1,250.00``."""
    amount = format_decimal(field, value, locale)
    return f"{field.currency_code or 'USD'} {amount}"


def format_percent(field: Field, value: Any, locale: str) -> str:
    """Format a stored percentage (12.5 means 12.5 %) with its sign."""
    number = decimal.Decimal(str(value)).normalize()
    if number == number.to_integral_value():
        number = number.quantize(decimal.Decimal(1))
    text = numbers.format_decimal(number, locale=babel_name(locale))
    return f"{text}%"


def format_boolean(field: Field, value: Any, locale: str) -> str:
    return TRUE_MARK if value else FALSE_MARK


def format_date(field: Field, value: Any, locale: str) -> str:
    if isinstance(value, str):
        value = dt.date.fromisoformat(value)
    return dates.format_date(value, format="medium", locale=babel_name(locale))


def format_datetime(field: Field, value: Any, locale: str) -> str:
    """Format a datetime in the locale's medium format, in UTC and marked so.

    NOTE: users have no time zone setting yet, so times are shown in UTC.
    """
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    text = dates.format_datetime(
        value, format="medium", tzinfo=dt.UTC, locale=babel_name(locale)
    )
    return f"{text} UTC"


def format_picklist(field: Field, value: Any, locale: str) -> str:
    return option_label(field, str(value), locale)


def format_multi_picklist(field: Field, value: Any, locale: str) -> str:
    return ", ".join(option_label(field, str(item), locale) for item in value)


def option_label(field: Field, value: str, locale: str) -> str:
    """Return the label of a picklist option, or the raw value if it has none."""
    option = field.option(value)
    if option is None:
        return value
    return option.label.get(locale)


def option_color(option: Option | None) -> str | None:
    """Return the option's colour if it is a valid CSS hex colour, else None."""
    if option is None or not option.color:
        return None
    if not HEX_COLOR.match(option.color):
        return None
    return option.color


FORMATTERS = {
    "integer": format_integer,
    "decimal": format_decimal,
    "currency": format_currency,
    "percent": format_percent,
    "boolean": format_boolean,
    "date": format_date,
    "datetime": format_datetime,
    "picklist": format_picklist,
    "multi_picklist": format_multi_picklist,
}
