"""The hand-written baseline: the opportunity table and endpoint, no metadata.

This is what a developer would write for the standard template's
``opportunity`` entity with Flask, SQLAlchemy Core and marshmallow alone. It
has one table declared in code, a marshmallow schema with the same rules as
the entity's fields, a bearer-token check against a token table and a POST
endpoint. It uses nothing from ``crm_platform`` or ``metadata_engine``, so the
benchmarks compare MetaCRM with code that does the same work directly.

Table and column names are MetaCRM's (``e_opportunity``), so that the list
benchmark can run the hand-written queries on MetaCRM's own database file.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from uuid_utils import uuid7

STAGES = (
    "prospecting",
    "qualification",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
)
#: Milliseconds a writer waits for another writer's lock.
BUSY_TIMEOUT_MS = 10_000


class ScaledDecimal(sa.types.TypeDecorator[decimal.Decimal]):
    """A decimal with ``scale`` places, stored exactly as an integer count of
    its smallest unit (cents for a scale of 2).

    SQLite stores a NUMERIC value with a fraction as an 8-byte float, which
    loses cents beyond about 15 significant digits.
    """

    impl = sa.BigInteger
    cache_ok = True

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> int | None:
        if value is None:
            return None
        return int(decimal.Decimal(value).scaleb(self.scale))

    def process_result_value(
        self, value: Any, dialect: sa.Dialect
    ) -> decimal.Decimal | None:
        if value is None:
            return None
        return decimal.Decimal(value).scaleb(-self.scale)


metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("is_active", sa.Boolean(), nullable=False),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("expires_at", sa.DateTime()),
    sa.Column("revoked_at", sa.DateTime()),
)


def _lookup_target(name: str) -> sa.Table:
    """Declare a minimal table that opportunity lookups point at."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
    )


accounts = _lookup_target("e_account")
contacts = _lookup_target("e_contact")
campaigns = _lookup_target("e_campaign")

opportunities = sa.Table(
    "e_opportunity",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.Column("created_by", sa.String(36)),
    sa.Column("updated_by", sa.String(36)),
    sa.Column("owner_id", sa.String(36)),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("account", sa.ForeignKey("e_account.id", ondelete="RESTRICT"),
              nullable=False),
    sa.Column("contact", sa.ForeignKey("e_contact.id", ondelete="SET NULL")),
    sa.Column("stage", sa.String(100), nullable=False),
    sa.Column("probability", ScaledDecimal(2)),
    sa.Column("amount", ScaledDecimal(2)),
    sa.Column("close_date", sa.Date()),
    sa.Column("next_step", sa.String(255)),
    sa.Column("campaign", sa.ForeignKey("e_campaign.id", ondelete="SET NULL")),
    sa.Column("description", sa.Text()),
    sa.Index("hw_opportunity_created", "created_at", "id"),
    sa.Index("hw_opportunity_owner", "owner_id"),
    sa.Index("hw_opportunity_name", "name"),
    sa.Index("hw_opportunity_account", "account"),
    sa.Index("hw_opportunity_contact", "contact"),
    sa.Index("hw_opportunity_stage", "stage"),
    sa.Index("hw_opportunity_close_date", "close_date"),
    sa.Index("hw_opportunity_campaign", "campaign"),
    sa.Index("hw_opportunity_stage_close_date", "stage", "close_date"),
)


#: The audit trail that a CRM keeps of every write: one row per change with
#: the new values, written in the transaction of the change.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.Integer(), primary_key=True),
    sa.Column("at", sa.DateTime(), nullable=False),
    sa.Column("actor_id", sa.String(36)),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("record_id", sa.String(36), nullable=False),
    sa.Column("version", sa.Integer()),
    sa.Column("changes", sa.JSON(), nullable=False),
    sa.Index("hw_audit_record", "entity", "record_id", "seq"),
    sa.Index("hw_audit_actor", "actor_id", "seq"),
    sa.Index("hw_audit_at", "at"),
)


def audit_changes(row: dict[str, Any]) -> dict[str, list[Any]]:
    """Return the new values of a created row as JSON-ready [None, value]
    pairs, leaving out empty values and the columns the audit row repeats."""
    changes: dict[str, list[Any]] = {}
    for name, value in row.items():
        if value is None or name in AUDIT_SKIPPED:
            continue
        if isinstance(value, decimal.Decimal):
            value = str(value)
        elif isinstance(value, dt.date):
            value = value.isoformat()
        changes[name] = [None, value]
    return changes


AUDIT_SKIPPED = frozenset(
    {"id", "created_at", "updated_at", "created_by", "updated_by", "version"}
)


def create_engine(path: Path) -> sa.Engine:
    """Open the SQLite file ``path`` with foreign keys, WAL and synchronous
    NORMAL, the settings MetaCRM uses for tenant databases."""
    engine = sa.create_engine(
        f"sqlite:///{path}", connect_args={"check_same_thread": False}
    )

    @sa.event.listens_for(engine, "connect")
    def configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.close()

    return engine


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_user_and_token(engine: sa.Engine, email: str) -> tuple[str, str]:
    """Insert an active user and an API token for it; return both."""
    user_id = str(uuid7())
    token = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(users.insert(), {"id": user_id, "email": email,
                                      "is_active": True})
        conn.execute(api_tokens.insert(), {
            "id": str(uuid7()),
            "token_hash": hash_token(token),
            "user_id": user_id,
            "created_at": utcnow(),
        })
    return user_id, token


