"""Sensitive fields: encryption at rest, keys and rotation, masking by role,
and the metadata rules of the ``sensitive``, ``personal`` and
``unmasked_roles`` flags.

The standard CRM's ``contact.national_id`` is the sensitive field under
test. Tests that touch storage run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from crm_platform import webhooks
from crm_platform.access import ASSIGNMENTS
from crm_platform.archive import import_archive, write_archive
from crm_platform.cli import main
from crm_platform.config import ENCRYPTION_KEYS_FILE, Settings
from crm_platform.control import ROLES, Actor
from crm_platform.crypto import (
    EncryptionError,
    KeyRing,
    count_key_ids,
    new_key_line,
    rotate_tenant,
    stored_key_id,
)
from crm_platform.errors import RecordInvalid
from crm_platform.exporter import export
from crm_platform.openapi import filter_properties, sort_pattern
from crm_platform.querying import ListQuery
from crm_platform.records import RecordService
from crm_platform.serialize import mask_text
from crm_platform.tenancy import Platform, TenantRuntime
from metadata_engine.loader import compile_documents, load_definition
from renderers.listing import column_filter, is_sortable
from tests.conftest import STANDARD_CRM, make_member
from tests.definitions.builders import documents, entity, field, problems_of

pytestmark = pytest.mark.both_backends

NATIONAL_ID = "110101199003071234"
MASKED_ID = "•••• 1234"
REP_EMAIL = "rep@example.com"


# Helpers


def stored_ids(runtime: TenantRuntime) -> list[str]:
    """Return the national_id column as stored, without decryption."""
    table = runtime.tables["contact"]
    raw = sa.type_coerce(table.c.national_id, sa.Text())
    with runtime.engine.connect() as conn:
        rows = conn.execute(sa.select(raw).where(raw.is_not(None)).order_by(raw))
        return [row[0] for row in rows]


def body(response: TestResponse) -> Any:
    """Return the JSON body of an API response."""
    return response.get_json()


def key_line(settings: Settings) -> str:
    """Return the entry of the key file that the platform fixture created."""
    path = settings.data_dir / ENCRYPTION_KEYS_FILE
    return path.read_text(encoding="ascii").strip()


@pytest.fixture
def contact(records: RecordService) -> dict[str, Any]:
    return records.create("contact", {"name": "Li Wei", "national_id": NATIONAL_ID})


@pytest.fixture
def rep(platform: Platform, crm: TenantRuntime) -> Actor:
    return make_member(platform, crm.slug, REP_EMAIL, "sales_rep")


@pytest.fixture
def rep_contact(
    crm: TenantRuntime, admin: Actor, rep: Actor, contact: dict[str, Any]
) -> dict[str, Any]:
    """The contact, handed to the sales rep, who reads only their own."""
    service = RecordService(crm, admin, "en", is_member=lambda user_id: True)
    return service.update("contact", contact["id"], {"owner_id": rep.user_id})


@pytest.fixture
def rep_auth(platform: Platform, crm: TenantRuntime, rep: Actor) -> dict[str, str]:
    token = platform.control.create_token(crm.tenant, rep.user_id)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def other_platform(settings: Settings) -> Iterator[list[Platform]]:
    """Collect the platforms a test opens with other keys and dispose of them
    at the end. A last platform on ``settings`` then gives the fixture's own
    platform its keys back, because the platform started last sets the
    process's cipher."""
    opened: list[Platform] = []
    yield opened
    for platform in opened:
        platform.dispose()
    Platform(settings).dispose()


def open_with_keys(
    settings: Settings, opened: list[Platform], keys: str
) -> Platform:
    platform = Platform(dataclasses.replace(settings, encryption_keys=keys))
    opened.append(platform)
    return platform


# Storage


def test_stored_value_is_ciphertext(
    crm: TenantRuntime, contact: dict[str, Any]
) -> None:
    (stored,) = stored_ids(crm)
    assert stored.startswith("v1:local:")
    assert NATIONAL_ID not in stored
    assert NATIONAL_ID[-4:] not in stored.split(":", 2)[2]


def test_equal_values_differ_stored(
    crm: TenantRuntime, records: RecordService
) -> None:
    for name in ("A", "B"):
        records.create("contact", {"name": name, "national_id": NATIONAL_ID})
    first, second = stored_ids(crm)
    assert first != second


