"""The data set of the permissions benchmark: users, teams, shares and rows.

One tenant of ``benchmarks/definitions/permissions`` with 50 users in 8
teams (two users in none), 1,000 accounts, ``rows`` opportunities owned
evenly by the 50 users, and 400 manual shares of opportunities. The
benchmark user is user 0, a member of team ``west`` with 5 team mates, so
that 12 % of the rows are owned by them or a team mate. About 3 % of the
rows are in stage ``closed_won`` and about 2 % have an amount of at least
490,000.00, the conditions of the two sharing rules in the definition.
Rows are made in chunks, so memory stays bounded whatever ``rows`` is.
"""

from __future__ import annotations

import datetime as dt
import decimal
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from uuid_utils import uuid7

from crm_platform.access import SHARES, TEAM_MEMBERS, TEAMS
from crm_platform.tenancy import TenantRuntime

from .common import ROOT, log

DEFINITION = ROOT / "benchmarks" / "definitions" / "permissions"
#: Change this when the generated data changes, so that cached files are rebuilt.
GENERATOR_VERSION = 1
SEED = 11
USER_COUNT = 50
ACCOUNT_COUNT = 1000
SHARE_COUNT = 400
INSERT_CHUNK = 20_000
#: Team names and sizes; users are dealt out in this order, user 0 first, and
#: the last two users belong to no team.
TEAM_SIZES = (("west", 6), ("east", 6), ("north", 6), ("south", 6),
              ("central", 6), ("enterprise", 6), ("partners", 6), ("support", 6))
#: Stage weights in percent: closed_won is rare, as the first rule needs.
STAGE_WEIGHTS = {
    "prospecting": 30,
    "qualification": 25,
    "proposal": 20,
    "negotiation": 12,
    "closed_won": 3,
    "closed_lost": 10,
}
PROBABILITY_BY_STAGE = {
    "prospecting": 10, "qualification": 25, "proposal": 50, "negotiation": 75,
    "closed_won": 100, "closed_lost": 0,
}
#: Amounts in cents, uniform: 2 % of them are at least 490,000.00.
AMOUNT_CENTS = (1_000_00, 500_000_00)


@dataclass(frozen=True)
class People:
    """The tenant's users and teams; ``users[0]`` is the benchmark user."""

    users: tuple[str, ...]
    team_ids: dict[str, str]
    members: dict[str, tuple[str, ...]]


def make_people(bench_user_id: str) -> People:
    """Return 50 users (the benchmark user first) dealt out into the teams."""
    users = (bench_user_id, *(str(uuid7()) for _ in range(USER_COUNT - 1)))
    team_ids = {name: str(uuid7()) for name, _ in TEAM_SIZES}
    members: dict[str, tuple[str, ...]] = {}
    start = 0
    for name, size in TEAM_SIZES:
        members[name] = users[start:start + size]
        start += size
    return People(users, team_ids, members)


def generate(runtime: TenantRuntime, people: People, rows: int) -> None:
    """Insert the teams, accounts, ``rows`` opportunities and the shares.

    The opportunity indexes are dropped during the load and built after it,
    which is several times faster than updating them row by row.
    """
    randomizer = random.Random(SEED)
    opportunities = runtime.tables["opportunity"]
    started = time.perf_counter()
    with runtime.engine.begin() as conn:
        _insert_teams(conn, people)
        account_ids = _insert_accounts(conn, runtime, people, randomizer)
        for index in opportunities.indexes:
            index.drop(conn)
    shared_numbers = set(randomizer.sample(range(rows), SHARE_COUNT))
    shared_ids: list[str] = []
    for start in range(0, rows, INSERT_CHUNK):
        count = min(INSERT_CHUNK, rows - start)
        chunk = list(_opportunity_rows(randomizer, people, account_ids, start,
                                       count, rows))
        shared_ids.extend(row["id"] for number, row in enumerate(chunk, start)
                          if number in shared_numbers)
        with runtime.engine.begin() as conn:
            conn.execute(opportunities.insert(), chunk)
        if (start + count) % (10 * INSERT_CHUNK) == 0 or start + count == rows:
            log.info("inserted %s of %s opportunities in %.0f s",
                     f"{start + count:,}", f"{rows:,}", time.perf_counter() - started)
    with runtime.engine.begin() as conn:
        for index in opportunities.indexes:
            index.create(conn)
        conn.execute(SHARES.insert(), _share_rows(randomizer, people, shared_ids))
    log.info("generated the permissions data set in %.0f s",
             time.perf_counter() - started)


