"""Request ids, structured log lines and the Prometheus endpoint."""

from __future__ import annotations

import io
import json
import logging

import pytest
from flask.testing import FlaskClient

from crm_platform.observability import RequestContextFilter, configure_logging

BASE = "/t/acme/api/v1"


def test_request_id_generated(client: FlaskClient) -> None:
    response = client.get("/healthz")
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32
    assert client.get("/healthz").headers["X-Request-ID"] != request_id


def test_client_request_id_kept(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "trace-42"})
    assert response.headers["X-Request-ID"] == "trace-42"


def test_hostile_request_id_replaced(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "x" * 65})
    assert response.headers["X-Request-ID"] != "x" * 65
    assert len(response.headers["X-Request-ID"]) == 32


def test_metrics_count_by_route(client: FlaskClient, auth: dict[str, str]) -> None:
    for _ in range(3):
        client.get(f"{BASE}/records/account", headers=auth)
    client.get(f"{BASE}/records/account", headers={"Authorization": "Bearer no"})
    text = client.get("/metrics").get_data(as_text=True)
    route = "/t/<tenant>/api/v1/records/<entity>"
    ok = f'metacrm_http_requests_total{{method="GET",route="{route}",status="200"}} 3.0'
    denied = (
        f'metacrm_http_requests_total{{method="GET",route="{route}",status="401"}} 1.0'
    )
    assert ok in text
    assert denied in text
    assert "acme" not in text
    assert "metacrm_http_request_duration_seconds_bucket" in text


@pytest.fixture
def log_stream() -> io.StringIO:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_json_log_lines_carry_ids(
    client: FlaskClient, auth: dict[str, str], log_stream: io.StringIO
) -> None:
    configure_logging(logging.INFO, json_lines=True)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(log_stream)
    response = client.post(
        f"{BASE}/records/account",
        json={"name": "Logged"},
        headers={**auth, "X-Request-ID": "req-7"},
    )
    assert response.status_code == 201
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    created = [line for line in lines if line["message"].startswith("created")]
    assert created
    assert created[0]["request_id"] == "req-7"
    assert created[0]["tenant"] == "acme"
    assert all(auth["Authorization"].split()[1] not in str(line) for line in lines)


def test_filter_outside_request() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert RequestContextFilter().filter(record)
    assert record.request_id == "-"
    assert record.tenant == "-"


def test_logs_leave_out_secrets(
    client: FlaskClient, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Every write path of a sensitive value, logged at DEBUG, shows neither
    the value nor the bearer token."""
    caplog.set_level(logging.DEBUG)
    national_id = "310101199001019999"
    created = client.post(
        f"{BASE}/records/contact",
        json={"name": "Log Test", "email": "log@example.org",
              "national_id": national_id},
        headers=auth,
    )
    assert created.status_code == 201
    record_id = created.get_json()["data"]["id"]
    changed = client.patch(f"{BASE}/records/contact/{record_id}",
                           json={"national_id": national_id[::-1]}, headers=auth)
    assert changed.status_code == 200
    rejected = client.get(f"{BASE}/records/contact?national_id={national_id}",
                          headers=auth)
    assert rejected.status_code == 400
    history = client.get(f"{BASE}/records/contact/{record_id}/history", headers=auth)
    assert national_id not in history.text
    erased = client.post(f"{BASE}/personal-data/erase",
                         json={"email": "log@example.org", "confirm": "erase"},
                         headers=auth)
    assert erased.status_code == 200
    token = auth["Authorization"].removeprefix("Bearer ")
    assert caplog.records
    assert national_id not in caplog.text
    assert national_id[::-1] not in caplog.text
    assert token not in caplog.text
