"""Teams, reporting lines, permission set assignments and manual shares:
the service, its effect on what ``RecordService`` returns, the API, the
pages, the CLI and tenant archives."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from playwright.sync_api import ConsoleMessage, Page, expect
from werkzeug.test import TestResponse

from crm_platform.access import (
    ASSIGNMENTS,
    HIERARCHY,
    REPORTING,
    SHARES,
    TEAM_MEMBERS,
    TEAMS,
)
from crm_platform.archive import (
    MANIFEST,
    import_archive,
    restore_archive,
    write_archive,
)
from crm_platform.cli import main
from crm_platform.config import Settings
from crm_platform.control import Actor
from crm_platform.errors import Forbidden, NotFound, RecordInvalid
from crm_platform.querying import ListQuery
from crm_platform.sharing import ReportingCycle, SharingService, TeamExists, closure
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import ADMIN_PASSWORD, make_member
from tests.definitions.builders import entity, manifest, write_folder
from tests.plugins.browser import serve_wsgi
from tests.test_web import csrf_token, sign_in

pytestmark = pytest.mark.both_backends

ACCESS_TABLES = (TEAMS, TEAM_MEMBERS, REPORTING, HIERARCHY, ASSIGNMENTS, SHARES)


def note_role(name: str, scope: str) -> dict[str, Any]:
    """Return a role document that reads and edits notes at ``scope``."""
    return {
        "name": name,
        "label": name.replace("_", " ").title(),
        "entities": {"note": {"read": scope, "edit": scope, "create": True}},
    }


@pytest.fixture
def notes(platform: Platform, tmp_path: Path) -> TenantRuntime:
    """A tenant ``notes`` whose sales_rep role reads its team's notes, whose
    sales_manager role reads its subordinates' notes and whose read_only
    role reads every note."""
    folder = write_folder(
        tmp_path / "notes_definition",
        {
            "definition.json": manifest(name="notes", label="Notes"),
            "entities/note.json": entity("note"),
            "roles/sales_rep.json": note_role("sales_rep", "team"),
            "roles/sales_manager.json": note_role("sales_manager", "subordinates"),
            "roles/read_only.json": {
                "name": "read_only",
                "label": "Read only",
                "entities": {"note": {"read": "all"}},
            },
        },
    )
    return platform.create_tenant("notes", folder, name="Notes Ltd")


@pytest.fixture
def people(platform: Platform, notes: TenantRuntime) -> dict[str, Actor]:
    """An admin, three sales reps, a manager and a reader of ``notes``."""
    roles = {
        "admin": "admin",
        "ann": "sales_rep",
        "bob": "sales_rep",
        "cid": "sales_rep",
        "max": "sales_manager",
        "rea": "read_only",
    }
    return {
        name: make_member(platform, "notes", f"{name}@example.com", role)
        for name, role in roles.items()
    }


def service(platform: Platform, runtime: TenantRuntime, actor: Actor) -> SharingService:
    return SharingService(platform, runtime, actor)


def add_note(
    platform: Platform, runtime: TenantRuntime, admin: Actor, owner: Actor, name: str
) -> str:
    """Create a note owned by ``owner`` and return its id."""
    records = platform.records(runtime, admin)
    return str(records.create("note", {"name": name, "owner_id": owner.user_id})["id"])


def visible_names(platform: Platform, runtime: TenantRuntime, actor: Actor) -> set[str]:
    page = platform.records(runtime, actor).list("note", ListQuery(limit=100))
    return {record["name"] for record in page.records}


def table_rows(runtime: TenantRuntime, table: sa.Table) -> list[tuple[Any, ...]]:
    """Return every row of ``table``, sorted, with datetimes as text."""
    with runtime.engine.connect() as conn:
        rows = conn.execute(sa.select(table)).all()
    return sorted(tuple(str(value) for value in row) for row in rows)


# Scopes


def test_team_scope_follows_teams(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    add_note(platform, notes, people["admin"], people["bob"], "bob's note")
    admin = service(platform, notes, people["admin"])
    assert visible_names(platform, notes, people["ann"]) == set()
    admin.create_team("north", "North")
    admin.add_team_member("north", people["ann"].user_id)
    admin.add_team_member("north", people["bob"].user_id)
    assert visible_names(platform, notes, people["ann"]) == {"bob's note"}
    assert visible_names(platform, notes, people["cid"]) == set()
    admin.remove_team_member("north", people["bob"].user_id)
    assert visible_names(platform, notes, people["ann"]) == set()


def test_subordinates_scope_follows_managers(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    add_note(platform, notes, people["admin"], people["ann"], "ann's note")
    add_note(platform, notes, people["admin"], people["bob"], "bob's note")
    admin = service(platform, notes, people["admin"])
    assert visible_names(platform, notes, people["max"]) == set()
    admin.set_manager(people["ann"].user_id, people["max"].user_id)
    admin.set_manager(people["bob"].user_id, people["ann"].user_id)
    assert visible_names(platform, notes, people["max"]) == {"ann's note", "bob's note"}
    admin.clear_manager(people["ann"].user_id)
    assert visible_names(platform, notes, people["max"]) == set()


def test_hierarchy_is_transitive_closure(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    admin = service(platform, notes, people["admin"])
    ann, bob, cid = (people[name].user_id for name in ("ann", "bob", "cid"))
    admin.set_manager(bob, ann)
    admin.set_manager(cid, bob)
    with notes.engine.connect() as conn:
        pairs = set(
            conn.execute(sa.select(HIERARCHY.c.manager_id, HIERARCHY.c.user_id)).all()
        )
    assert pairs == {(ann, bob), (bob, cid), (ann, cid)}


def test_closure_stops_on_stored_loop() -> None:
    assert closure({"a": "b", "b": "a"}) == {("b", "a"), ("a", "b")}


def test_reporting_cycle_rejected(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    admin = service(platform, notes, people["admin"])
    ann, bob, cid = (people[name].user_id for name in ("ann", "bob", "cid"))
    admin.set_manager(ann, bob)
    admin.set_manager(bob, cid)
    with pytest.raises(
        ReportingCycle,
        match="ann@example.com already reports to cid@example.com, "
        "so cid@example.com cannot report to ann@example.com",
    ):
        admin.set_manager(cid, ann)
    with pytest.raises(ReportingCycle, match="cannot report to themselves"):
        admin.set_manager(ann, ann)
    assert admin.manager_of(cid) is None


# Manual shares


def test_share_read_then_unshare(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    note_id = add_note(platform, notes, people["admin"], people["bob"], "private")
    ann = platform.records(notes, people["ann"])
    admin = service(platform, notes, people["admin"])
    assert not ann.readable("note", note_id)
    share, created = admin.share("note", note_id, "read", user_id=people["ann"].user_id)
    assert created
    record = platform.records(notes, people["ann"]).get("note", note_id)
    assert record["name"] == "private"
    with pytest.raises(Forbidden, match="may read note .* but not edit it"):
        platform.records(notes, people["ann"]).update("note", note_id, {"name": "x"})
    admin.unshare("note", note_id, share.id)
    with pytest.raises(NotFound):
        platform.records(notes, people["ann"]).get("note", note_id)


def test_edit_share_allows_update(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    note_id = add_note(platform, notes, people["admin"], people["bob"], "draft")
    admin = service(platform, notes, people["admin"])
    admin.share("note", note_id, "read", user_id=people["ann"].user_id)
    _, created = admin.share("note", note_id, "edit", user_id=people["ann"].user_id)
    assert not created
    updated = platform.records(notes, people["ann"]).update(
        "note", note_id, {"name": "final"}
    )
    assert updated["name"] == "final"
    assert [share.access for share in admin.shares("note", note_id)] == ["edit"]


def test_team_share_reaches_members(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    note_id = add_note(platform, notes, people["admin"], people["admin"], "memo")
    admin = service(platform, notes, people["admin"])
    admin.create_team("south")
    admin.add_team_member("south", people["cid"].user_id)
    admin.share("note", note_id, "read", team="south")
    assert platform.records(notes, people["cid"]).readable("note", note_id)
    assert not platform.records(notes, people["ann"]).readable("note", note_id)
    admin.delete_team("south")
    assert not platform.records(notes, people["cid"]).readable("note", note_id)
    assert table_rows(notes, SHARES) == []


def test_owner_shares_own_record(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    note_id = add_note(platform, notes, people["admin"], people["bob"], "bob's")
    bob = service(platform, notes, people["bob"])
    bob.share("note", note_id, "edit", user_id=people["cid"].user_id)
    assert platform.records(notes, people["cid"]).readable("note", note_id)


def test_unreadable_record_not_found(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    note_id = add_note(platform, notes, people["admin"], people["bob"], "hidden")
    ann = service(platform, notes, people["ann"])
    with pytest.raises(NotFound, match="note record .* not found"):
        ann.share("note", note_id, "read", user_id=people["ann"].user_id)
    with pytest.raises(NotFound):
        ann.shares("note", note_id)


def test_reader_cannot_share(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    note_id = add_note(platform, notes, people["admin"], people["bob"], "readable")
    reader = service(platform, notes, people["rea"])
    with pytest.raises(Forbidden, match="may read but not edit"):
        reader.share("note", note_id, "read", user_id=people["ann"].user_id)


def test_share_input_checked(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    note_id = add_note(platform, notes, people["admin"], people["bob"], "n")
    admin = service(platform, notes, people["admin"])
    with pytest.raises(RecordInvalid, match="invalid access 'write'"):
        admin.share("note", note_id, "write", user_id=people["ann"].user_id)
    with pytest.raises(RecordInvalid, match="exactly one of 'user_id' and 'team'"):
        admin.share("note", note_id, "read", user_id=people["ann"].user_id, team="x")
    with pytest.raises(RecordInvalid, match="team 'ghost' not found"):
        admin.share("note", note_id, "read", team="ghost")


# Admins only, and members of this tenant only


def test_non_admins_rejected(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    rep = service(platform, notes, people["ann"])
    bob = people["bob"].user_id
    with pytest.raises(Forbidden, match="only admins may create teams"):
        rep.create_team("mine")
    with pytest.raises(Forbidden, match="only admins may change reporting lines"):
        rep.set_manager(bob, people["ann"].user_id)
    with pytest.raises(Forbidden, match="only admins may assign permission sets"):
        rep.assign_permission_set(bob, "anything")
    with pytest.raises(Forbidden, match="only admins may list teams"):
        rep.list_teams()


def test_other_tenant_users_rejected(
    platform: Platform,
    notes: TenantRuntime,
    crm: TenantRuntime,
    people: dict[str, Actor],
) -> None:
    stranger = make_member(platform, "acme", "stranger@example.com", "sales_rep")
    note_id = add_note(platform, notes, people["admin"], people["bob"], "n")
    admin = service(platform, notes, people["admin"])
    admin.create_team("east")
    with pytest.raises(NotFound, match="is not a member of tenant 'notes'"):
        admin.add_team_member("east", stranger.user_id)
    with pytest.raises(RecordInvalid, match="is not a member of tenant 'notes'"):
        admin.set_manager(people["ann"].user_id, stranger.user_id)
    with pytest.raises(RecordInvalid, match="is not a member of tenant 'notes'"):
        admin.share("note", note_id, "read", user_id=stranger.user_id)
    assert table_rows(notes, TEAM_MEMBERS) == []


def test_team_name_and_label_checked(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    admin = service(platform, notes, people["admin"])
    with pytest.raises(RecordInvalid, match="invalid team name 'North'"):
        admin.create_team("North")
    with pytest.raises(RecordInvalid, match="invalid team label ' '"):
        admin.create_team("north", " ")
    admin.create_team("north", "North")
    with pytest.raises(TeamExists, match="team 'north' already exists"):
        admin.create_team("north", "Again")
    assert admin.relabel_team("north", "Northern").label == "Northern"


# Permission sets (the standard template declares two)


def test_unknown_permission_set_lists_declared(
    platform: Platform, crm: TenantRuntime, admin: Actor
) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    sharing = service(platform, crm, admin)
    with pytest.raises(NotFound, match="use one of contract_approver, data_export"):
        sharing.assign_permission_set(rep.user_id, "superuser")


def test_permission_set_grants_export(
    platform: Platform, crm: TenantRuntime, admin: Actor
) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    assert not platform.records(crm, rep).access("lead").allows("export")
    sharing = service(platform, crm, admin)
    assert sharing.assign_permission_set(rep.user_id, "data_export") == ["data_export"]
    assert platform.records(crm, rep).access("lead").allows("export")
    assert sharing.unassign_permission_set(rep.user_id, "data_export") == []
    assert not platform.records(crm, rep).access("lead").allows("export")


# Archives


def seeded_note(runtime: TenantRuntime) -> str:
    """Return the id of the one note that ``seed_access`` creates."""
    with runtime.engine.connect() as conn:
        return str(conn.execute(sa.select(runtime.tables["note"].c.id)).scalar_one())


def seed_access(
    platform: Platform, runtime: TenantRuntime, people: dict[str, Actor]
) -> None:
    note_id = add_note(platform, runtime, people["admin"], people["bob"], "shared")
    admin = service(platform, runtime, people["admin"])
    admin.create_team("north", "北方")
    admin.add_team_member("north", people["ann"].user_id)
    admin.set_manager(people["ann"].user_id, people["max"].user_id)
    admin.set_manager(people["bob"].user_id, people["ann"].user_id)
    admin.share("note", note_id, "edit", team="north")
    admin.share("note", note_id, "read", user_id=people["cid"].user_id)


def test_archive_round_trip_keeps_access(
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
    tmp_path: Path,
) -> None:
    seed_access(platform, notes, people)
    path = tmp_path / "notes.zip"
    write_archive(platform, "notes", path, people["admin"])
    import_archive(platform, "copy", path)
    copy = platform.runtime("copy")
    for table in ACCESS_TABLES:
        assert table_rows(copy, table) == table_rows(notes, table), table.name
    assert len(table_rows(copy, HIERARCHY)) == 3


def test_restore_replaces_access(
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
    tmp_path: Path,
) -> None:
    seed_access(platform, notes, people)
    before = {table.name: table_rows(notes, table) for table in ACCESS_TABLES}
    path = tmp_path / "backup.zip"
    write_archive(platform, "notes", path, people["admin"], kind="backup")
    admin = service(platform, notes, people["admin"])
    admin.delete_team("north")
    admin.create_team("later")
    restore_archive(platform, "notes", path)
    after = {table.name: table_rows(notes, table) for table in ACCESS_TABLES}
    assert after == before


def without_access(source: Path, target: Path) -> None:
    """Copy an archive without its access tables, as older versions wrote it."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        manifest_json = json.loads(old.read(MANIFEST))
        for name in old.namelist():
            if name.startswith("access/"):
                del manifest_json["files"][name]
            elif name != MANIFEST:
                new.writestr(name, old.read(name))
        new.writestr(MANIFEST, json.dumps(manifest_json))


