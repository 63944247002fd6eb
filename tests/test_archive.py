"""Tenant archives: export and import into a new tenant, backup and restore,
and archives that are damaged or hostile."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from crm_platform.archive import (
    MAX_MEMBER_SIZE,
    ArchiveError,
    import_archive,
    restore_archive,
    write_archive,
)
from crm_platform.cli import main
from crm_platform.config import Settings
from crm_platform.control import Actor
from crm_platform.querying import ListQuery
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from crm_platform.workflows import WorkflowService
from metadata_engine.loader import load_definition

from .conftest import ADMIN_EMAIL, STANDARD_CRM, make_member

pytestmark = pytest.mark.both_backends

Snapshot = dict[str, list[dict[str, Any]]]


def seed(records: RecordService) -> dict[str, str]:
    """Create linked records with every kind of value worth comparing."""
    account = records.create(
        "account",
        {"name": "Globex", "annual_revenue": "1234567.89", "city": "Springfield"},
    )
    other = records.create("account", {"name": "Initech"})
    contact = records.create(
        "contact",
        {
            "name": "Hank Scorpio",
            "account": account["id"],
            "birthdate": "1960-02-29",
            "do_not_call": True,
        },
    )
    campaign = records.create(
        "campaign",
        {
            "name": "Spring push",
            "status": "active",
            "tags": ["upsell", "acquisition"],
            "budget": "9999.99",
        },
    )
    opportunity = records.create(
        "opportunity",
        {
            "name": "Big deal",
            "account": account["id"],
            "contact": contact["id"],
            "campaign": campaign["id"],
            "stage": "proposal",
            "probability": "42.50",
            "amount": "100000.01",
            "close_date": "2027-01-31",
        },
    )
    records.create(
        "activity",
        {
            "name": "Kick-off call",
            "type": "call",
            "status": "planned",
            "due_at": "2027-03-01T09:30:00+02:00",
            "duration_minutes": 45,
            "opportunity": opportunity["id"],
            "account": other["id"],
        },
    )
    return {
        "account": account["id"],
        "other": other["id"],
        "contact": contact["id"],
        "opportunity": opportunity["id"],
    }


def snapshot(runtime: TenantRuntime) -> Snapshot:
    """Return every row of every entity, ordered by id."""
    result: Snapshot = {}
    with runtime.engine.connect() as conn:
        for entity in runtime.definition.entities:
            table = runtime.tables[entity.name]
            rows = conn.execute(sa.select(table).order_by(table.c.id)).mappings()
            result[entity.name] = [dict(row) for row in rows]
    return result


def rewrite_member(source: Path, target: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            content = data if info.filename == name else old.read(info.filename)
            new.writestr(info.filename, content)


def test_export_import_identical_rows(
    platform: Platform,
    crm: TenantRuntime,
    admin: Actor,
    records: RecordService,
    tmp_path: Path,
) -> None:
    seed(records)
    path = tmp_path / "acme.zip"
    write_archive(platform, "acme", path, admin)
    counts = import_archive(platform, "beta", path)
    beta = platform.runtime("beta")
    assert counts["account"] == 2
    assert beta.definition.content_hash == crm.definition.content_hash
    assert snapshot(beta) == snapshot(crm)


def test_export_keeps_typed_values(
    platform: Platform,
    crm: TenantRuntime,
    admin: Actor,
    records: RecordService,
    tmp_path: Path,
) -> None:
    ids = seed(records)
    path = tmp_path / "acme.zip"
    write_archive(platform, "acme", path, admin)
    import_archive(platform, "beta", path)
    service = platform.records(platform.runtime("beta"), admin)
    contact = service.get("contact", ids["contact"])
    opportunity = service.get("opportunity", ids["opportunity"])
    activity = service.list("activity", ListQuery(limit=100)).records[0]
    campaign = service.list("campaign", ListQuery(limit=100)).records[0]
    assert contact["do_not_call"] is True
    assert contact["birthdate"] == dt.date(1960, 2, 29)
    assert opportunity["amount"] == decimal.Decimal("100000.01")
    assert activity["due_at"] == dt.datetime(2027, 3, 1, 7, 30, tzinfo=dt.UTC)
    assert campaign["tags"] == ["acquisition", "upsell"]
    assert opportunity["owner_id"] == admin.user_id


def test_archive_contains_manifest_files(
    platform: Platform,
    crm: TenantRuntime,
    admin: Actor,
    records: RecordService,
    tmp_path: Path,
) -> None:
    seed(records)
    path = tmp_path / "acme.zip"
    write_archive(platform, "acme", path, admin)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        header = archive.read("data/account.csv").decode().splitlines()[0]
    assert "definition/definition.json" in names
    assert "definition/entities/account.json" in names
    assert "data/opportunity.json" in names
    assert manifest["record_counts"]["opportunity"] == 1
    assert manifest["metadata_hash"] == crm.definition.content_hash
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert header.startswith("id,created_at,updated_at,created_by,updated_by")


def test_tampered_archive_creates_nothing(
    platform: Platform,
    crm: TenantRuntime,
    admin: Actor,
    records: RecordService,
    tmp_path: Path,
) -> None:
    seed(records)
    path = tmp_path / "acme.zip"
    write_archive(platform, "acme", path, admin)
    with zipfile.ZipFile(path) as archive:
        data = bytearray(archive.read("data/account.csv"))
    data[-3] = ord("X") if data[-3] != ord("X") else ord("Y")
    tampered = tmp_path / "tampered.zip"
    rewrite_member(path, tampered, "data/account.csv", bytes(data))
    with pytest.raises(ArchiveError, match=r"checksum mismatch in 'data/account.csv'"):
        import_archive(platform, "beta", tampered)
    assert platform.control.find_tenant("beta") is None


def test_import_into_existing_slug(
    platform: Platform, crm: TenantRuntime, admin: Actor, tmp_path: Path
) -> None:
    path = tmp_path / "acme.zip"
    write_archive(platform, "acme", path, admin)
    with pytest.raises(ArchiveError, match=r"tenant 'acme' already exists"):
        import_archive(platform, "acme", path)


def test_failed_import_drops_tenant(
    platform: Platform,
    crm: TenantRuntime,
    admin: Actor,
    records: RecordService,
    tmp_path: Path,
) -> None:
    seed(records)
    path = tmp_path / "acme.zip"
    write_archive(platform, "acme", path, admin)
    bad = tmp_path / "bad.zip"
    break_birthdate(path, bad)
    with pytest.raises(ArchiveError, match=r"contact row 1: field 'birthdate'"):
        import_archive(platform, "beta", bad)
    assert platform.control.find_tenant("beta") is None


def edit_data(path: Path, target: Path, member: str, old: str, new: str) -> None:
    """Write a copy of the archive at ``path`` with ``old`` replaced by ``new``
    in ``member``, and the manifest's checksum updated to match."""
    with zipfile.ZipFile(path) as archive:
        text = archive.read(member).decode()
        manifest = json.loads(archive.read("manifest.json"))
    changed = text.replace(old, new).encode()
    manifest["files"][member] = _sha256(changed)
    middle = target.with_suffix(".partial")
    rewrite_member(path, middle, member, changed)
    rewrite_member(middle, target, "manifest.json", json.dumps(manifest).encode())


