"""Dependent picklists: the options of one picklist depend on another's value,
checked when the definition loads and on every write path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Page

from crm_platform.control import Actor
from crm_platform.errors import RecordInvalid
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform
from metadata_engine.loader import compile_documents
from tests.conftest import ADMIN_PASSWORD, make_member
from tests.definitions.builders import (
    documents,
    entity,
    field,
    problems_of,
    write_folder,
)
from tests.plugins.browser import serve_wsgi

pytestmark = pytest.mark.both_backends


def options(*values: str) -> list[dict[str, str]]:
    return [{"value": value, "label": value.title()} for value in values]


def ticket(**dependency_changes: Any) -> dict[str, Any]:
    """Return a ticket entity whose ``item`` depends on ``category``."""
    dependency: dict[str, Any] = {
        "field": "category",
        "options": {"hardware": ["laptop", "phone"], "software": ["licence"]},
    }
    dependency.update(dependency_changes)
    return entity(
        "ticket",
        field("category", "picklist", options=options("hardware", "software", "other")),
        field("item", "picklist", options=options("laptop", "phone", "licence"),
              depends_on=dependency),
        field("size", "integer"),
    )


def messages(document: dict[str, Any]) -> list[str]:
    problems = problems_of(lambda: compile_documents(documents(document)))
    return [f"{problem.pointer}: {problem.message} ({problem.hint})"
            for problem in problems]


def test_dependency_compiles() -> None:
    item = compile_documents(documents(ticket())).entity("ticket").field("item")
    assert item.depends_on == "category"
    assert item.allowed_options("hardware") == ("laptop", "phone")
    assert item.allowed_options("other") == ()
    assert item.allowed_options(None) == ()


def test_controlling_field_must_be_picklist() -> None:
    (problem,) = messages(ticket(field="size"))
    assert "/fields/2/depends_on/field" in problem
    assert "'size', which is not a picklist field" in problem
    assert "use one of its picklist fields: category" in problem


def test_unknown_option_values_reported() -> None:
    problems = messages(ticket(options={"hardwere": ["laptop", "tablet"]}))
    assert any("'hardwere' is not an option of 'category'" in p for p in problems)
    assert any("'tablet' is not an option of 'item'" in p for p in problems)


@pytest.fixture
def service(platform: Platform, tmp_path: Path) -> RecordService:
    folder = write_folder(tmp_path / "tickets", documents(ticket()))
    runtime = platform.create_tenant("desk", folder)
    admin: Actor = make_member(platform, "desk", "admin@desk.example", "admin")
    return platform.records(runtime, admin)


def test_create_rejects_disallowed_option(service: RecordService) -> None:
    with pytest.raises(RecordInvalid) as raised:
        service.create("ticket", {"name": "T", "category": "software", "item": "phone"})
    (message,) = raised.value.details["item"]
    assert "'phone' is not allowed when Category is 'software'" in message
    assert "licence" in message


def test_update_checks_merged_record(service: RecordService) -> None:
    created = service.create(
        "ticket", {"name": "T", "category": "hardware", "item": "phone"}
    )
    with pytest.raises(RecordInvalid, match="check item"):
        service.update("ticket", created["id"], {"category": "software"})
    changed = service.update(
        "ticket", created["id"], {"category": "software", "item": "licence"}
    )
    assert changed["item"] == "licence"


def test_empty_controller_allows_nothing(service: RecordService) -> None:
    with pytest.raises(RecordInvalid, match="check item"):
        service.create("ticket", {"name": "T", "item": "laptop"})
    blank = service.create("ticket", {"name": "T", "category": "other"})
    assert blank["item"] is None


def test_import_reports_row(service: RecordService) -> None:
    result = service.import_batch("ticket", [
        {"name": "ok", "category": "hardware", "item": "laptop"},
        {"name": "bad", "category": "hardware", "item": "licence"},
    ])
    assert result.created == 1
    assert list(result.errors) == [1]
    assert "item" in result.errors[1]


@pytest.mark.browser
def test_form_offers_allowed_options(
    service: RecordService, app: Flask, page: Page
) -> None:
    with serve_wsgi(app) as base_url:
        page.goto(f"{base_url}/t/desk/login")
        page.fill("#email", "admin@desk.example")
        page.fill("#password", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.goto(f"{base_url}/t/desk/ticket/new")
        item = page.locator("select[name=f_item]")
        page.select_option("select[name=f_category]", "software")
        offered = item.locator("option:not([hidden])").evaluate_all(
            "options => options.map(option => option.value)"
        )
        assert offered == ["", "licence"]
        page.select_option("select[name=f_category]", "hardware")
        page.select_option("select[name=f_item]", "phone")
        page.select_option("select[name=f_category]", "software")
        assert item.input_value() == ""
