"""The change journal: every record write, in the transaction that makes it.

Each create, update, delete and erasure of a record appends one row to the
tenant's ``_journal`` table: a sequence number, the time, the actor, the
entity, the record id, the record's new version and the changed fields as
``{field: [before, after]}``. The record history page, the audit log search
and later consumers (webhooks, offline sync) read it.

Sequence numbers come from the ``_journal`` row of ``_sequences``, taken as
the first statement of the writing transaction. That row lock serializes the
tenant's writers on PostgreSQL (SQLite serializes them anyway), so numbers
have no gaps and follow commit order: a reader that has seen number N has
seen every change up to N. The cost is that one tenant's writes never run
in parallel, which small businesses' workloads tolerate.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from metadata_engine.model import Entity
from metadata_engine.tables import build_service_tables

from .errors import BadQuery

_SERVICE_TABLES = sa.MetaData()
build_service_tables(_SERVICE_TABLES)
JOURNAL = _SERVICE_TABLES.tables["_journal"]
SEQUENCES = _SERVICE_TABLES.tables["_sequences"]
#: The ``_sequences`` row that numbers journal entries.
COUNTER_NAME = "_journal"
#: Placeholder for a sensitive field's value, so that plaintext never lands
#: outside the encrypted column.
REDACTED = "[encrypted]"
#: Placeholder for a value that a personal-data erasure removed, in the
#: erasure's entry and in every earlier entry of the record.
ERASED = "[erased]"
#: System columns whose changes the journal records; the others (times,
#: version, created_by/updated_by) are in the entry itself.
JOURNALED_SYSTEM_COLUMNS = ("owner_id",)
ACTIONS = ("create", "update", "delete", "erase")
MAX_PAGE = 200
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Entry:
    """One journal row as the history page and the API show it."""

    seq: int
    at: dt.datetime
    actor_id: str | None
    action: str
    entity: str
    record_id: str
    version: int | None
    changes: dict[str, list[Any]]
    request_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "actor_id": self.actor_id,
            "action": self.action,
            "entity": self.entity,
            "record_id": self.record_id,
            "version": self.version,
            "changes": self.changes,
            "request_id": self.request_id,
        }


@dataclass
class AuditQuery:
    """Filters of an audit log search; every one is optional."""

    entity: str | None = None
    record_id: str | None = None
    actor_id: str | None = None
    action: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    #: Return entries with a sequence number below this one (the next page).
    before_seq: int | None = None
    limit: int = 50
    fields: list[str] = field(default_factory=list)


def lock(conn: sa.Connection) -> None:
    """Take the tenant's journal counter row for this transaction.

    Call it before any other statement of a write: on SQLite the first write
    takes the database's write lock while no read snapshot is open, so the
    busy timeout applies instead of an immediate "database is locked".
    """
    advance_counter(conn, COUNTER_NAME, 0)


def reserve(conn: sa.Connection, count: int) -> int:
    """Return the first of ``count`` consecutive new sequence numbers."""
    last = advance_counter(conn, COUNTER_NAME, count)
    return last - count + 1


_COUNTER_STATEMENTS: dict[str, Any] = {}


def advance_counter(conn: sa.Connection, name: str, step: int) -> int:
    """Add ``step`` to the ``_sequences`` row ``name`` (created at ``step``)
    and return its new value, in ``conn``'s transaction.

    The upsert is built once per dialect, because building and hashing a
    new statement per write cost more than running it.
    """
    dialect = conn.dialect.name
    statement = _COUNTER_STATEMENTS.get(dialect)
    if statement is None:
        insert_module: Any = postgresql if dialect == "postgresql" else sqlite
        step_parameter = sa.bindparam("step", type_=sa.BigInteger())
        statement = (
            insert_module.insert(SEQUENCES)
            .values(name=sa.bindparam("counter"), value=step_parameter)
            .on_conflict_do_update(
                index_elements=["name"],
                set_={"value": SEQUENCES.c.value + step_parameter},
            )
            .returning(SEQUENCES.c.value)
        )
        _COUNTER_STATEMENTS[dialect] = statement
    result = conn.execute(statement, {"counter": name, "step": step})
    return int(result.scalar_one())


class Journal:
    """Builds and writes the journal entries of one transaction."""

    def __init__(
        self,
        actor_id: str | None,
        request_id: str | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        self.actor_id = actor_id
        self.request_id = request_id
        self.now = now or dt.datetime.now(dt.UTC)
        self.rows: list[dict[str, Any]] = []
        self._columns: dict[str, list[tuple[str, bool]]] = {}
        self._sensitive: dict[str, dict[str, bool]] = {}
        self._reserved: list[int] = []
        #: The number of the last entry written for each record id, so that
        #: what a write triggers (a webhook call) can name its entry.
        self.sequences: dict[str, int] = {}

    def start(self, conn: sa.Connection, expected: int = 0) -> None:
        """Lock the journal counter as the transaction's first statement,
        reserving the numbers of the ``expected`` entries in the same
        statement."""
        if expected:
            first = reserve(conn, expected)
            self._reserved = list(range(first, first + expected))
        else:
            lock(conn)

    def _sensitive_by_name(self, entity: Entity) -> dict[str, bool]:
        """Return whether each journaled column of ``entity`` is sensitive."""
        found = self._sensitive.get(entity.name)
        if found is None:
            found = dict(self._journaled_columns(entity))
            self._sensitive[entity.name] = found
        return found

    def _journaled_columns(self, entity: Entity) -> list[tuple[str, bool]]:
        """Return the journaled column names of ``entity``, each with whether
        it is sensitive, computed once per entity and journal."""
        columns = self._columns.get(entity.name)
        if columns is None:
            columns = [(name, False) for name in JOURNALED_SYSTEM_COLUMNS]
            columns.extend((item.name, item.sensitive) for item in entity.fields)
            self._columns[entity.name] = columns
        return columns

    def created(self, entity: Entity, record: Mapping[str, Any]) -> None:
        sensitive_by_name = self._sensitive_by_name(entity)
        changes = {}
        # The hot loop of imports: plain values skip the call to _plain.
        for name, value in record.items():
            sensitive = sensitive_by_name.get(name)
            if sensitive is None or value is None:
                continue
            kind = type(value)
            if sensitive:
                changes[name] = [None, REDACTED]
            elif kind is str or kind is int or kind is bool:
                changes[name] = [None, value]
            elif kind is not list or value:
                changes[name] = [None, _plain(value)]
        self._add("create", entity, record, changes)

    def updated(
        self,
        entity: Entity,
        before: Mapping[str, Any],
        after: Mapping[str, Any],
        action: str = "update",
    ) -> None:
        changes = {}
        for name, sensitive in self._journaled_columns(entity):
            if name not in after:
                continue
            old = before.get(name)
            new = after[name]
            if _same(old, new):
                continue
            changes[name] = [
                _redacted(old) if sensitive else _plain(old),
                _redacted(new) if sensitive else _plain(new),
            ]
        self._add(action, entity, after, changes)

    def erased(
        self, entity: Entity, after: Mapping[str, Any], names: Sequence[str]
    ) -> None:
        """Record an erasure of ``names``: the old values are not kept."""
        sensitive = dict(self._journaled_columns(entity))
        changes = {}
        for name in names:
            value = after.get(name)
            plain = _redacted(value) if sensitive.get(name) else _plain(value)
            changes[name] = [ERASED, plain]
        self._add("erase", entity, after, changes)

    def deleted(self, entity: Entity, record: Mapping[str, Any]) -> None:
        changes = {}
        for name, sensitive in self._journaled_columns(entity):
            value = record.get(name)
            if value is None or value == []:
                continue
            changes[name] = [REDACTED if sensitive else _plain(value), None]
        self._add("delete", entity, record, changes, version=None)

    def _add(
        self,
        action: str,
        entity: Entity,
        record: Mapping[str, Any],
        changes: dict[str, list[Any]],
        version: Any = "from record",
    ) -> None:
        self.rows.append(
            {
                "at": self.now,
                "actor_id": self.actor_id,
                "action": action,
                "entity": entity.name,
                "record_id": str(record["id"]),
                "version": record.get("version") if version == "from record" else None,
                "changes": changes,
                "request_id": self.request_id,
            }
        )

    def write(self, conn: sa.Connection) -> None:
        """Number the collected entries and insert them, in ``conn``'s
        transaction, which must have called ``start`` first."""
        numbers = self._reserved
        missing = len(self.rows) - len(numbers)
        if missing > 0:
            first = reserve(conn, missing)
            numbers = numbers + list(range(first, first + missing))
        elif missing < 0:
            # Give back the numbers reserved for entries that were not made,
            # so that the sequence stays without gaps.
            advance_counter(conn, COUNTER_NAME, missing)
        self._reserved = []
        if not self.rows:
            return
        for number, row in zip(numbers, self.rows, strict=False):
            row["seq"] = number
            self.sequences[row["record_id"]] = number
        conn.execute(JOURNAL.insert(), self.rows)
        self.rows = []


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, list) or isinstance(new, list):
        return sorted(old or []) == sorted(new or [])
    return bool(old == new)


def _redacted(value: Any) -> Any:
    return None if value is None or value == "" else REDACTED


def _plain(value: Any) -> Any:
    """Return ``value`` as JSON can store it: exact decimals as strings,
    dates and times in ISO 8601, lists sorted."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return sorted(value)
    return value


