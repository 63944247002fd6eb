"""Rule tests carried by a definition: checked at load, run by validate and
by apply."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crm_platform.cli import main
from crm_platform.rule_tests import check_rule_tests, run_rule_tests
from crm_platform.tenancy import Platform
from metadata_engine.errors import DefinitionError
from metadata_engine.loader import load_definition

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "project_tracker"
#: Number of cases in the example's rule_tests/ folder.
EXAMPLE_CASES = 18

Edit = Callable[[dict[str, Any]], None]


def copy_example(tmp_path: Path) -> Path:
    folder = tmp_path / "tracker"
    shutil.copytree(EXAMPLE, folder)
    return folder


def edit_json(path: Path, change: Edit) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document), encoding="utf-8")


def with_task_case(tmp_path: Path, case: dict[str, Any]) -> Path:
    """Copy the example and replace the task rule test's cases with ``case``."""
    folder = copy_example(tmp_path)
    edit_json(
        folder / "rule_tests" / "task_rules.json",
        lambda document: document.update(cases=[case]),
    )
    return folder


def task_case(**changes: Any) -> dict[str, Any]:
    case: dict[str, Any] = {
        "description": "a task on hold needs a reason",
        "entity": "task",
        "record": {"name": "Plan", "status": "on_hold"},
        "errors": {"on_hold_reason": ["should not be blank"]},
    }
    case.update(changes)
    return case


def load_fails(tmp_path: Path, case: dict[str, Any], text: str) -> None:
    """Assert that loading the example with ``case`` reports ``text``."""
    folder = with_task_case(tmp_path, case)
    with pytest.raises(DefinitionError, match=text):
        load_definition(folder)


# Running the cases --------------------------------------------------------------


def test_example_cases_pass() -> None:
    definition = load_definition(EXAMPLE)
    assert run_rule_tests(definition) == []


def test_example_case_count() -> None:
    definition = load_definition(EXAMPLE)
    count = sum(len(test.cases) for test in definition.rule_tests)
    assert count == EXAMPLE_CASES


def test_missing_message_fails(tmp_path: Path) -> None:
    case = task_case(errors={"on_hold_reason": ["must be given"]})
    (problem,) = run_rule_tests(load_definition(with_task_case(tmp_path, case)))
    assert problem.file == "rule_tests/task_rules.json"
    assert problem.pointer == "/cases/0"
    assert "expected a message for 'on_hold_reason' containing 'must be given'" in (
        problem.message
    )
    assert "On hold reason should not be blank" in problem.message


def test_message_on_other_field_fails(tmp_path: Path) -> None:
    case = task_case(errors={"_schema": ["should not be blank"]})
    (problem,) = run_rule_tests(load_definition(with_task_case(tmp_path, case)))
    assert "expected a message for '_schema'" in problem.message


def test_valid_case_with_error_fails(tmp_path: Path) -> None:
    case = task_case(valid=True)
    del case["errors"]
    (problem,) = run_rule_tests(load_definition(with_task_case(tmp_path, case)))
    assert "expected a valid record, but got on_hold_reason: On hold reason" in (
        problem.message
    )


def test_invalid_case_without_error_fails(tmp_path: Path) -> None:
    case = task_case(record={"name": "Plan", "status": "in_progress"})
    (problem,) = run_rule_tests(load_definition(with_task_case(tmp_path, case)))
    assert "but got []" in problem.message


def test_wrong_computed_value_fails(tmp_path: Path) -> None:
    case = task_case(
        record={"name": "Plan", "start_date": "2026-02-10", "due_date": "2026-02-12"},
        computed={"duration_days": 2, "remaining_percent": "99.5"},
    )
    del case["errors"]
    (problem,) = run_rule_tests(load_definition(with_task_case(tmp_path, case)))
    assert "expected duration_days to be 2, but it is 3" in problem.message
    assert "expected remaining_percent to be '99.5', but it is '100.00'" in (
        problem.message
    )


def test_computed_boolean_not_integer(tmp_path: Path) -> None:
    case = task_case(
        record={"name": "Plan", "status": "completed"}, computed={"is_complete": 1}
    )
    del case["errors"]
    (problem,) = run_rule_tests(load_definition(with_task_case(tmp_path, case)))
    assert "expected is_complete to be 1, but it is True" in problem.message


def test_computed_decimal_as_number(tmp_path: Path) -> None:
    case = task_case(
        record={"name": "Plan", "percent_complete": 12.5},
        computed={"remaining_percent": 87.5},
    )
    del case["errors"]
    definition = load_definition(with_task_case(tmp_path, case))
    assert run_rule_tests(definition) == []


