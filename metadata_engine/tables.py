"""Turn a compiled definition into SQLAlchemy table definitions.

Every entity becomes one real table named ``e_<entity>`` with the system
columns first, then one column per field. Lookups become foreign keys with
the declared delete rule, and ``indexed``/``unique`` flags and index entries
become real indexes and unique constraints. Nothing here touches a database.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.schema import SchemaItem

from . import fieldtypes
from .model import Definition, Entity
from .sqltypes import UTCDateTime

TABLE_PREFIX = "e_"
ON_DELETE_SQL = {"restrict": "RESTRICT", "set_null": "SET NULL", "cascade": "CASCADE"}
MAX_IDENTIFIER = 60


def table_name(entity_name: str) -> str:
    return TABLE_PREFIX + entity_name


def constraint_name(prefix: str, entity: str, columns: tuple[str, ...]) -> str:
    """Return a deterministic constraint name that fits PostgreSQL's limit."""
    name = f"{prefix}_{entity}_{'_'.join(columns)}"
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{name[: MAX_IDENTIFIER - 9]}_{digest}"


def build_tables(definition: Definition, metadata: sa.MetaData) -> dict[str, sa.Table]:
    """Add one table per entity, plus the service tables, to ``metadata``.

    Returns the entity tables keyed by entity name.
    """
    build_service_tables(metadata)
    return {
        entity.name: build_entity_table(entity, metadata)
        for entity in definition.entities
    }


def build_entity_table(entity: Entity, metadata: sa.MetaData) -> sa.Table:
    name = table_name(entity.name)
    columns: list[sa.Column[object]] = [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(36)),
        sa.Column("updated_by", sa.String(36)),
        sa.Column("owner_id", sa.String(36)),
        sa.Column("version", sa.Integer(), nullable=False, default=1),
    ]
    constraints: list[SchemaItem] = [
        sa.Index(
            constraint_name("ix", entity.name, ("created_at", "id")), "created_at", "id"
        ),
        sa.Index(constraint_name("ix", entity.name, ("owner_id",)), "owner_id"),
    ]
    for field in entity.fields:
        converter = fieldtypes.get(field.type)
        column_args: list[SchemaItem] = []
        if field.type == "lookup" and field.target:
            rule = ON_DELETE_SQL[field.on_delete or "restrict"]
            column_args.append(
                sa.ForeignKey(
                    f"{table_name(field.target)}.id",
                    ondelete=rule,
                    name=constraint_name("fk", entity.name, (field.name,)),
                )
            )
        columns.append(
            sa.Column(
                field.name, converter.column_type(field), *column_args, nullable=True
            )
        )
        if field.unique or field.type == "auto_number":
            constraints.append(
                sa.UniqueConstraint(
                    field.name, name=constraint_name("uq", entity.name, (field.name,))
                )
            )
        elif field.indexed or field.type == "lookup":
            constraints.append(
                sa.Index(constraint_name("ix", entity.name, (field.name,)), field.name)
            )
    for index in entity.indexes:
        prefix = "uq" if index.unique else "ix"
        index_name = index.name or constraint_name(prefix, entity.name, index.fields)
        if index.unique:
            constraints.append(sa.UniqueConstraint(*index.fields, name=index_name))
        else:
            constraints.append(sa.Index(index_name, *index.fields))
    return sa.Table(name, metadata, *columns, *constraints)


def build_service_tables(metadata: sa.MetaData) -> None:
    """Add the tables every tenant database has besides its entities."""
    if "_sequences" not in metadata.tables:
        sa.Table(
            "_sequences",
            metadata,
            sa.Column("name", sa.String(120), primary_key=True),
            sa.Column("value", sa.BigInteger(), nullable=False),
        )
    if "_journal" not in metadata.tables:
        # The change journal: one row per record write, numbered without gaps
        # in commit order (crm_platform.journal takes each number from
        # ``_sequences`` inside the writing transaction).
        sa.Table(
            "_journal",
            metadata,
            sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
            sa.Column("at", UTCDateTime(), nullable=False),
            sa.Column("actor_id", sa.String(36)),
            sa.Column("action", sa.String(20), nullable=False),
            sa.Column("entity", sa.String(64), nullable=False),
            sa.Column("record_id", sa.String(36), nullable=False),
            sa.Column("version", sa.Integer()),
            sa.Column("changes", sa.JSON(), nullable=False),
            sa.Column("request_id", sa.String(64)),
            sa.Index("ix__journal_record", "entity", "record_id", "seq"),
            sa.Index("ix__journal_actor", "actor_id", "seq"),
            sa.Index("ix__journal_at", "at"),
        )
    build_access_tables(metadata)
    build_process_tables(metadata)
    build_webhook_tables(metadata)
    if "_metadata" not in metadata.tables:
        sa.Table(
            "_metadata",
            metadata,
            sa.Column("version", sa.Integer(), primary_key=True),
            sa.Column("content_hash", sa.String(64), nullable=False),
            sa.Column("documents", sa.JSON(), nullable=False),
            sa.Column("applied_at", UTCDateTime(), nullable=False),
            sa.Column("applied_by", sa.String(255)),
        )


