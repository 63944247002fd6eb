"""The HTML user interface through Flask's test client.

Every test signs in through the real sign-in form and submits the real
record forms with CSRF tokens scraped from the pages, against tenants in
real SQLite files under ``tmp_path``.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from flask.testing import FlaskClient
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from crm_platform.control import Actor
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, ROOT, STANDARD_CRM, make_member
from tests.definitions.builders import documents, entity, field, write_folder

ALL_TYPES = ROOT / "tests" / "definitions" / "all_types"
PO_FILE = ROOT / "renderers" / "translations" / "zh_CN" / "LC_MESSAGES" / "messages.po"


# Helpers


class FormScraper(HTMLParser):
    """Collects what a browser would submit for each form of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[MultiDict[str, str]] = []
        self.actions: list[str] = []
        self._select: str | None = None
        self._select_multiple = False
        self._select_values: list[tuple[str, bool]] = []
        self._textarea: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        if tag == "form":
            self.forms.append(MultiDict())
            self.actions.append(values.get("action", ""))
        elif not self.forms:
            return
        elif tag == "input":
            self._input(values)
        elif tag == "select":
            self._select = values.get("name")
            self._select_multiple = "multiple" in values
            self._select_values = []
        elif tag == "option" and self._select is not None:
            self._select_values.append((values.get("value", ""), "selected" in values))
        elif tag == "textarea":
            self._textarea = values.get("name")
            self._text = []

    def _input(self, values: dict[str, str]) -> None:
        name = values.get("name")
        if not name or "form" in values:
            return
        kind = values.get("type", "text")
        if kind in ("checkbox", "radio"):
            if "checked" in values:
                self.forms[-1].add(name, values.get("value", "on"))
            return
        if kind in ("submit", "button"):
            return
        self.forms[-1].add(name, values.get("value", ""))

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select is not None:
            chosen = [value for value, selected in self._select_values if selected]
            if not chosen and not self._select_multiple and self._select_values:
                chosen = [self._select_values[0][0]]
            for value in chosen:
                self.forms[-1].add(self._select, value)
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            # Browsers drop one newline right after <textarea> and send line
            # breaks as CRLF.
            text = "".join(self._text).replace("\r\n", "\n").removeprefix("\n")
            self.forms[-1].add(self._textarea, text.replace("\n", "\r\n"))
            self._textarea = None


def scrape_form(html: str, index: int = -1) -> MultiDict[str, str]:
    """Return the values a browser would send for a form of ``html``."""
    scraper = FormScraper()
    scraper.feed(html)
    return scraper.forms[index]


def record_form(html: str) -> MultiDict[str, str]:
    """Return the values of the record form (the one with a record version)."""
    scraper = FormScraper()
    scraper.feed(html)
    for form in scraper.forms:
        if "record_version" in form:
            return form
    raise AssertionError("the page has no record form")


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def sign_in(client: FlaskClient, slug: str = "acme", email: str = ADMIN_EMAIL,
            password: str = ADMIN_PASSWORD) -> TestResponse:
    page = client.get(f"/t/{slug}/login")
    data = {"csrf_token": csrf_token(page.text), "email": email, "password": password}
    return client.post(f"/t/{slug}/login", data=data)


def post_form(client: FlaskClient, url: str, changes: dict[str, Any] | None = None
              ) -> TestResponse:
    """Open ``url``, change the record form's inputs and submit it."""
    page = client.get(url)
    assert page.status_code == 200, page.text
    data = record_form(page.text)
    for key, value in (changes or {}).items():
        data.setlist(key, value if isinstance(value, list) else [value])
    return client.post(url, data=data)


def text_of(html: str) -> str:
    """Return the visible text of a page, whitespace collapsed."""
    without_tags = re.sub(r"<[^>]+>", " ", html)
    return re.sub(r"\s+", " ", without_tags)


def table_titles(html: str) -> list[str]:
    return re.findall(r'class="record-link" href="[^"]+">([^<]+)</a>', html)


# Fixtures


@pytest.fixture
def member(client: FlaskClient, admin: Actor) -> FlaskClient:
    """The test client, signed in to ``acme`` as its admin."""
    response = sign_in(client)
    assert response.status_code == 302, response.text
    return client


