"""Plan features: the catalogue, the tenant's plan loaded with the tenant,
and the API, import and export refused on plans without them."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from crm_platform.billing import (
    FEATURES,
    create_plan,
    has_feature,
    require_feature,
    set_subscription,
)
from crm_platform.cli import main
from crm_platform.config import Settings
from crm_platform.control import Actor
from crm_platform.errors import LimitReached, PlatformError
from crm_platform.exporter import export
from crm_platform.importer import import_csv
from crm_platform.querying import ListQuery
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import ADMIN_EMAIL
from tests.test_web import post_form, sign_in

pytestmark = pytest.mark.both_backends

PAID_UNTIL = dt.date(2099, 12, 31)
Headers = dict[str, str]


def json_of(response: TestResponse) -> Any:
    """Return the JSON body of an API response."""
    return response.json


def subscribe(
    platform: Platform, features: list[str], record_quota: int | None = None
) -> None:
    create_plan(platform.control, "basic", "Basic", seats=5,
                record_quota=record_quota, features=features)
    set_subscription(platform.control, "acme", "basic", PAID_UNTIL)


def accounts_csv(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.csv"
    path.write_text("Name\nInitech\n", encoding="utf-8")
    return path


def run_cli(settings: Settings, *args: str) -> Result:
    env = {"METACRM_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["METACRM_DATABASE_URL"] = settings.database_url
    return CliRunner().invoke(main, list(args), input="", env=env)


# The catalogue and the tenant's plan


def test_create_plan_rejects_unknown_feature(platform: Platform) -> None:
    with pytest.raises(PlatformError,
                       match="unknown plan feature 'reports': use one or more of "
                             "api, import, export, audit_log"):
        create_plan(platform.control, "odd", "Odd", seats=1,
                    features=["api", "reports"])


def test_no_subscription_has_every_feature(crm: TenantRuntime) -> None:
    tenant = crm.tenant
    assert tenant.features is None
    assert tenant.record_quota is None
    for name in FEATURES:
        assert has_feature(tenant, name), name


def test_find_tenant_loads_plan(platform: Platform, crm: TenantRuntime) -> None:
    subscribe(platform, ["api", "export"], record_quota=50)
    tenant = platform.control.get_tenant("acme")
    assert tenant.features == frozenset({"api", "export"})
    assert tenant.record_quota == 50
    assert tenant.plan == "basic"


def test_token_query_loads_plan(
    platform: Platform, crm: TenantRuntime, token: str
) -> None:
    subscribe(platform, ["api"], record_quota=7)
    found = platform.control.member_for_token("acme", token)
    assert found is not None
    tenant, actor = found
    assert tenant.features == frozenset({"api"})
    assert tenant.record_quota == 7
    assert actor.email == ADMIN_EMAIL


def test_require_feature_names_plan(platform: Platform, crm: TenantRuntime) -> None:
    subscribe(platform, [])
    tenant = platform.control.get_tenant("acme")
    with pytest.raises(LimitReached,
                       match="the plan 'basic' of tenant 'acme' does not include "
                             "CSV import") as err:
        require_feature(tenant, "import")
    assert err.value.details == {"feature": "import", "plan": "basic"}
    assert err.value.code == "plan_limit"


def test_require_unknown_feature_fails(crm: TenantRuntime) -> None:
    with pytest.raises(PlatformError, match="unknown plan feature 'imports'"):
        require_feature(crm.tenant, "imports")


# The API


def test_api_off_gives_plan_limit(
    platform: Platform, client: FlaskClient, auth: Headers
) -> None:
    subscribe(platform, ["import"])
    response = client.get("/t/acme/api/v1/records/account", headers=auth)
    assert response.status_code == 403
    error = json_of(response)["error"]
    assert error["code"] == "plan_limit"
    assert error["details"] == {"feature": "api", "plan": "basic"}
    assert "does not include the REST API with tokens" in error["message"]


def test_api_off_still_checks_token(
    platform: Platform, client: FlaskClient, crm: TenantRuntime
) -> None:
    subscribe(platform, [])
    response = client.get("/t/acme/api/v1/records/account",
                          headers={"Authorization": "Bearer mcrm_invalid"})
    assert response.status_code == 401


def test_api_on_allows_requests(
    platform: Platform, client: FlaskClient, auth: Headers
) -> None:
    subscribe(platform, ["api"])
    response = client.get("/t/acme/api/v1/records/account", headers=auth)
    assert response.status_code == 200


# Import and export


def test_import_off_refused(
    platform: Platform, records: RecordService, tmp_path: Path
) -> None:
    subscribe(platform, ["api", "export"])
    service = platform.records(platform.runtime("acme"), records.actor)
    with pytest.raises(LimitReached, match="does not include CSV import"):
        import_csv(service, "account", accounts_csv(tmp_path))
    assert service.list("account", ListQuery()).records == []


def test_export_off_refused(platform: Platform, records: RecordService) -> None:
    subscribe(platform, ["api", "import"])
    service = platform.records(platform.runtime("acme"), records.actor)
    output = io.StringIO()
    with pytest.raises(LimitReached, match="does not include CSV and JSON export"):
        export(service, "account", output)
    assert output.getvalue() == ""


def test_export_on_writes(platform: Platform, records: RecordService) -> None:
    subscribe(platform, ["export"])
    records.create("account", {"name": "Initech"})
    service = platform.records(platform.runtime("acme"), records.actor)
    output = io.StringIO()
    assert export(service, "account", output) == 1


def test_cli_import_off_fails(
    platform: Platform, settings: Settings, admin: Actor, tmp_path: Path
) -> None:
    subscribe(platform, ["api"])
    result = run_cli(settings, "import", "acme", "account", str(accounts_csv(tmp_path)))
    assert result.exit_code == 1
    assert "does not include CSV import" in result.output


def test_cli_import_override(
    platform: Platform, settings: Settings, records: RecordService, tmp_path: Path
) -> None:
    subscribe(platform, ["api"])
    result = run_cli(settings, "import", "acme", "account",
                     str(accounts_csv(tmp_path)), "--ignore-plan")
    assert result.exit_code == 0, result.output
    stored = records.list("account", ListQuery()).records
    assert [row["name"] for row in stored] == ["Initech"]


def test_cli_export_off_fails(
    platform: Platform, settings: Settings, admin: Actor, tmp_path: Path
) -> None:
    subscribe(platform, ["api"])
    output = tmp_path / "accounts.csv"
    result = run_cli(settings, "export", "acme", "account", "-o", str(output))
    assert result.exit_code == 1
    assert "does not include CSV and JSON export" in result.output
    assert not output.exists()


def test_cli_export_override(
    platform: Platform, settings: Settings, admin: Actor, tmp_path: Path
) -> None:
    subscribe(platform, ["api"])
    output = tmp_path / "accounts.csv"
    result = run_cli(settings, "export", "acme", "account", "-o", str(output),
                     "--ignore-plan")
    assert result.exit_code == 0, result.output
    assert output.read_text(encoding="utf-8").startswith("id,")


# The record form


def test_record_form_shows_quota(
    platform: Platform, client: FlaskClient, records: RecordService
) -> None:
    subscribe(platform, ["api"], record_quota=1)
    records.create("account", {"name": "Initech"})
    assert sign_in(client).status_code == 302
    response = post_form(client, "/t/acme/account/new", {"f_name": "Globex"})
    assert response.status_code == 403
    assert "Your plan allows 1 records and this tenant has 1" in response.text
