"""The project_tracker example: Salesforce's PMT validation rules in CEL.

Each table lists records next to whether the Salesforce rule's error
condition holds for them, so a rule must reject exactly those records.
"""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crm_platform.cli import main
from crm_platform.errors import RecordInvalid
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform
from metadata_engine.loader import load_definition
from metadata_engine.model import Definition, Entity
from metadata_engine.record_rules import apply_record_rules
from tests.conftest import ADMIN_EMAIL, make_member

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "project_tracker"
ADMIN = {"id": "u-1", "role": "admin"}
JAN_1, JAN_10 = dt.date(2027, 1, 1), dt.date(2027, 1, 10)


@pytest.fixture(scope="module")
def definition() -> Definition:
    return load_definition(EXAMPLE)


def failed_rules(entity: Entity, record: dict[str, Any]) -> set[str]:
    """Return the names of the rules whose message the record gets."""
    errors = apply_record_rules(entity, dict(record), ADMIN)
    messages = {text for texts in errors.values() for text in texts}
    return {
        rule.name for rule in entity.validation_rules if rule.message.get() in messages
    }


def test_cli_validates_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METACRM_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "valid, 3 entities (project, property, task)" in result.output


# InitialStartDate_should_be_less:
# NOT(ISNULL(Initial_Start_Date__c)) && NOT(ISNULL(Initial_End_Date__c))
#   && Initial_End_Date__c < Initial_Start_Date__c
INITIAL_DATES = [
    (None, None, False),
    (JAN_1, None, False),
    (None, JAN_1, False),
    (JAN_1, JAN_1, False),
    (JAN_1, JAN_10, False),
    (JAN_10, JAN_1, True),
]


@pytest.mark.parametrize(("start", "end", "invalid"), INITIAL_DATES)
def test_initial_end_after_start(
    definition: Definition, start: Any, end: Any, invalid: bool
) -> None:
    record = {"name": "p", "initial_start_date": start, "initial_end_date": end}
    failed = failed_rules(definition.entity("project"), record)
    assert ("initial_end_after_start" in failed) is invalid


# Path_to_Green_should_be_blank:
# ISBLANK(Path_to_Green__c) && (ISPICKVAL(Project_Health__c, 'At Risk')
#   || ISPICKVAL(Project_Health__c, 'On Hold') || ISPICKVAL(Project_Health__c, 'Late'))
PATH_TO_GREEN = [
    (None, None, False),
    ("on_track", None, False),
    ("on_track", "Hire a second tester", False),
    ("at_risk", None, True),
    ("late", "", True),
    ("on_hold", None, True),
    ("at_risk", "Hire a second tester", False),
    ("late", "Cut scope", False),
    ("on_hold", "Wait for budget", False),
]


@pytest.mark.parametrize(("health", "path", "invalid"), PATH_TO_GREEN)
def test_path_to_green_required(
    definition: Definition, health: Any, path: Any, invalid: bool
) -> None:
    record = {"name": "p", "project_health": health, "path_to_green": path}
    failed = failed_rules(definition.entity("project"), record)
    assert ("path_to_green_required" in failed) is invalid


# SOX_Comment_Blank_SOX_Impact_unchecked:
#   AND(SOX_Comment__c <> '', SOX_Impact__c = false)
# SOX_comment_not_null_when_SOX_checked:
#   AND(SOX_Impact__c = TRUE, SOX_Comment__c = '')
# A Salesforce checkbox is never null; a missing sox_impact counts as false.
SOX = [
    (False, None, set()),
    (False, "", set()),
    (False, "Touches revenue", {"sox_comment_only_with_impact"}),
    (None, "Touches revenue", {"sox_comment_only_with_impact"}),
    (True, None, {"sox_comment_required"}),
    (True, "", {"sox_comment_required"}),
    (True, "Touches revenue", set()),
]


@pytest.mark.parametrize(("impact", "comment", "expected"), SOX)
def test_sox_rules(
    definition: Definition, impact: Any, comment: Any, expected: set[str]
) -> None:
    record = {"name": "p", "sox_impact": impact, "sox_comment": comment}
    assert failed_rules(definition.entity("project"), record) == expected


# Task_On_hold_Reason_not_null_if_On_Hold:
#   (TEXT(Status__c) = 'On Hold') && ISBLANK(On_Hold_Reason__c)
ON_HOLD = [
    ("on_hold", None, True),
    ("on_hold", "", True),
    ("on_hold", "Waiting for the vendor", False),
    ("in_progress", None, False),
    (None, None, False),
]


