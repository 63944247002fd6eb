"""Property test: record permissions agree with a per-record oracle.

Hypothesis generates roles, permission sets and sharing rules for one
entity, then teams, acyclic reporting lines, manual shares and records.
For a random member, the ids that ``RecordService`` lists, counts and gets
must be exactly the ones ``permission_helpers.Oracle`` permits record by
record, and each update and delete must succeed exactly when the oracle
permits it. The oracle never calls ``crm_platform.access``.

Every example reuses one SQLite tenant: the example's definition is
applied to it (the entity table never changes) and the records and
service tables are cleared first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crm_platform.config import Settings
from crm_platform.control import Actor
from crm_platform.errors import Forbidden, NotFound
from crm_platform.querying import ListQuery
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from metadata_engine.loader import compile_documents
from tests.definitions.builders import documents, entity, field, write_folder
from tests.permission_helpers import (
    Oracle,
    People,
    Policy,
    Share,
    clear_people,
    ids_of,
    store_people,
)

STAGES = ("a", "b", "c")
SCOPE_NAMES = ("own", "team", "subordinates", "all")
LEVEL_NAMES = ("hidden", "read_only", "editable")
#: Fields a grant may name. ``name`` is never named, so updates can use it.
GUARDED = ("stage", "amount", "note")
TEAM_NAMES = ("t0", "t1")
MAX_USERS = 6
MAX_RECORDS = 30
#: Timestamp of every generated record, which only needs to be valid.
STAMP = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def deal_documents() -> dict[str, Any]:
    options = [{"value": value, "label": value.upper()} for value in STAGES]
    return documents(
        entity(
            "deal",
            field("stage", "picklist", options=options),
            field("amount", "integer"),
            field("note"),
        )
    )


# Strategies

#: Scopes as metadata writes them, narrow ones drawn most often, since the
#: wide ones ("all", true) make every record readable.
scopes_values = st.one_of(
    st.sampled_from(("own", "team", "subordinates")),
    st.sampled_from(("own", "team", "subordinates")),
    st.lists(st.sampled_from(SCOPE_NAMES), min_size=1, max_size=3, unique=True),
    st.booleans(),
    st.just("all"),
)


@st.composite
def grants(draw: st.DrawFn, key: str) -> dict[str, Any]:
    """Draw the grant of entity ``key``. A "*" grant names no fields,
    because the metadata checks reject that."""
    grant: dict[str, Any] = {}
    # Read is always drawn, so that most examples have records to compare.
    grant["read"] = draw(scopes_values)
    for right in ("edit", "delete"):
        if draw(st.booleans()):
            grant[right] = draw(scopes_values)
    for right in ("create", "export", "import", "change_owner"):
        if draw(st.booleans()):
            grant[right] = draw(st.booleans())
    if key != "*":
        grant["fields"] = draw(
            st.dictionaries(st.sampled_from(GUARDED), st.sampled_from(LEVEL_NAMES))
        )
    return grant


@st.composite
def grantee(draw: st.DrawFn, name: str) -> dict[str, Any]:
    keys = draw(
        st.lists(st.sampled_from(("deal", "*")), unique=True, min_size=1, max_size=2)
    )
    return {
        "name": name,
        "label": name.upper(),
        "entities": {key: draw(grants(key)) for key in keys},
    }


conditions = st.one_of(
    st.builds(
        lambda op, value: {"field": "stage", "op": op, "value": value},
        st.sampled_from(("eq", "ne")),
        st.sampled_from(STAGES),
    ),
    st.builds(
        lambda values: {"field": "stage", "op": "in", "value": values},
        st.lists(st.sampled_from(STAGES), min_size=1, max_size=3, unique=True),
    ),
    st.builds(
        lambda op, value: {"field": "amount", "op": op, "value": value},
        st.sampled_from(("eq", "ne", "lt", "gte")),
        st.integers(-3, 3),
    ),
    st.builds(
        lambda name, value: {"field": name, "op": "isnull", "value": value},
        st.sampled_from(("stage", "amount")),
        st.booleans(),
    ),
)


@st.composite
def sharing_rule(draw: st.DrawFn, name: str, roles: list[str]) -> dict[str, Any]:
    audience_roles = draw(st.lists(st.sampled_from(roles), unique=True, max_size=2))
    audience_teams = draw(
        st.lists(st.sampled_from(TEAM_NAMES), unique=True, max_size=2)
    )
    if not audience_roles and not audience_teams:
        # The metadata checks reject a rule without a role or a team.
        audience_teams = [draw(st.sampled_from(TEAM_NAMES))]
    return {
        "name": name,
        "label": name.upper(),
        "entity": "deal",
        "where": draw(st.lists(conditions, min_size=1, max_size=2)),
        "access": draw(st.sampled_from(("read", "edit"))),
        "roles": audience_roles,
        "teams": audience_teams,
    }


@dataclass
class Example:
    """One generated tenant: metadata documents, people and records."""

    documents: dict[str, Any]
    people: People
    records: list[dict[str, Any]]
    actor: str


@st.composite
def examples(draw: st.DrawFn) -> Example:
    docs = deal_documents()
    roles = [f"r{i}" for i in range(draw(st.integers(1, 3)))]
    sets = [f"p{i}" for i in range(draw(st.integers(1, 2)))]
    for name in roles:
        docs[f"roles/{name}.json"] = draw(grantee(name))
    for name in sets:
        docs[f"permission_sets/{name}.json"] = draw(grantee(name))
    for index in range(draw(st.integers(0, 3))):
        docs[f"sharing_rules/s{index}.json"] = draw(sharing_rule(f"s{index}", roles))

    users = [f"u{i}" for i in range(draw(st.integers(1, MAX_USERS)))]
    # Admins hold every right, so they are drawn rarely.
    role_choices = st.sampled_from([*roles, *roles, *roles, "admin"])
    people = People(roles={user: draw(role_choices) for user in users})
    for user in users:
        chosen = draw(st.lists(st.sampled_from(sets), unique=True, max_size=1))
        if chosen:
            people.permission_sets[user] = tuple(chosen)
    for team in TEAM_NAMES:
        members = draw(st.sets(st.sampled_from(users)))
        if members:
            people.teams[team] = members
    # A manager always has a lower index, so the lines cannot form a cycle.
    for index, user in enumerate(users[1:], start=1):
        manager = draw(st.none() | st.sampled_from(users[:index]))
        if manager is not None:
            people.managers[user] = manager

    owners = [*users, "outsider"]
    records = [
        {
            "id": f"rec-{index:02d}",
            "name": f"deal {index}",
            "owner_id": draw(st.sampled_from(owners)),
            "stage": draw(st.none() | st.sampled_from(STAGES)),
            "amount": draw(st.none() | st.integers(-3, 3)),
            "note": None,
        }
        for index in range(draw(st.integers(3, MAX_RECORDS)))
    ]
    record_ids = [str(record["id"]) for record in records]
    for _ in range(draw(st.integers(0, 6))):
        record_id = draw(st.sampled_from(record_ids))
        level = draw(st.sampled_from(("read", "edit")))
        if draw(st.booleans()) and people.teams:
            team = draw(st.sampled_from(sorted(people.teams)))
            people.shares.append(Share("deal", record_id, level, team=team))
        else:
            user = draw(st.sampled_from(users))
            people.shares.append(Share("deal", record_id, level, user=user))
    return Example(docs, people, records, draw(st.sampled_from(users)))


# The tenant shared by all examples


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[tuple[Platform, str]]:
    data_dir = tmp_path / "data"
    (data_dir / "tenants").mkdir(parents=True)
    platform = Platform(Settings(data_dir=data_dir, secret_key="property-test-key"))
    folder = write_folder(tmp_path / "deal_crm", deal_documents())
    platform.create_tenant("prop", folder)
    yield platform, "prop"
    platform.dispose()


def load_example(platform: Platform, slug: str, example: Example) -> TenantRuntime:
    """Apply the example's definition and replace the tenant's data."""
    runtime = platform.apply(slug, compile_documents(example.documents))
    table = runtime.tables["deal"]
    with runtime.engine.begin() as conn:
        conn.execute(table.delete())
        clear_people(conn)
        store_people(conn, example.people)
        for record in example.records:
            conn.execute(
                table.insert().values(
                    **record,
                    created_at=STAMP,
                    updated_at=STAMP,
                    created_by=record["owner_id"],
                    updated_by=record["owner_id"],
                    version=1,
                )
            )
    return runtime


def actor_for(runtime: TenantRuntime, example: Example) -> Actor:
    user = example.actor
    return Actor(
        user,
        f"{user}@example.com",
        user,
        example.people.roles[user],
        "en",
        runtime.tenant.id,
    )


def outcome(action: Callable[..., object], *args: Any) -> str:
    try:
        action(*args)
    except Forbidden:
        return "forbidden"
    except NotFound:
        return "not_found"
    return "ok"


def expected_write(
    oracle: Oracle, user: str, right: str, record: dict[str, Any]
) -> str:
    if not oracle.allows(user, "deal", right):
        return "forbidden"
    if oracle.permits(user, "deal", right, record):
        return "ok"
    return "forbidden" if oracle.permits(user, "deal", "read", record) else "not_found"


def stored_ids(runtime: TenantRuntime) -> set[str]:
    table = runtime.tables["deal"]
    with runtime.engine.connect() as conn:
        return set(conn.execute(sa.select(table.c.id)).scalars())


# The tenant fixture is shared by the examples on purpose, because
# load_example replaces its definition and data each time.
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(example=examples())
def test_service_matches_oracle(tenant: tuple[Platform, str], example: Example) -> None:
    platform, slug = tenant
    runtime = load_example(platform, slug, example)
    oracle = Oracle(Policy.from_documents(example.documents), example.people)
    user = example.actor
    service = RecordService(runtime, actor_for(runtime, example))
    readable = {
        r["id"] for r in example.records if oracle.permits(user, "deal", "read", r)
    }
    event(f"role {'admin' if oracle.is_admin(user) else 'other'}")
    if not readable:
        event("readable records: none")
    elif len(readable) == len(example.records):
        event("readable records: all")
    else:
        event("readable records: some")
    widened = any(
        not oracle.in_scope(user, oracle.scopes(user, "deal", "read"), r["owner_id"])
        for r in example.records
        if r["id"] in readable
    )
    event(f"a rule or share widens read: {widened}")

    if not oracle.allows(user, "deal", "read"):
        with pytest.raises(Forbidden, match="may not read"):
            service.list("deal", ListQuery(limit=200, count=True))
    else:
        page = service.list("deal", ListQuery(limit=200, count=True))
        assert ids_of(page.records) == readable
        assert page.total == len(readable)
        found = {
            r["id"]
            for r in example.records
            if outcome(service.get, "deal", r["id"]) == "ok"
        }
        assert found == readable
        hidden = {n for n in GUARDED if oracle.level(user, "deal", n) == "hidden"}
        assert all(hidden.isdisjoint(record) for record in page.records)

    edits = {
        r["id"]: outcome(service.update, "deal", r["id"], {"name": "x"})
        for r in example.records
    }
    assert edits == {
        r["id"]: expected_write(oracle, user, "edit", r) for r in example.records
    }

    deletes = {
        r["id"]: outcome(service.delete, "deal", r["id"]) for r in example.records
    }
    assert deletes == {
        r["id"]: expected_write(oracle, user, "delete", r) for r in example.records
    }
    remaining = {r["id"] for r in example.records if deletes[r["id"]] != "ok"}
    assert stored_ids(runtime) == remaining
