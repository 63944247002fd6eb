"""The operator page: only signed-in operators see it, every action needs a
CSRF token, tenant names are escaped, and its lifecycle actions reach the
real storage on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import ConsoleMessage, Page, expect
from werkzeug.test import TestResponse

from crm_platform.archive import Archive
from crm_platform.control import MAX_FAILED_LOGINS, utcnow
from crm_platform.lifecycle import close_tenant, purge_tenant
from crm_platform.operator import set_operator
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, STANDARD_CRM
from tests.plugins.browser import serve_wsgi
from tests.test_tenant_lifecycle import storage_exists
from tests.test_web import csrf_token, sign_in

pytestmark = pytest.mark.both_backends

OPERATOR_EMAIL = "ops@example.com"
OPERATOR_PASSWORD = "operator-pass-77"
HOSTILE_NAME = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def operator(platform: Platform, crm: TenantRuntime) -> str:
    """An operator who is a member of no tenant; returns the user id."""
    user_id = platform.control.create_user(OPERATOR_EMAIL, OPERATOR_PASSWORD)
    set_operator(platform.control, OPERATOR_EMAIL, grant=True)
    return user_id


def operator_sign_in(
    client: FlaskClient, email: str = OPERATOR_EMAIL, password: str = OPERATOR_PASSWORD
) -> TestResponse:
    page = client.get("/operator/login")
    data = {"csrf_token": csrf_token(page.text), "email": email, "password": password}
    return client.post("/operator/login", data=data)


@pytest.fixture
def ops(client: FlaskClient, operator: str) -> FlaskClient:
    """A test client signed in as the operator."""
    response = operator_sign_in(client)
    assert response.status_code == 302, response.text
    return client


def page_csrf(client: FlaskClient) -> str:
    return csrf_token(client.get("/operator/").text)


def make_due(platform: Platform, slug: str) -> None:
    """Close a tenant with a purge date in the past."""
    close_tenant(platform, slug, now=utcnow() - dt.timedelta(days=40))


def operator_urls(app: Flask) -> list[tuple[str, str]]:
    """Return (method, URL) of every operator route but the sign-in page."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("operator."):
            continue
        if rule.endpoint == "operator.login":
            continue
        url = rule.build({"tenant": "acme"}, append_unknown=False)
        assert url is not None
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((method, url[1]))
    return found


# Which users can open the page


def comparable_headers(response: TestResponse) -> dict[str, str]:
    """Return the headers without the values that differ between any two
    responses. Those are the request id, and the refreshed session cookie's
    signature and expiry, which change with the second of the response, so
    only the cookie's name and attributes are compared."""
    headers = {}
    for name, value in response.headers.items():
        if name.lower() == "x-request-id":
            continue
        if name.lower() == "set-cookie":
            cookie, _, attributes = value.partition(";")
            parts = [part.strip() for part in attributes.split(";")]
            kept = [part for part in parts if not part.startswith("Expires=")]
            value = cookie.split("=", 1)[0] + "; " + "; ".join(kept)
        headers[name] = value
    return headers


def test_anonymous_gets_plain_404(app: Flask, client: FlaskClient) -> None:
    unknown = client.get("/operator-unknown")
    urls = operator_urls(app)
    assert len(urls) >= 10
    for method, url in urls:
        response = client.open(url, method=method)
        assert response.status_code == 404, (method, url)
        assert response.data == unknown.data, (method, url)
        assert comparable_headers(response) == comparable_headers(unknown), url


def test_member_session_is_not_operator(
    app: Flask, client: FlaskClient, admin: object
) -> None:
    assert sign_in(client).status_code == 302
    csrf = csrf_token(client.get("/t/acme/").text)
    unknown = client.get("/operator-unknown")
    for method, url in operator_urls(app):
        response = client.open(url, method=method, data={"csrf_token": csrf})
        assert response.status_code == 404, (method, url)
        assert comparable_headers(response) == comparable_headers(unknown), url
    assert platform_status(app, "acme") == "active"


def platform_status(app: Flask, slug: str) -> str:
    platform: Platform = app.extensions["metacrm"]
    return platform.control.get_tenant(slug).status


