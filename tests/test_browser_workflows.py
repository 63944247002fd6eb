"""Workflow transitions and approvals in real Chromium: a member takes
transitions from the detail page, and their manager approves from the
approvals page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from crm_platform.control import Actor
from crm_platform.records import RecordService
from crm_platform.sharing import SharingService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import ADMIN_PASSWORD
from tests.definitions.builders import write_folder
from tests.plugins.browser import serve_wsgi
from tests.test_browser import Console
from tests.test_workflows import definition, make_member

pytestmark = pytest.mark.browser


@pytest.fixture
def runtime(platform: Platform, tmp_path: Path) -> TenantRuntime:
    return platform.create_tenant("desk", write_folder(tmp_path / "d", definition()))


@pytest.fixture
def agent(platform: Platform, runtime: TenantRuntime) -> Actor:
    return make_member(platform, runtime.slug, "agent@desk.example", "agent")


@pytest.fixture
def boss(platform: Platform, runtime: TenantRuntime, agent: Actor) -> Actor:
    boss = make_member(platform, runtime.slug, "boss@desk.example", "agent")
    admin = make_member(platform, runtime.slug, "admin@desk.example", "admin")
    SharingService(platform, runtime, admin).set_manager(agent.user_id, boss.user_id)
    return boss


@pytest.fixture
def ticket(platform: Platform, runtime: TenantRuntime, agent: Actor
           ) -> dict[str, Any]:
    service: RecordService = platform.records(runtime, agent)
    return service.create("ticket", {"name": "Printer jam", "amount": 10})


@pytest.fixture
def base_url(app: Flask, boss: Actor, ticket: dict[str, Any]) -> Iterator[str]:
    with serve_wsgi(app) as url:
        yield url


def sign_in(page: Page, base_url: str, email: str) -> None:
    # Leave the app first: a request still in flight could otherwise set the
    # previous member's session cookie again after it is cleared.
    page.goto("about:blank")
    page.context.clear_cookies()
    page.goto(f"{base_url}/t/desk/login")
    page.fill("#email", email)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base_url}/t/desk/")


def state(page: Page) -> Any:
    return page.locator("[data-testid=workflow-state]")


def test_transitions_and_approval(
    page: Page, base_url: str, agent: Actor, boss: Actor, ticket: dict[str, Any]
) -> None:
    console = Console(page)
    sign_in(page, base_url, agent.email)
    page.goto(f"{base_url}/t/desk/ticket/{ticket['id']}")
    expect(state(page)).to_have_text("new")

    page.fill("#assign-comment", "Taking this one")
    page.click("[data-testid=transition-assign]")
    expect(page.locator(".flash-area")).to_contain_text("“Assign” done.")
    expect(state(page)).to_have_text("assigned")
    history = page.locator("[data-testid=transition-step]")
    expect(history).to_have_count(1)
    expect(history.first).to_contain_text("new → assigned")
    expect(history.first).to_contain_text("Taking this one")

    page.fill("#resolve-f_resolution", "Cleared the paper path")
    page.click("[data-testid=transition-resolve]")
    expect(state(page)).to_have_text("resolved")
    expect(history.first).to_contain_text("assigned → resolved")

    page.click("[data-testid=transition-close]")
    expect(page.locator(".flash-area")).to_contain_text("Approval requested")
    expect(page.locator("[data-testid=approval-request]")).to_contain_text(
        "Awaiting approval")
    expect(state(page)).to_have_text("resolved")

    sign_in(page, base_url, boss.email)
    expect(page.locator("[data-testid=unread-count]")).to_have_text("1")
    page.click("[data-testid=nav-approvals]")
    row = page.locator("[data-testid=approval-row]")
    expect(row).to_contain_text("Printer jam")
    row.locator("input[name=comment]").fill("Agreed")
    row.locator("[data-testid=approve]").click()
    expect(page.locator(".flash-area")).to_contain_text("You approved the request.")
    expect(page.locator("[data-testid=no-approvals]")).to_be_visible()

    page.goto(f"{base_url}/t/desk/ticket/{ticket['id']}")
    expect(state(page)).to_have_text("closed")
    expect(history.first).to_contain_text("resolved → closed")
    expect(history.first).to_contain_text(re.compile("Approved by boss"))

    assert console.csp_violations() == []
    assert console.messages == []
