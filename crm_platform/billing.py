"""Per-seat plans and subscriptions of tenants, kept in the control plane.

A tenant with a subscription may have at most as many members as it pays
seats for. A tenant without one has no limit. The daily billing run records
each subscribed tenant's seats in use and seats paid (seat-days, the unit an
invoice counts), and makes the tenant read-only once its paid period and
grace days are over. The run never suspends or deletes a tenant.

A plan also names the features it includes (``FEATURES``), which
``require_feature`` checks, and may set a record quota, which
``RecordService`` checks. A tenant without a subscription has every feature
and no quota.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from .control import (
    ControlPlane,
    Tenant,
    memberships,
    plans,
    seat_days,
    subscriptions,
    tenants,
)
from .errors import LimitReached, NotFound, PlatformError

log = logging.getLogger(__name__)

PLAN_CODE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
DEFAULT_GRACE_DAYS = 14
#: The features a plan can include, with the words messages use for them. A
#: tenant without a subscription has every feature.
FEATURES: dict[str, str] = {
    "api": "the REST API with tokens",
    "import": "CSV import",
    "export": "CSV and JSON export",
    "audit_log": "audit log search",
}


@dataclass(frozen=True)
class Plan:
    code: str
    name: str
    seats: int
    record_quota: int | None
    features: tuple[str, ...]


@dataclass(frozen=True)
class Subscription:
    tenant_slug: str
    plan_code: str
    seats: int
    period_end: dt.date
    grace_days: int
    status: str
    seats_used: int

    @property
    def lapses_after(self) -> dt.date:
        """The last day of the grace period. A billing run on any later day
        marks the subscription lapsed."""
        return self.period_end + dt.timedelta(days=self.grace_days)


@dataclass(frozen=True)
class SeatDay:
    day: dt.date
    seats_used: int
    seats_paid: int


@dataclass(frozen=True)
class BillingResult:
    """The outcome of the billing run for one subscribed tenant."""

    tenant_slug: str
    seats_used: int
    seats_paid: int
    lapsed: bool


class SeatLimitReached(PlatformError):
    """Raised when a new member would need more seats than a tenant pays for."""

    status = 409
    code = "seat_limit_reached"


def parse_day(text: str, option: str) -> dt.date:
    """Return the date in ``text`` (YYYY-MM-DD) given for ``option``."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError as err:
        raise PlatformError(
            f"invalid date {text!r} for {option}: use YYYY-MM-DD, e.g. 2026-12-31"
        ) from err


def count_members(conn: sa.Connection, tenant_id: str) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(memberships)
        .where(memberships.c.tenant_id == tenant_id)
    )
    return int(conn.execute(query).scalar_one())


@contextlib.contextmanager
def membership_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """Open a transaction that counts members and then changes them.

    On SQLite it starts with ``BEGIN IMMEDIATE``, which takes the database's
    write lock before the first read. A second such transaction waits until
    the first has committed (at most the busy timeout of
    ``crm_platform.sqlite``), and then counts the members that the first one
    added. On PostgreSQL the callers lock a row instead (see
    ``check_seat_available``).
    """
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # The pysqlite driver has not begun a transaction yet: it only
            # does so before the first INSERT, UPDATE or DELETE.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def check_seat_available(conn: sa.Connection, tenant: Tenant) -> None:
    """Raise ``SeatLimitReached`` if ``tenant`` has a subscription and every
    paid seat is in use.

    Runs inside the ``membership_transaction`` that adds the member. On
    PostgreSQL it locks the tenant's subscription row (``FOR UPDATE``) until
    that transaction ends, so two members added at the same moment are
    counted one after the other and never exceed the paid seats together.
    """
    seats = conn.execute(
        sa.select(subscriptions.c.seats)
        .where(subscriptions.c.tenant_id == tenant.id)
        .with_for_update()
    ).scalar()
    if seats is None:
        return
    used = count_members(conn, tenant.id)
    if used < seats:
        return
    raise SeatLimitReached(
        f"seat limit reached: {used} of {seats} seats in use; remove a member "
        "or buy more seats (on the command line: "
        f"'metacrm user remove {tenant.slug} EMAIL' or 'metacrm subscription set "
        f"{tenant.slug} PLAN --seats N --until YYYY-MM-DD')",
        details={"seats_used": used, "seats_paid": seats},
    )


# Plan features


def check_feature_names(names: Sequence[str]) -> None:
    """Raise ``PlatformError`` naming the first of ``names`` that is not in
    ``FEATURES``."""
    for name in names:
        if name not in FEATURES:
            raise PlatformError(
                f"unknown plan feature {name!r}: use one or more of "
                + ", ".join(FEATURES)
            )


