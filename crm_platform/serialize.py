"""Conversion of records and entity metadata to JSON-ready values.

The REST API and the UI share these rules so that a record reads the same
everywhere. Decimals are strings with exactly the field's scale, because a
JSON number passes through binary floating point in most clients. Dates are
``YYYY-MM-DD``, datetimes are ISO 8601 in UTC ending in ``Z``, multi-picklists
are lists and lookups are the target record's id.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from metadata_engine import fieldtypes
from metadata_engine.model import (
    RIGHTS,
    SCOPED_RIGHTS,
    SYSTEM_COLUMNS,
    Entity,
    Field,
    ListView,
    Text,
)
from metadata_engine.validation import WRITABLE_SYSTEM_COLUMNS

from .querying import SYSTEM_TYPES

if TYPE_CHECKING:
    from .access import Access

DECIMAL_TYPES = frozenset({"decimal", "currency", "percent"})
#: Text that replaces the hidden part of a masked value.
MASK = "••••"
#: Characters at the end of a masked value that stay visible.
MASK_VISIBLE_TAIL = 4
#: Scale of a decimal field that declares none (metadata format version 1).
DEFAULT_SCALE = 2


def record_to_json(
    entity: Entity, record: Mapping[str, Any], role: str | None = None
) -> dict[str, Any]:
    """Return a stored record as JSON values: system columns, then fields.

    Sensitive fields are masked unless ``role`` is one of their unmasked
    roles; without a role every sensitive field is masked.
    """
    result: dict[str, Any] = {}
    for name in SYSTEM_COLUMNS:
        if name in record:
            result[name] = system_value_to_json(record[name])
    for field in entity.fields:
        if field.name in record:
            value = visible_value(field, record[field.name], role)
            result[field.name] = value_to_json(field, value)
    return result


def mask_text(value: str) -> str:
    """Return ``•••• 1234``: only the last four characters of ``value``, or
    only the mask when it has four characters or fewer."""
    if len(value) <= MASK_VISIBLE_TAIL:
        return MASK
    return f"{MASK} {value[-MASK_VISIBLE_TAIL:]}"


def visible_value(field: Field, value: Any, role: str | None) -> Any:
    """Return ``value`` as a member with ``role`` may see it."""
    if value is None or value == "" or not field.masked_for(role):
        return value
    return mask_text(str(value))


def mask_record(
    entity: Entity, record: Mapping[str, Any], role: str | None
) -> dict[str, Any]:
    """Return a copy of ``record`` with the values ``role`` may not see masked."""
    masked = dict(record)
    for field in entity.fields:
        if field.sensitive and field.name in masked:
            masked[field.name] = visible_value(field, masked[field.name], role)
    return masked


def system_value_to_json(value: Any) -> Any:
    """Convert a system column's value: datetimes to ISO 8601, the rest as is."""
    if isinstance(value, dt.datetime):
        return datetime_to_json(value)
    return value


def value_to_json(field: Field, value: Any) -> Any:
    """Convert one stored value of ``field`` to its JSON form."""
    if value is None:
        return None
    if field.type in DECIMAL_TYPES:
        return decimal_to_json(decimal.Decimal(value), field.scale)
    if field.type == "datetime":
        return datetime_to_json(value)
    if field.type == "date":
        return value.isoformat()
    if field.type == "multi_picklist":
        return list(value)
    if field.type in ("lookup", "auto_number"):
        return str(value)
    return value


def decimal_to_json(value: decimal.Decimal, scale: int | None) -> str:
    """Format ``value`` in plain notation with exactly ``scale`` decimals."""
    places = DEFAULT_SCALE if scale is None else scale
    exponent = decimal.Decimal(1).scaleb(-places)
    context = decimal.Context(prec=max(60, len(value.as_tuple().digits) + places))
    return format(value.quantize(exponent, context=context), "f")


def datetime_to_json(value: dt.datetime) -> str:
    """Format an aware datetime as ISO 8601 in UTC with a ``Z`` suffix.

    A naive value is taken to be UTC, as the control plane stores it.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    text = value.astimezone(dt.UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def metadata_value_to_json(value: Any) -> Any:
    """Convert a compiled metadata value (a default, a minimum) to JSON."""
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return datetime_to_json(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def default_to_json(field: Field) -> Any:
    """Return the field's default as the API would return the stored value."""
    if field.default is not None and field.type in DECIMAL_TYPES:
        return decimal_to_json(decimal.Decimal(field.default), field.scale)
    return metadata_value_to_json(field.default)


