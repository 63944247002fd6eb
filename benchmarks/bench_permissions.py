"""A 50-row list page under record permissions, over 1,000,000 opportunities.

The user is a sales rep of ``benchmarks/definitions/permissions``. They read
their own and their team's opportunities, the records of two sharing rules,
and records shared with them or their team by hand. ``permissions_data.py``
describes the data. MetaCRM side: a new ``RecordService``
per request, as the web layer builds one, so each request reads the user's
permission sets and teams (``load_principal``) and compiles ``Access``, then
``RecordService.list`` with ``parse_list_query``. Baseline: the same WHERE
clause, order and limit written by hand in ``handwritten_permissions.py``.

Three cases on each backend: the first page, a later page through the
cursor, and the first page with ``count=true``. Each request is timed on its
own, so the results give the median and the 95th percentile. The SQLite data
directory is generated once per row count into ``benchmarks/.data/`` and
reused; PostgreSQL is a throwaway server on 127.0.0.1, loaded on every run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from crm_platform.access import Access, load_principal
from crm_platform.config import Settings
from crm_platform.control import Actor
from crm_platform.querying import parse_list_query
from crm_platform.records import Page, RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from metadata_engine.loader import load_definition

from . import handwritten_permissions as baseline
from . import permissions_data
from .bench_list import table_layout_hash
from .bench_tenants import (
    BACKENDS,
    BackendsFailed,
    _create_database,
    percentile,
    throwaway_postgres,
)
from .common import DATA_DIR, Result, log, open_platform

SLUG = "perm"
ROLE = "sales_rep"
EMAIL = "perm-bench@example.com"
PASSWORD = "perm-bench-password-1"
PAGE_SIZE = 50
#: The later page is page 21: the cursor after 1,000 records.
LATER_PAGE = 21
WARM_UP_REQUESTS = 20
#: The tolerated MetaCRM time per request, as a multiple of the baseline's.
TARGET_RATIO = 1.5
BACKEND_LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass(frozen=True)
class PermissionSizes:
    rows: int
    rounds: int
    requests: int
    count_requests: int
    backends: tuple[str, ...]


@dataclass
class Samples:
    """Per-request wall-clock seconds and per-round CPU seconds of one side."""

    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    def p95_ms(self) -> float:
        return percentile(self.seconds, 0.95) * 1000

    def cpu_ms(self) -> float:
        return sum(self.cpu_seconds) / len(self.seconds) * 1000


@dataclass(frozen=True)
class Case:
    """One timed comparison: both sides' request and how many per round."""

    name: str
    metacrm: Callable[[], object]
    baseline: Callable[[], object]
    requests: int


class PermissionBackendsFailed(BackendsFailed):
    """The benchmark failed on some backends; ``results`` has the others'."""

    def __init__(self, results: list[Result], backends: list[str]) -> None:
        super().__init__(results, backends)
        self.args = (f"the permissions benchmark failed on {', '.join(backends)}; "
                     "the log above shows why",)


def progress(message: str, *args: object) -> None:
    """Print one progress line to stderr at once, with or without -v."""
    print("permissions: " + message % args, file=sys.stderr, flush=True)


# Data sets


def bench_actor(platform: Platform) -> Actor:
    """Return the benchmark user as a sales rep of the tenant, creating it."""
    tenant = platform.control.get_tenant(SLUG)
    user_id = platform.control.find_user_id(EMAIL)
    if user_id is None:
        user_id = platform.control.create_user(EMAIL, PASSWORD)
    actor = platform.control.actor(tenant, user_id)
    if actor is None:
        platform.control.add_member(tenant, user_id, ROLE)
        actor = platform.control.actor(tenant, user_id)
    if actor is None or actor.role != ROLE:
        raise RuntimeError(
            f"user {EMAIL!r} is not a {ROLE} of tenant {SLUG!r}; delete "
            f"{DATA_DIR}/permissions-* so that the data set is generated again"
        )
    return actor


def populate(platform: Platform, rows: int) -> None:
    """Create the tenant and generate its data."""
    runtime = platform.create_tenant(SLUG, permissions_data.DEFINITION,
                                     name="Permissions benchmark")
    actor = bench_actor(platform)
    people = permissions_data.make_people(actor.user_id)
    permissions_data.generate(runtime, people, rows)