def has_feature(tenant: Tenant, name: str) -> bool:
    """Return whether ``tenant``'s plan includes the feature ``name``. A
    tenant without a subscription has every feature."""
    check_feature_names([name])
    return tenant.features is None or name in tenant.features


def require_feature(tenant: Tenant, name: str) -> None:
    """Raise ``LimitReached`` if ``tenant``'s plan does not include the
    feature ``name`` (one of ``FEATURES``)."""
    if has_feature(tenant, name):
        return
    plan = tenant.plan or "?"
    raise LimitReached(
        f"the plan {plan!r} of tenant {tenant.slug!r} does not include "
        f"{FEATURES[name]} (feature {name!r}); ask the service operator to move "
        f"the tenant to a plan that includes it with 'metacrm subscription set "
        f"{tenant.slug} PLAN --until YYYY-MM-DD'",
        details={"feature": name, "plan": plan},
    )


# Plans


def create_plan(
    control: ControlPlane,
    code: str,
    name: str,
    seats: int,
    record_quota: int | None = None,
    features: Sequence[str] = (),
) -> Plan:
    if not PLAN_CODE_PATTERN.match(code):
        raise PlatformError(
            f"invalid plan code {code!r}: use 1-40 lower-case letters, digits "
            "and hyphens, starting with a letter"
        )
    if seats < 1:
        raise PlatformError(f"invalid seat count {seats!r}: use 1 or more")
    if record_quota is not None and record_quota < 0:
        raise PlatformError(f"invalid record quota {record_quota!r}: use 0 or more")
    check_feature_names(features)
    if find_plan(control, code) is not None:
        raise PlatformError(f"plan {code!r} already exists")
    with control.engine.begin() as conn:
        conn.execute(
            plans.insert().values(
                code=code,
                name=name,
                seats=seats,
                record_quota=record_quota,
                features=list(dict.fromkeys(features)),
            )
        )
    log.info("created plan %s with %s seats", code, seats)
    return get_plan(control, code)


def _plan_from(row: sa.RowMapping) -> Plan:
    return Plan(
        code=row["code"],
        name=row["name"],
        seats=row["seats"],
        record_quota=row["record_quota"],
        features=tuple(row["features"] or ()),
    )


def find_plan(control: ControlPlane, code: str) -> Plan | None:
    with control.engine.connect() as conn:
        row = (
            conn.execute(sa.select(plans).where(plans.c.code == code))
            .mappings()
            .first()
        )
    return None if row is None else _plan_from(row)


def get_plan(control: ControlPlane, code: str) -> Plan:
    plan = find_plan(control, code)
    if plan is None:
        raise NotFound(
            f"plan {code!r} not found; list plans with 'metacrm plan list' or "
            f"create it with 'metacrm plan create {code} --name NAME --seats N'"
        )
    return plan


def list_plans(control: ControlPlane) -> list[Plan]:
    with control.engine.connect() as conn:
        rows = conn.execute(sa.select(plans).order_by(plans.c.code)).mappings()
        return [_plan_from(row) for row in rows]


# Subscriptions


def set_subscription(
    control: ControlPlane,
    slug: str,
    plan_code: str,
    period_end: dt.date,
    seats: int | None = None,
    grace_days: int = DEFAULT_GRACE_DAYS,
) -> Subscription:
    """Create or renew the subscription of tenant ``slug``.

    ``seats`` defaults to the plan's seats. The subscription becomes active,
    and a tenant that a lapse made read-only becomes active again. A tenant
    read-only or suspended for another reason keeps its status.
    """
    tenant = control.get_tenant(slug)
    plan = get_plan(control, plan_code)
    paid = plan.seats if seats is None else seats
    if paid < 1:
        raise PlatformError(f"invalid seat count {paid!r}: use 1 or more")
    if grace_days < 0:
        raise PlatformError(f"invalid grace days {grace_days!r}: use 0 or more")
    if tenant.status == "purged":
        raise PlatformError(
            f"tenant {slug!r} is purged, so it cannot be subscribed; create a "
            "new tenant instead"
        )
    values = {
        "plan_code": plan.code,
        "seats": paid,
        "period_end": period_end,
        "grace_days": grace_days,
        "status": "active",
    }
    with control.engine.begin() as conn:
        previous = conn.execute(
            sa.select(subscriptions.c.status).where(
                subscriptions.c.tenant_id == tenant.id
            )
        ).scalar()
        if previous is None:
            conn.execute(subscriptions.insert().values(tenant_id=tenant.id, **values))
        else:
            conn.execute(
                subscriptions.update()
                .where(subscriptions.c.tenant_id == tenant.id)
                .values(**values)
            )
        used = count_members(conn, tenant.id)
    log.info(
        "set subscription of tenant %s: plan %s, %s seats until %s",
        slug,
        plan.code,
        paid,
        period_end.isoformat(),
    )
    if used > paid:
        log.warning(
            "tenant %s has %s members but pays for %s seats; no member can be "
            "added until members are removed or seats added",
            slug,
            used,
            paid,
        )
    if previous == "lapsed" and tenant.status == "read_only":
        control.set_status(slug, "active")
    return get_subscription(control, slug)


