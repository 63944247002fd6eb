"""Record permissions of the standard template, cell by cell, on the real paths.

One tenant per backend contains a member of every role, a team, a reporting
line, records owned by each member and a few manual shares. Each cell of
the matrix (user, entity, how the record's owner relates to the user)
checks what ``RecordService``, the exporter and the API do against
``permission_helpers.Oracle``, which reads the template's role, permission
set and sharing rule files: editing those files changes the expectations.
A few hand-written checks at the end state the intended rules in words.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask.testing import FlaskClient

from crm_platform import exporter
from crm_platform.app import create_app
from crm_platform.config import Settings
from crm_platform.control import Actor
from crm_platform.errors import Forbidden, NotFound, RecordInvalid
from crm_platform.querying import ListQuery
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from metadata_engine.messages import messages_for
from metadata_engine.model import SYSTEM_COLUMNS
from tests.conftest import STANDARD_CRM, fresh_database, make_member
from tests.permission_helpers import Oracle, People, Policy, Share, ids_of, store_people

pytestmark = pytest.mark.both_backends

#: Member key -> membership role.
ROLE_OF = {
    "admin": "admin",
    "manager": "sales_manager",
    "rep1": "sales_rep",
    "rep2": "sales_rep",
    "agent": "service_agent",
    "reader": "read_only",
}
ENTITIES = ("opportunity", "contract", "case", "lead")
#: Two records per owner and entity: the "flagged" one matches the
#: template's sharing rules (won opportunities, high-priority cases).
VARIANTS: Mapping[str, Mapping[str, Mapping[str, Any]]] = {
    "opportunity": {
        "plain": {"stage": "prospecting", "amount": 1000, "probability": 20},
        "flagged": {"stage": "closed_won", "amount": 2000, "probability": 100},
    },
    "contract": {
        "plain": {"status": "draft", "value": 5000},
        "flagged": {"status": "active", "value": 9000},
    },
    "case": {
        "plain": {"priority": "low"},
        "flagged": {"priority": "high"},
    },
    "lead": {
        "plain": {"status": "new", "rating": "cold"},
        "flagged": {"status": "qualified", "rating": "hot"},
    },
}
#: The picklist each entity's records are counted by.
GROUP_FIELD = {
    "opportunity": "stage",
    "contract": "status",
    "case": "priority",
    "lead": "status",
}
#: A free-text field that imports change.
NOTE_FIELD = {
    "opportunity": "next_step",
    "contract": "terms",
    "case": "description",
    "lead": "company",
}
#: Teams and reporting lines of the members, by member key.
TEAMS = {"support": {"agent", "rep2"}}
MANAGER_OF = {"rep1": "manager", "rep2": "manager"}
#: How a record's owner can relate to a user, in the order they are tested.
RELATIONS = ("own", "team", "subordinate", "other")
HUB = "hub account"
MESSAGES = messages_for("en")


@dataclass
class World:
    """The shared tenant: members, their records and the oracle."""

    platform: Platform
    runtime: TenantRuntime
    actors: dict[str, Actor]
    people: People
    oracle: Oracle
    hub_id: str
    #: entity -> stored records, each with the admin's full view.
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    client: FlaskClient | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    def uid(self, key: str) -> str:
        return self.actors[key].user_id

    def service(self, key: str) -> RecordService:
        return self.platform.records(self.runtime, self.actors[key])

    def owner_key(self, owner_id: str) -> str:
        return next(key for key in ROLE_OF if self.uid(key) == owner_id)

    def cell(self, key: str, entity: str, relation: str) -> list[dict[str, Any]]:
        """Return the records of ``entity`` whose owner has ``relation`` to
        the member ``key``. Every cell that ``cells()`` lists has records."""
        found = [
            record
            for record in self.records[entity]
            if relation_of(key, self.owner_key(record["owner_id"])) == relation
        ]
        assert found, f"no {entity} record is {relation} to {key}"
        return found

    def permits(
        self, key: str, entity: str, right: str, record: Mapping[str, Any]
    ) -> bool:
        return self.oracle.permits(self.uid(key), entity, right, record)

    def allows(self, key: str, entity: str, right: str) -> bool:
        return self.oracle.allows(self.uid(key), entity, right)

    def level(self, key: str, entity: str, name: str) -> str:
        return self.oracle.level(self.uid(key), entity, name)

    def labels(self, ids: set[str]) -> set[str]:
        return {self.names.get(record_id, record_id) for record_id in ids}

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[key]}"}


def relation_of(key: str, owner: str) -> str:
    """Return how member ``owner`` relates to member ``key``: own, team
    (a team mate), subordinate (reports to them, directly or not) or other."""
    people = People(roles=dict(ROLE_OF), teams=TEAMS, managers=MANAGER_OF)
    if owner == key:
        return "own"
    if owner in people.team_mates(key):
        return "team"
    if owner in people.subordinates(key):
        return "subordinate"
    return "other"


def title_of(entity: str) -> str:
    return "subject" if entity == "case" else "name"


def record_data(world: World, entity: str, owner: str, variant: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        title_of(entity): f"{entity} {owner} {variant}",
        "owner_id": world.uid(owner),
        **VARIANTS[entity][variant],
    }
    if world.runtime.entity(entity).has_field("account"):
        data["account"] = world.hub_id
    return data


def build_world(settings: Settings) -> World:
    platform = Platform(settings)
    runtime = platform.create_tenant("acme", STANDARD_CRM, name="Acme Ltd")
    actors = {
        key: make_member(platform, runtime.slug, f"{key}@example.com", role)
        for key, role in ROLE_OF.items()
    }
    uid = {key: actor.user_id for key, actor in actors.items()}
    people = People(
        roles={uid[key]: role for key, role in ROLE_OF.items()},
        permission_sets={uid["rep2"]: ("contract_approver", "data_export")},
        teams={name: {uid[key] for key in keys} for name, keys in TEAMS.items()},
        managers={uid[key]: uid[boss] for key, boss in MANAGER_OF.items()},
    )

    admin = platform.records(runtime, actors["admin"])
    hub = admin.create("account", {"name": HUB, "owner_id": uid["rep1"]})
    world = World(
        platform,
        runtime,
        actors,
        people,
        Oracle(Policy.from_folder(STANDARD_CRM), people),
        hub["id"],
    )
    world.names[hub["id"]] = HUB

    for entity in ENTITIES:
        world.records[entity] = []
        for owner in ROLE_OF:
            for variant in VARIANTS[entity]:
                created = admin.create(
                    entity, record_data(world, entity, owner, variant)
                )
                world.records[entity].append(created)
                world.names[created["id"]] = created[title_of(entity)]

    by_name = {name: record_id for record_id, name in world.names.items()}
    people.shares += [
        Share("account", hub["id"], "read", user=uid["rep2"]),
        Share(
            "opportunity", by_name["opportunity rep1 plain"], "read", user=uid["rep2"]
        ),
        Share("case", by_name["case manager plain"], "edit", team="support"),
    ]
    with runtime.engine.begin() as conn:
        store_people(conn, people)

    # A change of a hidden field, for the record history checks.
    admin.update("contract", by_name["contract agent plain"], {"value": 7000})

    app = create_app(settings, platform)
    app.config.update(TESTING=True)
    world.client = app.test_client()
    world.tokens = {
        key: platform.control.create_token(runtime.tenant, actor.user_id)
        for key, actor in actors.items()
    }
    return world


@pytest.fixture(scope="module")
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Module-wide settings on SQLite or PostgreSQL, as ``both_backends``
    selects, so that one tenant serves every cell of a backend."""
    data_dir = tmp_path_factory.mktemp("permission_matrix") / "data"
    (data_dir / "tenants").mkdir(parents=True)
    secret_key = secrets.token_urlsafe(32)
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield Settings(data_dir=data_dir, secret_key=secret_key)
        return
    server_url = request.getfixturevalue("postgres_url")
    with fresh_database(server_url) as url:
        yield Settings(data_dir=data_dir, secret_key=secret_key, database_url=url)


