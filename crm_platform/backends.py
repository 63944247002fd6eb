"""Storage backends: one SQLite file or one PostgreSQL schema per tenant.

``Platform`` talks to a ``Backend`` and never to files or schemas directly.

- ``SQLiteBackend`` (the default) keeps the control plane in
  ``control.sqlite`` and each tenant in ``tenants/<slug>.sqlite`` under the
  data directory, with one engine per file.
- ``PostgresBackend`` keeps the control plane in the schema
  ``metacrm_control`` and each tenant in the schema ``tenant_<slug>`` (``-``
  becomes ``_``) of one database, behind one connection pool.

On PostgreSQL, every table definition is built without a schema and routed at
execution time by ``schema_translate_map`` (``{None: schema}``), set on an
``Engine`` copy per tenant made with ``Engine.execution_options()``. Such a
copy shares the pool and applies its options to each connection it checks
out, so a pooled connection carries no schema from one tenant's work into
another's. Three things are not routed and must name the schema themselves:
``text()`` SQL, lightweight ``sa.table()`` constructs, and ``Inspector``
calls (see ``connection_schema``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.sql.elements import quoted_name

from .config import Settings
from .errors import TenantError
from .sqlite import create_sqlite_engine

log = logging.getLogger(__name__)

CONTROL_SCHEMA = "metacrm_control"
TENANT_SCHEMA_PREFIX = "tenant_"
#: Connections kept open to PostgreSQL for all tenants together. The common
#: rule of thumb of twice the server's cores plus one gives 5 for a 2-core
#: server. NOTE: not measured here; raise it for larger servers.
POOL_SIZE = 5
#: Extra connections beyond ``POOL_SIZE`` under load. With them, the 8 threads
#: of ``metacrm serve`` do not wait for a connection as long as each thread
#: uses one connection at a time.
MAX_OVERFLOW = 5
#: Key of the PostgreSQL advisory lock that serializes first-run setup
#: between processes that start at the same time (an arbitrary constant).
SETUP_LOCK_KEY = 0x6D657461  # "meta"
#: SQLSTATE of PostgreSQL's ``duplicate_schema`` error.
DUPLICATE_SCHEMA = "42P06"


class Backend(Protocol):
    """Storage of the control plane and of each tenant's tables."""

    name: str

    def control_engine(self) -> sa.Engine:
        """Return the engine of the control plane, creating its storage."""
        ...

    def tenant_engine(self, slug: str) -> sa.Engine:
        """Return the engine through which every query of tenant ``slug`` runs."""
        ...

    def tenant_schema(self, slug: str) -> str | None:
        """Return the database schema of tenant ``slug``, or None if it has
        a database of its own."""
        ...

    def create_tenant_storage(self, slug: str) -> None:
        """Create the empty database or schema of a new tenant.

        Raises ``TenantError`` if it already exists, so that a new tenant
        never adopts data left behind by another.
        """
        ...

    def drop_tenant_storage(self, slug: str) -> None:
        """Delete the tenant's database or schema with all its records."""
        ...

    def release_tenant(self, slug: str) -> None:
        """Close the tenant's idle pooled connections, if it has a pool of
        its own; the next query opens new ones."""
        ...

    def dispose(self) -> None:
        """Close every pooled connection."""
        ...


def create_backend(settings: Settings) -> Backend:
    """Return the backend that ``settings.database_url`` selects: PostgreSQL
    for a ``postgresql`` URL, SQLite files in the data directory without one."""
    if not settings.database_url:
        return SQLiteBackend(settings.control_db_path, settings.tenants_dir)
    url = sa.make_url(settings.database_url)
    if url.get_backend_name() != "postgresql":
        raise TenantError(
            f"unsupported database URL scheme {url.drivername!r} in "
            "METACRM_DATABASE_URL: use postgresql+psycopg://USER@HOST/DATABASE, "
            "or unset it to keep SQLite files in the data directory"
        )
    return PostgresBackend(settings.database_url)


def tenant_schema_name(slug: str) -> str:
    """Return the PostgreSQL schema of tenant ``slug``.

    Slugs contain no underscore, so replacing ``-`` by ``_`` cannot make two
    slugs share a schema.
    """
    return TENANT_SCHEMA_PREFIX + slug.replace("-", "_")


def connection_schema(conn: sa.Connection) -> str | None:
    """Return the schema that ``conn`` routes unqualified tables to, if any.

    ``Inspector`` methods and Alembic operations ignore
    ``schema_translate_map``, so callers pass this schema to them explicitly.
    """
    options = conn.get_execution_options()
    mapping = options.get("schema_translate_map") or {}
    schema: str | None = mapping.get(None)
    return schema


