"""Bring a tenant database in line with its table definitions.

Only additive changes are made: new tables, new columns and new indexes.
Anything that would drop or rewrite stored data (a removed entity or field,
a changed column type) raises ``UnsafeChange`` before any DDL runs, because
metadata versioning with migration plans and rollback does not exist yet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from metadata_engine.tables import TABLE_PREFIX

from .errors import UnsafeChange

log = logging.getLogger(__name__)

#: Type families that may stand in for each other when a stored column is
#: compared with its definition (SQLite reports some types by affinity).
_TYPE_FAMILIES: dict[str, str] = {
    "VARCHAR": "text", "TEXT": "text", "CHAR": "text", "STRING": "text",
    "BIGINT": "integer", "INTEGER": "integer", "SMALLINT": "integer",
    "NUMERIC": "decimal", "DECIMAL": "decimal", "FLOAT": "decimal", "REAL": "decimal",
    "BOOLEAN": "boolean", "DATE": "date", "DATETIME": "datetime",
    "TIMESTAMP": "datetime", "JSON": "json",
}


@dataclass
class MigrationPlan:
    """What ``apply_tables`` will do, computed before it does anything."""

    new_tables: list[sa.Table] = field(default_factory=list)
    new_columns: list[tuple[sa.Table, sa.Column[object]]] = field(default_factory=list)
    new_indexes: list[sa.Index] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.new_tables or self.new_columns or self.new_indexes)


def _family(type_: sa.types.TypeEngine[object]) -> str:
    name = type(type_).__name__.upper()
    if hasattr(type_, "impl"):
        name = type(type_.impl).__name__.upper()
    for key, family in _TYPE_FAMILIES.items():
        if key in name:
            return family
    return name.lower()


def plan_changes(conn: sa.Connection, metadata: sa.MetaData) -> MigrationPlan:
    """Compare the database with ``metadata`` and list the changes."""
    inspector = sa.inspect(conn)
    existing = set(inspector.get_table_names())
    plan = MigrationPlan()
    for table in metadata.sorted_tables:
        if table.name not in existing:
            plan.new_tables.append(table)
            continue
        _plan_table(inspector, table, plan)
    wanted = set(metadata.tables)
    for name in sorted(existing - wanted):
        if name.startswith(TABLE_PREFIX):
            plan.unsafe.append(
                f"entity {name[len(TABLE_PREFIX):]!r} exists in the database but "
                "not in the definition; removing an entity would delete its "
                "records, so keep it in the definition"
            )
    return plan


def _plan_table(
    inspector: sa.Inspector, table: sa.Table, plan: MigrationPlan
) -> None:
    stored = {column["name"]: column for column in inspector.get_columns(table.name)}
    entity = table.name.removeprefix(TABLE_PREFIX)
    for column in table.columns:
        if column.name not in stored:
            plan.new_columns.append((table, column))
            continue
        stored_family = _family(stored[column.name]["type"])
        wanted_family = _family(column.type)
        if stored_family != wanted_family:
            plan.unsafe.append(
                f"field {column.name!r} of entity {entity!r} is stored as "
                f"{stored_family} but defined as {wanted_family}; changing a "
                "field's type is not supported yet, so add a new field instead"
            )
    for name in sorted(set(stored) - {column.name for column in table.columns}):
        plan.unsafe.append(
            f"field {name!r} of entity {entity!r} has a column in the database "
            "but is missing from the definition; removing a field would delete "
            "its data, so keep it in the definition"
        )
    stored_indexes = {index["name"] for index in inspector.get_indexes(table.name)}
    stored_indexes |= {
        constraint["name"]
        for constraint in inspector.get_unique_constraints(table.name)
    }
    for index in table.indexes:
        if index.name not in stored_indexes:
            plan.new_indexes.append(index)
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint) and constraint.name and (
            constraint.name not in stored_indexes
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
        metadata.create_all(conn, tables=plan.new_tables)
    operations = Operations(MigrationContext.configure(conn))
    for table, column in plan.new_columns:
        copy = column._copy()
        if column.foreign_keys and conn.dialect.name == "sqlite":
            # SQLite cannot add a foreign key with ALTER TABLE, so the batch
            # mode rebuilds the table with the new column and its constraint.
            with operations.batch_alter_table(table.name) as batch:
                batch.add_column(copy)
        else:
            operations.add_column(table.name, copy)
        log.info("added column %s.%s", table.name, column.name)
    for index in plan.new_indexes:
        operations.create_index(
            index.name or "", index.table.name if index.table is not None else "",
            [column.name for column in index.columns], unique=index.unique,
        )
    return plan