@pytest.fixture
def accounts(records: RecordService) -> list[dict[str, Any]]:
    grades = ["a", "b", "c"]
    return [
        records.create("account", {
            "name": f"Account {number:02d}",
            "grade": grades[number % 3],
            "city": "Berlin" if number % 2 else "Shanghai",
            "customer_type": "reseller" if number % 5 == 0 else "consumer",
        })
        for number in range(30)
    ]


@pytest.fixture
def globex(platform: Platform, crm: TenantRuntime) -> TenantRuntime:
    return platform.create_tenant("globex", STANDARD_CRM, name="Globex")


@pytest.fixture
def types_tenant(platform: Platform, admin: Actor) -> TenantRuntime:
    runtime = platform.create_tenant("types", ALL_TYPES, name="Types")
    make_member(platform, runtime.slug, ADMIN_EMAIL, "admin")
    return runtime


# Entry and sign-in


def test_root_redirects_to_only_tenant(client: FlaskClient, crm: TenantRuntime) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/t/acme/"


def test_root_hides_tenants(client: FlaskClient, globex: TenantRuntime) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "acme" not in response.text
    assert "globex" not in response.text


def test_pages_require_sign_in(client: FlaskClient, crm: TenantRuntime) -> None:
    response = client.get("/t/acme/account/?q=x")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/t/acme/login?next=")
    assert "account" in response.headers["Location"]


def test_sign_in_follows_next(client: FlaskClient, admin: Actor) -> None:
    page = client.get("/t/acme/login?next=/t/acme/contact/")
    data = scrape_form(page.text)
    data["email"] = ADMIN_EMAIL
    data["password"] = ADMIN_PASSWORD
    response = client.post("/t/acme/login", data=data)
    assert response.headers["Location"] == "/t/acme/contact/"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x",
                                    "/t/globex/", "/\\evil.example"])
def test_sign_in_ignores_foreign_next(
    client: FlaskClient, admin: Actor, target: str
) -> None:
    page = client.get("/t/acme/login")
    data = {"csrf_token": csrf_token(page.text), "email": ADMIN_EMAIL,
            "password": ADMIN_PASSWORD, "next": target}
    response = client.post("/t/acme/login", data=data)
    assert response.headers["Location"] == "/t/acme/"


def test_wrong_password_rejected(client: FlaskClient, admin: Actor) -> None:
    response = sign_in(client, password="wrong-password-1")
    assert response.status_code == 401
    assert "Invalid e-mail address or password." in response.text


def test_login_errors_look_alike(
    client: FlaskClient, platform: Platform, admin: Actor, globex: TenantRuntime
) -> None:
    make_member(platform, "globex", "boss@globex.example", "admin")
    wrong_password = sign_in(client, password="wrong-password-1")
    unknown_user = sign_in(client, email="nobody@example.com")
    other_tenant = sign_in(client, email="boss@globex.example")
    assert wrong_password.status_code == 401
    assert unknown_user.status_code == 401
    assert other_tenant.status_code == 401
    message = "Invalid e-mail address or password."
    assert message in unknown_user.text
    assert message in other_tenant.text


def test_login_requires_csrf(client: FlaskClient, admin: Actor) -> None:
    client.get("/t/acme/login")
    response = client.post("/t/acme/login", data={"email": ADMIN_EMAIL,
                                                  "password": ADMIN_PASSWORD})
    assert response.status_code == 400
    assert client.get("/t/acme/").status_code == 302


def test_logout_requires_csrf(member: FlaskClient) -> None:
    without_token = member.post("/t/acme/logout")
    assert without_token.status_code == 302
    assert member.get("/t/acme/").status_code == 200
    page = member.get("/t/acme/")
    member.post("/t/acme/logout", data={"csrf_token": csrf_token(page.text)})
    assert member.get("/t/acme/").status_code == 302


def test_logout_ignores_get(member: FlaskClient) -> None:
    member.get("/t/acme/logout", follow_redirects=True)
    assert member.get("/t/acme/").status_code == 200


# Isolation between tenants