def lock_for_setup(conn: sa.Connection) -> None:
    """Hold a lock until ``conn``'s transaction ends, so that processes that
    set up the same database at once take turns (a no-op on SQLite)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SETUP_LOCK_KEY)))


def _quoted(schema: str) -> quoted_name:
    """Return ``schema`` as an identifier that DDL always double-quotes."""
    return quoted_name(schema, quote=True)


class SQLiteBackend:
    """The control plane and every tenant in SQLite files of their own."""

    name = "sqlite"

    def __init__(self, control_path: Path, tenants_dir: Path) -> None:
        self.control_path = control_path
        self.tenants_dir = tenants_dir
        self._control: sa.Engine | None = None
        self._engines: dict[str, sa.Engine] = {}

    def tenant_path(self, slug: str) -> Path:
        return self.tenants_dir / f"{slug}.sqlite"

    def control_engine(self) -> sa.Engine:
        if self._control is None:
            self.control_path.parent.mkdir(parents=True, exist_ok=True)
            self._control = create_sqlite_engine(self.control_path)
        return self._control

    def tenant_engine(self, slug: str) -> sa.Engine:
        # dict.setdefault is atomic under the GIL, so two threads that race
        # here end up sharing one engine. The other engine has opened no
        # connection yet, so it needs no disposal.
        engine = self._engines.get(slug)
        if engine is None:
            engine = self._engines.setdefault(
                slug, create_sqlite_engine(self.tenant_path(slug))
            )
        return engine

    def tenant_schema(self, slug: str) -> str | None:
        return None

    def create_tenant_storage(self, slug: str) -> None:
        path = self.tenant_path(slug)
        if path.exists():
            raise TenantError(
                f"database file {str(path)!r} of new tenant {slug!r} already "
                "exists; move it away if it contains data you need, else delete it"
            )
        self.tenants_dir.mkdir(parents=True, exist_ok=True)

    def release_tenant(self, slug: str) -> None:
        engine = self._engines.pop(slug, None)
        if engine is not None:
            # Connections still checked out are closed when they return.
            engine.dispose()

    def drop_tenant_storage(self, slug: str) -> None:
        engine = self._engines.pop(slug, None)
        if engine is not None:
            engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.tenant_path(slug)}{suffix}").unlink(missing_ok=True)
        log.info("deleted the database files of tenant %s", slug)

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        if self._control is not None:
            self._control.dispose()


class PostgresBackend:
    """The control plane and every tenant in schemas of one PostgreSQL database."""

    name = "postgresql"

    def __init__(
        self, url: str, pool_size: int = POOL_SIZE, max_overflow: int = MAX_OVERFLOW
    ) -> None:
        self.base_engine = sa.create_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_pre_ping=True,
        )
        self._control: sa.Engine | None = None
        self._engines: dict[str, sa.Engine] = {}

    def _routed(self, schema: str) -> sa.Engine:
        return self.base_engine.execution_options(
            schema_translate_map={None: schema}
        )

    def control_engine(self) -> sa.Engine:
        if self._control is None:
            with self.base_engine.begin() as conn:
                lock_for_setup(conn)
                conn.execute(
                    sa.schema.CreateSchema(_quoted(CONTROL_SCHEMA), if_not_exists=True)
                )
            self._control = self._routed(CONTROL_SCHEMA)
        return self._control

    def tenant_engine(self, slug: str) -> sa.Engine:
        engine = self._engines.get(slug)
        if engine is None:
            engine = self._engines.setdefault(
                slug, self._routed(tenant_schema_name(slug))
            )
        return engine

    def tenant_schema(self, slug: str) -> str | None:
        return tenant_schema_name(slug)

    def create_tenant_storage(self, slug: str) -> None:
        schema = tenant_schema_name(slug)
        try:
            with self.base_engine.begin() as conn:
                conn.execute(sa.schema.CreateSchema(_quoted(schema)))
        except sa.exc.ProgrammingError as err:
            if getattr(err.orig, "sqlstate", None) != DUPLICATE_SCHEMA:
                raise
            raise TenantError(
                f"schema {schema!r} of new tenant {slug!r} already exists; "
                "rename it if it contains data you need, else drop it with "
                f'DROP SCHEMA "{schema}" CASCADE'
            ) from err
        log.info("created schema %s for tenant %s", schema, slug)

    def release_tenant(self, slug: str) -> None:
        # Tenant engines are copies sharing one pool, so there is nothing to
        # close; dropping the copy only saves its memory.
        self._engines.pop(slug, None)

    def drop_tenant_storage(self, slug: str) -> None:
        schema = tenant_schema_name(slug)
        self._engines.pop(slug, None)
        with self.base_engine.begin() as conn:
            conn.execute(
                sa.schema.DropSchema(_quoted(schema), cascade=True, if_exists=True)
            )
        log.info("dropped schema %s of tenant %s", schema, slug)

    def dispose(self) -> None:
        self.base_engine.dispose()