def sqlite_platform(rows: int) -> Platform:
    """Return a platform on the cached SQLite data directory of ``rows``
    opportunities, generating it unless a complete one is there."""
    directory = DATA_DIR / f"permissions-{rows}"
    marker = directory / "ready.json"
    definition = load_definition(permissions_data.DEFINITION)
    expected = {
        "rows": rows,
        "definition_hash": definition.content_hash,
        "table_layout": table_layout_hash(definition),
        "seed": permissions_data.SEED,
        "generator": permissions_data.GENERATOR_VERSION,
    }
    if marker.exists() and json.loads(marker.read_text()) == expected:
        progress("reusing %s", directory)
        return open_platform(directory)
    shutil.rmtree(directory, ignore_errors=True)
    platform = open_platform(directory)
    progress("generating %s opportunities into %s", f"{rows:,}", directory)
    started = time.perf_counter()
    populate(platform, rows)
    progress("generated in %.0f s", time.perf_counter() - started)
    marker.write_text(json.dumps(expected))
    return platform


@contextlib.contextmanager
def postgres_platform(rows: int) -> Iterator[tuple[Platform, str]]:
    """Start a throwaway PostgreSQL, load the data set into it, and yield a
    platform on it with the database URL."""
    with throwaway_postgres() as server_url:
        url = _create_database(server_url, "metacrm_permissions")
        directory = DATA_DIR / "permissions-postgresql"
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "tenants").mkdir(parents=True)
        settings = Settings(data_dir=directory, secret_key="permissions-benchmark",
                            database_url=url)
        platform = Platform(settings)
        try:
            progress("loading %s opportunities into PostgreSQL", f"{rows:,}")
            started = time.perf_counter()
            populate(platform, rows)
            runtime = platform.runtime(SLUG)
            with runtime.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
            progress("loaded and analyzed in %.0f s", time.perf_counter() - started)
            yield platform, url
        finally:
            platform.dispose()
            shutil.rmtree(directory, ignore_errors=True)


# Cases


def build_cases(
    runtime: TenantRuntime, actor: Actor, engine: sa.Engine, sizes: PermissionSizes
) -> list[Case]:
    """Return the three cases, after checking that both sides return the
    same records and the same count."""
    entity = runtime.entity("opportunity")
    arguments = {"sort": ["-created_at"], "limit": [str(PAGE_SIZE)]}

    def metacrm(extra: dict[str, list[str]]) -> Page:
        service = RecordService(runtime, actor, "en")
        return service.list("opportunity", parse_list_query(entity,
                                                            {**arguments, **extra}))

    def baseline_page(after: tuple[dt.datetime, str] | None) -> list[dict[str, Any]]:
        with engine.connect() as conn:
            return baseline.page(conn, actor.user_id, PAGE_SIZE + 1, after)

    def baseline_counted() -> tuple[list[dict[str, Any]], int]:
        with engine.connect() as conn:
            rows = baseline.page(conn, actor.user_id, PAGE_SIZE + 1)
            return rows, baseline.count(conn, actor.user_id)

    cursor, after = _walk_to_later_page(metacrm, baseline_page)
    counted = metacrm({"count": ["true"]})
    _, total = baseline_counted()
    if counted.total != total:
        raise RuntimeError(f"MetaCRM counted {counted.total!r} readable records and "
                           f"the baseline {total!r}: the predicates differ")
    progress("the user may read %s of %s opportunities", f"{total:,}",
             f"{sizes.rows:,}")
    label = f"{PAGE_SIZE}-row page of {sizes.rows:,} with permissions"
    return [
        Case(f"{label}, page 1", lambda: metacrm({}), lambda: baseline_page(None),
             sizes.requests),
        Case(f"{label}, page {LATER_PAGE} (cursor)",
             lambda: metacrm({"cursor": [cursor]}), lambda: baseline_page(after),
             sizes.requests),
        Case(f"{label}, page 1 with count", lambda: metacrm({"count": ["true"]}),
             baseline_counted, sizes.count_requests),
    ]