def test_other_tenant_session_redirected(
    member: FlaskClient, platform: Platform, globex: TenantRuntime
) -> None:
    boss = make_member(platform, "globex", "boss@globex.example", "admin")
    secret = RecordService(globex, boss, "en").create("account", {"name": "Secret"})
    response = member.get(f"/t/globex/account/{secret['id']}")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/t/globex/login")


def test_other_tenant_record_is_404(
    member: FlaskClient, platform: Platform, globex: TenantRuntime
) -> None:
    boss = make_member(platform, "globex", "boss@globex.example", "admin")
    secret = RecordService(globex, boss, "en").create("account", {"name": "Secret"})
    response = member.get(f"/t/acme/account/{secret['id']}")
    assert response.status_code == 404
    assert "Secret" not in response.text


def test_member_of_both_signs_in_twice(
    member: FlaskClient, platform: Platform, globex: TenantRuntime
) -> None:
    make_member(platform, "globex", ADMIN_EMAIL, "read_only")
    assert member.get("/t/globex/").status_code == 302
    assert sign_in(member, "globex").status_code == 302
    assert member.get("/t/globex/").status_code == 200


# Not found


def test_unknown_record_is_404(member: FlaskClient) -> None:
    response = member.get("/t/acme/account/01900000-0000-7000-8000-000000000000")
    assert response.status_code == 404
    assert "does not exist" in response.text


def test_unknown_entity_is_404(member: FlaskClient) -> None:
    assert member.get("/t/acme/spaceship/").status_code == 404
    assert member.get("/t/acme/spaceship/new").status_code == 404


def test_unknown_tenant_is_404(client: FlaskClient, crm: TenantRuntime) -> None:
    assert client.get("/t/nowhere/login").status_code == 404


def test_edit_unknown_record_is_404(member: FlaskClient) -> None:
    url = "/t/acme/account/01900000-0000-7000-8000-000000000000/edit"
    assert member.get(url).status_code == 404


# Home and lists


def test_home_counts_records(member: FlaskClient, accounts: list[Any]) -> None:
    page = member.get("/t/acme/")
    assert page.status_code == 200
    count = re.search(r'data-testid="count-account">([^<]+)<', page.text)
    assert count is not None
    assert count.group(1) == "30"
    assert "bi-building" in page.text


def test_home_lists_every_entity(member: FlaskClient, crm: TenantRuntime) -> None:
    page = member.get("/t/acme/")
    for item in crm.definition.entities:
        assert f'href="/t/acme/{item.name}/"' in page.text


def test_every_list_view_renders(member: FlaskClient, crm: TenantRuntime) -> None:
    for item in crm.definition.entities:
        for view in item.list_views:
            url = f"/t/acme/{item.name}/?view={view.name}"
            assert member.get(url).status_code == 200, url


def test_every_create_form_renders(member: FlaskClient, crm: TenantRuntime) -> None:
    for item in crm.definition.entities:
        url = f"/t/acme/{item.name}/new"
        assert member.get(url).status_code == 200, url


def test_list_sorts_by_header(member: FlaskClient, accounts: list[Any]) -> None:
    ascending = table_titles(member.get("/t/acme/account/?sort=name").text)
    descending = table_titles(member.get("/t/acme/account/?sort=-name").text)
    assert ascending[0] == "Account 00"
    assert descending[0] == "Account 29"


def test_header_link_toggles_sort(member: FlaskClient, accounts: list[Any]) -> None:
    page = member.get("/t/acme/account/?sort=name").text
    link = re.search(r'class="sort-link" href="([^"]+)" data-column="name"', page)
    assert link is not None
    assert "sort=-name" in link.group(1)


def test_list_filters_by_column(member: FlaskClient, accounts: list[Any]) -> None:
    page = member.get("/t/acme/account/?name__icontains=account+1").text
    titles = table_titles(page)
    assert len(titles) == 10
    assert all(title.startswith("Account 1") for title in titles)


def test_list_filters_by_picklist(member: FlaskClient, accounts: list[Any]) -> None:
    page = member.get("/t/acme/account/?grade=a").text
    assert len(table_titles(page)) == 10
    assert re.search(r'<option value="a" selected>', page)