def break_birthdate(path: Path, target: Path) -> None:
    edit_data(
        path,
        target,
        "data/contact.json",
        '"birthdate": "1960-02-29"',
        '"birthdate": "yesterday"',
    )


def test_duplicate_id_names_rows(
    platform: Platform,
    crm: TenantRuntime,
    admin: Actor,
    records: RecordService,
    tmp_path: Path,
) -> None:
    ids = seed(records)
    path = tmp_path / "acme.zip"
    write_archive(platform, "acme", path, admin)
    bad = tmp_path / "bad.zip"
    edit_data(path, bad, "data/account.json", ids["other"], ids["account"])
    with pytest.raises(ArchiveError, match=r"account rows 1-2: the database rejected"):
        import_archive(platform, "beta", bad)
    assert platform.control.find_tenant("beta") is None


def test_failed_restore_changes_nothing(
    platform: Platform,
    crm: TenantRuntime,
    admin: Actor,
    records: RecordService,
    tmp_path: Path,
) -> None:
    ids = seed(records)
    path = tmp_path / "backup.zip"
    write_archive(platform, "acme", path, admin, kind="backup")
    bad = tmp_path / "bad.zip"
    break_birthdate(path, bad)
    records.update("account", ids["account"], {"name": "Changed"})
    records.create("account", {"name": "New"})
    before = snapshot(crm)
    with pytest.raises(ArchiveError, match=r"contact row 1: field 'birthdate'"):
        restore_archive(platform, "acme", bad)
    assert snapshot(crm) == before


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_restore_round_trip(
    platform: Platform,
    crm: TenantRuntime,
    admin: Actor,
    records: RecordService,
    tmp_path: Path,
) -> None:
    ids = seed(records)
    path = tmp_path / "backup.zip"
    write_archive(platform, "acme", path, admin, kind="backup")
    before = snapshot(crm)
    records.update("account", ids["account"], {"name": "Globex 2", "city": None})
    records.delete(
        "activity", records.list("activity", ListQuery(limit=100)).records[0]["id"]
    )
    records.delete("opportunity", ids["opportunity"])
    records.create("account", {"name": "Added after backup"})
    records.create("account", {"name": "Added twice"})
    restore_archive(platform, "acme", path)
    assert snapshot(crm) == before
    created = records.create("account", {"name": "After restore"})
    assert created["account_number"] == "ACC-000003"


