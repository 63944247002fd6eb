"""Closing, reopening, purging and deleting tenants, on SQLite and PostgreSQL:
members are rejected while a tenant is closed, nothing is purged before its
retention period ends unless an export was written first, and a purge drops
the real database file or schema but keeps the tenant row as a tombstone."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from click.testing import CliRunner
from flask.testing import FlaskClient

from crm_platform.archive import Archive, ArchiveError, import_archive
from crm_platform.auth import check_not_suspended
from crm_platform.backends import connection_schema
from crm_platform.cli import main
from crm_platform.config import Settings, load_settings
from crm_platform.control import (
    ControlPlane,
    api_tokens,
    memberships,
    password_resets,
    tenants,
    utcnow,
    web_sessions,
)
from crm_platform.errors import Forbidden, TenantError
from crm_platform.lifecycle import (
    LifecycleError,
    check_export,
    close_tenant,
    delete_tenant,
    export_tenant,
    purge_due,
    purge_tenant,
    record_counts,
    reopen_tenant,
    storage_bytes,
)
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import STANDARD_CRM
from tests.test_web import sign_in

pytestmark = pytest.mark.both_backends

API = "/t/acme/api/v1/records/account"
LATER = dt.timedelta(days=31)


def storage_exists(platform: Platform, slug: str) -> bool:
    """Return whether the tenant's SQLite file or PostgreSQL schema exists."""
    schema = platform.backend.tenant_schema(slug)
    if schema is None:
        return platform.settings.tenant_db_path(slug).exists()
    query = sa.text("SELECT count(*) FROM pg_namespace WHERE nspname = :name")
    with platform.control.engine.connect() as conn:
        return bool(conn.execute(query, {"name": schema}).scalar_one())


def rows_of(platform: Platform, table: sa.Table, tenant_id: str) -> int:
    query = sa.select(sa.func.count()).select_from(table).where(
        table.c.tenant_id == tenant_id
    )
    with platform.control.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def add_accounts(records: RecordService, count: int) -> None:
    for number in range(count):
        records.create("account", {"name": f"Account {number}"})


# Closing and reopening


def test_close_rejects_members(
    platform: Platform, client: FlaskClient, auth: dict[str, str]
) -> None:
    assert sign_in(client).status_code == 302
    close_tenant(platform, "acme")
    api = client.get(API, headers=auth)
    home = client.get("/t/acme/")
    login = client.get("/t/acme/login")
    assert api.status_code == 403
    assert api.json is not None
    assert api.json["error"]["details"]["tenant_status"] == "closed"
    assert home.status_code == 403
    assert login.status_code == 403


def test_closed_tenant_check_message(platform: Platform, crm: TenantRuntime) -> None:
    close_tenant(platform, "acme")
    runtime = platform.runtime("acme")
    with pytest.raises(Forbidden, match="'acme' is closed: ask the service operator"):
        check_not_suspended(runtime)


def test_close_sets_purge_after(platform: Platform, crm: TenantRuntime) -> None:
    before = utcnow()
    closed = close_tenant(platform, "acme")
    assert closed.status == "closed"
    assert closed.status_before_close == "active"
    assert closed.closed_at is not None
    assert closed.purge_after is not None
    days = platform.settings.retention_days
    assert closed.purge_after - closed.closed_at == dt.timedelta(days=days)
    assert closed.closed_at >= before.replace(microsecond=0)


def test_close_keeps_the_data(
    platform: Platform, records: RecordService
) -> None:
    add_accounts(records, 3)
    close_tenant(platform, "acme")
    assert record_counts(platform.runtime("acme"))["account"] == 3
    assert storage_exists(platform, "acme")


def test_close_twice_rejected(platform: Platform, crm: TenantRuntime) -> None:
    close_tenant(platform, "acme")
    with pytest.raises(LifecycleError, match="'acme' is already closed"):
        close_tenant(platform, "acme")


def test_reopen_restores_access(
    platform: Platform, client: FlaskClient, auth: dict[str, str]
) -> None:
    close_tenant(platform, "acme")
    reopened = reopen_tenant(platform, "acme")
    assert reopened.status == "active"
    assert reopened.purge_after is None
    assert client.get(API, headers=auth).status_code == 200
    assert sign_in(client).status_code == 302