# Reading


def history(
    conn: sa.Connection, entity: str, record_id: str, limit: int = MAX_PAGE
) -> list[Entry]:
    """Return a record's journal entries, newest first."""
    query = AuditQuery(entity=entity, record_id=record_id, limit=limit)
    return search(conn, query)


def search(conn: sa.Connection, query: AuditQuery) -> list[Entry]:
    """Return the entries matching ``query``, newest first, at most
    ``query.limit`` of them (and never more than ``MAX_PAGE``)."""
    if query.action is not None and query.action not in ACTIONS:
        raise BadQuery(
            f"invalid action {query.action!r}: use one of {', '.join(ACTIONS)}",
            details={"action": [f"use one of {', '.join(ACTIONS)}"]},
        )
    statement = sa.select(JOURNAL)
    if query.entity:
        statement = statement.where(JOURNAL.c.entity == query.entity)
    if query.record_id:
        statement = statement.where(JOURNAL.c.record_id == query.record_id)
    if query.actor_id:
        statement = statement.where(JOURNAL.c.actor_id == query.actor_id)
    if query.action:
        statement = statement.where(JOURNAL.c.action == query.action)
    if query.since:
        statement = statement.where(JOURNAL.c.at >= query.since)
    if query.until:
        statement = statement.where(JOURNAL.c.at < query.until)
    if query.before_seq is not None:
        statement = statement.where(JOURNAL.c.seq < query.before_seq)
    if query.fields:
        statement = statement.where(
            sa.or_(*(_changes_field(conn, name) for name in query.fields))
        )
    limit = max(1, min(query.limit, MAX_PAGE))
    statement = statement.order_by(JOURNAL.c.seq.desc()).limit(limit)
    return [_entry(row) for row in conn.execute(statement).mappings()]