def test_saved_view_applies_filters(member: FlaskClient, accounts: list[Any]) -> None:
    page = member.get("/t/acme/account/?view=resellers").text
    assert sorted(table_titles(page)) == [f"Account {n:02d}" for n in range(0, 30, 5)]


def test_list_searches_text(member: FlaskClient, accounts: list[Any]) -> None:
    page = member.get("/t/acme/account/?q=count+2").text
    assert len(table_titles(page)) == 10


def test_list_paginates(member: FlaskClient, accounts: list[Any]) -> None:
    first = member.get("/t/acme/account/").text
    second = member.get("/t/acme/account/?page=2").text
    assert len(table_titles(first)) == 25
    assert len(table_titles(second)) == 5
    assert "30 records" in first
    assert "Showing 26–30 of 30" in text_of(second)


def test_pagination_keeps_filters(member: FlaskClient, accounts: list[Any]) -> None:
    page = member.get("/t/acme/account/?city__icontains=berlin&limit=5").text
    expected = "/t/acme/account/?city__icontains=berlin&amp;limit=5&amp;page=2"
    assert f'href="{expected}"' in page


def test_list_rejects_bad_filter(member: FlaskClient, accounts: list[Any]) -> None:
    response = member.get("/t/acme/account/?grade__contains=a")
    assert response.status_code == 400
    assert "operator &#39;contains&#39; is not allowed" in response.text


def test_unknown_filter_field_rejected(member: FlaskClient) -> None:
    response = member.get("/t/acme/account/?colour=red")
    assert response.status_code == 400
    assert "unknown field" in response.text


def test_active_filter_chip_removes(member: FlaskClient, accounts: list[Any]) -> None:
    page = member.get("/t/acme/account/?grade__in=a,b&sort=name").text
    chip = re.search(r'class="filter-chip" href="([^"]+)"[^>]*>\s*([^<]+?)\s*<', page)
    assert chip is not None
    assert chip.group(1) == "/t/acme/account/?sort=name"
    assert chip.group(2) == "Grade ∈ a,b"
    assert len(table_titles(page)) == 20


# Detail


def test_detail_shows_badges_and_links(
    member: FlaskClient, records: RecordService
) -> None:
    account = records.create("account", {"name": "Acme Corp", "grade": "a",
                                         "annual_revenue": "1234567.5"})
    contact = records.create("contact", {"first_name": "Lin", "last_name": "Wei",
                                         "name": "Lin Wei", "account": account["id"]})
    page = member.get(f"/t/acme/contact/{contact['id']}").text
    assert f'href="/t/acme/account/{account["id"]}">Acme Corp</a>' in page
    account_page = member.get(f"/t/acme/account/{account['id']}").text
    assert 'data-color="#2e7d32"' in account_page
    assert "USD 1,234,567.50" in account_page


def test_detail_lists_related_records(
    member: FlaskClient, records: RecordService
) -> None:
    account = records.create("account", {"name": "Acme Corp"})
    records.create("contact", {"first_name": "Lin", "last_name": "Wei",
                               "name": "Lin Wei", "account": account["id"]})
    page = member.get(f"/t/acme/account/{account['id']}").text
    assert "Lin Wei" in page
    assert f'href="/t/acme/contact/new?account={account["id"]}"' in page


def test_long_text_keeps_line_breaks(member: FlaskClient, records: RecordService
                                     ) -> None:
    account = records.create("account", {"name": "Acme",
                                         "description": "first\nsecond"})
    page = member.get(f"/t/acme/account/{account['id']}").text
    assert '<div class="long-text">first\nsecond</div>' in page
    assert "<br" not in page


def test_related_new_prefills_lookup(member: FlaskClient, records: RecordService
                                     ) -> None:
    account = records.create("account", {"name": "Acme Corp"})
    page = member.get(f"/t/acme/contact/new?account={account['id']}").text
    assert f'<option selected value="{account["id"]}">Acme Corp</option>' in page


# Create, edit, delete through the forms


def test_create_through_form(member: FlaskClient, records: RecordService) -> None:
    response = post_form(member, "/t/acme/account/new",
                         {"f_name": "Initech", "f_grade": "b", "f_city": "Austin"})
    assert response.status_code == 302
    record_id = response.headers["Location"].rsplit("/", 1)[-1]
    stored = records.get("account", record_id)
    assert stored["name"] == "Initech"
    assert stored["grade"] == "b"
    assert stored["city"] == "Austin"


