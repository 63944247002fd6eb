"""The end of a tenant's life: close, reopen, export, purge and delete.

A closed tenant rejects its members as a suspended one does and keeps all of
its data until ``purge_after`` (the close time plus ``Settings.retention_days``).
Until it is purged, ``reopen_tenant`` gives it back the status it had before.
Purging drops the tenant's SQLite file or PostgreSQL schema and removes its
memberships, API tokens, browser sessions, password resets, failed sign-ins
and subscription. The tenant row stays as a tombstone with status ``purged``
and ``purged_at``, so the slug is never reused and operators see what
happened. Seat-days stay as billing history.

Every step is logged at WARNING level with the tenant's slug.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from .archive import Archive, ArchiveError, Manifest, write_archive
from .control import (
    Actor,
    Tenant,
    api_tokens,
    failed_logins,
    memberships,
    password_resets,
    subscriptions,
    tenants,
    utcnow,
    web_sessions,
)
from .errors import TenantError
from .tenancy import Platform, TenantRuntime

log = logging.getLogger(__name__)

#: Statuses that ``close_tenant`` accepts.
CLOSABLE_STATUSES = ("active", "read_only", "suspended")
#: The id of the reader of an archive written with no member to act as.
#: Reading records checks no role or owner, so it needs no real user.
ARCHIVE_READER_ID = "operator"


class LifecycleError(TenantError):
    """A lifecycle step rejected because of the tenant's status or dates."""

    status = 409
    code = "lifecycle_conflict"


@dataclass(frozen=True)
class PurgeFailure:
    """A due tenant that ``purge_due`` could not purge, and why."""

    slug: str
    message: str


# Closing and reopening


def close_tenant(
    platform: Platform, slug: str, now: dt.datetime | None = None
) -> Tenant:
    """Close tenant ``slug``: reject its members, keep its data, and set
    ``purge_after`` to ``retention_days`` from now."""
    tenant = platform.control.get_tenant(slug)
    if tenant.status not in CLOSABLE_STATUSES:
        raise LifecycleError(_not_closable(tenant))
    now = now or utcnow()
    purge_after = now + dt.timedelta(days=platform.settings.retention_days)
    _update(
        platform,
        tenant,
        status="closed",
        status_before_close=tenant.status,
        closed_at=now,
        purge_after=purge_after,
    )
    log.warning(
        "closed tenant %s (was %s); its data is kept until %s, then "
        "'metacrm tenant purge-due' deletes it",
        slug,
        tenant.status,
        purge_after.isoformat(timespec="seconds"),
    )
    return platform.control.get_tenant(slug)


def _not_closable(tenant: Tenant) -> str:
    if tenant.status == "closed":
        return (
            f"tenant {tenant.slug!r} is already closed; its data may be purged "
            f"after {_when(tenant.purge_after)}"
        )
    return f"tenant {tenant.slug!r} is {tenant.status} and cannot be closed"


def reopen_tenant(platform: Platform, slug: str) -> Tenant:
    """Give a closed tenant back the status it had before it was closed.

    It works until the tenant is purged, also after ``purge_after``.
    """
    tenant = platform.control.get_tenant(slug)
    if tenant.status != "closed":
        raise LifecycleError(
            f"tenant {slug!r} is {tenant.status}, not closed: only a closed "
            "tenant can be reopened"
        )
    restored = tenant.status_before_close or "active"
    _update(
        platform,
        tenant,
        status=restored,
        status_before_close=None,
        closed_at=None,
        purge_after=None,
    )
    log.warning("reopened tenant %s; it is %s again", slug, restored)
    return platform.control.get_tenant(slug)


# Purging


def is_due(tenant: Tenant, now: dt.datetime | None = None) -> bool:
    """Return whether a closed tenant's retention period has passed."""
    if tenant.status != "closed" or tenant.purge_after is None:
        return False
    return (now or utcnow()) >= tenant.purge_after


def purge_tenant(
    platform: Platform,
    slug: str,
    now: dt.datetime | None = None,
    before_due: bool = False,
) -> Tenant:
    """Purge tenant ``slug`` and return its tombstone.

    Without ``before_due`` only a closed tenant past ``purge_after`` is
    purged. With it, a tenant in any status but ``purged`` is: callers pass it
    only after they have written and checked an export. The control plane is
    changed first, so members are rejected even if dropping the storage
    fails. Purging a tombstone again drops any storage that is left.
    """
    now = now or utcnow()
    tenant = platform.control.get_tenant(slug)
    if tenant.status == "purged":
        platform.drop_storage(slug)
        log.warning("tenant %s was already purged; dropped any storage left", slug)
        return tenant
    if not before_due:
        check_due(tenant, now)
    _remove_from_control_plane(platform, tenant, now)
    try:
        platform.drop_storage(slug)
    except Exception:
        log.exception(
            "purged tenant %s from the control plane, but dropping its storage "
            "failed: run 'metacrm tenant purge %s' again",
            slug,
            slug,
        )
        raise
    log.warning(
        "purged tenant %s (was %s): storage, memberships, tokens and sessions "
        "removed; the tenant row is kept as a tombstone",
        slug,
        tenant.status,
    )
    return platform.control.get_tenant(slug)


def check_due(tenant: Tenant, now: dt.datetime) -> None:
    slug = tenant.slug
    if tenant.status != "closed":
        raise LifecycleError(
            f"tenant {slug!r} is {tenant.status}, not closed: close it with "
            f"'metacrm tenant close {slug}' and purge it after the retention "
            f"period, or run 'metacrm tenant delete {slug} --export FILE'"
        )
    if not is_due(tenant, now):
        raise LifecycleError(
            f"tenant {slug!r} is kept until {_when(tenant.purge_after)}: purge it "
            f"then, or now with 'metacrm tenant purge {slug} --now --export FILE'"
        )


