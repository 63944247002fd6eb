"""Field expression options in Chromium: ``visible_when`` re-evaluated while
the user edits a form, and ``read_only_when`` fields shown read-only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from crm_platform.records import RecordService
from crm_platform.tenancy import Platform
from tests.conftest import ADMIN_PASSWORD, make_member
from tests.definitions.builders import write_folder
from tests.plugins.browser import serve_wsgi
from tests.test_browser import Console
from tests.test_field_expressions import task_with_roles

pytestmark = pytest.mark.browser

EMAIL = "admin@work.example"


@pytest.fixture
def service(platform: Platform, tmp_path: Path) -> RecordService:
    folder = write_folder(tmp_path / "work", task_with_roles())
    runtime = platform.create_tenant("work", folder)
    admin = make_member(platform, "work", EMAIL, "admin")
    return platform.records(runtime, admin)


@pytest.fixture
def base_url(app: Flask, service: RecordService) -> Iterator[str]:
    with serve_wsgi(app) as url:
        yield url


def sign_in(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/t/work/login")
    page.fill("#email", EMAIL)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base_url}/t/work/")


def test_form_toggles_field_while_editing(page: Page, base_url: str) -> None:
    console = Console(page)
    sign_in(page, base_url)
    page.goto(f"{base_url}/t/work/task/new")
    resolution = page.locator("[data-visibility-field=resolution]")
    expect(resolution).to_be_hidden()
    page.select_option("select[name=f_status]", "closed")
    expect(resolution).to_be_visible()
    page.select_option("select[name=f_status]", "open")
    expect(resolution).to_be_hidden()
    assert console.csp_violations() == []


def test_typed_text_re_evaluates(page: Page, base_url: str) -> None:
    sign_in(page, base_url)
    page.goto(f"{base_url}/t/work/task/new")
    internal = page.locator("[data-visibility-field=internal]")
    expect(internal).to_be_hidden()
    page.fill("input[name=f_secret]", "x")
    expect(internal).to_be_visible()
    page.fill("input[name=f_secret]", "xy")
    expect(internal).to_be_hidden()


def test_hidden_field_keeps_value_on_save(
    page: Page, base_url: str, service: RecordService
) -> None:
    created = service.create("task", {"name": "A", "status": "on_hold",
                                      "resolution": "waiting"})
    sign_in(page, base_url)
    page.goto(f"{base_url}/t/work/task/{created['id']}/edit")
    page.select_option("select[name=f_status]", "open")
    expect(page.locator("[data-visibility-field=resolution]")).to_be_hidden()
    page.click("[data-testid=save]")
    expect(page).to_have_url(re.compile(rf"/t/work/task/{created['id']}$"))
    stored = service.get("task", created["id"])
    assert stored["status"] == "open"
    assert stored["resolution"] == "waiting"


def test_detail_page_hides_field(
    page: Page, base_url: str, service: RecordService
) -> None:
    created = service.create("task", {"name": "A", "status": "open"})
    sign_in(page, base_url)
    page.goto(f"{base_url}/t/work/task/{created['id']}")
    expect(page.locator("[data-field=status]")).to_be_visible()
    expect(page.locator("[data-field=resolution]")).to_have_count(0)


def test_read_only_field_not_editable(
    page: Page, base_url: str, service: RecordService
) -> None:
    created = service.create("task", {"name": "A", "status": "on_hold",
                                      "resolution": "fixed"})
    service.update("task", created["id"], {"status": "closed"})
    sign_in(page, base_url)
    page.goto(f"{base_url}/t/work/task/{created['id']}/edit")
    expect(page.locator("[data-read-only-when][data-field=resolution]")).to_contain_text(
        "fixed"
    )
    expect(page.locator("input[type=text][name=f_resolution]")).to_have_count(0)
    page.fill("input[name=f_name]", "Renamed")
    page.click("[data-testid=save]")
    expect(page).to_have_url(re.compile(rf"/t/work/task/{created['id']}$"))
    stored = service.get("task", created["id"])
    assert stored["name"] == "Renamed"
    assert stored["resolution"] == "fixed"