def test_create_applies_defaults(member: FlaskClient, records: RecordService) -> None:
    response = post_form(member, "/t/acme/account/new", {"f_name": "Initech"})
    record_id = response.headers["Location"].rsplit("/", 1)[-1]
    assert records.get("account", record_id)["customer_type"] == "consumer"


def test_create_requires_csrf(member: FlaskClient, records: RecordService) -> None:
    response = member.post("/t/acme/account/new", data={"f_name": "Initech"})
    assert response.status_code == 400
    assert "The form has expired" in response.text


def test_create_shows_field_errors(member: FlaskClient) -> None:
    response = post_form(member, "/t/acme/account/new",
                         {"f_name": "Initech", "f_email": "not-an-address"})
    assert response.status_code == 422
    assert "Not a valid e-mail address." in response.text
    assert 'id="f_email" maxlength="254" name="f_email" type="email" ' \
           'value="not-an-address"' in response.text


def test_errors_in_chinese(member: FlaskClient) -> None:
    member.get("/t/acme/?lang=zh-CN")
    response = post_form(member, "/t/acme/account/new", {"f_name": ""})
    assert response.status_code == 422
    assert "此字段为必填项。" in response.text
    assert "记录未保存。" in response.text


def test_edit_through_form(member: FlaskClient, records: RecordService) -> None:
    account = records.create("account", {"name": "Initech", "city": "Austin"})
    url = f"/t/acme/account/{account['id']}/edit"
    response = post_form(member, url, {"f_city": "Dallas"})
    assert response.status_code == 302
    stored = records.get("account", account["id"])
    assert stored["city"] == "Dallas"
    assert stored["version"] == 2


def test_edit_clears_field(member: FlaskClient, records: RecordService) -> None:
    account = records.create("account", {"name": "Initech", "city": "Austin"})
    post_form(member, f"/t/acme/account/{account['id']}/edit", {"f_city": ""})
    assert records.get("account", account["id"])["city"] is None


def test_edit_without_changes_keeps_version(
    member: FlaskClient, records: RecordService
) -> None:
    account = records.create("account", {"name": "Initech", "annual_revenue": "5"})
    response = post_form(member, f"/t/acme/account/{account['id']}/edit")
    assert response.status_code == 302
    assert records.get("account", account["id"])["version"] == 1


def test_edit_reports_stale_version(
    member: FlaskClient, records: RecordService
) -> None:
    account = records.create("account", {"name": "Initech"})
    url = f"/t/acme/account/{account['id']}/edit"
    data = record_form(member.get(url).text)
    records.update("account", account["id"], {"city": "Elsewhere"})
    data["f_city"] = "Dallas"
    response = member.post(url, data=data)
    assert response.status_code == 409
    assert "Someone else saved this record" in response.text
    assert records.get("account", account["id"])["city"] == "Elsewhere"


def test_edit_requires_version(member: FlaskClient, records: RecordService) -> None:
    account = records.create("account", {"name": "Initech"})
    response = post_form(member, f"/t/acme/account/{account['id']}/edit",
                         {"record_version": "", "f_city": "Dallas"})
    assert response.status_code == 400
    assert records.get("account", account["id"])["city"] is None


def test_edit_reports_unique_conflict(
    member: FlaskClient, records: RecordService
) -> None:
    records.create("product", {"name": "Router", "code": "R-1"})
    second = records.create("product", {"name": "Switch", "code": "S-1"})
    response = post_form(member, f"/t/acme/product/{second['id']}/edit",
                         {"f_code": "R-1"})
    assert response.status_code == 409
    assert "Another record already has this value." in response.text


def test_delete_asks_first(member: FlaskClient, records: RecordService) -> None:
    account = records.create("account", {"name": "Initech"})
    url = f"/t/acme/account/{account['id']}/delete"
    page = member.get(url)
    assert page.status_code == 200
    assert "Do you really want to delete “Initech”?" in page.text
    assert records.get("account", account["id"])["name"] == "Initech"


