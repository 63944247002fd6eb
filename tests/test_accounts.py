"""Account security: sign-in lockout, ending sessions and password resets,
through Flask's test client and the ``metacrm`` command line, against a
control plane in a real SQLite file under ``tmp_path``."""

from __future__ import annotations

import datetime as dt
import logging
import re

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from crm_platform import control
from crm_platform.backends import connection_schema
from crm_platform.cli import main
from crm_platform.config import Settings
from crm_platform.control import MAX_FAILED_LOGINS, ControlPlane, hash_token
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, STANDARD_CRM
from tests.test_web import csrf_token, sign_in

WRONG_PASSWORD = "wrong-password-1"
NEW_PASSWORD = "new-secret-passphrase-7"
RESET_LINK = re.compile(r"/t/acme/reset/([A-Za-z0-9_-]+)")


# Helpers


def fail_sign_ins(client: FlaskClient, count: int = MAX_FAILED_LOGINS) -> None:
    for _ in range(count):
        response = sign_in(client, password=WRONG_PASSWORD)
        assert response.status_code == 401, response.text


def run_cli(settings: Settings, *args: str) -> str:
    result = CliRunner().invoke(
        main, [*args, "--data-dir", str(settings.data_dir)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def later(monkeypatch: pytest.MonkeyPatch, delta: dt.timedelta) -> None:
    """Move the control plane's clock ``delta`` into the future."""
    moved = control.utcnow() + delta
    monkeypatch.setattr(control, "utcnow", lambda: moved)


def request_reset(client: FlaskClient, email: str = ADMIN_EMAIL) -> TestResponse:
    page = client.get("/t/acme/forgot-password")
    data = {"csrf_token": csrf_token(page.text), "email": email}
    return client.post("/t/acme/forgot-password", data=data)


def last_reset_token(platform: Platform) -> str:
    messages = platform.control.outbox_messages()
    assert messages, "the outbox is empty"
    match = RESET_LINK.search(messages[-1].body)
    assert match, messages[-1].body
    return match.group(1)


def submit_reset(client: FlaskClient, token: str, password: str = NEW_PASSWORD,
                 confirm: str | None = None) -> TestResponse:
    url = f"/t/acme/reset/{token}"
    page = client.get(url)
    assert page.status_code == 200, page.text
    data = {"csrf_token": csrf_token(page.text), "password": password,
            "confirm_password": password if confirm is None else confirm}
    return client.post(url, data=data)


def without_csrf(html: str) -> str:
    return re.sub(r'name="csrf_token" value="[^"]+"', "", html)


# Sign-in lockout


def test_lockout_rejects_right_password(client: FlaskClient, admin: object) -> None:
    fail_sign_ins(client)
    response = sign_in(client)
    assert response.status_code == 429
    assert "Invalid e-mail address or password." in response.text
    assert "try again in 15 minutes" in response.text
    assert client.get("/t/acme/").status_code == 302


def test_four_failures_do_not_lock(client: FlaskClient, admin: object) -> None:
    fail_sign_ins(client, MAX_FAILED_LOGINS - 1)
    assert sign_in(client).status_code == 302


def test_lockout_counts_unknown_emails(client: FlaskClient, admin: object) -> None:
    for _ in range(MAX_FAILED_LOGINS):
        sign_in(client, email="nobody@example.com")
    response = sign_in(client, email="nobody@example.com")
    assert response.status_code == 429


def test_lockout_ends_after_duration(
    client: FlaskClient, admin: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_sign_ins(client)
    later(monkeypatch, dt.timedelta(minutes=14))
    assert sign_in(client).status_code == 429
    later(monkeypatch, dt.timedelta(minutes=2))
    assert sign_in(client).status_code == 302


def test_unlock_by_cli(client: FlaskClient, admin: object, settings: Settings) -> None:
    fail_sign_ins(client)
    output = run_cli(settings, "user", "unlock", "acme", ADMIN_EMAIL)
    assert f"cleared {MAX_FAILED_LOGINS} failed sign-ins" in output
    assert sign_in(client).status_code == 302


def test_unlock_rejects_non_member(admin: object, settings: Settings) -> None:
    result = CliRunner().invoke(
        main, ["user", "unlock", "acme", "nobody@example.com",
               "--data-dir", str(settings.data_dir)]
    )
    assert result.exit_code == 1
    assert "is not a member of tenant 'acme'" in result.output


def test_success_clears_failures(client: FlaskClient, admin: object) -> None:
    fail_sign_ins(client, MAX_FAILED_LOGINS - 1)
    assert sign_in(client).status_code == 302
    client.post("/t/acme/logout",
                data={"csrf_token": csrf_token(client.get("/t/acme/").text)})
    fail_sign_ins(client, MAX_FAILED_LOGINS - 1)
    assert sign_in(client).status_code == 302


def test_failures_logged_without_password(
    client: FlaskClient, admin: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crm_platform")
    fail_sign_ins(client)
    sign_in(client)
    messages = [record.getMessage() for record in caplog.records]
    failures = [text for text in messages if text.startswith("failed sign-in")]
    lockouts = [text for text in messages if "locked out" in text]
    assert len(failures) == MAX_FAILED_LOGINS
    assert len(lockouts) == 2
    assert "127.0.0.1" in failures[0]
    assert "tenant acme" in failures[0]
    assert WRONG_PASSWORD not in caplog.text
    assert ADMIN_PASSWORD not in caplog.text
    assert ADMIN_EMAIL not in caplog.text


# Ending sessions


def test_logout_everywhere_ends_other_sessions(app: Flask, admin: object) -> None:
    laptop = app.test_client()
    phone = app.test_client()
    assert sign_in(laptop).status_code == 302
    assert sign_in(phone).status_code == 302
    token = csrf_token(laptop.get("/t/acme/").text)
    response = laptop.post("/t/acme/logout-everywhere", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/t/acme/login"
    assert phone.get("/t/acme/").status_code == 302
    assert laptop.get("/t/acme/").status_code == 302


def test_logout_everywhere_requires_csrf(app: Flask, admin: object) -> None:
    laptop = app.test_client()
    phone = app.test_client()
    sign_in(laptop)
    sign_in(phone)
    laptop.post("/t/acme/logout-everywhere")
    assert phone.get("/t/acme/").status_code == 200


def test_sign_in_after_logout_everywhere(app: Flask, admin: object) -> None:
    laptop = app.test_client()
    sign_in(laptop)
    token = csrf_token(laptop.get("/t/acme/").text)
    laptop.post("/t/acme/logout-everywhere", data={"csrf_token": token})
    assert sign_in(laptop).status_code == 302
    assert laptop.get("/t/acme/").status_code == 200


def test_password_change_ends_sessions(
    client: FlaskClient, platform: Platform, admin: control.Actor
) -> None:
    sign_in(client)
    platform.control.set_password(admin.user_id, NEW_PASSWORD)
    assert client.get("/t/acme/").status_code == 302


def test_cli_logout_everywhere(
    client: FlaskClient, admin: object, settings: Settings
) -> None:
    sign_in(client)
    output = run_cli(settings, "user", "logout-everywhere", ADMIN_EMAIL)
    assert "ended every browser session" in output
    assert client.get("/t/acme/").status_code == 302


def test_session_without_generation_rejected(
    client: FlaskClient, admin: control.Actor
) -> None:
    with client.session_transaction() as session:
        session["members"] = {"acme": admin.user_id}
    assert client.get("/t/acme/").status_code == 302


# Password reset


def test_reset_link_works_once(
    client: FlaskClient, platform: Platform, admin: object
) -> None:
    assert request_reset(client).status_code == 200
    token = last_reset_token(platform)
    response = submit_reset(client, token)
    assert response.status_code == 302
    assert response.headers["Location"] == "/t/acme/login"
    assert sign_in(client, password=NEW_PASSWORD).status_code == 302
    again = client.get(f"/t/acme/reset/{token}")
    assert again.status_code == 410
    assert "already been used" in again.text
    assert 'name="password"' not in again.text


def test_reset_old_password_rejected(
    client: FlaskClient, platform: Platform, admin: object
) -> None:
    request_reset(client)
    submit_reset(client, last_reset_token(platform))
    assert sign_in(client).status_code == 401


def test_reset_token_expires(
    client: FlaskClient, platform: Platform, admin: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request_reset(client)
    token = last_reset_token(platform)
    later(monkeypatch, dt.timedelta(minutes=31))
    page = client.get(f"/t/acme/reset/{token}")
    assert page.status_code == 410
    assert "has expired" in page.text


def test_reset_works_before_expiry(
    client: FlaskClient, platform: Platform, admin: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request_reset(client)
    token = last_reset_token(platform)
    later(monkeypatch, dt.timedelta(minutes=29))
    assert submit_reset(client, token).status_code == 302


def test_reset_unknown_token_is_404(client: FlaskClient, admin: object) -> None:
    page = client.get("/t/acme/reset/not-a-real-token")
    assert page.status_code == 404
    assert "not valid" in page.text


def test_reset_token_of_other_tenant(
    client: FlaskClient, platform: Platform, admin: object
) -> None:
    platform.create_tenant("globex", STANDARD_CRM)
    request_reset(client)
    token = last_reset_token(platform)
    assert client.get(f"/t/globex/reset/{token}").status_code == 404


def test_reset_token_stored_hashed(
    client: FlaskClient, platform: Platform, admin: object, settings: Settings
) -> None:
    """Only the outbox's copy of the mail contains the raw token, in its link."""
    request_reset(client)
    token = last_reset_token(platform)
    platform.dispose()
    stored = b"".join(
        path.read_bytes() for path in settings.data_dir.glob("control.sqlite*")
    )
    assert hash_token(token).encode() in stored
    assert token.encode() not in stored.replace(b"/reset/" + token.encode(), b"")


def test_reset_rejects_weak_password(
    client: FlaskClient, platform: Platform, admin: object
) -> None:
    request_reset(client)
    token = last_reset_token(platform)
    weak = submit_reset(client, token, password="abcdefghijkl")
    assert weak.status_code == 422
    assert "too weak" in weak.text
    assert submit_reset(client, token).status_code == 302


def test_reset_rejects_different_confirmation(
    client: FlaskClient, platform: Platform, admin: object
) -> None:
    request_reset(client)
    response = submit_reset(client, last_reset_token(platform),
                            confirm="other-secret-9876")
    assert response.status_code == 422
    assert "The two passwords differ." in response.text


def test_reset_requires_csrf(
    client: FlaskClient, platform: Platform, admin: object
) -> None:
    request_reset(client)
    token = last_reset_token(platform)
    response = client.post(f"/t/acme/reset/{token}", data={
        "password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})
    assert response.status_code == 400
    assert sign_in(client).status_code == 302


def test_reset_ends_sessions(
    app: Flask, platform: Platform, admin: object
) -> None:
    member = app.test_client()
    sign_in(member)
    visitor = app.test_client()
    request_reset(visitor)
    submit_reset(visitor, last_reset_token(platform))
    assert member.get("/t/acme/").status_code == 302


def test_forgot_password_same_for_unknown(
    client: FlaskClient, platform: Platform, admin: object
) -> None:
    known = request_reset(client)
    unknown = request_reset(client, "nobody@example.com")
    assert known.status_code == unknown.status_code
    assert without_csrf(known.text) == without_csrf(unknown.text)
    assert len(platform.control.outbox_messages()) == 1


def test_outbox_receives_reset_mail(
    client: FlaskClient, platform: Platform, admin: object
) -> None:
    request_reset(client)
    (message,) = platform.control.outbox_messages()
    assert message.recipient == ADMIN_EMAIL
    assert message.subject == "Reset your Acme Ltd password"
    assert RESET_LINK.search(message.body)


def test_cli_reset_password_and_outbox(
    client: FlaskClient, admin: object, settings: Settings
) -> None:
    assert "the outbox is empty" in run_cli(settings, "outbox", "list")
    run_cli(settings, "user", "reset-password", "acme", ADMIN_EMAIL)
    listing = run_cli(settings, "outbox", "list")
    assert f"To: {ADMIN_EMAIL}" in listing
    match = RESET_LINK.search(listing)
    assert match
    assert submit_reset(client, match.group(1)).status_code == 302


def test_login_page_links_forgot_password(client: FlaskClient, admin: object
                                          ) -> None:
    page = client.get("/t/acme/login")
    assert 'href="/t/acme/forgot-password"' in page.text


# Upgrades


@pytest.mark.both_backends
def test_open_adds_session_generation(
    platform: Platform, admin: control.Actor, backend: Settings
) -> None:
    engine = platform.control.engine
    with engine.begin() as conn:
        operations = Operations(MigrationContext.configure(conn))
        operations.drop_column("users", "session_generation",
                               schema=connection_schema(conn))
    plane = ControlPlane.open(engine)
    assert plane.session_generation(admin.user_id) == 0


# Both backends


@pytest.mark.both_backends
def test_control_lockout_and_reset(
    platform: Platform, crm: TenantRuntime, admin: control.Actor,
    backend: Settings,
) -> None:
    plane = platform.control
    for _ in range(MAX_FAILED_LOGINS):
        with pytest.raises(control.Unauthorized, match="invalid e-mail or password"):
            plane.authenticate(crm.tenant, ADMIN_EMAIL, WRONG_PASSWORD, "10.0.0.1")
    with pytest.raises(control.LockedOut, match="too many failed attempts"):
        plane.authenticate(crm.tenant, ADMIN_EMAIL, ADMIN_PASSWORD, "10.0.0.1")
    assert plane.clear_failed_logins(ADMIN_EMAIL) == MAX_FAILED_LOGINS
    assert plane.request_password_reset(crm.tenant, ADMIN_EMAIL)
    token = last_reset_token(platform)
    plane.reset_password(crm.tenant, token, NEW_PASSWORD)
    with pytest.raises(control.InvalidResetToken, match="token is used"):
        plane.reset_password(crm.tenant, token, NEW_PASSWORD)
    assert plane.session_generation(admin.user_id) == 1
    actor = plane.authenticate(crm.tenant, ADMIN_EMAIL, NEW_PASSWORD)
    assert actor.user_id == admin.user_id
