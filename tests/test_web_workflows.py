"""Workflow transitions, approvals and notifications through the web UI
(Flask test client) and the REST API, on the ``ticket`` workflow of
tests/test_workflows.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm_platform.control import Actor
from crm_platform.records import RecordService
from crm_platform.sharing import SharingService
from crm_platform.tenancy import Platform, TenantRuntime
from crm_platform.workflows import WorkflowService
from tests.conftest import ADMIN_PASSWORD
from tests.definitions.builders import write_folder
from tests.test_web import csrf_token, sign_in
from tests.test_workflows import definition, make_member

pytestmark = pytest.mark.both_backends

#: Text that would run as script if a page failed to escape it.
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def runtime(platform: Platform, tmp_path: Path) -> TenantRuntime:
    folder = write_folder(tmp_path / "d", definition())
    return platform.create_tenant("desk", folder)


@pytest.fixture
def agent(platform: Platform, runtime: TenantRuntime) -> Actor:
    return make_member(platform, runtime.slug, "agent@desk.example", "agent")


@pytest.fixture
def boss(platform: Platform, runtime: TenantRuntime, agent: Actor) -> Actor:
    """The agent's manager, who approves closing the agent's tickets."""
    boss = make_member(platform, runtime.slug, "boss@desk.example", "agent")
    admin = make_member(platform, runtime.slug, "admin@desk.example", "admin")
    SharingService(platform, runtime, admin).set_manager(agent.user_id, boss.user_id)
    return boss


@pytest.fixture
def agent_records(platform: Platform, runtime: TenantRuntime, agent: Actor
                  ) -> RecordService:
    return platform.records(runtime, agent)


@pytest.fixture
def ticket(agent_records: RecordService) -> dict[str, Any]:
    return agent_records.create("ticket", {"name": "Printer", "amount": 10})


def browser_of(app: Flask, email: str) -> FlaskClient:
    client = app.test_client()
    response = sign_in(client, "desk", email, ADMIN_PASSWORD)
    assert response.status_code == 302
    return client


def detail(ticket: dict[str, Any]) -> str:
    return f"/t/desk/ticket/{ticket['id']}"


def take(client: FlaskClient, ticket: dict[str, Any], name: str,
         fields: dict[str, str] | None = None) -> Any:
    """Post the transition form of ``name`` from the detail page."""
    page = client.get(detail(ticket))
    data = {"csrf_token": csrf_token(page.text),
            "record_version": str(ticket["version"]), **(fields or {})}
    return client.post(f"{detail(ticket)}/transitions/{name}", data=data)


def resolve(service: RecordService, ticket_id: str) -> None:
    flows = WorkflowService(service)
    flows.transition("ticket", ticket_id, "assign")
    flows.transition("ticket", ticket_id, "resolve", {"resolution": "Done"})


def bearer(platform: Platform, runtime: TenantRuntime, actor: Actor
           ) -> dict[str, str]:
    token = platform.control.create_token(runtime.tenant, actor.user_id)
    return {"Authorization": f"Bearer {token}"}


# The detail page


def test_detail_shows_state_and_buttons(
    app: Flask, agent: Actor, ticket: dict[str, Any]
) -> None:
    client = browser_of(app, agent.email)
    page = client.get(detail(ticket)).text
    assert 'data-testid="workflow-state">new<' in page
    assert 'data-testid="transition-assign"' in page
    assert 'data-testid="transition-history"' in page


def test_refused_transition_button_disabled(
    app: Flask, platform: Platform, runtime: TenantRuntime, ticket: dict[str, Any]
) -> None:
    viewer = make_member(platform, runtime.slug, "viewer@desk.example", "viewer")
    page = browser_of(app, viewer.email).get(detail(ticket)).text
    assert "Only these roles may do this: agent." in page
    assert 'action="/t/desk/ticket/' + ticket["id"] + '/transitions/assign"' \
        not in page


def test_transition_moves_and_shows_history(
    app: Flask, agent: Actor, ticket: dict[str, Any],
    agent_records: RecordService,
) -> None:
    client = browser_of(app, agent.email)
    response = take(client, ticket, "assign", {"assign-comment": "on it"})
    assert response.status_code == 302
    assert agent_records.get("ticket", ticket["id"])["status"] == "assigned"
    page = client.get(detail(ticket)).text
    assert "“Assign” done." in page
    assert 'data-testid="transition-step"' in page
    assert "on it" in page


def test_missing_required_field_shown(
    app: Flask, agent: Actor, ticket: dict[str, Any],
    agent_records: RecordService,
) -> None:
    client = browser_of(app, agent.email)
    take(client, ticket, "assign")
    moved = agent_records.get("ticket", ticket["id"])
    response = take(client, moved, "resolve", {"resolve-f_resolution": ""})
    assert response.status_code == 422
    assert 'data-testid="transition-error"' in response.text
    assert "“Resolve” was not done." in response.text
    assert agent_records.get("ticket", ticket["id"])["status"] == "assigned"


def test_guard_message_shown(
    app: Flask, agent: Actor, agent_records: RecordService
) -> None:
    ticket = agent_records.create("ticket", {"name": "Big", "amount": 5000})
    client = browser_of(app, agent.email)
    take(client, ticket, "assign")
    moved = agent_records.get("ticket", ticket["id"])
    response = take(client, moved, "resolve", {"resolve-f_resolution": "Fixed"})
    assert response.status_code == 422
    assert "Tickets of 1000 or more need approval." in response.text


def test_stale_version_conflict_shown(
    app: Flask, agent: Actor, ticket: dict[str, Any],
    agent_records: RecordService,
) -> None:
    client = browser_of(app, agent.email)
    agent_records.update("ticket", ticket["id"], {"amount": 20})
    response = take(client, ticket, "assign")
    assert response.status_code == 412
    assert "Someone else changed this record" in response.text


def test_stale_state_conflict_shown(
    app: Flask, agent: Actor, ticket: dict[str, Any],
    agent_records: RecordService,
) -> None:
    client = browser_of(app, agent.email)
    page = client.get(detail(ticket)).text
    WorkflowService(agent_records).transition("ticket", ticket["id"], "assign")
    response = client.post(f"{detail(ticket)}/transitions/assign",
                           data={"csrf_token": csrf_token(page)})
    assert response.status_code == 409
    assert "“Assign” was not done." in response.text
    assert "is in state &#39;assigned&#39;" in response.text


def test_transition_without_csrf_rejected(
    app: Flask, agent: Actor, ticket: dict[str, Any],
    agent_records: RecordService,
) -> None:
    client = browser_of(app, agent.email)
    response = client.post(f"{detail(ticket)}/transitions/assign", data={})
    assert response.status_code == 400
    assert agent_records.get("ticket", ticket["id"])["status"] == "new"


def test_comment_is_escaped(
    app: Flask, agent: Actor, ticket: dict[str, Any]
) -> None:
    client = browser_of(app, agent.email)
    take(client, ticket, "assign", {"assign-comment": SCRIPT})
    page = client.get(detail(ticket)).text
    assert SCRIPT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_edit_form_shows_state_read_only(
    app: Flask, agent: Actor, ticket: dict[str, Any]
) -> None:
    page = browser_of(app, agent.email).get(f"{detail(ticket)}/edit").text
    assert 'name="f_status"' not in page
    assert 'data-field="status"' in page


def test_edit_form_save_keeps_state(
    app: Flask, agent: Actor, ticket: dict[str, Any],
    agent_records: RecordService,
) -> None:
    client = browser_of(app, agent.email)
    page = client.get(f"{detail(ticket)}/edit").text
    data = {"csrf_token": csrf_token(page), "record_version": "1",
            "f_name": "Printer 2", "f_amount": "10", "f_status": "closed"}
    response = client.post(f"{detail(ticket)}/edit", data=data)
    assert response.status_code == 302
    saved = agent_records.get("ticket", ticket["id"])
    assert saved["name"] == "Printer 2"
    assert saved["status"] == "new"


# Approvals and notifications


def test_approval_from_approvals_page(
    app: Flask, boss: Actor, agent: Actor, ticket: dict[str, Any],
    agent_records: RecordService,
) -> None:
    resolve(agent_records, ticket["id"])
    moved = agent_records.get("ticket", ticket["id"])
    requested = take(browser_of(app, agent.email), moved, "close")
    assert requested.status_code == 302
    assert agent_records.get("ticket", ticket["id"])["status"] == "resolved"

    client = browser_of(app, boss.email)
    page = client.get("/t/desk/approvals").text
    assert 'data-testid="approval-row"' in page
    [request] = WorkflowService(agent_records).requests("ticket", ticket["id"])
    response = client.post(f"/t/desk/approvals/{request.id}/approve",
                           data={"csrf_token": csrf_token(page), "comment": "ok"})
    assert response.status_code == 302
    assert agent_records.get("ticket", ticket["id"])["status"] == "closed"


def test_requester_may_withdraw(
    app: Flask, boss: Actor, agent: Actor, ticket: dict[str, Any],
    agent_records: RecordService,
) -> None:
    resolve(agent_records, ticket["id"])
    WorkflowService(agent_records).transition("ticket", ticket["id"], "close")
    client = browser_of(app, agent.email)
    page = client.get(detail(ticket)).text
    assert 'data-testid="withdraw"' in page
    assert 'data-testid="approve"' not in page
    [request] = WorkflowService(agent_records).requests("ticket", ticket["id"])
    client.post(f"/t/desk/approvals/{request.id}/withdraw",
                data={"csrf_token": csrf_token(page)})
    [after] = WorkflowService(agent_records).requests("ticket", ticket["id"])
    assert after.status == "cancelled"


def test_second_decision_flashes_conflict(
    app: Flask, boss: Actor, agent_records: RecordService, ticket: dict[str, Any]
) -> None:
    resolve(agent_records, ticket["id"])
    request = WorkflowService(agent_records).transition(
        "ticket", ticket["id"], "close").request
    assert request is not None
    client = browser_of(app, boss.email)
    token = csrf_token(client.get("/t/desk/approvals").text)
    url = f"/t/desk/approvals/{request.id}/reject"
    client.post(url, data={"csrf_token": token})
    response = client.post(url, data={"csrf_token": token}, follow_redirects=True)
    assert response.status_code == 200
    assert "is rejected, not pending" in response.text


def test_unread_badge_and_mark_all(
    app: Flask, boss: Actor, agent_records: RecordService, ticket: dict[str, Any]
) -> None:
    resolve(agent_records, ticket["id"])
    WorkflowService(agent_records).transition("ticket", ticket["id"], "close")
    client = browser_of(app, boss.email)
    page = client.get("/t/desk/notifications").text
    assert 'data-testid="unread-count">1<' in page
    assert 'data-unread="true"' in page
    client.post("/t/desk/notifications/read-all",
                data={"csrf_token": csrf_token(page)})
    after = client.get("/t/desk/notifications").text
    assert 'data-testid="unread-count"' not in after
    assert 'data-unread="false"' in after


def test_mark_one_needs_csrf(
    app: Flask, boss: Actor, agent_records: RecordService, ticket: dict[str, Any]
) -> None:
    resolve(agent_records, ticket["id"])
    WorkflowService(agent_records).transition("ticket", ticket["id"], "close")
    client = browser_of(app, boss.email)
    page = client.get("/t/desk/notifications").text
    found = re.search(r"/t/desk/notifications/([0-9a-f-]{36})/read", page)
    assert found is not None
    notification_id = found.group(1)
    client.post(f"/t/desk/notifications/{notification_id}/read", data={})
    assert 'data-unread="true"' in client.get("/t/desk/notifications").text
    client.post(f"/t/desk/notifications/{notification_id}/read",
                data={"csrf_token": csrf_token(page)})
    assert 'data-unread="true"' not in client.get("/t/desk/notifications").text


def test_record_title_escaped_in_lists(
    app: Flask, boss: Actor, agent_records: RecordService
) -> None:
    ticket = agent_records.create("ticket", {"name": SCRIPT, "amount": 1})
    resolve(agent_records, ticket["id"])
    WorkflowService(agent_records).transition("ticket", ticket["id"], "close")
    client = browser_of(app, boss.email)
    notices = client.get("/t/desk/notifications").text
    approvals = client.get("/t/desk/approvals").text
    assert SCRIPT not in notices
    assert "&lt;script&gt;" in notices
    assert SCRIPT not in approvals
    assert "&lt;script&gt;" in approvals


def test_chinese_labels_on_detail(
    app: Flask, agent: Actor, ticket: dict[str, Any]
) -> None:
    client = browser_of(app, agent.email)
    page = client.get(detail(ticket) + "?lang=zh-CN", follow_redirects=True).text
    assert "处理" in page
    assert "流转记录" in page


# The API


def test_api_lists_transitions(
    app: Flask, platform: Platform, runtime: TenantRuntime, agent: Actor,
    ticket: dict[str, Any],
) -> None:
    client = app.test_client()
    response = client.get(f"/t/desk/api/v1/records/ticket/{ticket['id']}/transitions",
                          headers=bearer(platform, runtime, agent))
    data = response.get_json()["data"]
    assert response.status_code == 200
    assert [item["name"] for item in data["available"]] == ["assign"]
    assert data["available"][0]["allowed"] is True
    assert data["history"] == []


def test_api_transition_returns_record(
    app: Flask, platform: Platform, runtime: TenantRuntime, agent: Actor,
    ticket: dict[str, Any],
) -> None:
    response = app.test_client().post(
        f"/t/desk/api/v1/records/ticket/{ticket['id']}/transitions/assign",
        json={"comment": "mine", "version": ticket["version"]},
        headers=bearer(platform, runtime, agent))
    assert response.status_code == 200
    assert response.get_json()["data"]["status"] == "assigned"


def test_api_required_field_is_422(
    app: Flask, platform: Platform, runtime: TenantRuntime, agent: Actor,
    agent_records: RecordService, ticket: dict[str, Any],
) -> None:
    WorkflowService(agent_records).transition("ticket", ticket["id"], "assign")
    response = app.test_client().post(
        f"/t/desk/api/v1/records/ticket/{ticket['id']}/transitions/resolve",
        json={"values": {}}, headers=bearer(platform, runtime, agent))
    assert response.status_code == 422
    assert "resolution" in response.get_json()["error"]["details"]


def test_api_unknown_body_field_is_422(
    app: Flask, platform: Platform, runtime: TenantRuntime, agent: Actor,
    ticket: dict[str, Any],
) -> None:
    response = app.test_client().post(
        f"/t/desk/api/v1/records/ticket/{ticket['id']}/transitions/assign",
        json={"status": "closed"}, headers=bearer(platform, runtime, agent))
    assert response.status_code == 422
    assert "unknown fields 'status'" in response.get_json()["error"]["message"]


def test_api_approval_round_trip(
    app: Flask, platform: Platform, runtime: TenantRuntime, agent: Actor,
    boss: Actor, agent_records: RecordService, ticket: dict[str, Any],
) -> None:
    resolve(agent_records, ticket["id"])
    client = app.test_client()
    requested = client.post(
        f"/t/desk/api/v1/records/ticket/{ticket['id']}/transitions/close",
        json={"comment": "done"}, headers=bearer(platform, runtime, agent))
    assert requested.status_code == 202
    request_id = requested.get_json()["data"]["id"]
    boss_headers = bearer(platform, runtime, boss)
    awaiting = client.get("/t/desk/api/v1/approvals", headers=boss_headers)
    assert [r["id"] for r in awaiting.get_json()["data"]] == [request_id]
    approved = client.post(f"/t/desk/api/v1/approvals/{request_id}/approve",
                           json={"comment": "fine"}, headers=boss_headers)
    assert approved.status_code == 200
    assert approved.get_json()["data"]["status"] == "approved"
    assert agent_records.get("ticket", ticket["id"])["status"] == "closed"


def test_api_requester_cannot_approve(
    app: Flask, platform: Platform, runtime: TenantRuntime, agent: Actor,
    boss: Actor, agent_records: RecordService, ticket: dict[str, Any],
) -> None:
    resolve(agent_records, ticket["id"])
    request = WorkflowService(agent_records).transition(
        "ticket", ticket["id"], "close").request
    assert request is not None
    response = app.test_client().post(
        f"/t/desk/api/v1/approvals/{request.id}/approve",
        headers=bearer(platform, runtime, agent))
    assert response.status_code == 403


def test_api_notifications_unread_filter(
    app: Flask, platform: Platform, runtime: TenantRuntime, boss: Actor,
    agent_records: RecordService, ticket: dict[str, Any],
) -> None:
    resolve(agent_records, ticket["id"])
    WorkflowService(agent_records).transition("ticket", ticket["id"], "close")
    client = app.test_client()
    headers = bearer(platform, runtime, boss)
    [item] = client.get("/t/desk/api/v1/notifications?unread=true",
                        headers=headers).get_json()["data"]
    assert item["read"] is False
    marked = client.post(f"/t/desk/api/v1/notifications/{item['id']}/read",
                         headers=headers)
    assert marked.get_json()["data"]["marked"] == 1
    unread = client.get("/t/desk/api/v1/notifications?unread=true", headers=headers)
    assert unread.get_json()["data"] == []


def test_api_other_members_notification_missing(
    app: Flask, platform: Platform, runtime: TenantRuntime, boss: Actor,
    agent: Actor, agent_records: RecordService, ticket: dict[str, Any],
) -> None:
    resolve(agent_records, ticket["id"])
    WorkflowService(agent_records).transition("ticket", ticket["id"], "close")
    client = app.test_client()
    [item] = client.get("/t/desk/api/v1/notifications",
                        headers=bearer(platform, runtime, boss)).get_json()["data"]
    response = client.post(f"/t/desk/api/v1/notifications/{item['id']}/read",
                           headers=bearer(platform, runtime, agent))
    assert response.status_code == 404


def test_api_bad_unread_value_is_400(
    app: Flask, platform: Platform, runtime: TenantRuntime, agent: Actor
) -> None:
    response = app.test_client().get("/t/desk/api/v1/notifications?unread=maybe",
                                     headers=bearer(platform, runtime, agent))
    assert response.status_code == 400


def test_approvals_page_shows_values(
    app: Flask, boss: Actor, ticket: dict[str, Any], agent_records: RecordService,
) -> None:
    resolve(agent_records, ticket["id"])
    WorkflowService(agent_records).transition("ticket", ticket["id"], "close",
                                              {"amount": 4321})
    page = browser_of(app, boss.email).get("/t/desk/approvals").text
    assert 'data-testid="approval-values"' in page
    assert "4321" in page
