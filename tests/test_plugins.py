"""Checks that the PostgreSQL and Chromium fixtures and serve_wsgi really work."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import textwrap
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import flask
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.plugins import skip_or_fail
from tests.plugins.browser import find_chromium, screenshot_path, serve_wsgi
from tests.plugins.postgres import URL_ENV, find_bindir, running_postgres

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO_ROOT = Path(__file__).resolve().parent.parent
HEADING = "客户 Customers"


def make_heading_app() -> flask.Flask:
    app = flask.Flask(__name__)

    @app.get("/")
    def index() -> str:
        # No <meta charset>: the page must decode from Flask's Content-Type.
        return f"<!doctype html><title>check</title><h1>{HEADING}</h1>"

    return app


def port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        client.settimeout(2)
        return client.connect_ex(("127.0.0.1", port)) == 0


def peer_closed(client: socket.socket) -> bool:
    """Return whether the server closed ``client``, by FIN or by reset."""
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        # The reset comes when the listening socket closed before accepting.
        return True
    except TimeoutError:
        return False


def run_nested_pytest(
    directory: Path, source: str, plugin: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run the test module ``source`` in a separate pytest with ``plugin``."""
    (directory / "pytest.ini").write_text("[pytest]\n")
    suite = directory / "test_nested.py"
    suite.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", plugin, "-rs", str(suite)],
        cwd=directory,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture
def engine(postgres_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def base_url() -> Iterator[str]:
    with serve_wsgi(make_heading_app()) as url:
        yield url


def test_postgres_select_version(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        version = conn.execute(sa.text("select version()")).scalar_one()
    assert version.startswith("PostgreSQL ")


def test_postgres_table_in_fresh_schema(engine: sa.Engine) -> None:
    schema = f"plugin_check_{uuid.uuid4().hex[:12]}"
    metadata = sa.MetaData(schema=schema)
    notes = sa.Table(
        "notes",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    try:
        with engine.begin() as conn:
            conn.execute(sa.schema.CreateSchema(schema))
            metadata.create_all(conn)
            conn.execute(notes.insert(), [{"id": 1, "body": HEADING}])
        with engine.connect() as conn:
            body = conn.execute(sa.select(notes.c.body)).scalar_one()
            tables = sa.inspect(conn).get_table_names(schema=schema)
        assert body == HEADING
        assert tables == ["notes"]

        with engine.begin() as conn:
            metadata.drop_all(conn)
            conn.execute(sa.schema.DropSchema(schema))
        with engine.connect() as conn:
            schemas = sa.inspect(conn).get_schema_names()
        assert schema not in schemas
    finally:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))


def test_postgres_database_is_utf8(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        encoding = conn.execute(sa.text("show server_encoding")).scalar_one()
    assert encoding == "UTF8"


def test_postgres_listens_on_loopback(postgres_url: str, engine: sa.Engine) -> None:
    if os.environ.get(URL_ENV):
        pytest.skip(f"{URL_ENV} names a server that this plugin did not start")
    with engine.connect() as conn:
        listen = conn.execute(sa.text("show listen_addresses")).scalar_one()
    assert listen == "127.0.0.1"
    assert make_url(postgres_url).database == "metacrm_test"


def test_postgres_stops_after_error() -> None:
    bindir = find_bindir()
    if bindir is None:
        skip_or_fail("PostgreSQL is not installed; run scripts/install-test-deps")
    port = 0
    with (
        pytest.raises(RuntimeError, match="body failed"),
        running_postgres(bindir) as url,
    ):
        port = make_url(url).port or 0
        assert port_accepts(port)
        raise RuntimeError("body failed")
    assert not port_accepts(port)


def test_serve_wsgi_serves_flask(base_url: str) -> None:
    with urllib.request.urlopen(base_url + "/", timeout=10) as response:  # noqa: S310
        status = response.status
        content_type = response.headers["Content-Type"]
        body = response.read().decode("utf-8")
    assert status == 200
    assert content_type == "text/html; charset=utf-8"
    assert f"<h1>{HEADING}</h1>" in body


def test_serve_wsgi_closes_port() -> None:
    with serve_wsgi(make_heading_app()) as url:
        port = urllib.parse.urlsplit(url).port or 0
        # A served keep-alive connection must not keep the server running.
        keep_alive = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        keep_alive.request("GET", "/")
        keep_alive.getresponse().read()
    try:
        assert keep_alive.sock is not None
        assert peer_closed(keep_alive.sock)
        assert not port_accepts(port)
    finally:
        keep_alive.close()


def test_page_reads_chinese_heading(page: Page, base_url: str) -> None:
    page.goto(base_url + "/")
    assert page.locator("h1").inner_text() == HEADING
    assert page.evaluate("document.characterSet") == "UTF-8"


@pytest.mark.browser
def test_page_screenshot_on_failure(tmp_path: Path) -> None:
    find_chromium()
    source = """
        def test_fails(page):
            page.set_content("<h1>shown</h1>")
            assert page.inner_text("h1") == "expected"

        def test_passes(page):
            page.set_content("<h1>shown</h1>")
        """
    result = run_nested_pytest(tmp_path, source, "tests.plugins.browser", {})
    failed_shot = screenshot_path(tmp_path, "test_nested.py::test_fails")
    passed_shot = screenshot_path(tmp_path, "test_nested.py::test_passes")
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert failed_shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not passed_shot.exists()


@pytest.mark.parametrize(
    ("ci", "outcome"), [("", "1 skipped"), ("false", "1 skipped"), ("true", "1 failed")]
)
def test_skip_or_fail_obeys_ci(tmp_path: Path, ci: str, outcome: str) -> None:
    source = """
        from tests.plugins import skip_or_fail

        def test_needs_tool():
            skip_or_fail("tool is not installed")
        """
    result = run_nested_pytest(tmp_path, source, "tests.plugins", {"CI": ci})
    assert outcome in result.stdout, result.stdout + result.stderr
    assert "tool is not installed" in result.stdout


def test_postgres_url_from_environment(tmp_path: Path) -> None:
    configured = "postgresql+psycopg://someone@127.0.0.1:1/elsewhere"
    source = f"""
        def test_url(postgres_url):
            assert postgres_url == {configured!r}
        """
    result = run_nested_pytest(
        tmp_path, source, "tests.plugins.postgres", {URL_ENV: configured}
    )
    assert "1 passed" in result.stdout, result.stdout + result.stderr