def test_record_service_round_trip(
    records: RecordService, contact: dict[str, Any]
) -> None:
    assert records.get("contact", contact["id"])["national_id"] == NATIONAL_ID
    page = records.list("contact", ListQuery())
    assert page.records[0]["national_id"] == NATIONAL_ID
    updated = records.update("contact", contact["id"], {"national_id": "X-9"})
    assert updated["national_id"] == "X-9"


def test_import_batch_encrypts_rows(
    crm: TenantRuntime, records: RecordService
) -> None:
    rows = [{"name": f"P{n}", "national_id": f"ID-{n:04d}"} for n in range(5)]
    result = records.import_batch("contact", rows)
    assert result.created == 5
    stored = stored_ids(crm)
    assert len(stored) == 5
    assert all(value.startswith("v1:local:") for value in stored)
    page = records.list("contact", ListQuery(sort=["name"]))
    assert [r["national_id"] for r in page.records] == [r["national_id"] for r in rows]


def test_value_bound_to_field(crm: TenantRuntime, contact: dict[str, Any]) -> None:
    ring = KeyRing.parse(new_key_line("k1"))
    token = ring.encrypt(NATIONAL_ID, "contact.national_id")
    assert ring.decrypt(token, "contact.national_id") == NATIONAL_ID
    with pytest.raises(EncryptionError, match="lead.email failed to decrypt"):
        ring.decrypt(token, "lead.email")


def test_plaintext_value_still_reads(
    crm: TenantRuntime, records: RecordService, contact: dict[str, Any]
) -> None:
    table = crm.tables["contact"]
    raw = sa.type_coerce(table.c.national_id, sa.Text())
    with crm.engine.begin() as conn:
        conn.execute(table.update().values({raw: "legacy-5678"}))
    assert records.get("contact", contact["id"])["national_id"] == "legacy-5678"
    assert count_key_ids(crm) == {"plaintext": 1}


# Keys and rotation


def test_rotate_moves_values_to_new_key(
    settings: Settings,
    platform: Platform,
    records: RecordService,
    other_platform: list[Platform],
) -> None:
    for number in range(7):
        records.create("contact", {"name": f"P{number}", "national_id": f"N{number}"})
    local = key_line(settings)
    rotating = open_with_keys(settings, other_platform, f"{new_key_line('k2')},{local}")
    runtime = rotating.runtime("acme")
    done: list[int] = []
    rotated = rotate_tenant(runtime, rotating.key_ring, done.append, batch_size=3)
    assert rotated == 7
    assert done == [3, 3, 1]
    assert count_key_ids(runtime) == {"k2": 7}
    assert rotate_tenant(runtime, rotating.key_ring) == 0


def test_old_key_removed_after_rotate(
    settings: Settings,
    platform: Platform,
    crm: TenantRuntime,
    admin: Actor,
    contact: dict[str, Any],
    other_platform: list[Platform],
) -> None:
    new_key = new_key_line("k2")
    both = f"{new_key},{key_line(settings)}"
    rotating = open_with_keys(settings, other_platform, both)
    rotate_tenant(rotating.runtime("acme"), rotating.key_ring)
    only_new = open_with_keys(settings, other_platform, new_key)
    service = only_new.records(only_new.runtime("acme"), admin)
    assert service.get("contact", contact["id"])["national_id"] == NATIONAL_ID


def test_rotate_encrypts_plaintext_values(
    settings: Settings,
    crm: TenantRuntime,
    records: RecordService,
    contact: dict[str, Any],
    platform: Platform,
) -> None:
    table = crm.tables["contact"]
    raw = sa.type_coerce(table.c.national_id, sa.Text())
    with crm.engine.begin() as conn:
        conn.execute(table.update().values({raw: NATIONAL_ID}))
    assert rotate_tenant(crm, platform.key_ring) == 1
    assert count_key_ids(crm) == {"local": 1}
    assert records.get("contact", contact["id"])["national_id"] == NATIONAL_ID