def test_now_sets_today(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    edit_json(
        folder / "rule_tests" / "property_rules.json",
        lambda document: document["cases"][0].update(now="2026-02-01T00:00:00Z"),
    )
    (problem,) = run_rule_tests(load_definition(folder))
    assert problem.pointer == "/cases/0"
    assert "expected days_on_market to be 30, but it is 31" in problem.message


def test_user_role_reaches_rules(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    (folder / "roles").mkdir()
    (folder / "roles" / "planner.json").write_text(
        json.dumps({"name": "planner", "label": "Planner"}), encoding="utf-8"
    )

    def add_rule(document: dict[str, Any]) -> None:
        document["validation_rules"].append(
            {
                "name": "planners_only",
                "when": 'user.role != "planner"',
                "message": "Only planners may write tasks.",
            }
        )

    edit_json(folder / "entities" / "task.json", add_rule)
    case = task_case(
        record={"name": "Plan"},
        user={"role": "planner"},
        valid=True,
    )
    del case["errors"]
    edit_json(
        folder / "rule_tests" / "task_rules.json",
        lambda document: document.update(cases=[case]),
    )
    assert run_rule_tests(load_definition(folder)) == []


def test_record_out_of_range(tmp_path: Path) -> None:
    # Loading checks a value's type, and only the schema checks its range.
    case = task_case(record={"name": "Plan", "percent_complete": 150})
    (problem,) = run_rule_tests(load_definition(with_task_case(tmp_path, case)))
    assert problem.pointer == "/cases/0/record"
    assert "its record does not fit task" in problem.message
    assert "percent_complete" in problem.message


def test_required_fields_may_be_missing(tmp_path: Path) -> None:
    case = task_case(record={"status": "on_hold"})
    definition = load_definition(with_task_case(tmp_path, case))
    assert run_rule_tests(definition) == []


def test_defaults_fill_missing_fields(tmp_path: Path) -> None:
    # status defaults to not_started, so the task is not complete.
    case = task_case(record={"name": "Plan"}, computed={"is_complete": False})
    del case["errors"]
    definition = load_definition(with_task_case(tmp_path, case))
    assert run_rule_tests(definition) == []


def test_passed_definition_not_rerun(caplog: pytest.LogCaptureFixture) -> None:
    definition = load_definition(EXAMPLE)
    check_rule_tests(definition)
    with caplog.at_level(logging.INFO, logger="crm_platform.rule_tests"):
        check_rule_tests(definition)
    assert "rule test cases" not in caplog.text


def test_check_raises_for_failure(tmp_path: Path) -> None:
    case = task_case(errors={"on_hold_reason": ["must be given"]})
    definition = load_definition(with_task_case(tmp_path, case))
    with pytest.raises(DefinitionError, match=r"task_rules\.json#/cases/0: rule test"):
        check_rule_tests(definition)


# validate and apply ----------------------------------------------------------------


def test_validate_reports_passed_cases() -> None:
    result = CliRunner().invoke(main, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert f"{EXAMPLE_CASES} rule test cases passed" in result.output


def test_validate_rejects_failing_case(tmp_path: Path) -> None:
    case = task_case(errors={"on_hold_reason": ["must be given"]})
    result = CliRunner().invoke(main, ["validate", str(with_task_case(tmp_path, case))])
    assert result.exit_code == 1
    assert "rule_tests/task_rules.json#/cases/0: rule test failed" in result.output
    assert "'a task on hold needs a reason'" in result.output


@pytest.mark.both_backends
def test_apply_rejects_failing_case(platform: Platform, tmp_path: Path) -> None:
    runtime = platform.create_tenant("tracker", EXAMPLE, name="Tracker")
    before = runtime.definition.content_hash
    folder = copy_example(tmp_path)

    def change_formula(document: dict[str, Any]) -> None:
        fields = {field["name"]: field for field in document["fields"]}
        fields["duration_days"]["formula"] = (
            "start_date != null && due_date != null ? "
            "(due_date - start_date).getHours() / 24 : null"
        )
        document["fields"].append(
            {"name": "budget", "type": "currency", "label": "Budget"}
        )

    edit_json(folder / "entities" / "task.json", change_formula)
    definition = load_definition(folder)
    with pytest.raises(DefinitionError, match="expected duration_days to be 2"):
        platform.apply(runtime.slug, definition)
    after = platform.runtime(runtime.slug)
    assert after.definition.content_hash == before
    assert "budget" not in after.tables["task"].columns


# Checks when a definition loads -------------------------------------------------


def test_unknown_entity_rejected(tmp_path: Path) -> None:
    load_fails(
        tmp_path,
        task_case(entity="tasks"),
        r"#/cases/0/entity: rule case 'a task on hold needs a reason' uses entity "
        r"'tasks', which does not exist \(did you mean 'task'\?",
    )


def test_unknown_record_field_rejected(tmp_path: Path) -> None:
    load_fails(
        tmp_path,
        task_case(record={"name": "Plan", "stauts": "on_hold"}),
        r"#/cases/0/record/stauts: field 'stauts' is not a field of entity 'task' "
        r"\(did you mean 'status'\?",
    )


def test_formula_in_record_rejected(tmp_path: Path) -> None:
    load_fails(
        tmp_path,
        task_case(record={"name": "Plan", "is_complete": True}),
        r"#/cases/0/record/is_complete: field 'is_complete' of entity 'task' is "
        r"read-only.*put it in \"computed\"",
    )


def test_bad_record_value_rejected(tmp_path: Path) -> None:
    load_fails(
        tmp_path,
        task_case(record={"name": "Plan", "due_date": "2026-02-31"}),
        r"#/cases/0/record/due_date: value '2026-02-31' of field 'due_date' is "
        "invalid",
    )


def test_bad_decimal_string_rejected(tmp_path: Path) -> None:
    load_fails(
        tmp_path,
        task_case(record={"name": "Plan", "percent_complete": "forty"}),
        r"#/cases/0/record/percent_complete: value 'forty' of field "
        r"'percent_complete' is invalid: it is not a number",
    )


def test_computed_non_formula_rejected(tmp_path: Path) -> None:
    load_fails(
        tmp_path,
        task_case(computed={"status": "on_hold"}),
        r"#/cases/0/computed/status: computed names 'status', which is not a "
        r"formula field of entity 'task' \(formula fields of the entity: "
        "duration_days, is_complete, remaining_percent",
    )


def test_unknown_error_key_rejected(tmp_path: Path) -> None:
    load_fails(
        tmp_path,
        task_case(errors={"on_hold_raeson": ["blank"]}),
        r"#/cases/0/errors/on_hold_raeson: errors name 'on_hold_raeson', which is "
        r"not a field of entity 'task' \(did you mean 'on_hold_reason'\?",
    )


def test_errors_and_valid_rejected(tmp_path: Path) -> None:
    load_fails(
        tmp_path,
        task_case(valid=True),
        r"#/cases/0: rule case 'a task on hold needs a reason' expects both errors "
        r"and a valid record \(remove \"valid\" or \"errors\"\)",
    )


def test_case_expecting_nothing_rejected(tmp_path: Path) -> None:
    case = task_case()
    del case["errors"]
    load_fails(
        tmp_path,
        case,
        r"#/cases/0: rule case 'a task on hold needs a reason' expects nothing",
    )


def test_unknown_role_rejected(tmp_path: Path) -> None:
    load_fails(
        tmp_path,
        task_case(user={"role": "planner"}),
        r"#/cases/0/user/role: rule case 'a task on hold needs a reason' uses role "
        r"'planner', which is not declared",
    )


def test_impossible_now_rejected(tmp_path: Path) -> None:
    load_fails(
        tmp_path,
        task_case(now="2026-02-31T09:00:00Z"),
        r"#/cases/0/now: invalid date and time '2026-02-31T09:00:00Z'",
    )


def test_unknown_case_property_rejected(tmp_path: Path) -> None:
    load_fails(tmp_path, task_case(expected=True), r"task_rules\.json#/cases/0")


def test_valid_false_rejected(tmp_path: Path) -> None:
    load_fails(tmp_path, task_case(valid=False), r"task_rules\.json#/cases/0/valid")


def test_file_name_must_match(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    source = folder / "rule_tests" / "task_rules.json"
    source.rename(folder / "rule_tests" / "tasks.json")
    with pytest.raises(DefinitionError, match="rule test 'task_rules' is in file"):
        load_definition(folder)


# Extending a base ----------------------------------------------------------------


def extension(tmp_path: Path, documents: dict[str, Any]) -> Path:
    """Write a definition that extends a copy of the example."""
    base = copy_example(tmp_path)
    folder = tmp_path / "extension"
    (folder / "rule_tests").mkdir(parents=True)
    manifest = {
        "format": 1,
        "name": "extension",
        "label": "Extension",
        "version": "1.0.0",
        "extends": str(base),
    }
    (folder / "definition.json").write_text(json.dumps(manifest), encoding="utf-8")
    for name, document in documents.items():
        path = folder / "rule_tests" / f"{name}.json"
        path.write_text(json.dumps(document), encoding="utf-8")
    return folder


def test_extension_replaces_same_name(tmp_path: Path) -> None:
    document = {"name": "task_rules", "cases": [task_case()]}
    definition = load_definition(extension(tmp_path, {"task_rules": document}))
    tests = {test.name: test for test in definition.rule_tests}
    assert len(tests["task_rules"].cases) == 1


def test_extension_keeps_base_tests(tmp_path: Path) -> None:
    document = {"name": "more_rules", "cases": [task_case()]}
    definition = load_definition(extension(tmp_path, {"more_rules": document}))
    names = sorted(test.name for test in definition.rule_tests)
    assert names == ["more_rules", "project_rules", "property_rules", "task_rules"]


def test_extension_failure_names_its_file(tmp_path: Path) -> None:
    case = task_case(errors={"on_hold_reason": ["must be given"]})
    document = {"name": "more_rules", "cases": [case]}
    definition = load_definition(extension(tmp_path, {"more_rules": document}))
    (problem,) = run_rule_tests(definition)
    assert problem.file == "rule_tests/more_rules.json"
