"""``metacrm worker`` and ``metacrm webhook``: the background worker and a
tenant's webhook endpoints and delivery log, from the command line.

Importing this module adds the commands to ``crm_platform.cli.main``.
"""

from __future__ import annotations

import datetime as dt
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from . import webhook_http, webhooks, worker
from .cli import data_dir_option, main, open_platform, run_safely
from .tenancy import Platform, TenantRuntime


def _print_summary(summary: worker.RunSummary) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    click.echo(f"{stamp} {summary.describe()}")


@main.command("worker")
@click.option("--once", is_flag=True, help="Run once over every tenant and exit.")
@click.option(
    "--interval", type=click.FloatRange(worker.MIN_INTERVAL, worker.MAX_INTERVAL),
    default=10.0, show_default=True, metavar="S",
    help="Seconds between runs.",
)
@data_dir_option
def worker_command(once: bool, interval: float, data_dir: Path | None) -> None:
    """Run time-triggered automations and send due webhooks for every tenant,
    printing one line of counts per run. SIGTERM or Ctrl-C stops it after the
    request in flight; unsent webhooks stay queued."""
    _, platform = open_platform(data_dir)
    if once:
        summary = worker.run_once(platform)
        _print_summary(summary)
        if summary.errors:
            sys.exit(1)
        return
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        click.echo(f"received {signal.Signals(signum).name}: stopping after "
                   "the request in flight", err=True)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop)
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.run_forever(platform, interval, stop, on_tick=_print_summary)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        platform.dispose()


@main.group()
def webhook() -> None:
    """Manage a tenant's webhook endpoints and read its delivery log."""


def _tenant(data_dir: Path | None, slug: str) -> tuple[Platform, TenantRuntime]:
    _, platform = open_platform(data_dir)
    runtime = run_safely(lambda: platform.runtime(slug))
    return platform, runtime


@webhook.command("add")
@click.argument("slug")
@click.argument("name")
@click.argument("url")
@data_dir_option
def webhook_add(slug: str, name: str, url: str, data_dir: Path | None) -> None:
    """Register endpoint NAME of tenant SLUG at URL and print its signing
    secret, which is shown only this once."""
    platform, runtime = _tenant(data_dir, slug)
    allowed = webhook_http.parse_networks(platform.settings.webhook_allowed_networks)
    endpoint, secret = run_safely(lambda: webhooks.add_endpoint(
        runtime.engine, platform.key_ring, name, url, allowed))
    click.echo(f"added webhook endpoint {endpoint.name} -> {endpoint.url}")
    click.echo(f"secret (shown only now): {secret}")


@webhook.command("list")
@click.argument("slug")
@data_dir_option
def webhook_list(slug: str, data_dir: Path | None) -> None:
    """List the endpoints of tenant SLUG: name, status, URL, creation time."""
    _, runtime = _tenant(data_dir, slug)
    for endpoint in run_safely(lambda: webhooks.list_endpoints(runtime.engine)):
        status = "active" if endpoint.active else "inactive"
        click.echo(f"{endpoint.name}\t{status}\t{endpoint.url}\t"
                   f"{webhooks.utc_text(endpoint.created_at)}")


@webhook.command("remove")
@click.argument("slug")
@click.argument("name")
@data_dir_option
def webhook_remove(slug: str, name: str, data_dir: Path | None) -> None:
    """Remove endpoint NAME; its pending deliveries are marked failed."""
    _, runtime = _tenant(data_dir, slug)
    abandoned = run_safely(lambda: webhooks.remove_endpoint(runtime.engine, name))
    click.echo(f"removed webhook endpoint {name} ({abandoned} pending deliveries "
               "marked failed)")


@webhook.command("rotate")
@click.argument("slug")
@click.argument("name")
@data_dir_option
def webhook_rotate(slug: str, name: str, data_dir: Path | None) -> None:
    """Give endpoint NAME a new secret and print it once."""
    platform, runtime = _tenant(data_dir, slug)
    secret = run_safely(lambda: webhooks.rotate_secret(
        runtime.engine, platform.key_ring, name))
    click.echo(f"new secret of webhook endpoint {name} (shown only now): {secret}")


def _set_active(slug: str, name: str, active: bool, data_dir: Path | None) -> None:
    _, runtime = _tenant(data_dir, slug)
    run_safely(lambda: webhooks.set_active(runtime.engine, name, active))
    click.echo(f"webhook endpoint {name} is {'active' if active else 'inactive'}")


@webhook.command("activate")
@click.argument("slug")
@click.argument("name")
@data_dir_option
def webhook_activate(slug: str, name: str, data_dir: Path | None) -> None:
    """Send deliveries to endpoint NAME again, starting with those queued."""
    _set_active(slug, name, True, data_dir)


@webhook.command("deactivate")
@click.argument("slug")
@click.argument("name")
@data_dir_option
def webhook_deactivate(slug: str, name: str, data_dir: Path | None) -> None:
    """Hold deliveries to endpoint NAME in the outbox; new events for it are
    not queued."""
    _set_active(slug, name, False, data_dir)


@webhook.command("deliveries")
@click.argument("slug")
@click.option("--failed", "failed_only", is_flag=True,
              help="Only attempts that did not deliver (retried, failed, skipped).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50,
              show_default=True, help="Most recent log rows to print.")
@data_dir_option
def webhook_deliveries(slug: str, failed_only: bool, limit: int,
                       data_dir: Path | None) -> None:
    """Print the delivery log of tenant SLUG, newest first: time, delivery id,
    endpoint, event, attempt, status, HTTP status, milliseconds, error."""
    _, runtime = _tenant(data_dir, slug)
    attempts = run_safely(
        lambda: webhooks.list_attempts(runtime.engine, failed_only, limit))
    for item in attempts:
        fields = [webhooks.utc_text(item.at), item.outbox_id or "-", item.endpoint,
                  item.event, item.attempt, item.status, item.status_code,
                  item.duration_ms, item.error]
        click.echo("\t".join("-" if value is None else str(value)
                             for value in fields))


@webhook.command("retry")
@click.argument("slug")
@click.argument("delivery_id")
@data_dir_option
def webhook_retry(slug: str, delivery_id: str, data_dir: Path | None) -> None:
    """Queue failed delivery DELIVERY_ID again with a fresh count of attempts."""
    _, runtime = _tenant(data_dir, slug)
    run_safely(lambda: webhooks.retry_delivery(runtime.engine, delivery_id))
    click.echo(f"queued webhook delivery {delivery_id} again")
