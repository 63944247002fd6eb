"""Roles, permission sets and sharing rules edited by a tenant admin in the
browser and through the API, and applied to what members may list."""

from __future__ import annotations

import copy
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Page, expect
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from crm_platform import permission_admin
from crm_platform.control import Actor
from crm_platform.querying import ListQuery
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_member
from tests.plugins.browser import serve_wsgi
from tests.test_browser import Console
from tests.test_web import csrf_token, sign_in

pytestmark = pytest.mark.both_backends

REP_EMAIL = "rep@example.com"
OTHER_REP_EMAIL = "rep2@example.com"


class FormState(HTMLParser):
    """The values a browser would submit for the first POST form of a page
    that posts back to the page itself (no ``action``): text and hidden
    inputs, ticked boxes and selected options."""

    def __init__(self) -> None:
        super().__init__()
        self.values: MultiDict[str, str] = MultiDict()
        self._in_form = False
        self._done = False
        self._select: str | None = None
        self._first_option: str | None = None
        self._selected = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {key: value or "" for key, value in attrs}
        posts_back = found.get("method") == "post" and "action" not in found
        if tag == "form" and posts_back and not self._done:
            self._in_form = True
        if not self._in_form:
            return
        name = found.get("name")
        if tag == "input" and name:
            kind = found.get("type", "text")
            if kind not in ("checkbox", "radio") or "checked" in found:
                self.values.add(name, found.get("value", "on"))
        elif tag == "select" and name:
            self._select, self._first_option, self._selected = name, None, False
        elif tag == "option" and self._select is not None:
            value = found.get("value", "")
            if self._first_option is None:
                self._first_option = value
            if "selected" in found:
                self.values.add(self._select, value)
                self._selected = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select is not None:
            if not self._selected and self._first_option is not None:
                self.values.add(self._select, self._first_option)
            self._select = None
        elif tag == "form" and self._in_form:
            self._in_form, self._done = False, True


def form_of(html: str) -> MultiDict[str, str]:
    parser = FormState()
    parser.feed(html)
    return parser.values


def submit(client: FlaskClient, url: str, changes: dict[str, str]) -> Any:
    """Open ``url``, change some inputs of its form and post it back."""
    page = client.get(url)
    assert page.status_code == 200, page.text
    data = form_of(page.text)
    for key, value in changes.items():
        data.setlist(key, [value] if value else [])
    return client.post(url, data=data)


@pytest.fixture
def rep(platform: Platform, crm: TenantRuntime, admin: Actor) -> Actor:
    return make_member(platform, "acme", REP_EMAIL, "sales_rep")


@pytest.fixture
def other_rep(platform: Platform, crm: TenantRuntime, admin: Actor) -> Actor:
    return make_member(platform, "acme", OTHER_REP_EMAIL, "sales_rep")


@pytest.fixture
def accounts(
    platform: Platform, crm: TenantRuntime, admin: Actor, rep: Actor, other_rep: Actor
) -> list[str]:
    """One account owned by each rep, the second in the finance industry."""
    service = platform.records(crm, admin)
    return [
        service.create("account", {"name": "Mine", "owner_id": rep.user_id})["id"],
        service.create(
            "account",
            {"name": "Theirs", "industry": "finance", "owner_id": other_rep.user_id},
        )["id"],
    ]


@pytest.fixture
def admin_client(client: FlaskClient, admin: Actor) -> FlaskClient:
    assert sign_in(client).status_code == 302
    return client


def listed(platform: Platform, actor: Actor) -> set[str]:
    """Return the ids of the accounts that ``actor`` may list, read anew."""
    runtime = platform.runtime("acme")
    page = platform.records(runtime, actor).list("account", ListQuery(limit=50))
    return {record["id"] for record in page.records}


def current_hash(platform: Platform) -> str:
    return platform.runtime("acme").definition.content_hash


def document(platform: Platform, key: str) -> Any:
    """Return a copy of one stored document of the current definition."""
    return copy.deepcopy(platform.runtime("acme").definition.documents.get(key))


def json_of(response: TestResponse) -> Any:
    return response.json


# Roles and permission sets in the browser


def test_role_edit_widens_listing(
    admin_client: FlaskClient, platform: Platform, rep: Actor, accounts: list[str]
) -> None:
    assert listed(platform, rep) == {accounts[0]}
    response = submit(admin_client, "/t/acme/roles/sales_rep", {"account:read": "all"})
    assert response.status_code == 302, response.text
    assert listed(platform, rep) == set(accounts)
    stored = document(platform, "roles/sales_rep.json")
    assert stored["entities"]["account"]["read"] == "all"
    assert stored["entities"]["opportunity"]["fields"] == {"probability": "read_only"}
    assert stored["label"]["zh-CN"] == "销售代表"


