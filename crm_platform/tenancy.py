"""Tenants at run time: their databases, compiled metadata and schemas.

``Platform`` is the one object a process keeps: it opens the control plane,
hands out a ``TenantRuntime`` per tenant and notices, with one query per
request, when another process has applied new metadata. Where the tenants are
stored (SQLite files or PostgreSQL schemas) is up to its ``Backend``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from metadata_engine.loader import compile_documents, load_definition_cached
from metadata_engine.model import ADMIN_ROLE, Definition, Entity
from metadata_engine.tables import build_service_tables, build_tables
from metadata_engine.validation import RecordSchema, build_schema

from .backends import Backend, create_backend
from .config import Settings
from .control import Actor, ControlPlane, Tenant, tenants
from .crypto import install_key_ring
from .errors import NotFound, TenantError
from .migrations import apply_tables, plan_changes
from .permission_tests import check_permission_tests
from .rule_tests import check_rule_tests

if TYPE_CHECKING:
    from .records import RecordService

log = logging.getLogger(__name__)


@dataclass
class TenantRuntime:
    """One tenant's database engine, compiled definition and tables."""

    tenant: Tenant
    engine: sa.Engine
    definition: Definition
    tables: Mapping[str, sa.Table]
    _schemas: dict[tuple[str, str], RecordSchema] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.tenant.slug

    def entity(self, name: str) -> Entity:
        """Return the entity called ``name`` or raise ``NotFound``."""
        if not self.definition.has_entity(name):
            raise NotFound(f"entity {name!r} not found in tenant {self.slug!r}")
        return self.definition.entity(name)

    def table(self, name: str) -> sa.Table:
        self.entity(name)
        return self.tables[name]

    def schema(self, entity_name: str, locale: str) -> RecordSchema:
        """Return the validation schema of an entity, built once per locale."""
        key = (entity_name, locale)
        schema = self._schemas.get(key)
        if schema is None:
            schema = build_schema(self.entity(entity_name), locale)()
            self._schemas[key] = schema
        return schema


@dataclass
class _Compiled:
    """Table definitions and validation schemas of one definition hash."""

    metadata: sa.MetaData
    tables: Mapping[str, sa.Table] = field(default_factory=dict)
    schemas: dict[tuple[str, str], RecordSchema] = field(default_factory=dict)