def test_delete_through_form(member: FlaskClient, records: RecordService) -> None:
    account = records.create("account", {"name": "Initech"})
    url = f"/t/acme/account/{account['id']}/delete"
    data = scrape_form(member.get(url).text)
    response = member.post(url, data=data)
    assert response.status_code == 302
    assert response.headers["Location"] == "/t/acme/account/"
    assert member.get(f"/t/acme/account/{account['id']}").status_code == 404


def test_delete_requires_csrf(member: FlaskClient, records: RecordService) -> None:
    account = records.create("account", {"name": "Initech"})
    response = member.post(f"/t/acme/account/{account['id']}/delete")
    assert response.status_code == 400
    assert records.get("account", account["id"])["name"] == "Initech"


def test_delete_referenced_shows_conflict(
    member: FlaskClient, records: RecordService
) -> None:
    account = records.create("account", {"name": "Initech"})
    records.create("opportunity", {"name": "Deal", "account": account["id"],
                                   "stage": "prospecting"})
    url = f"/t/acme/account/{account['id']}/delete"
    response = member.post(url, data=scrape_form(member.get(url).text))
    assert response.status_code == 409
    assert "1 Opportunities refer to it" in text_of(response.text)


# Every field type through the HTML form


SAMPLE_INPUT: dict[str, Any] = {
    "f_title": "Widget <b>",
    "f_code": "AB12",
    "f_notes": "line one\r\nline two",
    "f_quantity": "42",
    "f_big_number": "9007199254740993",
    "f_ratio": "-0.1234",
    "f_wide_decimal": "1234567.89",
    "f_price": "19.99",
    "f_discount": "12.50",
    "f_active": "y",
    "f_due_on": "2031-02-03",
    "f_happened_at": "2024-05-06T07:08:09",
    "f_email": "a@example.com",
    "f_phone": "+1 555 0100",
    "f_website": "https://example.com/x?y=1",
    "f_colour": "red",
    "f_tags": ["alpha", "gamma"],
}

SAMPLE_STORED: dict[str, Any] = {
    "title": "Widget <b>",
    "code": "AB12",
    "notes": "line one\nline two",
    "quantity": 42,
    "big_number": 9007199254740993,
    "ratio": Decimal("-0.1234"),
    "wide_decimal": Decimal("1234567.89"),
    "price": Decimal("19.99"),
    "discount": Decimal("12.50"),
    "active": True,
    "due_on": dt.date(2031, 2, 3),
    "happened_at": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
    "email": "a@example.com",
    "phone": "+1 555 0100",
    "website": "https://example.com/x?y=1",
    "colour": "red",
    "tags": ["alpha", "gamma"],
}


@pytest.fixture
def types_member(client: FlaskClient, types_tenant: TenantRuntime) -> FlaskClient:
    assert sign_in(client, "types").status_code == 302
    return client


@pytest.fixture
def types_records(platform: Platform, types_tenant: TenantRuntime) -> RecordService:
    user_id = platform.control.find_user_id(ADMIN_EMAIL)
    assert user_id is not None
    actor = platform.control.actor(types_tenant.tenant, user_id)
    assert actor is not None
    return RecordService(types_tenant, actor, "en")


@pytest.fixture
def sample(types_member: FlaskClient, types_records: RecordService
           ) -> dict[str, Any]:
    target = types_records.create("target", {"name": "Bullseye"})
    response = post_form(types_member, "/t/types/sample/new",
                         {**SAMPLE_INPUT, "f_target": target["id"]})
    assert response.status_code == 302, response.text
    record_id = response.headers["Location"].rsplit("/", 1)[-1]
    return types_records.get("sample", record_id)


@pytest.mark.parametrize("name", sorted(SAMPLE_STORED))
def test_type_stored_from_form(sample: dict[str, Any], name: str) -> None:
    assert sample[name] == SAMPLE_STORED[name]


def test_lookup_stored_from_form(sample: dict[str, Any],
                                 types_records: RecordService) -> None:
    titles = types_records.titles("target", [sample["target"]])
    assert titles == {sample["target"]: "Bullseye"}