def test_role_edit_hides_field(
    admin_client: FlaskClient, platform: Platform, rep: Actor, accounts: list[str]
) -> None:
    response = submit(
        admin_client, "/t/acme/roles/sales_rep", {"account:field:industry": "hidden"}
    )
    assert response.status_code == 302, response.text
    runtime = platform.runtime("acme")
    record = platform.records(runtime, rep).get("account", accounts[0])
    assert "industry" not in record
    assert "name" in record


def test_invalid_scope_changes_nothing(
    admin_client: FlaskClient, platform: Platform
) -> None:
    before = current_hash(platform)
    response = submit(
        admin_client, "/t/acme/roles/sales_rep", {"account:read": "everything"}
    )
    assert response.status_code == 422
    assert "invalid scope &#39;everything&#39;" in response.text
    assert current_hash(platform) == before


def test_new_role_without_label(admin_client: FlaskClient, platform: Platform) -> None:
    before = current_hash(platform)
    response = submit(
        admin_client, "/t/acme/roles/new", {"name": "auditor", "lead:read": "all"}
    )
    assert response.status_code == 422
    assert "missing label" in response.text
    assert current_hash(platform) == before


def test_new_role_is_applied(admin_client: FlaskClient, platform: Platform) -> None:
    response = submit(
        admin_client,
        "/t/acme/roles/new",
        {
            "name": "auditor",
            "label:en": "Auditor",
            "label:zh-CN": "审计员",
            "*:read": "all",
            "contract:listed": "1",
        },
    )
    assert response.status_code == 302, response.text
    role = platform.runtime("acme").definition.role("auditor")
    assert role is not None
    assert role.grants_for("lead")[0].read == ("all",)
    assert role.grants_for("contract")[0].read == ()
    listing = admin_client.get("/t/acme/roles")
    assert 'data-name="auditor"' in listing.text


def test_new_role_name_taken(admin_client: FlaskClient, platform: Platform) -> None:
    response = submit(
        admin_client, "/t/acme/roles/new", {"name": "sales_rep", "label:en": "Copy"}
    )
    assert response.status_code == 409
    assert "already exists" in response.text


def test_new_permission_set_applied(
    admin_client: FlaskClient, platform: Platform
) -> None:
    response = submit(
        admin_client,
        "/t/acme/permission-sets/new",
        {"name": "lead_export", "label:en": "Lead export", "lead:export": "1"},
    )
    assert response.status_code == 302, response.text
    found = platform.runtime("acme").definition.permission_set("lead_export")
    assert found is not None
    assert found.grants_for("lead")[0].export is True


def test_combined_scope_kept(admin_client: FlaskClient, platform: Platform) -> None:
    submit(
        admin_client, "/t/acme/roles/sales_rep", {"account:read": "team+subordinates"}
    )
    page = admin_client.get("/t/acme/roles/sales_rep")
    assert '<option value="team+subordinates" selected>' in page.text
    response = submit(admin_client, "/t/acme/roles/sales_rep", {})
    assert response.status_code == 302, response.text
    stored = document(platform, "roles/sales_rep.json")
    assert stored["entities"]["account"]["read"] == ["team", "subordinates"]


def test_stale_page_rejected(admin_client: FlaskClient, platform: Platform) -> None:
    page = admin_client.get("/t/acme/roles/sales_rep")
    stale = form_of(page.text)
    first = submit(admin_client, "/t/acme/roles/sales_rep", {"lead:read": "all"})
    assert first.status_code == 302, first.text
    after_first = current_hash(platform)
    stale.setlist("account:read", ["all"])
    response = admin_client.post("/t/acme/roles/sales_rep", data=stale)
    assert response.status_code == 409
    assert "Someone changed the permissions" in response.text
    assert current_hash(platform) == after_first
    stored = document(platform, "roles/sales_rep.json")
    assert stored["entities"]["lead"]["read"] == "all"


def test_admin_role_cannot_change(
    admin_client: FlaskClient, platform: Platform
) -> None:
    page = admin_client.get("/t/acme/roles/admin")
    assert page.status_code == 200
    assert 'data-testid="admin-fixed"' in page.text
    assert 'data-testid="grantee-form"' not in page.text
    before = current_hash(platform)
    token = csrf_token(admin_client.get("/t/acme/roles").text)
    response = admin_client.post(
        "/t/acme/roles/admin", data={"csrf_token": token, "label:en": "Boss"}
    )
    assert response.status_code == 409
    assert current_hash(platform) == before