def _remove_from_control_plane(
    platform: Platform, tenant: Tenant, now: dt.datetime
) -> None:
    """Turn the tenant row into a tombstone and delete every row that gives
    anyone access to the tenant, in one transaction."""
    owned = (
        memberships,
        api_tokens,
        web_sessions,
        password_resets,
        failed_logins,
        subscriptions,
    )
    with platform.control.engine.begin() as conn:
        for table in owned:
            conn.execute(table.delete().where(table.c.tenant_id == tenant.id))
        conn.execute(
            tenants.update()
            .where(tenants.c.id == tenant.id)
            .values(status="purged", purged_at=now, metadata_hash=None)
        )


def purge_due(
    platform: Platform, now: dt.datetime | None = None
) -> tuple[list[Tenant], list[PurgeFailure]]:
    """Purge every closed tenant past its ``purge_after``.

    Returns the tombstones of the purged tenants and the tenants that failed;
    one failure does not stop the others.
    """
    now = now or utcnow()
    purged: list[Tenant] = []
    failures: list[PurgeFailure] = []
    for tenant in platform.control.list_tenants():
        if not is_due(tenant, now):
            continue
        try:
            purged.append(purge_tenant(platform, tenant.slug, now))
        except Exception as err:
            # Reported to the caller, so that the other due tenants are purged.
            log.exception("purging due tenant %s failed", tenant.slug)
            failures.append(PurgeFailure(tenant.slug, str(err)))
    return purged, failures


# Exports before a purge


def archive_reader(platform: Platform, tenant: Tenant) -> Actor:
    """Return the member an export reads records as: the first admin, else
    an operator identity that exists only for the export."""
    admin = platform.control.first_admin(tenant)
    if admin is not None:
        return admin
    return Actor(
        user_id=ARCHIVE_READER_ID,
        email="",
        name="operator",
        role="admin",
        locale="en",
        tenant_id=tenant.id,
    )


def export_tenant(
    platform: Platform, slug: str, output: Path, actor: Actor | None = None
) -> Manifest:
    """Write tenant ``slug``'s export archive to ``output`` and check it.

    The check opens the archive as an import would (member names, sizes,
    manifest, SHA-256 of every member) and compares its record counts with
    the tenant's tables, so a purge never follows an incomplete export.
    """
    tenant = platform.control.get_tenant(slug)
    if tenant.status == "purged":
        raise LifecycleError(f"tenant {slug!r} is purged: there is nothing to export")
    reader = actor or archive_reader(platform, tenant)
    manifest = write_archive(platform, slug, output, reader, "export")
    check_export(platform, slug, output)
    log.warning(
        "exported tenant %s to %s: %s records", slug, output,
        sum(manifest.counts.values()),
    )
    return manifest


def check_export(platform: Platform, slug: str, path: Path) -> None:
    """Raise ``ArchiveError`` unless ``path`` is an intact export of
    ``slug`` with as many records per entity as the tenant has now."""
    expected = record_counts(platform.runtime(slug))
    with Archive(path) as archive:
        manifest = archive.manifest
    if manifest.slug != slug:
        raise ArchiveError(
            f"archive {str(path)!r} is of tenant {manifest.slug!r}, not {slug!r}: "
            "export again"
        )
    if manifest.counts != expected:
        raise ArchiveError(
            f"archive {str(path)!r} has record counts {manifest.counts!r} but "
            f"tenant {slug!r} has {expected!r}: export again while nobody writes"
        )


def delete_tenant(
    platform: Platform, slug: str, export: Path | None, actor: Actor | None = None
) -> Tenant:
    """Export tenant ``slug`` to ``export``, check the archive and purge the
    tenant at once, whatever its status. ``export=None`` skips the export;
    callers pass it only when the user asked for that explicitly."""
    tenant = platform.control.get_tenant(slug)
    if tenant.status == "purged":
        raise LifecycleError(f"tenant {slug!r} is already purged")
    if export is not None:
        export_tenant(platform, slug, export, actor)
    else:
        log.warning("deleting tenant %s without an export, as requested", slug)
    return purge_tenant(platform, slug, before_due=True)


# Reading


def record_counts(runtime: TenantRuntime) -> dict[str, int]:
    """Return the number of records of each entity of a tenant."""
    counts: dict[str, int] = {}
    with runtime.engine.connect() as conn:
        for entity in runtime.definition.entities:
            table = runtime.tables[entity.name]
            query = sa.select(sa.func.count()).select_from(table)
            counts[entity.name] = int(conn.execute(query).scalar_one())
    return counts


def storage_bytes(platform: Platform, slug: str) -> int:
    """Return the bytes tenant ``slug`` takes on disk: its SQLite file with
    the WAL, or every table, index and TOAST table of its PostgreSQL schema."""
    schema = platform.backend.tenant_schema(slug)
    if schema is None:
        base = platform.settings.tenant_db_path(slug)
        paths = [Path(f"{base}{suffix}") for suffix in ("", "-wal", "-shm")]
        return sum(path.stat().st_size for path in paths if path.exists())
    query = sa.text(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relkind IN ('r', 'm')"
    )
    with platform.engine(slug).connect() as conn:
        return int(conn.execute(query, {"schema": schema}).scalar_one())


def _update(platform: Platform, tenant: Tenant, **values: object) -> None:
    with platform.control.engine.begin() as conn:
        conn.execute(tenants.update().where(tenants.c.id == tenant.id).values(**values))


def _when(moment: dt.datetime | None) -> str:
    return moment.isoformat(timespec="seconds") + " UTC" if moment else "an unset time"
