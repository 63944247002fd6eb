"""A filtered, sorted 50-row list page over many opportunities.

MetaCRM side: ``parse_list_query`` on the URL parameters
``stage=negotiation&sort=-close_date&limit=50`` (the same parsing the API
does), then ``RecordService.list``. Baseline: ``handwritten.first_page`` and
``handwritten.next_page``, the same query written directly in SQLAlchemy
Core. Both read the same database file through their own engines with the
same SQLite settings, and the benchmark checks that both return the same
records before it times anything.

The database is generated once per row count into ``benchmarks/.data/`` and
reused until the standard template changes.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateIndex, CreateTable
from uuid_utils import uuid7

from crm_platform.querying import parse_list_query
from crm_platform.records import Page, RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from metadata_engine.loader import load_definition
from metadata_engine.model import Definition
from metadata_engine.tables import build_tables

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
STAGE = "negotiation"
PAGE_SIZE = 50
ACCOUNT_COUNT = 1000
INSERT_CHUNK = 50_000
SEED = 7
#: Change this when generate_rows changes, so that cached databases are rebuilt.
GENERATOR_VERSION = 1
#: Close dates spread over four years; about 2 % of opportunities have none.
FIRST_CLOSE_DATE = dt.date(2023, 1, 1)
CLOSE_DATE_DAYS = 4 * 365
MISSING_CLOSE_DATE_SHARE = 0.02
#: The tolerated MetaCRM time per page, as a multiple of the baseline's.
TARGET_RATIO = 1.5
PROBABILITY_BY_STAGE = {
    "prospecting": 10,
    "qualification": 25,
    "proposal": 50,
    "negotiation": 75,
    "closed_won": 100,
    "closed_lost": 0,
}


def database_dir(rows: int) -> Path:
    return DATA_DIR / f"list-{rows}"


def ensure_database(rows: int) -> Platform:
    """Return a platform whose tenant ``bench`` contains ``rows`` opportunities,
    generating the data directory unless a complete one is cached."""
    directory = database_dir(rows)
    marker = directory / "ready.json"
    definition = load_definition(STANDARD_CRM)
    expected = {
        "rows": rows,
        "definition_hash": definition.content_hash,
        "table_layout": table_layout_hash(definition),
        "seed": SEED,
        "generator": GENERATOR_VERSION,
    }
    if marker.exists() and json.loads(marker.read_text()) == expected:
        log.info("reusing %s", directory)
        return open_platform(directory)
    shutil.rmtree(directory, ignore_errors=True)
    platform = open_platform(directory)
    runtime = platform.create_tenant(SLUG, STANDARD_CRM, name="List benchmark")
    actor = bench_actor(platform, SLUG)
    started = time.perf_counter()
    generate_rows(runtime, actor.user_id, rows)
    log.info("generated %s opportunities in %.1f s", f"{rows:,}",
             time.perf_counter() - started)
    marker.write_text(json.dumps(expected))
    return platform


def table_layout_hash(definition: Definition) -> str:
    """Return a hash of the SQLite DDL that MetaCRM's code builds for the
    definition, so that a change of column types also rebuilds the data."""
    metadata = sa.MetaData()
    build_tables(definition, metadata)
    dialect = sqlite.dialect()
    statements = []
    for table in metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)))
        statements.extend(str(CreateIndex(index).compile(dialect=dialect))
                          for index in sorted(table.indexes, key=lambda i: str(i.name)))
    return hashlib.sha256("\n".join(statements).encode()).hexdigest()


def generate_rows(runtime: TenantRuntime, user_id: str, rows: int) -> None:
    """Bulk-insert accounts and opportunities with Core executemany.

    The opportunity indexes are dropped during the load and built afterwards,
    which is several times faster than updating them row by row.
    """
    randomizer = random.Random(SEED)
    accounts = runtime.tables["account"]
    opportunities = runtime.tables["opportunity"]
    now = dt.datetime.now(dt.UTC)
    system: dict[str, Any] = {"created_at": now, "updated_at": now,
                              "created_by": user_id, "updated_by": user_id,
                              "owner_id": user_id, "version": 1}
    account_ids = [str(uuid7()) for _ in range(ACCOUNT_COUNT)]
    account_rows = [
        {**system, "id": account_id, "name": f"Account {number}",
         "account_number": f"ACC-{number:06d}"}
        for number, account_id in enumerate(account_ids, start=1)
    ]
    with runtime.engine.begin() as conn:
        conn.execute(accounts.insert(), account_rows)
        for index in opportunities.indexes:
            index.drop(conn)
    for start in range(0, rows, INSERT_CHUNK):
        count = min(INSERT_CHUNK, rows - start)
        chunk = list(_opportunity_rows(randomizer, account_ids, user_id, start,
                                       count))
        with runtime.engine.begin() as conn:
            conn.execute(opportunities.insert(), chunk)
        log.info("inserted %s of %s opportunities", f"{start + count:,}",
                 f"{rows:,}")
    with runtime.engine.begin() as conn:
        for index in opportunities.indexes:
            index.create(conn)


def _opportunity_rows(
    randomizer: random.Random,
    account_ids: list[str],
    user_id: str,
    start: int,
    count: int,
) -> Iterator[dict[str, Any]]:
    # Creation times one minute apart, ending now, so that ids and created_at
    # grow together as they do in real use.
    end = dt.datetime.now(dt.UTC)
    for number in range(start, start + count):
        stage = randomizer.choice(handwritten.STAGES)
        created = end - dt.timedelta(minutes=count + start - number)
        close_date = None
        if randomizer.random() >= MISSING_CLOSE_DATE_SHARE:
            offset = randomizer.randrange(CLOSE_DATE_DAYS)
            close_date = FIRST_CLOSE_DATE + dt.timedelta(days=offset)
        yield {
            "id": str(uuid7()),
            "created_at": created,
            "updated_at": created,
            "created_by": user_id,
            "updated_by": user_id,
            "owner_id": user_id,
            "version": 1,
            "name": f"Opportunity {number + 1}",
            "account": randomizer.choice(account_ids),
            "contact": None,
            "stage": stage,
            "probability": decimal.Decimal(PROBABILITY_BY_STAGE[stage]),
            "amount": decimal.Decimal(randomizer.randrange(100_000, 50_000_000)) / 100,
            "close_date": close_date,
            "next_step": randomizer.choice(("Call back", "Send proposal", None)),
            "campaign": None,
            "description": None,
        }


def run(rows: int, rounds: int, pages: int) -> list[Result]:
    """Time page 1 and page 2 of the list on both sides; return two rows."""
    platform = ensure_database(rows)
    runtime = platform.runtime(SLUG)
    service = RecordService(runtime, bench_actor(platform, SLUG), "en")
    database = runtime.engine.url.database
    if runtime.engine.dialect.name != "sqlite" or not database:
        raise RuntimeError(
            f"the list benchmark needs a SQLite tenant file, not {runtime.engine.url!r}"
        )
    engine = handwritten.create_engine(Path(database))
    try:
        return _compare(service, engine, rows, rounds, pages)
    finally:
        engine.dispose()
        platform.dispose()


def _compare(
    service: RecordService, engine: sa.Engine, rows: int, rounds: int, pages: int
) -> list[Result]:
    entity = service.runtime.entity("opportunity")
    arguments = {"stage": [STAGE], "sort": ["-close_date"],
                 "limit": [str(PAGE_SIZE)]}

    def metacrm_page(cursor: str | None) -> Page:
        page_arguments = {**arguments, "cursor": [cursor]} if cursor else arguments
        return service.list("opportunity", parse_list_query(entity, page_arguments))

    def baseline_first() -> list[dict[str, Any]]:
        with engine.connect() as conn:
            return handwritten.first_page(conn, STAGE, PAGE_SIZE)

    first = metacrm_page(None)
    expected_first = baseline_first()
    _check_same("page 1", first.records, expected_first)
    cursor = first.next_cursor
    if cursor is None:
        raise RuntimeError(f"page 1 of {rows} rows has no next page: use more rows")
    last = expected_first[-1]

    def baseline_second() -> list[dict[str, Any]]:
        with engine.connect() as conn:
            return handwritten.next_page(conn, STAGE, last["close_date"], last["id"],
                                         PAGE_SIZE)

    _check_same("page 2", metacrm_page(cursor).records, baseline_second())
    first_plans = _query_plans(service.runtime.engine, engine,
                               lambda: metacrm_page(None), baseline_first)
    second_plans = _query_plans(service.runtime.engine, engine,
                                lambda: metacrm_page(cursor), baseline_second)
    label = f"{PAGE_SIZE}-row list page of {rows:,}"
    return [
        _time_pair(f"{label}, page 1", lambda: metacrm_page(None), baseline_first,
                   rounds, pages, first_plans),
        _time_pair(f"{label}, page 2 (cursor)", lambda: metacrm_page(cursor),
                   baseline_second, rounds, pages, second_plans),
    ]


def _time_pair(
    name: str,
    metacrm: Callable[[], object],
    baseline: Callable[[], object],
    rounds: int,
    pages: int,
    notes: list[str],
) -> Result:
    for _ in range(20):
        metacrm()
        baseline()

    def repeat(action: Callable[[], object]) -> Callable[[], Measurement]:
        def run_round() -> Measurement:
            def loop() -> None:
                for _ in range(pages):
                    action()

            return timed(pages, loop)

        return run_round

    metacrm_runs, baseline_runs = interleave(repeat(metacrm), repeat(baseline),
                                             rounds)
    return Result(
        name=name,
        unit="ms/page",
        metacrm=median_milliseconds(metacrm_runs),
        baseline=median_milliseconds(baseline_runs),
        target=TARGET_RATIO,
        higher_is_better=False,
        details=[spread_milliseconds("MetaCRM", metacrm_runs),
                 spread_milliseconds("baseline", baseline_runs),
                 cpu_comparison(metacrm_runs, baseline_runs), *notes],
    )


def _check_same(
    label: str, metacrm: list[dict[str, Any]], baseline: list[dict[str, Any]]
) -> None:
    metacrm_ids = [record["id"] for record in metacrm]
    baseline_ids = [record["id"] for record in baseline]
    if metacrm_ids != baseline_ids:
        raise RuntimeError(
            f"{label}: MetaCRM and the baseline returned different records "
            f"({metacrm_ids[:3]!r}… against {baseline_ids[:3]!r}…); the "
            "queries are not equivalent, so their times cannot be compared"
        )


def _query_plans(
    metacrm_engine: sa.Engine,
    baseline_engine: sa.Engine,
    metacrm: Callable[[], object],
    baseline: Callable[[], object],
) -> list[str]:
    """Return SQLite's query plan of each side's list query, as sent."""
    lines = []
    for label, engine, action in (("MetaCRM", metacrm_engine, metacrm),
                                  ("baseline", baseline_engine, baseline)):
        statement, parameters = _last_statement(engine, action)
        with engine.connect() as conn:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}",
                                        parameters).all()
        steps = "; ".join(str(row[-1]) for row in plan)
        lines.append(f"{label} plan: {steps}")
    return lines


def _last_statement(
    engine: sa.Engine, action: Callable[[], object]
) -> tuple[str, Any]:
    """Run ``action`` and return the last SQL statement it sent to ``engine``."""
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
        raise RuntimeError("the list query sent no SQL statement to the engine")
    return captured[-1]
