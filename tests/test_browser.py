"""The UI in real Chromium: sign in, list, filter, search, create, edit,
delete, switch language, and not one Content-Security-Policy violation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import ConsoleMessage, Page, expect

from crm_platform.records import RecordService
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.plugins.browser import serve_wsgi

pytestmark = pytest.mark.browser


class Console:
    """Console messages and uncaught errors of one page."""

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        page.on("console", self.record)
        page.on("pageerror", lambda error: self.messages.append(f"error: {error}"))

    def record(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.messages.append(f"{message.type}: {message.text}")

    def csp_violations(self) -> list[str]:
        return [text for text in self.messages
                if "Content Security Policy" in text or "Refused to" in text]


@pytest.fixture
def base_url(app: Flask, records: RecordService) -> Iterator[str]:
    for number, grade in enumerate(["a", "b", "c", "a", "b", "c", "a"]):
        records.create("account", {"name": f"Account {number}", "grade": grade,
                                   "city": "Berlin"})
    with serve_wsgi(app) as url:
        yield url


@pytest.fixture
def console(page: Page) -> Console:
    return Console(page)


def sign_in(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/t/acme/")
    expect(page).to_have_url(re.compile(r"/t/acme/login\?next="))
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base_url}/t/acme/")


def rows(page: Page) -> Any:
    return page.locator("table.record-table tbody tr[data-href]")


def test_record_lifecycle(page: Page, base_url: str, console: Console) -> None:
    sign_in(page, base_url)
    page.click(".sidebar-nav >> text=Accounts")
    expect(page.locator("h1")).to_have_text("Accounts")
    expect(rows(page)).to_have_count(7)

    page.select_option("select[name=grade]", "a")
    expect(page).to_have_url(re.compile(r"grade=a"))
    expect(rows(page)).to_have_count(3)

    page.fill("input[name=q]", "Account 3")
    page.press("input[name=q]", "Enter")
    expect(page).to_have_url(re.compile(r"q=Account\+3"))
    expect(rows(page)).to_have_count(1)

    page.click("[data-testid=new-record]")
    page.fill("#f_name", "Initech")
    page.select_option("#f_grade", "b")
    page.fill("#f_annual_revenue", "2500000")
    page.click("[data-testid=save]")
    expect(page.locator("[data-testid=record-title]")).to_have_text("Initech")
    expect(page.locator(".flash-area")).to_contain_text("Account created.")
    expect(page.locator("[data-field=annual_revenue]")).to_contain_text(
        "USD 2,500,000.00")

    page.click("[data-testid=edit-record]")
    page.fill("#f_city", "Austin")
    page.click("[data-testid=save]")
    expect(page.locator(".flash-area")).to_contain_text("Changes saved.")
    expect(page.locator("[data-field=city]")).to_contain_text("Austin")

    page.click("[data-testid=delete-record]")
    expect(page.locator("h1")).to_have_text("Delete Account")
    page.click("[data-testid=confirm-delete]")
    expect(page.locator(".flash-area")).to_contain_text("Account deleted.")
    expect(page.locator("text=Initech")).to_have_count(0)

    assert console.csp_violations() == []
    assert console.messages == []


def test_switch_to_chinese(page: Page, base_url: str, console: Console) -> None:
    sign_in(page, base_url)
    page.goto(f"{base_url}/t/acme/account/")
    page.click("button[aria-label=Language]")
    page.click("[data-lang=zh-CN]")
    expect(page.locator("h1")).to_have_text("客户")
    expect(page.locator("[data-testid=new-record]")).to_contain_text("新建客户")
    expect(page.locator(".sidebar-nav")).to_contain_text("首页")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    assert console.csp_violations() == []
    assert console.messages == []


def test_badges_coloured_by_script(page: Page, base_url: str, console: Console
                                   ) -> None:
    sign_in(page, base_url)
    page.goto(f"{base_url}/t/acme/account/?grade=a")
    badge = page.locator(".option-badge[data-color='#2e7d32']").first
    expect(badge).to_have_css("background-color", "rgb(46, 125, 50)")
    expect(badge).to_have_css("color", "rgb(255, 255, 255)")
    assert console.csp_violations() == []


def test_row_click_opens_record(page: Page, base_url: str, console: Console) -> None:
    sign_in(page, base_url)
    page.goto(f"{base_url}/t/acme/account/?sort=name")
    rows(page).first.locator("td").nth(1).click()
    expect(page.locator("[data-testid=record-title]")).to_have_text("Account 0")


def test_phone_menu_opens(page: Page, base_url: str, console: Console) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, base_url)
    sidebar = page.locator("#sidebar")
    expect(sidebar).not_to_be_visible()
    page.click("button[aria-controls=sidebar]")
    expect(sidebar).to_be_visible()
    sidebar.locator("text=Contacts").click()
    expect(page.locator("h1")).to_have_text("Contacts")
    assert console.csp_violations() == []
    assert console.messages == []


def test_history_after_edit(page: Page, base_url: str, console: Console) -> None:
    sign_in(page, base_url)
    page.click(".sidebar-nav >> text=Accounts")
    page.click("table.record-table >> text=Account 2")
    page.click("[data-testid=edit-record]")
    page.fill("#f_city", "Austin")
    page.click("[data-testid=save]")
    expect(page.locator(".flash-area")).to_contain_text("Changes saved.")

    page.click("[data-testid=record-history]")
    entries = page.locator("[data-testid=history] > li")
    expect(entries).to_have_count(2)
    city = entries.first.locator("[data-field=city]")
    expect(city.locator(".journal-before")).to_have_text("Berlin")
    expect(city.locator(".journal-after")).to_have_text("Austin")
    expect(entries.last.locator("[data-action=create]")).to_be_visible()

    page.click("[data-testid=nav-audit]")
    page.select_option("#audit-entity", "account")
    page.select_option("#audit-field", "city")
    page.click("[data-testid=audit-filters] button[type=submit]")
    results = page.locator("[data-testid=audit-results] > tbody > tr")
    expect(results).to_have_count(8)
    expect(results.first).to_contain_text("Austin")
    assert console.csp_violations() == []
    assert console.messages == []


def test_erase_person(
    page: Page, base_url: str, console: Console, records: RecordService
) -> None:
    contact = records.create(
        "contact", {"name": "Ada Brown", "email": "ada@example.org", "phone": "555"}
    )
    sign_in(page, base_url)
    page.click("[data-testid=nav-personal-data]")
    page.fill("[data-testid=person-email]", "ADA@example.org")
    page.click("form[role=search] button[type=submit]")
    expect(page.locator("[data-testid=person-found]")).to_contain_text("Ada Brown")

    page.click("[data-testid=person-erase]")
    expect(page.locator("[data-testid=person-error]")).to_contain_text(
        "Tick the box")
    page.check("[data-testid=person-confirm]")
    page.click("[data-testid=person-erase]")
    expect(page.locator("[data-testid=person-erased]")).to_contain_text("Contacts: 1")
    assert records.get("contact", contact["id"])["email"] is None
    assert console.csp_violations() == []
