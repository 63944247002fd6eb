"""Permission tests carried by a definition: run by validate and by apply."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from crm_platform.cli import main
from crm_platform.permission_tests import run_permission_tests
from crm_platform.tenancy import Platform, TenantRuntime
from metadata_engine.errors import DefinitionError
from metadata_engine.loader import load_definition
from tests.conftest import STANDARD_CRM

pytestmark = pytest.mark.both_backends


def broken_copy(tmp_path: Path, case_index: int) -> Path:
    """Copy the standard template and flip one case's expectation."""
    folder = tmp_path / "crm"
    shutil.copytree(STANDARD_CRM, folder)
    path = folder / "permission_tests" / "standard.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    case = document["cases"][case_index]
    case["allowed"] = not case["allowed"]
    path.write_text(json.dumps(document), encoding="utf-8")
    return folder


def test_standard_template_cases_pass() -> None:
    definition = load_definition(STANDARD_CRM)
    assert definition.permission_tests
    assert run_permission_tests(definition) == []


def test_flipped_case_fails_with_reason(tmp_path: Path) -> None:
    definition = load_definition(broken_copy(tmp_path, 1))
    problems = run_permission_tests(definition)
    assert len(problems) == 1
    assert problems[0].file == "permission_tests/standard.json"
    assert problems[0].pointer == "/cases/1"
    assert "expects read to be allowed, but it is refused" in problems[0].message
    assert "records the user owns" in problems[0].message


def test_validate_rejects_failing_case(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(broken_copy(tmp_path, 1))])
    assert result.exit_code == 1
    assert "permission test failed" in result.output


def test_validate_reports_passed_cases() -> None:
    result = CliRunner().invoke(main, ["validate", str(STANDARD_CRM)])
    assert result.exit_code == 0, result.output
    assert "permission test cases passed" in result.output


def test_apply_rejects_failing_case(
    platform: Platform, crm: TenantRuntime, tmp_path: Path
) -> None:
    before = crm.definition.content_hash
    definition = load_definition(broken_copy(tmp_path, 5))
    with pytest.raises(DefinitionError, match="permission test failed"):
        platform.apply(crm.slug, definition)
    assert platform.runtime(crm.slug).definition.content_hash == before


def test_case_values_checked_at_load(tmp_path: Path) -> None:
    folder = broken_copy(tmp_path, 0)
    path = folder / "permission_tests" / "standard.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["cases"] = [{
        "description": "a contract with an impossible end date",
        "role": "sales_rep", "entity": "contract", "owner": "self",
        "values": {"end_date": "2026-02-31"}, "action": "read", "allowed": True,
    }]
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(DefinitionError, match="'2026-02-31' of field 'end_date'"):
        load_definition(folder)