class Platform:
    """Everything a process needs to serve many tenants."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Sensitive fields' column types encrypt with the process's key ring.
        self.key_ring = install_key_ring(settings)
        self.backend: Backend = create_backend(settings)
        self.control = ControlPlane.open(self.backend.control_engine())
        # Least recently used first; see ``_remember``.
        self._runtimes: OrderedDict[str, TenantRuntime] = OrderedDict()
        self._definitions: dict[str, Definition] = {}
        # Tables and validation schemas depend only on the definition, so
        # tenants on one template share them: a cached runtime then costs a
        # few objects, not thousands, and garbage collection stays short.
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.RLock()

    # Run time

    def runtime(self, slug: str) -> TenantRuntime:
        """Return the tenant's runtime, rebuilt only when its metadata changed."""
        tenant = self.control.find_tenant(slug)
        if tenant is None:
            raise NotFound(f"tenant {slug!r} not found")
        return self.runtime_for(tenant)

    def runtime_for(self, tenant: Tenant) -> TenantRuntime:
        """Return the runtime of a tenant row just read from the control
        plane, comparing its metadata hash with the cached runtime's."""
        slug = tenant.slug
        if tenant.metadata_hash is None:
            raise NotFound(f"tenant {slug!r} not found")
        cached = self._runtimes.get(slug)
        current = tenant.metadata_hash
        if cached is not None and cached.definition.content_hash == current:
            cached.tenant = tenant
            with self._lock:
                if slug in self._runtimes:
                    self._runtimes.move_to_end(slug)
            return cached
        with self._lock:
            runtime = self._build_runtime(tenant)
            self._remember(runtime)
        return runtime

    def _remember(self, runtime: TenantRuntime) -> None:
        """Cache ``runtime``, dropping the least recently used runtimes past
        ``Settings.runtime_cache_size`` so memory does not grow with the
        number of tenants. Call with ``_lock`` held."""
        self._runtimes[runtime.slug] = runtime
        self._runtimes.move_to_end(runtime.slug)
        while len(self._runtimes) > self.settings.runtime_cache_size:
            slug, _ = self._runtimes.popitem(last=False)
            self.backend.release_tenant(slug)
            log.info("dropped the cached runtime of tenant %s", slug)

    def _build_runtime(self, tenant: Tenant) -> TenantRuntime:
        engine = self.engine(tenant.slug)
        definition = self._definitions.get(tenant.metadata_hash or "")
        if definition is None:
            definition = self._load_stored_definition(engine, tenant)
            self._definitions[definition.content_hash] = definition
        compiled = self._compile(definition)
        self._check_storage(engine, tenant, compiled.metadata)
        log.info("loaded metadata %s for tenant %s", definition.content_hash[:12],
                 tenant.slug)
        return TenantRuntime(tenant=tenant, engine=engine, definition=definition,
                             tables=compiled.tables, _schemas=compiled.schemas)

    def _compile(self, definition: Definition) -> _Compiled:
        """Return the shared tables and schemas of ``definition``."""
        with self._lock:
            compiled = self._compiled.get(definition.content_hash)
            if compiled is None:
                compiled = _Compiled(sa.MetaData())
                compiled.tables = build_tables(definition, compiled.metadata)
                self._compiled[definition.content_hash] = compiled
        return compiled

    def _check_storage(
        self, engine: sa.Engine, tenant: Tenant, metadata: sa.MetaData
    ) -> None:
        """Refuse to serve a tenant whose tables no longer match its
        definition (a changed column type, for example after an upgrade that
        stores a type differently), since reads would misinterpret the data.
        Runs only when a runtime is built, not on every request."""
        with engine.connect() as conn:
            plan = plan_changes(conn, metadata)
        problems = plan.unsafe
        missing = [table for table in plan.new_tables if table.name.startswith("_")]
        if missing and not problems:
            # Service tables added by a newer version of the platform (the
            # change journal, for one): create them, with no data to move.
            with engine.begin() as conn:
                for table in missing:
                    table.create(conn, checkfirst=True)
            log.info("created %s for tenant %s",
                     ", ".join(table.name for table in missing), tenant.slug)
        if problems:
            log.error("storage of tenant %s does not match its definition: %s",
                      tenant.slug, "; ".join(problems))
            raise TenantError(
                f"the database of tenant {tenant.slug!r} does not match its "
                "definition: " + "; ".join(problems)
                + ". Restore a backup taken with this version, or re-create the "
                "tenant and import its data again",
            )

    def _load_stored_definition(self, engine: sa.Engine, tenant: Tenant) -> Definition:
        # A real Table, not sa.table(): only Table objects follow the
        # engine's schema_translate_map into the tenant's schema.
        service_tables = sa.MetaData()
        build_service_tables(service_tables)
        stored = service_tables.tables["_metadata"]
        query = sa.select(stored.c.documents).where(
            stored.c.content_hash == tenant.metadata_hash
        ).order_by(stored.c.version.desc()).limit(1)
        with engine.connect() as conn:
            documents = conn.execute(query).scalar()
        if documents is None:
            raise TenantError(
                f"tenant {tenant.slug!r} has no stored metadata with hash "
                f"{tenant.metadata_hash!r}: apply its definition again"
            )
        if isinstance(documents, str):
            documents = json.loads(documents)
        return compile_documents(documents)

    def records(
        self,
        runtime: TenantRuntime,
        actor: Actor,
        locale: str = "en",
        request_id: str | None = None,
    ) -> RecordService:
        """Return the record service of ``actor`` in ``runtime``'s tenant,
        able to check that a new owner is a member of that tenant."""
        from .records import RecordService

        def is_member(user_id: str) -> bool:
            return self.control.actor(runtime.tenant, user_id) is not None

        def role_members(roles: Collection[str]) -> list[str]:
            return self.control.members_with_roles(runtime.tenant, roles)

        return RecordService(
            runtime,
            actor,
            locale,
            is_member=is_member,
            request_id=request_id,
            role_members=role_members,
        )

    def automation_service(
        self, runtime: TenantRuntime, user_id: str, rule: str
    ) -> RecordService:
        """Return a record service in system context for the time rule
        ``rule``, acting for ``user_id``; its journal entries carry
        ``automation:RULE`` as their request id."""
        actor = Actor(
            user_id=user_id,
            email="",
            name=f"automation {rule}",
            role=ADMIN_ROLE,
            locale=runtime.definition.default_locale,
            tenant_id=runtime.tenant.id,
        )
        return self.records(
            runtime, actor, actor.locale, request_id=f"automation:{rule}"
        )

    def engine(self, slug: str) -> sa.Engine:
        """Return the engine that runs every query of tenant ``slug``."""
        return self.backend.tenant_engine(slug)

    # Provisioning

    def create_tenant(
        self, slug: str, template: str | Path, name: str | None = None
    ) -> TenantRuntime:
        """Create a tenant, its database or schema, and its tables from the
        definition at ``template``."""
        definition = load_definition_cached(template)
        tenant = self.control.create_tenant(slug, name)
        try:
            self.backend.create_tenant_storage(slug)
        except Exception:
            # The storage may belong to someone else (it existed already), so
            # only the control plane's row is removed.
            self._delete_tenant_row(tenant)
            raise
        try:
            return self.apply(slug, definition)
        except Exception:
            log.exception("provisioning tenant %s failed; removing it", slug)
            self.drop_tenant(tenant)
            raise

    def apply(
        self, slug: str, definition: Definition, applied_by: str | None = None
    ) -> TenantRuntime:
        """Create or update the tenant's tables to match ``definition``.

        Changes that would lose data raise ``UnsafeChange`` and change nothing,
        and so does a failed permission or rule test of the definition
        (``DefinitionError``).
        """
        tenant = self.control.get_tenant(slug)
        if tenant.metadata_hash == definition.content_hash:
            return self.runtime(slug)
        check_permission_tests(definition)
        check_rule_tests(definition)
        version = tenant.metadata_version + 1
        # The shared tables, not new ones: each engine's statement cache
        # would otherwise keep this tenant's copy alive.
        metadata = self._compile(definition).metadata
        with self.engine(slug).begin() as conn:
            apply_tables(conn, metadata)
            conn.execute(
                metadata.tables["_metadata"].insert().values(
                    version=version,
                    content_hash=definition.content_hash,
                    documents=dict(definition.documents),
                    applied_at=dt.datetime.now(dt.UTC),
                    applied_by=applied_by,
                )
            )
        self.control.record_metadata(tenant.id, definition.content_hash, version)
        self._definitions[definition.content_hash] = definition
        log.info("applied metadata %s to tenant %s as version %d",
                 definition.content_hash[:12], slug, version)
        return self.runtime(slug)

    def drop_tenant(self, tenant: Tenant) -> None:
        """Delete a tenant with its database or schema and every record in it.

        Used when provisioning fails; there is no command for live tenants.
        """
        self._runtimes.pop(tenant.slug, None)
        self.backend.drop_tenant_storage(tenant.slug)
        self._delete_tenant_row(tenant)
        log.info("dropped tenant %s", tenant.slug)

    def drop_storage(self, slug: str) -> None:
        """Delete tenant ``slug``'s database file or schema and forget its
        runtime, keeping its control-plane row. ``crm_platform.lifecycle``
        calls it to purge a tenant."""
        self._runtimes.pop(slug, None)
        self.backend.drop_tenant_storage(slug)
        log.warning("dropped the storage of tenant %s", slug)

    def _delete_tenant_row(self, tenant: Tenant) -> None:
        with self.control.engine.begin() as conn:
            conn.execute(tenants.delete().where(tenants.c.id == tenant.id))

    def dispose(self) -> None:
        self.backend.dispose()


def describe(runtime: TenantRuntime) -> dict[str, Any]:
    return {
        "tenant": runtime.slug,
        "metadata_hash": runtime.definition.content_hash,
        "entities": [entity.name for entity in runtime.definition.entities],
    }
