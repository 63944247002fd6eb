"""Headless Chromium for page tests, and a WSGI server for it to load pages from.

Fixtures:

- ``browser`` (session): Debian's Chromium, ``/usr/bin/chromium`` or the path
  in ``METACRM_CHROMIUM``, driven through Playwright's sync API. The Python
  ``playwright`` package only drives it: no browser is downloaded.
- ``page`` (function): a page in a fresh browser context, so cookies and
  storage never leak between tests. When the test fails, a full-page
  screenshot goes to ``test-results/<test id>.png`` under the pytest root.

``serve_wsgi(app)`` serves any WSGI application on 127.0.0.1 for a ``with``
block. Tests that use ``page`` or ``browser`` get the ``browser`` marker, so
``-m "not browser"`` deselects them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import waitress

from tests.plugins import skip_or_fail

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication
    from playwright.sync_api import Browser, Page, ViewportSize

logger = logging.getLogger("tests.plugins.browser")

CHROMIUM_ENV = "METACRM_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
#: --no-sandbox because CI runs as root, and Chromium refuses to start as root
#: with its sandbox on. The rest keep Chromium from contacting Google's
#: services (CI has no internet access) and from using a GPU.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
#: Milliseconds that a Playwright action or navigation may take in a test.
PAGE_TIMEOUT_MS = 15_000
SCREENSHOT_DIR = "test-results"
#: Seconds that serve_wsgi waits for the server thread to end.
SERVER_SHUTDOWN_TIMEOUT = 10.0

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_BROWSER_FIXTURES = frozenset({"browser", "page"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives Debian's Chromium through Playwright"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _BROWSER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so ``page`` can see a failure."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def find_chromium() -> Path:
    """Return the Chromium executable, or skip (fail under CI) without one."""
    configured = os.environ.get(CHROMIUM_ENV, "").strip()
    path = Path(configured or DEFAULT_CHROMIUM)
    if os.access(path, os.X_OK):
        return path
    if configured:
        skip_or_fail(
            f"{CHROMIUM_ENV}={configured!r} is not an executable file; "
            "point it at a Chromium binary or unset it"
        )
    skip_or_fail(
        f"Chromium is not installed at {DEFAULT_CHROMIUM}; run "
        f"scripts/install-test-deps or set {CHROMIUM_ENV} to a Chromium binary"
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Chromium shared by the whole test session."""
    executable = find_chromium()
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        skip_or_fail(
            "the Python package playwright is not installed; "
            "run scripts/install-test-deps"
        )
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(
                executable_path=str(executable),
                headless=True,
                args=list(CHROMIUM_ARGS),
            )
        except Error as err:
            raise RuntimeError(
                f"Chromium {str(executable)!r} failed to start; run it by hand "
                f"with --headless {' '.join(CHROMIUM_ARGS)} to see why: {err}"
            ) from err
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a browser context of its own, closed after the test."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        new_page = context.new_page()
        yield new_page
        if _test_failed(request.node):
            _save_screenshot(new_page, request)
    finally:
        context.close()


def _test_failed(item: pytest.Item) -> bool:
    call_report = item.stash.get(_REPORTS, {}).get("call")
    return call_report is not None and call_report.failed


def screenshot_path(rootpath: Path, nodeid: str) -> Path:
    """Return where the screenshot of the failed test ``nodeid`` is saved."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:200]
    return rootpath / SCREENSHOT_DIR / f"{name}.png"


def _save_screenshot(failed_page: Page, request: pytest.FixtureRequest) -> None:
    from playwright.sync_api import Error

    path = screenshot_path(request.config.rootpath, request.node.nodeid)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        failed_page.screenshot(path=str(path), full_page=True)
    except Error as err:
        logger.warning("no screenshot of failed test %s: %s", request.node.nodeid, err)
        return
    request.node.user_properties.append(("screenshot", str(path)))
    logger.warning(
        "saved screenshot of failed test %s to %s", request.node.nodeid, path
    )


@contextlib.contextmanager
def serve_wsgi(app: WSGIApplication) -> Iterator[str]:
    """Serve ``app`` with waitress on a free port of 127.0.0.1; yield its base URL.

    The server runs in a daemon thread. On exit it closes its listening
    socket and every open connection, and its worker threads end.
    """
    socket_map: dict[int, Any] = {}
    server = waitress.create_server(app, map=socket_map, host="127.0.0.1", port=0)
    port = server.effective_port
    thread = threading.Thread(
        target=server.run, name=f"waitress-127.0.0.1:{port}", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop_server(server, socket_map, thread)


def _stop_server(
    server: Any, socket_map: dict[int, Any], thread: threading.Thread
) -> None:
    def close_everything() -> None:
        # Runs in the server thread, so no socket closes under a running select.
        server.close()
        for channel in list(socket_map.values()):
            channel.close()
        socket_map.clear()

    if thread.is_alive():
        server.trigger.pull_trigger(close_everything)
        thread.join(SERVER_SHUTDOWN_TIMEOUT)
    else:
        close_everything()
    server.task_dispatcher.shutdown()
    if thread.is_alive():
        logger.warning(
            "waitress thread %s still runs %s s after shutdown",
            thread.name,
            SERVER_SHUTDOWN_TIMEOUT,
        )
