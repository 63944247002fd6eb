"""Time saving a record with validation rules and formula fields against
saving the same record without them.

``ruled_item`` in benchmarks/definitions/rule_save has ten validation rules,
five formula fields and one roll-up: ``children_quantity``, the sum of the
quantities of the items whose ``parent`` lookup points at it. ``plain_item``
has the same fields with none of these: its five formula columns and its
roll-up column are ordinary fields that the benchmark leaves empty. Every
saved item points at one of ``PARENTS`` parent items of its own entity, so
each save of ``ruled_item`` also computes its parent's roll-up again. Both
sides save the same inputs through ``RecordService.create`` (schema,
permissions, rules, INSERT, roll-up and journal entry, one transaction per
save), in alternating rounds, on SQLite and on a throwaway PostgreSQL
server started like the tenants benchmark's. The target is at most 1.5
times the time of a plain save.

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
#: Parent items per entity; saves cycle through them, so that each parent
#: ends up with about ``saves / PARENTS`` children, as an account has its
#: opportunities.
PARENTS = 200
#: A compiled rule may take at most this many times as long as the same
#: condition written in Python.
COMPILED_RULE_TARGET = 10.0
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


def with_parents(
    inputs: list[dict[str, Any]], parents: list[str]
) -> list[dict[str, Any]]:
    """Return ``inputs`` with their ``parent`` lookups set, cycling through
    ``parents``."""
    return [
        {**data, "parent": parents[index % len(parents)]}
        for index, data in enumerate(inputs)
    ]


def create_parents(service: RecordService, entity: str) -> list[str]:
    """Save ``PARENTS`` items without a parent and return their ids."""
    return [str(service.create(entity, data)["id"]) for data in make_inputs(PARENTS)]


def check_rollup(service: RecordService) -> None:
    """Raise AssertionError unless saving two children sums their quantities
    into their parent's roll-up."""
    parent = service.create(RULED, make_inputs(1)[0])
    children = with_parents(make_inputs(3)[1:], [str(parent["id"])])
    save_all(service, RULED, children)
    stored = service.get(RULED, str(parent["id"]))
    expected = sum(data["quantity"] for data in children)
    assert stored["children_quantity"] == expected, (stored, expected)


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
    # The first call compiles the rules if this entity object has not been
    # used yet, which is no part of a save's cost.
    apply_record_rules(entity, dict(loaded[0]), user)
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
    check_rollup(service)
    per_round = max(1, sizes.saves // sizes.rounds)
    inputs = make_inputs(per_round)
    ruled_inputs = with_parents(inputs, create_parents(service, RULED))
    plain_inputs = with_parents(inputs, create_parents(service, PLAIN))
    save_all(service, RULED, ruled_inputs[:WARM_UP_SAVES])
    save_all(service, PLAIN, plain_inputs[:WARM_UP_SAVES])

    def ruled() -> Measurement:
        return timed(per_round, lambda: save_all(service, RULED, ruled_inputs))

    def plain() -> Measurement:
        return timed(per_round, lambda: save_all(service, PLAIN, plain_inputs))

    progress(
        "timing %d rounds of %d saves per side on %s", sizes.rounds, per_round, backend
    )
    ruled_runs, plain_runs = interleave(ruled, plain, sizes.rounds)
    without_rollup = rollup_share(service, inputs, sizes.rounds)
    complete = with_formula_values(platform, plain_inputs)
    same_row = same_row_ms(service, complete, sizes.rounds)
    label = BACKEND_LABELS[backend]
    return Result(
        name=f"rules: save with 10 rules, 5 formulas and 1 roll-up, {label}",
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
            f"every save points at one of {PARENTS} parents of its entity",
            without_rollup,
        ],
    )


def rollup_share(
    service: RecordService, inputs: list[dict[str, Any]], rounds: int
) -> str:
    """Time both sides again with saves that point at no parent, so that no
    roll-up is computed, and describe the result."""

    def ruled() -> Measurement:
        return timed(len(inputs), lambda: save_all(service, RULED, inputs))

    def plain() -> Measurement:
        return timed(len(inputs), lambda: save_all(service, PLAIN, inputs))

    ruled_runs, plain_runs = interleave(ruled, plain, rounds)
    with_rules = median_milliseconds(ruled_runs)
    without_rules = median_milliseconds(plain_runs)
    return (
        f"without a parent, so without the roll-up: {with_rules:.3f} ms with rules "
        f"against {without_rules:.3f} ms without, "
        f"{with_rules / without_rules:.2f}x"
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
            "of examples/project_tracker, median, no database; the whole "
            "record: reading its values, four rules, the formula, the errors",
        ],
    )


def run(sizes: RuleSaveSizes) -> list[Result]:
    """Run the save benchmark on each backend of ``sizes``, then the
    comparison of ``bench_rules``."""
    runners = {"sqlite": run_sqlite, "postgresql": run_postgresql}
    results = [runners[backend](sizes) for backend in sizes.backends]
    results.append(rule_result())
    results.append(comparison_result())
    return results


def rule_result() -> Result:
    """Return one compiled rule against the same condition as Python: the
    median over the four rules of ``bench_rules`` of each one's times."""
    entity = load_definition(bench_rules.EXAMPLE).entity("project")
    records = bench_rules.make_records(COMPARISON_RECORDS)
    timings = bench_rules.rule_timings(entity, records, COMPARISON_ROUNDS)
    details = [
        f"{name}: {rule * 1e6:.2f} µs against {python * 1e6:.2f} µs, "
        f"{rule / python:.1f}x"
        for name, (rule, python) in timings.items()
    ]
    return Result(
        name="rules: one compiled rule against its condition as Python",
        unit="µs/rule",
        metacrm=statistics.median(rule for rule, _ in timings.values()) * 1e6,
        baseline=statistics.median(python for _, python in timings.values()) * 1e6,
        target=COMPILED_RULE_TARGET,
        higher_is_better=False,
        details=[
            *details,
            f"{COMPARISON_ROUNDS} rounds of {COMPARISON_RECORDS} project records "
            "of examples/project_tracker, values already read from the record, "
            "no database",
        ],
    )
