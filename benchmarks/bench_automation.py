"""Time saving a record that triggers automation rules against saving the
same record without any, on SQLite.

``automated_ticket`` in benchmarks/definitions/automation has two rules on
create: one sets the priority of tickets of 500 or more before the save,
the other then notifies the owner and creates a ``log_entry`` record in the
same transaction. ``plain_ticket`` has the same fields and no rules. Half of
the inputs are of 500 or more, so half of the automated saves run all the
actions and the other half only evaluate two conditions. Both sides save
through ``RecordService.create`` in alternating rounds.

This measures what decision record 0009 chose: automation inside the
write's transaction. It has no target; its numbers are in
docs/benchmarks.md.

    python -m benchmarks.bench_automation
    python -m benchmarks.bench_automation --saves 2000 --rounds 10
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from crm_platform.config import Settings
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform

from .common import (
    ROOT,
    bench_actor,
    interleave,
    median_milliseconds,
    spread_milliseconds,
    timed,
)

log = logging.getLogger("benchmarks")

DEFINITION = ROOT / "benchmarks" / "definitions" / "automation"
SLUG = "automation"
WARM_UP_SAVES = 20


def make_inputs(count: int, offset: int = 0) -> list[dict[str, Any]]:
    """Return ``count`` inputs; every other one has an amount of 500 or more."""
    return [
        {"name": f"ticket {offset + index}", "status": "open",
         "amount": 900 if index % 2 else 100}
        for index in range(count)
    ]


def check_actions(service: RecordService) -> None:
    """Raise AssertionError unless the rules ran on a large ticket."""
    record = service.create("automated_ticket", {"name": "check", "amount": 700})
    assert record["priority"] == "high", record


def run(saves: int, rounds: int) -> dict[str, float]:
    """Return the median milliseconds per save of each side."""
    folder = Path(tempfile.mkdtemp(prefix="metacrm-bench-automation-"))
    try:
        (folder / "tenants").mkdir()
        platform = Platform(Settings(data_dir=folder, secret_key="bench"))
        try:
            platform.create_tenant(SLUG, DEFINITION)
            runtime = platform.runtime(SLUG)
            service = platform.records(runtime, bench_actor(platform, SLUG))
            check_actions(service)
            per_round = max(saves // rounds, 1)
            counter = iter(range(10**9))

            def side(entity: str) -> Any:
                def once() -> Any:
                    inputs = make_inputs(per_round, next(counter) * per_round)
                    return timed(per_round, lambda: [
                        service.create(entity, data) for data in inputs
                    ])
                return once

            for entity in ("plain_ticket", "automated_ticket"):
                for data in make_inputs(WARM_UP_SAVES):
                    service.create(entity, data)
            automated, plain = interleave(
                side("automated_ticket"), side("plain_ticket"), rounds
            )
            log.info(spread_milliseconds("automated", automated))
            log.info(spread_milliseconds("plain", plain))
            return {
                "automated_ms": median_milliseconds(automated),
                "plain_ms": median_milliseconds(plain),
            }
        finally:
            platform.dispose()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=2000,
                        help="saves per side, split over the rounds")
    parser.add_argument("--rounds", type=int, default=10)
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    result = run(options.saves, options.rounds)
    ratio = result["automated_ms"] / result["plain_ms"]
    print(f"plain save:      {result['plain_ms']:.3f} ms")
    print(f"automated save:  {result['automated_ms']:.3f} ms  ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
