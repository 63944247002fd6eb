"""The record quota of a plan: writes that would pass it are rejected with a
clear error on every path, and tenants without a quota have no limit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from crm_platform.billing import FEATURES, create_plan, set_subscription
from crm_platform.errors import LimitReached
from crm_platform.importer import ColumnMapping, import_csv
from crm_platform.querying import ListQuery
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.test_web import post_form, sign_in

pytestmark = pytest.mark.both_backends

BASE = "/t/acme/api/v1"


def limit_records(platform: Platform, quota: int) -> None:
    create_plan(platform.control, "small", "Small", seats=5, record_quota=quota,
                features=list(FEATURES))
    until = dt.date.today() + dt.timedelta(days=30)
    set_subscription(platform.control, "acme", "small", until)


def service_for(platform: Platform, records: RecordService) -> RecordService:
    """Return the record service on a freshly read tenant row, as a request
    would see it after the subscription changed."""
    runtime = platform.runtime("acme")
    return RecordService(runtime, records.actor)


def test_quota_stops_creates(platform: Platform, records: RecordService) -> None:
    limit_records(platform, 3)
    service = service_for(platform, records)
    service.create("account", {"name": "One"})
    service.create("contact", {"name": "Two"})
    service.create("account", {"name": "Three"})
    with pytest.raises(LimitReached, match="stores 3 of the 3 records") as caught:
        service.create("account", {"name": "Four"})
    assert caught.value.details == {"record_quota": 3, "records": 3, "adding": 1}
    assert len(service.list("account", _everything()).records) == 2


def test_delete_frees_quota(platform: Platform, records: RecordService) -> None:
    limit_records(platform, 1)
    service = service_for(platform, records)
    first = service.create("account", {"name": "One"})
    service.delete("account", first["id"])
    service.create("account", {"name": "Again"})
    with pytest.raises(LimitReached):
        service.create("account", {"name": "Too many"})


def test_no_subscription_no_quota(records: RecordService) -> None:
    for number in range(5):
        records.create("account", {"name": f"Account {number}"})
    assert len(records.list("account", _everything()).records) == 5


def test_import_over_quota_rejected(
    platform: Platform, records: RecordService, tmp_path: Path
) -> None:
    limit_records(platform, 4)
    service = service_for(platform, records)
    service.create("account", {"name": "Existing"})
    rows = [{"name": f"Imported {number}"} for number in range(4)]
    with pytest.raises(LimitReached, match="so 4 more do not fit"):
        service.import_batch("account", rows)
    assert len(service.list("account", _everything()).records) == 1
    result = service.import_batch("account", rows[:3])
    assert result.created == 3


def test_import_csv_reports_quota(
    platform: Platform, records: RecordService, tmp_path: Path
) -> None:
    limit_records(platform, 2)
    path = tmp_path / "accounts.csv"
    path.write_text("name\nA\nB\nC\n", encoding="utf-8")
    service = service_for(platform, records)
    with pytest.raises(LimitReached, match="record quota reached"):
        mapping = ColumnMapping(entity="account", columns={"name": ["name"]})
        import_csv(service, "account", path, mapping)


def test_api_quota_error(
    platform: Platform, client: FlaskClient, auth: dict[str, str]
) -> None:
    limit_records(platform, 1)
    first = client.post(f"{BASE}/records/account", json={"name": "A"}, headers=auth)
    assert first.status_code == 201
    second = client.post(f"{BASE}/records/account", json={"name": "B"}, headers=auth)
    assert second.status_code == 403
    error = second.get_json()["error"]
    assert error["code"] == "plan_limit"
    assert error["details"]["record_quota"] == 1
    assert "move the tenant to a plan with a larger quota" in error["message"]


def test_form_shows_quota_error(
    platform: Platform, client: FlaskClient, crm: TenantRuntime,
    records: RecordService,
) -> None:
    limit_records(platform, 1)
    service_for(platform, records).create("account", {"name": "Only one"})
    sign_in(client)
    response = post_form(client, "/t/acme/account/new", {"f_name": "One too many"})
    assert response.status_code == 403
    assert "Your plan allows 1 records" in response.text


def _everything() -> ListQuery:
    return ListQuery(limit=100)