def test_held_role_not_deleted(
    admin_client: FlaskClient, platform: Platform, rep: Actor, other_rep: Actor
) -> None:
    before = current_hash(platform)
    token = csrf_token(admin_client.get("/t/acme/roles").text)
    response = admin_client.post(
        "/t/acme/roles/sales_rep/delete", data={"csrf_token": token}
    )
    assert response.status_code == 409
    assert "sales_rep is held by 2 member(s)" in response.text
    assert current_hash(platform) == before


def test_referenced_role_not_deleted(
    admin_client: FlaskClient, platform: Platform
) -> None:
    before = current_hash(platform)
    token = csrf_token(admin_client.get("/t/acme/roles").text)
    response = admin_client.post(
        "/t/acme/roles/service_agent/delete", data={"csrf_token": token}
    )
    assert response.status_code == 422
    assert "sharing_rules/high_priority_cases.json" in response.text
    assert current_hash(platform) == before


def test_unheld_permission_set_deleted(
    admin_client: FlaskClient, platform: Platform
) -> None:
    submit(
        admin_client,
        "/t/acme/permission-sets/new",
        {"name": "lead_export", "label:en": "Lead export", "lead:export": "1"},
    )
    token = csrf_token(admin_client.get("/t/acme/roles").text)
    response = admin_client.post(
        "/t/acme/permission-sets/lead_export/delete", data={"csrf_token": token}
    )
    assert response.status_code == 302, response.text
    definition = platform.runtime("acme").definition
    assert definition.permission_set("lead_export") is None


def test_tested_permission_set_kept(
    admin_client: FlaskClient, platform: Platform
) -> None:
    before = current_hash(platform)
    token = csrf_token(admin_client.get("/t/acme/roles").text)
    response = admin_client.post(
        "/t/acme/permission-sets/data_export/delete", data={"csrf_token": token}
    )
    assert response.status_code == 422
    assert "permission_tests/standard.json" in response.text
    assert current_hash(platform) == before


def test_missing_csrf_changes_nothing(
    admin_client: FlaskClient, platform: Platform
) -> None:
    before = current_hash(platform)
    response = admin_client.post(
        "/t/acme/roles/sales_rep", data={"label:en": "Rep", "account:read": "all"}
    )
    assert response.status_code == 400
    assert current_hash(platform) == before


def test_member_cannot_open_roles(client: FlaskClient, rep: Actor) -> None:
    assert sign_in(client, email=REP_EMAIL).status_code == 302
    assert client.get("/t/acme/roles").status_code == 403
    assert client.get("/t/acme/roles/sales_rep").status_code == 403
    assert client.get("/t/acme/sharing-rules").status_code == 403


def test_roles_page_in_chinese(admin_client: FlaskClient) -> None:
    page = admin_client.get("/t/acme/roles?lang=zh-CN", follow_redirects=True)
    assert page.status_code == 200
    assert "角色和权限集" in page.text
    grid = admin_client.get("/t/acme/roles/sales_rep")
    assert "各实体的权限" in grid.text


# Sharing rules in the browser


def test_sharing_rule_widens_listing(
    admin_client: FlaskClient, platform: Platform, rep: Actor, accounts: list[str]
) -> None:
    assert listed(platform, rep) == {accounts[0]}
    response = submit(
        admin_client,
        "/t/acme/sharing-rules/new",
        {
            "name": "finance_accounts",
            "label:en": "Finance accounts",
            "entity": "account",
            "condition-0-field": "industry",
            "condition-0-op": "in",
            "condition-0-value": "finance,energy",
            "roles": "sales_rep",
        },
    )
    assert response.status_code == 302, response.text
    assert listed(platform, rep) == set(accounts)
    stored = document(platform, "sharing_rules/finance_accounts.json")
    assert stored["where"] == [
        {"field": "industry", "op": "in", "value": ["finance", "energy"]}
    ]


def test_sharing_rule_edit(admin_client: FlaskClient, platform: Platform) -> None:
    page = admin_client.get("/t/acme/sharing-rules/high_priority_cases")
    assert 'value="high,urgent"' in page.text
    response = submit(
        admin_client, "/t/acme/sharing-rules/high_priority_cases", {"access": "edit"}
    )
    assert response.status_code == 302, response.text
    stored = document(platform, "sharing_rules/high_priority_cases.json")
    assert stored["access"] == "edit"
    assert stored["where"][0]["value"] == ["high", "urgent"]