def test_archive_without_access_loads(
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
    tmp_path: Path,
) -> None:
    seed_access(platform, notes, people)
    write_archive(platform, "notes", tmp_path / "new.zip", people["admin"])
    without_access(tmp_path / "new.zip", tmp_path / "old.zip")
    counts = import_archive(platform, "older", tmp_path / "old.zip")
    assert counts["note"] == 1
    assert table_rows(platform.runtime("older"), TEAMS) == []
    restore_archive(platform, "notes", tmp_path / "old.zip")
    assert len(table_rows(notes, TEAMS)) == 1


# The API


def json_of(response: TestResponse) -> Any:
    """Return the JSON body of an API response."""
    return response.json


def api_headers(
    platform: Platform, runtime: TenantRuntime, actor: Actor
) -> dict[str, str]:
    token = platform.control.create_token(runtime.tenant, actor.user_id)
    return {"Authorization": f"Bearer {token}"}


def test_api_teams_and_members(
    client: FlaskClient,
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
) -> None:
    headers = api_headers(platform, notes, people["admin"])
    base = "/t/notes/api/v1"
    created = client.post(
        f"{base}/teams", json={"name": "north", "label": "North"}, headers=headers
    )
    assert created.status_code == 201, created.text
    ann = people["ann"].user_id
    added = client.put(f"{base}/teams/north/members/{ann}", headers=headers)
    assert json_of(added)["data"]["members"] == [ann]
    renamed = client.patch(
        f"{base}/teams/north", json={"label": "Nord"}, headers=headers
    )
    assert json_of(renamed)["data"]["label"] == "Nord"
    listed = client.get(f"{base}/teams", headers=headers)
    expected = [{"name": "north", "label": "Nord", "members": [ann]}]
    assert json_of(listed)["data"] == expected
    removed = client.delete(f"{base}/teams/north/members/{ann}", headers=headers)
    assert removed.status_code == 204
    assert client.delete(f"{base}/teams/north", headers=headers).status_code == 204


