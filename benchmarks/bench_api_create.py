"""Creating one opportunity through the REST API, request by request.

MetaCRM side: ``POST /t/bench/api/v1/records/opportunity`` of the full app
from ``crm_platform.app.create_app``. Baseline: ``POST /api/v1/opportunities``
of ``handwritten.create_app``. Each app runs in its own waitress server on
127.0.0.1 (4 worker threads) inside this process, and one client sends the
same JSON body over one keep-alive ``http.client`` connection per server,
one request at a time, checking for status 201.

Each side writes to its own fresh SQLite file with the same settings. The
hand-written table has the same columns and indexes as MetaCRM's, and the
benchmark checks that before it starts.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import waitress
from flask import Flask
from uuid_utils import uuid7

from crm_platform.records import RecordService
from crm_platform.tenancy import Platform

from . import handwritten
from .common import (
    DATA_DIR,
    STANDARD_CRM,
    Measurement,
    Result,
    bench_actor,
    cpu_comparison,
    interleave,
    log,
    median_milliseconds,
    open_platform,
    spread_milliseconds,
    timed,
)

SLUG = "bench"
SERVER_THREADS = 4
SHUTDOWN_TIMEOUT_S = 10
#: The tolerated MetaCRM time per request, as a multiple of the baseline's.
TARGET_RATIO = 1.3
WARM_UP_REQUESTS = 50
BODY: dict[str, Any] = {
    "name": "Renewal 2026",
    "contact": None,
    "stage": "negotiation",
    "probability": 75,
    "amount": "125000.00",
    "close_date": "2026-09-30",
    "next_step": "Send the revised proposal",
    "campaign": None,
    "description": "Three-year renewal with a larger seat count.",
}


@contextlib.contextmanager
def serve(app: Flask) -> Iterator[int]:
    """Serve ``app`` with waitress on a free port of 127.0.0.1; yield the port."""
    channels: dict[int, Any] = {}
    server = waitress.create_server(app, map=channels, host="127.0.0.1", port=0,
                                    threads=SERVER_THREADS)
    thread = threading.Thread(target=server.run, name="bench-waitress",
                              daemon=True)
    thread.start()
    try:
        yield int(server.effective_port)
    finally:
        # Stop the worker threads first: a worker that finishes a response
        # wakes the server loop through its trigger, which close() destroys.
        server.task_dispatcher.shutdown(timeout=SHUTDOWN_TIMEOUT_S)

        def close_all() -> None:
            # Runs in the server thread, between two polls of its sockets.
            server.close()
            for channel in list(channels.values()):
                channel.close()
            channels.clear()

        server.trigger.pull_trigger(close_all)
        thread.join(SHUTDOWN_TIMEOUT_S)
        if thread.is_alive():
            log.warning("waitress thread still runs %s s after shutdown",
                        SHUTDOWN_TIMEOUT_S)


class Client:
    """Sends one JSON body again and again over a keep-alive connection."""

    def __init__(self, port: int, path: str, token: str, body: dict[str, Any]):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.path = path
        self.body = json.dumps(body).encode("utf-8")
        self.headers = {"Authorization": f"Bearer {token}",
                        "Content-Type": "application/json"}

    def post(self) -> bytes:
        self.connection.request("POST", self.path, self.body, self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 201:
            raise RuntimeError(
                f"POST {self.path} returned {response.status}, not 201: "
                f"{data[:300]!r}"
            )
        return data

    def post_many(self, count: int) -> Measurement:
        def loop() -> None:
            for _ in range(count):
                self.post()

        return timed(count, loop)

    def close(self) -> None:
        self.connection.close()


def check_same_layout(generated: sa.Table, written: sa.Table) -> None:
    """Raise unless both tables have the same columns, types and indexes."""
    dialect = sa.create_engine("sqlite://").dialect

    def layout(table: sa.Table) -> tuple[list[tuple[str, str]], list[tuple[str, ...]]]:
        columns = [(column.name, str(column.type.compile(dialect)))
                   for column in table.columns]
        indexes = sorted(tuple(column.name for column in index.columns)
                         for index in table.indexes)
        return columns, indexes

    if layout(generated) != layout(written):
        raise RuntimeError(
            f"the hand-written table differs from MetaCRM's: {layout(written)!r} "
            f"against {layout(generated)!r}; update benchmarks/handwritten.py"
        )


def start_metacrm(work_dir: Path) -> tuple[Platform, str, str]:
    """Create the tenant, its admin, a token and one account; return the
    platform, the token and the account id."""
    platform = open_platform(work_dir / "metacrm")
    runtime = platform.create_tenant(SLUG, STANDARD_CRM, name="API benchmark")
    actor = bench_actor(platform, SLUG)
    token = platform.control.create_token(runtime.tenant, actor.user_id)
    account = RecordService(runtime, actor).create("account", {"name": "Acme"})
    check_same_layout(runtime.tables["opportunity"], handwritten.opportunities)
    return platform, token, str(account["id"])


def start_baseline(work_dir: Path) -> tuple[sa.Engine, str, str]:
    """Create the hand-written database, a user, a token and one account."""
    engine = handwritten.create_engine(work_dir / "handwritten.sqlite")
    handwritten.metadata.create_all(engine)
    _, token = handwritten.create_user_and_token(engine, "bench@example.com")
    account_id = str(uuid7())
    with engine.begin() as conn:
        conn.execute(handwritten.accounts.insert(),
                     {"id": account_id, "name": "Acme"})
    return engine, token, account_id


def run(requests: int, rounds: int) -> list[Result]:
    """Time ``rounds`` rounds of ``requests`` creates per side; return one row."""
    from crm_platform.app import create_app

    work_dir = DATA_DIR / "api-work"
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    platform, metacrm_token, metacrm_account = start_metacrm(work_dir)
    engine, baseline_token, baseline_account = start_baseline(work_dir)
    metacrm_app = create_app(platform.settings, platform)
    baseline_app = handwritten.create_app(engine)
    try:
        with serve(metacrm_app) as metacrm_port, serve(baseline_app) as baseline_port:
            metacrm = Client(metacrm_port, f"/t/{SLUG}/api/v1/records/opportunity",
                             metacrm_token, {**BODY, "account": metacrm_account})
            baseline = Client(baseline_port, "/api/v1/opportunities",
                              baseline_token, {**BODY, "account": baseline_account})
            try:
                runs = _measure(metacrm, baseline, requests, rounds)
                metacrm_engines = [platform.control.engine, platform.engine(SLUG)]
                notes = [
                    "SQL statements per request, BEGIN and COMMIT not counted: "
                    f"MetaCRM {count_statements(metacrm_engines, metacrm.post):.1f}, "
                    f"baseline {count_statements([engine], baseline.post):.1f}"
                ]
            finally:
                metacrm.close()
                baseline.close()
    finally:
        platform.dispose()
        engine.dispose()
        shutil.rmtree(work_dir, ignore_errors=True)
    metacrm_runs, baseline_runs = runs
    return [
        Result(
            name="API create of one opportunity (waitress, keep-alive)",
            unit="ms/request",
            metacrm=median_milliseconds(metacrm_runs),
            baseline=median_milliseconds(baseline_runs),
            target=TARGET_RATIO,
            higher_is_better=False,
            details=[spread_milliseconds("MetaCRM", metacrm_runs),
                     spread_milliseconds("baseline", baseline_runs),
                     cpu_comparison(metacrm_runs, baseline_runs), *notes],
        )
    ]


def count_statements(
    engines: list[sa.Engine], action: Callable[[], object], repeat: int = 20
) -> float:
    """Return how many SQL statements one call of ``action`` sends to
    ``engines``, averaged over ``repeat`` calls."""
    count = 0

    def record(*_arguments: Any) -> None:
        nonlocal count
        count += 1

    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(repeat):
            action()
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", record)
    return count / repeat


def _measure(
    metacrm: Client, baseline: Client, requests: int, rounds: int
) -> tuple[list[Measurement], list[Measurement]]:
    log.info("API warm-up: %d requests per side", WARM_UP_REQUESTS)
    metacrm.post_many(WARM_UP_REQUESTS)
    baseline.post_many(WARM_UP_REQUESTS)
    per_round = max(1, requests // rounds)

    def round_of(client: Client) -> Callable[[], Measurement]:
        return lambda: client.post_many(per_round)

    return interleave(round_of(metacrm), round_of(baseline), rounds)