def test_sharing_rule_delete(admin_client: FlaskClient, platform: Platform) -> None:
    submit(
        admin_client,
        "/t/acme/sharing-rules/new",
        {
            "name": "big_deals",
            "label:en": "Big deals",
            "entity": "opportunity",
            "condition-0-field": "amount",
            "condition-0-op": "gte",
            "condition-0-value": "100000",
            "roles": "sales_manager",
        },
    )
    stored = document(platform, "sharing_rules/big_deals.json")
    assert stored["where"][0]["value"] == 100000
    token = csrf_token(admin_client.get("/t/acme/sharing-rules").text)
    deleted = admin_client.post(
        "/t/acme/sharing-rules/big_deals/delete", data={"csrf_token": token}
    )
    assert deleted.status_code == 302, deleted.text
    assert document(platform, "sharing_rules/big_deals.json") is None


def test_failing_permission_test_shown(
    admin_client: FlaskClient, platform: Platform
) -> None:
    before = current_hash(platform)
    token = csrf_token(admin_client.get("/t/acme/sharing-rules").text)
    response = admin_client.post(
        "/t/acme/sharing-rules/high_priority_cases/delete", data={"csrf_token": token}
    )
    assert response.status_code == 422
    assert "permission test failed" in response.text
    assert current_hash(platform) == before


def test_invalid_rule_shows_problem(
    admin_client: FlaskClient, platform: Platform, rep: Actor, accounts: list[str]
) -> None:
    before = current_hash(platform)
    response = submit(
        admin_client,
        "/t/acme/sharing-rules/new",
        {
            "name": "broken",
            "label:en": "Broken",
            "entity": "account",
            "condition-0-field": "colour",
            "condition-0-op": "eq",
            "condition-0-value": "red",
            "roles": "sales_rep",
        },
    )
    assert response.status_code == 422
    assert "sharing_rules/broken.json" in response.text
    assert "colour" in response.text
    assert 'value="colour"' in response.text
    assert current_hash(platform) == before
    assert listed(platform, rep) == {accounts[0]}


# The API


def test_api_put_role(
    client: FlaskClient,
    platform: Platform,
    auth: dict[str, str],
    rep: Actor,
    accounts: list[str],
) -> None:
    body = document(platform, "roles/sales_rep.json")
    body["entities"]["account"]["read"] = "all"
    response = client.put("/t/acme/api/v1/roles/sales_rep", json=body, headers=auth)
    assert response.status_code == 200, response.text
    assert json_of(response)["data"]["entities"]["account"]["read"] == "all"
    assert listed(platform, rep) == set(accounts)


def test_api_put_invalid_role(
    client: FlaskClient, platform: Platform, auth: dict[str, str]
) -> None:
    before = current_hash(platform)
    body = {
        "name": "auditor",
        "label": "Auditor",
        "entities": {"spaceship": {"read": "all"}},
    }
    response = client.put("/t/acme/api/v1/roles/auditor", json=body, headers=auth)
    assert response.status_code == 422
    problems = json_of(response)["error"]["details"]["problems"]
    assert any("spaceship" in line for line in problems)
    assert current_hash(platform) == before


def test_api_lists_roles(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get("/t/acme/api/v1/roles", headers=auth)
    assert response.status_code == 200
    names = [item["name"] for item in json_of(response)["data"]]
    assert "sales_rep" in names
    admin = client.put(
        "/t/acme/api/v1/roles/admin",
        json={"name": "admin", "label": "Admin"},
        headers=auth,
    )
    assert admin.status_code == 409
    assert json_of(admin)["error"]["code"] == "admin_role_fixed"


# The form helpers


def test_scope_text_round_trip() -> None:
    for value in (True, "own", ["team", "subordinates"]):
        text = permission_admin.scope_text(value)
        expected = "all" if value is True else value
        assert permission_admin.scope_json(text, "x") == expected
    assert permission_admin.scope_text(False) == ""
    assert permission_admin.scope_json("", "x") is None


# In Chromium


def test_grid_in_chromium(
    page: Page, app: Flask, platform: Platform, rep: Actor, accounts: list[str]
) -> None:
    console = Console(page)
    with serve_wsgi(app) as base_url:
        page.goto(f"{base_url}/t/acme/login")
        page.fill("#email", ADMIN_EMAIL)
        page.fill("#password", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.goto(f"{base_url}/t/acme/roles/sales_rep")
        page.select_option("select[name='account:read']", "all")
        page.click("form[data-testid=grantee-form] button[type=submit]")
        expect(page).to_have_url(f"{base_url}/t/acme/roles")
        page.goto(
            f"{base_url}/t/acme/access?user={rep.user_id}&entity=account"
            f"&record_id={accounts[1]}"
        )
        expect(page.locator("[data-testid=right-read]")).to_have_attribute(
            "data-allowed", "yes"
        )
    assert listed(platform, rep) == set(accounts)
    assert console.csp_violations() == []