def test_unknown_key_id_names_variable(
    settings: Settings,
    admin: Actor,
    contact: dict[str, Any],
    other_platform: list[Platform],
) -> None:
    stranger = open_with_keys(settings, other_platform, new_key_line("k9"))
    service = stranger.records(stranger.runtime("acme"), admin)
    with pytest.raises(
        EncryptionError, match="key id 'local'.*add that key to METACRM_ENCRYPTION_KEYS"
    ):
        service.get("contact", contact["id"])


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("", "contains no key"),
        ("k1", "entry 1 .* is not 'id:base64key'"),
        ("k1:c2hvcnQ=", "key 'k1' .* has 5 bytes, not 32"),
        ("k1:!!!", "key 'k1' .* is not valid base64"),
        ("bad id:AAAA", "entry 1"),
    ],
)
def test_invalid_keys_rejected(keys: str, message: str) -> None:
    with pytest.raises(EncryptionError, match=message):
        KeyRing.parse(keys)


def test_duplicate_key_id_rejected() -> None:
    line = new_key_line("k1")
    with pytest.raises(EncryptionError, match="key id 'k1' appears more than once"):
        KeyRing.parse(f"{line},{line}")


def test_key_file_created_private(settings: Settings, platform: Platform) -> None:
    path = settings.data_dir / ENCRYPTION_KEYS_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert key_line(settings).startswith("local:")


def test_generate_prints_key_line() -> None:
    result = CliRunner().invoke(main, ["keys", "generate", "--id", "k7"])
    assert result.exit_code == 0, result.output
    ring = KeyRing.parse(result.output.strip())
    assert ring.active_id == "k7"


def test_cli_rotate_and_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: Settings
) -> None:
    if backend.database_url:
        monkeypatch.setenv("METACRM_DATABASE_URL", backend.database_url)
    data_dir = str(backend.data_dir)
    runner = CliRunner()
    first = new_key_line("k1")
    monkeypatch.setenv("METACRM_ENCRYPTION_KEYS", first)
    created = runner.invoke(main, ["tenant", "create", "acme", "--template",
                                   str(STANDARD_CRM), "--data-dir", data_dir])
    assert created.exit_code == 0, created.output
    settings = dataclasses.replace(backend, encryption_keys=first)
    platform = Platform(settings)
    admin = make_member(platform, "acme", "admin@example.com", "admin")
    service = platform.records(platform.runtime("acme"), admin)
    service.create("contact", {"name": "Li", "national_id": NATIONAL_ID})
    _, secret = webhooks.add_endpoint(platform.runtime("acme").engine,
                                      platform.key_ring, "erp",
                                      "https://erp.example/hooks")
    platform.dispose()

    second = f"{new_key_line('k2')},{first}"
    monkeypatch.setenv("METACRM_ENCRYPTION_KEYS", second)
    rotated = runner.invoke(main, ["keys", "rotate", "--data-dir", data_dir])
    assert rotated.exit_code == 0, rotated.output
    assert ("acme: re-encrypted 1 rows and 1 webhook secrets with key k2"
            in rotated.output)
    platform = Platform(dataclasses.replace(backend, encryption_keys=second))
    engine = platform.runtime("acme").engine
    with engine.connect() as conn:
        token = conn.execute(sa.select(webhooks.ENDPOINTS.c.secret)).scalar_one()
    assert stored_key_id(token) == "k2"
    assert webhooks.endpoint_secret(engine, platform.key_ring, "erp") == secret
    platform.dispose()
    status = runner.invoke(main, ["keys", "status", "--tenant", "acme",
                                  "--data-dir", data_dir])
    assert status.exit_code == 0, status.output
    assert "acme\tk2=1" in status.output

    monkeypatch.setenv("METACRM_ENCRYPTION_KEYS", first)
    dropped = runner.invoke(main, ["keys", "status", "--tenant", "acme",
                                   "--data-dir", data_dir])
    assert dropped.exit_code == 1
    assert "k2=1 (key missing)" in dropped.output
    assert "1 values are encrypted with keys that are not configured" in (
        dropped.output)


# Masking


def test_mask_text_keeps_last_four() -> None:
    assert mask_text(NATIONAL_ID) == MASKED_ID
    assert mask_text("1234") == "••••"
    assert mask_text("") == "••••"