def test_restore_lookup_chain(
    platform: Platform,
    crm: TenantRuntime,
    admin: Actor,
    records: RecordService,
    tmp_path: Path,
) -> None:
    ids = seed(records)
    path = tmp_path / "backup.zip"
    write_archive(platform, "acme", path, admin, kind="backup")
    with crm.engine.begin() as conn:
        for name in ("activity", "opportunity", "contact", "account", "campaign"):
            conn.execute(crm.tables[name].delete())
    restore_archive(platform, "acme", path)
    opportunity = records.get("opportunity", ids["opportunity"])
    contact = records.get("contact", ids["contact"])
    assert opportunity["account"] == ids["account"]
    assert opportunity["contact"] == ids["contact"]
    assert contact["account"] == ids["account"]


def test_restore_rejects_other_hash(
    platform: Platform, crm: TenantRuntime, admin: Actor, tmp_path: Path
) -> None:
    path = tmp_path / "backup.zip"
    write_archive(platform, "acme", path, admin, kind="backup")
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    manifest["metadata_hash"] = "0" * 64
    changed = tmp_path / "changed.zip"
    rewrite_member(path, changed, "manifest.json", json.dumps(manifest).encode())
    with pytest.raises(ArchiveError, match=r"pass --apply-definition"):
        restore_archive(platform, "acme", changed)


def test_restore_applies_definition(
    platform: Platform, crm: TenantRuntime, admin: Actor, tmp_path: Path
) -> None:
    extended = _extended_definition(tmp_path)
    runtime = platform.apply("acme", load_definition(extended))
    account = platform.records(runtime, admin).create(
        "account", {"name": "Globex", "motto": "Go"}
    )
    path = tmp_path / "backup.zip"
    write_archive(platform, "acme", path, admin, kind="backup")
    platform.create_tenant("beta", STANDARD_CRM)
    with pytest.raises(ArchiveError, match=r"differs from tenant 'beta'"):
        restore_archive(platform, "beta", path)
    restore_archive(platform, "beta", path, apply_definition=True)
    beta = platform.runtime("beta")
    service = platform.records(beta, admin)
    assert service.get("account", account["id"])["motto"] == "Go"


def _extended_definition(tmp_path: Path) -> Path:
    """Copy the standard CRM and add a text field ``motto`` to accounts."""
    folder = tmp_path / "extended"
    shutil.copytree(STANDARD_CRM, folder)
    path = folder / "entities" / "account.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["fields"].append({"name": "motto", "type": "text", "label": "Motto"})
    path.write_text(json.dumps(document), encoding="utf-8")
    return folder


def _cyclic_definition(tmp_path: Path) -> Path:
    """Copy the standard CRM with ``account.parent`` pointing at accounts and
    ``account.primary_contact`` at contacts, whose ``account`` points back."""
    folder = tmp_path / "cyclic"
    shutil.copytree(STANDARD_CRM, folder)
    path = folder / "entities" / "account.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["fields"] += [
        {
            "name": "parent",
            "type": "lookup",
            "label": "Parent",
            "target": "account",
            "on_delete": "set_null",
        },
        {
            "name": "primary_contact",
            "type": "lookup",
            "label": "Primary contact",
            "target": "contact",
            "on_delete": "set_null",
        },
    ]
    path.write_text(json.dumps(document), encoding="utf-8")
    return folder


def test_import_cycles_and_self_references(platform: Platform, tmp_path: Path) -> None:
    runtime = platform.create_tenant("cyc", _cyclic_definition(tmp_path))
    actor = make_member(platform, "cyc", ADMIN_EMAIL, "admin")
    service = platform.records(runtime, actor)
    parent = service.create("account", {"name": "Parent"})
    child = service.create("account", {"name": "Child", "parent": parent["id"]})
    contact = service.create("contact", {"name": "Ann", "account": child["id"]})
    service.update("account", child["id"], {"primary_contact": contact["id"]})
    service.update("account", parent["id"], {"parent": child["id"]})
    path = tmp_path / "cyc.zip"
    write_archive(platform, "cyc", path, actor)
    import_archive(platform, "copy", path)
    assert snapshot(platform.runtime("copy")) == snapshot(runtime)


