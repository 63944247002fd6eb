"""The background worker: time-triggered automations and webhook delivery.

``run_once`` visits every tenant that has metadata and is active or
read-only. For an active tenant it first runs
``crm_platform.automation.run_time_triggers`` (when that module exists), and
for both it sends the tenant's due webhooks. Suspended and closed tenants are
skipped, and their queued webhooks wait. The queue is the tenants' own
``_webhook_outbox`` tables, so the worker needs no other server, and several
workers may run at once (see ``crm_platform.webhooks.claim_next``).

``run_forever`` repeats ``run_once`` until its stop event is set, which
``metacrm worker`` does on SIGTERM and SIGINT: the request in flight
finishes and the rows not yet sent stay pending for the next run.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import webhook_http, webhooks
from .control import Tenant
from .tenancy import Platform, TenantRuntime

log = logging.getLogger(__name__)

#: Tenant statuses whose webhooks the worker sends. Read-only tenants keep
#: sending what they queued while active, but run no automations.
DELIVERING_STATUSES = ("active", "read_only")
#: Deliveries sent per tenant per run, so that one busy tenant cannot hold
#: up the others for long.
DELIVERIES_PER_TENANT = 100
MIN_INTERVAL = 0.1
MAX_INTERVAL = 3600.0


@dataclass
class RunSummary:
    """Counts of one ``run_once`` call, summed over the tenants."""

    tenants: int = 0
    triggered: int = 0
    webhooks: webhooks.DeliveryCounts = field(default_factory=webhooks.DeliveryCounts)
    #: Slugs of tenants whose run raised an error (logged with its trace).
    errors: list[str] = field(default_factory=list)
    #: "tenant rule record-id" of each time rule that failed on a record
    #: (logged, and tried again on the next run).
    rule_failures: list[str] = field(default_factory=list)

    def describe(self) -> str:
        counts = self.webhooks
        return (
            f"{self.tenants} tenants, {self.triggered} time triggers, "
            f"{len(self.rule_failures)} failed, webhooks: "
            f"{counts.delivered} delivered, {counts.retried} to retry, "
            f"{counts.failed} failed, {len(self.errors)} tenant errors"
        )


TimeTriggers = Callable[..., Any]


def _time_triggers() -> TimeTriggers | None:
    """Return ``crm_platform.automation.run_time_triggers``, or None when
    this installation has no automation module."""
    try:
        module = importlib.import_module("crm_platform.automation")
    except ModuleNotFoundError as err:
        if err.name != "crm_platform.automation":
            raise
        log.debug("crm_platform.automation is not installed: no time triggers")
        return None
    function: TimeTriggers | None = getattr(module, "run_time_triggers", None)
    return function


def run_once(
    platform: Platform,
    now: dt.datetime | None = None,
    stop_event: threading.Event | None = None,
    policy: webhook_http.DeliveryPolicy | None = None,
) -> RunSummary:
    """Run time triggers and deliver due webhooks for every tenant once.

    ``now`` (default: the clock, read per tenant and per delivery) decides
    what is due. An error in one tenant is logged and counted, and the other
    tenants run.
    """
    summary = RunSummary()
    run_time_triggers = _time_triggers()
    for tenant in platform.control.list_tenants():
        if stop_event is not None and stop_event.is_set():
            break
        if tenant.status not in DELIVERING_STATUSES or tenant.metadata_hash is None:
            continue
        summary.tenants += 1
        try:
            _run_tenant(platform, tenant, now, summary, run_time_triggers,
                        stop_event, policy)
        except Exception:
            # One tenant's failure (a broken database file, a bad key) must
            # not stop the others' deliveries.
            log.exception("worker run failed for tenant %s", tenant.slug)
            summary.errors.append(tenant.slug)
    return summary


def _run_tenant(
    platform: Platform, tenant: Tenant, now: dt.datetime | None,
    summary: RunSummary,
    run_time_triggers: TimeTriggers | None, stop_event: threading.Event | None,
    policy: webhook_http.DeliveryPolicy | None,
) -> None:
    runtime: TenantRuntime = platform.runtime_for(tenant)
    if run_time_triggers is not None and tenant.status == "active":
        failures: list[str] = []
        try:
            fired = run_time_triggers(platform, runtime,
                                      now or dt.datetime.now(dt.UTC),
                                      failures=failures)
        except Exception:
            # Failing automations must not hold up webhooks queued earlier.
            log.exception("time triggers failed for tenant %s", tenant.slug)
            summary.errors.append(tenant.slug)
        else:
            summary.triggered += fired if isinstance(fired, int) else 0
        summary.rule_failures += [f"{tenant.slug} {item}" for item in failures]
    counts = webhooks.deliver_due(
        runtime, platform.settings, now, DELIVERIES_PER_TENANT,
        ring=platform.key_ring, policy=policy,
        should_stop=stop_event.is_set if stop_event is not None else None,
    )
    summary.webhooks.add(counts)


def run_forever(
    platform: Platform,
    interval: float,
    stop_event: threading.Event,
    on_tick: Callable[[RunSummary], None] | None = None,
    max_ticks: int | None = None,
) -> int:
    """Call ``run_once`` every ``interval`` seconds until ``stop_event`` is
    set (or ``max_ticks`` runs are done) and return the number of runs.

    ``on_tick`` receives each ``RunSummary``. The wait between runs ends as
    soon as the event is set.
    """
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ValueError(
            f"invalid worker interval {interval!r}: use {MIN_INTERVAL:g} to "
            f"{MAX_INTERVAL:g} seconds"
        )
    log.info("worker started, running every %g s", interval)
    ticks = 0
    while not stop_event.is_set():
        summary = run_once(platform, stop_event=stop_event)
        ticks += 1
        if on_tick is not None:
            on_tick(summary)
        if max_ticks is not None and ticks >= max_ticks:
            break
        stop_event.wait(interval)
    log.info("worker stopped after %d runs", ticks)
    return ticks