def test_api_errors_are_json(
    client: FlaskClient,
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
) -> None:
    base = "/t/notes/api/v1"
    admin = api_headers(platform, notes, people["admin"])
    bad = client.post(f"{base}/teams", json={"name": "Bad Name"}, headers=admin)
    assert bad.status_code == 422
    assert json_of(bad)["error"]["code"] == "validation_failed"
    extra = client.post(
        f"{base}/teams", json={"name": "ok", "colour": 1}, headers=admin
    )
    assert extra.status_code == 422
    assert "unknown fields 'colour'" in json_of(extra)["error"]["message"]
    rep = api_headers(platform, notes, people["ann"])
    rejected = client.get(f"{base}/teams", headers=rep)
    assert rejected.status_code == 403
    assert json_of(rejected)["error"]["code"] == "forbidden"


def test_api_manager_and_permission_sets(
    client: FlaskClient, platform: Platform, crm: TenantRuntime, admin: Actor
) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    boss = make_member(platform, "acme", "boss@example.com", "sales_manager")
    headers = api_headers(platform, crm, admin)
    base = f"/t/acme/api/v1/members/{rep.user_id}"
    manager = client.put(
        f"{base}/manager", json={"manager_id": boss.user_id}, headers=headers
    )
    assert manager.status_code == 200, manager.text
    cycle = client.put(
        f"/t/acme/api/v1/members/{boss.user_id}/manager",
        json={"manager_id": rep.user_id},
        headers=headers,
    )
    assert cycle.status_code == 409
    assert json_of(cycle)["error"]["code"] == "reporting_cycle"
    assert client.delete(f"{base}/manager", headers=headers).status_code == 204
    assigned = client.put(f"{base}/permission-sets/data_export", headers=headers)
    assert json_of(assigned)["data"]["permission_sets"] == ["data_export"]
    unknown = client.put(f"{base}/permission-sets/root", headers=headers)
    assert unknown.status_code == 404
    removed = client.delete(f"{base}/permission-sets/data_export", headers=headers)
    assert removed.status_code == 204


