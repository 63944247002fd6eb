"""Time compiled validation rules and formulas against the same logic in Python.

Runs the four validation rules and the ``planned_days`` formula of the
``project`` entity of examples/project_tracker over a set of records,
first through ``apply_record_rules`` (CEL, compiled to closures over plain
values by ``expression_closures``) and then as hand-written Python, and
prints both times per record and their ratio.

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
from metadata_engine.record_rules import (
    apply_record_rules,
    compiled_rules,
    read_rule_values,
)

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


#: The conditions of the project's four validation rules as Python, over
#: the values that ``apply_record_rules`` hands to the compiled rules.
RULES_AS_PYTHON: dict[str, Callable[[dict[str, Any]], Any]] = {
    "initial_end_after_start": lambda v: (
        v["initial_start_date"] is not None
        and v["initial_end_date"] is not None
        and v["initial_end_date"] < v["initial_start_date"]
    ),
    "path_to_green_required": lambda v: (
        v["path_to_green"] is None and v["project_health"] in LATE_HEALTHS
    ),
    "sox_comment_only_with_impact": lambda v: (
        v["sox_comment"] is not None and v["sox_impact"] is not True
    ),
    "sox_comment_required": lambda v: (
        v["sox_impact"] is True and v["sox_comment"] is None
    ),
}


def rule_timings(
    entity: Entity, records: list[dict[str, Any]], rounds: int
) -> dict[str, tuple[float, float]]:
    """Return, per validation rule of ``entity``, the median seconds of one
    evaluation of the compiled rule and of its condition as Python, both
    given the record's values as the rules read them.

    Raises AssertionError if the two ever disagree.
    """
    compiled = compiled_rules(entity)
    user = {"id": USER["id"], "role": USER["role"]}
    activations = [
        read_rule_values(entity, compiled, record, user) for record in records
    ]
    timings: dict[str, tuple[float, float]] = {}
    for rule, expression in compiled.rules:
        python = RULES_AS_PYTHON[rule.name]
        for values in activations:
            same = (expression.evaluate_plain(values) is True) == bool(python(values))
            assert same, (rule.name, values)
        timings[rule.name] = (
            _median_each(expression.evaluate_plain, activations, rounds),
            _median_each(python, activations, rounds),
        )
    return timings


def _median_each(
    evaluate: Callable[[dict[str, Any]], Any],
    activations: list[dict[str, Any]],
    rounds: int,
) -> float:
    timings = []
    for _ in range(rounds):
        began = time.perf_counter()
        for values in activations:
            evaluate(values)
        timings.append((time.perf_counter() - began) / len(activations))
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
    print("one compiled rule against its condition as Python:")
    for name, (rule, python_rule) in rule_timings(
        entity, records, options.rounds
    ).items():
        print(f"  {name:30s} {rule * 1e6:6.2f} µs against {python_rule * 1e6:6.2f}"
              f" µs, {rule / python_rule:5.1f}x")


if __name__ == "__main__":
    main()