def _walk_to_later_page(
    metacrm: Callable[[dict[str, list[str]]], Page],
    baseline_page: Callable[[tuple[dt.datetime, str] | None], list[dict[str, Any]]],
) -> tuple[str, tuple[dt.datetime, str]]:
    """Page both sides forward to ``LATER_PAGE``, comparing every page, and
    return MetaCRM's cursor and the baseline's last row for that page."""
    cursor: str | None = None
    after: tuple[dt.datetime, str] | None = None
    for number in range(1, LATER_PAGE):
        page = metacrm({"cursor": [cursor]} if cursor else {})
        expected = baseline_page(after)[:PAGE_SIZE]
        _check_same(number, page.records, expected)
        if page.next_cursor is None:
            raise RuntimeError(f"page {number} has no next page: use more rows")
        cursor = page.next_cursor
        after = (expected[-1]["created_at"], expected[-1]["id"])
    if cursor is None or after is None:
        raise RuntimeError(f"LATER_PAGE must be at least 2, not {LATER_PAGE!r}")
    _check_same(LATER_PAGE, metacrm({"cursor": [cursor]}).records,
                baseline_page(after)[:PAGE_SIZE])
    return cursor, after


def _check_same(
    number: int, metacrm: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> None:
    metacrm_ids = [record["id"] for record in metacrm]
    expected_ids = [record["id"] for record in expected]
    if metacrm_ids != expected_ids:
        raise RuntimeError(
            f"page {number}: MetaCRM and the baseline returned different records "
            f"({metacrm_ids[:3]!r}… against {expected_ids[:3]!r}…); the queries "
            "are not equivalent, so their times cannot be compared"
        )


# Timing


def time_case(case: Case, rounds: int) -> tuple[Samples, Samples]:
    """Time each request of both sides, alternating which side goes first
    in each round."""
    for _ in range(min(WARM_UP_REQUESTS, case.requests)):
        case.metacrm()
        case.baseline()
    metacrm, reference = Samples(), Samples()
    for number in range(rounds):
        order = [(case.metacrm, metacrm), (case.baseline, reference)]
        if number % 2:
            order.reverse()
        for action, samples in order:
            _time_round(action, case.requests, samples)
    return metacrm, reference


def _time_round(action: Callable[[], object], requests: int, samples: Samples) -> None:
    cpu_start = time.process_time()
    for _ in range(requests):
        start = time.perf_counter()
        action()
        samples.seconds.append(time.perf_counter() - start)
    samples.cpu_seconds.append(time.process_time() - cpu_start)


def case_result(
    case: Case, backend: str, metacrm: Samples, reference: Samples, plans: list[str]
) -> Result:
    details = [
        f"MetaCRM: {len(metacrm.seconds)} requests, ms median "
        f"{metacrm.median_ms():.3f}, p95 {metacrm.p95_ms():.3f}, CPU per request "
        f"{metacrm.cpu_ms():.3f}",
        f"baseline: {len(reference.seconds)} requests, ms median "
        f"{reference.median_ms():.3f}, p95 {reference.p95_ms():.3f}, CPU per "
        f"request {reference.cpu_ms():.3f}",
        f"p95 ratio {metacrm.p95_ms() / reference.p95_ms():.2f}, CPU ratio "
        f"{metacrm.cpu_ms() / reference.cpu_ms():.2f}",
        *plans,
    ]
    return Result(
        name=f"{case.name} ({BACKEND_LABELS[backend]})",
        unit="ms/request",
        metacrm=metacrm.median_ms(),
        baseline=reference.median_ms(),
        target=TARGET_RATIO,
        higher_is_better=False,
        details=details,
    )


# Where MetaCRM's extra time goes


def breakdown(runtime: TenantRuntime, actor: Actor, requests: int) -> list[str]:
    """Time the permission steps that MetaCRM runs per request, each on its
    own, and the baseline's WHERE clause; return one line of CPU
    milliseconds per call for each."""
    table = runtime.tables["opportunity"]
    entity = runtime.entity("opportunity")

    def read_principal() -> None:
        with runtime.engine.connect() as conn:
            load_principal(conn, actor.user_id, actor.role)

    with runtime.engine.connect() as conn:
        principal = load_principal(conn, actor.user_id, actor.role)

    def build_predicate() -> None:
        Access(runtime.definition, entity, principal).predicate("read", table)

    def build_baseline_where() -> None:
        baseline.readable(actor.user_id)

    lines = []
    for label, action in (
        ("load_principal with its connection checkout", read_principal),
        ("Access(...) and predicate('read')", build_predicate),
        ("the baseline's readable() WHERE clause", build_baseline_where),
    ):
        for _ in range(WARM_UP_REQUESTS):
            action()
        cpu_start = time.process_time()
        for _ in range(requests):
            action()
        cpu_ms = (time.process_time() - cpu_start) / requests * 1000
        lines.append(f"CPU per call of {label}: {cpu_ms:.3f} ms")
    return lines


# Query plans


def query_plans(
    backend: str, metacrm_engine: sa.Engine, baseline_engine: sa.Engine, case: Case
) -> list[str]:
    """Return each side's plan of its last statement in ``case``: SQLite's
    EXPLAIN QUERY PLAN, or PostgreSQL's EXPLAIN ANALYZE."""
    prefix = ("EXPLAIN QUERY PLAN " if backend == "sqlite"
              else "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ")
    lines = []
    for label, engine, action in (("MetaCRM", metacrm_engine, case.metacrm),
                                  ("baseline", baseline_engine, case.baseline)):
        statements = _statements(engine, action)
        statement, parameters = statements[-1]
        lines.append(f"{label} sent {len(statements)} statements; the last:")
        lines.append("  " + " ".join(statement.split()))
        with engine.connect() as conn:
            plan = conn.exec_driver_sql(prefix + statement, parameters).all()
        lines.extend(f"  plan: {row[-1]}" for row in plan)
    return lines


def _statements(engine: sa.Engine, action: Callable[[], object]) -> list[Any]:
    """Run ``action`` and return every statement it sent to ``engine``."""
    captured: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any,
               _context: Any, _executemany: bool) -> None:
        captured.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    if not captured:
        raise RuntimeError("the request sent no SQL statement to the engine")
    return captured


