"""The control plane: tenants, users, memberships, API tokens and account
security (failed sign-ins, password resets and the mail outbox).

It lives apart from every tenant's records: in its own database
(``control.sqlite`` in the data directory) or, on PostgreSQL, in its own
schema (see ``crm_platform.backends``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import re
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from uuid_utils import uuid7

from .backends import connection_schema, lock_for_setup
from .errors import NotFound, PlatformError, TenantError, Unauthorized

log = logging.getLogger(__name__)

#: Tenant statuses: members may do everything, only read (a lapsed
#: subscription, a migration in progress), or nothing (suspended by an
#: operator). Operators' CLI commands work in every status.
TENANT_STATUSES = ("active", "read_only", "suspended")
#: Statuses at the end of a tenant's life, set only by
#: ``crm_platform.lifecycle``: closed (members rejected as when suspended,
#: data kept until ``purge_after``) and purged (storage dropped, the row kept
#: as a tombstone so that the slug is never reused).
END_STATUSES = ("closed", "purged")
#: The standard template's roles: the membership roles accepted by callers
#: that pass no tenant definition's ``role_names`` (demo data, benchmarks).
ROLES = ("admin", "sales_manager", "sales_rep", "service_agent", "read_only")
SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
#: A valid e-mail address as HTML's <input type=email> defines it (WHATWG),
#: with at least one dot in the domain.
EMAIL_PATTERN = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
MIN_PASSWORD_LENGTH = 10
BEARER_PREFIX = "mcrm_"
#: Failed sign-ins of one e-mail address, on any tenant, that lock it out.
MAX_FAILED_LOGINS = 5
#: The failures that lock an address out must fall within this period.
FAILED_LOGIN_WINDOW = dt.timedelta(minutes=15)
#: How long a lockout lasts, counted from the failure that caused it.
LOCKOUT_DURATION = dt.timedelta(minutes=15)
#: Failed sign-ins older than this can no longer cause or extend a lockout,
#: so they are deleted.
FAILED_LOGIN_RETENTION = FAILED_LOGIN_WINDOW + LOCKOUT_DURATION
#: How long a password-reset link works after it is created.
RESET_TOKEN_LIFETIME = dt.timedelta(minutes=30)
#: Random bytes in a password-reset token (256 bits).
RESET_TOKEN_BYTES = 32

metadata = sa.MetaData()

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("slug", sa.String(40), nullable=False, unique=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, default="active"),
    sa.Column("metadata_hash", sa.String(64)),
    sa.Column("metadata_version", sa.Integer(), nullable=False, default=0),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    # Set by ``crm_platform.lifecycle`` when the tenant is closed and purged.
    sa.Column("status_before_close", sa.String(20)),
    sa.Column("closed_at", sa.DateTime()),
    sa.Column("purge_after", sa.DateTime()),
    sa.Column("purged_at", sa.DateTime()),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("password_hash", sa.String(255)),
    sa.Column("locale", sa.String(10), nullable=False, default="en"),
    sa.Column("is_active", sa.Boolean(), nullable=False, default=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    # Stored in each browser session at sign-in. Raising it ends every
    # session signed in before, on every tenant.
    sa.Column(
        "session_generation",
        sa.Integer(),
        nullable=False,
        default=0,
        server_default="0",
    ),
    # Operators sign in at /operator/ and manage every tenant; see
    # ``crm_platform.operator``.
    sa.Column(
        "is_operator",
        sa.Boolean(),
        nullable=False,
        default=False,
        server_default=sa.false(),
    ),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column(
        "tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column(
        "user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("role", sa.String(40), nullable=False),
    # When the user became a member; empty for memberships made by versions
    # that did not store it.
    sa.Column("added_at", sa.DateTime()),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column(
        "tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(100), nullable=False, default="api"),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("expires_at", sa.DateTime()),
    sa.Column("revoked_at", sa.DateTime()),
)

failed_logins = sa.Table(
    "failed_logins",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    # The address as typed (lower-cased), whether or not a user has it.
    sa.Column("email", sa.String(254), nullable=False, index=True),
    sa.Column(
        "tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("client_address", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False, index=True),
)

password_resets = sa.Table(
    "password_resets",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column(
        "tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("expires_at", sa.DateTime(), nullable=False),
    sa.Column("used_at", sa.DateTime()),
)

#: Mail the platform would send. No mail server is configured, so an operator
#: reads it with ``metacrm outbox list``.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("recipient", sa.String(254), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
)


#: Browser sessions that are signed in, by the SHA-256 of their random id.
#: Signing out deletes the row, so a copy of the cookie is useless afterwards.
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column(
        "tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("created_at", sa.DateTime(), nullable=False),
)

#: Signed-in operator browser sessions, by the SHA-256 of their random id.
#: They belong to no tenant, so they are kept apart from ``web_sessions``.
operator_sessions = sa.Table(
    "operator_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
)

#: Failed operator sign-ins. They count towards the same lockout as the rows
#: of ``failed_logins``, which need a tenant.
operator_failed_logins = sa.Table(
    "operator_failed_logins",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("email", sa.String(254), nullable=False, index=True),
    sa.Column("client_address", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False, index=True),
)


#: Subscription plans an operator sells: a default seat count, an optional
#: record quota and the names of the features the plan includes.
plans = sa.Table(
    "plans",
    metadata,
    sa.Column("code", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("seats", sa.Integer(), nullable=False),
    sa.Column("record_quota", sa.Integer()),
    sa.Column("features", sa.JSON(), nullable=False),
)

#: A tenant's paid seats and paid period. A tenant without a row has no seat
#: limit. See ``crm_platform.billing``.
subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column(
        "tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("plan_code", sa.ForeignKey("plans.code"), nullable=False),
    sa.Column("seats", sa.Integer(), nullable=False),
    sa.Column("period_end", sa.Date(), nullable=False),
    sa.Column(
        "grace_days", sa.Integer(), nullable=False, default=14, server_default="14"
    ),
    # "active" or "lapsed"
    sa.Column("status", sa.String(20), nullable=False, default="active"),
)

#: Seats in use and seats paid, one row per subscribed tenant and billing day.
seat_days = sa.Table(
    "seat_days",
    metadata,
    sa.Column(
        "tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("seats_used", sa.Integer(), nullable=False),
    sa.Column("seats_paid", sa.Integer(), nullable=False),
)

#: Columns of a tenant's plan, read with the tenant row through outer joins
#: (see ``_with_plan``): a tenant without a subscription gets NULL in each.
_PLAN_COLUMNS = (
    subscriptions.c.plan_code,
    plans.c.record_quota,
    plans.c.features,
)


def _with_plan(query: sa.Select[Any]) -> sa.Select[Any]:
    """Outer-join ``query``, which selects from ``tenants``, to the tenant's
    subscription and plan."""
    return query.outerjoin(
        subscriptions, subscriptions.c.tenant_id == tenants.c.id
    ).outerjoin(plans, plans.c.code == subscriptions.c.plan_code)


#: The tenant and member a token belongs to. It runs on every API request, so
#: it is built once, and one query returns the tenant row with its plan, and
#: the user.
_TOKEN_QUERY = (
    sa.select(
        tenants,
        *_PLAN_COLUMNS,
        users.c.id.label("user_id"),
        users.c.email,
        users.c.name.label("user_name"),
        users.c.locale,
        memberships.c.role,
    )
    .select_from(api_tokens)
    .join(tenants, tenants.c.id == api_tokens.c.tenant_id)
    .outerjoin(subscriptions, subscriptions.c.tenant_id == tenants.c.id)
    .outerjoin(plans, plans.c.code == subscriptions.c.plan_code)
    .join(users, users.c.id == api_tokens.c.user_id)
    .join(
        memberships,
        sa.and_(
            memberships.c.user_id == users.c.id,
            memberships.c.tenant_id == api_tokens.c.tenant_id,
        ),
    )
    .where(
        api_tokens.c.token_hash == sa.bindparam("token_hash"),
        tenants.c.slug == sa.bindparam("slug"),
        api_tokens.c.revoked_at.is_(None),
        sa.or_(
            api_tokens.c.expires_at.is_(None),
            api_tokens.c.expires_at > sa.bindparam("now", type_=sa.DateTime()),
        ),
        users.c.is_active.is_(True),
    )
)


@dataclass(frozen=True)
class Tenant:
    id: str
    slug: str
    name: str
    status: str
    metadata_hash: str | None
    metadata_version: int
    created_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None
    purge_after: dt.datetime | None = None
    purged_at: dt.datetime | None = None
    status_before_close: str | None = None
    #: The plan's record quota; None without a subscription or quota.
    record_quota: int | None = None
    #: The features of the plan (see ``billing.FEATURES``); None without a
    #: subscription, which means every feature.
    features: frozenset[str] | None = None
    #: The code of the subscribed plan, for messages; None without one.
    plan: str | None = None


@dataclass(frozen=True)
class Actor:
    """The signed-in user of one tenant, passed down to every service."""

    user_id: str
    email: str
    name: str
    role: str
    locale: str
    tenant_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class LockedOut(Unauthorized):
    """A sign-in rejected without a password check because the e-mail address
    had too many recent failures."""

    status = 429
    code = "too_many_requests"

    def __init__(self, until: dt.datetime, now: dt.datetime) -> None:
        super().__init__("invalid e-mail or password: too many failed attempts")
        self.until = until
        self.minutes = max(1, math.ceil((until - now).total_seconds() / 60))


class PasswordRejected(PlatformError):
    """A new password that the password policy rejects."""

    def __init__(self, problem: Literal["short", "weak"], message: str) -> None:
        super().__init__(message)
        self.problem = problem


ResetProblem = Literal["unknown", "used", "expired"]


class InvalidResetToken(PlatformError):
    """A password-reset token that is unknown, already used or expired."""

    code = "invalid_reset_token"

    def __init__(self, problem: ResetProblem) -> None:
        super().__init__(f"password-reset token is {problem}: request a new one")
        self.problem: ResetProblem = problem
        self.status = 404 if problem == "unknown" else 410


@dataclass(frozen=True)
class OutboxMessage:
    recipient: str
    subject: str
    body: str
    created_at: dt.datetime


def _tenant_from(row: sa.RowMapping) -> Tenant:
    return Tenant(
        id=row["id"],
        slug=row["slug"],
        name=row["name"],
        status=row["status"],
        metadata_hash=row["metadata_hash"],
        metadata_version=row["metadata_version"],
        created_at=row["created_at"],
        closed_at=row["closed_at"],
        purge_after=row["purge_after"],
        purged_at=row["purged_at"],
        status_before_close=row["status_before_close"],
        record_quota=row.get("record_quota"),
        features=_features_from(row),
        plan=row.get("plan_code"),
    )


def _features_from(row: sa.RowMapping) -> frozenset[str] | None:
    if row.get("plan_code") is None:
        return None
    return frozenset(row.get("features") or ())


def utcnow() -> dt.datetime:
    """Return the current UTC time as a naive datetime, as the control plane
    stores it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest stored in place of an API token.

    Tokens are 256-bit random values, so a fast hash is enough: there is no
    low-entropy secret to stretch as there is with a password.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def email_digest(email: str) -> str:
    """Return a short SHA-256 digest that names an e-mail address in logs
    without writing the address itself."""
    normalized = email.strip().lower().encode("utf-8")
    return hashlib.sha256(normalized).hexdigest()[:16]


