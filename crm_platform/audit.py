"""Record history and audit log search over the change journal.

The API, the HTML views and the CLI call these functions. They parse the
request's filters and read the tenant's journal. They also describe each
entry with the labels of the tenant's definition and the names of its users.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metadata_engine.model import Definition, Entity
from renderers import formatting

from . import journal
from .control import Actor
from .errors import BadQuery, Forbidden
from .tenancy import Platform, TenantRuntime

#: Entries on one page of the history or the audit log.
PAGE_SIZE = 50
#: System columns the journal records, with their labels.
SYSTEM_LABELS = {"owner_id": {"en": "Owner", "zh-CN": "负责人"}}


@dataclass(frozen=True)
class Change:
    """One field of an entry: its label and the values before and after."""

    name: str
    label: str
    before: Any
    after: Any


def parse_query(
    args: Mapping[str, str],
    definition: Definition,
    find_user: Callable[[str], str | None] | None = None,
) -> journal.AuditQuery:
    """Build an audit query from request arguments, naming any bad one.

    ``actor`` is a user id, or an e-mail address that ``find_user`` turns
    into one.
    """
    query = journal.AuditQuery(limit=PAGE_SIZE)
    entity = (args.get("entity") or "").strip()
    if entity:
        if not definition.has_entity(entity):
            raise BadQuery(
                f"unknown entity {_shown(entity)} in 'entity': use one of "
                + ", ".join(item.name for item in definition.entities),
                details={"entity": ["unknown entity"]},
            )
        query.entity = entity
    query.record_id = _text(args, "record_id", 36)
    query.actor_id = _actor(args, find_user)
    query.action = _text(args, "action", 20)
    query.since = _parse_day(args, "since")
    until = _parse_day(args, "until")
    if until is not None and until.date() < dt.date.max:
        # "until" names the last day included.
        query.until = until + dt.timedelta(days=1)
    if query.since and query.until and query.since >= query.until:
        raise BadQuery(
            f"'since' {args.get('since')!r} is after 'until' {args.get('until')!r}: "
            "swap them",
            details={"since": ["after until"]},
        )
    field = _text(args, "field", 63)
    if field:
        query.fields = [field]
    query.before_seq = parse_int(args, "before_seq")
    limit = parse_int(args, "limit")
    if limit is not None:
        if limit > journal.MAX_PAGE:
            raise BadQuery(
                f"invalid limit {limit}: use a number from 1 to {journal.MAX_PAGE}, "
                "and follow 'next' for more",
                details={"limit": [f"use 1 to {journal.MAX_PAGE}"]},
            )
        query.limit = limit
    return query


def _shown(text: str) -> str:
    """Return ``text`` quoted for an error message, cut to 64 characters."""
    return repr(text if len(text) <= 64 else text[:64] + "…")


def _text(args: Mapping[str, str], name: str, max_length: int) -> str | None:
    text = (args.get(name) or "").strip()
    if len(text) > max_length:
        raise BadQuery(
            f"invalid {name} {_shown(text)}: use at most {max_length} characters",
            details={name: [f"at most {max_length} characters"]},
        )
    return text or None


def _actor(
    args: Mapping[str, str], find_user: Callable[[str], str | None] | None
) -> str | None:
    actor = _text(args, "actor", 254)
    if actor is None or "@" not in actor or find_user is None:
        return actor
    user_id = find_user(actor)
    if user_id is None:
        raise BadQuery(
            f"no user has the e-mail address {_shown(actor)}: check 'actor'",
            details={"actor": ["no user has this e-mail address"]},
        )
    return user_id


_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_NUMBER = re.compile(r"^[0-9]{1,18}$")


def _parse_day(args: Mapping[str, str], name: str) -> dt.datetime | None:
    text = (args.get(name) or "").strip()
    if not text:
        return None
    try:
        if not _DAY.match(text):
            raise ValueError(text)
        day = dt.date.fromisoformat(text)
    except ValueError as err:
        raise BadQuery(
            f"invalid date {_shown(text)} in {name!r}: use YYYY-MM-DD, "
            "e.g. 2026-12-31",
            details={name: ["use YYYY-MM-DD"]},
        ) from err
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def parse_int(args: Mapping[str, str], name: str) -> int | None:
    """Return the positive whole number in ``args[name]``, or None if empty."""
    text = (args.get(name) or "").strip()
    if not text:
        return None
    if not _NUMBER.match(text) or int(text) < 1:
        raise BadQuery(
            f"invalid number {_shown(text)} in {name!r}: use a whole number of "
            "1 or more",
            details={name: ["use a whole number of 1 or more"]},
        )
    return int(text)


def require_audit_access(runtime: TenantRuntime, actor: Actor) -> None:
    """Raise ``Forbidden`` unless ``actor`` may search the tenant's audit log:
    tenant admins, on a plan that includes the audit log."""
    if not actor.is_admin:
        raise Forbidden(
            "only tenant admins can search the audit log: ask an admin of "
            f"tenant {runtime.slug!r}"
        )
    from .billing import require_feature

    require_feature(runtime.tenant, "audit_log")


def search(runtime: TenantRuntime, query: journal.AuditQuery) -> list[journal.Entry]:
    with runtime.engine.connect() as conn:
        return journal.search(conn, query)


def record_history(
    runtime: TenantRuntime,
    entity: str,
    record_id: str,
    before_seq: int | None = None,
    hidden: Collection[str] = frozenset(),
) -> list[journal.Entry]:
    """Return one record's entries, newest first, a page at a time, without
    the fields in ``hidden`` (those the reader's role may not see). The
    caller checks first that the reader may read the record."""
    query = journal.AuditQuery(
        entity=entity, record_id=record_id, before_seq=before_seq, limit=PAGE_SIZE
    )
    entries = search(runtime, query)
    for entry in entries:
        for name in hidden:
            entry.changes.pop(name, None)
    return entries


def changes(entity: Entity | None, entry: journal.Entry, locale: str) -> list[Change]:
    """Return the entry's changed fields in the order of the entity's fields."""
    order = {name: index for index, name in enumerate(SYSTEM_LABELS)}
    if entity is not None:
        for index, field in enumerate(entity.fields, start=len(order)):
            order[field.name] = index
    result = []
    for name in sorted(entry.changes, key=lambda key: (order.get(key, 10**6), key)):
        values = entry.changes[name]
        before, after = (values + [None, None])[:2] if isinstance(values, list) else (
            None, None)
        result.append(Change(name, label_of(entity, name, locale), before, after))
    return result


def label_of(entity: Entity | None, name: str, locale: str) -> str:
    if name in SYSTEM_LABELS:
        labels = SYSTEM_LABELS[name]
        return labels.get(locale, labels["en"])
    if entity is not None and entity.has_field(name):
        return entity.field(name).label.get(locale)
    return name


def actor_names(platform: Platform, entries: Sequence[journal.Entry]) -> dict[str, str]:
    ids = {entry.actor_id for entry in entries if entry.actor_id}
    for entry in entries:
        owner = entry.changes.get("owner_id")
        if isinstance(owner, list):
            ids.update(str(value) for value in owner if value)
    return platform.control.user_names(ids) if ids else {}


def next_before_seq(entries: Sequence[journal.Entry], limit: int) -> int | None:
    """Return the ``before_seq`` of the next page, or None on the last one."""
    if len(entries) < limit or not entries:
        return None
    return entries[-1].seq


# Display


@dataclass(frozen=True)
class Row:
    """One entry as the history page and the audit log page show it."""

    entry: journal.Entry
    entity: Entity | None
    actor: str
    changes: list[Change]
    #: The record's title now, or its last journaled one if it was deleted.
    title: str


#: Returns the titles of the records of one entity by id.
TitleLookup = Callable[[str, set[str]], Mapping[str, str]]


def describe(
    platform: Platform,
    runtime: TenantRuntime,
    entries: Sequence[journal.Entry],
    locale: str,
    titles_of: TitleLookup | None = None,
) -> list[Row]:
    """Return the entries with labels, user names and display values.

    With ``titles_of``, records and lookup values are shown by title.
    """
    users = actor_names(platform, entries)
    definition = runtime.definition
    titles = _titles(definition, entries, titles_of) if titles_of else {}
    rows = []
    for entry in entries:
        entity = (
            definition.entity(entry.entity) if definition.has_entity(entry.entity)
            else None
        )
        described = [
            Change(
                change.name,
                change.label,
                display_value(entity, change.name, change.before, locale, users,
                              titles),
                display_value(entity, change.name, change.after, locale, users,
                              titles),
            )
            for change in changes(entity, entry, locale)
        ]
        actor = users.get(entry.actor_id or "", entry.actor_id or "")
        title = titles.get((entry.entity, entry.record_id)) or _journaled_title(
            entity, entry
        )
        rows.append(Row(entry=entry, entity=entity, actor=actor,
                        changes=described, title=title or entry.record_id))
    return rows


def _titles(
    definition: Definition,
    entries: Sequence[journal.Entry],
    titles_of: TitleLookup,
) -> dict[tuple[str, str], str]:
    """Look up, one query per entity, the titles of the entries' records and
    of the records their lookup values point at."""
    requested: dict[str, set[str]] = {}
    for entry in entries:
        if not definition.has_entity(entry.entity):
            continue
        requested.setdefault(entry.entity, set()).add(entry.record_id)
        entity = definition.entity(entry.entity)
        for field in entity.lookups:
            values = entry.changes.get(field.name)
            if field.target and isinstance(values, list):
                ids = {str(value) for value in values if isinstance(value, str)}
                requested.setdefault(field.target, set()).update(ids)
    titles: dict[tuple[str, str], str] = {}
    for entity_name, ids in requested.items():
        for record_id, title in titles_of(entity_name, ids).items():
            titles[(entity_name, record_id)] = title
    return titles


def _journaled_title(entity: Entity | None, entry: journal.Entry) -> str | None:
    if entity is None:
        return None
    values = entry.changes.get(entity.title_field)
    if isinstance(values, list):
        for value in reversed(values):
            if isinstance(value, str) and value not in {journal.REDACTED}:
                return value
    return None


def display_value(
    entity: Entity | None,
    name: str,
    value: Any,
    locale: str,
    users: Mapping[str, str],
    titles: Mapping[tuple[str, str], str] | None = None,
) -> str:
    """Return a journal value as display text; values the journal stores as
    text (decimals, dates) are parsed back so they format like the record."""
    if value is None:
        return ""
    if name == "owner_id":
        return users.get(str(value), str(value))
    special = isinstance(value, str) and value in {journal.REDACTED, journal.ERASED}
    if special or entity is None or not entity.has_field(name):
        return str(value)
    field = entity.field(name)
    if field.type == "lookup" and field.target:
        return (titles or {}).get((field.target, str(value)), str(value))
    try:
        parsed = _parse_journal_value(field.type, value)
    except (ValueError, ArithmeticError):
        return str(value)
    return formatting.format_value(field, parsed, locale)


def _parse_journal_value(type_name: str, value: Any) -> Any:
    if type_name in {"decimal", "currency", "percent"}:
        return decimal.Decimal(str(value))
    if type_name == "date":
        return dt.date.fromisoformat(str(value))
    if type_name == "datetime":
        return dt.datetime.fromisoformat(str(value))
    return value