def test_api_masks_for_sales_rep(
    client: FlaskClient,
    auth: dict[str, str],
    rep_auth: dict[str, str],
    rep_contact: dict[str, Any],
) -> None:
    url = f"/t/acme/api/v1/records/contact/{rep_contact['id']}"
    full = body(client.get(url, headers=auth))
    assert full["data"]["national_id"] == NATIONAL_ID
    masked = body(client.get(url, headers=rep_auth))
    assert masked["data"]["national_id"] == MASKED_ID
    listed = body(client.get("/t/acme/api/v1/records/contact", headers=rep_auth))
    assert listed["data"][0]["national_id"] == MASKED_ID


def test_api_round_trip_as_admin(
    client: FlaskClient, auth: dict[str, str], crm: TenantRuntime
) -> None:
    created = client.post("/t/acme/api/v1/records/contact", headers=auth,
                          json={"name": "Li", "national_id": NATIONAL_ID})
    assert created.status_code == 201, created.text
    assert body(created)["data"]["national_id"] == NATIONAL_ID
    assert NATIONAL_ID not in stored_ids(crm)[0]


def test_api_rejects_masked_write_back(
    client: FlaskClient, rep_auth: dict[str, str], contact: dict[str, Any],
    records: RecordService,
) -> None:
    url = f"/t/acme/api/v1/records/contact/{contact['id']}"
    response = client.patch(url, headers=rep_auth, json={"national_id": MASKED_ID})
    assert response.status_code == 422
    assert "national_id" in body(response)["error"]["details"]
    assert records.get("contact", contact["id"])["national_id"] == NATIONAL_ID


@pytest.mark.parametrize(
    "query",
    ["national_id=1", "national_id__icontains=1", "national_id__isnull=true",
     "sort=national_id", "sort=-national_id"],
)
def test_api_rejects_sensitive_query(
    client: FlaskClient, auth: dict[str, str], crm: TenantRuntime, query: str
) -> None:
    response = client.get(f"/t/acme/api/v1/records/contact?{query}", headers=auth)
    assert response.status_code == 400
    error = body(response)["error"]
    assert error["details"]["field"] == "national_id"
    assert "national_id" in error["message"]


def test_api_describes_sensitive_field(
    client: FlaskClient, auth: dict[str, str], crm: TenantRuntime
) -> None:
    described = body(client.get("/t/acme/api/v1/entities/contact", headers=auth))
    fields = {item["name"]: item for item in described["data"]["fields"]}
    national_id = fields["national_id"]
    assert national_id["sensitive"] is True
    assert national_id["operators"] == []
    assert national_id["sortable"] is False
    assert national_id["unmasked_roles"] == ["admin"]
    assert fields["email"]["personal"] is True


def sign_in_as(client: FlaskClient, email: str) -> None:
    from tests.test_web import sign_in

    response = sign_in(client, "acme", email)
    assert response.status_code == 302, response.text


def test_detail_page_masks_for_rep(
    client: FlaskClient, rep: Actor, rep_contact: dict[str, Any]
) -> None:
    sign_in_as(client, REP_EMAIL)
    page = client.get(f"/t/acme/contact/{rep_contact['id']}")
    assert page.status_code == 200
    assert MASKED_ID in page.text
    assert NATIONAL_ID not in page.text


def test_detail_page_full_for_admin(
    client: FlaskClient, admin: Actor, contact: dict[str, Any]
) -> None:
    sign_in_as(client, "admin@example.com")
    page = client.get(f"/t/acme/contact/{contact['id']}")
    assert NATIONAL_ID in page.text
    assert MASKED_ID not in page.text


def test_edit_form_hides_and_keeps_value(
    client: FlaskClient, rep: Actor, rep_contact: dict[str, Any],
    records: RecordService,
) -> None:
    from tests.test_web import post_form

    sign_in_as(client, REP_EMAIL)
    url = f"/t/acme/contact/{rep_contact['id']}/edit"
    page = client.get(url)
    assert NATIONAL_ID not in page.text
    assert 'placeholder="•••• 1234"' in page.text
    response = post_form(client, url, {"f_title": "Buyer"})
    assert response.status_code == 302, response.text
    stored = records.get("contact", rep_contact["id"])
    assert stored["title"] == "Buyer"
    assert stored["national_id"] == NATIONAL_ID