def utcnow() -> dt.datetime:
    """Return the current time as naive UTC, the way this app stores it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def user_for_token(conn: sa.Connection, header: str | None) -> str | None:
    """Return the id of the active user whose token is in the header."""
    if not header or not header.startswith("Bearer "):
        return None
    token = header.removeprefix("Bearer ").strip()
    query = (
        sa.select(api_tokens.c.user_id)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(
            api_tokens.c.token_hash == hash_token(token),
            api_tokens.c.revoked_at.is_(None),
            sa.or_(api_tokens.c.expires_at.is_(None),
                   api_tokens.c.expires_at > utcnow()),
            users.c.is_active.is_(True),
        )
    )
    user_id: str | None = conn.execute(query).scalar()
    return user_id


def fits_numeric(precision: int, scale: int) -> Callable[[decimal.Decimal], None]:
    """Return a validator that rejects numbers NUMERIC(precision, scale)
    cannot hold."""

    def check(value: decimal.Decimal) -> None:
        exponent = value.as_tuple().exponent
        places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        if places > scale:
            raise ValidationError(f"At most {scale} digits after the decimal point.")
        whole = abs(value).to_integral_value(rounding=decimal.ROUND_DOWN)
        if whole and len(str(whole)) > precision - scale:
            raise ValidationError(
                f"At most {precision - scale} digits before the decimal point."
            )

    return check


class OpportunityInput(Schema):
    """The fields a client may send when it creates an opportunity."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    account = fields.String(required=True, validate=validate.Length(min=1, max=36))
    contact = fields.String(allow_none=True, validate=validate.Length(min=1, max=36))
    stage = fields.String(load_default="prospecting", validate=validate.OneOf(STAGES))
    probability = fields.Decimal(
        allow_nan=False,
        load_default=decimal.Decimal(10),
        validate=[validate.Range(min=0, max=100), fits_numeric(5, 2)],
    )
    amount = fields.Decimal(
        allow_nan=False,
        allow_none=True,
        validate=[validate.Range(min=0), fits_numeric(18, 2)],
    )
    close_date = fields.Date(allow_none=True)
    next_step = fields.String(allow_none=True, validate=validate.Length(max=255))
    campaign = fields.String(allow_none=True,
                             validate=validate.Length(min=1, max=36))
    description = fields.String(allow_none=True,
                                validate=validate.Length(max=100_000))


class OpportunityOutput(Schema):
    """A stored opportunity as the API returns it."""

    id = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    created_by = fields.String()
    updated_by = fields.String()
    owner_id = fields.String()
    version = fields.Integer()
    name = fields.String()
    account = fields.String()
    contact = fields.String()
    stage = fields.String()
    probability = fields.Decimal(places=2, as_string=True)
    amount = fields.Decimal(places=2, as_string=True)
    close_date = fields.Date()
    next_step = fields.String()
    campaign = fields.String()
    description = fields.String()


def create_app(engine: sa.Engine) -> Flask:
    """Build the Flask app with its one endpoint, POST /api/v1/opportunities."""
    app = Flask(__name__)
    input_schema = OpportunityInput()
    output_schema = OpportunityOutput()

    @app.post("/api/v1/opportunities")
    def create_opportunity() -> tuple[Response, int]:
        with engine.connect() as conn:
            user_id = user_for_token(conn, request.headers.get("Authorization"))
        if user_id is None:
            return _error("invalid or missing bearer token"), 401
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            return _error("the body must be a JSON object"), 400
        try:
            values = input_schema.load(payload)
        except ValidationError as err:
            return jsonify({"errors": err.messages}), 422
        now = utcnow()
        row = {
            **values,
            "id": str(uuid7()),
            "created_at": now,
            "updated_at": now,
            "created_by": user_id,
            "updated_by": user_id,
            "owner_id": user_id,
            "version": 1,
        }
        audit = {
            "at": now, "actor_id": user_id, "action": "create",
            "entity": "opportunity", "record_id": row["id"], "version": 1,
            "changes": audit_changes(row),
        }
        try:
            with engine.begin() as conn:
                conn.execute(opportunities.insert(), row)
                conn.execute(audit_log.insert(), audit)
        except sa.exc.IntegrityError:
            # The foreign keys reject a lookup to a record that does not exist.
            return _error("account, contact or campaign not found"), 422
        return jsonify(output_schema.dump(row)), 201

    return app


def _error(message: str) -> Response:
    return jsonify({"error": message})


def first_page(
    conn: sa.Connection, stage: str, limit: int
) -> list[dict[str, Any]]:
    """Return the newest-closing opportunities in ``stage``: one list page."""
    query = (
        sa.select(opportunities)
        .where(opportunities.c.stage == stage)
        .order_by(opportunities.c.close_date.desc(), opportunities.c.id.desc())
        .limit(limit)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def next_page(
    conn: sa.Connection,
    stage: str,
    last_close_date: dt.date | None,
    last_id: str,
    limit: int,
) -> list[dict[str, Any]]:
    """Return the page after the row (``last_close_date``, ``last_id``).

    SQLite sorts NULL below every value, so in descending order rows without
    a close date come after all dated rows.
    """
    table = opportunities
    if last_close_date is None:
        after = sa.and_(table.c.close_date.is_(None), table.c.id < last_id)
    else:
        after = sa.or_(
            table.c.close_date < last_close_date,
            table.c.close_date.is_(None),
            sa.and_(table.c.close_date == last_close_date, table.c.id < last_id),
        )
    query = (
        sa.select(table)
        .where(table.c.stage == stage, after)
        .order_by(table.c.close_date.desc(), table.c.id.desc())
        .limit(limit)
    )
    return [dict(row) for row in conn.execute(query).mappings()]
