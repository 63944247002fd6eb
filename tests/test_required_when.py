"""Conditionally required fields: ``required_when`` holds on every write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crm_platform.errors import RecordInvalid
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform
from metadata_engine.loader import compile_documents
from tests.conftest import make_member
from tests.definitions.builders import (
    documents,
    entity,
    field,
    problems_of,
    write_folder,
)

pytestmark = pytest.mark.both_backends


def task(condition: str = 'status == "on_hold"') -> dict[str, Any]:
    status = [{"value": v, "label": v} for v in ("open", "on_hold")]
    return entity(
        "task",
        field("status", "picklist", options=status),
        field("reason", required_when=condition),
    )


def test_condition_type_checked() -> None:
    problems = problems_of(lambda: compile_documents(documents(task("status"))))
    (problem,) = problems
    assert problem.pointer == "/fields/2/required_when"
    assert "required_when of 'reason' returns" in problem.message


def test_unknown_name_reported() -> None:
    problems = problems_of(
        lambda: compile_documents(documents(task('stauts == "on_hold"')))
    )
    assert problems[0].pointer == "/fields/2/required_when"
    assert "stauts" in problems[0].message


@pytest.fixture
def service(platform: Platform, tmp_path: Path) -> RecordService:
    runtime = platform.create_tenant(
        "work", write_folder(tmp_path / "work", documents(task()))
    )
    admin = make_member(platform, "work", "admin@work.example", "admin")
    return platform.records(runtime, admin)


def test_required_only_when_condition_holds(service: RecordService) -> None:
    open_task = service.create("task", {"name": "A", "status": "open"})
    assert open_task["reason"] is None
    with pytest.raises(RecordInvalid) as raised:
        service.create("task", {"name": "B", "status": "on_hold", "reason": " "})
    assert raised.value.details["reason"] == ["This field is required."]


def test_update_and_import_check_it(service: RecordService) -> None:
    created = service.create("task", {"name": "A", "status": "open"})
    with pytest.raises(RecordInvalid, match="check reason"):
        service.update("task", created["id"], {"status": "on_hold"})
    result = service.import_batch("task", [
        {"name": "C", "status": "on_hold"},
        {"name": "D", "status": "on_hold", "reason": "waiting"},
    ])
    assert list(result.errors) == [0]
    assert result.created == 1