def test_api_shares(
    client: FlaskClient,
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
) -> None:
    note_id = add_note(platform, notes, people["admin"], people["bob"], "n")
    base = f"/t/notes/api/v1/records/note/{note_id}/shares"
    bob = api_headers(platform, notes, people["bob"])
    body = {"user_id": people["ann"].user_id, "access": "read"}
    created = client.post(base, json=body, headers=bob)
    assert created.status_code == 201, created.text
    again = client.post(base, json={**body, "access": "edit"}, headers=bob)
    assert again.status_code == 200
    listed = json_of(client.get(base, headers=bob))["data"]
    assert [(item["user_id"], item["access"]) for item in listed] == [
        (people["ann"].user_id, "edit")
    ]
    cid = api_headers(platform, notes, people["cid"])
    assert client.get(base, headers=cid).status_code == 404
    share_id = listed[0]["id"]
    assert client.delete(f"{base}/{share_id}", headers=bob).status_code == 204
    assert client.delete(f"{base}/{share_id}", headers=bob).status_code == 404


def test_openapi_lists_sharing_paths(
    client: FlaskClient,
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
) -> None:
    headers = api_headers(platform, notes, people["admin"])
    document = json_of(client.get("/t/notes/api/v1/openapi.json", headers=headers))
    validate(document)
    paths = document["paths"]
    assert "post" in paths["/teams"]
    assert "put" in paths["/members/{user_id}/manager"]
    assert "delete" in paths["/records/{entity}/{record_id}/shares/{share_id}"]