def test_member_cannot_sign_in(client: FlaskClient, admin: object) -> None:
    response = operator_sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert response.status_code == 401
    assert "Invalid e-mail address or password." in response.text
    assert client.get("/operator/").status_code == 404


def test_wrong_password_rejected(client: FlaskClient, operator: str) -> None:
    response = operator_sign_in(client, password="wrong-password-1")
    assert response.status_code == 401
    assert client.get("/operator/").status_code == 404


def test_repeated_failures_lock_out(client: FlaskClient, operator: str) -> None:
    for _ in range(MAX_FAILED_LOGINS):
        operator_sign_in(client, password="wrong-password-1")
    response = operator_sign_in(client)
    assert response.status_code == 429
    assert "Too many failed attempts" in response.text


def test_sign_in_needs_csrf(client: FlaskClient, operator: str) -> None:
    data = {"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}
    response = client.post("/operator/login", data=data)
    assert response.status_code == 400
    assert client.get("/operator/").status_code == 404


def test_revoked_operator_loses_page(
    platform: Platform, ops: FlaskClient
) -> None:
    assert ops.get("/operator/").status_code == 200
    set_operator(platform.control, OPERATOR_EMAIL, grant=False)
    assert ops.get("/operator/").status_code == 404


def test_sign_out_ends_session(app: Flask, ops: FlaskClient) -> None:
    cookie = ops.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    saved = cookie.value
    response = ops.post("/operator/logout", data={"csrf_token": page_csrf(ops)})
    assert response.status_code == 302
    assert ops.get("/operator/").status_code == 404
    ops.set_cookie(app.config["SESSION_COOKIE_NAME"], saved)
    assert ops.get("/operator/").status_code == 404


def test_operator_is_not_member(ops: FlaskClient) -> None:
    response = ops.get("/t/acme/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/t/acme/login")


# The table


def test_table_lists_tenants(
    platform: Platform, ops: FlaskClient, records: RecordService
) -> None:
    records.create("account", {"name": "Counted"})
    platform.create_tenant("globex", STANDARD_CRM, name="Globex Corp")
    response = ops.get("/operator/")
    assert response.status_code == 200
    assert 'data-slug="acme"' in response.text
    assert "Globex Corp" in response.text
    assert response.headers["Cache-Control"] == "private, no-store"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_table_shows_usage(
    platform: Platform, ops: FlaskClient, records: RecordService
) -> None:
    records.create("account", {"name": "Counted"})
    text = ops.get("/operator/").text
    row = re.search(r'<tr data-slug="acme">(.*?)</tr>', text, re.S)
    assert row is not None
    cells = [re.sub(r"<[^>]+>", "", cell).strip()
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)]
    assert cells[2] == "active"
    assert cells[4] == "1 / —"
    assert cells[5] == "1"
    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB)", cells[6]), cells[6]


def test_hostile_name_escaped(platform: Platform, ops: FlaskClient) -> None:
    platform.create_tenant("hostile", STANDARD_CRM, name=HOSTILE_NAME)
    text = ops.get("/operator/").text
    assert HOSTILE_NAME not in text
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text


def test_no_inline_script_or_style(ops: FlaskClient) -> None:
    text = ops.get("/operator/").text
    assert re.search(r"<script(?![^>]*\bsrc=)", text) is None
    assert "style=" not in text
    assert "<style" not in text


# Actions


def test_actions_need_csrf(platform: Platform, ops: FlaskClient) -> None:
    for action in ("suspend", "read-only", "close"):
        response = ops.post(f"/operator/tenants/acme/{action}")
        assert response.status_code == 400, action
    assert platform.control.get_tenant("acme").status == "active"


def test_create_needs_csrf(platform: Platform, ops: FlaskClient) -> None:
    form = {"slug": "globex", "template": "tenant_definitions/standard_crm"}
    response = ops.post("/operator/tenants", data=form)
    assert response.status_code == 400
    assert platform.control.find_tenant("globex") is None


