"""Webhooks and the worker: signing, retries, leases, address checks,
tenant isolation, the CLI, and the admin-only page and API.

Each test that sends requests starts its own HTTP receiver on 127.0.0.1
(``http.server`` in a thread, on a free port) and allows only that address
through ``Settings.webhook_allowed_networks``. Times are passed in as
``now``, so retries and leases are tested without sleeping.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask.testing import FlaskClient

from crm_platform import archive, journal, webhook_http, webhooks, worker
from crm_platform.cli import main
from crm_platform.config import Settings
from crm_platform.control import Actor
from crm_platform.errors import RecordInvalid
from crm_platform.tenancy import Platform, TenantRuntime
from crm_platform.workflows import WorkflowService
from tests.conftest import ROOT, STANDARD_CRM, make_member
from tests.test_web import csrf_token, sign_in

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
LOOPBACK = "127.0.0.1/32"
POLICY = webhook_http.DeliveryPolicy(
    timeout=5.0, read_deadline=5.0, max_attempts=3, base_delay=30.0,
    jitter=0.25, lease=300.0, allowed=webhook_http.parse_networks(LOOPBACK),
)
#: Seconds a test waits for a worker process to stop after SIGTERM.
STOP_TIMEOUT = 20


# A receiver on loopback


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server that records each POST and responds with the next
    queued status, else ``default``."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.statuses: list[int] = []
        self.default = 200
        self.location = "https://elsewhere.example/hook"
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.path, dict(self.headers.items()), body))
                    status = (receiver.statuses.pop(0) if receiver.statuses
                              else receiver.default)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server.server_address[1]}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()
    server.thread.join(timeout=5)


# The tenant


@pytest.fixture
def settings(backend: Settings) -> Settings:
    return dataclasses.replace(backend, webhook_allowed_networks=LOOPBACK)


@pytest.fixture
def tenant(crm: TenantRuntime) -> TenantRuntime:
    return crm


def add(platform: Platform, runtime: TenantRuntime, receiver: Receiver,
        name: str = "erp", path: str = "/hook") -> str:
    """Register an endpoint at the receiver and return its secret."""
    _, secret = webhooks.add_endpoint(runtime.engine, platform.key_ring, name,
                                      receiver.url(path), POLICY.allowed)
    return secret


def queue(runtime: TenantRuntime, payload: Any, endpoint: str = "erp",
          event: str = "case.closed", now: dt.datetime = T0) -> str | None:
    with runtime.engine.begin() as conn:
        return webhooks.enqueue(conn, endpoint, event, payload, 7, now=now)


def deliver(platform: Platform, runtime: TenantRuntime, now: dt.datetime,
            policy: webhook_http.DeliveryPolicy = POLICY) -> webhooks.DeliveryCounts:
    return webhooks.deliver_due(runtime, platform.settings, now, 100,
                                ring=platform.key_ring, policy=policy)


def outbox(runtime: TenantRuntime) -> list[dict[str, Any]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(sa.select(webhooks.OUTBOX).order_by(webhooks.OUTBOX.c.id))
        return [dict(row) for row in rows.mappings()]


def seconds(later: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=later)


# Signing and delivery


@pytest.mark.both_backends
def test_signature_matches_shown_secret(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    secret = add(platform, tenant, receiver)
    delivery_id = queue(tenant, {"subject": "Broken router", "amount": 12})

    counts = deliver(platform, tenant, T0)

    assert counts.delivered == 1
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    timestamp = request.headers["X-MetaCRM-Timestamp"]
    message = timestamp.encode() + b"." + request.body
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    assert request.headers["X-MetaCRM-Signature"] == f"sha256={expected}"
    assert timestamp == str(int(T0.timestamp()))
    assert request.headers["X-MetaCRM-Event"] == "case.closed"
    assert request.headers["X-MetaCRM-Delivery"] == delivery_id
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.body)
    assert body["data"] == {"subject": "Broken router", "amount": 12}
    assert body["tenant"] == tenant.slug
    assert body["journal_seq"] == 7
    assert outbox(tenant)[0]["status"] == webhooks.DELIVERED


def test_delivery_logged_with_status(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    add(platform, tenant, receiver)
    delivery_id = queue(tenant, {"n": 1})

    deliver(platform, tenant, T0)

    [attempt] = webhooks.list_attempts(tenant.engine)
    assert attempt.outbox_id == delivery_id
    assert attempt.status == webhooks.DELIVERED
    assert attempt.status_code == 200
    assert attempt.attempt == 1
    assert attempt.duration_ms is not None
    assert attempt.at == T0


def test_secret_stored_encrypted(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    secret = add(platform, tenant, receiver)
    with tenant.engine.connect() as conn:
        stored = conn.execute(sa.select(webhooks.ENDPOINTS.c.secret)).scalar_one()
    assert secret not in stored
    assert stored.startswith("v1:")
    assert webhooks.endpoint_secret(tenant.engine, platform.key_ring, "erp") == secret


def test_rotated_secret_signs_retries(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    add(platform, tenant, receiver)
    queue(tenant, {"n": 1})
    new = webhooks.rotate_secret(tenant.engine, platform.key_ring, "erp")

    deliver(platform, tenant, T0)

    request = receiver.requests[0]
    message = request.headers["X-MetaCRM-Timestamp"].encode() + b"." + request.body
    expected = hmac.new(new.encode(), message, hashlib.sha256).hexdigest()
    assert request.headers["X-MetaCRM-Signature"] == f"sha256={expected}"


def test_payload_decimals_become_text(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    import decimal

    add(platform, tenant, receiver)
    queue(tenant, {"amount": decimal.Decimal("10.50"), "due": dt.date(2026, 3, 1)})

    deliver(platform, tenant, T0)

    data = json.loads(receiver.requests[0].body)["data"]
    assert data == {"amount": "10.50", "due": "2026-03-01"}


# Retries


@pytest.mark.both_backends
def test_retries_back_off_after_500(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    receiver.default = 500
    add(platform, tenant, receiver)
    queue(tenant, {"n": 1})

    first = deliver(platform, tenant, T0)
    after_first = outbox(tenant)[0]
    too_early = deliver(platform, tenant, seconds(29))
    second = deliver(platform, tenant, seconds(40))
    after_second = outbox(tenant)[0]

    assert first.retried == 1
    assert seconds(30) <= after_first["next_attempt_at"] <= seconds(37.5)
    assert after_first["last_error"] == "HTTP 500 Internal Server Error"
    assert too_early.attempted == 0
    assert second.retried == 1
    assert seconds(100) <= after_second["next_attempt_at"] <= seconds(115)
    assert after_second["status"] == webhooks.PENDING
    assert len(receiver.requests) == 2


def test_fails_after_max_attempts(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    receiver.default = 503
    add(platform, tenant, receiver)
    queue(tenant, {"n": 1})

    for day in range(1, 6):
        deliver(platform, tenant, T0 + dt.timedelta(days=day))

    row = outbox(tenant)[0]
    statuses = [item.status for item in reversed(webhooks.list_attempts(tenant.engine))]
    assert row["status"] == webhooks.FAILED
    assert row["attempts"] == POLICY.max_attempts
    assert statuses == [webhooks.RETRY, webhooks.RETRY, webhooks.FAILED]
    assert len(receiver.requests) == POLICY.max_attempts


def test_delay_is_capped(tenant: TenantRuntime) -> None:
    policy = webhook_http.DeliveryPolicy(base_delay=30, max_delay=600, jitter=0)
    assert policy.retry_delay(1) == 30
    assert policy.retry_delay(3) == 120
    assert policy.retry_delay(20) == 600


def test_redirect_is_not_followed(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    receiver.statuses = [302]
    add(platform, tenant, receiver)
    queue(tenant, {"n": 1})

    counts = deliver(platform, tenant, T0)

    assert counts.retried == 1
    assert len(receiver.requests) == 1
    assert "redirects are not followed" in (outbox(tenant)[0]["last_error"] or "")


def test_closed_port_is_retried(platform: Platform, tenant: TenantRuntime) -> None:
    closed = Receiver()
    url = closed.url()
    closed.server.server_close()
    webhooks.add_endpoint(tenant.engine, platform.key_ring, "erp", url,
                          POLICY.allowed)
    queue(tenant, {"n": 1})

    counts = deliver(platform, tenant, T0)

    assert counts.retried == 1
    assert "request failed" in (outbox(tenant)[0]["last_error"] or "")


# Leases and transactions


@pytest.mark.both_backends
def test_expired_lease_delivers_again(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    """A worker that died after claiming a row leaves it pending: the next
    run after the lease delivers it, and nothing is lost."""
    add(platform, tenant, receiver)
    queue(tenant, {"n": 1})
    claim = webhooks.claim_next(tenant.engine, T0, POLICY)
    assert claim is not None
    receiver.statuses = [503]

    while_leased = deliver(platform, tenant, seconds(60))
    after_lease = deliver(platform, tenant, seconds(301))
    answered = deliver(platform, tenant, seconds(400))

    row = outbox(tenant)[0]
    assert while_leased.attempted == 0
    assert after_lease.retried == 1
    assert answered.delivered == 1
    assert row["status"] == webhooks.DELIVERED
    assert row["attempts"] == 3
    assert len(receiver.requests) == 2


@pytest.mark.both_backends
def test_two_workers_send_each_once(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    add(platform, tenant, receiver)
    expected = [str(queue(tenant, {"n": number})) for number in range(12)]
    results: list[webhooks.DeliveryCounts] = []

    def run() -> None:
        results.append(deliver(platform, tenant, T0))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    sent = [request.headers["X-MetaCRM-Delivery"] for request in receiver.requests]
    assert sorted(sent) == sorted(expected)
    assert sum(result.delivered for result in results) == 12


@pytest.mark.both_backends
def test_rollback_enqueues_nothing(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    add(platform, tenant, receiver)

    with (pytest.raises(RuntimeError, match="write failed"),
          tenant.engine.begin() as conn):
        webhooks.enqueue(conn, "erp", "case.closed", {"n": 1})
        raise RuntimeError("write failed")
    counts = deliver(platform, tenant, T0 + dt.timedelta(days=1))

    assert outbox(tenant) == []
    assert counts.attempted == 0
    assert receiver.requests == []


def test_unknown_endpoint_is_skipped(
    tenant: TenantRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    result = queue(tenant, {"n": 1}, endpoint="nowhere")

    [attempt] = webhooks.list_attempts(tenant.engine, failed_only=True)
    assert result is None
    assert outbox(tenant) == []
    assert attempt.status == webhooks.SKIPPED
    assert attempt.endpoint == "nowhere"
    assert "unknown endpoint nowhere" in caplog.text


def test_inactive_endpoint_holds_deliveries(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    add(platform, tenant, receiver)
    queue(tenant, {"n": 1})
    webhooks.set_active(tenant.engine, "erp", False)

    while_inactive = deliver(platform, tenant, T0)
    skipped = queue(tenant, {"n": 2})
    webhooks.set_active(tenant.engine, "erp", True)
    sent = deliver(platform, tenant, T0)

    assert while_inactive.attempted == 0
    assert skipped is None
    assert sent.delivered == 1
    assert len(receiver.requests) == 1


def test_removed_endpoint_fails_pending(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    add(platform, tenant, receiver)
    queue(tenant, {"n": 1})

    abandoned = webhooks.remove_endpoint(tenant.engine, "erp")

    assert abandoned == 1
    assert outbox(tenant)[0]["status"] == webhooks.FAILED
    assert deliver(platform, tenant, T0).attempted == 0


def test_retry_requeues_failed_row(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    receiver.default = 500
    add(platform, tenant, receiver)
    delivery_id = queue(tenant, {"n": 1})
    for day in range(1, 4):
        deliver(platform, tenant, T0 + dt.timedelta(days=day))
    assert delivery_id is not None
    receiver.default = 200

    webhooks.retry_delivery(tenant.engine, delivery_id, now=seconds(10))
    counts = deliver(platform, tenant, T0 + dt.timedelta(days=5))

    assert counts.delivered == 1
    assert outbox(tenant)[0]["status"] == webhooks.DELIVERED


# Addresses and URLs


def test_private_address_rejected_on_add(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    for url in (receiver.url(), "http://10.1.2.3/hook", "http://169.254.169.254/",
                "http://[::1]:8080/", "http://[::ffff:127.0.0.1]/"):
        with pytest.raises(RecordInvalid, match="private, loopback, link-local"):
            webhooks.add_endpoint(tenant.engine, platform.key_ring, "erp", url)


def test_private_host_refused_on_delivery(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    """A host name is checked when it resolves: localhost passes the URL
    check but no request reaches it."""
    webhooks.add_endpoint(tenant.engine, platform.key_ring, "erp",
                          receiver.url(host="localhost"))
    queue(tenant, {"n": 1})
    strict = dataclasses.replace(POLICY, allowed=())

    counts = deliver(platform, tenant, T0, strict)

    row = outbox(tenant)[0]
    assert counts.failed == 1
    assert receiver.requests == []
    assert "host 'localhost'" in (row["last_error"] or "")
    assert "METACRM_WEBHOOK_ALLOWED_NETWORKS" in (row["last_error"] or "")


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.com/hook", "use an http:// or https:// URL"),
    ("https://user:pw@example.com/hook", "remove the user name and password"),
    ("https:///hook", "add the receiver's host name"),
    ("https://example.com:0/", "use a port between 1 and 65535"),
])
def test_invalid_url_rejected(url: str, reason: str) -> None:
    with pytest.raises(RecordInvalid, match=reason):
        webhook_http.check_url(url)


def test_invalid_endpoint_name_rejected(
    platform: Platform, tenant: TenantRuntime
) -> None:
    for name in ("ERP", "1erp", "deliveries", "a" * 64):
        with pytest.raises(RecordInvalid, match="invalid webhook endpoint name"):
            webhooks.add_endpoint(tenant.engine, platform.key_ring, name,
                                  "https://example.com/hook")


def test_allowed_networks_parse_errors() -> None:
    with pytest.raises(ValueError, match="invalid network 'localhost'"):
        webhook_http.parse_networks("127.0.0.1/32, localhost")


# Tenants and the worker


@pytest.mark.both_backends
def test_worker_reads_own_tenant_only(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    globex = platform.create_tenant("globex", STANDARD_CRM)
    add(platform, tenant, receiver, path="/acme")
    add(platform, globex, receiver, path="/globex")
    queue(tenant, {"n": 1})

    from_globex = deliver(platform, globex, T0)
    summary = worker.run_once(platform, now=T0, policy=POLICY)

    assert from_globex.attempted == 0
    assert summary.webhooks.delivered == 1
    assert [request.path for request in receiver.requests] == ["/acme"]
    assert json.loads(receiver.requests[0].body)["tenant"] == "acme"
    assert outbox(globex) == []


def test_worker_skips_suspended_tenant(
    platform: Platform, tenant: TenantRuntime, receiver: Receiver
) -> None:
    add(platform, tenant, receiver)
    queue(tenant, {"n": 1})
    platform.control.set_status(tenant.slug, "suspended")

    summary = worker.run_once(platform, now=T0, policy=POLICY)

    assert summary.tenants == 0
    assert receiver.requests == []
    assert outbox(tenant)[0]["status"] == webhooks.PENDING


def test_run_forever_stops_on_event(
    platform: Platform, tenant: TenantRuntime
) -> None:
    stop = threading.Event()
    ticks: list[worker.RunSummary] = []

    def on_tick(summary: worker.RunSummary) -> None:
        ticks.append(summary)
        stop.set()

    runs = worker.run_forever(platform, 60, stop, on_tick=on_tick, max_ticks=5)

    assert runs == 1
    assert len(ticks) == 1


# The command line


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("METACRM_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("METACRM_SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("METACRM_WEBHOOK_ALLOWED_NETWORKS", LOOPBACK)
    monkeypatch.delenv("METACRM_DATABASE_URL", raising=False)
    monkeypatch.delenv("METACRM_ENCRYPTION_KEYS", raising=False)
    return settings


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_worker_once_delivers(
    cli_env: Settings, tenant: TenantRuntime, receiver: Receiver
) -> None:
    added = run_cli("webhook", "add", "acme", "erp", receiver.url())
    secret = added.split("secret (shown only now): ")[1].strip()
    with tenant.engine.begin() as conn:
        webhooks.enqueue(conn, "erp", "case.closed", {"n": 1})

    output = run_cli("worker", "--once")

    request = receiver.requests[0]
    message = request.headers["X-MetaCRM-Timestamp"].encode() + b"." + request.body
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    assert "webhooks: 1 delivered, 0 to retry, 0 failed" in output
    assert request.headers["X-MetaCRM-Signature"] == f"sha256={expected}"


def test_cli_lists_failed_deliveries(
    cli_env: Settings, platform: Platform, tenant: TenantRuntime,
    receiver: Receiver,
) -> None:
    receiver.default = 500
    add(platform, tenant, receiver)
    queue(tenant, {"n": 1})
    deliver(platform, tenant, T0)

    listed = run_cli("webhook", "list", "acme")
    failed = run_cli("webhook", "deliveries", "acme", "--failed")

    assert listed.startswith("erp\tactive\t")
    assert "\tretry\t500\t" in failed
    assert "HTTP 500 Internal Server Error" in failed


def test_cli_rejects_private_url(
    cli_env: Settings, tenant: TenantRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METACRM_WEBHOOK_ALLOWED_NETWORKS", "")
    result = CliRunner().invoke(main, ["webhook", "add", "acme", "erp",
                                       "http://127.0.0.1:9/hook"])
    assert result.exit_code == 1
    assert "is private, loopback, link-local or reserved" in result.output


def test_cli_worker_stops_on_sigterm(cli_env: Settings, tenant: TenantRuntime) -> None:
    environment = {**os.environ, "METACRM_DATA_DIR": str(cli_env.data_dir),
                   "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "crm_platform", "worker", "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment,
    )
    try:
        first_line = process.stdout.readline() if process.stdout else ""
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=STOP_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
    assert "1 tenants" in first_line
    assert process.returncode == 0
    assert "received SIGTERM" in errors


# The page and the API


@pytest.fixture
def member(platform: Platform, tenant: TenantRuntime) -> Actor:
    return make_member(platform, tenant.slug, "rep@example.com", "sales_rep")


def test_page_lists_endpoints_for_admin(
    client: FlaskClient, platform: Platform, tenant: TenantRuntime,
    admin: Actor, receiver: Receiver,
) -> None:
    webhooks.add_endpoint(tenant.engine, platform.key_ring, "erp",
                          receiver.url("/a?x=<script>alert(1)</script>"),
                          POLICY.allowed)
    sign_in(client, tenant.slug)

    page = client.get(f"/t/{tenant.slug}/webhooks")

    assert page.status_code == 200
    assert 'data-name="erp"' in page.text
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_page_forbidden_to_members(
    client: FlaskClient, tenant: TenantRuntime, admin: Actor, member: Actor
) -> None:
    sign_in(client, tenant.slug, "rep@example.com")
    page = client.get(f"/t/{tenant.slug}/webhooks")
    assert page.status_code == 403


def test_page_add_shows_secret_once(
    client: FlaskClient, platform: Platform, tenant: TenantRuntime, admin: Actor,
    receiver: Receiver,
) -> None:
    sign_in(client, tenant.slug)
    page = client.get(f"/t/{tenant.slug}/webhooks")
    form = {"csrf_token": csrf_token(page.text), "name": "erp",
            "url": receiver.url()}

    added = client.post(f"/t/{tenant.slug}/webhooks", data=form)
    again = client.get(f"/t/{tenant.slug}/webhooks")

    secret = webhooks.endpoint_secret(tenant.engine, platform.key_ring, "erp")
    assert added.status_code == 200
    assert secret in added.text
    assert secret not in again.text


def test_page_add_without_csrf_rejected(
    client: FlaskClient, tenant: TenantRuntime, admin: Actor, receiver: Receiver
) -> None:
    sign_in(client, tenant.slug)
    form = {"name": "erp", "url": receiver.url()}

    response = client.post(f"/t/{tenant.slug}/webhooks", data=form)

    assert response.status_code == 400
    assert webhooks.list_endpoints(tenant.engine) == []


def test_page_retry_button_requeues(
    client: FlaskClient, platform: Platform, tenant: TenantRuntime, admin: Actor,
    receiver: Receiver,
) -> None:
    receiver.default = 500
    add(platform, tenant, receiver)
    delivery_id = queue(tenant, {"n": 1})
    for day in range(1, 4):
        deliver(platform, tenant, T0 + dt.timedelta(days=day))
    sign_in(client, tenant.slug)
    page = client.get(f"/t/{tenant.slug}/webhooks")
    url = f"/t/{tenant.slug}/webhooks/outbox/{delivery_id}/retry"

    response = client.post(url, data={"csrf_token": csrf_token(page.text)})

    assert f'data-id="{delivery_id}"' in page.text
    assert response.status_code == 302
    assert outbox(tenant)[0]["status"] == webhooks.PENDING


def test_api_add_list_remove(
    client: FlaskClient, tenant: TenantRuntime, auth: dict[str, str],
    receiver: Receiver,
) -> None:
    base = f"/t/{tenant.slug}/api/v1/webhooks"

    created = client.post(base, json={"name": "erp", "url": receiver.url()},
                          headers=auth)
    listed = client.get(base, headers=auth)
    removed = client.delete(f"{base}/erp", headers=auth)
    after = client.get(base, headers=auth)

    assert created.status_code == 201
    assert created.json is not None
    assert len(created.json["data"]["secret"]) >= 40
    assert listed.json == {"data": [{
        "name": "erp", "url": receiver.url(), "active": True,
        "created_at": created.json["data"]["created_at"]}]}
    assert removed.status_code == 204
    assert after.json == {"data": []}


def test_api_deliveries_failed_filter(
    client: FlaskClient, platform: Platform, tenant: TenantRuntime,
    auth: dict[str, str], receiver: Receiver,
) -> None:
    add(platform, tenant, receiver)
    receiver.statuses = [500]
    queue(tenant, {"n": 1})
    deliver(platform, tenant, T0)
    deliver(platform, tenant, T0 + dt.timedelta(hours=1))
    url = f"/t/{tenant.slug}/api/v1/webhooks/deliveries"

    every = client.get(url, headers=auth)
    failed = client.get(url, query_string={"failed": "true"}, headers=auth)

    assert every.json is not None
    assert failed.json is not None
    assert [item["status"] for item in every.json["data"]] == ["delivered", "retry"]
    assert [item["status_code"] for item in failed.json["data"]] == [500]


def test_api_forbidden_to_members(
    client: FlaskClient, platform: Platform, tenant: TenantRuntime, member: Actor,
    receiver: Receiver,
) -> None:
    token = platform.control.create_token(tenant.tenant, member.user_id)
    headers = {"Authorization": f"Bearer {token}"}
    base = f"/t/{tenant.slug}/api/v1/webhooks"

    listed = client.get(base, headers=headers)
    log = client.get(f"{base}/deliveries", headers=headers)
    created = client.post(base, json={"name": "erp", "url": receiver.url()},
                          headers=headers)

    assert listed.status_code == 403
    assert log.status_code == 403
    assert created.status_code == 403
    assert webhooks.list_endpoints(tenant.engine) == []


def test_api_rejects_unknown_fields(
    client: FlaskClient, tenant: TenantRuntime, auth: dict[str, str]
) -> None:
    response = client.post(f"/t/{tenant.slug}/api/v1/webhooks",
                           json={"name": "erp", "url": "https://example.com/",
                                 "secret": "mine"}, headers=auth)
    assert response.status_code == 422
    assert response.json is not None
    assert "unknown fields 'secret'" in response.json["error"]["message"]


def test_module_imports_no_platform(tmp_path: Path) -> None:
    """metadata_engine.tables may import the table definitions without an
    import cycle through the rest of the platform."""
    code = ("import crm_platform.webhooks, sys; "
            "print('crm_platform.tenancy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=60, check=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == "False"


# Archives


def test_archive_carries_encrypted_endpoints(
    platform: Platform, tenant: TenantRuntime, admin: Actor, receiver: Receiver,
    tmp_path: Path,
) -> None:
    secret = add(platform, tenant, receiver)
    path = tmp_path / "acme.zip"
    archive.write_archive(platform, tenant.slug, path, admin)

    archive.import_archive(platform, "copy", path)

    copy = platform.runtime("copy")
    with zipfile.ZipFile(path) as written:
        member = written.read(archive.WEBHOOK_ENDPOINTS_MEMBER).decode()
    assert secret not in member
    assert json.loads(member)["secret"].startswith("v1:")
    assert [item.name for item in webhooks.list_endpoints(copy.engine)] == ["erp"]
    assert webhooks.endpoint_secret(copy.engine, platform.key_ring, "erp") == secret


def test_openapi_describes_webhook_responses(
    client: FlaskClient, platform: Platform, tenant: TenantRuntime,
    auth: dict[str, str], receiver: Receiver,
) -> None:
    add(platform, tenant, receiver)
    queue(tenant, {"n": 1})
    deliver(platform, tenant, T0)
    base = f"/t/{tenant.slug}/api/v1"
    document = client.get(f"{base}/openapi.json", headers=auth).json
    assert document is not None
    cases = [("WebhookEndpoint", "/webhooks"),
             ("WebhookAttempt", "/webhooks/deliveries"),
             ("WebhookDelivery", "/webhooks/outbox")]

    for component, path in cases:
        response = client.get(base + path, headers=auth)
        assert response.json is not None
        validator = jsonschema.Draft202012Validator(
            {"$ref": f"#/components/schemas/{component}",
             "components": document["components"]},
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        assert path in document["paths"]
        assert list(validator.iter_errors(response.json["data"][0])) == [], path


def test_read_only_tenant_keeps_endpoints(
    client: FlaskClient, platform: Platform, tenant: TenantRuntime,
    auth: dict[str, str], receiver: Receiver,
) -> None:
    platform.control.set_status(tenant.slug, "read_only")
    base = f"/t/{tenant.slug}/api/v1/webhooks"

    created = client.post(base, json={"name": "erp", "url": receiver.url()},
                          headers=auth)
    listed = client.get(base, headers=auth)

    assert created.status_code == 403
    assert created.json is not None
    assert "is read-only" in created.json["error"]["message"]
    assert listed.status_code == 200


# From a write to the receiver


@pytest.mark.both_backends
def test_closed_case_survey_reaches_receiver(
    platform: Platform, tenant: TenantRuntime, admin: Actor, receiver: Receiver
) -> None:
    """Closing a case through its workflow queues the template's survey event
    in the same transaction; the worker then delivers it, signed, with the
    number of the survey's journal entry."""
    secret = add(platform, tenant, receiver, name="surveys")
    records = platform.records(tenant, admin)
    flows = WorkflowService(records)
    case = records.create("case", {"subject": "No signal", "type": "complaint"})
    for name, values in (("assign", {}), ("start_work", {}),
                         ("resolve", {"resolution": "Replaced the router."}),
                         ("close", {})):
        flows.transition("case", case["id"], name, values)
    assert receiver.requests == []

    summary = worker.run_once(platform, policy=POLICY)

    assert summary.webhooks.delivered == 1
    [request] = receiver.requests
    message = request.headers["X-MetaCRM-Timestamp"].encode() + b"." + request.body
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    assert request.headers["X-MetaCRM-Signature"] == f"sha256={expected}"
    body = json.loads(request.body)
    assert body["event"] == "survey.requested"
    assert body["data"]["record"]["case"] == case["id"]
    survey_id = body["data"]["record_id"]
    [entry] = [e for e in journal_entries(tenant) if e["record_id"] == survey_id]
    assert body["journal_seq"] == entry["seq"]


def journal_entries(runtime: TenantRuntime) -> list[dict[str, Any]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(sa.select(journal.JOURNAL).order_by(journal.JOURNAL.c.seq))
        return [dict(row) for row in rows.mappings()]