# The pages


def test_teams_page_creates_team(
    client: FlaskClient,
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
) -> None:
    sign_in(client, "notes", "admin@example.com", ADMIN_PASSWORD)
    page = client.get("/t/notes/teams")
    assert page.status_code == 200, page.text
    rejected = client.post("/t/notes/teams", data={"name": "north"})
    assert rejected.status_code == 400
    data = {
        "csrf_token": csrf_token(page.text),
        "name": "north",
        "label": "<b>North</b>",
    }
    created = client.post("/t/notes/teams", data=data, follow_redirects=True)
    assert created.status_code == 200
    assert "&lt;b&gt;North&lt;/b&gt;" in created.text
    assert "<b>North</b>" not in created.text
    duplicate = client.post("/t/notes/teams", data=data)
    assert duplicate.status_code == 409
    assert "A team with this name already exists." in duplicate.text


def test_teams_page_in_chinese(
    client: FlaskClient,
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
) -> None:
    sign_in(client, "notes", "admin@example.com", ADMIN_PASSWORD)
    page = client.get("/t/notes/teams?lang=zh-CN", follow_redirects=True)
    assert "团队与访问权限" in page.text


def test_teams_page_admins_only(
    client: FlaskClient,
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
) -> None:
    sign_in(client, "notes", "ann@example.com", ADMIN_PASSWORD)
    assert client.get("/t/notes/teams").status_code == 403