# Running


def measure(
    backend: str, platform: Platform, engine: sa.Engine, sizes: PermissionSizes
) -> list[Result]:
    runtime = platform.runtime(SLUG)
    actor = bench_actor(platform)
    cases = build_cases(runtime, actor, engine, sizes)
    results = []
    for number, case in enumerate(cases):
        plans = query_plans(backend, runtime.engine, engine, case)
        if number == 0:
            plans = breakdown(runtime, actor, sizes.requests * sizes.rounds) + plans
        metacrm, reference = time_case(case, sizes.rounds)
        result = case_result(case, backend, metacrm, reference, plans)
        progress("%s: MetaCRM %.3f ms, baseline %.3f ms, ratio %.2f", result.name,
                 result.metacrm, result.baseline or 0.0, result.ratio or 0.0)
        results.append(result)
    return results


def run_sqlite(sizes: PermissionSizes) -> list[Result]:
    platform = sqlite_platform(sizes.rows)
    try:
        database = platform.runtime(SLUG).engine.url.database
        if not database:
            raise RuntimeError("the SQLite tenant has no database file")
        engine = baseline.create_engine(f"sqlite:///{Path(database)}", None)
        try:
            return measure("sqlite", platform, engine, sizes)
        finally:
            engine.dispose()
    finally:
        platform.dispose()


def run_postgresql(sizes: PermissionSizes) -> list[Result]:
    with postgres_platform(sizes.rows) as (platform, url):
        options = platform.runtime(SLUG).engine.get_execution_options()
        schema = options["schema_translate_map"][None]
        engine = baseline.create_engine(url, schema)
        try:
            return measure("postgresql", platform, engine, sizes)
        finally:
            engine.dispose()


def run(sizes: PermissionSizes) -> list[Result]:
    """Run the three cases on each backend of ``sizes``; return their rows."""
    runners = {"sqlite": run_sqlite, "postgresql": run_postgresql}
    results: list[Result] = []
    failed: list[str] = []
    for backend in sizes.backends:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: use one of "
                             f"{', '.join(BACKENDS)}")
        started = time.perf_counter()
        try:
            results.extend(runners[backend](sizes))
        except Exception:
            log.exception("the permissions benchmark failed on %s", backend)
            failed.append(backend)
            continue
        progress("%s done in %.0f s", backend, time.perf_counter() - started)
    if failed:
        raise PermissionBackendsFailed(results, failed)
    return results
