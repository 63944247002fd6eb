"""Plans, per-seat subscriptions and the billing run, through the control
plane and the command line."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from crm_platform.billing import (
    SeatLimitReached,
    check_seat_available,
    create_plan,
    find_plan,
    get_subscription,
    list_seat_days,
    membership_transaction,
    run_billing,
    set_subscription,
)
from crm_platform.cli import main
from crm_platform.control import Actor
from crm_platform.errors import Forbidden, NotFound, PlatformError
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import STANDARD_CRM, make_member

pytestmark = pytest.mark.both_backends

PAID_UNTIL = dt.date(2026, 1, 31)
#: Seconds a thread of the lock test waits for the other at most.
LOCK_WAIT = 10


def subscribe(platform: Platform, seats: int, grace_days: int = 14) -> None:
    if find_plan(platform.control, "team") is None:
        create_plan(platform.control, "team", "Team", seats=5, features=["api"])
    set_subscription(platform.control, "acme", "team", PAID_UNTIL, seats, grace_days)


def add_users(platform: Platform, count: int) -> None:
    for index in range(count):
        make_member(platform, "acme", f"rep{index}@example.com", "sales_rep")


# Seats


def test_seat_limit_rejects_extra_member(platform: Platform, admin: Actor) -> None:
    subscribe(platform, seats=3)
    add_users(platform, 2)
    with pytest.raises(SeatLimitReached, match="seat limit reached: 3 of 3 seats"):
        make_member(platform, "acme", "extra@example.com", "sales_rep")
    tenant = platform.control.get_tenant("acme")
    extra = platform.control.find_user_id("extra@example.com")
    assert extra is not None
    assert platform.control.actor(tenant, extra) is None


def test_seat_limit_message_names_fix(platform: Platform, admin: Actor) -> None:
    subscribe(platform, seats=1)
    with pytest.raises(PlatformError, match="metacrm subscription set acme") as err:
        make_member(platform, "acme", "extra@example.com", "sales_rep")
    assert "metacrm user remove acme EMAIL" in err.value.message


def test_seat_limit_allows_role_change(platform: Platform, admin: Actor) -> None:
    subscribe(platform, seats=2)
    add_users(platform, 1)
    changed = make_member(platform, "acme", "rep0@example.com", "sales_manager")
    assert changed.role == "sales_manager"


def test_removed_member_frees_seat(platform: Platform, admin: Actor) -> None:
    subscribe(platform, seats=2)
    add_users(platform, 1)
    tenant = platform.control.get_tenant("acme")
    rep = platform.control.find_user_id("rep0@example.com")
    assert rep is not None
    platform.control.remove_member(tenant, rep)
    added = make_member(platform, "acme", "new@example.com", "sales_rep")
    assert added.role == "sales_rep"
    assert platform.control.actor(tenant, rep) is None


def test_seat_count_waits_for_writer(platform: Platform, admin: Actor) -> None:
    """A second seat count waits until the transaction holding the lock ends:
    BEGIN IMMEDIATE on SQLite, the subscription row on PostgreSQL."""
    subscribe(platform, seats=3)
    tenant = platform.control.get_tenant("acme")
    engine = platform.control.engine
    locked = threading.Event()
    release = threading.Event()
    finished: list[str] = []

    def hold() -> None:
        with membership_transaction(engine) as conn:
            check_seat_available(conn, tenant)
            locked.set()
            release.wait(LOCK_WAIT)
        finished.append("first")

    def count() -> None:
        locked.wait(LOCK_WAIT)
        with membership_transaction(engine) as conn:
            check_seat_available(conn, tenant)
        finished.append("second")

    threads = [threading.Thread(target=hold), threading.Thread(target=count)]
    for thread in threads:
        thread.start()
    assert locked.wait(LOCK_WAIT)
    time.sleep(0.5)
    waiting = list(finished)
    release.set()
    for thread in threads:
        thread.join(LOCK_WAIT)
    assert waiting == []
    assert finished == ["first", "second"]


def test_remove_member_revokes_tokens(platform: Platform, admin: Actor) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    tenant = platform.control.get_tenant("acme")
    token = platform.control.create_token(tenant, rep.user_id)
    platform.control.remove_member(tenant, rep.user_id)
    make_member(platform, "acme", "rep@example.com", "sales_rep")
    assert platform.control.member_for_token("acme", token) is None


def test_remove_non_member_is_not_found(platform: Platform, admin: Actor) -> None:
    tenant = platform.control.get_tenant("acme")
    with pytest.raises(NotFound, match="is not a member of tenant 'acme'"):
        platform.control.remove_member(tenant, "no-such-user")


def test_unsubscribed_tenant_is_unlimited(platform: Platform, admin: Actor) -> None:
    add_users(platform, 12)
    tenant = platform.control.get_tenant("acme")
    user_id = platform.control.find_user_id("rep11@example.com")
    assert user_id is not None
    assert platform.control.actor(tenant, user_id) is not None


# The billing run


def test_billing_run_records_once_per_day(platform: Platform, admin: Actor) -> None:
    subscribe(platform, seats=4)
    day = dt.date(2026, 1, 10)
    run_billing(platform.control, day)
    add_users(platform, 1)
    run_billing(platform.control, day)
    rows = list_seat_days(platform.control, "acme", day, day)
    assert len(rows) == 1
    assert rows[0].seats_used == 2
    assert rows[0].seats_paid == 4


def test_billing_run_skips_unsubscribed(platform: Platform, admin: Actor) -> None:
    results = run_billing(platform.control, dt.date(2026, 1, 10))
    assert results == []


def test_billing_run_keeps_grace_period(platform: Platform, admin: Actor) -> None:
    subscribe(platform, seats=2, grace_days=14)
    last_grace_day = PAID_UNTIL + dt.timedelta(days=14)
    [result] = run_billing(platform.control, last_grace_day)
    assert result.lapsed is False
    assert platform.control.get_tenant("acme").status == "active"


def test_lapse_makes_tenant_read_only(
    platform: Platform, records: RecordService
) -> None:
    subscribe(platform, seats=2, grace_days=14)
    [result] = run_billing(platform.control, PAID_UNTIL + dt.timedelta(days=15))
    assert result.lapsed is True
    assert get_subscription(platform.control, "acme").status == "lapsed"
    tenant = platform.control.get_tenant("acme")
    assert tenant.status == "read_only"
    records.runtime.tenant = tenant
    with pytest.raises(Forbidden, match="read-only"):
        records.create("account", {"name": "Blocked"})


def test_lapse_leaves_suspended_tenant(platform: Platform, admin: Actor) -> None:
    subscribe(platform, seats=2, grace_days=0)
    platform.control.set_status("acme", "suspended")
    run_billing(platform.control, PAID_UNTIL + dt.timedelta(days=1))
    assert platform.control.get_tenant("acme").status == "suspended"


def test_renewal_makes_tenant_active(
    platform: Platform, records: RecordService
) -> None:
    subscribe(platform, seats=2, grace_days=0)
    run_billing(platform.control, PAID_UNTIL + dt.timedelta(days=1))
    set_subscription(platform.control, "acme", "team", dt.date(2026, 3, 31), 2)
    assert get_subscription(platform.control, "acme").status == "active"
    tenant = platform.control.get_tenant("acme")
    assert tenant.status == "active"
    records.runtime.tenant = tenant
    assert records.create("account", {"name": "Renewed"})["name"] == "Renewed"


def test_renewal_keeps_operator_read_only(platform: Platform, admin: Actor) -> None:
    subscribe(platform, seats=2)
    platform.control.set_status("acme", "read_only")
    set_subscription(platform.control, "acme", "team", dt.date(2026, 3, 31), 2)
    assert platform.control.get_tenant("acme").status == "read_only"


# Plan and subscription errors


def test_unknown_plan_is_named(platform: Platform, crm: TenantRuntime) -> None:
    with pytest.raises(NotFound, match="plan 'gold' not found"):
        set_subscription(platform.control, "acme", "gold", PAID_UNTIL, 3)


def test_unknown_tenant_is_named(platform: Platform) -> None:
    create_plan(platform.control, "team", "Team", seats=5)
    with pytest.raises(NotFound, match="tenant 'nope' not found"):
        set_subscription(platform.control, "nope", "team", PAID_UNTIL, 3)


def test_duplicate_plan_is_rejected(platform: Platform) -> None:
    create_plan(platform.control, "team", "Team", seats=5)
    with pytest.raises(PlatformError, match="plan 'team' already exists"):
        create_plan(platform.control, "team", "Team again", seats=5)


def test_invalid_seat_counts_rejected(platform: Platform, crm: TenantRuntime) -> None:
    with pytest.raises(PlatformError, match="invalid seat count 0"):
        create_plan(platform.control, "team", "Team", seats=0)
    create_plan(platform.control, "team", "Team", seats=5)
    with pytest.raises(PlatformError, match="invalid seat count -1"):
        set_subscription(platform.control, "acme", "team", PAID_UNTIL, -1)


# The command line


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("METACRM_DATA_DIR", str(tmp_path / "data"))
    return CliRunner()


def run(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(main, list(args), input="")


def ok(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(main, list(args), input="", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def add_user(runner: CliRunner, email: str, role: str = "sales_rep") -> Result:
    return run(runner, "user", "create", "acme", email, "--role", role)


def setup_subscribed(runner: CliRunner, seats: str) -> None:
    ok(runner, "tenant", "create", "acme", "--template", str(STANDARD_CRM))
    ok(runner, "plan", "create", "team", "--name", "Team", "--seats", "5",
       "--record-quota", "1000", "--feature", "api", "--feature", "import")
    ok(runner, "subscription", "set", "acme", "team", "--seats", seats,
       "--until", "2026-01-31", "--grace-days", "3")


def test_cli_plan_list(runner: CliRunner) -> None:
    setup_subscribed(runner, "2")
    listed = ok(runner, "plan", "list")
    assert listed == "team\t5\t1000\tapi,import\tTeam\n"


def test_cli_seat_limit(runner: CliRunner) -> None:
    setup_subscribed(runner, "2")
    assert add_user(runner, "a@example.com", "admin").exit_code == 0
    assert add_user(runner, "b@example.com").exit_code == 0
    rejected = add_user(runner, "c@example.com")
    assert rejected.exit_code == 1
    assert "seat limit reached: 2 of 2 seats in use" in rejected.output
    assert add_user(runner, "b@example.com", "sales_manager").exit_code == 0
    ok(runner, "user", "remove", "acme", "b@example.com")
    assert add_user(runner, "c@example.com").exit_code == 0


def test_cli_subscription_show(runner: CliRunner) -> None:
    setup_subscribed(runner, "2")
    add_user(runner, "a@example.com", "admin")
    shown = ok(runner, "subscription", "show", "acme")
    assert "seats:       1 of 2 in use" in shown
    assert "grace:       3 days, until 2026-02-03" in shown


def test_cli_billing_lapse_and_renewal(runner: CliRunner) -> None:
    setup_subscribed(runner, "2")
    within = ok(runner, "billing", "run", "--date", "2026-02-03")
    assert "lapsed" not in within
    lapsed = ok(runner, "billing", "run", "--date", "2026-02-04")
    assert "acme\t0 of 2 seats\tlapsed, now read-only" in lapsed
    assert "acme\tread_only" in ok(runner, "tenant", "list")
    renewed = ok(runner, "subscription", "set", "acme", "team", "--seats", "2",
                 "--until", "2026-04-30")
    assert renewed.endswith("the tenant is active\n")


def test_cli_seat_days_totals(runner: CliRunner) -> None:
    setup_subscribed(runner, "2")
    add_user(runner, "a@example.com", "admin")
    for day in ("2026-01-01", "2026-01-02", "2026-01-02", "2026-01-03"):
        ok(runner, "billing", "run", "--date", day)
    printed = ok(runner, "billing", "seat-days", "acme", "--from", "2026-01-02",
                 "--to", "2026-01-03")
    assert printed.splitlines()[1:3] == ["2026-01-02\t1\t2", "2026-01-03\t1\t2"]
    assert "total: 4 paid seat-days, 2 used, over 2 recorded days" in printed


def test_cli_bad_date_is_named(runner: CliRunner) -> None:
    setup_subscribed(runner, "2")
    result = run(runner, "subscription", "set", "acme", "team", "--until",
                 "2026-02-30")
    assert result.exit_code == 1
    assert "invalid date '2026-02-30' for --until" in result.output


def test_cli_unknown_plan_is_named(runner: CliRunner) -> None:
    setup_subscribed(runner, "2")
    result = run(runner, "subscription", "set", "acme", "gold", "--until",
                 "2026-03-31")
    assert result.exit_code == 1
    assert "plan 'gold' not found" in result.output


def test_cli_unknown_tenant_is_named(runner: CliRunner) -> None:
    setup_subscribed(runner, "2")
    result = run(runner, "subscription", "show", "nope")
    assert result.exit_code == 1
    assert "tenant 'nope' not found" in result.output


def test_cli_show_without_subscription(runner: CliRunner) -> None:
    ok(runner, "tenant", "create", "acme", "--template", str(STANDARD_CRM))
    result = run(runner, "subscription", "show", "acme")
    assert result.exit_code == 1
    assert "tenant 'acme' has no subscription" in result.output


def test_cli_full_tenant_leaves_no_user(runner: CliRunner) -> None:
    setup_subscribed(runner, "1")
    assert add_user(runner, "a@example.com", "admin").exit_code == 0
    rejected = add_user(runner, "late@example.com")
    assert rejected.exit_code == 1
    assert "seat limit reached" in rejected.output
    from crm_platform.config import load_settings

    control_plane = Platform(load_settings()).control
    assert control_plane.find_user_id("late@example.com") is None
    control_plane.engine.dispose()
    ok(runner, "subscription", "set", "acme", "team", "--seats", "2",
       "--until", "2099-12-31")
    again = add_user(runner, "late@example.com")
    assert again.exit_code == 0, again.output