def _insert_teams(conn: sa.Connection, people: People) -> None:
    conn.execute(TEAMS.insert(), [
        {"id": team_id, "name": name, "label": name.title()}
        for name, team_id in people.team_ids.items()
    ])
    conn.execute(TEAM_MEMBERS.insert(), [
        {"team_id": people.team_ids[name], "user_id": user_id}
        for name, users in people.members.items()
        for user_id in users
    ])


def _insert_accounts(
    conn: sa.Connection,
    runtime: TenantRuntime,
    people: People,
    randomizer: random.Random,
) -> list[str]:
    now = dt.datetime.now(dt.UTC)
    account_ids = [str(uuid7()) for _ in range(ACCOUNT_COUNT)]
    rows = []
    for number, account_id in enumerate(account_ids, start=1):
        owner = randomizer.choice(people.users)
        rows.append({
            "id": account_id, "created_at": now, "updated_at": now,
            "created_by": owner, "updated_by": owner, "owner_id": owner,
            "version": 1, "name": f"Account {number}",
            "account_number": f"ACC-{number:06d}",
        })
    conn.execute(runtime.tables["account"].insert(), rows)
    return account_ids


def _opportunity_rows(
    randomizer: random.Random,
    people: People,
    account_ids: list[str],
    start: int,
    count: int,
    rows: int,
) -> Iterator[dict[str, Any]]:
    # Creation times one minute apart and ending now, so that ids and
    # created_at grow together as they do in real use.
    end = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stages = list(STAGE_WEIGHTS)
    weights = list(STAGE_WEIGHTS.values())
    for number in range(start, start + count):
        stage = randomizer.choices(stages, weights)[0]
        owner = randomizer.choice(people.users)
        created = end - dt.timedelta(minutes=rows - number)
        yield {
            "id": str(uuid7()),
            "created_at": created,
            "updated_at": created,
            "created_by": owner,
            "updated_by": owner,
            "owner_id": owner,
            "version": 1,
            "name": f"Opportunity {number + 1}",
            "account": randomizer.choice(account_ids),
            "contact": None,
            "stage": stage,
            "probability": decimal.Decimal(PROBABILITY_BY_STAGE[stage]),
            "amount": decimal.Decimal(randomizer.randrange(*AMOUNT_CENTS)) / 100,
            "close_date": dt.date(2025, 1, 1) + dt.timedelta(
                days=randomizer.randrange(730)),
            "next_step": randomizer.choice(("Call back", "Send proposal", None)),
            "campaign": None,
            "description": None,
        }


def _share_rows(
    randomizer: random.Random, people: People, record_ids: list[str]
) -> list[dict[str, Any]]:
    """Share each record once: a quarter with the benchmark user, a quarter
    with team west, the rest with other users and teams; one in five at
    edit level."""
    now = dt.datetime.now(dt.UTC)
    owner = people.users[1]
    other_teams = [team_id for name, team_id in people.team_ids.items()
                   if name != "west"]
    shares = []
    for number, record_id in enumerate(record_ids):
        user_id: str | None = None
        team_id: str | None = None
        kind = number % 4
        if kind == 0:
            user_id = people.users[0]
        elif kind == 1:
            team_id = people.team_ids["west"]
        elif kind == 2:
            user_id = randomizer.choice(people.users[1:])
        else:
            team_id = randomizer.choice(other_teams)
        shares.append({
            "id": str(uuid7()), "entity": "opportunity", "record_id": record_id,
            "user_id": user_id, "team_id": team_id,
            "access": "edit" if number % 5 == 0 else "read",
            "created_at": now, "created_by": owner,
        })
    return shares
