"""Request ids, structured logs and Prometheus metrics for operators.

Every request gets an id (the client's ``X-Request-ID`` when it is a short
token, else a new one), returned in the response header and attached, with
the tenant slug, to every log line written while the request runs. Record
values and credentials are never logged here: only method, path template,
status and timing.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, has_request_context, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(tenant)s] %(message)s"
)
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(tenant)s"


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` and ``tenant`` to every record, ``-`` outside a
    request, so that one format string serves requests, CLI and workers."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            record.request_id = g.get("request_id", "-")
            record.tenant = _tenant_slug()
        else:
            record.request_id = "-"
            record.tenant = "-"
        return True


def _tenant_slug() -> str:
    # The API blueprint moves the slug from the URL values into g.
    slug = g.get("tenant_slug") or (request.view_args or {}).get("tenant")
    return str(slug) if slug else "-"


def configure_logging(level: int = logging.INFO, json_lines: bool = False) -> None:
    """Send the process's logs to stderr, as text or one JSON object a line.

    Called by the CLI, never by library code, which only creates loggers.
    """
    handler = logging.StreamHandler()
    handler.addFilter(RequestContextFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter(JSON_FIELDS))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class Metrics:
    """The app's Prometheus counters, in a registry of its own so that two
    apps in one process (as in tests) do not share or clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "metacrm_http_requests",
            "HTTP requests served, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "metacrm_http_request_duration_seconds",
            "Time to serve a request, by route.",
            ["route"],
            registry=self.registry,
        )

    def render(self) -> Response:
        return Response(
            generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST
        )


def init_app(app: Flask) -> None:
    """Install request ids, request metrics and the ``/metrics`` endpoint."""
    metrics = Metrics()
    app.extensions["metacrm_metrics"] = metrics

    @app.before_request
    def start_request() -> None:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        if _CLIENT_REQUEST_ID.match(offered):
            g.request_id = offered
        else:
            g.request_id = uuid.uuid4().hex
        g.request_started = time.perf_counter()

    @app.after_request
    def finish_request(response: Response) -> Response:
        response.headers.setdefault(REQUEST_ID_HEADER, g.get("request_id", ""))
        # The rule, not the URL, labels the metric: URLs carry tenant slugs and
        # record ids, which would make one time series per record.
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("request_started")
        if started is not None:
            metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    app.add_url_rule("/metrics", "metrics", metrics.render)