def test_status_actions_change_status(platform: Platform, ops: FlaskClient) -> None:
    csrf = page_csrf(ops)
    expected = {"suspend": "suspended", "read-only": "read_only", "resume": "active"}
    for action, status in expected.items():
        response = ops.post(f"/operator/tenants/acme/{action}",
                            data={"csrf_token": csrf})
        assert response.status_code == 302, action
        assert platform.control.get_tenant("acme").status == status


def test_close_and_reopen(platform: Platform, ops: FlaskClient) -> None:
    csrf = page_csrf(ops)
    ops.post("/operator/tenants/acme/close", data={"csrf_token": csrf})
    closed = platform.control.get_tenant("acme")
    ops.post("/operator/tenants/acme/reopen", data={"csrf_token": csrf})
    assert closed.status == "closed"
    assert closed.purge_after is not None
    assert platform.control.get_tenant("acme").status == "active"


def test_rejected_action_explained(platform: Platform, ops: FlaskClient) -> None:
    csrf = page_csrf(ops)
    ops.post("/operator/tenants/acme/close", data={"csrf_token": csrf})
    response = ops.post("/operator/tenants/acme/resume", data={"csrf_token": csrf},
                        follow_redirects=True)
    assert "reopen it first with" in response.text
    assert platform.control.get_tenant("acme").status == "closed"


def test_unknown_tenant_action_404(ops: FlaskClient) -> None:
    response = ops.post("/operator/tenants/nobody/close",
                        data={"csrf_token": page_csrf(ops)})
    assert response.status_code == 404


def test_create_from_template(platform: Platform, ops: FlaskClient) -> None:
    form = {"csrf_token": page_csrf(ops), "slug": "telco-one", "name": "Telco One",
            "template": "examples/telco"}
    response = ops.post("/operator/tenants", data=form)
    assert response.status_code == 302
    created = platform.control.get_tenant("telco-one")
    assert created.name == "Telco One"
    assert created.metadata_hash is not None


def test_create_rejects_unknown_template(
    platform: Platform, ops: FlaskClient
) -> None:
    form = {"csrf_token": page_csrf(ops), "slug": "sneaky",
            "template": "../tests/definitions"}
    response = ops.post("/operator/tenants", data=form, follow_redirects=True)
    assert "Unknown template" in response.text
    assert platform.control.find_tenant("sneaky") is None


def test_export_downloads_archive(
    ops: FlaskClient, records: RecordService, tmp_path: Path
) -> None:
    records.create("account", {"name": "Exported"})
    response = ops.post("/operator/tenants/acme/export",
                        data={"csrf_token": page_csrf(ops)})
    assert response.status_code == 200
    assert response.mimetype == "application/zip"
    assert "attachment" in response.headers["Content-Disposition"]
    path = tmp_path / "download.zip"
    path.write_bytes(response.data)
    with Archive(path) as archive:
        assert archive.manifest.slug == "acme"
        assert archive.manifest.counts["account"] == 1


# Purging


def test_purge_hidden_until_due(platform: Platform, ops: FlaskClient) -> None:
    close_tenant(platform, "acme")
    assert 'data-action="purge"' not in ops.get("/operator/").text
    response = ops.post("/operator/tenants/acme/purge",
                        data={"csrf_token": page_csrf(ops), "confirm_slug": "acme"})
    assert response.status_code == 302
    assert platform.control.get_tenant("acme").status == "closed"
    assert storage_exists(platform, "acme")


def test_purge_needs_typed_slug(platform: Platform, ops: FlaskClient) -> None:
    make_due(platform, "acme")
    assert 'data-action="purge"' in ops.get("/operator/").text
    confirm = ops.get("/operator/tenants/acme/purge")
    response = ops.post("/operator/tenants/acme/purge",
                        data={"csrf_token": csrf_token(confirm.text),
                              "confirm_slug": "acm"})
    assert confirm.status_code == 200
    assert response.status_code == 400
    assert "Type acme exactly" in response.text
    assert platform.control.get_tenant("acme").status == "closed"
    assert storage_exists(platform, "acme")


