"""Paths that could reveal records a member may not read: lookups, import
keys, shares. Each must behave as if the record did not exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from crm_platform.control import Actor
from crm_platform.errors import Forbidden, RecordInvalid
from crm_platform.records import RecordService
from crm_platform.sharing import SharingService
from crm_platform.tenancy import Platform, TenantRuntime
from metadata_engine.loader import load_definition
from tests.conftest import STANDARD_CRM, make_member
from tests.definitions.builders import write_folder

pytestmark = pytest.mark.both_backends


@pytest.fixture
def reps(platform: Platform, crm: TenantRuntime, admin: Actor) -> tuple[Actor, Actor]:
    return (make_member(platform, crm.slug, "rep1@example.com", "sales_rep"),
            make_member(platform, crm.slug, "rep2@example.com", "sales_rep"))


def service(platform: Platform, crm: TenantRuntime, actor: Actor) -> RecordService:
    return platform.records(crm, actor)


def test_lookup_to_unreadable_record(
    platform: Platform, crm: TenantRuntime, reps: tuple[Actor, Actor]
) -> None:
    rep1, rep2 = reps
    hidden = service(platform, crm, rep2).create("account", {"name": "Rep2 Ltd"})
    as_rep1 = service(platform, crm, rep1)
    with pytest.raises(RecordInvalid) as unreadable:
        as_rep1.create("opportunity", {"name": "Deal", "account": hidden["id"]})
    with pytest.raises(RecordInvalid) as missing:
        as_rep1.create("opportunity", {
            "name": "Deal", "account": "01900000-0000-7000-8000-000000000000"})
    assert list(unreadable.value.details) == ["account"]
    assert list(missing.value.details) == ["account"]
    assert "No Account record" in unreadable.value.details["account"][0]


def test_unchanged_lookup_stays_editable(
    platform: Platform, crm: TenantRuntime, admin: Actor, reps: tuple[Actor, Actor]
) -> None:
    rep1, rep2 = reps
    theirs = service(platform, crm, rep2).create("account", {"name": "Rep2 Ltd"})
    deal = service(platform, crm, admin).create("opportunity", {
        "name": "Deal", "account": theirs["id"], "owner_id": rep1.user_id})
    changed = service(platform, crm, rep1).update(
        "opportunity", deal["id"], {"name": "Deal 2", "account": theirs["id"]})
    assert changed["name"] == "Deal 2"


def with_lead_import(platform: Platform, crm: TenantRuntime, tmp_path: Path) -> None:
    """Apply the standard template plus a permission set that imports leads."""
    write_folder(tmp_path / "crm", {
        "definition.json": {
            "format": 1, "name": "crm", "label": "CRM", "version": "1.0.0",
            "extends": str(STANDARD_CRM),
        },
        "entities/.keep": "",
        "permission_sets/lead_import.json": {
            "name": "lead_import", "label": "Lead import",
            "entities": {"lead": {"read": "own", "create": True, "import": True}},
        },
    })
    platform.apply(crm.slug, load_definition(tmp_path / "crm"))


def test_import_key_matches_readable_only(
    platform: Platform, crm: TenantRuntime, admin: Actor,
    reps: tuple[Actor, Actor], tmp_path: Path,
) -> None:
    rep1, rep2 = reps
    with_lead_import(platform, crm, tmp_path)
    crm = platform.runtime(crm.slug)
    SharingService(platform, crm, admin).assign_permission_set(
        rep1.user_id, "lead_import")
    service(platform, crm, rep2).create("lead", {
        "name": "Hidden", "company": "SECRET-CO"})
    importer = service(platform, crm, rep1)
    result = importer.import_batch(
        "lead", [{"name": "Guess", "company": "SECRET-CO"}], key="company",
        dry_run=True,
    )
    assert result.errors == {}
    assert result.created == 1


def test_share_with_role_lacking_right(
    platform: Platform, crm: TenantRuntime, admin: Actor, reps: tuple[Actor, Actor]
) -> None:
    rep1, _ = reps
    reader = make_member(platform, crm.slug, "product@example.com", "read_only")
    lead = service(platform, crm, rep1).create("lead", {
        "name": "Lee", "company": "Acme"})
    sharing = SharingService(platform, crm, rep1)
    agent = make_member(platform, crm.slug, "agent@example.com", "service_agent")
    with pytest.raises(RecordInvalid, match="grant no read right on lead"):
        sharing.share("lead", lead["id"], "read", user_id=agent.user_id)
    share, created = sharing.share("lead", lead["id"], "read", user_id=reader.user_id)
    assert created
    assert share.access == "read"


def test_unshare_by_other_editor_refused(
    platform: Platform, crm: TenantRuntime, reps: tuple[Actor, Actor]
) -> None:
    rep1, rep2 = reps
    own = service(platform, crm, rep1).create("account", {"name": "Rep1 Ltd"})
    deal = service(platform, crm, rep1).create("opportunity", {
        "name": "Deal", "account": own["id"]})
    manager = make_member(platform, crm.slug, "boss@example.com", "sales_manager")
    first, _ = SharingService(platform, crm, rep1).share(
        "opportunity", deal["id"], "read", user_id=manager.user_id)
    SharingService(platform, crm, rep1).share(
        "opportunity", deal["id"], "edit", user_id=rep2.user_id)
    with pytest.raises(Forbidden, match="owner, the person who shared it"):
        SharingService(platform, crm, rep2).unshare("opportunity", deal["id"], first.id)
    SharingService(platform, crm, rep1).unshare("opportunity", deal["id"], first.id)
    remaining = SharingService(platform, crm, rep1).shares("opportunity", deal["id"])
    assert [share.user_id for share in remaining] == [rep2.user_id]
