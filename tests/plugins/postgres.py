"""Session fixture ``postgres_url``: a throwaway PostgreSQL server on loopback.

The server runs from the Debian binaries under ``/usr/lib/postgresql/*/bin``
(or ``initdb`` on ``PATH``), keeps its data and Unix socket in a fresh
temporary directory, listens on 127.0.0.1 only, on a free port, and trusts
every connection from there. PostgreSQL refuses to run as root, so when the
tests run as root the server runs as the ``postgres`` OS user.

Set ``METACRM_TEST_DATABASE_URL`` to a SQLAlchemy URL to use an existing
server instead. The tests then get that URL unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins import skip_or_fail

logger = logging.getLogger("tests.plugins.postgres")

URL_ENV = "METACRM_TEST_DATABASE_URL"
DATABASE_NAME = "metacrm_test"
SUPERUSER = "postgres"
#: OS account that owns the data directory when the tests run as root.
SERVER_OS_USER = "postgres"
#: Seconds that initdb, createdb and each pg_ctl call may take.
COMMAND_TIMEOUT = 120
#: Another process can take the free port between the probe and the start.
START_ATTEMPTS = 3
#: Durability settings that a throwaway server does not need.
SPEED_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
#: Exit codes of ``pg_ctl status``: 3 means no server runs, 4 no data directory.
PG_CTL_NOT_RUNNING = (3, 4)


class PostgresStartError(RuntimeError):
    """The throwaway PostgreSQL server could not be set up, started or stopped."""


def find_bindir() -> Path | None:
    """Return the newest directory that has both ``initdb`` and ``pg_ctl``.

    Debian installs each major version under ``/usr/lib/postgresql/N/bin``.
    Elsewhere the directory of ``initdb`` on ``PATH`` is used.
    """
    debian_dirs = [
        path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
    ]
    debian_dirs.sort(key=_major_version, reverse=True)
    on_path = shutil.which("initdb")
    candidates = debian_dirs + ([Path(on_path).parent] if on_path else [])
    for bindir in candidates:
        if os.access(bindir / "pg_ctl", os.X_OK):
            return bindir
    return None


def _major_version(bindir: Path) -> int:
    name = bindir.parent.name
    return int(name) if name.isdigit() else -1


def _as_server_user(argv: list[str]) -> list[str]:
    """Wrap ``argv`` so that it runs as the server's OS user when we are root."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", SERVER_OS_USER, "--", *argv]
    return ["su", SERVER_OS_USER, "-s", "/bin/sh", "-c", shlex.join(argv)]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise PostgresStartError(
            f"{shlex.join(argv)!r} timed out after {COMMAND_TIMEOUT} s; "
            "check that the machine is not overloaded and the command runs by hand"
        ) from err


def _check(result: subprocess.CompletedProcess[str], step: str) -> None:
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise PostgresStartError(
            f"{step} failed with exit code {result.returncode}: "
            f"{shlex.join(result.args)!r}\n{output}"
        )


def _make_workdir() -> Path:
    """Create the temporary directory, owned by the server's OS user."""
    if os.geteuid() != 0:
        return Path(tempfile.mkdtemp(prefix="metacrm-pg-"))
    try:
        account = pwd.getpwnam(SERVER_OS_USER)
    except KeyError as err:
        raise PostgresStartError(
            f"the tests run as root, but there is no OS user {SERVER_OS_USER!r} "
            "to run PostgreSQL as; install the postgresql package, which creates "
            "it, or run the tests as an ordinary user"
        ) from err
    # The server's OS user must be able to enter every parent directory, and
    # root's TMPDIR may not allow that, so the directory goes in /tmp.
    workdir = Path(tempfile.mkdtemp(prefix="metacrm-pg-", dir="/tmp"))
    os.chown(workdir, account.pw_uid, account.pw_gid)
    return workdir


def _initdb(bindir: Path, workdir: Path) -> None:
    argv = [
        str(bindir / "initdb"),
        "--pgdata", str(workdir / "data"),
        "--username", SUPERUSER,
        "--auth", "trust",
        "--encoding", "UTF8",
        "--locale", "C.UTF-8",
        "--no-sync",
    ]  # fmt: skip
    _check(_run(_as_server_user(argv), workdir), "initdb")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_options(port: int, workdir: Path) -> str:
    settings = [
        "listen_addresses=127.0.0.1",
        f"port={port}",
        f"unix_socket_directories={workdir}",
        *SPEED_SETTINGS,
    ]
    return " ".join(f"-c {setting}" for setting in settings)