def test_reopen_restores_previous_status(
    platform: Platform, crm: TenantRuntime
) -> None:
    platform.control.set_status("acme", "suspended")
    close_tenant(platform, "acme")
    assert reopen_tenant(platform, "acme").status == "suspended"


def test_reopen_open_tenant_rejected(platform: Platform, crm: TenantRuntime) -> None:
    with pytest.raises(LifecycleError, match="'acme' is active, not closed"):
        reopen_tenant(platform, "acme")


def test_set_status_of_closed_rejected(platform: Platform, crm: TenantRuntime) -> None:
    close_tenant(platform, "acme")
    with pytest.raises(TenantError, match="metacrm tenant reopen acme"):
        platform.control.set_status("acme", "active")
    assert platform.control.get_tenant("acme").status == "closed"


# Purging


def test_purge_before_due_rejected(platform: Platform, crm: TenantRuntime) -> None:
    close_tenant(platform, "acme")
    with pytest.raises(LifecycleError, match="--now --export FILE"):
        purge_tenant(platform, "acme")
    assert platform.control.get_tenant("acme").status == "closed"
    assert storage_exists(platform, "acme")


def test_purge_open_tenant_rejected(platform: Platform, crm: TenantRuntime) -> None:
    with pytest.raises(LifecycleError, match="'acme' is active, not closed"):
        purge_tenant(platform, "acme", now=utcnow() + LATER)
    assert storage_exists(platform, "acme")


def test_purge_drops_storage(platform: Platform, records: RecordService) -> None:
    add_accounts(records, 2)
    close_tenant(platform, "acme")
    assert storage_exists(platform, "acme")
    tombstone = purge_tenant(platform, "acme", now=utcnow() + LATER)
    assert tombstone.status == "purged"
    assert tombstone.purged_at is not None
    assert tombstone.metadata_hash is None
    assert not storage_exists(platform, "acme")


def test_purge_removes_access_rows(
    platform: Platform, client: FlaskClient, auth: dict[str, str]
) -> None:
    tenant = platform.control.get_tenant("acme")
    assert sign_in(client).status_code == 302
    platform.control.request_password_reset(tenant, "admin@example.com")
    close_tenant(platform, "acme")
    purge_tenant(platform, "acme", now=utcnow() + LATER)
    for table in (memberships, api_tokens, web_sessions, password_resets):
        assert rows_of(platform, table, tenant.id) == 0, table.name
    assert client.get(API, headers=auth).status_code == 404
    assert client.get("/t/acme/").status_code == 404


def test_purge_due_purges_only_due(platform: Platform, crm: TenantRuntime) -> None:
    platform.create_tenant("globex", STANDARD_CRM)
    platform.create_tenant("initech", STANDARD_CRM)
    close_tenant(platform, "acme", now=utcnow() - LATER)
    close_tenant(platform, "globex")

    purged, failures = purge_due(platform)

    assert [tenant.slug for tenant in purged] == ["acme"]
    assert failures == []
    assert not storage_exists(platform, "acme")
    assert storage_exists(platform, "globex")
    assert storage_exists(platform, "initech")
    assert platform.control.get_tenant("globex").status == "closed"
    assert platform.control.get_tenant("initech").status == "active"


def test_purge_due_with_none_due(platform: Platform, crm: TenantRuntime) -> None:
    close_tenant(platform, "acme")
    assert purge_due(platform) == ([], [])


def test_tombstone_blocks_slug_reuse(platform: Platform, crm: TenantRuntime) -> None:
    close_tenant(platform, "acme", now=utcnow() - LATER)
    purge_due(platform)
    with pytest.raises(TenantError, match="'acme' was purged and its slug is kept"):
        platform.create_tenant("acme", STANDARD_CRM)
    assert platform.control.get_tenant("acme").status == "purged"
    assert not storage_exists(platform, "acme")


def test_purge_twice_drops_leftovers(platform: Platform, crm: TenantRuntime) -> None:
    close_tenant(platform, "acme", now=utcnow() - LATER)
    first = purge_tenant(platform, "acme")
    again = purge_tenant(platform, "acme")
    assert again.purged_at == first.purged_at
    assert not storage_exists(platform, "acme")


