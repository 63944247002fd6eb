"""Tenant status: suspended tenants are closed to members, read-only
tenants can be read but not changed, on every path."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from crm_platform.cli import main
from crm_platform.errors import Forbidden
from crm_platform.importer import import_csv
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.test_web import sign_in

BASE = "/t/acme/api/v1"


def set_status(platform: Platform, status: str) -> None:
    platform.control.set_status("acme", status)


def test_suspended_api_is_403(
    client: FlaskClient, auth: dict[str, str], platform: Platform
) -> None:
    set_status(platform, "suspended")
    response = client.get(f"{BASE}/records/account", headers=auth)
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["details"]["tenant_status"] == "suspended"
    assert "suspended" in error["message"]


def test_suspended_ui_is_403(
    client: FlaskClient, platform: Platform, crm: TenantRuntime, auth: dict[str, str]
) -> None:
    sign_in(client)
    set_status(platform, "suspended")
    assert client.get("/t/acme/").status_code == 403
    assert client.get("/t/acme/login").status_code == 403


def test_read_only_allows_reads(
    client: FlaskClient, auth: dict[str, str], platform: Platform
) -> None:
    created = client.post(f"{BASE}/records/account", json={"name": "Kept"},
                          headers=auth).get_json()["data"]
    set_status(platform, "read_only")
    assert client.get(f"{BASE}/records/account", headers=auth).status_code == 200
    denied = client.patch(f"{BASE}/records/account/{created['id']}",
                          json={"name": "Changed"}, headers=auth)
    assert denied.status_code == 403
    assert "read-only" in denied.get_json()["error"]["message"]
    assert client.post(f"{BASE}/records/account", json={"name": "New"},
                       headers=auth).status_code == 403
    assert client.delete(f"{BASE}/records/account/{created['id']}",
                         headers=auth).status_code == 403
    stored = client.get(f"{BASE}/records/account/{created['id']}", headers=auth)
    assert stored.get_json()["data"]["name"] == "Kept"


def test_read_only_blocks_import(
    tmp_path: Path, platform: Platform, records: RecordService
) -> None:
    set_status(platform, "read_only")
    records.runtime.tenant = platform.control.get_tenant("acme")
    path = tmp_path / "a.csv"
    path.write_text("name\nAcme\n", encoding="utf-8")
    with pytest.raises(Forbidden, match="read-only"):
        import_csv(records, "account", path)


def test_resume_restores_writes(
    client: FlaskClient, auth: dict[str, str], platform: Platform
) -> None:
    set_status(platform, "read_only")
    set_status(platform, "active")
    response = client.post(f"{BASE}/records/account", json={"name": "Back"},
                           headers=auth)
    assert response.status_code == 201


def test_cli_status_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import STANDARD_CRM

    monkeypatch.setenv("METACRM_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    assert runner.invoke(main, ["tenant", "create", "acme", "--template",
                                str(STANDARD_CRM)]).exit_code == 0
    suspended = runner.invoke(main, ["tenant", "suspend", "acme"])
    assert suspended.stdout.strip() == "tenant acme is suspended"
    listed = runner.invoke(main, ["tenant", "list"])
    assert "acme\tsuspended" in listed.output
    resumed = runner.invoke(main, ["tenant", "resume", "acme"])
    assert resumed.stdout.strip() == "tenant acme is active"
    missing = runner.invoke(main, ["tenant", "suspend", "nope"])
    assert missing.exit_code == 1
    assert "tenant 'nope' not found" in missing.output
