"""Roll-up fields: summaries of related records, kept current on every write.

A roll-up field of a parent entity stores the count, sum, minimum or maximum
of a field over the child records whose lookup points at the parent (for
example the total amount of an account's won opportunities). The record
service calls ``refresh_rollups`` in the transaction of every write of a
child record, with the child rows before and after the write, so the
parents they point at, before and after, are computed again from the
database. A roll-up counts every child record, including those the reader
may not read, and its changes are not journaled.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from metadata_engine.model import Definition, Entity, Field

from .querying import Condition, compile_condition

#: Parents computed again per statement.
CHUNK = 500
#: Entries of the roll-up lookup cache; cleared when full, as old
#: definitions would otherwise stay in memory.
CACHE_SIZE = 4096


#: Roll-ups by (definition hash, child entity), so that a write does not scan
#: every field of the definition; definitions are immutable.
_BY_CHILD: dict[tuple[str, str], tuple[tuple[Entity, Field], ...]] = {}


def rollups_over(
    definition: Definition, child: str
) -> tuple[tuple[Entity, Field], ...]:
    """Return every (parent entity, roll-up field) that summarises ``child``."""
    key = (definition.content_hash, child)
    found = _BY_CHILD.get(key)
    if found is None:
        found = tuple(
            (parent, field)
            for parent in definition.entities
            for field in parent.fields
            if field.rollup is not None and field.rollup.entity == child
        )
        if len(_BY_CHILD) >= CACHE_SIZE:
            _BY_CHILD.clear()
        _BY_CHILD[key] = found
    return found


def refresh_rollups(
    conn: sa.Connection,
    definition: Definition,
    tables: Mapping[str, sa.Table],
    child: str,
    rows: Iterable[Mapping[str, Any] | None],
) -> None:
    """Compute again the roll-ups over ``child`` of every parent that one of
    ``rows`` (child records before or after a write) points at."""
    pairs = rollups_over(definition, child)
    if not pairs:
        return
    present = [row for row in rows if row is not None]
    for parent, field in pairs:
        assert field.rollup is not None
        via = field.rollup.via
        ids = sorted({str(row[via]) for row in present if row.get(via)})
        for start in range(0, len(ids), CHUNK):
            _refresh(conn, tables, parent, field, ids[start : start + CHUNK])


def _refresh(
    conn: sa.Connection,
    tables: Mapping[str, sa.Table],
    parent: Entity,
    field: Field,
    parent_ids: list[str],
) -> None:
    direct = _direct_update(conn.dialect, tables, parent, field)
    if direct is not None:
        conn.execute(direct, {"ids": parent_ids})
        return
    select, update = _statements(tables, parent, field)
    found = {row[0]: row[1] for row in conn.execute(select, {"ids": parent_ids})}
    conn.execute(update, [
        {"_id": parent_id, "_value": _stored(field, found.get(parent_id))}
        for parent_id in parent_ids
    ])


def _direct_update(
    dialect: sa.Dialect,
    tables: Mapping[str, sa.Table],
    parent: Entity,
    field: Field,
) -> Any:
    """Return one UPDATE that computes the roll-up in the database, or None
    when Python must convert the values. That is when the database stores the
    child's values unlike the parent field's, as for an integer summed into a
    decimal on SQLite, where decimals are scaled integers."""
    rollup = field.rollup
    assert rollup is not None
    table = tables[parent.name]
    key = (table, field.name, dialect.name)
    if key in _DIRECT:
        return _DIRECT[key]
    # An alias, so that a roll-up over the parent's own entity (items of
    # items) does not correlate the subquery with the row being updated.
    child = tables[rollup.entity].alias("child")
    target = table.c[field.name]
    same_storage = rollup.function == "count" or dialect.name == "postgresql" or (
        repr(child.c[rollup.field or ""].type) == repr(target.type)
    )
    statement = None

    if same_storage:
        if rollup.function == "count":
            summary: Any = sa.func.count()
        else:
            summary = getattr(sa.func, rollup.function)(child.c[rollup.field or ""])
        conditions = [
            compile_condition(child, Condition(item.field, item.op, item.value))
            for item in rollup.where
        ]
        value: Any = (
            sa.select(summary)
            .where(child.c[rollup.via] == table.c.id, *conditions)
            .scalar_subquery()
        )
        if rollup.function in ("count", "sum"):
            value = sa.func.coalesce(value, 0)
        statement = (
            table.update()
            .where(table.c.id.in_(sa.bindparam("ids", expanding=True)))
            .values({field.name: value})
        )
    if len(_DIRECT) >= CACHE_SIZE:
        _DIRECT.clear()
    _DIRECT[key] = statement
    return statement


#: The one UPDATE of each roll-up field that the database can compute, by
#: (parent table, field name, dialect); None where Python must convert.
_DIRECT: dict[tuple[sa.Table, str, str], Any] = {}
#: The SELECT and UPDATE of each roll-up field, by (parent table, field
#: name). Built once, so that a save does not compile them again; tables
#: are shared by every tenant on one definition.
_STATEMENTS: dict[tuple[sa.Table, str], tuple[Any, Any]] = {}


def _statements(
    tables: Mapping[str, sa.Table], parent: Entity, field: Field
) -> tuple[Any, Any]:
    table = tables[parent.name]
    key = (table, field.name)
    found = _STATEMENTS.get(key)
    if found is not None:
        return found
    rollup = field.rollup
    assert rollup is not None
    child = tables[rollup.entity]
    via = child.c[rollup.via]
    if rollup.function == "count":
        summary: Any = sa.func.count()
    else:
        summary = getattr(sa.func, rollup.function)(child.c[rollup.field or ""])
    conditions = [
        compile_condition(child, Condition(item.field, item.op, item.value))
        for item in rollup.where
    ]
    select = (
        sa.select(via, summary.label("summary"))
        .where(via.in_(sa.bindparam("ids", expanding=True)), *conditions)
        .group_by(via)
    )
    update = (
        table.update()
        .where(table.c.id == sa.bindparam("_id"))
        .values({field.name: sa.bindparam("_value", type_=table.c[field.name].type)})
    )
    if len(_STATEMENTS) >= CACHE_SIZE:
        _STATEMENTS.clear()
    _STATEMENTS[key] = (select, update)
    return select, update


def _stored(field: Field, value: Any) -> Any:
    """Return the summary as the roll-up field stores it: no child record
    counts and sums to 0, and has no minimum or maximum."""
    rollup = field.rollup
    assert rollup is not None
    if value is None:
        if rollup.function in ("count", "sum"):
            value = 0
        else:
            return None
    if field.type == "integer":
        return int(value)
    if field.type in ("decimal", "currency", "percent"):
        scale = field.scale if field.scale is not None else 2
        return decimal.Decimal(str(value)).quantize(decimal.Decimal(1).scaleb(-scale))
    return value