def build_access_tables(metadata: sa.MetaData) -> None:
    """Add the tenant data that record permissions read: teams, reporting
    lines, permission set assignments and records shared by hand.

    ``_hierarchy`` is derived from ``_reporting``: one row per (manager,
    user) pair where the user reports to the manager directly or through
    others, so that "my subordinates' records" is one indexed subquery.
    """
    if "_teams" in metadata.tables:
        return
    sa.Table(
        "_teams",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("label", sa.String(200), nullable=False),
    )
    sa.Table(
        "_team_members",
        metadata,
        sa.Column(
            "team_id",
            sa.String(36),
            sa.ForeignKey("_teams.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.Index("ix__team_members_user", "user_id", "team_id"),
    )
    sa.Table(
        "_reporting",
        metadata,
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.Column("manager_id", sa.String(36), nullable=False),
    )
    sa.Table(
        "_hierarchy",
        metadata,
        sa.Column("manager_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), primary_key=True),
    )
    sa.Table(
        "_permission_set_assignments",
        metadata,
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.Column("permission_set", sa.String(64), primary_key=True),
    )
    sa.Table(
        "_shares",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36)),
        sa.Column(
            "team_id", sa.String(36), sa.ForeignKey("_teams.id", ondelete="CASCADE")
        ),
        sa.Column("access", sa.String(8), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(36)),
        sa.Index("ix__shares_record", "entity", "record_id"),
        sa.Index("ix__shares_user", "user_id"),
        sa.Index("ix__shares_team", "team_id"),
    )


def build_process_tables(metadata: sa.MetaData) -> None:
    """Add the tenant data that workflows and automation rules write: the
    history of transitions, approval requests, the time triggers that have
    run and users' in-app notifications."""
    if "_transitions" in metadata.tables:
        return
    sa.Table(
        "_transitions",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("transition", sa.String(64), nullable=False),
        sa.Column("from_state", sa.String(255)),
        sa.Column("to_state", sa.String(255), nullable=False),
        sa.Column("actor_id", sa.String(36)),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("approvers", sa.JSON()),
        sa.Index("ix__transitions_record", "entity", "record_id", "at"),
    )
    sa.Table(
        "_approval_requests",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("transition", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(36), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("decisions", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("decided_at", UTCDateTime()),
        sa.Index("ix__approval_requests_record", "entity", "record_id", "status"),
        sa.Index("ix__approval_requests_status", "status", "requested_at"),
    )
    sa.Table(
        "_automation_runs",
        metadata,
        # One row per rule and record: the record service deletes it when
        # the date changes (a renewed contract), so the rule comes due again.
        sa.Column("automation", sa.String(64), primary_key=True),
        sa.Column("record_id", sa.String(36), primary_key=True),
        sa.Column("fire_key", sa.String(40), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
    )
    sa.Table(
        "_notifications",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("entity", sa.String(64)),
        sa.Column("record_id", sa.String(36)),
        sa.Column("source", sa.String(64)),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.Column("read_at", UTCDateTime()),
        sa.Index("ix__notifications_user", "user_id", "read_at", "created_at"),
    )


def build_webhook_tables(metadata: sa.MetaData) -> None:
    """Add ``_webhook_endpoints``, ``_webhook_outbox`` and
    ``_webhook_deliveries`` to ``metadata``, unless they are there already."""
    if "_webhook_endpoints" in metadata.tables:
        return
    sa.Table(
        "_webhook_endpoints",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("url", sa.Text(), nullable=False),
        # ``KeyRing.encrypt`` output, bound to the endpoint's name.
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    sa.Table(
        "_webhook_outbox",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("endpoint", sa.String(63), nullable=False),
        sa.Column("event", sa.String(120), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("journal_seq", sa.BigInteger()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        # Set while a worker sends the row; another worker may claim the row
        # once this time has passed.
        sa.Column("lease_until", UTCDateTime()),
        sa.Column("last_error", sa.Text()),
        sa.Column("delivered_at", UTCDateTime()),
        sa.Index("ix__webhook_outbox_due", "status", "next_attempt_at"),
        sa.Index("ix__webhook_outbox_endpoint", "endpoint", "status"),
    )
    sa.Table(
        "_webhook_deliveries",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("outbox_id", sa.String(36)),
        sa.Column("endpoint", sa.String(63), nullable=False),
        sa.Column("event", sa.String(120), nullable=False),
        sa.Column("attempt", sa.Integer()),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("duration_ms", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Index("ix__webhook_deliveries_at", "at"),
        sa.Index("ix__webhook_deliveries_outbox", "outbox_id"),
    )
