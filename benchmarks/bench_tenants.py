"""Many tenants in one deployment: provisioning, server memory, list latency.

For each backend (a SQLite file per tenant, or a PostgreSQL schema per
tenant on a throwaway server that this module starts), the benchmark builds
two data sets with ``Platform.create_tenant`` and the standard template:

- *many*: N tenants (1,000 by default), each provisioning timed alone;
- *one*: a single tenant, the reference for the latency comparison.

Every tenant gets the benchmark user as admin, a bearer token and the same
accounts, written with ``RecordService.import_batch``. Each data set is then
served by ``python -m crm_platform serve`` (waitress, 8 threads) in a
subprocess on a free port of 127.0.0.1, and one ``http.client`` keep-alive
connection per server sends ``GET /t/<slug>/api/v1/records/account?limit=50``.

1. Provisioning: wall-clock and CPU seconds of each ``create_tenant`` call.
2. Memory: the RSS of the *many* server after one tenant has served a list
   request, and after ``active`` different tenants have each served one.
   The first requests to those tenants are also the cold-tenant latencies.
3. Latency: rounds of warm requests to one tenant of the *many* server and
   to the tenant of the *one* server, alternating which server goes first,
   then the same with the *many* side cycling over all active tenants.

Every loop is bounded by its count and by the deadline of its backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from crm_platform.config import Settings
from crm_platform.tenancy import Platform

from .common import DATA_DIR, ROOT, STANDARD_CRM, Result, bench_actor, log

BACKENDS = ("sqlite", "postgresql")
#: Provisioning one tenant may take at most this long, in seconds.
TARGET_PROVISION_SECONDS = 1.0
#: A warm list request among N tenants may take at most this multiple of the
#: same request in a deployment with one tenant.
TARGET_RATIO = 1.2
WARM_UP_REQUESTS = 50
PAGE_SIZE = 50
SERVER_START_TIMEOUT_S = 60
SERVER_STOP_TIMEOUT_S = 15
REQUEST_TIMEOUT_S = 30
ONE_SLUG = "solo"
INDUSTRIES = ("technology", "finance", "retail", "healthcare", "energy")
#: The ``prctl`` option of ``<linux/prctl.h>`` that sets the parent-death signal.
PR_SET_PDEATHSIG = 1
MEBIBYTE = 1024 * 1024


class BackendsFailed(RuntimeError):
    """The benchmark failed on some backends; ``results`` has the rows of the
    others, so that the caller can still print them."""

    def __init__(self, results: list[Result], backends: list[str]) -> None:
        super().__init__(f"the tenants benchmark failed on {', '.join(backends)}; "
                         "the log above shows why")
        self.results = results


@dataclass(frozen=True)
class TenantSizes:
    """Sizes of one run of this benchmark."""

    tenants: int
    accounts: int
    active: int
    rounds: int
    requests: int
    backends: tuple[str, ...]
    timeout_s: float


class Deadline:
    """A time limit that long loops check between two steps."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self, step: str) -> None:
        if time.monotonic() > self.end:
            raise TimeoutError(
                f"the tenants benchmark timed out after {self.seconds:.0f} s "
                f"during {step}; pass a smaller --tenants or a larger "
                "--tenants-timeout"
            )


@dataclass
class DataSet:
    """Provisioned tenants of one backend, with a bearer token each."""

    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)
    provision_seconds: list[float] = field(default_factory=list)
    #: CPU seconds of this process per ``create_tenant`` call. Other programs
    #: on the machine change it less than the wall-clock time. It leaves out
    #: the PostgreSQL server's work.
    provision_cpu_seconds: list[float] = field(default_factory=list)
    setup_seconds: float = 0.0
    #: RSS of this process after provisioning, in MiB. The one ``Platform``
    #: that provisioned the tenants still caches every tenant's runtime then.
    provisioner_rss: float = 0.0

    @property
    def slugs(self) -> list[str]:
        return list(self.tokens)


def tenant_slug(number: int) -> str:
    return f"t{number:05d}"


def account_rows(count: int) -> list[dict[str, Any]]:
    return [
        {"name": f"Account {number:05d}", "industry": INDUSTRIES[number % 5]}
        for number in range(count)
    ]