@pytest.fixture(scope="module")
def world(backend: Settings) -> Iterator[World]:
    built = build_world(backend)
    yield built
    built.platform.dispose()


def cells() -> list[tuple[str, str, str]]:
    """Return the (user, entity, relation) cells that hold records, as the
    members' teams and reporting lines decide."""
    return [
        (key, entity, relation)
        for key in ROLE_OF
        for entity in ENTITIES
        for relation in RELATIONS
        if any(relation_of(key, owner) == relation for owner in ROLE_OF)
    ]


USER_ENTITY = [(key, entity) for key in ROLE_OF for entity in ENTITIES]


def outcome(action: Callable[..., object], *args: Any) -> str:
    """Call ``action(*args)`` and name its result: ok, forbidden, not_found or the
    fields of a validation error."""
    try:
        action(*args)
    except Forbidden:
        return "forbidden"
    except NotFound:
        return "not_found"
    except RecordInvalid as err:
        return "invalid " + ",".join(sorted(err.details))
    return "ok"


def expected_write(
    world: World, key: str, entity: str, right: str, record: Mapping[str, Any]
) -> str:
    """Return the outcome a write of ``right`` on ``record`` must have."""
    if not world.allows(key, entity, right):
        return "forbidden"
    if world.permits(key, entity, right, record):
        return "ok"
    return "forbidden" if world.permits(key, entity, "read", record) else "not_found"


