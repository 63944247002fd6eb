"""The "why" endpoint and page: each right of one member on one record, with
the grant, sharing rule or share behind it, on the standard template."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from crm_platform.control import Actor
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import STANDARD_CRM, make_member
from tests.test_openapi import component_validator
from tests.test_web import sign_in

pytestmark = pytest.mark.both_backends

Headers = dict[str, str]
REP_EMAIL = "rep@example.com"
OTHER_REP_EMAIL = "rep2@example.com"
AGENT_EMAIL = "agent@example.com"


class Tenant:
    """Members and records of the ``acme`` tenant that the tests ask about."""

    def __init__(self, platform: Platform, crm: TenantRuntime, admin: Actor) -> None:
        self.platform = platform
        self.admin = admin
        self.rep = make_member(platform, "acme", REP_EMAIL, "sales_rep")
        self.other_rep = make_member(platform, "acme", OTHER_REP_EMAIL, "sales_rep")
        self.agent = make_member(platform, "acme", AGENT_EMAIL, "service_agent")
        service = platform.records(crm, admin)
        self.rep_account = service.create(
            "account", {"name": "Rep's account", "owner_id": self.rep.user_id}
        )["id"]
        self.other_account = service.create(
            "account", {"name": "Other account", "owner_id": self.other_rep.user_id}
        )["id"]
        case = {
            "subject": "Outage",
            "type": "complaint",
            "priority": "high",
            "status": "new",
            "owner_id": self.rep.user_id,
        }
        self.urgent_case = service.create("case", case)["id"]
        self.quiet_case = service.create("case", {**case, "priority": "low"})["id"]

    def headers(self, actor: Actor) -> Headers:
        tenant = self.platform.control.get_tenant("acme")
        token = self.platform.control.create_token(tenant, actor.user_id)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def acme(platform: Platform, crm: TenantRuntime, admin: Actor) -> Tenant:
    return Tenant(platform, crm, admin)


def ask(client: FlaskClient, headers: Headers, **params: str) -> Any:
    return client.get("/t/acme/api/v1/access", query_string=params, headers=headers)


def reasons(body: Any, right: str) -> str:
    return " | ".join(body["rights"][right]["reasons"])


def test_own_record_read_by_scope(client: FlaskClient, acme: Tenant) -> None:
    response = ask(
        client, acme.headers(acme.rep), entity="account", record_id=acme.rep_account
    )
    assert response.status_code == 200, response.text
    body = response.json
    assert body["user"]["id"] == acme.rep.user_id
    assert body["role"] == "sales_rep"
    assert body["rights"]["read"]["allowed"] is True
    assert "role sales_rep grants it on records the user owns" in reasons(body, "read")
    assert body["rights"]["create"]["allowed"] is True
    assert body["rights"]["export"]["allowed"] is False
    assert body["field"] is None


def test_answer_matches_openapi(client: FlaskClient, acme: Tenant) -> None:
    headers = acme.headers(acme.admin)
    document = client.get("/t/acme/api/v1/openapi.json", headers=headers).json
    assert "/access" in document["paths"]
    assert "/roles/{name}" in document["paths"]
    body = ask(
        client, headers, user=acme.rep.user_id, entity="contract", field="value"
    ).json
    component_validator(document, "AccessExplanation").validate(body)


def test_admin_asks_about_other(client: FlaskClient, acme: Tenant) -> None:
    response = ask(
        client,
        acme.headers(acme.admin),
        user=acme.rep.user_id,
        entity="account",
        record_id=acme.other_account,
    )
    assert response.status_code == 200, response.text
    body = response.json
    assert body["rights"]["read"]["allowed"] is False
    assert "no grant or rule covers this record" in reasons(body, "read")
    assert body["rights"]["change_owner"]["allowed"] is False


def test_admin_asks_by_email(client: FlaskClient, acme: Tenant) -> None:
    response = ask(
        client,
        acme.headers(acme.admin),
        user=REP_EMAIL.upper(),
        entity="account",
        record_id=acme.rep_account,
    )
    assert response.status_code == 200, response.text
    assert response.json["user"]["email"] == REP_EMAIL


def test_sharing_rule_gives_read(client: FlaskClient, acme: Tenant) -> None:
    headers = acme.headers(acme.admin)
    shared = ask(
        client,
        headers,
        user=acme.agent.user_id,
        entity="case",
        record_id=acme.urgent_case,
    ).json
    assert shared["rights"]["read"]["allowed"] is True
    assert "sharing rule 'high_priority_cases'" in reasons(shared, "read")
    assert shared["rights"]["edit"]["allowed"] is False
    quiet = ask(
        client,
        headers,
        user=acme.agent.user_id,
        entity="case",
        record_id=acme.quiet_case,
    ).json
    assert quiet["rights"]["read"]["allowed"] is False


def test_hidden_field_explained(client: FlaskClient, acme: Tenant) -> None:
    response = ask(
        client,
        acme.headers(acme.admin),
        user=acme.rep.user_id,
        entity="contract",
        field="value",
    )
    assert response.status_code == 200, response.text
    field = response.json["field"]
    assert field["level"] == "hidden"
    assert field["allowed"] is False
    assert "role sales_rep makes it hidden" in field["reasons"]


def test_unnamed_field_is_editable(client: FlaskClient, acme: Tenant) -> None:
    field = ask(
        client,
        acme.headers(acme.rep),
        entity="account",
        record_id=acme.rep_account,
        field="industry",
    ).json["field"]
    assert field["level"] == "editable"
    assert field["allowed"] is True


def test_without_record_lists_scopes(client: FlaskClient, acme: Tenant) -> None:
    body = ask(client, acme.headers(acme.rep), entity="account").json
    assert body["record_id"] is None
    assert body["rights"]["read"]["allowed"] is True
    assert "grants it on own records" in reasons(body, "read")


def test_admin_role_holds_everything(client: FlaskClient, acme: Tenant) -> None:
    body = ask(
        client, acme.headers(acme.admin), entity="account", record_id=acme.other_account
    ).json
    assert all(body["rights"][right]["allowed"] for right in body["rights"])
    assert "role admin holds every right" in reasons(body, "delete")


def test_member_asks_about_other(client: FlaskClient, acme: Tenant) -> None:
    response = ask(
        client,
        acme.headers(acme.rep),
        user=acme.other_rep.user_id,
        entity="account",
        record_id=acme.rep_account,
    )
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"


def test_unreadable_record_not_found(client: FlaskClient, acme: Tenant) -> None:
    response = ask(
        client, acme.headers(acme.rep), entity="account", record_id=acme.other_account
    )
    assert response.status_code == 404
    assert acme.other_account in response.json["error"]["message"]


def test_hidden_field_unknown_to_member(client: FlaskClient, acme: Tenant) -> None:
    response = ask(client, acme.headers(acme.rep), entity="contract", field="value")
    assert response.status_code == 422
    assert "unknown field 'value'" in response.json["error"]["message"]


def test_unknown_names_rejected(client: FlaskClient, acme: Tenant) -> None:
    headers = acme.headers(acme.admin)
    entity = ask(client, headers, entity="spaceship")
    assert entity.status_code == 404
    field = ask(client, headers, entity="account", field="colour")
    assert field.status_code == 422
    assert "unknown field 'colour'" in field.json["error"]["message"]
    missing = ask(client, headers)
    assert missing.status_code == 400
    assert "missing parameter 'entity'" in missing.json["error"]["message"]


def test_other_tenant_ids_not_found(
    client: FlaskClient, platform: Platform, acme: Tenant
) -> None:
    beta = platform.create_tenant("beta", STANDARD_CRM)
    stranger = make_member(platform, "beta", "stranger@example.com", "admin")
    record = platform.records(beta, stranger).create("account", {"name": "Beta"})
    headers = acme.headers(acme.admin)
    foreign_record = ask(client, headers, entity="account", record_id=record["id"])
    assert foreign_record.status_code == 404
    foreign_user = ask(client, headers, user=stranger.user_id, entity="account")
    assert foreign_user.status_code == 404
    foreign_email = ask(client, headers, user="stranger@example.com", entity="account")
    assert foreign_email.status_code == 404


def test_page_shows_reasons(client: FlaskClient, acme: Tenant) -> None:
    assert sign_in(client).status_code == 302
    page = client.get(
        "/t/acme/access",
        query_string={
            "user": acme.agent.user_id,
            "entity": "case",
            "record_id": acme.urgent_case,
            "field": "priority",
        },
    )
    assert page.status_code == 200, page.text
    assert 'data-testid="right-read" data-allowed="yes"' in page.text
    assert 'data-testid="right-delete" data-allowed="no"' in page.text
    assert "high_priority_cases" in page.text
    assert 'data-testid="field-answer" data-allowed="yes"' in page.text


def test_page_for_member_in_chinese(client: FlaskClient, acme: Tenant) -> None:
    assert sign_in(client, email=REP_EMAIL).status_code == 302
    page = client.get("/t/acme/access?lang=zh-CN", follow_redirects=True)
    assert page.status_code == 200, page.text
    assert "为什么我能看到这条记录？" in page.text
    assert 'id="access-user"' not in page.text


def test_page_hides_unreadable_record(client: FlaskClient, acme: Tenant) -> None:
    assert sign_in(client, email=REP_EMAIL).status_code == 302
    page = client.get(
        "/t/acme/access",
        query_string={"entity": "account", "record_id": acme.other_account},
    )
    assert page.status_code == 404
    assert 'data-testid="access-error"' in page.text
    assert 'data-testid="access-answer"' not in page.text


def test_record_page_links_why(client: FlaskClient, acme: Tenant) -> None:
    assert sign_in(client, email=REP_EMAIL).status_code == 302
    page = client.get(f"/t/acme/account/{acme.rep_account}")
    assert page.status_code == 200, page.text
    assert 'data-testid="record-access"' in page.text
    assert f"record_id={acme.rep_account}" in page.text