def test_purge_needs_csrf(platform: Platform, ops: FlaskClient) -> None:
    make_due(platform, "acme")
    response = ops.post("/operator/tenants/acme/purge", data={"confirm_slug": "acme"})
    assert response.status_code == 400
    assert storage_exists(platform, "acme")


def test_purge_drops_storage(platform: Platform, ops: FlaskClient) -> None:
    make_due(platform, "acme")
    confirm = ops.get("/operator/tenants/acme/purge")
    response = ops.post("/operator/tenants/acme/purge",
                        data={"csrf_token": csrf_token(confirm.text),
                              "confirm_slug": "acme"})
    assert response.status_code == 302
    assert platform.control.get_tenant("acme").status == "purged"
    assert not storage_exists(platform, "acme")
    row = ops.get("/operator/").text
    assert re.search(r'data-slug="acme">.*?purged \d{4}-', row, re.S)


def test_purged_tenant_has_no_actions(platform: Platform, ops: FlaskClient) -> None:
    make_due(platform, "acme")
    purge_tenant(platform, "acme")
    text = ops.get("/operator/").text
    row = re.search(r'<tr data-slug="acme">(.*?)</tr>', text, re.S)
    assert row is not None
    assert "data-action" not in row.group(1)


# Chromium


@pytest.fixture
def base_url(app: Flask, operator: str) -> Iterator[str]:
    with serve_wsgi(app) as url:
        yield url


@pytest.mark.browser
def test_operator_page_in_chromium(
    page: Page, base_url: str, platform: Platform
) -> None:
    if platform.backend.tenant_schema("acme") is not None:
        pytest.skip("one browser run is enough; the SQLite run covers the page")
    messages: list[str] = []

    def record(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            messages.append(message.text)

    page.on("console", record)
    page.goto(f"{base_url}/operator/login")
    page.fill("#email", OPERATOR_EMAIL)
    page.fill("#password", OPERATOR_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base_url}/operator/")
    row = page.locator('tr[data-slug="acme"]')
    row.locator('[data-action="close"]').click()
    expect(row.locator('[data-testid="status"]')).to_have_text("closed")
    row.locator('[data-action="reopen"]').click()
    expect(row.locator('[data-testid="status"]')).to_have_text("active")
    assert [text for text in messages if "Content Security Policy" in text] == []
    assert platform.control.get_tenant("acme").status == "active"


def test_download_name_has_slug(ops: FlaskClient) -> None:
    response = ops.post("/operator/tenants/acme/export",
                        data={"csrf_token": page_csrf(ops)})
    disposition = response.headers["Content-Disposition"]
    assert re.search(r"filename=acme-export-\d{8}T\d{6}Z\.zip", disposition)
    assert io.BytesIO(response.data).read(2) == b"PK"


def test_sign_in_page_public(client: FlaskClient) -> None:
    response = client.get("/operator/login")
    assert response.status_code == 200
    assert 'name="csrf_token"' in response.text



def test_delete_exports_then_purges(platform: Platform, ops: FlaskClient) -> None:
    confirm = ops.get("/operator/tenants/acme/delete")
    assert confirm.status_code == 200
    wrong = ops.post("/operator/tenants/acme/delete",
                     data={"csrf_token": csrf_token(confirm.text),
                           "confirm_slug": "acm"})
    assert wrong.status_code == 400
    assert storage_exists(platform, "acme")
    response = ops.post("/operator/tenants/acme/delete",
                        data={"csrf_token": csrf_token(confirm.text),
                              "confirm_slug": "acme"})
    assert response.status_code == 302
    assert platform.control.get_tenant("acme").status == "purged"
    assert not storage_exists(platform, "acme")
    exports = platform.settings.data_dir / "exports"
    [archive] = exports.glob("acme-before-delete-*.zip")
    with Archive(archive) as opened:
        assert opened.manifest.slug == "acme"


def test_delete_needs_csrf(platform: Platform, ops: FlaskClient) -> None:
    response = ops.post("/operator/tenants/acme/delete", data={"confirm_slug": "acme"})
    assert response.status_code == 400
    assert storage_exists(platform, "acme")