def _pg_ctl(bindir: Path, workdir: Path, *args: str) -> list[str]:
    argv = [str(bindir / "pg_ctl"), "--pgdata", str(workdir / "data"), *args]
    return _as_server_user(argv)


def _log_tail(workdir: Path, lines: int = 20) -> str:
    try:
        text = (workdir / "server.log").read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


def _try_start(bindir: Path, workdir: Path, port: int) -> bool:
    """Start the server on ``port``; return False if that port was taken."""
    log_path = workdir / "server.log"
    log_path.unlink(missing_ok=True)
    argv = _pg_ctl(
        bindir,
        workdir,
        "--log", str(log_path),
        "--options", _server_options(port, workdir),
        "--wait", "--timeout", str(COMMAND_TIMEOUT),
        "start",
    )  # fmt: skip
    result = _run(argv, workdir)
    if result.returncode == 0:
        return True
    log = _log_tail(workdir)
    if "could not bind" in log:
        return False
    raise PostgresStartError(
        f"pg_ctl start failed with exit code {result.returncode} on port {port}; "
        f"the end of the server log:\n{log}"
    )


def _start_server(bindir: Path, workdir: Path) -> int:
    """Start the server on a free port and return that port."""
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        if _try_start(bindir, workdir, port):
            return port
        logger.warning("port %s was taken before PostgreSQL bound it; retrying", port)
    raise PostgresStartError(
        f"pg_ctl start failed {START_ATTEMPTS} times because another process took "
        f"the free port first each time; the end of the last server log:\n"
        f"{_log_tail(workdir)}"
    )


def _stop_server(bindir: Path, workdir: Path) -> None:
    """Stop the server if it runs, first with the fast mode, then immediate."""
    status = _run(_pg_ctl(bindir, workdir, "status"), workdir)
    if status.returncode in PG_CTL_NOT_RUNNING:
        return
    result = _run(_pg_ctl(bindir, workdir, "--mode", "fast", "--wait", "stop"), workdir)
    if result.returncode == 0:
        logger.info("stopped PostgreSQL, data in %s", workdir)
        return
    logger.error(
        "pg_ctl stop --mode fast failed with exit code %s, trying immediate: %s",
        result.returncode,
        (result.stdout + result.stderr).strip(),
    )
    _run(_pg_ctl(bindir, workdir, "--mode", "immediate", "--wait", "stop"), workdir)


def _create_database(bindir: Path, port: int, workdir: Path) -> None:
    argv = [
        str(bindir / "createdb"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--username", SUPERUSER,
        DATABASE_NAME,
    ]  # fmt: skip
    _check(_run(argv, workdir), f"createdb {DATABASE_NAME}")


@contextlib.contextmanager
def running_postgres(bindir: Path) -> Iterator[str]:
    """Run a throwaway server from ``bindir`` and yield a SQLAlchemy URL to it.

    The URL names the psycopg 3 driver and the database ``metacrm_test``. On
    exit the server stops with ``pg_ctl stop --mode fast`` and its directory
    is removed, also when the body raised. A killed test process (SIGKILL, or
    SIGTERM without a handler) leaves the server running.
    """
    workdir = _make_workdir()
    try:
        _initdb(bindir, workdir)
        try:
            port = _start_server(bindir, workdir)
            logger.info(
                "started PostgreSQL from %s on 127.0.0.1:%s, data in %s",
                bindir,
                port,
                workdir,
            )
            _create_database(bindir, port, workdir)
            yield f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/{DATABASE_NAME}"
        finally:
            # Also after a failed start, because a timed-out start can leave
            # a server running.
            _stop_server(bindir, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a PostgreSQL database that the test session may change.

    The database is empty at the start of the session and shared by every test
    in it, so a test that creates tables should create them in a schema of its
    own and drop that schema at the end.
    """
    configured = os.environ.get(URL_ENV, "").strip()
    if configured:
        yield configured
        return
    bindir = find_bindir()
    if bindir is None:
        skip_or_fail(
            "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb "
            "and no initdb on PATH; run scripts/install-test-deps or set "
            f"{URL_ENV} to the URL of a server"
        )
    with running_postgres(bindir) as url:
        yield url
