"""Workflows: a record's state moves only through transitions, on every
write path, with guards, roles, required fields, approvals and history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crm_platform.control import Actor
from crm_platform.errors import Conflict, Forbidden, NotFound, RecordInvalid
from crm_platform.querying import ListQuery
from crm_platform.records import RecordService
from crm_platform.sharing import SharingService
from crm_platform.tenancy import Platform, TenantRuntime
from crm_platform.workflows import WorkflowService
from metadata_engine.loader import compile_documents
from tests.conftest import ADMIN_PASSWORD
from tests.definitions.builders import (
    documents,
    entity,
    field,
    problems_of,
    write_folder,
)

pytestmark = pytest.mark.both_backends

STATES = ("new", "assigned", "resolved", "closed")


def role(name: str) -> dict[str, Any]:
    rights = {"read": "all", "edit": "all", "create": True}
    return {"name": name, "label": name.title(),
            "entities": {"ticket": rights, "task": rights}}


def definition(**workflow_changes: Any) -> dict[str, Any]:
    result = documents(
        entity(
            "ticket",
            field("status", "picklist",
                  options=[{"value": v, "label": v} for v in STATES]),
            field("amount", "integer"),
            field("resolution", "long_text"),
        ),
        entity("task", field("ticket", "lookup", target="ticket",
                             on_delete="cascade")),
    )
    workflow = {
        "name": "handling",
        "label": {"en": "Handling", "zh-CN": "处理"},
        "entity": "ticket",
        "field": "status",
        "initial": "new",
        "transitions": [
            {"name": "assign", "label": "Assign", "from": ["new"], "to": "assigned",
             "roles": ["agent"],
             "actions": [{"type": "create_record", "entity": "task",
                          "values": {"name": "'Work on ' + name",
                                     "ticket": "id"}}]},
            {"name": "resolve", "label": "Resolve", "from": ["assigned"],
             "to": "resolved", "required_fields": ["resolution"],
             "when": "amount == null || amount < 1000",
             "guard_message": "Tickets of 1000 or more need approval."},
            {"name": "close", "label": "Close", "from": ["resolved"], "to": "closed",
             "approval": {"required": 1, "approvers": {"manager_of": "owner_id"}}},
        ],
    }
    workflow.update(workflow_changes)
    result["workflows/handling.json"] = workflow
    result["roles/agent.json"] = role("agent")
    result["roles/viewer.json"] = role("viewer")
    return result


@pytest.fixture
def runtime(platform: Platform, tmp_path: Path) -> TenantRuntime:
    folder = write_folder(tmp_path / "d", definition())
    return platform.create_tenant("desk", folder)


@pytest.fixture
def agent(platform: Platform, runtime: TenantRuntime) -> RecordService:
    actor = make_member(platform, runtime.slug, "agent@desk.example", "agent")
    return platform.records(runtime, actor)


@pytest.fixture
def admin(platform: Platform, runtime: TenantRuntime) -> RecordService:
    actor = make_member(platform, runtime.slug, "admin@desk.example", "admin")
    return platform.records(runtime, actor)


def make_member(
    platform: Platform, slug: str, email: str, role: str
) -> Actor:
    tenant = platform.control.get_tenant(slug)
    user_id = platform.control.create_user(email, ADMIN_PASSWORD)
    roles = platform.runtime(slug).definition.role_names
    platform.control.add_member(tenant, user_id, role, roles)
    actor = platform.control.actor(tenant, user_id)
    assert actor is not None
    return actor


def rows(service: RecordService, entity_name: str) -> list[dict[str, Any]]:
    return service.list(entity_name, ListQuery(limit=100)).records


def test_unknown_state_reported() -> None:
    problems = problems_of(lambda: compile_documents(definition(initial="open")))
    assert any("state 'open' is not an option" in p.message for p in problems)


def test_bad_guard_reported_with_position() -> None:
    docs = definition()
    docs["workflows/handling.json"]["transitions"][1]["when"] = "amount < < 3"
    problems = problems_of(lambda: compile_documents(docs))
    found = [p for p in problems if p.pointer == "/transitions/1/when"]
    assert found and "column" in found[0].message


def test_new_record_starts_in_initial_state(agent: RecordService) -> None:
    ticket = agent.create("ticket", {"name": "Printer"})
    assert ticket["status"] == "new"


def test_create_in_other_state_refused(agent: RecordService) -> None:
    with pytest.raises(RecordInvalid, match="starts in state 'new'"):
        agent.create("ticket", {"name": "Printer", "status": "closed"})


def test_update_of_state_refused(agent: RecordService) -> None:
    ticket = agent.create("ticket", {"name": "Printer"})
    with pytest.raises(RecordInvalid, match="use the transition 'assign'"):
        agent.update("ticket", ticket["id"], {"status": "assigned"})


def test_import_update_of_state_refused(admin: RecordService) -> None:
    admin.create("ticket", {"name": "Printer"})
    result = admin.import_batch("ticket", [{"name": "Printer", "status": "closed"}],
                                key="name")
    assert 0 in result.errors
    assert rows(admin, "ticket")[0]["status"] == "new"


def test_transition_moves_and_records_history(
    agent: RecordService, runtime: TenantRuntime
) -> None:
    ticket = agent.create("ticket", {"name": "Printer"})
    flows = WorkflowService(agent)
    outcome = flows.transition("ticket", ticket["id"], "assign", comment="mine")
    assert outcome.record["status"] == "assigned"
    history = flows.history("ticket", ticket["id"])
    assert [(h.from_state, h.to_state, h.comment) for h in history] == [
        ("new", "assigned", "mine")
    ]
    tasks = rows(agent, "task")
    assert [t["name"] for t in tasks] == ["Work on Printer"]


def test_role_not_listed_forbidden(
    platform: Platform, runtime: TenantRuntime, agent: RecordService
) -> None:
    viewer = make_member(platform, runtime.slug, "viewer@desk.example", "viewer")
    ticket = agent.create("ticket", {"name": "Printer"})
    with pytest.raises(Forbidden, match="only the roles agent"):
        WorkflowService(platform.records(runtime, viewer)).transition(
            "ticket", ticket["id"], "assign"
        )


def test_wrong_state_conflicts(agent: RecordService) -> None:
    ticket = agent.create("ticket", {"name": "Printer"})
    with pytest.raises(Conflict, match="is in state 'new'"):
        WorkflowService(agent).transition("ticket", ticket["id"], "resolve")


def test_required_fields_and_guard(agent: RecordService) -> None:
    flows = WorkflowService(agent)
    ticket = agent.create("ticket", {"name": "Printer", "amount": 5000})
    flows.transition("ticket", ticket["id"], "assign")
    with pytest.raises(RecordInvalid, match="fill in resolution") as missing:
        flows.transition("ticket", ticket["id"], "resolve")
    assert "resolution" in missing.value.details
    with pytest.raises(RecordInvalid, match="need approval"):
        flows.transition("ticket", ticket["id"], "resolve",
                         {"resolution": "Replaced toner"})
    agent.update("ticket", ticket["id"], {"amount": 10})
    done = flows.transition("ticket", ticket["id"], "resolve",
                            {"resolution": "Replaced toner"})
    assert done.record["resolution"] == "Replaced toner"


def test_unknown_transition_not_found(agent: RecordService) -> None:
    ticket = agent.create("ticket", {"name": "Printer"})
    with pytest.raises(NotFound, match="its transitions are assign"):
        WorkflowService(agent).transition("ticket", ticket["id"], "reopen")


def resolved_ticket(agent: RecordService) -> str:
    flows = WorkflowService(agent)
    ticket = agent.create("ticket", {"name": "Printer"})
    flows.transition("ticket", ticket["id"], "assign")
    flows.transition("ticket", ticket["id"], "resolve", {"resolution": "Done"})
    return str(ticket["id"])


def test_approval_by_owners_manager(
    platform: Platform, runtime: TenantRuntime, agent: RecordService,
    admin: RecordService,
) -> None:
    boss = make_member(platform, runtime.slug, f"boss@{runtime.slug}.example",
                       "agent")
    SharingService(platform, runtime, admin.actor).set_manager(
        agent.actor.user_id, boss.user_id
    )
    ticket_id = resolved_ticket(agent)
    outcome = WorkflowService(agent).transition("ticket", ticket_id, "close")
    assert outcome.status == "pending"
    assert agent.get("ticket", ticket_id)["status"] == "resolved"
    boss_flows = WorkflowService(platform.records(runtime, boss))
    [request] = boss_flows.awaiting_me()
    decided = boss_flows.decide(request.id, approve=True, comment="ok")
    assert decided.status == "approved"
    assert agent.get("ticket", ticket_id)["status"] == "closed"
    [step, *_] = WorkflowService(agent).history("ticket", ticket_id)
    assert step.approvers == (boss.user_id,)
    assert step.actor_id == agent.actor.user_id


def test_approval_without_approvers_conflicts(agent: RecordService) -> None:
    ticket_id = resolved_ticket(agent)
    with pytest.raises(Conflict, match="needs 1 approval"):
        WorkflowService(agent).transition("ticket", ticket_id, "close")


def test_requester_cannot_approve(
    platform: Platform, runtime: TenantRuntime, agent: RecordService,
    admin: RecordService,
) -> None:
    boss = make_member(platform, runtime.slug, f"boss@{runtime.slug}.example",
                       "agent")
    SharingService(platform, runtime, admin.actor).set_manager(
        agent.actor.user_id, boss.user_id
    )
    ticket_id = resolved_ticket(agent)
    request = WorkflowService(agent).transition("ticket", ticket_id, "close").request
    assert request is not None
    with pytest.raises(Forbidden, match="cannot decide it"):
        WorkflowService(agent).decide(request.id, approve=True)


def test_rejection_keeps_state(
    platform: Platform, runtime: TenantRuntime, agent: RecordService,
    admin: RecordService,
) -> None:
    boss = make_member(platform, runtime.slug, f"boss@{runtime.slug}.example",
                       "agent")
    SharingService(platform, runtime, admin.actor).set_manager(
        agent.actor.user_id, boss.user_id
    )
    ticket_id = resolved_ticket(agent)
    request = WorkflowService(agent).transition("ticket", ticket_id, "close").request
    assert request is not None
    rejected = WorkflowService(platform.records(runtime, boss)).decide(
        request.id, approve=False, comment="not yet"
    )
    assert rejected.status == "rejected"
    assert agent.get("ticket", ticket_id)["status"] == "resolved"


def test_rule_transition_must_exist() -> None:
    docs = definition()
    docs["automations/auto_close.json"] = {
        "name": "auto_close", "label": "Auto close", "entity": "ticket",
        "trigger": {"on": "update"},
        "actions": [{"type": "transition", "name": "shut"}],
    }
    problems = problems_of(lambda: compile_documents(docs))
    assert any("has no workflow transition 'shut'" in p.message for p in problems)


def test_rule_cannot_take_approved_transition() -> None:
    docs = definition()
    docs["automations/auto_close.json"] = {
        "name": "auto_close", "label": "Auto close", "entity": "ticket",
        "trigger": {"on": "update"},
        "actions": [{"type": "transition", "name": "close"}],
    }
    problems = problems_of(lambda: compile_documents(docs))
    assert any("needs an approval" in p.message for p in problems)


def boss_of(
    platform: Platform, runtime: TenantRuntime, agent: RecordService,
    admin: RecordService,
) -> RecordService:
    boss = make_member(platform, runtime.slug, f"boss@{runtime.slug}.example",
                       "agent")
    SharingService(platform, runtime, admin.actor).set_manager(
        agent.actor.user_id, boss.user_id
    )
    return platform.records(runtime, boss)


def test_approval_rechecks_changed_record(
    platform: Platform, tmp_path: Path
) -> None:
    docs = definition()
    docs["workflows/handling.json"]["transitions"][2]["required_fields"] = [
        "resolution"
    ]
    runtime = platform.create_tenant("desk2", write_folder(tmp_path / "d2", docs))
    agent = platform.records(
        runtime, make_member(platform, "desk2", "agent@desk2.example", "agent")
    )
    admin = platform.records(
        runtime, make_member(platform, "desk2", "admin@desk2.example", "admin")
    )
    boss = boss_of(platform, runtime, agent, admin)
    ticket_id = resolved_ticket(agent)
    request = WorkflowService(agent).transition("ticket", ticket_id, "close").request
    assert request is not None
    agent.update("ticket", ticket_id, {"resolution": ""})
    with pytest.raises(Conflict, match="record changed since it was made"):
        WorkflowService(boss).decide(request.id, approve=True)
    assert WorkflowService(boss).get_request(request.id).status == "pending"
    assert agent.get("ticket", ticket_id)["status"] == "resolved"


def test_request_shows_values(
    platform: Platform, runtime: TenantRuntime, agent: RecordService,
    admin: RecordService,
) -> None:
    boss_of(platform, runtime, agent, admin)
    ticket_id = resolved_ticket(agent)
    outcome = WorkflowService(agent).transition("ticket", ticket_id, "close",
                                                {"amount": 12})
    assert outcome.request is not None
    assert outcome.request.as_json()["values"] == {"amount": 12}


def test_state_in_values_rejected(agent: RecordService) -> None:
    ticket = agent.create("ticket", {"name": "Printer"})
    with pytest.raises(RecordInvalid, match="'status' is the state"):
        WorkflowService(agent).transition("ticket", ticket["id"], "assign",
                                          {"status": "closed"})


def test_nul_comment_rejected(agent: RecordService) -> None:
    ticket = agent.create("ticket", {"name": "Printer"})
    with pytest.raises(RecordInvalid, match="control character"):
        WorkflowService(agent).transition("ticket", ticket["id"], "assign",
                                          comment="a\x00b")


def test_admin_cannot_decide_others_request(
    platform: Platform, runtime: TenantRuntime, agent: RecordService,
    admin: RecordService,
) -> None:
    boss_of(platform, runtime, agent, admin)
    ticket_id = resolved_ticket(agent)
    request = WorkflowService(agent).transition("ticket", ticket_id, "close").request
    assert request is not None
    with pytest.raises(Forbidden, match="not an approver"):
        WorkflowService(admin).decide(request.id, approve=True)


def test_delete_cancels_pending_request(
    platform: Platform, runtime: TenantRuntime, agent: RecordService,
    admin: RecordService,
) -> None:
    boss = boss_of(platform, runtime, agent, admin)
    ticket_id = resolved_ticket(agent)
    request = WorkflowService(agent).transition("ticket", ticket_id, "close").request
    assert request is not None
    admin.delete("ticket", ticket_id)
    assert WorkflowService(admin).awaiting_me() == []
    assert WorkflowService(boss).awaiting_me() == []


def test_options_judge_guard_on_record(agent: RecordService) -> None:
    flows = WorkflowService(agent)
    ticket = agent.create("ticket", {"name": "Printer", "amount": 5000})
    flows.transition("ticket", ticket["id"], "assign")
    [resolve] = flows.options("ticket", ticket["id"])
    assert (resolve.allowed, resolve.code) == (False, "guard")
    assert resolve.reason == "Tickets of 1000 or more need approval."


def test_unordered_types_reported() -> None:
    docs = definition()
    docs["workflows/handling.json"]["transitions"][1]["when"] = "name > 3"
    problems = problems_of(lambda: compile_documents(docs))
    assert any("orders a string against an int" in p.message for p in problems)