@pytest.fixture
def copy_of(
    world: World,
) -> Iterator[Callable[[Mapping[str, Any], str], dict[str, Any]]]:
    """Create throwaway copies of records as the admin, and delete the
    copies that are left at teardown."""
    admin = world.service("admin")
    copies: list[tuple[str, str]] = []

    def make(record: Mapping[str, Any], entity: str) -> dict[str, Any]:
        owner = world.owner_key(record["owner_id"])
        variant = "flagged" if record[title_of(entity)].endswith("flagged") else "plain"
        data = record_data(world, entity, owner, variant)
        data[title_of(entity)] += " copy"
        created = admin.create(entity, data)
        copies.append((entity, created["id"]))
        world.names[created["id"]] = data[title_of(entity)]
        return created

    yield make
    for entity, record_id in copies:
        if admin.readable(entity, record_id):
            admin.delete(entity, record_id)


# The matrix: rights on records


@pytest.mark.parametrize(("user", "entity", "relation"), cells())
def test_read_cell(world: World, user: str, entity: str, relation: str) -> None:
    service = world.service(user)
    cell = world.cell(user, entity, relation)
    cell_ids = ids_of(cell)
    expected = world.labels(
        {r["id"] for r in cell if world.permits(user, entity, "read", r)}
    )
    if not world.allows(user, entity, "read"):
        with pytest.raises(Forbidden, match="may not read"):
            service.list(entity, ListQuery(limit=200))
        assert service.search_titles(entity, "", limit=200) == []
        return
    page = service.list(entity, ListQuery(limit=200))
    assert world.labels(ids_of(page.records) & cell_ids) == expected
    found = {r["id"] for r in cell if outcome(service.get, entity, r["id"]) == "ok"}
    assert world.labels(found) == expected
    picked = {
        record_id for record_id, _ in service.search_titles(entity, "", limit=200)
    }
    assert world.labels(picked & cell_ids) == expected


