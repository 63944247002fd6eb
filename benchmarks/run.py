"""Run the benchmarks and print one table: MetaCRM, baseline, ratio, target.

``python -m benchmarks`` runs the three comparisons with hand-written code
(api, list, import) at full size, which took under 2 minutes on the 2-core
machine of docs/benchmarks.md, including about half a minute to generate the
list database the first time. The tenants benchmark runs only when named
(``--only tenants``) because it takes 15 to 30 minutes at its default size
(an estimate for an idle machine, and the recorded run under load).
The permissions benchmark also runs only when named (``--only
permissions``): it took 7 to 11 minutes on that machine under load, most of
it loading 1,000,000 rows into PostgreSQL and counting them.
The rules benchmark (``--only rules``) times saves with and without
validation rules and formulas, on SQLite and PostgreSQL.
``python -m benchmarks --quick`` is a smoke run with small sizes. Sizes come
from the options below, whose defaults can be set with the environment
variables named in ``--help``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import faulthandler
import json
import logging
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from .bench_permissions import PermissionSizes
from .bench_rule_save import RuleSaveSizes
from .bench_tenants import BACKENDS, BackendsFailed, TenantSizes
from .common import Result, log

BENCHMARKS = ("api", "list", "import", "tenants", "permissions", "rules")
#: The benchmarks that run without ``--only``.
DEFAULT_BENCHMARKS = ("api", "list", "import")
#: Seconds the tenants benchmark may spend on each backend before it stops.
TENANTS_TIMEOUT_S = 1200
PACKAGES = ("SQLAlchemy", "Flask", "marshmallow", "waitress", "Werkzeug")


@dataclass(frozen=True)
class Sizes:
    api_requests: int
    api_rounds: int
    list_rows: int
    list_pages: int
    list_rounds: int
    import_rows: int
    import_rounds: int
    tenants: int
    tenant_accounts: int
    active_tenants: int
    tenant_rounds: int
    tenant_requests: int
    permission_rows: int
    permission_rounds: int
    permission_requests: int
    permission_count_requests: int


QUICK = Sizes(api_requests=300, api_rounds=3, list_rows=20_000, list_pages=50,
              list_rounds=3, import_rows=5_000, import_rounds=2, tenants=20,
              tenant_accounts=60, active_tenants=10, tenant_rounds=4,
              tenant_requests=30, permission_rows=20_000, permission_rounds=3,
              permission_requests=30, permission_count_requests=3)
#: Sizes of the rules benchmark in a ``--quick`` run.
QUICK_RULE_SAVES = 300
QUICK_RULE_ROUNDS = 3


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise SystemExit(f"invalid {name}={raw!r}: use a whole number") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time MetaCRM against hand-written SQLAlchemy code.",
    )
    parser.add_argument("--only", action="append", choices=BENCHMARKS,
                        help="Run only this benchmark; repeat for several "
                        "[default: api, list and import; tenants, "
                        "permissions and rules run only when named].")
    parser.add_argument("--quick", action="store_true",
                        help="Smoke run with small sizes; overrides every size "
                        "option.")
    sizes = (
        ("--api-requests", "BENCH_API_REQUESTS", 3000,
         "POST requests per side, split over the rounds"),
        ("--api-rounds", "BENCH_API_ROUNDS", 10, "timed API rounds per side"),
        ("--list-rows", "BENCH_LIST_ROWS", 1_000_000,
         "opportunities in the list benchmark's table"),
        ("--list-pages", "BENCH_LIST_PAGES", 200, "list pages fetched per round"),
        ("--list-rounds", "BENCH_LIST_ROUNDS", 7, "timed list rounds per side"),
        ("--import-rows", "BENCH_IMPORT_ROWS", 50_000, "rows of the imported CSV"),
        ("--import-rounds", "BENCH_IMPORT_ROUNDS", 5,
         "timed imports per side"),
        ("--tenants", "BENCH_TENANTS", 1000,
         "tenants provisioned per backend by the tenants benchmark"),
        ("--tenant-accounts", "BENCH_TENANT_ACCOUNTS", 200,
         "accounts in each tenant"),
        ("--active-tenants", "BENCH_ACTIVE_TENANTS", 100,
         "tenants that serve a list request before the memory reading"),
        ("--tenant-rounds", "BENCH_TENANT_ROUNDS", 15,
         "timed list-request rounds per server"),
        ("--tenant-requests", "BENCH_TENANT_REQUESTS", 100,
         "list requests per round"),
        ("--permission-rows", "BENCH_PERMISSION_ROWS", 1_000_000,
         "opportunities in the permissions benchmark's table"),
        ("--permission-rounds", "BENCH_PERMISSION_ROUNDS", 7,
         "timed permissions rounds per side and case"),
        ("--permission-requests", "BENCH_PERMISSION_REQUESTS", 100,
         "list pages per permissions round"),
        ("--permission-count-requests", "BENCH_PERMISSION_COUNT_REQUESTS", 5,
         "counted list pages per permissions round"),
        ("--rule-saves", "BENCH_RULE_SAVES", 5000,
         "record saves per side in the rules benchmark, split over the rounds"),
        ("--rule-rounds", "BENCH_RULE_ROUNDS", 10, "timed rules rounds per side"),
    )
    for option, variable, default, text in sizes:
        parser.add_argument(option, type=int, default=_env_int(variable, default),
                            help=f"Number of {text} [env: {variable}; default: "
                            f"{default:,}].")
    parser.add_argument("--tenant-backend", action="append", choices=BACKENDS,
                        help="Run the tenants benchmark on this backend; repeat "
                        "for both [default: sqlite and postgresql].")
    parser.add_argument("--permission-backend", action="append", choices=BACKENDS,
                        help="Run the permissions benchmark on this backend; "
                        "repeat for both [default: sqlite and postgresql].")
    parser.add_argument("--rule-backend", action="append", choices=BACKENDS,
                        help="Run the rules benchmark on this backend; repeat "
                        "for both [default: sqlite and postgresql].")
    parser.add_argument("--tenants-timeout", type=int, default=TENANTS_TIMEOUT_S,
                        metavar="SECONDS",
                        help="Stop the tenants benchmark, its servers and its "
                        "PostgreSQL if one backend takes longer, in seconds "
                        f"[default: {TENANTS_TIMEOUT_S}].")
    parser.add_argument("--timeout", type=int, default=3600, metavar="SECONDS",
                        help="Print every thread's stack and exit with status 1 "
                        "if the whole run takes longer, in seconds [default: "
                        "3600].")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="Also write the results and machine facts to PATH.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="Log progress at INFO level to stderr.")
    return parser


def machine_facts() -> dict[str, str]:
    """Describe the machine and the software versions the numbers depend on."""
    facts = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": _memory_total(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "load average at start": _load_average(),
    }
    for package in PACKAGES:
        facts[package] = metadata.version(package)
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kibibytes = int(line.split()[1])
                return f"{kibibytes / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def _load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def format_table(results: list[Result]) -> str:
    """Return the results as a Markdown table."""
    lines = [
        "| benchmark | unit | MetaCRM | baseline | ratio | target | result |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for result in results:
        number = "{:,.0f}" if result.unit == "rows/s" else "{:.3f}"
        baseline = "—" if result.baseline is None else number.format(result.baseline)
        ratio = "—" if result.ratio is None else f"{result.ratio:.2f}×"
        lines.append(
            f"| {result.name} | {result.unit} | {number.format(result.metacrm)} | "
            f"{baseline} | {ratio} | {result.target_text} | {_verdict(result)} |"
        )
    return "\n".join(lines)


def _verdict(result: Result) -> str:
    if result.met is None:
        return "no target"
    return "met" if result.met else "missed"


def _benchmarks(
    sizes: Sizes,
    tenant_sizes: TenantSizes,
    permission_sizes: PermissionSizes,
    rule_sizes: RuleSaveSizes,
) -> dict[str, Callable[[], list[Result]]]:
    from . import (
        bench_api_create,
        bench_import,
        bench_list,
        bench_permissions,
        bench_rule_save,
        bench_tenants,
    )

    return {
        "tenants": lambda: bench_tenants.run(tenant_sizes),
        "permissions": lambda: bench_permissions.run(permission_sizes),
        "api": lambda: bench_api_create.run(sizes.api_requests, sizes.api_rounds),
        "list": lambda: bench_list.run(sizes.list_rows, sizes.list_rounds,
                                       sizes.list_pages),
        "import": lambda: bench_import.run(sizes.import_rows, sizes.import_rounds),
        "rules": lambda: bench_rule_save.run(rule_sizes),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; return 1 if any of them failed to run."""
    options = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if options.verbose:
        log.setLevel(logging.INFO)
    # A watchdog, so that a hanging server or query cannot keep the run going
    # forever. It prints where each thread is and exits with status 1.
    faulthandler.dump_traceback_later(options.timeout, exit=True)

    sizes = QUICK if options.quick else Sizes(
        options.api_requests, options.api_rounds, options.list_rows,
        options.list_pages, options.list_rounds, options.import_rows,
        options.import_rounds, options.tenants, options.tenant_accounts,
        options.active_tenants, options.tenant_rounds, options.tenant_requests,
        options.permission_rows, options.permission_rounds,
        options.permission_requests, options.permission_count_requests,
    )
    tenant_sizes = TenantSizes(
        tenants=sizes.tenants, accounts=sizes.tenant_accounts,
        active=min(sizes.active_tenants, sizes.tenants), rounds=sizes.tenant_rounds,
        requests=sizes.tenant_requests,
        backends=tuple(options.tenant_backend or BACKENDS),
        timeout_s=options.tenants_timeout,
    )
    permission_sizes = PermissionSizes(
        rows=sizes.permission_rows, rounds=sizes.permission_rounds,
        requests=sizes.permission_requests,
        count_requests=sizes.permission_count_requests,
        backends=tuple(options.permission_backend or BACKENDS),
    )
    rule_sizes = RuleSaveSizes(
        saves=QUICK_RULE_SAVES if options.quick else options.rule_saves,
        rounds=QUICK_RULE_ROUNDS if options.quick else options.rule_rounds,
        backends=tuple(options.rule_backend or BACKENDS),
    )
    facts = machine_facts()
    for key, value in facts.items():
        print(f"{key}: {value}")
    print(f"sizes: {asdict(sizes)}")

    names = options.only or list(DEFAULT_BENCHMARKS)
    results, failed = _run_all(
        names, sizes, tenant_sizes, permission_sizes, rule_sizes
    )
    facts["load average at end"] = _load_average()
    print(f"\nload average at end: {facts['load average at end']}\n")
    print(format_table(results))
    faulthandler.cancel_dump_traceback_later()

    if options.json:
        _write_json(options.json, facts, sizes, results)
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _run_all(
    names: list[str],
    sizes: Sizes,
    tenant_sizes: TenantSizes,
    permission_sizes: PermissionSizes,
    rule_sizes: RuleSaveSizes,
) -> tuple[list[Result], list[str]]:
    """Run the named benchmarks and print their details; return the results
    and the names of the benchmarks that raised."""
    results: list[Result] = []
    failed: list[str] = []
    runners = _benchmarks(sizes, tenant_sizes, permission_sizes, rule_sizes)
    for name in names:
        started = time.perf_counter()
        try:
            found = runners[name]()
        except BackendsFailed as err:
            failed.append(name)
            found = err.results
        except Exception:
            log.exception("benchmark %s failed", name)
            failed.append(name)
            continue
        print(f"\n{name} ({time.perf_counter() - started:.0f} s)")
        for result in found:
            print(f"  {result.name}")
            for line in result.details:
                print(f"    {line}")
        results.extend(found)
    return results, failed


def _write_json(
    path: Path, facts: dict[str, str], sizes: Sizes, results: list[Result]
) -> None:
    document = {
        "machine": facts,
        "sizes": asdict(sizes),
        "results": [
            {**asdict(result), "ratio": result.ratio, "met": result.met}
            for result in results
        ],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n",
                    encoding="utf-8")
