"""List queries: filters, sorting, search and cursors, turned into SQL.

A ``ListQuery`` is parsed from URL parameters (the API and the UI share the
syntax documented in docs/metadata-format.md) or built from a saved list
view, then compiled into SQLAlchemy Core clauses against an entity table.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from metadata_engine import fieldtypes, rules
from metadata_engine.model import Entity, Field, Filter, Text

from .errors import BadQuery

#: Query parameters that are not field filters.
RESERVED_PARAMETERS = rules.QUERY_PARAMETERS
MAX_LIMIT = 200
DEFAULT_LIMIT = 25
MAX_IN_VALUES = 100
MAX_CONDITIONS = 50
MAX_FILTER_VALUE = 1000

#: Types of the system columns, for parsing filter values.
SYSTEM_TYPES: Mapping[str, str] = {
    "id": "lookup",
    "created_at": "datetime",
    "updated_at": "datetime",
    "created_by": "lookup",
    "updated_by": "lookup",
    "owner_id": "lookup",
    "version": "integer",
}


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any


@dataclass
class ListQuery:
    """A parsed list request, already checked against the entity."""

    conditions: list[Condition] = field(default_factory=list)
    search: str | None = None
    sort: list[str] = field(default_factory=lambda: ["-created_at"])
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    offset: int = 0
    count: bool = False


def field_type(entity: Entity, name: str) -> str:
    if name in SYSTEM_TYPES:
        return SYSTEM_TYPES[name]
    if entity.has_field(name):
        return entity.field(name).type
    raise BadQuery(
        f"unknown field {name!r} for entity {entity.name!r}",
        details={"field": name, "fields": list(entity.field_names)},
    )


def parse_value(entity: Entity, name: str, op: str, raw: str) -> Any:
    """Convert one filter value from text to the field's Python type."""
    if len(raw) > MAX_FILTER_VALUE:
        raise BadQuery(
            f"filter value for {name!r} is {len(raw)} characters long; "
            f"the limit is {MAX_FILTER_VALUE}"
        )
    type_name = field_type(entity, name)
    if op == "isnull":
        word = raw.strip().lower()
        if word not in {"true", "false", "1", "0"}:
            raise BadQuery(
                f"invalid value {raw!r} for {name}__isnull: use true or false"
            )
        return word in {"true", "1"}
    if op == "in":
        parts = [part for part in raw.split(",") if part != ""]
        if len(parts) > MAX_IN_VALUES:
            raise BadQuery(
                f"too many values for {name}__in: {len(parts)}, the limit is "
                f"{MAX_IN_VALUES}"
            )
        return [_parse_one(entity, name, type_name, part) for part in parts]
    if op in {"contains", "icontains", "startswith"}:
        return raw
    return _parse_one(entity, name, type_name, raw)


def _parse_one(entity: Entity, name: str, type_name: str, raw: str) -> Any:
    converter = fieldtypes.get(type_name)
    metadata_field = entity.field(name) if entity.has_field(name) else None
    if metadata_field is None:
        if type_name not in ("datetime", "integer"):
            return raw
        metadata_field = _placeholder(name)
    try:
        return converter.parse_text(metadata_field, raw)
    except fieldtypes.ParseError as err:
        raise BadQuery(
            f"invalid value {raw!r} for field {name!r} of type {type_name}",
            details={"field": name, "value": raw},
        ) from err


def _placeholder(name: str) -> Field:
    """Return a field standing for a system column, for the text parsers."""
    return Field(name=name, type=SYSTEM_TYPES[name], label=Text.of(name))


