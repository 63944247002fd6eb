"""Time compiled validation rules and formulas against the same logic in Python.

Runs the four validation rules and the ``planned_days`` formula of the
``project`` entity of examples/project_tracker over a set of records,
first through ``apply_record_rules`` (CEL, cel-python) and then as
hand-written Python, and prints both times per record and their ratio.

    python -m benchmarks.bench_rules
    python -m benchmarks.bench_rules --records 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metadata_engine.loader import load_definition
from metadata_engine.model import Entity
from metadata_engine.record_rules import apply_record_rules

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "project_tracker"
USER = {"id": "u-1", "role": "admin"}
HEALTHS = (None, "on_track", "at_risk", "late", "on_hold")
LATE_HEALTHS = ("at_risk", "on_hold", "late")


def make_records(count: int) -> list[dict[str, Any]]:
    """Return ``count`` projects that cover every branch of the rules."""
    start = dt.date(2027, 1, 1)
    records = []
    for index in range(count):
        records.append(
            {
                "name": f"project {index}",
                "project_health": HEALTHS[index % len(HEALTHS)],
                "path_to_green": "plan" if index % 3 == 0 else None,
                "initial_start_date": start if index % 7 else None,
                "initial_end_date": start + dt.timedelta(days=index % 40 - 10),
                "sox_impact": index % 2 == 0,
                "sox_comment": "note" if index % 4 == 0 else "",
            }
        )
    return records


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def handwritten(record: dict[str, Any]) -> dict[str, list[str]]:
    """Apply the project's rules and formula as a developer would in Python."""
    errors: dict[str, list[str]] = {}
    start, end = record.get("initial_start_date"), record.get("initial_end_date")
    if start is not None and end is not None:
        record["planned_days"] = (end - start).days + 1
        if end < start:
            errors.setdefault("initial_end_date", []).append("end before start")
    else:
        record["planned_days"] = None
    path, health = record.get("path_to_green"), record.get("project_health")
    if blank(path) and health in LATE_HEALTHS:
        errors.setdefault("path_to_green", []).append("path to green required")
    comment, impact = record.get("sox_comment"), record.get("sox_impact")
    if not blank(comment) and impact is not True:
        errors.setdefault("sox_comment", []).append("comment without impact")
    if impact is True and blank(comment):
        errors.setdefault("sox_comment", []).append("comment required")
    return errors


def time_per_record(
    apply: Callable[[dict[str, Any]], Any], records: list[dict[str, Any]], rounds: int
) -> float:
    """Return the median over ``rounds`` of the time per record, in seconds."""
    timings = []
    for _ in range(rounds):
        copies = [dict(record) for record in records]
        began = time.perf_counter()
        for record in copies:
            apply(record)
        timings.append((time.perf_counter() - began) / len(copies))
    return statistics.median(timings)


def check_same_results(entity: Entity, records: list[dict[str, Any]]) -> None:
    """Raise AssertionError unless both versions reject the same fields."""
    for record in records:
        by_rules = apply_record_rules(entity, dict(record), USER)
        by_hand = handwritten(dict(record))
        assert set(by_rules) == set(by_hand), (record, by_rules, by_hand)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000, help="records per round")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="number of rounds; the median time is reported",
    )
    options = parser.parse_args()
    entity = load_definition(EXAMPLE).entity("project")
    records = make_records(options.records)
    check_same_results(entity, records)

    def compiled(record: dict[str, Any]) -> Any:
        return apply_record_rules(entity, record, USER)

    cel = time_per_record(compiled, records, options.rounds)
    python = time_per_record(handwritten, records, options.rounds)
    print(f"records: {options.records}, rounds: {options.rounds} (median)")
    print(f"CEL rules and formula:  {cel * 1e6:9.1f} µs per record")
    print(f"hand-written Python:    {python * 1e6:9.1f} µs per record")
    print(f"ratio:                  {cel / python:9.1f}x")


if __name__ == "__main__":
    main()
