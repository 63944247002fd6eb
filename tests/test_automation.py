"""Automation rules: before-save field changes, created records,
notifications, delete and time triggers, and the depth limit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from crm_platform import notifications
from crm_platform.automation import AutomationLoop, run_time_triggers
from crm_platform.control import Actor
from crm_platform.errors import RecordInvalid
from crm_platform.querying import ListQuery
from crm_platform.records import RecordService
from crm_platform.sharing import SharingService
from crm_platform.tenancy import Platform, TenantRuntime
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

STATUSES = ("open", "done", "cancelled")


def rule(name: str, entity_name: str, trigger: dict[str, Any],
         *actions: dict[str, Any], **changes: Any) -> dict[str, Any]:
    document = {"name": name, "label": name.replace("_", " "),
                "entity": entity_name, "trigger": trigger, "actions": list(actions)}
    document.update(changes)
    return document


def definition(*rules: dict[str, Any]) -> dict[str, Any]:
    result = documents(
        entity(
            "job",
            field("status", "picklist",
                  options=[{"value": v, "label": v} for v in STATUSES]),
            field("progress", "integer"),
            field("priority", "picklist",
                  options=[{"value": v, "label": v} for v in ("low", "high")]),
            field("due", "date"),
            field("first_note", "lookup", target="note", on_delete="set_null"),
        ),
        entity("note", field("job", "lookup", target="job", on_delete="set_null")),
    )
    for item in rules:
        result[f"automations/{item['name']}.json"] = item
    return result


def start(platform: Platform, tmp_path: Path, *rules: dict[str, Any]) -> RecordService:
    folder = write_folder(tmp_path / "d", definition(*rules))
    runtime = platform.create_tenant("ops", folder)
    return platform.records(runtime, member(platform, runtime, "admin@ops.example"))


def member(
    platform: Platform, runtime: TenantRuntime, email: str, role: str = "admin"
) -> Actor:
    user_id = platform.control.create_user(email, ADMIN_PASSWORD)
    platform.control.add_member(runtime.tenant, user_id, role,
                                runtime.definition.role_names)
    actor = platform.control.actor(runtime.tenant, user_id)
    assert actor is not None
    return actor


def rows(service: RecordService, entity_name: str) -> list[dict[str, Any]]:
    return service.list(entity_name, ListQuery(limit=100)).records


def inbox(service: RecordService, user_id: str) -> list[str]:
    with service.runtime.engine.connect() as conn:
        found = notifications.for_user(conn, user_id)
    return [item.message.get("en") for item in found]


COMPLETE = rule(
    "complete_at_100", "job", {"on": "update", "fields": ["progress"]},
    {"type": "set_fields", "values": {"status": "'done'"}},
    when="progress == 100",
)
RESET = rule(
    "reset_progress", "job", {"on": "update", "fields": ["status"]},
    {"type": "set_fields", "values": {"progress": "0"}},
    when="previous.status == 'done' && status == 'open'",
)


def test_bad_action_field_reported() -> None:
    bad = rule("x", "job", {"on": "create"},
               {"type": "set_fields", "values": {"progres": "1"}})
    problems = problems_of(lambda: compile_documents(definition(bad)))
    assert any("job.progres does not exist" in p.message for p in problems)


def test_value_type_mismatch_reported() -> None:
    bad = rule("x", "job", {"on": "create"},
               {"type": "set_fields", "values": {"progress": "'high'"}})
    problems = problems_of(lambda: compile_documents(definition(bad)))
    assert any("returns a string, not an int" in p.message for p in problems)


def test_delete_cannot_set_fields() -> None:
    bad = rule("x", "job", {"on": "delete"},
               {"type": "set_fields", "values": {"progress": "1"}})
    problems = problems_of(lambda: compile_documents(definition(bad)))
    assert any("a delete trigger cannot set fields" in p.message for p in problems)


def test_update_rules_set_fields_before_save(
    platform: Platform, tmp_path: Path
) -> None:
    service = start(platform, tmp_path, COMPLETE, RESET)
    job = service.create("job", {"name": "Paint", "status": "open", "progress": 10})
    assert service.update("job", job["id"], {"progress": 100})["status"] == "done"
    reopened = service.update("job", job["id"], {"status": "open"})
    assert reopened["progress"] == 0


def test_unlisted_field_change_does_not_fire(
    platform: Platform, tmp_path: Path
) -> None:
    service = start(platform, tmp_path, COMPLETE)
    job = service.create("job", {"name": "Paint", "status": "open", "progress": 100})
    assert service.update("job", job["id"], {"name": "Paint all"})["status"] == "open"


def test_import_runs_before_save_rules(platform: Platform, tmp_path: Path) -> None:
    service = start(platform, tmp_path, COMPLETE)
    service.create("job", {"name": "Paint", "status": "open", "progress": 10})
    result = service.import_batch("job", [{"name": "Paint", "progress": 100}],
                                  key="name")
    assert result.updated == 1
    assert rows(service, "job")[0]["status"] == "done"


def test_create_record_and_notify_owner(platform: Platform, tmp_path: Path) -> None:
    follow_up = rule(
        "follow_up", "job", {"on": "create"},
        {"type": "create_record", "entity": "note", "as": "note",
         "values": {"name": "'Check ' + name", "job": "id"}},
        {"type": "notify", "to": {"owner": True},
         "message": {"en": "New job {name}", "zh-CN": "新任务 {name}"}},
    )
    service = start(platform, tmp_path, follow_up)
    job = service.create("job", {"name": "Paint"})
    notes = rows(service, "note")
    assert [(n["name"], n["job"]) for n in notes] == [("Check Paint", job["id"])]
    assert inbox(service, service.actor.user_id) == ["New job Paint"]


def test_set_fields_reads_created_record(
    platform: Platform, tmp_path: Path
) -> None:
    link = rule(
        "link_note", "job", {"on": "create"},
        {"type": "create_record", "entity": "note", "as": "note",
         "values": {"name": "'About ' + name", "job": "id"}},
        {"type": "set_fields", "values": {"first_note": "note.id"}},
    )
    service = start(platform, tmp_path, link)
    job = service.create("job", {"name": "Paint"})
    [note] = rows(service, "note")
    assert service.get("job", job["id"])["first_note"] == note["id"]


def test_notify_owners_manager(platform: Platform, tmp_path: Path) -> None:
    escalate = rule(
        "escalate", "job", {"on": "update", "fields": ["priority"]},
        {"type": "notify", "to": {"manager_of": "owner_id"},
         "message": "{name} is urgent"},
        when="priority == 'high'",
    )
    service = start(platform, tmp_path, escalate)
    boss = member(platform, service.runtime, "boss@ops.example")
    SharingService(platform, service.runtime, service.actor).set_manager(
        service.actor.user_id, boss.user_id
    )
    job = service.create("job", {"name": "Paint"})
    service.update("job", job["id"], {"priority": "high"})
    assert inbox(service, boss.user_id) == ["Paint is urgent"]
    assert inbox(service, service.actor.user_id) == []


def test_invalid_set_value_names_rule(platform: Platform, tmp_path: Path) -> None:
    bad = rule("bad_status", "job", {"on": "create"},
               {"type": "set_fields", "values": {"status": "'paused'"}})
    service = start(platform, tmp_path, bad)
    with pytest.raises(RecordInvalid, match="automation rule 'bad_status'"):
        service.create("job", {"name": "Paint"})
    assert rows(service, "job") == []


def test_loop_stops_at_depth_limit(platform: Platform, tmp_path: Path) -> None:
    again = rule("again", "job", {"on": "create"},
                 {"type": "create_record", "entity": "job",
                  "values": {"name": "name + '+'"}})
    service = start(platform, tmp_path, again)
    with pytest.raises(AutomationLoop, match="again → again"):
        service.create("job", {"name": "Paint"})
    assert rows(service, "job") == []


def test_delete_trigger_notifies(platform: Platform, tmp_path: Path) -> None:
    gone = rule("gone", "job", {"on": "delete"},
                {"type": "notify", "to": {"owner": True},
                 "message": "{name} was deleted"})
    service = start(platform, tmp_path, gone)
    job = service.create("job", {"name": "Paint"})
    service.delete("job", job["id"])
    assert inbox(service, service.actor.user_id) == ["Paint was deleted"]


OVERDUE = rule(
    "overdue", "job", {"on": "time", "date_field": "due", "offset": {"days": 1}},
    {"type": "set_fields", "values": {"priority": "'high'"}},
    {"type": "notify", "to": {"owner": True}, "message": "{name} is overdue"},
    when="status != 'done'",
)


def test_time_trigger_runs_once_per_date(platform: Platform, tmp_path: Path) -> None:
    service = start(platform, tmp_path, OVERDUE)
    job = service.create("job", {"name": "Paint", "status": "open",
                                 "due": "2026-03-01"})
    early = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    late = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
    assert run_time_triggers(platform, service.runtime, early) == 0
    assert run_time_triggers(platform, service.runtime, late) == 1
    assert run_time_triggers(platform, service.runtime, late) == 0
    assert service.get("job", job["id"])["priority"] == "high"
    assert inbox(service, service.actor.user_id) == ["Paint is overdue"]
    service.update("job", job["id"], {"due": "2026-03-05"})
    later = dt.datetime(2026, 3, 6, 12, tzinfo=dt.UTC)
    assert run_time_triggers(platform, service.runtime, later) == 1


def test_time_trigger_skips_unmet_condition(
    platform: Platform, tmp_path: Path
) -> None:
    service = start(platform, tmp_path, OVERDUE)
    service.create("job", {"name": "Paint", "status": "done", "due": "2026-03-01"})
    late = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
    assert run_time_triggers(platform, service.runtime, late) == 0
    assert inbox(service, service.actor.user_id) == []


def test_time_trigger_ignores_old_dates(platform: Platform, tmp_path: Path) -> None:
    service = start(platform, tmp_path, OVERDUE)
    service.create("job", {"name": "Paint", "status": "open", "due": "2025-01-01"})
    now = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
    assert run_time_triggers(platform, service.runtime, now) == 0


def test_previous_typo_reported() -> None:
    bad = rule("x", "job", {"on": "update"},
               {"type": "set_fields", "values": {"progress": "0"}},
               when="previous.statu != status")
    problems = problems_of(lambda: compile_documents(definition(bad)))
    [found] = [str(p) for p in problems if "previous.statu" in str(p)]
    assert "'status'" in found


def test_created_record_needs_required() -> None:
    docs = definition(rule("x", "job", {"on": "create"},
                           {"type": "create_record", "entity": "note",
                            "values": {"job": "id"}}))
    docs["entities/note.json"]["fields"][0]["required"] = True
    problems = problems_of(lambda: compile_documents(docs))
    assert any("leaves the required field(s) name empty" in p.message
               for p in problems)


def test_system_column_value_reported() -> None:
    bad = rule("x", "job", {"on": "create"},
               {"type": "create_record", "entity": "note",
                "values": {"name": "name", "created_by": "owner_id"}})
    problems = problems_of(lambda: compile_documents(definition(bad)))
    assert any("'created_by' is a system column" in p.message for p in problems)


def test_hidden_field_in_message_reported() -> None:
    docs = definition(rule("x", "job", {"on": "create"},
                           {"type": "notify", "to": {"owner": True},
                            "message": "{name} costs {progress}"}))
    docs["roles/worker.json"] = {
        "name": "worker", "label": "Worker",
        "entities": {"job": {"read": "all", "fields": {"progress": "hidden"}}},
    }
    problems = problems_of(lambda: compile_documents(docs))
    assert any("shows {progress}, which some role" in p.message for p in problems)


def test_failed_time_rule_reported(platform: Platform, tmp_path: Path) -> None:
    divide = rule(
        "divide", "job", {"on": "time", "date_field": "due", "offset": {"days": 1}},
        {"type": "set_fields", "values": {"progress": "100 / progress"}},
    )
    service = start(platform, tmp_path, divide)
    job = service.create("job", {"name": "Paint", "progress": 0,
                                 "due": "2026-03-01"})
    failures: list[str] = []
    late = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
    assert run_time_triggers(platform, service.runtime, late, failures=failures) == 0
    assert failures == [f"divide {job['id']}"]
    assert service.get("job", job["id"])["progress"] == 0