def test_auto_number_set_on_create(sample: dict[str, Any]) -> None:
    assert sample["serial"] == "SMP-00001"


def test_edit_form_shows_every_value(
    types_member: FlaskClient, sample: dict[str, Any]
) -> None:
    page = types_member.get(f"/t/types/sample/{sample['id']}/edit").text
    shown = record_form(page)
    for key, value in SAMPLE_INPUT.items():
        expected = value if isinstance(value, list) else [value]
        assert shown.getlist(key) == expected, key
    assert shown["f_target"] == sample["target"]


def test_unchanged_edit_writes_nothing(
    types_member: FlaskClient, sample: dict[str, Any], types_records: RecordService
) -> None:
    response = post_form(types_member, f"/t/types/sample/{sample['id']}/edit")
    assert response.status_code == 302
    assert types_records.get("sample", sample["id"])["version"] == 1


def test_edit_clears_every_optional_type(
    types_member: FlaskClient, sample: dict[str, Any], types_records: RecordService
) -> None:
    optional = [key for key in SAMPLE_INPUT if key not in ("f_title", "f_active")]
    changes: dict[str, Any] = {key: "" for key in optional}
    changes["f_tags"] = []
    changes["f_target"] = ""
    response = post_form(types_member, f"/t/types/sample/{sample['id']}/edit",
                         changes)
    assert response.status_code == 302, response.text
    stored = types_records.get("sample", sample["id"])
    for key in [*optional, "f_target"]:
        assert stored[key.removeprefix("f_")] is None, key


def test_edit_unchecks_boolean(
    types_member: FlaskClient, sample: dict[str, Any], types_records: RecordService
) -> None:
    url = f"/t/types/sample/{sample['id']}/edit"
    data = record_form(types_member.get(url).text)
    data.poplist("f_active")
    assert types_member.post(url, data=data).status_code == 302
    assert types_records.get("sample", sample["id"])["active"] is False


def test_detail_formats_every_type(
    types_member: FlaskClient, sample: dict[str, Any]
) -> None:
    page = types_member.get(f"/t/types/sample/{sample['id']}").text
    for expected in ["Widget &lt;b&gt;", "9,007,199,254,740,993", "-0.1234",
                     "1,234,567.89", "EUR 19.99", "12.5%", "✓", "Feb 3, 2031",
                     "May 6, 2024, 7:08:09", "UTC", "mailto:a@example.com",
                     'href="https://example.com/x?y=1"', "Alpha", "Gamma",
                     "SMP-00001", ">Bullseye</a>"]:
        assert expected in page, expected


def test_detail_formats_in_chinese(
    types_member: FlaskClient, sample: dict[str, Any]
) -> None:
    types_member.get("/t/types/?lang=zh-CN")
    page = types_member.get(f"/t/types/sample/{sample['id']}").text
    assert "2031年2月3日" in page
    assert ">红</span>" in page
    assert "颜色" in page


def test_invalid_values_map_to_inputs(
    types_member: FlaskClient, types_tenant: TenantRuntime
) -> None:
    response = post_form(types_member, "/t/types/sample/new", {
        "f_title": "Widget", "f_code": "lower", "f_quantity": "many",
        "f_ratio": "2", "f_due_on": "1999-12-31", "f_website": "ftp://x",
        "f_colour": "purple",
    })
    assert response.status_code == 422
    errors = dict(re.findall(
        r'data-field="(\w+)"(?:(?!data-field=).)*?'
        r'<div class="invalid-feedback d-block">([^<]+)</div>',
        response.text, flags=re.S))
    assert errors["code"] == "Does not match the required format."
    assert errors["quantity"] == "Not a valid whole number."
    assert errors["ratio"] == "Must be between -1 and 1."
    assert errors["due_on"].startswith("Must be between")
    assert errors["website"].startswith("Not a valid URL")
    assert "is not one of the options" in errors["colour"]


# Escaping, assets, languages


