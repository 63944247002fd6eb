"""The change journal: every record write appends to it in its transaction,
and the history page, the audit log and archives read it back."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from crm_platform import journal
from crm_platform.archive import restore_archive, write_archive
from crm_platform.control import Actor
from crm_platform.errors import Conflict, RecordInvalid, VersionConflict
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import make_member
from tests.test_web import sign_in

pytestmark = pytest.mark.both_backends

BASE = "/t/acme/api/v1"


def entries(runtime: TenantRuntime) -> list[journal.Entry]:
    """Return every journal entry, oldest first."""
    with runtime.engine.connect() as conn:
        return journal.entries_after(conn, 0, limit=journal.MAX_PAGE)


def test_create_journals_values(records: RecordService, admin: Actor) -> None:
    record = records.create(
        "account", {"name": "Acme", "annual_revenue": "1200.5", "industry": "retail"}
    )
    [entry] = entries(records.runtime)
    assert entry.seq == 1
    assert entry.action == "create"
    assert entry.entity == "account"
    assert entry.record_id == record["id"]
    assert entry.actor_id == admin.user_id
    assert entry.version == 1
    assert entry.changes["name"] == [None, "Acme"]
    assert entry.changes["annual_revenue"] == [None, "1200.50"]
    assert entry.changes["owner_id"] == [None, admin.user_id]


def test_update_journals_only_changes(records: RecordService) -> None:
    record = records.create("account", {"name": "Acme", "industry": "retail"})
    records.update("account", record["id"], {"name": "Acme Ltd", "industry": "retail"})
    update = entries(records.runtime)[-1]
    assert update.action == "update"
    assert update.version == 2
    assert update.changes == {"name": ["Acme", "Acme Ltd"]}


def test_delete_journals_last_values(records: RecordService) -> None:
    record = records.create("account", {"name": "Gone"})
    records.delete("account", record["id"])
    deleted = entries(records.runtime)[-1]
    assert deleted.action == "delete"
    assert deleted.changes["name"] == ["Gone", None]
    assert deleted.version is None


def test_failed_write_journals_nothing(records: RecordService) -> None:
    record = records.create("account", {"name": "Acme"})
    with pytest.raises(VersionConflict):
        records.update("account", record["id"], {"name": "B"}, expected_version=7)
    with pytest.raises(RecordInvalid):
        records.create("account", {"name": ""})
    records.create("account", {"name": "Next"})
    numbers = [entry.seq for entry in entries(records.runtime)]
    assert numbers == [1, 2]


def test_unique_conflict_rolls_back_entry(
    platform: Platform, records: RecordService
) -> None:
    first = records.create("product", {"name": "Widget", "code": "W-1"})
    second = records.create("product", {"name": "Gadget"})
    with pytest.raises(Conflict):
        records.update("product", second["id"], {"code": "W-1"})
    journaled = entries(records.runtime)
    assert [entry.record_id for entry in journaled] == [first["id"], second["id"]]


def test_cascade_delete_journals_children(records: RecordService) -> None:
    survey = records.create("survey", {"name": "Q4"})
    contact = records.create("contact", {"name": "Li Lei"})
    response = records.create(
        "survey_response",
        {"name": "Reply", "survey": survey["id"], "score": 4, "contact": contact["id"]},
    )
    records.delete("contact", contact["id"])
    records.delete("survey", survey["id"])
    journaled = entries(records.runtime)
    set_null = journaled[-4]
    assert set_null.record_id == response["id"]
    assert set_null.changes == {"contact": [contact["id"], None]}
    cascaded = journaled[-2]
    assert (cascaded.action, cascaded.record_id) == ("delete", response["id"])
    assert journaled[-1].record_id == survey["id"]


def test_import_batch_journals_written_rows(records: RecordService) -> None:
    rows: list[dict[str, Any]] = [
        {"name": "One", "code": "N-1"},
        {"name": "Two", "code": "N-2"},
    ]
    records.import_batch("product", rows, key="code")
    rows[0]["name"] = "One renamed"
    result = records.import_batch("product", rows, key="code")
    assert (result.updated, result.unchanged) == (1, 1)
    journaled = entries(records.runtime)
    assert [entry.action for entry in journaled] == ["create", "create", "update"]
    assert journaled[-1].changes == {"name": ["One", "One renamed"]}
    assert journaled[-1].version == 2


def test_import_fallback_skips_failed_rows(records: RecordService) -> None:
    records.create("product", {"name": "Taken", "code": "T-1"})
    rows = [{"name": "Clash", "code": "T-1"}, {"name": "Fine"}]
    result = records.import_batch("product", rows)
    assert result.created == 1
    journaled = entries(records.runtime)
    assert len(journaled) == 2
    assert journaled[-1].changes["name"] == [None, "Fine"]


def test_concurrent_writers_number_without_gaps(
    platform: Platform, crm: TenantRuntime, admin: Actor
) -> None:
    record = RecordService(crm, admin).create("account", {"name": "Start"})
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        service = RecordService(crm, admin)
        try:
            for step in range(5):
                service.update("account", record["id"], {"name": f"w{worker}-{step}"})
                service.create("account", {"name": f"new {worker}-{step}"})
        except BaseException as err:  # reported by the assert below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    numbers = [entry.seq for entry in entries(crm)]
    assert numbers == list(range(1, 42))
    versions = [entry.version for entry in entries(crm) if entry.action == "update"]
    assert versions == list(range(2, 22))


def test_journal_survives_backup_restore(
    platform: Platform, records: RecordService, admin: Actor, tmp_path: Path
) -> None:
    record = records.create("account", {"name": "Kept"})
    records.update("account", record["id"], {"name": "Kept 2"})
    archive = tmp_path / "backup.zip"
    write_archive(platform, "acme", archive, admin, kind="backup")
    records.update("account", record["id"], {"name": "After backup"})
    restore_archive(platform, "acme", archive)
    assert [entry.seq for entry in entries(records.runtime)] == [1, 2]
    records.update("account", record["id"], {"name": "After restore"})
    assert entries(records.runtime)[-1].seq == 3


def test_api_history_lists_entries(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    created = client.post(
        f"{BASE}/records/account", json={"name": "Acme"},
        headers={**auth, "X-Request-ID": "req-journal-1"},
    ).get_json()["data"]
    client.patch(f"{BASE}/records/account/{created['id']}", json={"name": "Acme 2"},
                 headers=auth)
    response = client.get(f"{BASE}/records/account/{created['id']}/history",
                          headers=auth)
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert [item["action"] for item in data] == ["update", "create"]
    assert data[0]["changes"] == {"name": ["Acme", "Acme 2"]}
    assert data[1]["request_id"] == "req-journal-1"


def test_api_history_of_unknown_record(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    response = client.get(f"{BASE}/records/account/nope/history", headers=auth)
    assert response.status_code == 404


def test_api_audit_filters(
    platform: Platform, client: FlaskClient, auth: dict[str, str], admin: Actor
) -> None:
    client.post(f"{BASE}/records/account", json={"name": "One"}, headers=auth)
    client.post(f"{BASE}/records/account", json={"name": "Two", "industry": "retail"},
                headers=auth)
    client.post(f"{BASE}/records/contact", json={"name": "Wu Fang"}, headers=auth)
    response = client.get(f"{BASE}/audit?entity=contact", headers=auth)
    assert [item["entity"] for item in response.get_json()["data"]] == ["contact"]
    by_field = client.get(f"{BASE}/audit?field=industry", headers=auth).get_json()
    assert len(by_field["data"]) == 1
    paged = client.get(f"{BASE}/audit?limit=2", headers=auth).get_json()
    assert len(paged["data"]) == 2
    assert "before_seq=2" in paged["next"]
    rest = client.get(paged["next"], headers=auth).get_json()
    assert [item["seq"] for item in rest["data"]] == [1]


def test_api_audit_bad_filter(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get(f"{BASE}/audit?since=yesterday", headers=auth)
    assert response.status_code == 400
    assert "'yesterday'" in response.get_json()["error"]["message"]
    hostile = client.get(f"{BASE}/audit?field=name')--", headers=auth)
    assert hostile.status_code == 400


def test_api_audit_refuses_non_admin(
    platform: Platform, client: FlaskClient, crm: TenantRuntime
) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    token = platform.control.create_token(crm.tenant, rep.user_id)
    response = client.get(
        f"{BASE}/audit", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403


def test_history_page_shows_changes(
    client: FlaskClient, records: RecordService
) -> None:
    record = records.create("account", {"name": "<b>Acme</b>", "industry": "retail"})
    records.update("account", record["id"], {"industry": "finance"})
    sign_in(client)
    page = client.get(f"/t/acme/account/{record['id']}/history")
    assert page.status_code == 200
    assert "&lt;b&gt;Acme&lt;/b&gt;" in page.text
    assert "<b>Acme</b>" not in page.text
    assert 'data-field="industry"' in page.text
    assert "Finance" in page.text


def test_audit_page_for_admin_only(
    platform: Platform, client: FlaskClient, records: RecordService
) -> None:
    records.create("account", {"name": "Audited"})
    sign_in(client)
    page = client.get("/t/acme/audit?entity=account")
    assert page.status_code == 200
    assert "Audited" in page.text
    make_member(platform, "acme", "agent@example.com", "service_agent")
    other = client.application.test_client()
    sign_in(other, email="agent@example.com")
    assert other.get("/t/acme/audit").status_code == 403


def test_journal_table_created_for_old_tenant(
    platform: Platform, crm: TenantRuntime, admin: Actor
) -> None:
    with crm.engine.begin() as conn:
        journal.JOURNAL.drop(conn)
    platform._runtimes.clear()
    runtime = platform.runtime("acme")
    RecordService(runtime, admin).create("account", {"name": "After upgrade"})
    assert len(entries(runtime)) == 1


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("since=2026-12-05&until=2026-12-01", "is after 'until'"),
        ("limit=100000000", "use a number from 1 to 200"),
        ("before_seq=-1", "use a whole number of 1 or more"),
        ("before_seq=%EF%BC%90%EF%BC%91", "use a whole number of 1 or more"),
        ("since=2026-W49-5", "use YYYY-MM-DD"),
        ("field=" + "x" * 20_000, "use at most 63 characters"),
        ("actor=nobody@example.org", "no user has the e-mail address"),
    ],
)
def test_api_audit_rejects_bad_filters(
    client: FlaskClient, auth: dict[str, str], query: str, expected: str
) -> None:
    response = client.get(f"{BASE}/audit?{query}", headers=auth)
    assert response.status_code == 400
    message = response.get_json()["error"]["message"]
    assert expected in message
    assert len(message) < 400


def test_api_audit_far_future_until(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    client.post(f"{BASE}/records/account", json={"name": "Kept"}, headers=auth)
    response = client.get(f"{BASE}/audit?until=9999-12-31", headers=auth)
    assert response.status_code == 200
    assert len(response.get_json()["data"]) == 1


def test_api_audit_actor_by_email(
    client: FlaskClient, auth: dict[str, str], admin: Actor
) -> None:
    client.post(f"{BASE}/records/account", json={"name": "Mine"}, headers=auth)
    response = client.get(f"{BASE}/audit?actor={admin.email}", headers=auth)
    assert [item["actor_id"] for item in response.get_json()["data"]] == [
        admin.user_id
    ]