@pytest.mark.parametrize(("user", "entity", "relation"), cells())
def test_edit_cell(world: World, user: str, entity: str, relation: str) -> None:
    service = world.service(user)
    title = title_of(entity)
    actual = {}
    expected = {}
    for record in world.cell(user, entity, relation):
        name = world.names[record["id"]]
        actual[name] = outcome(service.update, entity, record["id"], {title: name})
        expected[name] = expected_write(world, user, entity, "edit", record)
    assert actual == expected


@pytest.mark.parametrize(("user", "entity", "relation"), cells())
def test_delete_cell(
    world: World,
    copy_of: Callable[..., dict[str, Any]],
    user: str,
    entity: str,
    relation: str,
) -> None:
    service = world.service(user)
    actual = {}
    expected = {}
    for record in world.cell(user, entity, relation):
        copy = copy_of(record, entity)
        name = world.names[copy["id"]]
        expected[name] = expected_write(world, user, entity, "delete", copy)
        actual[name] = outcome(service.delete, entity, copy["id"])
    assert actual == expected


@pytest.mark.parametrize(("user", "entity", "relation"), cells())
def test_change_owner_cell(
    world: World,
    copy_of: Callable[..., dict[str, Any]],
    user: str,
    entity: str,
    relation: str,
) -> None:
    service = world.service(user)
    actual = {}
    expected = {}
    for record in world.cell(user, entity, relation):
        copy = copy_of(record, entity)
        name = world.names[copy["id"]]
        new_owner = world.uid("reader" if user == "admin" else "admin")
        if new_owner == copy["owner_id"]:
            new_owner = world.uid("manager")
        expected_result = expected_write(world, user, entity, "edit", copy)
        if expected_result == "ok" and not world.allows(user, entity, "change_owner"):
            expected_result = "invalid owner_id"
        expected[name] = expected_result
        actual[name] = outcome(
            service.update, entity, copy["id"], {"owner_id": new_owner}
        )
    assert actual == expected


@pytest.mark.parametrize(("user", "entity"), USER_ENTITY)
def test_counts_and_groups(world: World, user: str, entity: str) -> None:
    service = world.service(user)
    readable = [
        r for r in world.records[entity] if world.permits(user, entity, "read", r)
    ]
    if not world.allows(user, entity, "read"):
        with pytest.raises(Forbidden, match="may not read"):
            service.group_counts(entity, ListQuery(), GROUP_FIELD[entity])
        return
    page = service.list(entity, ListQuery(limit=1, count=True))
    assert page.total == len(readable)
    column = GROUP_FIELD[entity]
    expected: dict[Any, int] = {}
    for record in readable:
        expected[record[column]] = expected.get(record[column], 0) + 1
    groups = dict(service.group_counts(entity, ListQuery(), column))
    assert groups == expected


def named_fields(world: World, entity: str) -> list[str]:
    """Return every field of ``entity`` a grant names, and its title field."""
    names = {title_of(entity)}
    for grants in [
        *world.oracle.policy.roles.values(),
        *world.oracle.policy.permission_sets.values(),
    ]:
        for key in (entity, "*"):
            if key in grants:
                names |= set(grants[key].fields)
    return sorted(names)


@pytest.mark.parametrize(("user", "entity"), USER_ENTITY)
def test_field_levels(world: World, user: str, entity: str) -> None:
    service = world.service(user)
    if not world.allows(user, entity, "read"):
        with pytest.raises(Forbidden, match="may not read"):
            service.get(entity, world.records[entity][0]["id"])
        return
    readable = [
        r for r in world.records[entity] if world.permits(user, entity, "read", r)
    ]
    # Plain records get their own values written back, so no count changes.
    editable = [
        r
        for r in readable
        if world.permits(user, entity, "edit", r)
        and world.names[r["id"]].endswith("plain")
    ]
    listed = service.list(entity, ListQuery(limit=200)).records
    for name in named_fields(world, entity):
        level = world.level(user, entity, name)
        shown = level != "hidden"
        for record in readable:
            assert (name in service.get(entity, record["id"])) == shown, name
        for record in listed:
            assert (name in record) == shown, name
        if not editable or name == title_of(entity):
            continue
        if name not in VARIANTS[entity]["plain"]:
            pytest.fail(f"add a value of {entity}.{name} to VARIANTS")
        change = {name: VARIANTS[entity]["plain"][name]}
        result = outcome(service.update, entity, editable[0]["id"], change)
        assert result == ("ok" if level == "editable" else f"invalid {name}"), name
        if level != "editable":
            with pytest.raises(RecordInvalid) as caught:
                service.update(entity, editable[0]["id"], change)
            assert caught.value.details[name] == [MESSAGES["field_not_editable"]]