def parse_list_query(
    entity: Entity,
    args: Mapping[str, Sequence[str]],
    default_sort: Sequence[str] = ("-created_at",),
    default_limit: int = DEFAULT_LIMIT,
) -> ListQuery:
    """Build a ``ListQuery`` from URL parameters (each a list of values)."""
    query = ListQuery(sort=list(default_sort), limit=default_limit)
    for key, values in args.items():
        if key in RESERVED_PARAMETERS:
            continue
        name, _, op = key.partition("__")
        op = op or "eq"
        check_operator(entity, name, op)
        for raw in values:
            query.conditions.append(
                Condition(name, op, parse_value(entity, name, op, raw))
            )
            if len(query.conditions) > MAX_CONDITIONS:
                raise BadQuery(
                    f"too many filters: more than {MAX_CONDITIONS}; combine "
                    "values with the in operator (field__in=a,b,c)"
                )

    if "sort" in args and args["sort"] and args["sort"][-1]:
        query.sort = [part.strip() for part in args["sort"][-1].split(",") if part]
    check_sort(entity, query.sort)

    query.limit = _parse_int(args, "limit", default_limit, 1, MAX_LIMIT)
    query.offset = _parse_int(args, "offset", 0, 0, 10**9)
    if args.get("page") and args["page"][-1]:
        page = _parse_int(args, "page", 1, 1, 10**7)
        query.offset = (page - 1) * query.limit
    if args.get("cursor") and args["cursor"][-1]:
        query.cursor = args["cursor"][-1]

    if args.get("q") and args["q"][-1].strip():
        query.search = args["q"][-1].strip()[:MAX_FILTER_VALUE]
    count_values = args.get("count") or ["false"]
    query.count = count_values[-1].lower() in {"true", "1", "yes"}
    return query


def _parse_int(
    args: Mapping[str, Sequence[str]], key: str, default: int, low: int, high: int
) -> int:
    values = args.get(key)
    if not values or values[-1] == "":
        return default
    raw = values[-1]
    try:
        number = int(raw)
    except ValueError:
        raise BadQuery(f"invalid {key} {raw!r}: use a whole number") from None
    if not low <= number <= high:
        raise BadQuery(f"invalid {key} {number}: use a number from {low} to {high}")
    return number


def check_operator(entity: Entity, name: str, op: str) -> None:
    type_name = field_type(entity, name)
    reject_sensitive(entity, name, "filter on")
    allowed = fieldtypes.get(type_name).operators
    if op not in allowed:
        raise BadQuery(
            f"operator {op!r} is not allowed on field {name!r} of type "
            f"{type_name}; use one of: {', '.join(allowed)}",
            details={"field": name, "operator": op},
        )


def check_sort(entity: Entity, sort: Iterable[str]) -> None:
    for key in sort:
        name = key.removeprefix("-")
        type_name = field_type(entity, name)
        reject_sensitive(entity, name, "sort by")
        if not fieldtypes.get(type_name).sortable:
            raise BadQuery(
                f"cannot sort by {name!r}: fields of type {type_name} are not sortable"
            )


def reject_sensitive(entity: Entity, name: str, action: str) -> None:
    """Raise ``BadQuery`` if ``name`` is a sensitive field: the database
    stores its values encrypted, so it cannot compare or order them."""
    if entity.has_field(name) and entity.field(name).sensitive:
        raise BadQuery(
            f"cannot {action} field {name!r}: it is sensitive and stored "
            f"encrypted, so lists cannot {action} it; use another field",
            details={"field": name},
        )


def conditions_from_filters(
    entity: Entity, filters: Iterable[Filter]
) -> list[Condition]:
    """Turn a saved list view's filters into conditions."""
    return [Condition(item.field, item.op, item.value) for item in filters]


def compile_condition(
    table: sa.FromClause, condition: Condition
) -> sa.ColumnElement[bool]:
    column = table.c[condition.field]
    value = condition.value
    op = condition.op
    if op == "eq":
        return column.is_(None) if value is None else column == value
    if op == "ne":
        if value is None:
            return column.is_not(None)
        return sa.or_(column != value, column.is_(None))
    if op == "lt":
        return column < value
    if op == "lte":
        return column <= value
    if op == "gt":
        return column > value
    if op == "gte":
        return column >= value
    if op == "in":
        return column.in_(list(value))
    if op == "isnull":
        return column.is_(None) if value else column.is_not(None)
    if op == "startswith":
        return column.startswith(str(value), autoescape=True)
    if op == "contains":
        if isinstance(column.type, fieldtypes.JSONList):
            needle = json.dumps(str(value), ensure_ascii=False)
            # Compare as text: JSONList would turn the needle into a JSON list.
            as_text = sa.type_coerce(column, sa.Text())
            return as_text.contains(needle, autoescape=True)
        return column.contains(str(value), autoescape=True)
    if op == "icontains":
        return sa.func.lower(column).contains(str(value).lower(), autoescape=True)
    raise BadQuery(f"unknown operator {op!r}")