def _changes_field(conn: sa.Connection, name: str) -> sa.ColumnElement[bool]:
    """Return a condition true for entries that changed field ``name``."""
    if not _FIELD_NAME.match(name):
        raise BadQuery(
            f"invalid field name {name!r}: use a field's API name, such as "
            "'email' or 'owner_id'",
            details={"field": [f"invalid field name {name!r}"]},
        )
    if conn.dialect.name == "postgresql":
        return sa.cast(JOURNAL.c.changes, postgresql.JSONB).has_key(name)
    # Each value in changes is a [before, after] array, never JSON null, so
    # json_type is NULL exactly when the key is absent.
    return sa.func.json_type(JOURNAL.c.changes, f"$.{name}").is_not(None)


def erasures(conn: sa.Connection) -> list[tuple[str, str, list[str]]]:
    """Return (entity, record id, field names) of every erasure in the
    journal, oldest first."""
    rows = conn.execute(
        sa.select(JOURNAL.c.entity, JOURNAL.c.record_id, JOURNAL.c.changes)
        .where(JOURNAL.c.action == "erase")
        .order_by(JOURNAL.c.seq)
    )
    found = []
    for entity, record_id, changes in rows:
        names = sorted(changes) if isinstance(changes, Mapping) else []
        found.append((str(entity), str(record_id), names))
    return found


def entries_after(
    conn: sa.Connection, after_seq: int, limit: int = MAX_PAGE
) -> list[Entry]:
    """Return entries with a sequence number above ``after_seq``, oldest
    first: the feed that webhooks and offline sync follow."""
    statement = (
        sa.select(JOURNAL)
        .where(JOURNAL.c.seq > after_seq)
        .order_by(JOURNAL.c.seq)
        .limit(max(1, min(limit, MAX_PAGE)))
    )
    return [_entry(row) for row in conn.execute(statement).mappings()]


def _entry(row: sa.RowMapping) -> Entry:
    changes = row["changes"]
    return Entry(
        seq=int(row["seq"]),
        at=row["at"],
        actor_id=row["actor_id"],
        action=row["action"],
        entity=row["entity"],
        record_id=row["record_id"],
        version=row["version"],
        changes=dict(changes) if isinstance(changes, Mapping) else {},
        request_id=row["request_id"],
    )


def redact(conn: sa.Connection, entity: str, record_id: str,
           names: Sequence[str]) -> int:
    """Replace the values of ``names`` with ``ERASED`` in every journal entry
    of one record, and return the number of entries rewritten.

    Personal-data erasure calls it, so that the journal keeps the fact that
    a field changed but not the values that the erasure removed.
    """
    erased_names = set(names)
    rows = conn.execute(
        sa.select(JOURNAL.c.seq, JOURNAL.c.changes).where(
            JOURNAL.c.entity == entity, JOURNAL.c.record_id == record_id
        )
    ).all()
    rewritten = 0
    for seq, changes in rows:
        if not isinstance(changes, Mapping) or not erased_names & set(changes):
            continue
        if all(
            value in {None, ERASED}
            for name in erased_names & set(changes)
            for value in changes[name]
        ):
            continue
        blanked = {
            name: (_erase_values(values) if name in erased_names else values)
            for name, values in changes.items()
        }
        conn.execute(
            JOURNAL.update().where(JOURNAL.c.seq == seq).values(changes=blanked)
        )
        rewritten += 1
    return rewritten


def _erase_values(values: Any) -> list[Any]:
    if not isinstance(values, list):
        return [None, None]
    return [None if value is None else ERASED for value in values]