def test_tenant_labels_are_escaped(
    client: FlaskClient, platform: Platform, tmp_path: Path
) -> None:
    script = "<script>alert(1)</script>"
    folder = write_folder(tmp_path / "evil", documents(
        entity("thing", field("kind", "picklist", label=script, options=[
            {"value": "x", "label": script, "color": "#123456"}]),
            label=script, plural_label=script, description=script),
    ))
    runtime = platform.create_tenant("evil", folder)
    actor = make_member(platform, runtime.slug, ADMIN_EMAIL, "admin")
    sign_in(client, "evil")
    service = RecordService(runtime, actor, "en")
    record = service.create("thing", {"name": script, "kind": "x"})
    for url in ["/t/evil/", "/t/evil/thing/", f"/t/evil/thing/{record['id']}",
                f"/t/evil/thing/{record['id']}/edit", "/t/evil/thing/new"]:
        page = client.get(url)
        assert page.status_code == 200, url
        assert script not in page.text, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, url


def test_pages_load_only_local_assets(
    member: FlaskClient, records: RecordService
) -> None:
    account = records.create("account", {"name": "Initech"})
    for url in ["/t/acme/", "/t/acme/account/", f"/t/acme/account/{account['id']}",
                "/t/acme/account/new", "/t/acme/login"]:
        page = member.get(url).text
        assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", page), url
        assert "cdn" not in page.lower(), url


def test_bootstrap_served_locally(member: FlaskClient) -> None:
    page = member.get("/t/acme/").text
    assets = re.findall(r'(?:src|href)="(/(?:bootstrap|assets)/[^"]+)"', page)
    assert len(assets) >= 5
    for asset in assets:
        response = member.get(asset)
        assert response.status_code == 200, asset
        response.close()


def test_pages_have_no_inline_code(member: FlaskClient, records: RecordService
                                   ) -> None:
    account = records.create("account", {"name": "Initech", "grade": "a"})
    for url in ["/t/acme/account/", f"/t/acme/account/{account['id']}",
                f"/t/acme/account/{account['id']}/edit"]:
        page = member.get(url).text
        assert " style=" not in page, url
        assert "<style" not in page, url
        assert re.search(r"<script(?![^>]*\bsrc=)", page) is None, url
        assert " onclick=" not in page, url


def test_csp_header_is_strict(member: FlaskClient) -> None:
    header = member.get("/t/acme/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in header
    assert "unsafe-inline" not in header


def test_lang_switch_saves_locale(
    member: FlaskClient, platform: Platform, admin: Actor
) -> None:
    response = member.get("/t/acme/account/?lang=zh-CN&sort=name")
    assert response.status_code == 302
    assert response.headers["Location"] == "/t/acme/account/?sort=name"
    page = member.get("/t/acme/account/?sort=name").text
    assert "全部客户" in page
    assert "新建客户" in page
    stored = platform.control.actor(platform.control.get_tenant("acme"), admin.user_id)
    assert stored is not None
    assert stored.locale == "zh-CN"


def test_login_follows_accept_language(client: FlaskClient, crm: TenantRuntime) -> None:
    page = client.get("/t/acme/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert "登录" in page.text
    assert '<html lang="zh-CN">' in page.text


def test_login_defaults_to_english(client: FlaskClient, crm: TenantRuntime) -> None:
    page = client.get("/t/acme/login", headers={"Accept-Language": "fr-FR"})
    assert "Sign in to Acme Ltd" in page.text


def test_language_before_sign_in_kept(
    client: FlaskClient, platform: Platform, admin: Actor
) -> None:
    client.get("/t/acme/login?lang=zh-CN")
    sign_in(client)
    assert "首页" in client.get("/t/acme/").text


def test_catalogue_translates_every_string() -> None:
    method_map = [("renderers/**.py", "python"), ("crm_platform/**.py", "python"),
                  ("renderers/templates/**.html", "jinja2")]
    extracted = {
        message if isinstance(message, str) else message[0]
        for _, _, message, _, _ in extract_from_dir(str(ROOT), method_map)
        if message
    }
    with PO_FILE.open("rb") as handle:
        catalog = read_po(handle, locale="zh_CN")
    translated = {
        message.id if isinstance(message.id, str) else message.id[0]
        for message in catalog
        if message.id and message.string and not message.fuzzy
    }
    assert extracted - translated == set()


def test_no_compiled_catalogue_in_tree() -> None:
    assert list((ROOT / "renderers").rglob("*.mo")) == []

