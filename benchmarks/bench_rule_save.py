"""Time saving a record with validation rules and formula fields against
saving the same record without them.

``ruled_item`` in benchmarks/definitions/rule_save has ten validation rules
and five formula fields. ``plain_item`` has the same fields with neither: its
five formula columns are ordinary fields that the benchmark leaves empty.
Both sides save the same inputs through ``RecordService.create`` (schema,
permissions, rules, INSERT and journal entry, one transaction per save), in
alternating rounds, on SQLite and on a throwaway PostgreSQL server started
like the tenants benchmark's. The target is at most 1.5 times the time of a
plain save. Roll-up fields (sums over child records) do not exist yet, so
they are not measured.

It also reports the numbers of ``bench_rules``: the four rules and the
formula of examples/project_tracker's ``project`` in CEL against the same
logic in hand-written Python, without a database.

    python -m benchmarks --only rules
    python -m benchmarks --only rules --rule-backend sqlite --rule-saves 2000
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from crm_platform.config import Settings
from crm_platform.records import RecordService
from crm_platform.serialize import value_to_json
from crm_platform.tenancy import Platform
from metadata_engine.loader import load_definition
from metadata_engine.record_rules import apply_record_rules

from . import bench_rules
from .bench_tenants import _create_database, throwaway_postgres
from .common import (
    DATA_DIR,
    ROOT,
    Measurement,
    Result,
    bench_actor,
    cpu_comparison,
    interleave,
    median_milliseconds,
    spread_milliseconds,
    timed,
)

log = logging.getLogger("benchmarks")

DEFINITION = ROOT / "benchmarks" / "definitions" / "rule_save"
SLUG = "rules"
RULED = "ruled_item"
PLAIN = "plain_item"
#: Saving with rules may take at most this many times as long as without.
TARGET_RATIO = 1.5
#: Saves per side before timing starts, so that schemas, compiled rules and
#: statement caches exist on both sides.
WARM_UP_SAVES = 20
BACKEND_LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
STATUSES = ("draft", "open", "won", "lost")
#: Records and rounds of the CEL-against-Python comparison of ``bench_rules``.
COMPARISON_RECORDS = 1000
COMPARISON_ROUNDS = 5


@dataclass(frozen=True)
class RuleSaveSizes:
    saves: int
    rounds: int
    backends: tuple[str, ...]


def progress(message: str, *args: object) -> None:
    log.info(message, *args)


def make_inputs(count: int) -> list[dict[str, Any]]:
    """Return ``count`` API inputs that pass every rule of ``ruled_item``."""
    start = dt.date(2027, 1, 1)
    inputs = []
    for index in range(count):
        status = STATUSES[index % len(STATUSES)]
        inputs.append(
            {
                "name": f"item {index}",
                "quantity": index % 50 + 1,
                "unit_price": f"{index % 997 + 0.5:.2f}",
                "discount": str(index % 40),
                "start_date": start.isoformat(),
                "end_date": (start + dt.timedelta(days=index % 300)).isoformat(),
                "status": status,
                "priority": index % 5 + 1,
                "note": "lost to a competitor" if status == "lost" else None,
                "urgent": index % 3 == 0,
            }
        )
    return inputs


def check_formulas(service: RecordService) -> None:
    """Raise AssertionError unless a saved record has the expected formulas."""
    record = service.create(RULED, make_inputs(2)[1])
    expected = {
        "total": Decimal("3.00"),
        "net_total": Decimal("2.97"),
        "duration_days": 2,
        "is_open": True,
        "summary": "item 1 (open)",
    }
    for name, value in expected.items():
        assert record[name] == value, (name, record[name], value)


def save_all(service: RecordService, entity: str, inputs: list[dict[str, Any]]) -> None:
    for data in inputs:
        service.create(entity, data)


def rules_only_ms(platform: Platform, inputs: list[dict[str, Any]]) -> float:
    """Return the milliseconds per record that ``apply_record_rules`` takes on
    loaded records, without the rest of a save."""
    runtime = platform.runtime(SLUG)
    entity = runtime.definition.entity(RULED)
    schema = runtime.schema(RULED, "en")
    loaded = [dict(schema.load(data)) for data in inputs]
    user = {"id": "bench", "role": "admin"}
    started = time.perf_counter()
    for record in loaded:
        apply_record_rules(entity, record, user)
    return (time.perf_counter() - started) / len(loaded) * 1000


def with_formula_values(
    platform: Platform, inputs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Return ``inputs`` with the values of the five formulas added, in JSON
    form, so that ``plain_item`` stores the same row as ``ruled_item``."""
    runtime = platform.runtime(SLUG)
    entity = runtime.definition.entity(RULED)
    schema = runtime.schema(RULED, "en")
    user = {"id": "bench", "role": "admin"}
    completed = []
    for data in inputs:
        record = dict(schema.load(data))
        apply_record_rules(entity, record, user)
        computed = {
            field.name: value_to_json(field, record[field.name])
            for field in entity.fields
            if field.formula
        }
        completed.append({**data, **computed})
    return completed


