"""The web UI, the API's entity descriptions and the member roles follow each
user's rights: hidden fields never reach the page, forms lock read-only
fields, buttons appear only for permitted actions, forbidden pages return
403 or 404, and membership roles come from the tenant's definition."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from crm_platform.access import SHARES
from crm_platform.cli import main
from crm_platform.control import Actor
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import ADMIN_PASSWORD, ROOT, STANDARD_CRM, make_member
from tests.test_web import csrf_token, sign_in

pytestmark = pytest.mark.both_backends

REP_EMAIL = "rep@example.com"
READER_EMAIL = "reader@example.com"
CLERK_EMAIL = "clerk@example.com"
#: A contract value that appears nowhere else on a page.
SECRET_VALUE = "987654.32"
MINIMAL = ROOT / "tests" / "definitions" / "minimal"
#: A role that edits every opportunity, cannot see ``amount`` and cannot
#: change ``probability``.
CLERK_ROLE = {
    "name": "clerk",
    "label": {"en": "Clerk", "zh-CN": "文员"},
    "entities": {
        "account": {"read": "all"},
        "opportunity": {
            "read": "all",
            "create": True,
            "edit": "all",
            "fields": {"amount": "hidden", "probability": "read_only"},
        },
    },
}


# Set-up


def owned_by(
    runtime: TenantRuntime,
    admin: Actor,
    owner: Actor,
    entity: str,
    values: dict[str, Any],
) -> dict[str, Any]:
    """Create a record as the admin with ``owner`` as its owner."""
    service = RecordService(runtime, admin, "en", is_member=lambda user_id: True)
    return service.create(entity, {**values, "owner_id": owner.user_id})


def share(
    runtime: TenantRuntime, entity: str, record_id: str, user: Actor, level: str
) -> None:
    """Share one record with ``user`` by hand at ``level`` (read or edit)."""
    with runtime.engine.begin() as conn:
        conn.execute(
            SHARES.insert().values(
                id=str(uuid.uuid4()),
                entity=entity,
                record_id=record_id,
                user_id=user.user_id,
                access=level,
                created_at=dt.datetime.now(dt.UTC),
            )
        )


def signed_in(client: FlaskClient, email: str, slug: str = "acme") -> FlaskClient:
    response = sign_in(client, slug, email)
    assert response.status_code == 302, response.text
    return client


def body(response: TestResponse) -> Any:
    """Return the JSON body of an API response."""
    return response.json


def input_names(html: str) -> set[str]:
    return set(re.findall(r'name="(f_[a-z_]+)"', html))


@pytest.fixture
def rep(platform: Platform, crm: TenantRuntime, admin: Actor) -> Actor:
    return make_member(platform, crm.slug, REP_EMAIL, "sales_rep")


@pytest.fixture
def reader(platform: Platform, crm: TenantRuntime, admin: Actor) -> Actor:
    return make_member(platform, crm.slug, READER_EMAIL, "read_only")


@pytest.fixture
def account(crm: TenantRuntime, admin: Actor) -> dict[str, Any]:
    return owned_by(crm, admin, admin, "account", {"name": "Admin Account"})


@pytest.fixture
def contract(
    crm: TenantRuntime, admin: Actor, rep: Actor, account: dict[str, Any]
) -> dict[str, Any]:
    values = {
        "name": "Rep Contract",
        "account": account["id"],
        "status": "active",
        "value": SECRET_VALUE,
    }
    return owned_by(crm, admin, rep, "contract", values)


@pytest.fixture
def clerk_tenant(platform: Platform, tmp_path: Path) -> TenantRuntime:
    """Tenant ``clerks``: the standard CRM plus the role ``clerk``."""
    folder = tmp_path / "clerks"
    (folder / "roles").mkdir(parents=True)
    manifest = {
        "format": 1,
        "name": "clerks",
        "label": "Clerks",
        "version": "1.0.0",
        "extends": str(STANDARD_CRM),
    }
    (folder / "definition.json").write_text(json.dumps(manifest))
    (folder / "roles" / "clerk.json").write_text(json.dumps(CLERK_ROLE))
    return platform.create_tenant("clerks", folder, name="Clerks Ltd")


@pytest.fixture
def clerk(platform: Platform, clerk_tenant: TenantRuntime) -> Actor:
    roles = clerk_tenant.definition.role_names
    tenant = platform.control.get_tenant("clerks")
    user_id = platform.control.create_user(CLERK_EMAIL, ADMIN_PASSWORD)
    platform.control.add_member(tenant, user_id, "clerk", roles)
    actor = platform.control.actor(tenant, user_id)
    assert actor is not None
    return actor


# List and detail pages


def test_rep_list_shows_own_records(
    client: FlaskClient,
    crm: TenantRuntime,
    admin: Actor,
    rep: Actor,
    account: dict[str, Any],
) -> None:
    owned_by(crm, admin, rep, "account", {"name": "Rep Account"})
    page = signed_in(client, REP_EMAIL).get("/t/acme/account/")
    assert page.status_code == 200
    assert "Rep Account" in page.text
    assert "Admin Account" not in page.text
    assert page.text.count('class="record-link"') == 1


def test_list_omits_hidden_column(
    client: FlaskClient, rep: Actor, contract: dict[str, Any]
) -> None:
    page = signed_in(client, REP_EMAIL).get("/t/acme/contract/")
    assert page.status_code == 200
    assert "Rep Contract" in page.text
    assert 'data-column="value"' not in page.text
    assert 'name="value__gte"' not in page.text
    assert "987,654" not in page.text
    assert SECRET_VALUE not in page.text


def test_admin_list_shows_value(client: FlaskClient, contract: dict[str, Any]) -> None:
    """The admin's pages contain what the rep's leave out, so the checks
    above can fail."""
    page = signed_in(client, "admin@example.com").get("/t/acme/contract/")
    detail = client.get(f"/t/acme/contract/{contract['id']}")
    assert 'data-column="value"' in page.text
    assert 'name="value__gte"' in page.text
    assert "987,654" in page.text
    assert 'data-field="value"' in detail.text


def test_hidden_sort_param_rejected(
    client: FlaskClient, rep: Actor, contract: dict[str, Any]
) -> None:
    page = signed_in(client, REP_EMAIL).get("/t/acme/contract/?sort=-value")
    assert page.status_code == 400
    assert "Rep Contract" not in page.text


def test_detail_omits_hidden_field(
    client: FlaskClient, rep: Actor, contract: dict[str, Any]
) -> None:
    page = signed_in(client, REP_EMAIL).get(f"/t/acme/contract/{contract['id']}")
    assert page.status_code == 200
    assert 'data-field="value"' not in page.text
    assert "987,654" not in page.text
    assert 'data-field="status"' in page.text


def test_related_list_omits_hidden_column(
    client: FlaskClient,
    crm: TenantRuntime,
    admin: Actor,
    rep: Actor,
    contract: dict[str, Any],
) -> None:
    account = owned_by(crm, admin, rep, "account", {"name": "Rep Account"})
    RecordService(crm, admin, "en").update(
        "contract", contract["id"], {"account": account["id"]}
    )
    page = signed_in(client, REP_EMAIL).get(f"/t/acme/account/{account['id']}")
    assert page.status_code == 200
    assert 'data-related="contract-account"' in page.text
    assert "987,654" not in page.text


# Buttons


def test_shared_read_record_not_editable(
    client: FlaskClient, crm: TenantRuntime, rep: Actor, account: dict[str, Any]
) -> None:
    share(crm, "account", account["id"], rep, "read")
    browser = signed_in(client, REP_EMAIL)
    page = browser.get(f"/t/acme/account/{account['id']}")
    assert page.status_code == 200
    assert "Admin Account" in page.text
    assert 'data-testid="edit-record"' not in page.text
    assert 'data-testid="delete-record"' not in page.text


def test_shared_edit_record_editable(
    client: FlaskClient, crm: TenantRuntime, rep: Actor, account: dict[str, Any]
) -> None:
    share(crm, "account", account["id"], rep, "edit")
    page = signed_in(client, REP_EMAIL).get(f"/t/acme/account/{account['id']}")
    assert 'data-testid="edit-record"' in page.text
    assert 'data-testid="delete-record"' not in page.text


def test_own_record_shows_actions(
    client: FlaskClient, crm: TenantRuntime, admin: Actor, rep: Actor
) -> None:
    mine = owned_by(crm, admin, rep, "account", {"name": "Rep Account"})
    browser = signed_in(client, REP_EMAIL)
    detail = browser.get(f"/t/acme/account/{mine['id']}")
    listing = browser.get("/t/acme/account/")
    assert 'data-testid="edit-record"' in detail.text
    assert 'data-testid="delete-record"' in detail.text
    assert 'data-testid="new-record"' in listing.text


def test_read_only_user_sees_no_actions(
    client: FlaskClient,
    reader: Actor,
    account: dict[str, Any],
    contract: dict[str, Any],
) -> None:
    browser = signed_in(client, READER_EMAIL)
    listing = browser.get("/t/acme/account/")
    detail = browser.get(f"/t/acme/account/{account['id']}")
    assert listing.status_code == 200
    assert "Admin Account" in listing.text
    assert 'data-testid="new-record"' not in listing.text
    assert detail.status_code == 200
    assert 'data-testid="edit-record"' not in detail.text
    assert 'data-testid="delete-record"' not in detail.text
    assert 'data-related="contract-account"' in detail.text
    assert 'data-testid="related-new"' not in detail.text


def test_navigation_hides_unreadable_entities(client: FlaskClient, rep: Actor) -> None:
    home = signed_in(client, REP_EMAIL).get("/t/acme/")
    assert home.status_code == 200
    assert 'href="/t/acme/account/"' in home.text
    assert 'href="/t/acme/case/"' not in home.text
    assert 'data-testid="count-case"' not in home.text


# Direct URLs


def test_unreadable_entity_is_403(client: FlaskClient, rep: Actor) -> None:
    browser = signed_in(client, REP_EMAIL)
    assert browser.get("/t/acme/case/").status_code == 403
    assert browser.get("/t/acme/case/new").status_code == 403


def test_create_without_right_is_403(client: FlaskClient, rep: Actor) -> None:
    browser = signed_in(client, REP_EMAIL)
    page = browser.get("/t/acme/product/new")
    assert page.status_code == 403
    assert "may not create" in page.text
    listing = browser.get("/t/acme/product/")
    assert listing.status_code == 200
    assert 'data-testid="new-record"' not in listing.text


def test_post_create_without_right_is_403(
    client: FlaskClient, crm: TenantRuntime, rep: Actor
) -> None:
    browser = signed_in(client, REP_EMAIL)
    token = csrf_token(browser.get("/t/acme/").text)
    response = browser.post(
        "/t/acme/product/new", data={"csrf_token": token, "f_name": "Forged"}
    )
    assert response.status_code == 403
    with crm.engine.connect() as conn:
        rows = conn.execute(crm.tables["product"].select()).all()
    assert rows == []


def test_shared_read_edit_url_is_403(
    client: FlaskClient, crm: TenantRuntime, rep: Actor, account: dict[str, Any]
) -> None:
    share(crm, "account", account["id"], rep, "read")
    browser = signed_in(client, REP_EMAIL)
    assert browser.get(f"/t/acme/account/{account['id']}/edit").status_code == 403
    assert browser.get(f"/t/acme/account/{account['id']}/delete").status_code == 403


def test_unreadable_record_urls_are_404(
    client: FlaskClient, rep: Actor, account: dict[str, Any]
) -> None:
    browser = signed_in(client, REP_EMAIL)
    for suffix in ("", "/edit", "/delete"):
        page = browser.get(f"/t/acme/account/{account['id']}{suffix}")
        assert page.status_code == 404, suffix
        assert "Admin Account" not in page.text, suffix


# Forms


def test_form_drops_hidden_and_read_only(client: FlaskClient, clerk: Actor) -> None:
    page = signed_in(client, CLERK_EMAIL, "clerks").get("/t/clerks/opportunity/new")
    assert page.status_code == 200
    names = input_names(page.text)
    assert "f_name" in names
    assert "f_amount" not in names
    assert "f_probability" not in names
    assert 'data-field="amount"' not in page.text
    locked = 'class="form-field form-field-readonly" data-field="probability"'
    assert locked in page.text


def test_edit_form_ignores_forged_fields(
    client: FlaskClient,
    platform: Platform,
    clerk_tenant: TenantRuntime,
    clerk: Actor,
) -> None:
    owner = make_member(platform, "clerks", "boss@example.com", "admin")
    account = owned_by(clerk_tenant, owner, owner, "account", {"name": "Initech"})
    opportunity = owned_by(
        clerk_tenant,
        owner,
        owner,
        "opportunity",
        {
            "name": "Big Deal",
            "account": account["id"],
            "stage": "prospecting",
            "amount": "5000",
            "probability": 20,
        },
    )
    signed_in(client, CLERK_EMAIL, "clerks")
    url = f"/t/clerks/opportunity/{opportunity['id']}/edit"
    page = client.get(url)
    assert page.status_code == 200
    assert "f_amount" not in input_names(page.text)
    assert "f_probability" not in input_names(page.text)
    assert 'data-field="amount"' not in page.text
    form = {
        "csrf_token": csrf_token(page.text),
        "record_version": "1",
        "f_name": "Bigger Deal",
        "f_account": account["id"],
        "f_stage": "prospecting",
        "f_amount": "1",
        "f_probability": "99",
    }
    response = client.post(url, data=form)
    assert response.status_code == 302, response.text
    stored = RecordService(clerk_tenant, owner, "en").get(
        "opportunity", opportunity["id"]
    )
    assert stored["name"] == "Bigger Deal"
    assert str(stored["amount"]).startswith("5000")
    assert stored["probability"] == 20


# The API


def test_api_entities_follow_rights(
    client: FlaskClient, platform: Platform, crm: TenantRuntime, rep: Actor
) -> None:
    token = platform.control.create_token(crm.tenant, rep.user_id)
    headers = {"Authorization": f"Bearer {token}"}
    response = client.get("/t/acme/api/v1/entities", headers=headers)
    assert response.status_code == 200
    entities = {item["name"]: item for item in body(response)["data"]}
    assert "case" not in entities
    contract = entities["contract"]
    assert "value" not in [field["name"] for field in contract["fields"]]
    assert "value" not in contract["access"]["fields"]
    assert contract["access"]["rights"]["read"] == ["own"]
    assert contract["access"]["rights"]["edit"] == []
    assert contract["access"]["rights"]["create"] is False
    fields = entities["opportunity"]["access"]["fields"]
    assert fields["probability"] == "read_only"
    assert fields["amount"] == "editable"
    owner = {column["name"]: column for column in contract["system_columns"]}
    assert owner["owner_id"]["read_only"] is True


def test_api_unreadable_entity_is_404(
    client: FlaskClient, platform: Platform, crm: TenantRuntime, rep: Actor
) -> None:
    token = platform.control.create_token(crm.tenant, rep.user_id)
    headers = {"Authorization": f"Bearer {token}"}
    case = client.get("/t/acme/api/v1/entities/case", headers=headers)
    unknown = client.get("/t/acme/api/v1/entities/nothing", headers=headers)
    assert case.status_code == 404
    assert body(case)["error"]["code"] == body(unknown)["error"]["code"]
    assert "nothing" in body(unknown)["error"]["message"]


def test_api_admin_holds_every_right(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get("/t/acme/api/v1/entities/contract", headers=auth)
    data = body(response)["data"]
    assert data["access"]["rights"]["read"] == ["all"]
    assert data["access"]["rights"]["change_owner"] is True
    assert "value" in [field["name"] for field in data["fields"]]


# Roles


def test_role_choices_come_from_definition(
    client: FlaskClient, crm: TenantRuntime, admin: Actor
) -> None:
    page = signed_in(client, "admin@example.com").get("/t/acme/members")
    offered = re.findall(r'<option value="([a-z_]+)"', page.text)
    assert set(offered) == set(crm.definition.role_names)
    assert "Sales rep" in page.text


def test_role_change_limited_to_definition(
    client: FlaskClient, auth: dict[str, str], rep: Actor
) -> None:
    url = f"/t/acme/api/v1/members/{rep.user_id}"
    bad = client.patch(url, json={"role": "auditor"}, headers=auth)
    good = client.patch(url, json={"role": "read_only"}, headers=auth)
    assert bad.status_code == 422
    assert "use one of admin" in body(bad)["error"]["message"]
    assert "sales_manager" in body(bad)["error"]["message"]
    assert good.status_code == 200
    assert body(good)["data"]["role"] == "read_only"


def test_definition_without_roles_has_admin(
    client: FlaskClient, platform: Platform
) -> None:
    runtime = platform.create_tenant("tiny", MINIMAL, name="Tiny")
    admin = make_member(platform, "tiny", "owner@example.com", "admin")
    token = platform.control.create_token(runtime.tenant, admin.user_id)
    response = client.post(
        "/t/tiny/api/v1/members",
        json={
            "email": "new@example.com",
            "role": "sales_rep",
            "name": "New",
            "password": "fresh-start-77",
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 422
    assert body(response)["error"]["message"] == (
        "unknown role 'sales_rep': use one of admin"
    )


def test_custom_role_accepted(
    client: FlaskClient, platform: Platform, clerk_tenant: TenantRuntime
) -> None:
    admin = make_member(platform, "clerks", "boss@example.com", "admin")
    token = platform.control.create_token(clerk_tenant.tenant, admin.user_id)
    response = client.post(
        "/t/clerks/api/v1/members",
        json={
            "email": "new@example.com",
            "role": "clerk",
            "name": "New",
            "password": "fresh-start-77",
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    assert body(response)["data"]["role"] == "clerk"


def test_cli_rejects_unknown_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METACRM_DATA_DIR", str(tmp_path / "cli"))
    runner = CliRunner()
    created = runner.invoke(
        main, ["tenant", "create", "acme", "--template", str(STANDARD_CRM)]
    )
    assert created.exit_code == 0, created.output
    result = runner.invoke(
        main,
        [
            "user",
            "create",
            "acme",
            "x@example.com",
            "--role",
            "auditor",
            "--password-stdin",
        ],
        input=ADMIN_PASSWORD + "\n",
    )
    assert result.exit_code == 1
    assert "unknown role 'auditor' for tenant 'acme'" in result.output
    assert "use one of admin" in result.output
