"""The business processes of the standard CRM template, run end to end.

Each test drives one process of ``tenant_definitions/standard_crm`` the way
members do, through ``RecordService`` and ``WorkflowService``: lead
conversion, the sales pipeline, case handling with its service-level
escalation, contract approval with its renewal reminder, and the survey
sent when a case closes. Time triggers run through ``run_time_triggers``
with an explicit clock.
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from crm_platform import notifications, webhooks
from crm_platform.automation import run_time_triggers
from crm_platform.control import Actor
from crm_platform.errors import Conflict, Forbidden, RecordInvalid
from crm_platform.querying import ListQuery
from crm_platform.records import RecordService
from crm_platform.sharing import SharingService
from crm_platform.tenancy import Platform, TenantRuntime
from crm_platform.workflows import WorkflowService
from tests.conftest import make_member

pytestmark = pytest.mark.both_backends

HOUR = dt.timedelta(hours=1)
@dataclass
class Team:
    """Members of the ``acme`` tenant: a sales rep and a service agent who
    report to the sales manager, who reports to a sales director, and a
    read-only member."""

    platform: Platform
    runtime: TenantRuntime
    rep: Actor
    manager: Actor
    director: Actor
    agent: Actor
    reader: Actor

    def records(self, actor: Actor) -> RecordService:
        return self.platform.records(self.runtime, actor)

    def flows(self, actor: Actor) -> WorkflowService:
        return WorkflowService(self.records(actor))

    def inbox(self, actor: Actor) -> list[str]:
        with self.runtime.engine.connect() as conn:
            found = notifications.for_user(conn, actor.user_id)
        return [str(item.message.get("en")) for item in found]


@pytest.fixture
def team(platform: Platform, crm: TenantRuntime, admin: Actor) -> Team:
    def member(email: str, role: str) -> Actor:
        return make_member(platform, crm.slug, email, role)

    result = Team(
        platform,
        crm,
        rep=member("rep@acme.example", "sales_rep"),
        manager=member("manager@acme.example", "sales_manager"),
        director=member("director@acme.example", "sales_manager"),
        agent=member("agent@acme.example", "service_agent"),
        reader=member("reader@acme.example", "read_only"),
    )
    sharing = SharingService(platform, crm, admin)
    sharing.set_manager(result.rep.user_id, result.manager.user_id)
    sharing.set_manager(result.agent.user_id, result.manager.user_id)
    sharing.set_manager(result.manager.user_id, result.director.user_id)
    return result


def rows(service: RecordService, entity: str) -> list[dict[str, Any]]:
    return service.list(entity, ListQuery(limit=100)).records


def move(team: Team, actor: Actor, entity: str, record_id: str,
         *names: str) -> dict[str, Any]:
    """Take the transitions ``names`` in order and return the record."""
    flows = team.flows(actor)
    for name in names:
        flows.transition(entity, record_id, name)
    return team.records(actor).get(entity, record_id)


# Lead qualification and conversion ------------------------------------------


def qualified_lead(team: Team) -> dict[str, Any]:
    lead = team.records(team.rep).create("lead", {
        "name": "Ann Lee", "company": "Lee Logistics", "email": "ann@lee.example",
        "phone": "+44 20 7946 0000", "industry": "retail",
        "estimated_value": "12000", "description": "Needs 40 fleet SIMs.",
    })
    return move(team, team.rep, "lead", lead["id"], "mark_contacted", "qualify")


def test_lead_starts_new(team: Team) -> None:
    lead = team.records(team.rep).create("lead", {"name": "Ann Lee"})
    assert lead["status"] == "new"


def test_lead_status_edit_rejected(team: Team) -> None:
    rep = team.records(team.rep)
    lead = rep.create("lead", {"name": "Ann Lee"})
    with pytest.raises(RecordInvalid, match="mark_contacted"):
        rep.update("lead", lead["id"], {"status": "contacted"})


def test_qualify_needs_company(team: Team) -> None:
    lead = team.records(team.rep).create("lead", {"name": "Ann Lee"})
    flows = team.flows(team.rep)
    flows.transition("lead", lead["id"], "mark_contacted")
    with pytest.raises(RecordInvalid, match="fill in company") as missing:
        flows.transition("lead", lead["id"], "qualify")
    assert "company" in missing.value.details


def test_disqualify_needs_reason(team: Team) -> None:
    lead = team.records(team.rep).create("lead", {"name": "Ann Lee"})
    flows = team.flows(team.rep)
    with pytest.raises(RecordInvalid, match="fill in description"):
        flows.transition("lead", lead["id"], "disqualify")
    flows.transition("lead", lead["id"], "disqualify",
                     {"description": "Student project, no budget."})
    again = move(team, team.rep, "lead", lead["id"], "reconsider")
    assert again["status"] == "contacted"


def test_convert_creates_account(team: Team) -> None:
    lead = qualified_lead(team)
    team.flows(team.rep).transition("lead", lead["id"], "convert")
    rep = team.records(team.rep)
    [account] = rows(rep, "account")
    assert account["name"] == "Lee Logistics"
    assert account["industry"] == "retail"
    assert account["owner_id"] == team.rep.user_id


def test_convert_links_contact_and_opportunity(team: Team) -> None:
    lead = qualified_lead(team)
    team.flows(team.rep).transition("lead", lead["id"], "convert")
    rep = team.records(team.rep)
    [account], [contact] = rows(rep, "account"), rows(rep, "contact")
    [opportunity] = rows(rep, "opportunity")
    assert contact["name"] == "Ann Lee"
    assert contact["account"] == account["id"]
    assert contact["email"] == "ann@lee.example"
    assert opportunity["account"] == account["id"]
    assert opportunity["contact"] == contact["id"]
    assert opportunity["amount"] == decimal.Decimal("12000")
    assert opportunity["stage"] == "prospecting"


def test_convert_links_lead(team: Team) -> None:
    lead = qualified_lead(team)
    outcome = team.flows(team.rep).transition("lead", lead["id"], "convert")
    rep = team.records(team.rep)
    stored = rep.get("lead", lead["id"])
    assert outcome.record == stored
    assert stored["status"] == "converted"
    assert stored["converted_account"] == rows(rep, "account")[0]["id"]
    assert stored["converted_contact"] == rows(rep, "contact")[0]["id"]
    assert stored["converted_opportunity"] == rows(rep, "opportunity")[0]["id"]


def test_reader_cannot_move_lead(team: Team) -> None:
    lead = team.records(team.manager).create("lead", {"name": "Ann Lee"})
    with pytest.raises(Forbidden, match="may not edit"):
        team.flows(team.reader).transition("lead", lead["id"], "mark_contacted")


# Sales pipeline -------------------------------------------------------------


def new_opportunity(team: Team, **values: Any) -> dict[str, Any]:
    rep = team.records(team.rep)
    account = rep.create("account", {"name": "Lee Logistics"})
    return rep.create("opportunity", {
        "name": "Fleet SIMs", "account": account["id"], **values,
    })


def test_proposal_needs_amount(team: Team) -> None:
    opportunity = new_opportunity(team)
    flows = team.flows(team.rep)
    flows.transition("opportunity", opportunity["id"], "qualify")
    with pytest.raises(RecordInvalid, match="fill in amount"):
        flows.transition("opportunity", opportunity["id"], "propose")
    with pytest.raises(RecordInvalid, match="amount greater than zero"):
        flows.transition("opportunity", opportunity["id"], "propose",
                         {"amount": "0"})


def test_pipeline_sets_probability(team: Team) -> None:
    today = dt.date.today().isoformat()
    opportunity = new_opportunity(team, amount="5000", close_date=today)
    flows = team.flows(team.rep)
    seen = []
    for name in ("qualify", "propose", "negotiate", "close_won"):
        moved = flows.transition("opportunity", opportunity["id"], name)
        seen.append((moved.record["stage"], moved.record["probability"]))
    assert seen == [
        ("qualification", 25), ("proposal", 50), ("negotiation", 75),
        ("closed_won", 100),
    ]


def test_back_steps_lower_probability(team: Team) -> None:
    opportunity = new_opportunity(team, amount="5000", close_date="2030-01-31")
    moved = move(team, team.rep, "opportunity", opportunity["id"],
                 "qualify", "propose", "negotiate", "revise_proposal")
    assert (moved["stage"], moved["probability"]) == ("proposal", 50)
    moved = move(team, team.rep, "opportunity", opportunity["id"], "requalify")
    assert (moved["stage"], moved["probability"]) == ("qualification", 25)


def test_close_won_needs_close_date(team: Team) -> None:
    opportunity = new_opportunity(team, amount="5000")
    move(team, team.rep, "opportunity", opportunity["id"], "qualify", "propose")
    flows = team.flows(team.rep)
    with pytest.raises(RecordInvalid, match="fill in close_date"):
        flows.transition("opportunity", opportunity["id"], "close_won")
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    with pytest.raises(RecordInvalid, match="not a future date"):
        flows.transition("opportunity", opportunity["id"], "close_won",
                         {"close_date": tomorrow})


def test_close_lost_needs_reason(team: Team) -> None:
    opportunity = new_opportunity(team)
    flows = team.flows(team.rep)
    with pytest.raises(RecordInvalid, match="fill in loss_reason"):
        flows.transition("opportunity", opportunity["id"], "close_lost")
    lost = flows.transition("opportunity", opportunity["id"], "close_lost",
                            {"loss_reason": "competitor"})
    assert (lost.record["stage"], lost.record["probability"]) == ("closed_lost", 0)


def test_only_manager_reopens_lost(team: Team) -> None:
    opportunity = new_opportunity(team)
    team.flows(team.rep).transition("opportunity", opportunity["id"], "close_lost",
                                    {"loss_reason": "timing"})
    with pytest.raises(Forbidden, match="only the roles sales_manager"):
        team.flows(team.rep).transition("opportunity", opportunity["id"], "reopen")
    reopened = team.flows(team.manager).transition(
        "opportunity", opportunity["id"], "reopen"
    )
    assert reopened.record["stage"] == "qualification"
    assert reopened.record["loss_reason"] is None


# Case handling and escalation -----------------------------------------------


def new_case(team: Team, **values: Any) -> dict[str, Any]:
    return team.records(team.agent).create("case", {
        "subject": "Router drops the line", "type": "complaint", **values,
    })


def test_resolve_needs_resolution(team: Team) -> None:
    case = new_case(team)
    move(team, team.agent, "case", case["id"], "assign", "start_work")
    flows = team.flows(team.agent)
    with pytest.raises(RecordInvalid, match="fill in resolution"):
        flows.transition("case", case["id"], "resolve")
    resolved = flows.transition("case", case["id"], "resolve",
                                {"resolution": "Replaced the router."})
    assert resolved.record["status"] == "resolved"
    assert resolved.record["resolved_at"] is not None


def test_assign_notifies_owner(team: Team) -> None:
    case = new_case(team)
    team.flows(team.agent).transition("case", case["id"], "assign")
    [message] = team.inbox(team.agent)
    assert message.endswith("is assigned to you: Router drops the line")


def test_reopen_clears_resolved_at(team: Team) -> None:
    case = new_case(team)
    move(team, team.agent, "case", case["id"], "assign")
    team.flows(team.agent).transition("case", case["id"], "resolve",
                                      {"resolution": "Reset the line."})
    reopened = move(team, team.agent, "case", case["id"], "close", "reopen")
    assert reopened["status"] == "in_progress"
    assert reopened["resolved_at"] is None


def test_sales_manager_cannot_handle_case(team: Team) -> None:
    case = new_case(team)
    with pytest.raises(Forbidden):
        team.flows(team.manager).transition("case", case["id"], "assign")


def test_sla_escalates_after_day(team: Team) -> None:
    case = new_case(team, priority="low")
    created = case["created_at"]
    assert run_time_triggers(team.platform, team.runtime, created + 23 * HOUR) == 0
    assert run_time_triggers(team.platform, team.runtime, created + 25 * HOUR) == 1
    stored = team.records(team.agent).get("case", case["id"])
    assert stored["priority"] == "urgent"
    [message] = team.inbox(team.manager)
    assert "breached its 24-hour service level" in message


def test_sla_runs_once_per_case(team: Team) -> None:
    case = new_case(team)
    later = case["created_at"] + 25 * HOUR
    assert run_time_triggers(team.platform, team.runtime, later) == 1
    assert run_time_triggers(team.platform, team.runtime, later + HOUR) == 0
    assert len(team.inbox(team.manager)) == 1


def test_sla_spares_started_case(team: Team) -> None:
    case = new_case(team, priority="low")
    move(team, team.agent, "case", case["id"], "assign", "start_work")
    later = case["created_at"] + 25 * HOUR
    assert run_time_triggers(team.platform, team.runtime, later) == 0
    assert team.records(team.agent).get("case", case["id"])["priority"] == "low"
    assert team.inbox(team.manager) == []


# Satisfaction survey --------------------------------------------------------


def closed_case(team: Team) -> dict[str, Any]:
    manager = team.records(team.manager)
    account = manager.create("account", {"name": "Lee Logistics"})
    contact = manager.create("contact", {"name": "Ann Lee", "account": account["id"]})
    case = new_case(team, account=account["id"], contact=contact["id"])
    move(team, team.agent, "case", case["id"], "assign")
    team.flows(team.agent).transition("case", case["id"], "resolve",
                                      {"resolution": "Replaced the router."})
    return move(team, team.agent, "case", case["id"], "close")


def test_closing_case_creates_survey(team: Team) -> None:
    case = closed_case(team)
    [survey] = rows(team.records(team.agent), "survey")
    assert survey["case"] == case["id"]
    assert survey["account"] == case["account"]
    assert survey["contact"] == case["contact"]
    assert survey["status"] == "draft"
    assert survey["name"] == "Satisfaction: Router drops the line"


def test_survey_event_skipped_without_endpoint(team: Team) -> None:
    closed_case(team)
    query = sa.select(webhooks.DELIVERIES.c.endpoint, webhooks.DELIVERIES.c.status)
    with team.runtime.engine.connect() as conn:
        logged = [tuple(row) for row in conn.execute(query)]
    assert logged == [("surveys", "skipped")]


def test_survey_event_queued_for_endpoint(team: Team) -> None:
    webhooks.add_endpoint(team.runtime.engine, team.platform.key_ring, "surveys",
                          "https://surveys.example/hooks/metacrm")
    case = closed_case(team)
    query = sa.select(webhooks.OUTBOX.c.endpoint, webhooks.OUTBOX.c.event,
                      webhooks.OUTBOX.c.payload)
    with team.runtime.engine.connect() as conn:
        [(endpoint, event, payload)] = [tuple(row) for row in conn.execute(query)]
    assert (endpoint, event) == ("surveys", "survey.requested")
    assert payload["entity"] == "survey"
    assert payload["record"]["case"] == case["id"]


def test_reopened_case_surveyed_again(team: Team) -> None:
    case = closed_case(team)
    move(team, team.agent, "case", case["id"], "reopen")
    team.flows(team.agent).transition("case", case["id"], "resolve",
                                      {"resolution": "Replaced the cable too."})
    move(team, team.agent, "case", case["id"], "close")
    assert len(rows(team.records(team.agent), "survey")) == 2


# Contract approval and renewal ----------------------------------------------
# The sales manager drafts contracts and requests their activation, and the
# sales director, the manager's manager, approves it.


def draft_contract(team: Team, end: dt.date) -> dict[str, Any]:
    manager = team.records(team.manager)
    account = manager.create("account", {"name": "Lee Logistics"})
    return manager.create("contract", {
        "name": "Fleet SIMs 2027", "account": account["id"], "value": "48000",
        "start_date": (end - dt.timedelta(days=365)).isoformat(),
        "end_date": end.isoformat(),
    })


def active_contract(team: Team, end: dt.date) -> dict[str, Any]:
    contract = draft_contract(team, end)
    asked = team.flows(team.manager).transition("contract", contract["id"],
                                                "activate")
    assert asked.request is not None
    team.flows(team.director).decide(asked.request.id, approve=True)
    return team.records(team.manager).get("contract", contract["id"])


def imported_contract(team: Team, admin: Actor, status: str, end: dt.date) -> None:
    """Load a contract owned by the sales manager in ``status``, as an admin
    import of existing contracts may."""
    account = team.records(team.manager).create("account", {"name": "Lee Logistics"})
    result = team.records(admin).import_batch("contract", [{
        "name": "Fleet SIMs 2027", "account": account["id"], "status": status,
        "end_date": end.isoformat(), "owner_id": team.manager.user_id,
    }])
    assert result.errors == {}


def test_activation_waits_for_approval(team: Team) -> None:
    contract = draft_contract(team, dt.date(2027, 12, 31))
    asked = team.flows(team.manager).transition("contract", contract["id"],
                                                "activate")
    assert asked.status == "pending"
    stored = team.records(team.manager).get("contract", contract["id"])
    assert stored["status"] == "draft"
    [request] = team.flows(team.director).awaiting_me()
    assert request.record_id == contract["id"]


def test_approval_activates_contract(team: Team) -> None:
    contract = active_contract(team, dt.date(2027, 12, 31))
    assert contract["status"] == "active"
    [step, *_] = team.flows(team.manager).history("contract", contract["id"])
    assert step.approvers == (team.director.user_id,)
    assert step.actor_id == team.manager.user_id


def test_rejection_keeps_draft(team: Team) -> None:
    contract = draft_contract(team, dt.date(2027, 12, 31))
    asked = team.flows(team.manager).transition("contract", contract["id"],
                                                "activate")
    assert asked.request is not None
    team.flows(team.director).decide(asked.request.id, approve=False,
                                     comment="Check the price list first.")
    stored = team.records(team.manager).get("contract", contract["id"])
    assert stored["status"] == "draft"


def test_owner_without_manager_cannot_activate(team: Team) -> None:
    director = team.records(team.director)
    account = director.create("account", {"name": "Lee Logistics"})
    contract = director.create("contract", {
        "name": "Fleet", "account": account["id"],
        "start_date": "2027-01-01", "end_date": "2027-12-31",
    })
    with pytest.raises(Conflict, match="needs 1 approval"):
        team.flows(team.director).transition("contract", contract["id"], "activate")


def test_activation_checks_dates(team: Team) -> None:
    contract = draft_contract(team, dt.date(2027, 12, 31))
    with pytest.raises(RecordInvalid, match="end date must be after"):
        team.flows(team.manager).transition("contract", contract["id"], "activate",
                                            {"start_date": "2028-01-01"})


def test_rep_cannot_activate(team: Team) -> None:
    contract = draft_contract(team, dt.date(2027, 12, 31))
    with pytest.raises(Forbidden, match="may not edit Contracts"):
        team.flows(team.rep).transition("contract", contract["id"], "activate")


def test_expire_only_after_end(team: Team) -> None:
    contract = active_contract(team, dt.date.today() + dt.timedelta(days=10))
    with pytest.raises(RecordInvalid, match="only after its end date"):
        team.flows(team.manager).transition("contract", contract["id"], "expire")


def test_terminate_needs_reason(team: Team) -> None:
    contract = active_contract(team, dt.date(2027, 12, 31))
    flows = team.flows(team.manager)
    with pytest.raises(RecordInvalid, match="fill in termination_reason"):
        flows.transition("contract", contract["id"], "terminate")
    ended = flows.transition("contract", contract["id"], "terminate",
                             {"termination_reason": "Customer went bankrupt."})
    assert ended.record["status"] == "terminated"


def test_renewal_reminder_30_days_before(team: Team, admin: Actor) -> None:
    end = dt.date(2027, 12, 31)
    imported_contract(team, admin, "active", end)
    noon = dt.datetime(2027, 12, 31, 12, tzinfo=dt.UTC)
    assert run_time_triggers(team.platform, team.runtime,
                             noon - dt.timedelta(days=31)) == 0
    assert run_time_triggers(team.platform, team.runtime,
                             noon - dt.timedelta(days=29)) == 1
    assert team.inbox(team.manager) == [
        "Contract CON-00001 (Fleet SIMs 2027) ends on 2027-12-31: prepare its "
        "renewal."
    ]


def test_contract_expires_day_after_end(team: Team, admin: Actor) -> None:
    end = dt.date(2027, 12, 31)
    imported_contract(team, admin, "active", end)
    [contract] = rows(team.records(team.manager), "contract")
    last_day = dt.datetime(2027, 12, 31, 23, tzinfo=dt.UTC)
    run_time_triggers(team.platform, team.runtime, last_day)
    assert team.records(team.manager).get("contract", contract["id"])[
        "status"] == "active"
    run_time_triggers(team.platform, team.runtime, last_day + 2 * HOUR)
    stored = team.records(team.manager).get("contract", contract["id"])
    assert stored["status"] == "expired"
    [step, *_] = team.flows(team.manager).history("contract", contract["id"])
    assert (step.transition, step.comment) == (
        "expire", "automation rule 'contract_expiry'"
    )


def test_no_reminder_for_draft(team: Team, admin: Actor) -> None:
    imported_contract(team, admin, "draft", dt.date(2027, 12, 31))
    moment = dt.datetime(2027, 12, 2, 12, tzinfo=dt.UTC)
    assert run_time_triggers(team.platform, team.runtime, moment) == 0
    assert team.inbox(team.manager) == []


def test_overdue_follow_up_reminds_owner(team: Team) -> None:
    rep = team.records(team.rep)
    rep.create("activity", {"name": "Call Ann back", "type": "call",
                            "status": "planned", "due_at": "2027-03-01T09:00:00Z"})
    rep.create("activity", {"name": "Visit done", "type": "visit",
                            "status": "completed", "due_at": "2027-03-01T09:00:00Z"})
    due = dt.datetime(2027, 3, 1, 9, tzinfo=dt.UTC)
    assert run_time_triggers(team.platform, team.runtime, due + HOUR / 2) == 0
    assert run_time_triggers(team.platform, team.runtime, due + 2 * HOUR) == 1
    [message] = team.inbox(team.rep)
    assert message.startswith("Follow-up overdue: Call Ann back was due at 2027-03-01")
