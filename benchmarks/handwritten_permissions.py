"""The hand-written baseline of the permissions benchmark.

One list page of opportunities for one user, with the record permissions
written directly in SQLAlchemy Core. The user reads their own records, their
team mates' records, the records of two sharing rules, and the records
shared with them or one of their teams by hand. The rules are fixed in code,
as a developer without metadata would write them. Like ``handwritten.py``,
it imports nothing from ``crm_platform`` or ``metadata_engine``; the table
and column names are MetaCRM's, so it runs on MetaCRM's own database.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import sqlalchemy as sa

from .handwritten import BUSY_TIMEOUT_MS, ScaledDecimal

#: The two sharing rules, as literals: stage "closed_won" (shared with team
#: "west") and an amount of at least 490,000.00 (shared with sales reps).
WON_STAGE = "closed_won"
LARGE_AMOUNT = decimal.Decimal("490000")


class Money(sa.types.TypeDecorator[decimal.Decimal]):
    """A decimal with two places: NUMERIC(18, 2) on PostgreSQL, and on SQLite
    an integer count of cents (``ScaledDecimal``), because SQLite keeps
    NUMERIC values as floats."""

    impl = sa.Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(ScaledDecimal(2))
        return dialect.type_descriptor(sa.Numeric(18, 2, asdecimal=True))


metadata = sa.MetaData()

opportunities = sa.Table(
    "e_opportunity",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(36)),
    sa.Column("updated_by", sa.String(36)),
    sa.Column("owner_id", sa.String(36)),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("account", sa.String(36), nullable=False),
    sa.Column("contact", sa.String(36)),
    sa.Column("stage", sa.String(100), nullable=False),
    sa.Column("probability", Money()),
    sa.Column("amount", Money()),
    sa.Column("close_date", sa.Date()),
    sa.Column("next_step", sa.String(255)),
    sa.Column("campaign", sa.String(36)),
    sa.Column("description", sa.Text()),
)

team_members = sa.Table(
    "_team_members",
    metadata,
    sa.Column("team_id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(36), primary_key=True),
)

shares = sa.Table(
    "_shares",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("record_id", sa.String(36), nullable=False),
    sa.Column("user_id", sa.String(36)),
    sa.Column("team_id", sa.String(36)),
    sa.Column("access", sa.String(8), nullable=False),
)


def create_engine(url: str, schema: str | None) -> sa.Engine:
    """Open the tenant database: a SQLite file with MetaCRM's pragmas, or a
    PostgreSQL database whose tables live in ``schema``."""
    if schema is not None:
        return sa.create_engine(
            url, execution_options={"schema_translate_map": {None: schema}}
        )
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.close()

    return engine


def readable(user_id: str) -> sa.ColumnElement[bool]:
    """Return the WHERE condition of the opportunities ``user_id`` may read."""
    table = opportunities
    mine = team_members.alias("mine")
    mates = team_members.alias("mates")
    team_mates = (
        sa.select(mates.c.user_id)
        .join(mine, mine.c.team_id == mates.c.team_id)
        .where(mine.c.user_id == user_id)
    )
    my_teams = sa.select(team_members.c.team_id).where(
        team_members.c.user_id == user_id
    )
    shared = sa.exists().where(
        shares.c.entity == "opportunity",
        shares.c.record_id == table.c.id,
        shares.c.access.in_(("read", "edit")),
        sa.or_(shares.c.user_id == user_id, shares.c.team_id.in_(my_teams)),
    )
    return sa.or_(
        table.c.owner_id == user_id,
        table.c.owner_id.in_(team_mates),
        table.c.stage == WON_STAGE,
        table.c.amount >= LARGE_AMOUNT,
        shared,
    )


def page(
    conn: sa.Connection,
    user_id: str,
    limit: int,
    after: tuple[dt.datetime, str] | None = None,
) -> list[dict[str, Any]]:
    """Return the newest readable opportunities, ``limit`` of them, after the
    row (created_at, id) ``after`` when given."""
    table = opportunities
    statement = sa.select(table).where(readable(user_id))
    if after is not None:
        created_at, record_id = after
        statement = statement.where(
            sa.or_(
                table.c.created_at < created_at,
                sa.and_(table.c.created_at == created_at, table.c.id < record_id),
            )
        )
    statement = statement.order_by(table.c.created_at.desc(), table.c.id.desc())
    rows = conn.execute(statement.limit(limit)).mappings()
    return [dict(row) for row in rows]


def count(conn: sa.Connection, user_id: str) -> int:
    """Return how many opportunities ``user_id`` may read."""
    statement = (
        sa.select(sa.func.count())
        .select_from(opportunities)
        .where(readable(user_id))
    )
    total: int = conn.execute(statement).scalar_one()
    return total