def test_sharing_page_adds_share(
    client: FlaskClient,
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
) -> None:
    note_id = add_note(platform, notes, people["admin"], people["bob"], "n")
    sign_in(client, "notes", "bob@example.com", ADMIN_PASSWORD)
    url = f"/t/notes/note/{note_id}/sharing"
    page = client.get(url)
    assert page.status_code == 200, page.text
    data = {
        "csrf_token": csrf_token(page.text),
        "access": "edit",
        "target": f"user:{people['ann'].user_id}",
    }
    shared = client.post(url, data=data, follow_redirects=True)
    assert shared.status_code == 200
    assert 'data-testid="share-row"' in shared.text
    assert platform.records(notes, people["ann"]).readable("note", note_id)


def test_sharing_page_rejects_reader(
    client: FlaskClient,
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
) -> None:
    note_id = add_note(platform, notes, people["admin"], people["bob"], "n")
    sign_in(client, "notes", "rea@example.com", ADMIN_PASSWORD)
    page = client.get(f"/t/notes/note/{note_id}/sharing")
    assert page.status_code == 403
    assert "You may share only records that you may edit." in page.text
    hidden = client.get(f"/t/notes/note/{note_id}x/sharing")
    assert hidden.status_code == 404


# The command line


def test_cli_teams_managers_and_shares(
    settings: Settings,
    platform: Platform,
    crm: TenantRuntime,
    admin: Actor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    make_member(platform, "acme", "boss@example.com", "sales_manager")
    lead = platform.records(crm, admin).create(
        "lead",
        {
            "name": "Li Wei",
            "company": "Acme",
        },
    )
    if settings.database_url:
        monkeypatch.setenv("METACRM_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("METACRM_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    steps = [
        ["team", "create", "acme", "support", "--label", "Support"],
        ["team", "add", "acme", "support", "rep@example.com"],
        ["member", "manager", "acme", "rep@example.com", "boss@example.com"],
        ["permission-set", "assign", "acme", "rep@example.com", "data_export"],
        ["share", "acme", "lead", str(lead["id"]), "--team", "support"],
    ]
    results = [runner.invoke(main, step) for step in steps]
    assert [result.exit_code for result in results] == [0] * len(steps), [
        result.output for result in results
    ]
    listed = runner.invoke(main, ["team", "list", "acme"])
    assert "support\tSupport\trep@example.com" in listed.output
    assert platform.records(crm, rep).readable("lead", str(lead["id"]))
    cycle = runner.invoke(
        main, ["member", "manager", "acme", "boss@example.com", "rep@example.com"]
    )
    assert cycle.exit_code == 1
    assert "rep@example.com already reports to boss@example.com" in cycle.output


# The pages in Chromium


@pytest.mark.browser
def test_pages_work_in_chromium(
    app: Flask,
    page: Page,
    platform: Platform,
    notes: TenantRuntime,
    people: dict[str, Actor],
) -> None:
    note_id = add_note(platform, notes, people["admin"], people["bob"], "Plan")
    errors: list[str] = []

    def keep_problem(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            errors.append(message.text)

    page.on("console", keep_problem)
    with serve_wsgi(app) as base_url:
        page.goto(f"{base_url}/t/notes/login")
        page.fill("#email", "admin@example.com")
        page.fill("#password", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.goto(f"{base_url}/t/notes/teams")
        page.fill("#team-name", "north")
        page.fill("#team-label", "North")
        page.click("[data-testid=create-team] button[type=submit]")
        expect(page.locator(".flash-area")).to_contain_text("Team north created.")
        row = page.locator("[data-testid=team-row][data-team=north]")
        row.locator("select[name=user_id]").select_option(people["ann"].user_id)
        row.locator("[data-testid=add-team-member] button").click()
        expect(row.locator("[data-testid=remove-team-member]")).to_have_count(1)
        ann_row = "[data-testid=access-row][data-email='ann@example.com']"
        access = page.locator(ann_row)
        access.locator("select[name=manager_id]").select_option(people["max"].user_id)
        access.locator("button", has_text="Save").click()
        expect(page.locator(".flash-area")).to_contain_text("Manager saved.")
        page.goto(f"{base_url}/t/notes/note/{note_id}/sharing")
        page.select_option("#share-target", "team:north")
        page.select_option("#share-access", "edit")
        page.click("[data-testid=add-share] button[type=submit]")
        expect(page.locator("[data-testid=share-row]")).to_contain_text("north")
    assert errors == []
    assert platform.records(notes, people["ann"]).readable("note", note_id)
    assert visible_names(platform, notes, people["max"]) == set()


def test_forget_member_removes_access(
    platform: Platform, notes: TenantRuntime, people: dict[str, Actor]
) -> None:
    seed_access(platform, notes, people)
    admin = service(platform, notes, people["admin"])
    ann = people["ann"].user_id
    admin.forget_member(ann)
    assert admin.list_teams()[0].members == ()
    assert admin.manager_of(ann) is None
    assert admin.manager_of(people["bob"].user_id) is None
    assert table_rows(notes, HIERARCHY) == []
    assert len(table_rows(notes, SHARES)) == 2
    admin.forget_member(people["cid"].user_id)
    assert [share.team for share in admin.shares("note", seeded_note(notes))] == [
        "north"
    ]