def progress(message: str, *args: object) -> None:
    """Print one progress line to stderr at once, with or without -v."""
    print("tenants: " + message % args, file=sys.stderr, flush=True)


# Provisioning


def provision(
    settings: Settings, slugs: list[str], accounts: int, deadline: Deadline,
    label: str,
) -> DataSet:
    """Create the tenants, timing each ``create_tenant`` call alone, then give
    each the benchmark admin, a token and ``accounts`` accounts."""
    data = DataSet(settings)
    rows = account_rows(accounts)
    platform = Platform(settings)
    started = time.perf_counter()
    every = max(1, len(slugs) // 10)
    try:
        for number, slug in enumerate(slugs, start=1):
            deadline.check(f"provisioning {label}")
            before, cpu_before = time.perf_counter(), time.process_time()
            runtime = platform.create_tenant(slug, STANDARD_CRM)
            data.provision_seconds.append(time.perf_counter() - before)
            data.provision_cpu_seconds.append(time.process_time() - cpu_before)
            actor = bench_actor(platform, slug)
            data.tokens[slug] = platform.control.create_token(
                runtime.tenant, actor.user_id
            )
            result = platform.records(runtime, actor).import_batch("account", rows)
            if result.created != accounts or result.errors:
                raise RuntimeError(
                    f"import of {accounts} accounts into tenant {slug!r} created "
                    f"{result.created}, errors {result.errors!r}"
                )
            if number % every == 0 or number == len(slugs):
                progress("%s: %d/%d tenants, last create_tenant %.3f s, RSS %.0f "
                         "MiB, %.0f s elapsed", label, number, len(slugs),
                         data.provision_seconds[-1], _own_rss(),
                         time.perf_counter() - started)
        data.provisioner_rss = _own_rss()
    finally:
        platform.dispose()
    data.setup_seconds = time.perf_counter() - started
    return data


def _own_rss() -> float:
    rss: int = psutil.Process().memory_info().rss
    return rss / MEBIBYTE


def percentile(values: list[float], fraction: float) -> float:
    """Return the value below which ``fraction`` of ``values`` lie (nearest
    rank)."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[index]


def provision_result(backend: str, data: DataSet) -> Result:
    seconds, cpu = data.provision_seconds, data.provision_cpu_seconds
    count = len(seconds)
    tenth = max(1, count // 10)
    details = [
        f"create_tenant over {count:,} tenants: median {statistics.median(seconds):.3f}"
        f" s, p95 {percentile(seconds, 0.95):.3f} s, max {max(seconds):.3f} s",
        f"CPU time of the benchmark process per create_tenant: median "
        f"{statistics.median(cpu):.3f} s, p95 {percentile(cpu, 0.95):.3f} s, "
        f"max {max(cpu):.3f} s",
        f"median wall-clock time of the first {tenth} tenants "
        f"{statistics.median(seconds[:tenth]):.3f} s, of the last {tenth} "
        f"{statistics.median(seconds[-tenth:]):.3f} s",
        f"whole set-up with admin, token and accounts: {data.setup_seconds:.0f} s, "
        f"{data.setup_seconds / count:.3f} s per tenant",
        f"RSS of the provisioning process at the end: {data.provisioner_rss:.0f} "
        "MiB",
    ]
    return Result(
        name=f"provision one tenant, slowest of {count:,} ({backend})",
        unit="s",
        metacrm=max(seconds),
        baseline=None,
        target=TARGET_PROVISION_SECONDS,
        higher_is_better=False,
        details=details,
    )


# Servers and client


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to the server when the benchmark dies, so
    that a killed run (or the watchdog's exit) leaves no server behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Server:
    """``python -m crm_platform serve`` on one data set, in a subprocess."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, METACRM_SECRET_KEY=self.settings.secret_key)
        env.pop("METACRM_DATABASE_URL", None)
        if self.settings.database_url:
            env["METACRM_DATABASE_URL"] = self.settings.database_url
        argv = [sys.executable, "-m", "crm_platform", "serve", "--host",
                "127.0.0.1", "--port", str(self.port), "--data-dir",
                str(self.settings.data_dir)]
        with self.log_path.open("wb") as output:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        end = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < end:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port,
                                                        timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    connection.close()
                    return
            except OSError:
                time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(
            f"the server on 127.0.0.1:{self.port} did not return 200 for /healthz in "
            f"{SERVER_START_TIMEOUT_S} s; the end of {str(self.log_path)!r}:\n{tail}"
        )

    def rss_mebibytes(self) -> float:
        if self.process is None:
            raise RuntimeError("the server is not running; call start() first")
        rss: int = psutil.Process(self.process.pid).memory_info().rss
        return rss / MEBIBYTE

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("server pid %s ignored SIGTERM for %s s; killing it",
                        self.process.pid, SERVER_STOP_TIMEOUT_S)
            self.process.kill()
            self.process.wait(SERVER_STOP_TIMEOUT_S)


@contextlib.contextmanager
def running(settings: Settings, log_path: Path) -> Iterator[Server]:
    server = Server(settings, log_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


class ListClient:
    """Sends the list request over one keep-alive connection and times it."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port,
                                                     timeout=REQUEST_TIMEOUT_S)

    def get(self, slug: str, token: str, check: bool = False) -> float:
        """Send one list request; return its wall-clock seconds. With
        ``check``, also raise unless the page has ``PAGE_SIZE`` records."""
        path = f"/t/{slug}/api/v1/records/account?limit={PAGE_SIZE}"
        started = time.perf_counter()
        self.connection.request("GET", path,
                                headers={"Authorization": f"Bearer {token}"})
        response = self.connection.getresponse()
        body = response.read()
        seconds = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET {path} returned {response.status}, not 200: "
                               f"{body[:300]!r}")
        if check and len(json.loads(body)["data"]) != PAGE_SIZE:
            raise RuntimeError(f"GET {path} returned fewer than {PAGE_SIZE} records")
        return seconds

    def close(self) -> None:
        self.connection.close()


# Measurements


@dataclass
class ManyServerFacts:
    """Readings of the many-tenant server, taken before the latency rounds."""

    rss_one: float
    rss_active: float
    first_request: float
    cold_requests: list[float]
    #: USS of the PostgreSQL server's processes after one and after all
    #: active tenants; None on SQLite.
    postgres_one: float | None = None
    postgres_active: float | None = None


def warm_up_active(
    server: Server, client: ListClient, data: DataSet, active: list[str],
    deadline: Deadline,
) -> ManyServerFacts:
    """Serve one tenant, read the RSS, then serve each other active tenant
    once (its cold first request) and read the RSS again."""
    first = active[0]
    first_request = client.get(first, data.tokens[first], check=True)
    for _ in range(WARM_UP_REQUESTS):
        client.get(first, data.tokens[first])
    rss_one = server.rss_mebibytes()
    postgres_one = postgres_uss(data.settings)
    cold: list[float] = []
    for slug in active[1:]:
        deadline.check("the first requests to the active tenants")
        cold.append(client.get(slug, data.tokens[slug], check=True))
    return ManyServerFacts(rss_one, server.rss_mebibytes(), first_request, cold,
                           postgres_one, postgres_uss(data.settings))


def postgres_uss(settings: Settings) -> float | None:
    """Return the unique memory (USS) of all processes of the PostgreSQL
    server of ``settings`` in MiB, or None on SQLite.

    USS leaves out the shared buffers that every server process maps, so the
    sum is what the server's own processes hold privately.
    """
    if not settings.database_url:
        return None
    port = sa.make_url(settings.database_url).port
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
            if connection.pid is None:
                break
            postmaster = psutil.Process(connection.pid)
            processes = [postmaster, *postmaster.children()]
            total = sum(process.memory_full_info().uss for process in processes)
            return total / MEBIBYTE
    log.warning("found no process that listens on PostgreSQL's port %s", port)
    return None


Target = list[tuple[str, str]]


def _round(client: ListClient, targets: Target, requests: int) -> list[float]:
    return [
        client.get(*targets[number % len(targets)]) for number in range(requests)
    ]


def alternate(
    many: tuple[ListClient, Target], one: tuple[ListClient, Target],
    rounds: int, requests: int, deadline: Deadline, label: str,
) -> tuple[list[list[float]], list[list[float]]]:
    """Run ``rounds`` rounds of ``requests`` requests per side, alternating
    which side goes first; return each side's per-round request times."""
    many_rounds: list[list[float]] = []
    one_rounds: list[list[float]] = []
    for number in range(rounds):
        deadline.check(label)
        if number % 2 == 0:
            many_rounds.append(_round(*many, requests))
            one_rounds.append(_round(*one, requests))
        else:
            one_rounds.append(_round(*one, requests))
            many_rounds.append(_round(*many, requests))
    return many_rounds, one_rounds


def _milliseconds(rounds: list[list[float]]) -> float:
    return statistics.median(value for run in rounds for value in run) * 1000


def _spread(label: str, rounds: list[list[float]]) -> str:
    medians = sorted(statistics.median(run) * 1000 for run in rounds)
    everything = [value for run in rounds for value in run]
    return (
        f"{label}: {len(rounds)} rounds of {len(rounds[0])} requests; per-round "
        f"median ms min {medians[0]:.3f}, median {statistics.median(medians):.3f},"
        f" max {medians[-1]:.3f}; p95 of all {percentile(everything, 0.95) * 1000:.3f}"
    )


def latency_result(
    name: str, many: list[list[float]], one: list[list[float]],
    target: float | None,
) -> Result:
    return Result(
        name=name,
        unit="ms/request",
        metacrm=_milliseconds(many),
        baseline=_milliseconds(one),
        target=target,
        higher_is_better=False,
        details=[_spread("many tenants", many), _spread("one tenant", one)],
    )


def memory_result(
    backend: str, facts: ManyServerFacts, rss_single: float, active: int,
) -> Result:
    extra = max(1, active - 1)
    per_tenant = (facts.rss_active - facts.rss_one) / extra
    details = [
        f"RSS of the many-tenant server after 1 tenant: {facts.rss_one:.1f} MiB, "
        f"after {active}: {facts.rss_active:.1f} MiB",
        f"RSS of the one-tenant server after its tenant: {rss_single:.1f} MiB",
    ]
    if facts.postgres_one is not None and facts.postgres_active is not None:
        details.append(
            f"USS of all PostgreSQL processes after 1 tenant: "
            f"{facts.postgres_one:.1f} MiB, after {active}: "
            f"{facts.postgres_active:.1f} MiB (both app servers running)"
        )
    return Result(
        name=f"server RSS per active tenant, {active} tenants vs 1 ({backend})",
        unit="MiB/tenant",
        metacrm=per_tenant,
        baseline=None,
        target=None,
        higher_is_better=False,
        details=details,
    )


def cold_result(backend: str, facts: ManyServerFacts, warm_ms: float) -> Result:
    cold = facts.cold_requests
    details = [
        f"{len(cold)} cold tenants: median {statistics.median(cold) * 1000:.1f} ms, "
        f"p95 {percentile(cold, 0.95) * 1000:.1f} ms, max {max(cold) * 1000:.1f} ms",
        f"first request of the freshly started server: "
        f"{facts.first_request * 1000:.1f} ms",
    ]
    return Result(
        name=f"first list request to a cold tenant vs warm ({backend})",
        unit="ms/request",
        metacrm=statistics.median(cold) * 1000,
        baseline=warm_ms,
        target=None,
        higher_is_better=False,
        details=details,
    )


# One backend


@contextlib.contextmanager
def backend_settings(
    backend: str, work_dir: Path
) -> Iterator[tuple[Settings, Settings]]:
    """Yield the settings of the many-tenant and the one-tenant data set.

    On PostgreSQL both are databases of one throwaway server that this
    function starts and stops.
    """
    many_dir, one_dir = work_dir / "many", work_dir / "one"
    for path in (many_dir, one_dir):
        (path / "tenants").mkdir(parents=True)
    secret = os.urandom(24).hex()
    if backend == "sqlite":
        yield (Settings(data_dir=many_dir, secret_key=secret),
               Settings(data_dir=one_dir, secret_key=secret))
        return
    with throwaway_postgres() as server_url:
        many_url = _create_database(server_url, "metacrm_many")
        one_url = _create_database(server_url, "metacrm_one")
        yield (Settings(data_dir=many_dir, secret_key=secret, database_url=many_url),
               Settings(data_dir=one_dir, secret_key=secret, database_url=one_url))


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Run a PostgreSQL server on 127.0.0.1 as the tests do; yield its URL."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the tests package, for a run from elsewhere
    from tests.plugins.postgres import find_bindir, running_postgres

    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb and "
            "no initdb on PATH; run scripts/install-test-deps or pass "
            "--tenant-backend sqlite"
        )
    with running_postgres(bindir) as url:
        progress("started PostgreSQL from %s", bindir)
        yield url


def _create_database(server_url: str, name: str) -> str:
    admin = sa.create_engine(server_url, poolclass=sa.pool.NullPool,
                             isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    url = sa.make_url(server_url).set(database=name)
    return url.render_as_string(hide_password=False)


def run_backend(
    backend: str, sizes: TenantSizes, work_dir: Path, deadline: Deadline
) -> list[Result]:
    """Provision both data sets of ``backend``, serve them and measure."""
    with backend_settings(backend, work_dir) as (many_settings, one_settings):
        slugs = [tenant_slug(number) for number in range(1, sizes.tenants + 1)]
        many = provision(many_settings, slugs, sizes.accounts, deadline,
                         f"{backend} many")
        one = provision(one_settings, [ONE_SLUG], sizes.accounts, deadline,
                        f"{backend} one")
        results = [provision_result(backend, many)]
        results.extend(serve_and_measure(backend, sizes, many, one, work_dir,
                                         deadline))
    return results


def serve_and_measure(
    backend: str, sizes: TenantSizes, many: DataSet, one: DataSet,
    work_dir: Path, deadline: Deadline,
) -> list[Result]:
    active = many.slugs[: sizes.active]
    with running(many.settings, work_dir / "many-server.log") as many_server, \
            running(one.settings, work_dir / "one-server.log") as one_server:
        many_client = ListClient(many_server.port)
        one_client = ListClient(one_server.port)
        try:
            facts = warm_up_active(many_server, many_client, many, active, deadline)
            one_client.get(ONE_SLUG, one.tokens[ONE_SLUG], check=True)
            for _ in range(WARM_UP_REQUESTS):
                one_client.get(ONE_SLUG, one.tokens[ONE_SLUG])
            rss_single = one_server.rss_mebibytes()
            progress("%s: %d tenants active, RSS %.1f MiB; timing list requests",
                     backend, len(active), facts.rss_active)
            one_target = (one_client, [(ONE_SLUG, one.tokens[ONE_SLUG])])
            warm = alternate(
                (many_client, [(active[0], many.tokens[active[0]])]), one_target,
                sizes.rounds, sizes.requests, deadline, f"{backend} warm latency",
            )
            rotating = alternate(
                (many_client, [(slug, many.tokens[slug]) for slug in active]),
                one_target, sizes.rounds, sizes.requests, deadline,
                f"{backend} rotating latency",
            )
        finally:
            many_client.close()
            one_client.close()
    count = len(many.slugs)
    warm_result = latency_result(
        f"list of {PAGE_SIZE} accounts, warm tenant, {count:,} tenants vs 1 "
        f"({backend})", *warm, TARGET_RATIO)
    return [
        memory_result(backend, facts, rss_single, len(active)),
        warm_result,
        latency_result(
            f"list of {PAGE_SIZE} accounts, cycling over {len(active)} warm tenants "
            f"of {count:,} vs 1 ({backend})", *rotating, None),
        cold_result(backend, facts, warm_result.metacrm),
    ]


def _load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run(sizes: TenantSizes) -> list[Result]:
    """Run the benchmark on each backend of ``sizes``; return its rows."""
    if not 1 <= sizes.active <= sizes.tenants:
        raise ValueError(
            f"invalid active tenant count {sizes.active!r}: use 1 to --tenants "
            f"({sizes.tenants})"
        )
    results: list[Result] = []
    failed: list[str] = []
    for backend in sizes.backends:
        deadline = Deadline(sizes.timeout_s)
        work_dir = DATA_DIR / f"tenants-{backend}"
        shutil.rmtree(work_dir, ignore_errors=True)
        started = time.perf_counter()
        try:
            results.extend(run_backend(backend, sizes, work_dir, deadline))
        except Exception:
            log.exception("the tenants benchmark failed on %s", backend)
            failed.append(backend)
            continue
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        progress("%s done in %.0f s, load average %s", backend,
                 time.perf_counter() - started, _load_average())
    if failed:
        raise BackendsFailed(results, failed)
    return results
