"""Hostile and out-of-range input: each gets a clear 4xx, never a 500, and
changes nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from crm_platform.cli import main
from crm_platform.exporter import csv_cell
from crm_platform.querying import ListQuery
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import ADMIN_PASSWORD, STANDARD_CRM, make_member
from tests.test_web import csrf_token

BASE = "/t/acme/api/v1"


def count_accounts(client: FlaskClient, auth: dict[str, str]) -> int:
    response = client.get(f"{BASE}/records/account?count=true", headers=auth)
    total: int = response.get_json()["total"]
    return total


def forged_cursor(values: list[Any]) -> str:
    raw = json.dumps(values).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("entity", "query"),
    [
        ("case", "opened_at__gt=9999-12-31T23:59:59-12:00"),
        ("account", "annual_revenue__gt=1e999999"),
        ("activity", "duration_minutes__gt=99999999999999999999999"),
        ("account", "sort=-created_at&cursor=" + forged_cursor([{"n": "1"}, "x"])),
        ("account", "sort=name&cursor=" + forged_cursor([1, 2])),
        ("account", "&".join(f"name__ne=v{i}" for i in range(60))),
    ],
)
def test_bad_list_query_is_400(
    client: FlaskClient, auth: dict[str, str], entity: str, query: str
) -> None:
    response = client.get(f"{BASE}/records/{entity}?{query}", headers=auth)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "invalid_query"


@pytest.mark.parametrize(
    "values",
    [
        {"name": "Nul\u0000byte"},
        {"name": "lone \ud800 surrogate"},
    ],
)
def test_unstorable_text_is_422(
    client: FlaskClient, auth: dict[str, str], values: dict[str, str]
) -> None:
    body = json.dumps(values)
    response = client.post(f"{BASE}/records/account", data=body,
                           content_type="application/json", headers=auth)
    assert response.status_code == 422
    assert "name" in response.get_json()["error"]["details"]
    assert count_accounts(client, auth) == 0


def test_datetime_overflowing_utc_is_422(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    body = {"subject": "Late", "type": "complaint", "priority": "low",
            "status": "new", "opened_at": "9999-12-31T23:59:59-12:00"}
    response = client.post(f"{BASE}/records/case", json=body, headers=auth)
    assert response.status_code == 422
    assert "opened_at" in response.get_json()["error"]["details"]


def test_owner_from_other_tenant_rejected(
    client: FlaskClient, auth: dict[str, str], platform: Platform,
    crm: TenantRuntime,
) -> None:
    platform.create_tenant("globex", STANDARD_CRM)
    outsider = make_member(platform, "globex", "spy@globex.example", "admin")
    response = client.post(f"{BASE}/records/account", headers=auth,
                           json={"name": "Owned", "owner_id": outsider.user_id})
    assert response.status_code == 422
    details = response.get_json()["error"]["details"]
    assert outsider.user_id in details["owner_id"][0]
    assert count_accounts(client, auth) == 0


def test_owner_member_accepted(
    client: FlaskClient, auth: dict[str, str], platform: Platform,
    crm: TenantRuntime,
) -> None:
    colleague = make_member(platform, "acme", "rep@acme.example", "sales_rep")
    response = client.post(f"{BASE}/records/account", headers=auth,
                           json={"name": "Owned", "owner_id": colleague.user_id})
    assert response.status_code == 201
    assert response.get_json()["data"]["owner_id"] == colleague.user_id


def test_login_next_with_newline(
    client: FlaskClient, platform: Platform, crm: TenantRuntime
) -> None:
    make_member(platform, "acme", "boss@acme.example", "admin")
    token = csrf_token(client.get("/t/acme/login").text)
    response = client.post(
        "/t/acme/login?next=/t/acme/%0d%0aSet-Cookie:x=1",
        data={"csrf_token": token, "email": "boss@acme.example",
              "password": ADMIN_PASSWORD},
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/t/acme/")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("+SUM(1;2)", "'+SUM(1;2)"),
        ("@foo", "'@foo"),
        ("-2+3", "'-2+3"),
        ("\t=1+1", "'\t=1+1"),
        ("plain", "plain"),
    ],
)
def test_csv_cell_defuses_formulas(value: str, expected: str) -> None:
    assert csv_cell(value) == expected


def test_csv_cell_keeps_negative_numbers() -> None:
    from decimal import Decimal

    assert csv_cell(Decimal("-2.50")) == "-2.50"


def test_validate_deep_nesting(tmp_path: Path) -> None:
    folder = tmp_path / "deep"
    (folder / "entities").mkdir(parents=True)
    (folder / "definition.json").write_text(
        (STANDARD_CRM / "definition.json").read_text(encoding="utf-8"),
        encoding="utf-8")
    (folder / "entities" / "x.json").write_text("[" * 100_000 + "]" * 100_000,
                                                encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(folder)])
    assert result.exit_code == 1
    assert "entities/x.json: JSON cannot be read: RecursionError" in result.output


def test_import_key_without_mapping(
    tmp_path: Path, records: RecordService
) -> None:
    from crm_platform.importer import import_csv

    path = tmp_path / "products.csv"
    path.write_text("name,code,unit_price\nRouter,R1,10\nSwitch,S1,20\n",
                    encoding="utf-8")
    first = import_csv(records, "product", path, key="code")
    second = import_csv(records, "product", path, key="code")
    assert first.created == 2
    assert second.created == 0
    assert second.unchanged == 2


def test_import_duplicate_headers(tmp_path: Path, records: RecordService) -> None:
    from crm_platform.importer import ImportFailed, import_csv

    path = tmp_path / "dup.csv"
    path.write_text("name,name\nA,B\n", encoding="utf-8")
    with pytest.raises(ImportFailed, match="duplicate column headers: name"):
        import_csv(records, "account", path)


def test_import_keep_existing(tmp_path: Path, records: RecordService) -> None:
    from crm_platform.importer import import_csv

    path = tmp_path / "products.csv"
    path.write_text("name,code\nRouter,R1\n", encoding="utf-8")
    import_csv(records, "product", path, key="code")
    (stored,) = records.list("product", ListQuery()).records
    records.update("product", stored["id"], {"name": "Edited router"})
    path.write_text("name,code\nRouter,R1\nHub,H1\n", encoding="utf-8")
    report = import_csv(records, "product", path, key="code", keep_existing=True)
    assert report.created == 1
    assert report.unchanged == 1
    assert records.get("product", stored["id"])["name"] == "Edited router"


def test_user_create_existing_with_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METACRM_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    for slug in ("acme", "globex"):
        result = runner.invoke(main, ["tenant", "create", slug, "--template",
                                      str(STANDARD_CRM)])
        assert result.exit_code == 0, result.output
    args = ["user", "create", "acme", "x@example.com", "--role", "admin",
            "--password-stdin"]
    assert runner.invoke(main, args, input=ADMIN_PASSWORD + "\n").exit_code == 0
    args[2] = "globex"
    again = runner.invoke(main, args, input="another-pass-99\n")
    assert again.exit_code == 1
    assert "already exists" in again.output
    added = runner.invoke(main, ["user", "create", "globex", "x@example.com",
                                 "--role", "read_only"])
    assert added.exit_code == 0, added.output


def test_mismatched_storage_refused(platform: Platform, crm: TenantRuntime) -> None:
    """A column whose stored type no longer matches its field is refused at
    load time instead of being read wrongly."""
    import sqlite3

    from crm_platform.errors import TenantError

    path = platform.settings.tenant_db_path("acme")
    platform.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE e_product DROP COLUMN unit_price")
        conn.execute("ALTER TABLE e_product ADD COLUMN unit_price REAL")
    fresh = Platform(platform.settings)
    try:
        with pytest.raises(TenantError, match="field 'unit_price' of entity "
                           "'product' is stored as decimal"):
            fresh.runtime("acme")
    finally:
        fresh.dispose()