def lockout_end(failure_times: list[dt.datetime]) -> dt.datetime | None:
    """Return when the lockout caused by these failures ends, or None if they
    cause none.

    ``MAX_FAILED_LOGINS`` failures within ``FAILED_LOGIN_WINDOW`` lock the
    address out until ``LOCKOUT_DURATION`` after the last of them.
    """
    times = sorted(failure_times)
    ends = [
        times[index] + LOCKOUT_DURATION
        for index in range(MAX_FAILED_LOGINS - 1, len(times))
        if times[index] - times[index - MAX_FAILED_LOGINS + 1] < FAILED_LOGIN_WINDOW
    ]
    return max(ends, default=None)


#: Columns added after the first release, which older control planes lack.
ADDED_COLUMNS = (
    users.c.session_generation,
    users.c.is_operator,
    tenants.c.status_before_close,
    tenants.c.closed_at,
    tenants.c.purge_after,
    tenants.c.purged_at,
    memberships.c.added_at,
)


def add_missing_columns(conn: sa.Connection) -> None:
    """Add columns that control planes created by older versions lack.

    ``create_all`` creates missing tables but never alters existing ones.
    """
    schema = connection_schema(conn)
    inspector = sa.inspect(conn)
    stored = {
        table: {column["name"] for column in inspector.get_columns(table, schema)}
        for table in {column.table.name for column in ADDED_COLUMNS}
    }
    operations = Operations(MigrationContext.configure(conn))
    for column in ADDED_COLUMNS:
        table = column.table.name
        if column.name in stored[table]:
            continue
        operations.add_column(
            table,
            sa.Column(
                column.name,
                column.type,
                nullable=column.nullable,
                server_default=getattr(column.server_default, "arg", None),
            ),
            schema=schema,
        )
        log.info("added column %s.%s to the control plane", table, column.name)