@pytest.mark.parametrize(("status", "reason", "invalid"), ON_HOLD)
def test_on_hold_reason_required(
    definition: Definition, status: Any, reason: Any, invalid: bool
) -> None:
    record = {"name": "t", "status": status, "on_hold_reason": reason}
    failed = failed_rules(definition.entity("task"), record)
    assert ("on_hold_reason_required" in failed) is invalid


# Task_start_date_less_than_end_date:
# NOT(ISNULL(Start_Date__c)) && NOT(ISNULL(Due_Date__c)) && Due_Date__c < Start_Date__c
@pytest.mark.parametrize(("start", "due", "invalid"), INITIAL_DATES)
def test_due_after_start(
    definition: Definition, start: Any, due: Any, invalid: bool
) -> None:
    record = {"name": "t", "start_date": start, "due_date": due}
    failed = failed_rules(definition.entity("task"), record)
    assert ("due_after_start" in failed) is invalid


def test_all_task_failures_together(definition: Definition) -> None:
    record = {"status": "on_hold", "start_date": JAN_10, "due_date": JAN_1}
    errors = apply_record_rules(definition.entity("task"), record, ADMIN, "zh-CN")
    assert errors == {
        "on_hold_reason": ["状态为“暂停”时，暂停原因不能为空。"],
        "due_date": ["截止日期必须晚于开始日期。"],
    }


# Formulas


def test_task_duration_days(definition: Definition) -> None:
    record: dict[str, Any] = {"start_date": JAN_1, "due_date": JAN_10}
    apply_record_rules(definition.entity("task"), record, ADMIN)
    assert record["duration_days"] == 10


def test_duration_without_dates_is_null(definition: Definition) -> None:
    record: dict[str, Any] = {"start_date": JAN_1}
    apply_record_rules(definition.entity("task"), record, ADMIN)
    assert record["duration_days"] is None


@pytest.mark.parametrize(
    ("status", "percent", "complete", "remaining"),
    [
        ("not_started", None, False, "100.00"),
        ("in_progress", "40", False, "60.00"),
        ("in_progress", "100", True, "0.00"),
        ("completed", "60", True, "0.00"),
    ],
)
def test_task_completion_formulas(
    definition: Definition,
    status: str,
    percent: str | None,
    complete: bool,
    remaining: str,
) -> None:
    amount = decimal.Decimal(percent) if percent else None
    record: dict[str, Any] = {"status": status, "percent_complete": amount}
    assert apply_record_rules(definition.entity("task"), record, ADMIN) == {}
    assert record["is_complete"] is complete
    assert record["remaining_percent"] == decimal.Decimal(remaining)


def test_project_planned_days(definition: Definition) -> None:
    record: dict[str, Any] = {
        "name": "p",
        "initial_start_date": JAN_1,
        "initial_end_date": dt.date(2027, 3, 31),
    }
    apply_record_rules(definition.entity("project"), record, ADMIN)
    assert record["planned_days"] == 90


def test_days_on_market(definition: Definition) -> None:
    now = dt.datetime(2027, 1, 10, 23, 59, tzinfo=dt.UTC)
    record: dict[str, Any] = {"name": "h", "date_listed": JAN_1}
    apply_record_rules(definition.entity("property"), record, ADMIN, now=now)
    assert record["days_on_market"] == 9


def test_days_on_market_without_listing(definition: Definition) -> None:
    record: dict[str, Any] = {"name": "h", "date_listed": None}
    apply_record_rules(definition.entity("property"), record, ADMIN)
    assert record["days_on_market"] is None


def test_tenant_rejects_formula_input(platform: Platform) -> None:
    runtime = platform.create_tenant("tracker", EXAMPLE, name="Tracker")
    admin = make_member(platform, "tracker", ADMIN_EMAIL, "admin")
    service = RecordService(runtime, admin, "en")
    project = service.create("project", {"name": "Launch"})
    data = {"name": "Plan", "project": project["id"], "duration_days": 3}
    with pytest.raises(RecordInvalid) as caught:
        service.create("task", data)
    details = caught.value.details or {}
    assert details == {
        "duration_days": ["This field is read-only and cannot be written."]
    }


def test_new_property_listed_today(platform: Platform) -> None:
    """Dreamhouse's Create_property flow creates a property available and
    listed today, unless the agent gives other values."""
    runtime = platform.create_tenant("tracker", EXAMPLE, name="Tracker")
    admin = make_member(platform, "tracker", ADMIN_EMAIL, "admin")
    service = RecordService(runtime, admin, "en")
    listed = service.create("property", {"name": "12 Elm Street"})
    assert listed["status"] == "available"
    assert listed["date_listed"] == dt.datetime.now(dt.UTC).date()
    given = service.create("property", {"name": "3 Oak Lane", "status": "pre_market",
                                        "date_listed": "2027-01-01"})
    assert given["status"] == "pre_market"
    assert given["date_listed"] == JAN_1