# Exports and deletes


def test_delete_writes_valid_export(
    platform: Platform, records: RecordService, tmp_path: Path
) -> None:
    add_accounts(records, 4)
    archive_path = tmp_path / "acme.zip"

    tombstone = delete_tenant(platform, "acme", archive_path)

    assert tombstone.status == "purged"
    assert not storage_exists(platform, "acme")
    with Archive(archive_path) as archive:
        assert archive.manifest.slug == "acme"
        assert archive.manifest.counts["account"] == 4
    counts = import_archive(platform, "acme-restored", archive_path)
    assert counts["account"] == 4


def test_delete_without_export(platform: Platform, crm: TenantRuntime) -> None:
    tombstone = delete_tenant(platform, "acme", None)
    assert tombstone.status == "purged"
    assert not storage_exists(platform, "acme")


def test_export_check_rejects_stale_archive(
    platform: Platform, records: RecordService, tmp_path: Path
) -> None:
    archive_path = tmp_path / "acme.zip"
    export_tenant(platform, "acme", archive_path)
    add_accounts(records, 1)
    with pytest.raises(ArchiveError, match="record counts"):
        check_export(platform, "acme", archive_path)


def test_storage_bytes_counts_data(platform: Platform, crm: TenantRuntime) -> None:
    assert storage_bytes(platform, "acme") > 0


# Configuration and upgrades


def test_retention_days_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METACRM_RETENTION_DAYS", "7")
    assert load_settings(tmp_path / "data").retention_days == 7


def test_invalid_retention_days_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METACRM_RETENTION_DAYS", "a month")
    with pytest.raises(ValueError, match="invalid METACRM_RETENTION_DAYS 'a month'"):
        load_settings(tmp_path / "data")


def test_retention_days_setting_used(settings: Settings, crm: TenantRuntime) -> None:
    short = Platform(dataclasses.replace(settings, retention_days=2))
    try:
        closed = close_tenant(short, "acme")
    finally:
        short.dispose()
    assert closed.purge_after is not None
    assert closed.closed_at is not None
    assert closed.purge_after - closed.closed_at == dt.timedelta(days=2)


def test_old_control_plane_upgraded(platform: Platform) -> None:
    """A control plane without the lifecycle and operator columns gets them."""
    engine = platform.control.engine
    dropped = [("tenants", "purge_after"), ("tenants", "purged_at"),
               ("tenants", "closed_at"), ("tenants", "status_before_close"),
               ("users", "is_operator")]
    with engine.begin() as conn:
        schema = connection_schema(conn)
        operations = Operations(MigrationContext.configure(conn))
        for table, column in dropped:
            operations.drop_column(table, column, schema=schema)
    ControlPlane.open(engine)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        present = {
            (table, column["name"])
            for table in ("tenants", "users")
            for column in inspector.get_columns(table, schema)
        }
    for item in dropped:
        assert item in present, item


# Command line


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("METACRM_DATA_DIR", str(tmp_path / "cli-data"))
    monkeypatch.delenv("METACRM_DATABASE_URL", raising=False)
    return CliRunner()


def run(runner: CliRunner, *args: str, code: int = 0) -> str:
    result = runner.invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_cli_close_and_reopen(runner: CliRunner) -> None:
    run(runner, "tenant", "create", "acme", "--template", str(STANDARD_CRM))
    closed = run(runner, "tenant", "close", "acme")
    reopened = run(runner, "tenant", "reopen", "acme")
    assert "tenant acme is closed; its data is kept until" in closed
    assert "tenant acme is active again" in reopened


def test_cli_purge_before_due_rejected(runner: CliRunner) -> None:
    run(runner, "tenant", "create", "acme", "--template", str(STANDARD_CRM))
    run(runner, "tenant", "close", "acme")
    rejected = run(runner, "tenant", "purge", "acme", code=1)
    without_export = run(runner, "tenant", "purge", "acme", "--now", code=1)
    assert "purge acme --now --export FILE" in rejected
    assert "--now deletes the data before" in without_export