def find_subscription(control: ControlPlane, slug: str) -> Subscription | None:
    tenant = control.get_tenant(slug)
    with control.engine.connect() as conn:
        row = (
            conn.execute(
                sa.select(subscriptions).where(subscriptions.c.tenant_id == tenant.id)
            )
            .mappings()
            .first()
        )
        used = count_members(conn, tenant.id)
    if row is None:
        return None
    return Subscription(
        tenant_slug=slug,
        plan_code=row["plan_code"],
        seats=row["seats"],
        period_end=row["period_end"],
        grace_days=row["grace_days"],
        status=row["status"],
        seats_used=used,
    )


def get_subscription(control: ControlPlane, slug: str) -> Subscription:
    subscription = find_subscription(control, slug)
    if subscription is None:
        raise NotFound(
            f"tenant {slug!r} has no subscription; create one with "
            f"'metacrm subscription set {slug} PLAN --seats N --until YYYY-MM-DD'"
        )
    return subscription


# The billing run


def run_billing(control: ControlPlane, day: dt.date) -> list[BillingResult]:
    """Record ``day``'s seat-days of every subscribed tenant and lapse the
    subscriptions whose grace period ended before ``day``.

    Running it again for the same day replaces that day's rows with the
    current counts, so each tenant keeps one row per day.
    """
    tenant_status = tenants.c.status.label("tenant_status")
    query = (
        sa.select(subscriptions, tenants.c.slug, tenant_status)
        .join(tenants, tenants.c.id == subscriptions.c.tenant_id)
        .where(tenants.c.status != "purged")
    )
    with control.engine.connect() as conn:
        rows = conn.execute(query.order_by(tenants.c.slug)).mappings().all()
    results = []
    for row in rows:
        used = _record_seat_day(control, row["tenant_id"], day, row["seats"])
        grace_end = row["period_end"] + dt.timedelta(days=row["grace_days"])
        lapsing = row["status"] == "active" and day > grace_end
        if lapsing:
            _lapse(
                control, row["slug"], row["tenant_id"], row["tenant_status"], grace_end
            )
        results.append(
            BillingResult(
                tenant_slug=row["slug"],
                seats_used=used,
                seats_paid=row["seats"],
                lapsed=lapsing,
            )
        )
    return results


def _record_seat_day(
    control: ControlPlane, tenant_id: str, day: dt.date, seats_paid: int
) -> int:
    """Store the tenant's seat counts of ``day`` and return the seats used."""
    key = sa.and_(seat_days.c.tenant_id == tenant_id, seat_days.c.day == day)
    with control.engine.begin() as conn:
        used = count_members(conn, tenant_id)
        conn.execute(seat_days.delete().where(key))
        conn.execute(
            seat_days.insert().values(
                tenant_id=tenant_id, day=day, seats_used=used, seats_paid=seats_paid
            )
        )
    return used


def _lapse(
    control: ControlPlane,
    slug: str,
    tenant_id: str,
    tenant_status: str,
    grace_end: dt.date,
) -> None:
    with control.engine.begin() as conn:
        conn.execute(
            subscriptions.update()
            .where(subscriptions.c.tenant_id == tenant_id)
            .values(status="lapsed")
        )
    log.warning(
        "subscription of tenant %s lapsed: its grace period ended on %s; renew "
        "it with 'metacrm subscription set'",
        slug,
        grace_end.isoformat(),
    )
    # A suspended tenant stays suspended: read-only would let members back in.
    if tenant_status == "active":
        control.set_status(slug, "read_only")


def list_seat_days(
    control: ControlPlane, slug: str, first: dt.date, last: dt.date
) -> list[SeatDay]:
    """Return the seat-days of tenant ``slug`` from ``first`` to ``last``,
    both included, oldest first."""
    if last < first:
        raise PlatformError(
            f"invalid period {first.isoformat()!r} to {last.isoformat()!r}: "
            "the end is before the start"
        )
    tenant = control.get_tenant(slug)
    query = (
        sa.select(seat_days)
        .where(
            seat_days.c.tenant_id == tenant.id,
            seat_days.c.day >= first,
            seat_days.c.day <= last,
        )
        .order_by(seat_days.c.day)
    )
    with control.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        SeatDay(
            day=row["day"], seats_used=row["seats_used"], seats_paid=row["seats_paid"]
        )
        for row in rows
    ]
