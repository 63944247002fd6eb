"""The control plane: tenants, users, memberships and API tokens.

It lives apart from every tenant's records: in its own database
(``control.sqlite`` in the data directory) or, on PostgreSQL, in its own
schema (see ``crm_platform.backends``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from uuid_utils import uuid7

from .backends import lock_for_setup
from .errors import NotFound, PlatformError, TenantError, Unauthorized

log = logging.getLogger(__name__)

ROLES = ("admin", "sales_manager", "sales_rep", "service_agent", "read_only")
SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 10
BEARER_PREFIX = "mcrm_"

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


#: The tenant and member a token belongs to. It runs on every API request, so
#: it is built once, and one query returns both the tenant row and the user.
_TOKEN_QUERY = (
    sa.select(
        tenants,
        users.c.id.label("user_id"),
        users.c.email,
        users.c.name.label("user_name"),
        users.c.locale,
        memberships.c.role,
    )
    .select_from(api_tokens)
    .join(tenants, tenants.c.id == api_tokens.c.tenant_id)
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


def _tenant_from(row: sa.RowMapping) -> Tenant:
    return Tenant(
        id=row["id"],
        slug=row["slug"],
        name=row["name"],
        status=row["status"],
        metadata_hash=row["metadata_hash"],
        metadata_version=row["metadata_version"],
    )


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
        return cls(engine)

    # Tenants

    def create_tenant(self, slug: str, name: str | None = None) -> Tenant:
        if not SLUG_PATTERN.match(slug):
            raise TenantError(
                f"invalid tenant slug {slug!r}: use 2-40 lower-case letters, "
                "digits and hyphens, starting with a letter"
            )
        if self.find_tenant(slug) is not None:
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
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(tenants).where(tenants.c.slug == slug))
                .mappings()
                .first()
            )
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
            raise PlatformError(
                f"password too short: use at least {MIN_PASSWORD_LENGTH} characters"
            )
        if password.isdigit() or password.isalpha():
            raise PlatformError("password too weak: mix letters with digits or symbols")

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
        self.check_password_policy(password)
        with self.engine.begin() as conn:
            conn.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(password_hash=self.hasher.hash(password))
            )

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

    def add_member(self, tenant: Tenant, user_id: str, role: str) -> None:
        if role not in ROLES:
            raise PlatformError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        with self.engine.begin() as conn:
            conn.execute(
                memberships.delete().where(
                    memberships.c.tenant_id == tenant.id,
                    memberships.c.user_id == user_id,
                )
            )
            conn.execute(
                memberships.insert().values(
                    tenant_id=tenant.id, user_id=user_id, role=role
                )
            )

    def actor(self, tenant: Tenant, user_id: str) -> Actor | None:
        """Return the user as a member of ``tenant``, or None if not a member."""
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

    def authenticate(self, tenant: Tenant, email: str, password: str) -> Actor:
        """Return the member with these credentials or raise ``Unauthorized``.

        The error is the same for an unknown e-mail, a wrong password and a
        user of another tenant.
        """
        failure = Unauthorized("invalid e-mail or password")
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(users.c.id, users.c.password_hash).where(
                    users.c.email == email.strip().lower()
                )
            ).first()
        if row is None or not row.password_hash:
            # Spend the same time as a real check so that timing does not
            # reveal which e-mail addresses exist.
            self.hasher.hash(password)
            raise failure
        try:
            self.hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            log.info("failed login for user %s on tenant %s", row.id, tenant.slug)
            raise failure from None
        actor = self.actor(tenant, row.id)
        if actor is None:
            raise failure
        return actor

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