def same_row_ms(
    service: RecordService, inputs: list[dict[str, Any]], rounds: int
) -> float:
    """Return the median milliseconds per save of ``plain_item`` given the
    formula values as input."""
    runs = [
        timed(len(inputs), lambda: save_all(service, PLAIN, inputs))
        for _ in range(rounds)
    ]
    return median_milliseconds(runs)


def measure(backend: str, platform: Platform, sizes: RuleSaveSizes) -> Result:
    """Time both sides on one platform and return the result row."""
    platform.create_tenant(SLUG, DEFINITION, name="Rule save benchmark")
    service = RecordService(platform.runtime(SLUG), bench_actor(platform, SLUG), "en")
    check_formulas(service)
    per_round = max(1, sizes.saves // sizes.rounds)
    inputs = make_inputs(per_round)
    save_all(service, RULED, inputs[:WARM_UP_SAVES])
    save_all(service, PLAIN, inputs[:WARM_UP_SAVES])

    def ruled() -> Measurement:
        return timed(per_round, lambda: save_all(service, RULED, inputs))

    def plain() -> Measurement:
        return timed(per_round, lambda: save_all(service, PLAIN, inputs))

    progress(
        "timing %d rounds of %d saves per side on %s", sizes.rounds, per_round, backend
    )
    ruled_runs, plain_runs = interleave(ruled, plain, sizes.rounds)
    complete = with_formula_values(platform, inputs)
    same_row = same_row_ms(service, complete, sizes.rounds)
    label = BACKEND_LABELS[backend]
    return Result(
        name=f"rules: save with 10 rules and 5 formulas, {label}",
        unit="ms/save",
        metacrm=median_milliseconds(ruled_runs),
        baseline=median_milliseconds(plain_runs),
        target=TARGET_RATIO,
        higher_is_better=False,
        details=[
            spread_milliseconds("with rules", ruled_runs),
            spread_milliseconds("without rules", plain_runs),
            cpu_comparison(ruled_runs, plain_runs),
            f"apply_record_rules alone: {rules_only_ms(platform, inputs):.3f} ms "
            "per record",
            f"without rules, given the five formula values as input: {same_row:.3f} "
            "ms per save",
            "roll-up fields do not exist yet and are not measured",
        ],
    )


def run_sqlite(sizes: RuleSaveSizes) -> Result:
    DATA_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rule-save-", dir=DATA_DIR) as folder:
        directory = Path(folder)
        (directory / "tenants").mkdir()
        settings = Settings(data_dir=directory, secret_key="rule-save-benchmark")
        platform = Platform(settings)
        try:
            return measure("sqlite", platform, sizes)
        finally:
            platform.dispose()


@contextlib.contextmanager
def postgres_platform() -> Iterator[Platform]:
    """Start a throwaway PostgreSQL on 127.0.0.1 and yield a platform on it."""
    with throwaway_postgres() as server_url:
        url = _create_database(server_url, "metacrm_rule_save")
        directory = DATA_DIR / "rule-save-postgresql"
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "tenants").mkdir(parents=True)
        settings = Settings(
            data_dir=directory, secret_key="rule-save-benchmark", database_url=url
        )
        platform = Platform(settings)
        try:
            yield platform
        finally:
            platform.dispose()
            shutil.rmtree(directory, ignore_errors=True)


def run_postgresql(sizes: RuleSaveSizes) -> Result:
    with postgres_platform() as platform:
        return measure("postgresql", platform, sizes)


def comparison_result() -> Result:
    """Return the numbers of ``bench_rules``: CEL against hand-written Python."""
    entity = load_definition(bench_rules.EXAMPLE).entity("project")
    records = bench_rules.make_records(COMPARISON_RECORDS)
    bench_rules.check_same_results(entity, records)

    def compiled(record: dict[str, Any]) -> Any:
        return apply_record_rules(entity, record, bench_rules.USER)

    cel = statistics.median(
        bench_rules.time_per_record(compiled, records, 1)
        for _ in range(COMPARISON_ROUNDS)
    )
    python = statistics.median(
        bench_rules.time_per_record(bench_rules.handwritten, records, 1)
        for _ in range(COMPARISON_ROUNDS)
    )
    return Result(
        name="rules: 4 rules and 1 formula, CEL against hand-written Python",
        unit="µs/record",
        metacrm=cel * 1e6,
        baseline=python * 1e6,
        target=None,
        higher_is_better=False,
        details=[
            f"{COMPARISON_ROUNDS} rounds of {COMPARISON_RECORDS} project records "
            "of examples/project_tracker, median, no database",
        ],
    )


def run(sizes: RuleSaveSizes) -> list[Result]:
    """Run the save benchmark on each backend of ``sizes``, then the
    comparison of ``bench_rules``."""
    runners = {"sqlite": run_sqlite, "postgresql": run_postgresql}
    results = [runners[backend](sizes) for backend in sizes.backends]
    results.append(comparison_result())
    return results