def test_edit_form_replaces_value(
    client: FlaskClient, rep: Actor, rep_contact: dict[str, Any],
    records: RecordService,
) -> None:
    from tests.test_web import post_form

    sign_in_as(client, REP_EMAIL)
    url = f"/t/acme/contact/{rep_contact['id']}/edit"
    response = post_form(client, url, {"f_national_id": "NEW-0001"})
    assert response.status_code == 302, response.text
    assert records.get("contact", rep_contact["id"])["national_id"] == "NEW-0001"


def test_list_offers_no_sort_or_filter(crm: TenantRuntime) -> None:
    contact_entity = crm.definition.entity("contact")
    national_id = contact_entity.field("national_id")
    assert not is_sortable(contact_entity, "national_id")
    assert column_filter(national_id, {}, "en", lambda _: []) is None  # type: ignore[arg-type]


def test_list_page_rejects_sensitive_sort(
    client: FlaskClient, admin: Actor, contact: dict[str, Any]
) -> None:
    sign_in_as(client, "admin@example.com")
    page = client.get("/t/acme/contact/?sort=national_id")
    assert page.status_code == 400
    assert "national_id" in page.text


def export_rows(service: RecordService) -> list[dict[str, str]]:
    output = io.StringIO()
    export(service, "contact", output, "csv")
    return list(csv.DictReader(io.StringIO(output.getvalue())))


def test_csv_export_masks_for_rep(
    crm: TenantRuntime, rep: Actor, records: RecordService,
    rep_contact: dict[str, Any],
) -> None:
    with crm.engine.begin() as conn:
        conn.execute(ASSIGNMENTS.insert().values(user_id=rep.user_id,
                                                 permission_set="data_export"))
    (masked,) = export_rows(RecordService(crm, rep))
    assert masked["national_id"] == MASKED_ID
    (full,) = export_rows(records)
    assert full["national_id"] == NATIONAL_ID


# Tenant archive


def test_archive_holds_plaintext(
    tmp_path: Path,
    platform: Platform,
    admin: Actor,
    contact: dict[str, Any],
) -> None:
    path = tmp_path / "acme.zip"
    write_archive(platform, "acme", path, admin)
    with zipfile.ZipFile(path) as archive:
        rows = list(csv.DictReader(io.StringIO(
            archive.read("data/contact.csv").decode("utf-8"))))
        items = json.loads(archive.read("data/contact.json"))
    assert rows[0]["national_id"] == NATIONAL_ID
    assert items[0]["national_id"] == NATIONAL_ID


def test_archive_import_encrypts_again(
    tmp_path: Path,
    platform: Platform,
    admin: Actor,
    contact: dict[str, Any],
) -> None:
    path = tmp_path / "acme.zip"
    write_archive(platform, "acme", path, admin)
    import_archive(platform, "beta", path)
    beta = platform.runtime("beta")
    (stored,) = stored_ids(beta)
    assert stored.startswith("v1:local:")
    service = RecordService(beta, admin)
    assert service.get("contact", contact["id"])["national_id"] == NATIONAL_ID


# Metadata


def sensitive_problems(*fields: dict[str, Any], **changes: Any) -> list[str]:
    docs = documents(entity("person", *fields, **changes))
    problems = problems_of(lambda: compile_documents(docs))
    return [f"{problem.message} ({problem.hint})" for problem in problems]


@pytest.mark.parametrize("field_type", ["integer", "date", "boolean", "picklist"])
def test_sensitive_rejects_other_types(field_type: str) -> None:
    document = field("secret", field_type, sensitive=True)
    if field_type == "picklist":
        document["options"] = [{"value": "a", "label": "A"}]
    (problem,) = sensitive_problems(document)
    assert f"'person.secret' of type {field_type!r} cannot be sensitive" in problem
    assert "use one of the types text, long_text, email, phone, url" in problem


@pytest.mark.parametrize("flag", ["unique", "indexed", "searchable"])
def test_sensitive_rejects_flag(flag: str) -> None:
    document = field("secret", sensitive=True)
    document[flag] = True
    (problem,) = sensitive_problems(document)
    assert f"sensitive field 'person.secret' cannot be {flag}" in problem
    assert f"remove {flag!r}" in problem


def test_sensitive_title_rejected() -> None:
    problems = sensitive_problems(field("secret", sensitive=True), title_field="secret")
    assert any("title field 'person.secret' is sensitive" in p for p in problems)