@pytest.mark.parametrize(("user", "entity"), USER_ENTITY)
def test_export_cell(world: World, user: str, entity: str) -> None:
    service = world.service(user)
    output = io.StringIO()
    if not world.allows(user, entity, "export"):
        with pytest.raises(Forbidden, match="may not export"):
            exporter.export(service, entity, output, check_plan=False)
        return
    if not world.allows(user, entity, "read"):
        # The export right alone gives no records: an export is a list.
        with pytest.raises(Forbidden, match="may not read"):
            exporter.export(service, entity, output, check_plan=False)
        return
    exporter.export(service, entity, output, check_plan=False)
    rows = list(csv.reader(io.StringIO(output.getvalue())))
    fields = world.runtime.entity(entity).field_names
    visible = [n for n in fields if world.level(user, entity, n) != "hidden"]
    assert rows[0] == [*SYSTEM_COLUMNS, *visible]
    readable = {
        r["id"] for r in world.records[entity] if world.permits(user, entity, "read", r)
    }
    assert world.labels({row[0] for row in rows[1:]}) == world.labels(readable)


def import_rows(world: World, user: str, entity: str) -> list[dict[str, Any]]:
    """Return one import row per stored record, matched by title and with a
    changed note, then one row of a new record. Fields the user may not
    change are left out, because any of them would reject the whole row."""
    title = title_of(entity)
    rows = []
    for record in world.records[entity]:
        name = world.names[record["id"]]
        variant = "flagged" if name.endswith("flagged") else "plain"
        values = VARIANTS[entity][variant]
        rows.append({title: name, NOTE_FIELD[entity]: "imported", **values})
    rows.append({title: f"{entity} imported", **VARIANTS[entity]["plain"]})
    for row in rows:
        if world.runtime.entity(entity).has_field("account"):
            row["account"] = world.hub_id
        for name in list(row):
            if name != title and world.level(user, entity, name) != "editable":
                del row[name]
    return rows


@pytest.mark.parametrize(("user", "entity"), USER_ENTITY)
def test_import_cell(world: World, user: str, entity: str) -> None:
    service = world.service(user)
    rows = import_rows(world, user, entity)
    key = title_of(entity)
    if not world.allows(user, entity, "import"):
        with pytest.raises(Forbidden, match="may not import"):
            service.import_batch(entity, rows, key=key, dry_run=True)
        return

    result = service.import_batch(entity, rows, key=key, dry_run=True)
    stored = world.records[entity]
    may_create = world.allows(user, entity, "create")
    not_editable = {
        index
        for index, record in enumerate(stored)
        if not world.permits(user, entity, "edit", record)
    }
    new_row = {len(stored)}
    assert set(result.errors) == not_editable | (set() if may_create else new_row)
    assert result.created == (1 if may_create else 0)
    assert result.updated == len(stored) - len(not_editable)