def compile_search(
    entity: Entity,
    table: sa.Table,
    text: str,
    hidden: Collection[str] = frozenset(),
) -> sa.ColumnElement[bool]:
    """Match ``text`` in the searchable fields, or the title field if none;
    fields in ``hidden`` are never searched, so matches cannot reveal them."""
    names = [f.name for f in entity.searchable_fields if f.name not in hidden]
    if not names:
        names = [entity.title_field if entity.title_field not in hidden else "id"]
    needle = text.lower()
    return sa.or_(
        *(
            sa.func.lower(table.c[name]).contains(needle, autoescape=True)
            for name in names
        )
    )


# Cursors: the sort values of the last row of a page, plus its id.


def encode_cursor(values: Sequence[Any]) -> str:
    payload = json.dumps([_to_json(value) for value in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, count: int) -> list[Any]:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadQuery(
            f"invalid cursor {cursor[:40]!r}: pass the next_cursor of a previous "
            "page unchanged"
        ) from None
    if not isinstance(values, list) or len(values) != count:
        raise BadQuery(
            "cursor does not match this sort order: start again without a cursor"
        )
    return [_from_json(value) for value in values]


def _to_json(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"d": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"n": str(value)}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((kind, text),) = value.items()
        try:
            if kind == "dt":
                return dt.datetime.fromisoformat(text)
            if kind == "d":
                return dt.date.fromisoformat(text)
            if kind == "n":
                return decimal.Decimal(text)
        except (ValueError, TypeError, decimal.InvalidOperation):
            raise BadQuery("invalid cursor: start again without a cursor") from None
    if isinstance(value, (dict, list)):
        raise BadQuery("invalid cursor: start again without a cursor")
    return value


def check_cursor_types(
    table: sa.Table, sort: Sequence[str], values: Sequence[Any]
) -> None:
    """Reject a cursor whose values do not fit the sort columns' types.

    Cursors are not signed, so a hand-made one must fail as a bad request,
    not when the database driver meets a value of the wrong type.
    """
    for key, value in zip(sort, values, strict=True):
        if value is None:
            continue
        expected = table.c[key.removeprefix("-")].type.python_type
        if expected is bool:
            valid = isinstance(value, bool)
        elif expected is int:
            valid = isinstance(value, int) and not isinstance(value, bool)
        elif expected is dt.date:
            valid = isinstance(value, dt.date) and not isinstance(value, dt.datetime)
        else:
            valid = isinstance(value, expected)
        if not valid:
            raise BadQuery(
                "invalid cursor: it does not match this sort order; start again "
                "without a cursor"
            )


def keyset_after(
    table: sa.Table,
    sort: Sequence[str],
    values: Sequence[Any],
    nulls_high: bool,
) -> sa.ColumnElement[bool]:
    """Return the predicate for rows after ``values`` in ``sort`` order.

    ``sort`` ends with the tie-breaking ``id``. ``nulls_high`` is True where the
    database sorts NULL above every value (PostgreSQL) and False where it
    sorts NULL below (SQLite).
    """
    clauses = []
    equal_so_far: list[sa.ColumnElement[bool]] = []
    for key, value in zip(sort, values, strict=True):
        descending = key.startswith("-")
        column = table.c[key.removeprefix("-")]
        nulls_after = nulls_high != descending
        after: sa.ColumnElement[bool]
        if value is None:
            after = sa.false() if nulls_after else column.is_not(None)
            equal = column.is_(None)
        else:
            greater = column < value if descending else column > value
            after = sa.or_(greater, column.is_(None)) if nulls_after else greater
            equal = column == value
        clauses.append(sa.and_(*equal_so_far, after))
        equal_so_far.append(equal)
    return sa.or_(*clauses)