def test_cli_purge_now_exports_first(runner: CliRunner, tmp_path: Path) -> None:
    archive_path = tmp_path / "acme.zip"
    run(runner, "tenant", "create", "acme", "--template", str(STANDARD_CRM))
    output = run(runner, "tenant", "purge", "acme", "--now", "--export",
                 str(archive_path))
    assert "wrote and checked the export of acme" in output
    assert "tenant acme is purged" in output
    with Archive(archive_path) as archive:
        assert archive.manifest.slug == "acme"


def test_cli_delete_needs_export_choice(runner: CliRunner) -> None:
    run(runner, "tenant", "create", "acme", "--template", str(STANDARD_CRM))
    rejected = run(runner, "tenant", "delete", "acme", code=1)
    deleted = run(runner, "tenant", "delete", "acme", "--without-export")
    assert "'acme' was not deleted because no export was requested" in rejected
    assert "tenant acme is purged" in deleted


def test_cli_delete_keeps_existing_file(runner: CliRunner, tmp_path: Path) -> None:
    taken = tmp_path / "taken.zip"
    taken.write_bytes(b"keep me")
    run(runner, "tenant", "create", "acme", "--template", str(STANDARD_CRM))
    output = run(runner, "tenant", "delete", "acme", "--export", str(taken), code=1)
    assert "already exists" in output
    assert taken.read_bytes() == b"keep me"


def test_cli_purge_due_prints_each(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METACRM_RETENTION_DAYS", "0")
    for slug in ("acme", "globex"):
        run(runner, "tenant", "create", slug, "--template", str(STANDARD_CRM))
    run(runner, "tenant", "close", "acme")
    output = run(runner, "tenant", "purge-due")
    listing = run(runner, "tenant", "list")
    assert "purged tenant acme" in output
    assert "globex" not in output
    assert "acme\tpurged" in listing
    assert "globex\tactive" in listing


def test_cli_grant_operator(runner: CliRunner) -> None:
    run(runner, "tenant", "create", "acme", "--template", str(STANDARD_CRM))
    result = runner.invoke(
        main,
        ["user", "create", "acme", "op@example.com", "--role", "admin",
         "--password-stdin", "--operator"],
        input="correct-horse-42\n",
    )
    revoked = run(runner, "user", "operator", "op@example.com", "--revoke")
    missing = run(runner, "user", "operator", "nobody@example.com", "--grant",
                  code=1)
    assert result.exit_code == 0, result.output
    assert "op@example.com is an operator" in result.output
    assert "op@example.com is no longer an operator" in revoked
    assert "user 'nobody@example.com' not found" in missing


def test_cli_tombstone_slug_rejected(runner: CliRunner) -> None:
    run(runner, "tenant", "create", "acme", "--template", str(STANDARD_CRM))
    run(runner, "tenant", "delete", "acme", "--without-export")
    output = run(runner, "tenant", "create", "acme", "--template",
                 str(STANDARD_CRM), code=1)
    assert "'acme' was purged" in output


def test_purged_tenant_row_kept(platform: Platform, crm: TenantRuntime) -> None:
    delete_tenant(platform, "acme", None)
    with platform.control.engine.connect() as conn:
        row = conn.execute(
            sa.select(tenants.c.status, tenants.c.name).where(tenants.c.slug == "acme")
        ).one()
    assert row.status == "purged"
    assert row.name == "Acme Ltd"


def test_purged_tenant_takes_no_members(
    platform: Platform, crm: TenantRuntime
) -> None:
    from crm_platform.billing import create_plan, run_billing, set_subscription
    from crm_platform.errors import PlatformError

    create_plan(platform.control, "team", "Team", seats=3)
    set_subscription(platform.control, "acme", "team", dt.date(2027, 1, 31))
    close_tenant(platform, "acme", now=utcnow() - LATER)
    purge_due(platform)
    tombstone = platform.control.get_tenant("acme")
    user_id = platform.control.create_user("late@example.com", "a long passphrase 9")
    with pytest.raises(TenantError, match="'acme' is purged, so it takes no members"):
        platform.control.add_member(tombstone, user_id, "admin")
    with pytest.raises(PlatformError, match="'acme' is purged, so it cannot be"):
        set_subscription(platform.control, "acme", "team", dt.date(2027, 1, 31))
    results = run_billing(platform.control, dt.date(2026, 12, 5))
    assert [result.tenant_slug for result in results] == []