class ControlPlane:
    """Reads and writes tenants, users, memberships and tokens."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.hasher = PasswordHasher()

    @classmethod
    def open(cls, engine: sa.Engine) -> ControlPlane:
        """Return the control plane on ``engine``, creating its tables if
        they are missing."""
        with engine.begin() as conn:
            lock_for_setup(conn)
            metadata.create_all(conn)
            add_missing_columns(conn)
        return cls(engine)

    # Tenants

    def create_tenant(self, slug: str, name: str | None = None) -> Tenant:
        if not SLUG_PATTERN.match(slug):
            raise TenantError(
                f"invalid tenant slug {slug!r}: use 2-40 lower-case letters, "
                "digits and hyphens, starting with a letter"
            )
        existing = self.find_tenant(slug)
        if existing is not None and existing.status == "purged":
            raise TenantError(
                f"tenant {slug!r} was purged and its slug is kept so that it is "
                "not reused by someone else: choose another slug"
            )
        if existing is not None:
            raise TenantError(f"tenant {slug!r} already exists")
        row = {
            "id": str(uuid7()),
            "slug": slug,
            "name": name or slug,
            "status": "active",
            "metadata_hash": None,
            "metadata_version": 0,
            "created_at": utcnow(),
        }
        with self.engine.begin() as conn:
            conn.execute(tenants.insert().values(**row))
        log.info("created tenant %s", slug)
        return self.get_tenant(slug)

    def find_tenant(self, slug: str) -> Tenant | None:
        """Return the tenant ``slug`` with its plan's limits, or None."""
        query = _with_plan(sa.select(tenants, *_PLAN_COLUMNS).select_from(tenants))
        with self.engine.connect() as conn:
            row = conn.execute(query.where(tenants.c.slug == slug)).mappings().first()
        return None if row is None else _tenant_from(row)

    def get_tenant(self, slug: str) -> Tenant:
        tenant = self.find_tenant(slug)
        if tenant is None:
            raise NotFound(f"tenant {slug!r} not found")
        return tenant

    def list_tenants(self) -> list[Tenant]:
        with self.engine.connect() as conn:
            slugs = conn.execute(sa.select(tenants.c.slug).order_by(tenants.c.slug))
            names = [slug for (slug,) in slugs]
        return [self.get_tenant(slug) for slug in names]

    def set_status(self, slug: str, status: str) -> Tenant:
        """Change a tenant's status; see ``TENANT_STATUSES``."""
        if status not in TENANT_STATUSES:
            raise TenantError(
                f"unknown tenant status {status!r}: use one of "
                + ", ".join(TENANT_STATUSES)
            )
        tenant = self.get_tenant(slug)
        if tenant.status in END_STATUSES:
            advice = (
                f"reopen it first with 'metacrm tenant reopen {slug}'"
                if tenant.status == "closed"
                else "its data is gone; create a tenant with another slug"
            )
            raise TenantError(
                f"tenant {slug!r} is {tenant.status}, so its status cannot be "
                f"set to {status!r}: {advice}"
            )
        with self.engine.begin() as conn:
            conn.execute(
                tenants.update().where(tenants.c.id == tenant.id).values(status=status)
            )
        log.warning("tenant %s is now %s (was %s)", slug, status, tenant.status)
        return self.get_tenant(slug)

    def record_metadata(self, tenant_id: str, content_hash: str, version: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                tenants.update()
                .where(tenants.c.id == tenant_id)
                .values(metadata_hash=content_hash, metadata_version=version)
            )

    # Users

    def check_password_policy(self, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise PasswordRejected(
                "short",
                f"password too short: use at least {MIN_PASSWORD_LENGTH} characters",
            )
        if password.isdigit() or password.isalpha():
            raise PasswordRejected(
                "weak", "password too weak: mix letters with digits or symbols"
            )

    def create_user(
        self,
        email: str,
        password: str | None,
        name: str | None = None,
        locale: str = "en",
    ) -> str:
        email = email.strip().lower()
        if not EMAIL_PATTERN.match(email):
            raise PlatformError(f"invalid e-mail address {email!r}")
        if password is not None:
            self.check_password_policy(password)
        if self.find_user_id(email) is not None:
            raise PlatformError(f"user {email!r} already exists")
        user_id = str(uuid7())
        with self.engine.begin() as conn:
            conn.execute(
                users.insert().values(
                    id=user_id,
                    email=email,
                    name=name or email.split("@")[0],
                    password_hash=self.hasher.hash(password) if password else None,
                    locale=locale,
                    is_active=True,
                    created_at=utcnow(),
                )
            )
        log.info("created user %s", user_id)
        return user_id

    def set_password(self, user_id: str, password: str) -> None:
        """Set a new password and end every session of the user."""
        self.check_password_policy(password)
        with self.engine.begin() as conn:
            self._store_password(conn, user_id, password)
        log.info("changed the password of user %s", user_id)

    def _store_password(self, conn: sa.Connection, user_id: str, password: str) -> None:
        conn.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(
                password_hash=self.hasher.hash(password),
                session_generation=users.c.session_generation + 1,
            )
        )

    def session_generation(self, user_id: str) -> int:
        """Return the generation a new browser session of the user stores."""
        with self.engine.connect() as conn:
            generation = conn.execute(
                sa.select(users.c.session_generation).where(users.c.id == user_id)
            ).scalar()
        if generation is None:
            raise NotFound(f"user {user_id!r} not found")
        return int(generation)

    def start_web_session(self, tenant: Tenant, user_id: str) -> str:
        """Record a new signed-in browser session and return its random id."""
        session_id = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                web_sessions.insert().values(
                    id_hash=hash_token(session_id),
                    user_id=user_id,
                    tenant_id=tenant.id,
                    created_at=utcnow(),
                )
            )
        return session_id

    def web_session_active(self, tenant: Tenant, user_id: str, session_id: str) -> bool:
        query = sa.select(web_sessions.c.id_hash).where(
            web_sessions.c.id_hash == hash_token(session_id),
            web_sessions.c.user_id == user_id,
            web_sessions.c.tenant_id == tenant.id,
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def end_web_session(self, session_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                web_sessions.delete().where(
                    web_sessions.c.id_hash == hash_token(session_id)
                )
            )

    def end_sessions(self, user_id: str) -> None:
        """End every browser session of the user, on every tenant."""
        with self.engine.begin() as conn:
            result = conn.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(session_generation=users.c.session_generation + 1)
            )
            conn.execute(web_sessions.delete().where(web_sessions.c.user_id == user_id))
            conn.execute(
                operator_sessions.delete().where(
                    operator_sessions.c.user_id == user_id
                )
            )
        if result.rowcount == 0:
            raise NotFound(f"user {user_id!r} not found")
        log.warning("ended every session of user %s", user_id)

    def set_locale(self, user_id: str, locale: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                users.update().where(users.c.id == user_id).values(locale=locale)
            )

    def find_user_id(self, email: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(users.c.id).where(users.c.email == email.strip().lower())
            ).scalar()

    def add_member(
        self, tenant: Tenant, user_id: str, role: str,
        roles: Sequence[str] = ROLES,
    ) -> None:
        """Make the user a member of ``tenant`` with ``role``, or change the
        role of an existing member. ``role`` must be one of ``roles``: pass
        the tenant definition's ``role_names``, because the default is the
        standard template's roles.

        A new member of a subscribed tenant whose seats are all in use raises
        ``billing.SeatLimitReached``. The seats are counted and the member
        added in one locked transaction, so members added at the same moment
        never exceed the paid seats together.
        """
        # Imported here because billing imports this module's tables.
        from .billing import check_seat_available, membership_transaction

        if role not in roles:
            raise PlatformError(f"unknown role {role!r}: use one of {', '.join(roles)}")
        if tenant.status == "purged":
            raise TenantError(
                f"tenant {tenant.slug!r} is purged, so it takes no members; "
                "create a new tenant instead"
            )
        member = sa.and_(
            memberships.c.tenant_id == tenant.id, memberships.c.user_id == user_id
        )
        with membership_transaction(self.engine) as conn:
            changed = conn.execute(memberships.update().where(member).values(role=role))
            if changed.rowcount > 0:
                return
            check_seat_available(conn, tenant)
            conn.execute(
                memberships.insert().values(
                    tenant_id=tenant.id, user_id=user_id, role=role, added_at=utcnow()
                )
            )

    def remove_member(
        self,
        tenant: Tenant,
        user_id: str,
        check: Callable[[sa.Connection], None] | None = None,
    ) -> None:
        """End the user's membership of ``tenant``, and revoke the user's
        browser sessions and API tokens there.

        ``check`` runs first in the same transaction, which on SQLite holds
        the write lock from its start, and may raise to stop the removal.
        """
        from .billing import membership_transaction

        with membership_transaction(self.engine) as conn:
            if check is not None:
                check(conn)
            removed = conn.execute(
                memberships.delete().where(
                    memberships.c.tenant_id == tenant.id,
                    memberships.c.user_id == user_id,
                )
            )
            if removed.rowcount == 0:
                raise NotFound(
                    f"user {user_id!r} is not a member of tenant {tenant.slug!r}"
                )
            conn.execute(
                web_sessions.delete().where(
                    web_sessions.c.tenant_id == tenant.id,
                    web_sessions.c.user_id == user_id,
                )
            )
            conn.execute(
                api_tokens.update()
                .where(
                    api_tokens.c.tenant_id == tenant.id,
                    api_tokens.c.user_id == user_id,
                    api_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=utcnow())
            )
        log.warning("removed user %s from tenant %s", user_id, tenant.slug)

    def actor(
        self, tenant: Tenant, user_id: str, generation: int | None = None
    ) -> Actor | None:
        """Return the user as a member of ``tenant``, or None if not a member.

        With ``generation``, also return None unless it is the user's current
        session generation (a browser session that was signed in before the
        last password change or "sign out everywhere").
        """
        query = (
            sa.select(
                users.c.id,
                users.c.email,
                users.c.name,
                users.c.locale,
                memberships.c.role,
            )
            .join(memberships, memberships.c.user_id == users.c.id)
            .where(
                users.c.id == user_id,
                users.c.is_active.is_(True),
                memberships.c.tenant_id == tenant.id,
            )
        )
        if generation is not None:
            query = query.where(users.c.session_generation == generation)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        return Actor(
            user_id=row["id"],
            email=row["email"],
            name=row["name"],
            role=row["role"],
            locale=row["locale"],
            tenant_id=tenant.id,
        )

    def first_admin(self, tenant: Tenant) -> Actor | None:
        """Return the tenant's earliest-created admin, if any."""
        query = (
            sa.select(users.c.id)
            .join(memberships, memberships.c.user_id == users.c.id)
            .where(
                memberships.c.tenant_id == tenant.id,
                memberships.c.role == "admin",
                users.c.is_active.is_(True),
            )
            .order_by(users.c.created_at)
            .limit(1)
        )
        with self.engine.connect() as conn:
            user_id = conn.execute(query).scalar()
        return self.actor(tenant, user_id) if user_id else None

    def members_with_roles(self, tenant: Tenant, roles: Collection[str]) -> list[str]:
        """Return the ids of the active members of ``tenant`` holding one of
        ``roles``, in a stable order."""
        query = (
            sa.select(users.c.id)
            .join(memberships, memberships.c.user_id == users.c.id)
            .where(
                memberships.c.tenant_id == tenant.id,
                memberships.c.role.in_(list(roles)),
                users.c.is_active.is_(True),
            )
            .order_by(users.c.id)
        )
        with self.engine.connect() as conn:
            return [str(user_id) for user_id in conn.execute(query).scalars()]

    def authenticate(
        self, tenant: Tenant, email: str, password: str, client_address: str = ""
    ) -> Actor:
        """Return the member with these credentials or raise ``Unauthorized``.

        The error is the same for an unknown e-mail, a wrong password and a
        user of another tenant. Each failure is recorded, and an address with
        too many recent failures raises ``LockedOut`` before its password is
        checked. A success clears the address's failures.
        """
        email = email.strip().lower()
        now = utcnow()
        until = self.locked_until(email, now)
        if until is not None:
            log.warning(
                "rejected sign-in of e-mail %s to tenant %s from %s: locked out "
                "until %s",
                email_digest(email),
                tenant.slug,
                client_address or "-",
                until.isoformat(timespec="seconds"),
            )
            raise LockedOut(until, now)
        user_id = self._check_password(tenant, email, password)
        if user_id is None:
            self._record_failure(tenant, email, client_address, now)
            raise Unauthorized("invalid e-mail or password")
        actor = self.actor(tenant, user_id)
        if actor is None:
            self._record_failure(tenant, email, client_address, now)
            raise Unauthorized("invalid e-mail or password")
        self.clear_failed_logins(email)
        return actor

    def _check_password(self, tenant: Tenant, email: str, password: str) -> str | None:
        """Return the id of the user with this e-mail and password, else None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(users.c.id, users.c.password_hash).where(
                    users.c.email == email
                )
            ).first()
        if row is None or not row.password_hash:
            # Spend the same time as a real check so that timing does not
            # reveal which e-mail addresses exist.
            self.hasher.hash(password)
            return None
        try:
            self.hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        return str(row.id)

    # Failed sign-ins

    def locked_until(
        self, email: str, now: dt.datetime | None = None
    ) -> dt.datetime | None:
        """Return when the lockout of ``email`` ends, or None if it has none."""
        now = now or utcnow()
        email = email.strip().lower()
        since = now - FAILED_LOGIN_RETENTION
        query = sa.select(failed_logins.c.created_at).where(
            failed_logins.c.email == email,
            failed_logins.c.created_at > since,
        )
        operator_query = sa.select(operator_failed_logins.c.created_at).where(
            operator_failed_logins.c.email == email,
            operator_failed_logins.c.created_at > since,
        )
        with self.engine.connect() as conn:
            times = list(conn.execute(query).scalars())
            times += conn.execute(operator_query).scalars()
        end = lockout_end(times)
        return end if end is not None and end > now else None

    def _record_failure(
        self, tenant: Tenant, email: str, client_address: str, now: dt.datetime
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                failed_logins.delete().where(
                    failed_logins.c.created_at <= now - FAILED_LOGIN_RETENTION
                )
            )
            conn.execute(
                failed_logins.insert().values(
                    id=str(uuid7()),
                    email=email,
                    tenant_id=tenant.id,
                    client_address=client_address[:64],
                    created_at=now,
                )
            )
        user_id = self.find_user_id(email)
        log.warning(
            "failed sign-in of user %s (e-mail %s) to tenant %s from %s",
            user_id or "-",
            email_digest(email),
            tenant.slug,
            client_address or "-",
        )
        until = self.locked_until(email, now)
        if until is not None:
            log.warning(
                "locked out e-mail %s until %s after %s failed sign-ins, the last "
                "to tenant %s from %s",
                email_digest(email),
                until.isoformat(timespec="seconds"),
                MAX_FAILED_LOGINS,
                tenant.slug,
                client_address or "-",
            )

    def clear_failed_logins(self, email: str) -> int:
        """Delete the failed sign-ins of ``email``, which ends any lockout, and
        return how many there were."""
        email = email.strip().lower()
        with self.engine.begin() as conn:
            result = conn.execute(
                failed_logins.delete().where(failed_logins.c.email == email)
            )
            operator_result = conn.execute(
                operator_failed_logins.delete().where(
                    operator_failed_logins.c.email == email
                )
            )
        return int(result.rowcount) + int(operator_result.rowcount)

    # Password resets and the outbox

    def request_password_reset(self, tenant: Tenant, email: str) -> bool:
        """Create a reset token for a member of ``tenant`` and put the e-mail
        with its link in the outbox.

        Returns False, and writes nothing, if ``email`` is not an active
        member of ``tenant``. Only the token's SHA-256 digest is stored.
        """
        user_id = self.find_user_id(email)
        actor = self.actor(tenant, user_id) if user_id else None
        if actor is None:
            log.info(
                "ignored password-reset request for e-mail %s on tenant %s: not "
                "a member",
                email_digest(email),
                tenant.slug,
            )
            return False
        token = secrets.token_urlsafe(RESET_TOKEN_BYTES)
        now = utcnow()
        # NOTE: the link is a path because no public base URL is configured,
        # and building one from the request's Host header would let a client
        # point the link at another site.
        link = f"/t/{tenant.slug}/reset/{token}"
        minutes = int(RESET_TOKEN_LIFETIME.total_seconds() // 60)
        body = (
            f"Hello {actor.name},\n\n"
            f"someone asked to reset your password for {tenant.name}. To choose "
            f"a new password, open this link within {minutes} minutes:\n\n"
            f"{link}\n\n"
            "The link works once. If you did not ask for it, ignore this e-mail: "
            "your password stays as it is.\n"
        )
        with self.engine.begin() as conn:
            conn.execute(
                password_resets.insert().values(
                    token_hash=hash_token(token),
                    user_id=actor.user_id,
                    tenant_id=tenant.id,
                    created_at=now,
                    expires_at=now + RESET_TOKEN_LIFETIME,
                )
            )
            conn.execute(
                outbox.insert().values(
                    id=str(uuid7()),
                    recipient=actor.email,
                    subject=f"Reset your {tenant.name} password",
                    body=body,
                    created_at=now,
                )
            )
        log.warning(
            "created password-reset token for user %s on tenant %s",
            actor.user_id,
            tenant.slug,
        )
        return True

    def check_reset_token(self, tenant: Tenant, token: str) -> str:
        """Return the id of the user a usable reset token of ``tenant`` belongs
        to, or raise ``InvalidResetToken``."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(password_resets).where(
                    password_resets.c.token_hash == hash_token(token),
                    password_resets.c.tenant_id == tenant.id,
                )
            ).first()
        if row is None:
            raise InvalidResetToken("unknown")
        if row.used_at is not None:
            raise InvalidResetToken("used")
        if row.expires_at <= utcnow():
            raise InvalidResetToken("expired")
        return str(row.user_id)

    def reset_password(self, tenant: Tenant, token: str, password: str) -> str:
        """Set the password of a reset token's user, use up the token and
        return the user's id.

        Raises ``PasswordRejected`` for a password the policy rejects (the
        token stays usable) and ``InvalidResetToken`` for a token that is not.
        Every other unused token of the user is used up as well, and every
        session of the user ends.
        """
        user_id = self.check_reset_token(tenant, token)
        self.check_password_policy(password)
        now = utcnow()
        with self.engine.begin() as conn:
            # The conditional update makes the token single-use even when two
            # requests present it at the same time.
            claimed = conn.execute(
                password_resets.update()
                .where(
                    password_resets.c.token_hash == hash_token(token),
                    password_resets.c.used_at.is_(None),
                    password_resets.c.expires_at > now,
                )
                .values(used_at=now)
            )
            if claimed.rowcount != 1:
                raise InvalidResetToken("used")
            conn.execute(
                password_resets.update()
                .where(
                    password_resets.c.user_id == user_id,
                    password_resets.c.used_at.is_(None),
                )
                .values(used_at=now)
            )
            self._store_password(conn, user_id, password)
        log.warning("reset the password of user %s on tenant %s", user_id, tenant.slug)
        return user_id

    def outbox_messages(self) -> list[OutboxMessage]:
        """Return the outbox, oldest message first."""
        query = sa.select(outbox).order_by(outbox.c.created_at, outbox.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            OutboxMessage(
                recipient=row["recipient"],
                subject=row["subject"],
                body=row["body"],
                created_at=row["created_at"],
            )
            for row in rows
        ]

    # API tokens

    def create_token(
        self,
        tenant: Tenant,
        user_id: str,
        name: str = "api",
        expires_in: dt.timedelta | None = None,
    ) -> str:
        """Create an API token and return it; only its hash is stored."""
        if self.actor(tenant, user_id) is None:
            raise PlatformError(
                f"user {user_id!r} is not a member of tenant {tenant.slug!r}"
            )
        token = BEARER_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                api_tokens.insert().values(
                    id=str(uuid7()),
                    token_hash=hash_token(token),
                    user_id=user_id,
                    tenant_id=tenant.id,
                    name=name,
                    created_at=now,
                    expires_at=now + expires_in if expires_in else None,
                )
            )
        return token

    def member_for_token(self, slug: str, token: str) -> tuple[Tenant, Actor] | None:
        """Return the tenant and member of a token valid for tenant ``slug``."""
        parameters = {"token_hash": hash_token(token), "slug": slug, "now": utcnow()}
        with self.engine.connect() as conn:
            row = conn.execute(_TOKEN_QUERY, parameters).mappings().first()
        if row is None:
            return None
        tenant = _tenant_from(row)
        actor = Actor(
            user_id=row["user_id"],
            email=row["email"],
            name=row["user_name"],
            role=row["role"],
            locale=row["locale"],
            tenant_id=tenant.id,
        )
        return tenant, actor

    def revoke_token(self, token: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                api_tokens.update()
                .where(api_tokens.c.token_hash == hash_token(token))
                .values(revoked_at=utcnow())
            )
        return result.rowcount > 0

    def user_names(self, user_ids: set[str]) -> dict[str, str]:
        if not user_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(users.c.id, users.c.name).where(users.c.id.in_(user_ids))
            )
            return {row.id: row.name for row in rows}
