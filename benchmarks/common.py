"""Timing, result rows and MetaCRM set-up shared by the benchmarks."""

from __future__ import annotations

import logging
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crm_platform.config import Settings
from crm_platform.control import Actor
from crm_platform.tenancy import Platform

log = logging.getLogger("benchmarks")

ROOT = Path(__file__).resolve().parent.parent
#: Generated databases and CSV files; git ignores this folder.
DATA_DIR = Path(__file__).resolve().parent / ".data"
STANDARD_CRM = ROOT / "tenant_definitions" / "standard_crm"
TELCO = ROOT / "examples" / "telco"
BENCH_EMAIL = "bench@example.com"
BENCH_PASSWORD = "bench-password-1"


@dataclass(frozen=True)
class Measurement:
    """One timed run of one side: how many operations in how many seconds.

    ``seconds`` is wall-clock time, the number the results use.
    ``cpu_seconds`` is the CPU time of the whole process, so it includes the
    threads of the in-process servers. It changes less than wall-clock time
    when other programs compete for the CPU.
    """

    operations: int
    seconds: float
    cpu_seconds: float

    @property
    def seconds_per_operation(self) -> float:
        return self.seconds / self.operations

    @property
    def operations_per_second(self) -> float:
        return self.operations / self.seconds


@dataclass(frozen=True)
class Result:
    """One row of the result table: MetaCRM against its baseline.

    ``ratio`` is always MetaCRM's value divided by the baseline's, in the
    row's unit. For a time (``higher_is_better`` false) the target is an upper
    bound on the ratio, and for a speed it is a lower bound. A row without a
    baseline compares MetaCRM's value itself with the target, and a row
    without a target only reports its numbers.
    """

    name: str
    unit: str
    metacrm: float
    baseline: float | None
    target: float | None
    higher_is_better: bool
    details: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None:
            return None
        return self.metacrm / self.baseline

    @property
    def met(self) -> bool | None:
        """True if the target is met, False if not, None without a target."""
        if self.target is None:
            return None
        compared = self.metacrm if self.ratio is None else self.ratio
        if self.higher_is_better:
            return compared >= self.target
        return compared <= self.target

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "—"
        sign = "≥" if self.higher_is_better else "≤"
        if self.baseline is None:
            return f"{sign} {self.target:g} {self.unit}"
        return f"{sign} {self.target:.2f}×"


RunOnce = Callable[[], Measurement]


def interleave(
    metacrm: RunOnce, baseline: RunOnce, rounds: int
) -> tuple[list[Measurement], list[Measurement]]:
    """Run both sides ``rounds`` times, alternating which one goes first, so
    that a slow phase of the machine (another process, a cache flush, a
    growing file) hits both sides alike."""
    metacrm_runs: list[Measurement] = []
    baseline_runs: list[Measurement] = []
    for number in range(rounds):
        if number % 2 == 0:
            metacrm_runs.append(metacrm())
            baseline_runs.append(baseline())
        else:
            baseline_runs.append(baseline())
            metacrm_runs.append(metacrm())
    return metacrm_runs, baseline_runs


def timed(operations: int, action: Callable[[], object]) -> Measurement:
    """Run ``action`` once and return it as ``operations`` operations."""
    cpu_start = time.process_time()
    start = time.perf_counter()
    action()
    seconds = time.perf_counter() - start
    return Measurement(operations, seconds, time.process_time() - cpu_start)


def median_milliseconds(runs: list[Measurement]) -> float:
    """Return the median over runs of the milliseconds per operation."""
    return statistics.median(run.seconds_per_operation for run in runs) * 1000


def median_rate(runs: list[Measurement]) -> float:
    """Return the median over runs of the operations per second."""
    return statistics.median(run.operations_per_second for run in runs)


def spread_milliseconds(label: str, runs: list[Measurement]) -> str:
    """Describe the per-round times of one side: rounds, min, median, max."""
    values = sorted(run.seconds_per_operation * 1000 for run in runs)
    return (
        f"{label}: {len(values)} rounds of {runs[0].operations} operations, "
        f"ms per operation min {values[0]:.3f}, median "
        f"{statistics.median(values):.3f}, max {values[-1]:.3f}"
    )


def spread_rate(label: str, runs: list[Measurement]) -> str:
    """Describe the per-round speeds of one side in operations per second."""
    values = sorted(run.operations_per_second for run in runs)
    return (
        f"{label}: {len(values)} rounds of {runs[0].operations} rows, rows/s "
        f"min {values[0]:,.0f}, median {statistics.median(values):,.0f}, "
        f"max {values[-1]:,.0f}"
    )


def cpu_comparison(
    metacrm_runs: list[Measurement], baseline_runs: list[Measurement]
) -> str:
    """Compare the median CPU time per operation of both sides."""
    metacrm = statistics.median(run.cpu_seconds / run.operations
                                for run in metacrm_runs)
    baseline = statistics.median(run.cpu_seconds / run.operations
                                 for run in baseline_runs)
    return (
        f"CPU time per operation, median: MetaCRM {metacrm * 1000:.3f} ms, "
        f"baseline {baseline * 1000:.3f} ms, ratio {metacrm / baseline:.2f}"
    )


def open_platform(data_dir: Path) -> Platform:
    """Open a MetaCRM data directory, creating it if it is missing."""
    (data_dir / "tenants").mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=data_dir, secret_key=secrets.token_urlsafe(32))
    return Platform(settings)


def bench_actor(platform: Platform, slug: str) -> Actor:
    """Return the benchmark user as an admin of ``slug``, creating it once."""
    tenant = platform.control.get_tenant(slug)
    user_id = platform.control.find_user_id(BENCH_EMAIL)
    if user_id is None:
        user_id = platform.control.create_user(BENCH_EMAIL, BENCH_PASSWORD)
    actor = platform.control.actor(tenant, user_id)
    if actor is None:
        platform.control.add_member(tenant, user_id, "admin")
        actor = platform.control.actor(tenant, user_id)
    if actor is None:
        raise RuntimeError(f"user {BENCH_EMAIL!r} could not join tenant {slug!r}")
    return actor