def test_sensitive_in_index_rejected() -> None:
    (problem,) = sensitive_problems(
        field("secret", sensitive=True), unique=[{"fields": ["name", "secret"]}]
    )
    assert "unique constraint contains sensitive field 'person.secret'" in problem


def test_sensitive_in_view_rejected() -> None:
    view = {"name": "all", "label": "All", "columns": ["name", "secret"],
            "sort": ["-secret"], "filters": [{"field": "secret", "op": "eq",
                                              "value": "x"}]}
    problems = sensitive_problems(field("secret", sensitive=True), list_views=[view])
    assert len(problems) == 2
    assert "sorts by sensitive field 'person.secret'" in problems[0]
    assert "filters on sensitive field 'person.secret'" in problems[1]


def test_unmasked_roles_need_sensitive() -> None:
    (problem,) = sensitive_problems(field("note", unmasked_roles=["admin"]))
    assert "'person.note' sets unmasked_roles but is not sensitive" in problem


def test_unknown_role_rejected() -> None:
    problems = sensitive_problems(
        field("secret", sensitive=True, unmasked_roles=["boss"])
    )
    assert any("boss" in problem for problem in problems)


def test_standard_roles_declared() -> None:
    definition = load_definition(STANDARD_CRM)
    assert set(ROLES) <= set(definition.role_names)


def test_flags_compile_with_defaults() -> None:
    docs = documents(entity(
        "person",
        field("secret", "email", sensitive=True, personal=True,
              unmasked_roles=["admin", "sales_manager"]),
        field("born", "date", personal=True),
    ))
    docs["roles/sales_manager.json"] = {
        "name": "sales_manager", "label": "Sales manager",
        "entities": {"person": {"read": "all"}},
    }
    person = compile_documents(docs).entity("person")
    secret = person.field("secret")
    assert secret.sensitive
    assert secret.personal
    assert secret.unmasked_roles == ("admin", "sales_manager")
    assert secret.entity == "person"
    born = person.field("born")
    assert born.personal
    assert not born.sensitive
    assert born.unmasked_roles == ("admin",)


def test_masked_for_roles() -> None:
    docs = documents(entity("person", field("secret", sensitive=True,
                                            unmasked_roles=["sales_manager"])))
    docs["roles/sales_manager.json"] = {"name": "sales_manager",
                                        "label": "Sales manager"}
    secret = compile_documents(docs).entity("person").field("secret")
    assert secret.masked_for("admin")
    assert not secret.masked_for("sales_manager")
    assert secret.masked_for(None)


def test_standard_crm_marks_personal_data() -> None:
    definition = load_definition(STANDARD_CRM)
    contact_entity = definition.entity("contact")
    national_id = contact_entity.field("national_id")
    assert national_id.sensitive
    assert national_id.label.get("zh-CN") == "身份证号"
    personal = {f.name for f in contact_entity.fields if f.personal}
    assert {"name", "email", "phone", "mobile", "birthdate"} <= personal
    lead_personal = {f.name for f in definition.entity("lead").fields if f.personal}
    assert {"name", "email", "phone"} <= lead_personal


def test_openapi_offers_no_sensitive_query(crm: TenantRuntime) -> None:
    contact_entity = crm.definition.entity("contact")
    parameters = filter_properties(contact_entity, "en")
    assert not any(key.startswith("national_id") for key in parameters)
    assert "email__icontains" in parameters
    pattern = re.compile(sort_pattern(contact_entity))
    assert pattern.match("-email")
    assert not pattern.match("national_id")


def test_import_key_cannot_be_sensitive(records: RecordService) -> None:
    rows = [{"name": "Mei Lin", "national_id": "310101199001011234"}]
    with pytest.raises(RecordInvalid, match="'national_id': contact.national_id is"):
        records.import_batch("contact", rows, key="national_id")
    assert records.list("contact", ListQuery()).records == []


def test_masked_value_message_translated(
    platform: Platform, crm: TenantRuntime, admin: Actor
) -> None:
    service = RecordService(crm, admin, "zh-CN")
    with pytest.raises(RecordInvalid) as caught:
        service.create("contact", {"name": "Li", "national_id": "•••• 1234"})
    assert caught.value.details["national_id"] == [
        "这是遮盖后的值，不是真实值：请提交真实值，或不填写此字段。"
    ]