@pytest.mark.parametrize("user", ROLE_OF)
def test_related_lists(world: World, user: str) -> None:
    service = world.service(user)
    hub = {"id": world.hub_id, "owner_id": world.uid("rep1")}
    if not world.permits(user, "account", "read", hub):
        assert outcome(service.related, "account", world.hub_id) == "not_found"
        return
    lists = {
        item.entity.name: item
        for item in service.related("account", world.hub_id, limit=200)
    }
    for entity, related in lists.items():
        if entity not in world.records:
            assert related.page.records == [], entity
            continue
        expected = {
            r["id"]
            for r in world.records[entity]
            if r.get("account") == world.hub_id
            and world.permits(user, entity, "read", r)
        }
        assert world.labels(ids_of(related.page.records)) == world.labels(expected)
        assert related.page.total == len(expected), entity
    for entity in ("opportunity", "contract", "case"):
        shown = world.allows(user, entity, "read") and (
            world.level(user, entity, "account") != "hidden"
        )
        assert (entity in lists) == shown, entity


# The API over HTTP


def api_url(world: World, path: str) -> str:
    return f"/t/{world.runtime.slug}/api/v1/{path}"


@pytest.mark.parametrize(
    ("user", "entity"),
    [(key, entity) for key in ROLE_OF for entity in ("opportunity", "contract")],
)
def test_api_get_statuses(world: World, user: str, entity: str) -> None:
    assert world.client is not None
    actual = {}
    expected = {}
    hidden = {
        n
        for n in world.runtime.entity(entity).field_names
        if world.level(user, entity, n) == "hidden"
    }
    for record in world.records[entity]:
        name = world.names[record["id"]]
        response = world.client.get(
            api_url(world, f"records/{entity}/{record['id']}"),
            headers=world.headers(user),
        )
        actual[name] = response.status_code
        if not world.allows(user, entity, "read"):
            expected[name] = 403
        else:
            expected[name] = 200 if world.permits(user, entity, "read", record) else 404
        if response.status_code == 200:
            assert hidden.isdisjoint(response.get_json()), name
    assert actual == expected


@pytest.mark.parametrize("user", ROLE_OF)
def test_api_list_hides_fields(world: World, user: str) -> None:
    assert world.client is not None
    response = world.client.get(
        api_url(world, "records/contract?limit=200"), headers=world.headers(user)
    )
    if not world.allows(user, "contract", "read"):
        assert response.status_code == 403
        return
    shown = world.level(user, "contract", "value") != "hidden"
    data = response.get_json()["data"]
    assert data
    assert all(("value" in record) == shown for record in data)


@pytest.mark.parametrize("user", ROLE_OF)
def test_api_patch_codes(world: World, user: str) -> None:
    assert world.client is not None
    actual = {}
    expected = {}
    for record in world.records["opportunity"]:
        name = world.names[record["id"]]
        response = world.client.patch(
            api_url(world, f"records/opportunity/{record['id']}"),
            json={"probability": 20},
            headers=world.headers(user),
        )
        actual[name] = response.status_code
        expected_result = expected_write(world, user, "opportunity", "edit", record)
        # Input is checked before the record is looked up, so a field the
        # user may not change gives 422 for any id, readable or not.
        locked = world.level(user, "opportunity", "probability") != "editable"
        if world.allows(user, "opportunity", "edit") and locked:
            expected_result = "invalid"
        expected[name] = {
            "ok": 200,
            "forbidden": 403,
            "not_found": 404,
            "invalid": 422,
        }[expected_result]
    assert actual == expected


@pytest.mark.parametrize("user", ROLE_OF)
def test_history_hides_fields(world: World, user: str) -> None:
    assert world.client is not None
    record = next(
        r
        for r in world.records["contract"]
        if world.names[r["id"]] == "contract agent plain"
    )
    response = world.client.get(
        api_url(world, f"records/contract/{record['id']}/history"),
        headers=world.headers(user),
    )
    if not world.permits(user, "contract", "read", record):
        assert response.status_code in (403, 404)
        return
    entries = response.get_json()["data"]
    changed = {name for entry in entries for name in entry["changes"]}
    shown = world.level(user, "contract", "value") != "hidden"
    assert ("value" in changed) == shown


# Spot checks in words


