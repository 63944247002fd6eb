"""Personal data on request: a person's records exported as one document, and
erased so that no copy of the personal values is left in records or journal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask.testing import FlaskClient

from crm_platform import journal, personal_data
from crm_platform.archive import restore_archive, write_archive
from crm_platform.cli import main
from crm_platform.config import Settings
from crm_platform.control import Actor
from crm_platform.errors import BadQuery, Forbidden
from crm_platform.records import ERASED_TEXT, RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import make_member
from tests.test_web import csrf_token, sign_in

pytestmark = pytest.mark.both_backends

BASE = "/t/acme/api/v1"
EMAIL = "Mei.Lin@Example.com"


@pytest.fixture
def person(records: RecordService) -> dict[str, Any]:
    """A contact and a lead of the same person, with an activity and an
    opportunity that refer to the contact, and another contact."""
    account = records.create("account", {"name": "Harbour Trading"})
    contact = records.create("contact", {
        "name": "Mei Lin", "email": EMAIL, "phone": "+86 21 5555 0101",
        "national_id": "310101199001011234", "account": account["id"],
    })
    records.update("contact", contact["id"], {"phone": "+86 21 5555 0199"})
    lead = records.create("lead", {"name": "Mei Lin", "email": EMAIL.lower()})
    activity = records.create(
        "activity", {"name": "Call Mei", "contact": contact["id"]}
    )
    opportunity = records.create("opportunity", {
        "name": "Harbour renewal", "account": account["id"],
        "contact": contact["id"], "amount": "25000.00",
    })
    other = records.create("contact", {"name": "Someone Else", "email": "x@y.org"})
    return {"account": account, "contact": contact, "lead": lead,
            "activity": activity, "opportunity": opportunity, "other": other}


def test_find_by_email_any_case(
    records: RecordService, person: dict[str, Any]
) -> None:
    found = personal_data.find(records, email="mei.lin@example.COM")
    people = {(entity.name, record["id"]) for entity, record in found.people}
    assert people == {
        ("contact", person["contact"]["id"]), ("lead", person["lead"]["id"])
    }
    related = {record["id"] for _, record in found.related}
    assert person["activity"]["id"] in related
    assert person["opportunity"]["id"] in related
    assert person["other"]["id"] not in related


def test_find_rejects_non_person_entity(
    records: RecordService, person: dict[str, Any]
) -> None:
    with pytest.raises(BadQuery, match="'opportunity' has no personal fields"):
        personal_data.find(records, entity_name="opportunity",
                           record_id=person["opportunity"]["id"])


def test_export_holds_records_and_history(
    records: RecordService, person: dict[str, Any]
) -> None:
    found = personal_data.find(records, email=EMAIL)
    document = personal_data.export_document(records, found)
    assert document["format"] == personal_data.FORMAT
    contact = next(item for item in document["records"]
                   if item["record"]["id"] == person["contact"]["id"])
    assert contact["person"] is True
    assert contact["record"]["national_id"] == "310101199001011234"
    phones = [entry["changes"].get("phone") for entry in document["history"]
              if entry["record_id"] == person["contact"]["id"]]
    assert ["+86 21 5555 0101", "+86 21 5555 0199"] in phones
    json.dumps(document)


def test_erase_blanks_personal_fields(
    records: RecordService, person: dict[str, Any]
) -> None:
    personal_data.erase(records, personal_data.find(records, email=EMAIL))
    contact = records.get("contact", person["contact"]["id"])
    assert contact["name"] == ERASED_TEXT
    assert contact["email"] is None
    assert contact["phone"] is None
    assert contact["national_id"] is None
    assert contact["account"] == person["account"]["id"]
    lead = records.get("lead", person["lead"]["id"])
    assert lead["email"] is None
    opportunity = records.get("opportunity", person["opportunity"]["id"])
    assert str(opportunity["amount"]) == "25000.00"
    assert opportunity["contact"] == person["contact"]["id"]
    other = records.get("contact", person["other"]["id"])
    assert other["email"] == "x@y.org"


def test_erase_leaves_no_copy(
    records: RecordService, person: dict[str, Any]
) -> None:
    personal_data.erase(records, personal_data.find(records, email=EMAIL))
    runtime = records.runtime
    with runtime.engine.connect() as conn:
        changes = [
            json.dumps(value)
            for value in conn.execute(sa.select(journal.JOURNAL.c.changes)).scalars()
        ]
        contacts = conn.execute(sa.select(runtime.tables["contact"])).all()
    everything = " ".join(changes + [str(row) for row in contacts]).casefold()
    for secret in (EMAIL.casefold(), "5555 0101", "5555 0199", "mei lin"):
        assert secret not in everything


def test_erase_is_journaled(
    records: RecordService, person: dict[str, Any]
) -> None:
    personal_data.erase(records, personal_data.find(records, email=EMAIL))
    with records.runtime.engine.connect() as conn:
        erasures = journal.search(conn, journal.AuditQuery(action="erase"))
    erased_ids = {entry.record_id for entry in erasures}
    assert erased_ids == {person["contact"]["id"], person["lead"]["id"]}
    contact_entry = next(e for e in erasures if e.entity == "contact")
    assert contact_entry.actor_id == records.actor.user_id
    assert contact_entry.changes["email"] == [journal.ERASED, None]
    assert contact_entry.changes["name"] == [journal.ERASED, ERASED_TEXT]


def test_non_admin_cannot_export(
    platform: Platform, crm: TenantRuntime, person: dict[str, Any]
) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    service = platform.records(crm, rep)
    found = personal_data.find(service, email=EMAIL)
    with pytest.raises(Forbidden, match="only tenant admins"):
        personal_data.export_document(service, found)
    with pytest.raises(Forbidden):
        personal_data.erase(service, found)


def test_api_export_and_erase(
    client: FlaskClient, auth: dict[str, str], person: dict[str, Any]
) -> None:
    exported = client.get(f"{BASE}/personal-data", query_string={"email": EMAIL},
                          headers=auth)
    assert exported.status_code == 200
    assert len(exported.get_json()["records"]) >= 4
    unconfirmed = client.post(f"{BASE}/personal-data/erase",
                              json={"email": EMAIL}, headers=auth)
    assert unconfirmed.status_code == 400
    assert '"confirm": "erase"' in unconfirmed.get_json()["error"]["message"]
    erased = client.post(f"{BASE}/personal-data/erase",
                         json={"email": EMAIL, "confirm": "erase"}, headers=auth)
    assert erased.status_code == 200
    assert erased.get_json()["data"]["records"] == {"contact": 1, "lead": 1}
    again = client.get(f"{BASE}/personal-data", query_string={"email": EMAIL},
                       headers=auth)
    assert again.get_json()["records"] == []


def test_api_erase_wrong_type(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(f"{BASE}/personal-data/erase", json={"email": ["a@b.c"]},
                           headers=auth)
    assert response.status_code == 400
    assert "invalid email" in response.get_json()["error"]["message"]


def test_api_erase_rejects_unknown_keys(
    client: FlaskClient, auth: dict[str, str], person: dict[str, Any],
    records: RecordService,
) -> None:
    response = client.post(
        f"{BASE}/personal-data/erase",
        json={"email": EMAIL, "dry_run": True, "confirm": "erase"}, headers=auth,
    )
    assert response.status_code == 422
    assert "'dry_run'" in response.get_json()["error"]["message"]
    assert records.get("contact", person["contact"]["id"])["email"] == EMAIL


def test_api_erase_unknown_person(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        f"{BASE}/personal-data/erase",
        json={"email": "nobody@example.org", "confirm": "erase"}, headers=auth,
    )
    assert response.status_code == 404


def test_find_needs_one_selector(
    records: RecordService, person: dict[str, Any]
) -> None:
    with pytest.raises(BadQuery, match="not both"):
        personal_data.find(records, email=EMAIL, entity_name="contact",
                           record_id=person["contact"]["id"])


def test_page_erase_needs_confirmation(
    client: FlaskClient, records: RecordService, person: dict[str, Any]
) -> None:
    sign_in(client)
    page = client.get("/t/acme/personal-data", query_string={"email": EMAIL})
    assert page.status_code == 200
    assert 'data-testid="person-found"' in page.text
    token = csrf_token(page.text)
    unconfirmed = client.post("/t/acme/personal-data/erase",
                              data={"csrf_token": token, "email": EMAIL})
    assert unconfirmed.status_code == 400
    assert records.get("contact", person["contact"]["id"])["email"] == EMAIL
    no_token = client.post("/t/acme/personal-data/erase",
                           data={"email": EMAIL, "confirm": "erase"})
    assert no_token.status_code == 400
    done = client.post("/t/acme/personal-data/erase",
                       data={"csrf_token": token, "email": EMAIL, "confirm": "erase"})
    assert done.status_code == 200
    assert 'data-testid="person-erased"' in done.text
    assert records.get("contact", person["contact"]["id"])["email"] is None


def test_cli_export_erase_and_audit(
    settings: Settings,
    admin: Actor,
    records: RecordService,
    person: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if settings.database_url:
        monkeypatch.setenv("METACRM_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("METACRM_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    output = tmp_path / "mei.json"
    exported = runner.invoke(main, ["personal-data", "export", "acme",
                                    "--email", EMAIL, "--output", str(output)])
    assert exported.exit_code == 0, exported.output
    assert json.loads(output.read_text(encoding="utf-8"))["tenant"] == "acme"
    refused = runner.invoke(main, ["personal-data", "erase", "acme", "--email", EMAIL],
                            input="n\n")
    assert refused.exit_code == 1
    assert records.get("contact", person["contact"]["id"])["email"] == EMAIL
    erased = runner.invoke(main, ["personal-data", "erase", "acme", "--email", EMAIL,
                                  "--yes"])
    assert erased.exit_code == 0, erased.output
    assert "contact: 1 records" in erased.output
    log = runner.invoke(main, ["audit", "acme", "--action", "erase", "--json"])
    assert log.exit_code == 0, log.output
    lines = [json.loads(line) for line in log.stdout.splitlines()]
    assert {line["entity"] for line in lines} == {"contact", "lead"}


def test_cli_person_needs_one_selector(
    settings: Settings, crm: TenantRuntime, admin: Actor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if settings.database_url:
        monkeypatch.setenv("METACRM_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("METACRM_DATA_DIR", str(settings.data_dir))
    result = CliRunner().invoke(main, ["personal-data", "erase", "acme", "--yes"])
    assert result.exit_code == 1
    assert "either --email or --record" in result.output


def test_restore_keeps_erasure(
    platform: Platform, records: RecordService, person: dict[str, Any],
    admin: Actor, tmp_path: Path,
) -> None:
    backup = tmp_path / "before.zip"
    write_archive(platform, "acme", backup, admin, kind="backup")
    personal_data.erase(records, personal_data.find(records, email=EMAIL))
    restore_archive(platform, "acme", backup)
    contact = records.get("contact", person["contact"]["id"])
    assert contact["email"] is None
    assert contact["name"] == ERASED_TEXT
    assert records.get("contact", person["other"]["id"])["email"] == "x@y.org"
    with records.runtime.engine.connect() as conn:
        changes = " ".join(
            json.dumps(value)
            for value in conn.execute(sa.select(journal.JOURNAL.c.changes)).scalars()
        )
        erasures = journal.search(conn, journal.AuditQuery(action="erase"))
    assert EMAIL.casefold() not in changes.casefold()
    assert {entry.record_id for entry in erasures} == {
        person["contact"]["id"], person["lead"]["id"]
    }
