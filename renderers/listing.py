"""The state of a list page: view, columns, sort, filters and pagination.

The list page speaks the API's query syntax (``?field__op=value``, ``sort``,
``q``, ``page``), so a list URL can be shared, bookmarked and turned into an
API call. This module reads those parameters, builds the ``ListQuery`` and
computes the links of the page. It does no I/O itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask_babel import gettext
from werkzeug.datastructures import MultiDict

from crm_platform.querying import (
    RESERVED_PARAMETERS,
    ListQuery,
    conditions_from_filters,
    parse_list_query,
)
from metadata_engine import fieldtypes
from metadata_engine.model import Entity, Field, ListView, Text

from .formatting import format_value

#: Types of the system columns as the UI shows them. ``user`` columns contain
#: user ids and are shown as user names.
SYSTEM_COLUMN_TYPES: Mapping[str, str] = {
    "id": "text",
    "created_at": "datetime",
    "updated_at": "datetime",
    "created_by": "user",
    "updated_by": "user",
    "owner_id": "user",
    "version": "integer",
}
TEXT_FILTER_TYPES = frozenset({"text", "long_text", "email", "phone", "url",
                               "auto_number"})
RANGE_FILTER_TYPES = frozenset({"integer", "decimal", "currency", "percent",
                                "date", "datetime"})
#: Returns the (id, title) options of a lookup column's filter select.
LookupChoices = Callable[[Field], list[tuple[str, str]]]
#: Page links shown on each side of the current page.
PAGE_WINDOW = 2
#: Operators as shown in the chips of active filters.
OPERATOR_SIGNS: Mapping[str, str] = {
    "eq": "=", "ne": "≠", "lt": "<", "lte": "≤", "gt": ">", "gte": "≥",
    "in": "∈", "contains": "∋", "icontains": "∋", "startswith": "^",
    "isnull": "∅",
}


def system_label(name: str) -> str:
    labels = {
        "id": gettext("ID"),
        "created_at": gettext("Created"),
        "updated_at": gettext("Last modified"),
        "created_by": gettext("Created by"),
        "updated_by": gettext("Last modified by"),
        "owner_id": gettext("Owner"),
        "version": gettext("Version"),
    }
    return labels.get(name, name)


def column_field(entity: Entity, name: str) -> Field:
    """Return the metadata field of a column, or a stand-in for a system column."""
    if entity.has_field(name):
        return entity.field(name)
    return system_field(name)


def system_field(name: str) -> Field:
    """Return a stand-in field that formats and labels a system column."""
    type_name = SYSTEM_COLUMN_TYPES.get(name, "text")
    return Field(name=name, type=type_name, label=Text.of(system_label(name)))


def is_sortable(entity: Entity, name: str) -> bool:
    if not entity.has_field(name):
        return name in SYSTEM_COLUMN_TYPES
    column = entity.field(name)
    return fieldtypes.get(column.type).sortable and not column.sensitive


@dataclass
class ColumnFilter:
    """The filter input under a column header."""

    param: str
    kind: str  # "text", "select", "number", "date"
    value: str
    choices: list[tuple[str, str]] = field(default_factory=list)
    placeholder: str = ""


@dataclass
class Column:
    name: str
    field: Field
    label: str
    sort_url: str | None
    sort_direction: str | None  # "asc", "desc" or None
    filter: ColumnFilter | None


@dataclass
class ActiveFilter:
    """A filter parameter that no column input shows, as a removable chip."""

    param: str
    value: str
    text: str
    remove_url: str


@dataclass
class PageLink:
    number: int | None  # None marks a gap ("…")
    url: str
    current: bool = False


@dataclass
class ListState:
    """Everything the list template needs besides the records themselves."""

    entity: Entity
    view: ListView
    args: MultiDict[str, str]
    query: ListQuery
    columns: list[Column]
    active_filters: list[ActiveFilter]
    search: str
    page_number: int
    hidden_params: list[tuple[str, str]]

    def pages(self, total: int) -> int:
        return max(1, math.ceil(total / self.query.limit))

    def page_links(self, path: str, total: int) -> list[PageLink]:
        last = self.pages(total)
        numbers = sorted(
            {1, last}
            | set(range(max(1, self.page_number - PAGE_WINDOW),
                        min(last, self.page_number + PAGE_WINDOW) + 1))
        )
        links: list[PageLink] = []
        previous = 0
        for number in numbers:
            if number - previous > 1:
                links.append(PageLink(None, ""))
            links.append(PageLink(number, self.page_url(path, number),
                                  number == self.page_number))
            previous = number
        return links

    def page_url(self, path: str, number: int) -> str:
        return url_with(path, self.args, page=str(number) if number > 1 else None)

    @property
    def column_names(self) -> list[str]:
        """The names of the columns shown, which leave out hidden fields."""
        return [column.name for column in self.columns]

    @property
    def link_column(self) -> str | None:
        """The column whose value links to the record: the title field if
        shown, else the first column."""
        names = self.column_names
        if self.entity.title_field in names:
            return self.entity.title_field
        return names[0] if names else None

    def first_row(self) -> int:
        return self.query.offset + 1

    @property
    def is_filtered(self) -> bool:
        """Whether the user narrowed the view with a search or a filter."""
        if self.search or self.active_filters:
            return True
        return any(column.filter is not None and column.filter.value
                   for column in self.columns)

    def clear_url(self, path: str) -> str:
        """Return the list URL with this view and sort but no filters."""
        kept = MultiDict([(key, value) for key, value in self.args.items(multi=True)
                          if key in ("view", "sort", "limit")])
        return url_with(path, kept)


def clean_args(args: MultiDict[str, str]) -> MultiDict[str, str]:
    """Drop empty parameters (unfilled filter inputs) and ``lang``."""
    cleaned: MultiDict[str, str] = MultiDict()
    for key, value in args.items(multi=True):
        if key == "lang" or value.strip() == "":
            continue
        cleaned.add(key, value)
    return cleaned


def url_with(path: str, args: MultiDict[str, str], **changes: str | None) -> str:
    """Return ``path`` with ``args``, each of ``changes`` set or (None) removed."""
    pairs = [(key, value) for key, value in args.items(multi=True)
             if key not in changes]
    pairs.extend((key, value) for key, value in changes.items() if value is not None)
    if not pairs:
        return path
    return f"{path}?{urlencode(pairs)}"


def build_list_state(
    entity: Entity,
    raw_args: MultiDict[str, str],
    path: str,
    locale: str,
    lookup_choices: LookupChoices,
    hidden_fields: frozenset[str] = frozenset(),
) -> ListState:
    """Read the list parameters of a request, raising ``BadQuery`` if invalid.

    ``lookup_choices(field)`` returns the (id, title) options of a lookup
    column's filter select. Fields in ``hidden_fields`` (hidden from the
    user's role) get no column, filter input or sort link, and leave the view's
    default sort.
    """
    args = clean_args(raw_args)
    view = entity.list_view(args.get("view", "")) or entity.default_list_view
    query = parse_list_query(
        entity,
        args.to_dict(flat=False),
        default_sort=visible_sort(view.sort, hidden_fields),
        default_limit=view.page_size,
    )
    # NOTE: a saved filter of the view on a hidden field is kept, so the
    # record service rejects the list as filtering on an unknown field.
    query.conditions.extend(conditions_from_filters(entity, view.filters))
    query.count = True
    shown_params: set[str] = set()
    columns = []
    for name in view.columns:
        if name in hidden_fields:
            continue
        column = build_column(entity, name, args, path, locale, lookup_choices)
        if column.filter is not None:
            shown_params.add(column.filter.param)
        columns.append(column)
    active = active_filters(entity, args, path, shown_params, locale)
    hidden = [(key, value) for key, value in args.items(multi=True)
              if key in ("view", "sort", "limit")]
    hidden.extend((item.param, item.value) for item in active)
    return ListState(
        entity=entity,
        view=view,
        args=args,
        query=query,
        columns=columns,
        active_filters=active,
        search=args.get("q", ""),
        page_number=query.offset // query.limit + 1,
        hidden_params=hidden,
    )


def visible_sort(sort: Sequence[str], hidden: frozenset[str]) -> tuple[str, ...]:
    """Return the sort keys of ``sort`` that are not on hidden fields, or the
    newest first when none is left."""
    kept = tuple(key for key in sort if key.removeprefix("-") not in hidden)
    return kept or ("-created_at",)


def build_column(
    entity: Entity,
    name: str,
    args: MultiDict[str, str],
    path: str,
    locale: str,
    lookup_choices: LookupChoices,
) -> Column:
    column = column_field(entity, name)
    sort_url = None
    direction = None
    if is_sortable(entity, name):
        current = current_sort(args)
        if current == name:
            direction = "asc"
        elif current == f"-{name}":
            direction = "desc"
        next_sort = f"-{name}" if direction == "asc" else name
        sort_url = url_with(path, args, sort=next_sort, page=None)
    return Column(
        name=name,
        field=column,
        label=column.label.get(locale),
        sort_url=sort_url,
        sort_direction=direction,
        filter=column_filter(column, args, locale, lookup_choices),
    )


def current_sort(args: MultiDict[str, str]) -> str | None:
    raw = args.get("sort")
    if not raw:
        return None
    return raw.split(",")[0].strip()


def column_filter(
    column: Field,
    args: MultiDict[str, str],
    locale: str,
    lookup_choices: LookupChoices,
) -> ColumnFilter | None:
    """Return the filter input that fits the column's type, if any.

    Sensitive fields get none, because their stored values are encrypted.
    """
    type_name = column.type
    if column.sensitive:
        return None
    if type_name in TEXT_FILTER_TYPES and column.name != "id":
        param = f"{column.name}__icontains"
        return ColumnFilter(param, "text", args.get(param, ""),
                            placeholder=gettext("Contains…"))
    if type_name == "picklist":
        return ColumnFilter(column.name, "select", args.get(column.name, ""),
                            choices=option_choices(column, locale))
    if type_name == "multi_picklist":
        param = f"{column.name}__contains"
        return ColumnFilter(param, "select", args.get(param, ""),
                            choices=option_choices(column, locale))
    if type_name == "boolean":
        choices = [("true", gettext("Yes")), ("false", gettext("No"))]
        return ColumnFilter(column.name, "select", args.get(column.name, ""),
                            choices=choices)
    if type_name in RANGE_FILTER_TYPES:
        param = f"{column.name}__gte"
        kind = "date" if type_name in ("date", "datetime") else "number"
        return ColumnFilter(param, kind, args.get(param, ""), placeholder="≥")
    if type_name == "lookup":
        return ColumnFilter(column.name, "select", args.get(column.name, ""),
                            choices=lookup_choices(column))
    return None


def option_choices(column: Field, locale: str) -> list[tuple[str, str]]:
    return [(option.value, option.label.get(locale)) for option in column.options]


def active_filters(
    entity: Entity,
    args: MultiDict[str, str],
    path: str,
    shown: set[str],
    locale: str,
) -> list[ActiveFilter]:
    """Return the filter parameters that no column input shows."""
    chips = []
    for key, value in args.items(multi=True):
        if key in RESERVED_PARAMETERS or key in shown:
            continue
        name, _, op = key.partition("__")
        op = op or "eq"
        column = column_field(entity, name)
        label = column.label.get(locale)
        shown_value = chip_value(column, op, value, locale)
        remaining = MultiDict([(k, v) for k, v in args.items(multi=True)
                               if not (k == key and v == value) and k != "page"])
        chips.append(ActiveFilter(
            param=key,
            value=value,
            text=f"{label} {OPERATOR_SIGNS.get(op, op)} {shown_value}",
            remove_url=url_with(path, remaining),
        ))
    return chips


def chip_value(column: Field, op: str, value: str, locale: str) -> str:
    if op in ("eq", "ne") and column.type in ("picklist", "multi_picklist"):
        return format_value(column, value, locale)
    return value


def view_links(
    entity: Entity, path: str, current: ListView, locale: str
) -> list[tuple[str, str, bool]]:
    """Return (label, url, is current) for each list view of the entity."""
    links = []
    for view in entity.list_views:
        is_default = view.name == entity.default_list_view.name
        url = url_with(path, MultiDict(), view=None if is_default else view.name)
        links.append((view.label.get(locale), url, view.name == current.name))
    return links


def column_values(records: Sequence[Mapping[str, Any]], names: Sequence[str]
                  ) -> set[str]:
    """Return the non-empty values of the columns ``names`` in ``records``."""
    ids: set[str] = set()
    for record in records:
        for name in names:
            value = record.get(name)
            if value:
                ids.add(str(value))
    return ids
