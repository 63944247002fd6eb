"""Bring a tenant database in line with its table definitions.

Only additive changes are made: new tables, new columns and new indexes.
Anything that would drop or rewrite stored data (a removed entity or field,
a changed column type) raises ``UnsafeChange`` before any DDL runs, because
metadata versioning with migration plans and rollback does not exist yet.

The tables are defined without a schema. On PostgreSQL the connection routes
them to the tenant's schema with ``schema_translate_map``, which neither the
inspector nor Alembic's operations apply, so both get that schema explicitly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from metadata_engine.tables import ON_DELETE_SQL, TABLE_PREFIX

from .backends import connection_schema
from .errors import UnsafeChange

log = logging.getLogger(__name__)

#: Type families that may stand in for each other when a stored column is
#: compared with its definition (SQLite reports some types by affinity, and
#: PostgreSQL reports ``DateTime`` as ``TIMESTAMP``). A type name matches
#: the longest key it contains, so ``DATETIME`` is a datetime, not a date.
_TYPE_FAMILIES: dict[str, str] = {
    "VARCHAR": "text", "TEXT": "text", "CHAR": "text", "STRING": "text",
    "BIGINT": "integer", "INTEGER": "integer", "SMALLINT": "integer",
    "NUMERIC": "decimal", "DECIMAL": "decimal", "FLOAT": "decimal", "REAL": "decimal",
    "BOOLEAN": "boolean", "DATE": "date", "DATETIME": "datetime",
    "TIMESTAMP": "datetime", "JSON": "json",
}
_KEYS_BY_LENGTH = sorted(_TYPE_FAMILIES, key=len, reverse=True)


@dataclass
class MigrationPlan:
    """The changes ``apply_tables`` will make, computed before any is made."""

    new_tables: list[sa.Table] = field(default_factory=list)
    new_columns: list[tuple[sa.Table, sa.Column[object]]] = field(default_factory=list)
    new_indexes: list[sa.Index] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.new_tables or self.new_columns or self.new_indexes)


def _family(type_: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> str:
    if isinstance(type_, sa.types.TypeDecorator):
        type_ = type_.load_dialect_impl(dialect)
    name = type(type_).__name__.upper()
    for key in _KEYS_BY_LENGTH:
        if key in name:
            return _TYPE_FAMILIES[key]
    return name.lower()


def plan_changes(conn: sa.Connection, metadata: sa.MetaData) -> MigrationPlan:
    """Compare the database (the schema ``conn`` routes to, if any) with
    ``metadata`` and list the changes."""
    schema = connection_schema(conn)
    inspector = sa.inspect(conn)
    existing = set(inspector.get_table_names(schema=schema))
    plan = MigrationPlan()
    # Name order: creation order is left to create_all, which also copes with
    # lookups that form a cycle (sorted_tables warns about those).
    for table in sorted(metadata.tables.values(), key=lambda table: table.name):
        if table.name not in existing:
            plan.new_tables.append(table)
            continue
        _plan_table(inspector, schema, table, plan)
    defined = set(metadata.tables)
    for name in sorted(existing - defined):
        if name.startswith(TABLE_PREFIX):
            plan.unsafe.append(
                f"entity {name[len(TABLE_PREFIX):]!r} exists in the database but "
                "not in the definition; removing an entity would delete its "
                "records, so keep it in the definition"
            )
    return plan


def _plan_table(
    inspector: sa.Inspector, schema: str | None, table: sa.Table, plan: MigrationPlan
) -> None:
    stored = {
        column["name"]: column
        for column in inspector.get_columns(table.name, schema=schema)
    }
    entity = table.name.removeprefix(TABLE_PREFIX)
    for column in table.columns:
        if column.name not in stored:
            plan.new_columns.append((table, column))
            continue
        dialect = inspector.bind.dialect
        stored_family = _family(stored[column.name]["type"], dialect)
        defined_family = _family(column.type, dialect)
        if stored_family != defined_family:
            plan.unsafe.append(
                f"field {column.name!r} of entity {entity!r} is stored as "
                f"{stored_family} but defined as {defined_family}; changing a "
                "field's type is not supported yet, so add a new field instead"
            )
    for name in sorted(set(stored) - {column.name for column in table.columns}):
        plan.unsafe.append(
            f"field {name!r} of entity {entity!r} has a column in the database "
            "but is missing from the definition; removing a field would delete "
            "its data, so keep it in the definition"
        )
    stored_indexes = {
        index["name"] for index in inspector.get_indexes(table.name, schema=schema)
    }
    stored_indexes |= {
        constraint["name"]
        for constraint in inspector.get_unique_constraints(table.name, schema=schema)
    }
    for index in table.indexes:
        if index.name not in stored_indexes:
            plan.new_indexes.append(index)
    for constraint in table.constraints:
        if (
            isinstance(constraint, sa.UniqueConstraint)
            and isinstance(constraint.name, str)
            and constraint.name not in stored_indexes
        ):
            columns = [column.name for column in constraint.columns]
            if any(name in {c.name for _, c in plan.new_columns} for name in columns):
                plan.new_indexes.append(
                    sa.Index(constraint.name, *constraint.columns, unique=True)
                )
            else:
                plan.unsafe.append(
                    f"unique constraint {constraint.name!r} on entity {entity!r} "
                    "is new for existing data; adding uniqueness to stored "
                    "records is not supported yet"
                )


def apply_tables(conn: sa.Connection, metadata: sa.MetaData) -> MigrationPlan:
    """Create what is missing; raise ``UnsafeChange`` before touching anything
    if the change would lose data."""
    plan = plan_changes(conn, metadata)
    if plan.unsafe:
        raise UnsafeChange(
            "the definition cannot be applied without losing data:\n  "
            + "\n  ".join(plan.unsafe),
            details={"problems": plan.unsafe},
        )
    if plan.new_tables:
        # create_all follows the connection's schema_translate_map.
        metadata.create_all(conn, tables=plan.new_tables)
    schema = connection_schema(conn)
    operations = Operations(MigrationContext.configure(conn))
    for table, column in plan.new_columns:
        if column.foreign_keys and conn.dialect.name == "sqlite":
            _add_sqlite_reference(conn, table, column)
        else:
            # Alembic adds the column, then its foreign key constraint.
            operations.add_column(table.name, _detached(column), schema=schema)
        log.info("added column %s.%s", table.name, column.name)
    for index in plan.new_indexes:
        operations.create_index(
            index.name or "", index.table.name if index.table is not None else "",
            [column.name for column in index.columns], unique=index.unique,
            schema=schema,
        )
    return plan


def _detached(column: sa.Column[object]) -> sa.Column[object]:
    """Return a copy of ``column`` that belongs to no table, with its foreign
    keys (``Column._copy()`` leaves out those bound to a table's constraint)."""
    foreign_keys = [
        sa.ForeignKey(key.target_fullname, name=key.name, ondelete=key.ondelete)
        for key in column.foreign_keys
    ]
    return sa.Column(column.name, column.type, *foreign_keys,
                     nullable=column.nullable)


def _add_sqlite_reference(
    conn: sa.Connection, table: sa.Table, column: sa.Column[object]
) -> None:
    """Add a lookup column with its foreign key on SQLite.

    SQLite's ALTER TABLE cannot add a table constraint but accepts a
    REFERENCES clause on the new column when its default is NULL. That avoids
    rebuilding the table, which with foreign keys enforced would run the
    delete rules of every table that refers to it.
    """
    (key,) = column.foreign_keys
    if key.ondelete and key.ondelete not in ON_DELETE_SQL.values():
        raise ValueError(
            f"invalid delete rule {key.ondelete!r} on column {column.name!r}: "
            f"use one of {', '.join(ON_DELETE_SQL.values())}"
        )
    preparer = conn.dialect.identifier_preparer
    target = key.column
    name = ""
    if isinstance(key.name, str):
        name = f"CONSTRAINT {preparer.quote(key.name)} "
    rule = f" ON DELETE {key.ondelete}" if key.ondelete else ""
    statement = (
        f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN "
        f"{sa.schema.CreateColumn(column).compile(dialect=conn.dialect)} {name}"
        f"REFERENCES {preparer.format_table(target.table)} "
        f"({preparer.quote(target.name)}){rule}"
    )
    conn.exec_driver_sql(statement)