# Entity metadata, as the API's ``entities`` endpoint returns it.


def entity_to_json(
    entity: Entity, locale: str, access: Access | None = None
) -> dict[str, Any]:
    """Describe an entity for API clients, with labels in ``locale``.

    With ``access`` (the calling user's rights on the entity) the fields
    hidden from the user are left out, and an ``access`` member states the
    user's rights and the level of each remaining field.
    """
    hidden = access.hidden if access is not None else frozenset()
    fields = [field for field in entity.fields if field.name not in hidden]
    description: dict[str, Any] = {
        "name": entity.name,
        "label": entity.label.get(locale),
        "plural_label": entity.plural_label.get(locale),
        "description": _optional_text(entity.description, locale),
        "icon": entity.icon,
        "title_field": entity.title_field,
        "system_columns": [
            system_column_to_json(name, access) for name in SYSTEM_COLUMNS
        ],
        "fields": [field_to_json(field, locale) for field in fields],
        "list_views": [
            list_view_to_json(view, locale, hidden) for view in entity.list_views
        ],
    }
    if access is not None:
        description["access"] = access_to_json(access, fields)
    return description


def access_to_json(access: Access, fields: Sequence[Field]) -> dict[str, Any]:
    """Describe one user's rights on an entity: the scopes of each scoped
    right (an empty list when not granted), a bool for each other right, and
    the level of each field the user can see."""
    rights: dict[str, Any] = {}
    for right in RIGHTS:
        if right in SCOPED_RIGHTS:
            rights[right] = list(access.scopes(right))
        else:
            rights[right] = access.allows(right)
    return {
        "rights": rights,
        "fields": {field.name: access.level(field.name) for field in fields},
    }


def system_column_to_json(name: str, access: Access | None = None) -> dict[str, Any]:
    """Describe a system column. Columns that contain ids have the type ``id``.

    With ``access``, ``owner_id`` is read-only unless the user has the
    change_owner right.
    """
    filter_type = SYSTEM_TYPES[name]
    read_only = name not in WRITABLE_SYSTEM_COLUMNS
    if name == "owner_id" and access is not None:
        read_only = not access.allows("change_owner")
    return {
        "name": name,
        "type": "id" if filter_type == "lookup" else filter_type,
        "read_only": read_only,
        "sortable": True,
        "operators": list(fieldtypes.get(filter_type).operators),
    }


def field_to_json(field: Field, locale: str) -> dict[str, Any]:
    """Describe one field: its type, its constraints and its filter operators."""
    converter = fieldtypes.get(field.type)
    description: dict[str, Any] = {
        "name": field.name,
        "type": field.type,
        "label": field.label.get(locale),
        "help_text": _optional_text(field.help_text, locale),
        "required": field.required,
        "read_only": not field.writable,
        "unique": field.unique,
        "searchable": field.searchable,
        "sortable": converter.sortable and not field.sensitive,
        "operators": [] if field.sensitive else list(converter.operators),
        "default": default_to_json(field),
        "sensitive": field.sensitive,
        "personal": field.personal,
    }
    if field.sensitive:
        description["unmasked_roles"] = list(field.unmasked_roles)
    optional = {
        "max_length": field.max_length,
        "pattern": field.pattern,
        "minimum": metadata_value_to_json(field.minimum),
        "maximum": metadata_value_to_json(field.maximum),
        "precision": field.precision,
        "scale": field.scale,
        "currency_code": field.currency_code,
        "target": field.target,
        "on_delete": field.on_delete,
        "prefix": field.prefix,
        "digits": field.digits,
    }
    description.update({key: value for key, value in optional.items()
                        if value is not None})
    if field.options:
        description["options"] = [
            {"value": option.value, "label": option.label.get(locale),
             "color": option.color}
            for option in field.options
        ]
    return description


def list_view_to_json(
    view: ListView, locale: str, hidden: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Describe a list view, without the columns and sort keys on ``hidden``
    fields."""
    return {
        "name": view.name,
        "label": view.label.get(locale),
        "columns": [name for name in view.columns if name not in hidden],
        "sort": [key for key in view.sort if key.removeprefix("-") not in hidden],
        "filters": [
            {"field": item.field, "op": item.op,
             "value": metadata_value_to_json(item.value)}
            for item in view.filters
        ],
        "page_size": view.page_size,
    }


def _optional_text(text: Text | None, locale: str) -> str | None:
    return text.get(locale) if text is not None else None