def record_named(world: World, entity: str, name: str) -> dict[str, Any]:
    return next(r for r in world.records[entity] if world.names[r["id"]] == name)


def test_rep_cannot_read_other_reps_opportunity(world: World) -> None:
    record = record_named(world, "opportunity", "opportunity rep2 plain")
    with pytest.raises(NotFound, match="not found"):
        world.service("rep1").get("opportunity", record["id"])


def test_agent_cannot_see_contract_value(world: World) -> None:
    record = record_named(world, "contract", "contract rep1 flagged")
    assert "value" not in world.service("agent").get("contract", record["id"])


def test_approver_sees_contract_value(world: World) -> None:
    record = record_named(world, "contract", "contract rep1 flagged")
    assert world.service("rep2").get("contract", record["id"])["value"] == 9000


def test_rep_reads_own_and_shared(world: World) -> None:
    page = world.service("rep1").list("lead", ListQuery(limit=200))
    assert world.labels(ids_of(page.records)) == {
        "lead rep1 plain",
        "lead rep1 flagged",
    }
    page = world.service("rep2").list("opportunity", ListQuery(limit=200))
    won = {f"opportunity {key} flagged" for key in ROLE_OF}
    assert world.labels(ids_of(page.records)) == {
        "opportunity rep2 plain",
        "opportunity rep1 plain",
        *won,
    }


def test_rep_cannot_change_probability(world: World) -> None:
    record = record_named(world, "opportunity", "opportunity rep1 plain")
    with pytest.raises(RecordInvalid, match="check probability") as caught:
        world.service("rep1").update("opportunity", record["id"], {"probability": 55})
    assert caught.value.details["probability"] == [MESSAGES["field_not_editable"]]


def test_manager_deletes_subordinates_lead(
    world: World, copy_of: Callable[..., dict[str, Any]]
) -> None:
    mine = copy_of(record_named(world, "lead", "lead rep1 plain"), "lead")
    theirs = copy_of(record_named(world, "lead", "lead agent plain"), "lead")
    manager = world.service("manager")
    manager.delete("lead", mine["id"])
    assert not world.service("admin").readable("lead", mine["id"])
    with pytest.raises(Forbidden, match="may read lead .* but not delete it"):
        manager.delete("lead", theirs["id"])


def test_agent_cases_by_team_and_rule(world: World) -> None:
    agent = world.service("agent")
    mate = record_named(world, "case", "case rep2 plain")
    agent.update("case", mate["id"], {"description": "seen by the team"})
    urgent = record_named(world, "case", "case reader flagged")
    assert agent.readable("case", urgent["id"])
    with pytest.raises(Forbidden, match="but not edit it"):
        agent.update("case", urgent["id"], {"description": "read only to me"})
    low = record_named(world, "case", "case reader plain")
    with pytest.raises(NotFound, match="not found"):
        agent.get("case", low["id"])


def test_team_edit_share_needs_edit_right(world: World) -> None:
    shared = record_named(world, "case", "case manager plain")
    world.service("agent").update("case", shared["id"], {"description": "shared"})
    with pytest.raises(Forbidden, match="may not read"):
        world.service("rep2").get("case", shared["id"])


def test_read_only_changes_nothing(world: World) -> None:
    record = record_named(world, "lead", "lead reader plain")
    with pytest.raises(Forbidden, match="may not edit"):
        world.service("reader").update("lead", record["id"], {"rating": "hot"})
    with pytest.raises(Forbidden, match="may not create"):
        world.service("reader").create("lead", {"name": "new lead"})


def test_rep_exports_only_with_permission_set(world: World) -> None:
    with pytest.raises(Forbidden, match="may not export"):
        exporter.export(world.service("rep1"), "lead", io.StringIO(), check_plan=False)
    output = io.StringIO()
    count = exporter.export(world.service("rep2"), "lead", output, check_plan=False)
    assert count == 2