# PMT_Task_Before_Automation, a before-save flow on create and update, as the
# automation rules task_sync_1 to task_sync_4. The flow tests its decisions in
# this order and stops at the first that holds:
# 1. not new, prior status Completed, status Not Started, On Hold or In
#    Progress: completion 0 %.
# 2. not new, prior status "Closed, not Completed" at 100 %, status Not
#    Started, On Hold or In Progress: completion 0 %.
# 3. completion 100 % or status Completed: completion 100 %, status Completed.
# 4. 0 % < completion < 100 % and status Not Started: status In Progress.
# Each case is (stored task or None, values written, expected status and
# completion). A stored task is written to the table directly, as data from
# before the rules, because rule 3 keeps a task at 100 % from staying
# "closed, not completed" through the record service.
COMPLETED = {"status": "completed", "percent_complete": 100}
CLOSED_AT_100 = {"status": "closed_not_completed", "percent_complete": 100}
CLOSED_AT_60 = {"status": "closed_not_completed", "percent_complete": 60}
STARTED_AT_40 = {"status": "in_progress", "percent_complete": 40}
NOT_STARTED = {"status": "not_started", "percent_complete": None}
HELD_WITH_REASON = {"status": "on_hold", "on_hold_reason": "Waiting for the budget."}
FLOW_CASES = [
    # Decision 1: reopening a completed task resets its completion.
    (COMPLETED, {"status": "not_started"}, ("not_started", 0)),
    (COMPLETED, HELD_WITH_REASON, ("on_hold", 0)),
    (COMPLETED, {"status": "in_progress"}, ("in_progress", 0)),
    (COMPLETED, {"status": "in_progress", "percent_complete": 50},
     ("in_progress", 0)),
    # Decision 1 does not cover closing it: decision 3 completes it again.
    (COMPLETED, {"status": "closed_not_completed"}, ("completed", 100)),
    # Decision 2: reopening a task closed at 100 % resets its completion.
    (CLOSED_AT_100, {"status": "in_progress"}, ("in_progress", 0)),
    (CLOSED_AT_100, {"status": "not_started"}, ("not_started", 0)),
    (CLOSED_AT_60, {"status": "in_progress"}, ("in_progress", 60)),
    # Decision 3, on create and on update.
    (None, {"percent_complete": 100}, ("completed", 100)),
    (None, {"status": "completed"}, ("completed", 100)),
    (None, {"status": "closed_not_completed", "percent_complete": 100},
     ("completed", 100)),
    (STARTED_AT_40, {"percent_complete": 100}, ("completed", 100)),
    (STARTED_AT_40, {"status": "completed"}, ("completed", 100)),
    # Decision 4, on create and on update.
    (None, {"percent_complete": 40}, ("in_progress", 40)),
    (NOT_STARTED, {"percent_complete": 30}, ("in_progress", 30)),
    (NOT_STARTED, {"percent_complete": 0}, ("not_started", 0)),
    (None, {**HELD_WITH_REASON, "percent_complete": 40}, ("on_hold", 40)),
    # No decision holds.
    (None, {}, ("not_started", None)),
    (STARTED_AT_40, {"name": "Write the plan again"}, ("in_progress", 40)),
]


@pytest.fixture
def tracker(platform: Platform) -> RecordService:
    runtime = platform.create_tenant("tracker", EXAMPLE, name="Tracker")
    admin = make_member(platform, "tracker", ADMIN_EMAIL, "admin")
    return RecordService(runtime, admin, "en")


def task_after(
    service: RecordService, stored: dict[str, Any] | None, values: dict[str, Any]
) -> dict[str, Any]:
    """Create a task, or store one as ``stored`` and update it, with
    ``values``; return it as saved."""
    project = service.create("project", {"name": "Launch"})
    base = {"name": "Write the plan", "project": project["id"]}
    if stored is None:
        return service.create("task", {**base, **values})
    task = service.create("task", base)
    table = service.runtime.tables["task"]
    with service.runtime.engine.begin() as conn:
        conn.execute(table.update().where(table.c.id == task["id"]).values(stored))
    return service.update("task", task["id"], values)


@pytest.mark.parametrize(("stored", "values", "expected"), FLOW_CASES)
def test_task_before_save_flow(
    tracker: RecordService,
    stored: dict[str, Any] | None,
    values: dict[str, Any],
    expected: tuple[str, int | None],
) -> None:
    task = task_after(tracker, stored, values)
    status, percent = expected
    assert task["status"] == status
    if percent is None:
        assert task["percent_complete"] is None
    else:
        assert task["percent_complete"] == decimal.Decimal(percent)