def _write_raw_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)


def test_archive_path_traversal_rejected(platform: Platform, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    path = work / "evil.zip"
    _write_raw_zip(path, {"../../x": b"owned", "manifest.json": b"{}"})
    with pytest.raises(ArchiveError, match=r"unsafe member name '../../x'"):
        import_archive(platform, "beta", path)
    assert not (tmp_path / "x").exists()
    assert not Path("x").exists()
    assert platform.control.find_tenant("beta") is None


def test_archive_absolute_name_rejected(platform: Platform, tmp_path: Path) -> None:
    path = tmp_path / "evil.zip"
    _write_raw_zip(path, {"/abs/x": b"owned"})
    with pytest.raises(ArchiveError, match=r"unsafe member name '/abs/x'"):
        import_archive(platform, "beta", path)


def test_archive_oversized_member_rejected(platform: Platform, tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    _write_raw_zip(path, {"data/account.json": b"[]"})
    data = bytearray(path.read_bytes())
    # The central directory entry's uncompressed size sits 24 bytes after
    # its signature, as a little-endian 32-bit integer.
    entry = data.rindex(b"PK\x01\x02")
    struct.pack_into("<I", data, entry + 24, MAX_MEMBER_SIZE + 1)
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=r"declares 1073741825 bytes"):
        import_archive(platform, "beta", path)
    assert platform.control.find_tenant("beta") is None


def test_non_zip_file_rejected(platform: Platform, tmp_path: Path) -> None:
    path = tmp_path / "notes.zip"
    path.write_text("id,name\n1,not a zip\n", encoding="utf-8")
    with pytest.raises(ArchiveError, match=r"is not a readable zip archive"):
        import_archive(platform, "beta", path)
    assert platform.control.find_tenant("beta") is None


def test_archive_without_manifest_rejected(platform: Platform, tmp_path: Path) -> None:
    path = tmp_path / "empty.zip"
    _write_raw_zip(path, {"data/account.json": b"[]"})
    with pytest.raises(ArchiveError, match=r"manifest.json"):
        import_archive(platform, "beta", path)


def test_cli_export_import_backup_restore(
    settings: Settings,
    platform: Platform,
    crm: TenantRuntime,
    records: RecordService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(records)
    if settings.database_url:
        monkeypatch.setenv("METACRM_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("METACRM_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    archive = tmp_path / "acme.zip"
    steps = [
        ["tenant", "export", "acme", "--output", str(archive)],
        ["tenant", "import", "beta", str(archive)],
        ["backup", "acme", "--output", str(tmp_path / "backup.zip")],
        ["restore", "acme", str(tmp_path / "backup.zip")],
    ]
    outputs = [runner.invoke(main, step) for step in steps]
    assert [result.exit_code for result in outputs] == [0, 0, 0, 0]
    assert "created tenant beta with 6 records" in outputs[1].output
    assert snapshot(platform.runtime("beta")) == snapshot(crm)


def test_cli_import_reports_bad_archive(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if settings.database_url:
        monkeypatch.setenv("METACRM_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("METACRM_DATA_DIR", str(settings.data_dir))
    path = tmp_path / "notes.zip"
    path.write_text("not a zip", encoding="utf-8")
    result = CliRunner().invoke(main, ["tenant", "import", "beta", str(path)])
    assert result.exit_code == 1
    assert "is not a readable zip archive" in result.output


def process_rows(runtime: TenantRuntime) -> Snapshot:
    """Return the rows of the workflow and automation tables, by id."""
    result: Snapshot = {}
    with runtime.engine.connect() as conn:
        for name in ("_transitions", "_notifications"):
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            rows = conn.execute(sa.select(table).order_by(table.c.id)).mappings()
            result[name] = [dict(row) for row in rows]
    return result


def test_archive_carries_transition_history(
    platform: Platform,
    crm: TenantRuntime,
    admin: Actor,
    records: RecordService,
    tmp_path: Path,
) -> None:
    case = records.create("case", {"subject": "No signal", "type": "complaint",
                                   "priority": "high", "channel": "phone"})
    WorkflowService(records).transition("case", case["id"], "assign",
                                        comment="for the field team")
    path = tmp_path / "acme.zip"
    write_archive(platform, "acme", path, admin)
    import_archive(platform, "beta", path)
    copied = process_rows(platform.runtime("beta"))
    assert copied == process_rows(crm)
    assert [row["comment"] for row in copied["_transitions"]] == [
        "for the field team"
    ]
