"""Tenant archives: a zip that contains a tenant's definition and every record.

One format serves both a customer's export (``tenant import`` reads it into
a new tenant) and an operator's backup (``restore`` puts it back into the
same tenant). An archive contains:

- ``definition/definition.json`` and ``definition/entities/<name>.json``:
  the merged documents of the tenant's definition, which
  ``metadata_engine.loader.compile_documents`` compiles (strip the
  ``definition/`` prefix from the names);
- ``data/<entity>.csv`` and ``data/<entity>.json``: every record with its
  system columns. The JSON file has one record per line and is the one read
  back; the CSV file is for spreadsheets and other tools;
- ``sequences.json``: the auto-number sequence values, so that numbers
  handed out after an import or restore do not repeat stored ones;
- ``journal.jsonl``: the change journal, one entry per line, oldest first,
  so that record history survives a move or a restore;
- ``access/<table>.jsonl``: the rows of the tenant data behind record
  permissions (``ACCESS_TABLES``: teams, team members, reporting lines,
  their derived hierarchy, permission set assignments and manual shares),
  one row per line. Archives written before these existed have none, and
  loading them leaves those tables as they are;
- ``webhooks/endpoints.jsonl``: the webhook endpoints, one per line, with
  their secrets still encrypted, so the tenant that loads them needs the same
  encryption key. The outbox and the delivery log are not carried, so a
  restore never sends an event again. Archives without this member leave the
  endpoints as they are;
- ``process/<table>.jsonl``: what workflows and automation keep
  (``PROCESS_TABLES``: transition history, approval requests,
  notifications and the time rules that came due), one row per line;
  archives without them leave those tables as they are;
- ``manifest.json``: format version, tenant, metadata hash, export time,
  record counts per entity and the SHA-256 of every other member.

Records are written and read page by page, so memory use does not grow with
the number of records. Owner and creator ids are stored as they are: an
imported record may name a user that does not exist on the target instance.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import hashlib
import io
import json
import logging
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from metadata_engine.errors import DefinitionError
from metadata_engine.loader import compile_documents
from metadata_engine.merge import document_folder
from metadata_engine.model import SYSTEM_COLUMNS, Definition, Entity
from metadata_engine.sqltypes import UTCDateTime
from metadata_engine.tables import build_service_tables

from . import journal
from .control import Actor
from .errors import PlatformError
from .exporter import PAGE_SIZE, csv_cell, iter_records, to_json_value
from .records import erase_fields
from .tenancy import Platform, TenantRuntime

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SEQUENCES = "sequences.json"
JOURNAL = "journal.jsonl"
ACCESS_PREFIX = "access/"
#: The access tables in load order: teams before the rows that refer to them.
ACCESS_TABLES: tuple[str, ...] = (
    "_teams",
    "_team_members",
    "_reporting",
    "_hierarchy",
    "_permission_set_assignments",
    "_shares",
)
DEFINITION_PREFIX = "definition/"
DATA_PREFIX = "data/"
#: Largest uncompressed size accepted for one member, as declared in the zip
#: directory, in bytes. Bigger members are rejected before any is read.
MAX_MEMBER_SIZE = 1 << 30
#: Largest uncompressed size of all members together, in bytes.
MAX_TOTAL_SIZE = 16 << 30
_DOCUMENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}\.json$")
_DECIMAL_TYPES = {"decimal", "currency", "percent"}
_SERVICE_TABLES = sa.MetaData()
build_service_tables(_SERVICE_TABLES)
WEBHOOK_ENDPOINTS_MEMBER = "webhooks/endpoints.jsonl"
PROCESS_PREFIX = "process/"
#: The tables of workflows and automation that archives carry.
PROCESS_TABLES: tuple[str, ...] = (
    "_transitions",
    "_approval_requests",
    "_notifications",
    "_automation_runs",
)
_WEBHOOK_ENDPOINTS = _SERVICE_TABLES.tables["_webhook_endpoints"]
Progress = Callable[[str, int], None]


class ArchiveError(PlatformError):
    """An archive that cannot be read, or records that cannot be loaded."""


@dataclass
class Manifest:
    """The parsed ``manifest.json`` of an archive."""

    slug: str
    name: str
    metadata_hash: str
    exported_at: str
    counts: dict[str, int]
    files: dict[str, str]
    kind: str = "export"
    #: Entries in ``journal.jsonl``; archives written before the journal
    #: existed have none.
    counts_journal: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "tenant": {"slug": self.slug, "name": self.name},
            "metadata_hash": self.metadata_hash,
            "exported_at": self.exported_at,
            "record_counts": self.counts,
            "journal_entries": self.counts_journal,
            "files": self.files,
        }


# Writing


def write_archive(
    platform: Platform,
    slug: str,
    output: Path,
    actor: Actor,
    kind: str = "export",
    progress: Progress | None = None,
) -> Manifest:
    """Write tenant ``slug``'s definition and records to the zip ``output``."""
    runtime = platform.runtime(slug)
    service = platform.records(runtime, actor)
    definition = runtime.definition
    manifest = Manifest(
        slug=slug,
        name=runtime.tenant.name,
        metadata_hash=definition.content_hash,
        exported_at=dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        counts={},
        files={},
        kind=kind,
    )
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, document in definition.documents.items():
            text = json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True)
            _write_member(archive, manifest, DEFINITION_PREFIX + key, text.encode())
        for entity in definition.entities:
            manifest.counts[entity.name] = _write_entity(
                archive, manifest, service, entity, progress
            )
        sequences = json.dumps(read_sequences(runtime), indent=2, sort_keys=True)
        _write_member(archive, manifest, SEQUENCES, sequences.encode())
        with tempfile.TemporaryFile() as spool:
            manifest.counts_journal = _write_journal(runtime, spool)
            manifest.files[JOURNAL] = _copy_member(archive, JOURNAL, spool)
        _write_access(archive, manifest, runtime)
        _write_table(archive, manifest, runtime, _WEBHOOK_ENDPOINTS,
                     WEBHOOK_ENDPOINTS_MEMBER)
        for name in PROCESS_TABLES:
            _write_table(archive, manifest, runtime, _SERVICE_TABLES.tables[name],
                         _process_member(name))
        text = json.dumps(manifest.as_json(), ensure_ascii=False, indent=2)
        archive.writestr(MANIFEST, text)
    log.info("wrote %s archive of tenant %s to %s", kind, slug, output)
    return manifest


def _write_member(
    archive: zipfile.ZipFile, manifest: Manifest, name: str, data: bytes
) -> None:
    archive.writestr(name, data)
    manifest.files[name] = hashlib.sha256(data).hexdigest()


def _write_entity(
    archive: zipfile.ZipFile,
    manifest: Manifest,
    service: Any,
    entity: Entity,
    progress: Progress | None,
) -> int:
    # A zip takes one member at a time, so both files are spooled to
    # temporary files while the records are read once, then copied in.
    with tempfile.TemporaryFile() as csv_spool, tempfile.TemporaryFile() as json_spool:
        count = _write_rows(service, entity, csv_spool, json_spool, progress)
        for spool, suffix in ((csv_spool, "csv"), (json_spool, "json")):
            name = f"{DATA_PREFIX}{entity.name}.{suffix}"
            manifest.files[name] = _copy_member(archive, name, spool)
    return count


def _copy_member(archive: zipfile.ZipFile, name: str, source: IO[bytes]) -> str:
    """Copy ``source`` from its start into the member ``name`` and return the
    member's SHA-256."""
    digest = hashlib.sha256()
    source.seek(0)
    with archive.open(name, "w", force_zip64=True) as member:
        while chunk := source.read(1 << 16):
            digest.update(chunk)
            member.write(chunk)
    return digest.hexdigest()


def _write_rows(
    service: Any,
    entity: Entity,
    csv_output: IO[bytes],
    json_output: IO[bytes],
    progress: Progress | None,
) -> int:
    """Write every record as a CSV row and as one line of a JSON array."""
    columns = [*SYSTEM_COLUMNS, *entity.field_names]
    csv_text = io.TextIOWrapper(csv_output, encoding="utf-8", newline="")
    json_text = io.TextIOWrapper(json_output, encoding="utf-8", newline="\n")
    writer = csv.writer(csv_text)
    writer.writerow(columns)
    json_text.write("[")
    count = 0
    for record in iter_records(service, entity.name):
        writer.writerow([csv_cell(record.get(name)) for name in columns])
        item = {name: to_json_value(record.get(name)) for name in columns}
        json_text.write(("," if count else "") + "\n")
        json_text.write(json.dumps(item, ensure_ascii=False))
        count += 1
        if progress and count % PAGE_SIZE == 0:
            progress(entity.name, PAGE_SIZE)
    json_text.write("\n]\n")
    # Detaching flushes the wrappers and leaves the streams open for the
    # caller, which closes them.
    csv_text.detach()
    json_text.detach()
    if progress:
        progress(entity.name, count % PAGE_SIZE)
    return count


def _write_journal(runtime: TenantRuntime, output: IO[bytes]) -> int:
    """Write the change journal as JSON lines, oldest first; returns the
    number of entries."""
    count = 0
    after = 0
    with runtime.engine.connect() as conn:
        while entries := journal.entries_after(conn, after):
            for entry in entries:
                line = json.dumps(entry.as_json(), ensure_ascii=False) + "\n"
                output.write(line.encode("utf-8"))
            count += len(entries)
            after = entries[-1].seq
    return count


def _write_access(
    archive: zipfile.ZipFile, manifest: Manifest, runtime: TenantRuntime
) -> None:
    """Write each access table as ``access/<table>.jsonl``, in key order."""
    for name in ACCESS_TABLES:
        table = _SERVICE_TABLES.tables[name]
        member = f"{ACCESS_PREFIX}{name.removeprefix('_')}.jsonl"
        _write_table(archive, manifest, runtime, table, member)


def _write_table(
    archive: zipfile.ZipFile, manifest: Manifest, runtime: TenantRuntime,
    table: sa.Table, member: str,
) -> None:
    """Write every row of a service table as JSON lines, in key order."""
    order = list(table.primary_key.columns)
    with tempfile.TemporaryFile() as spool:
        with runtime.engine.connect() as conn:
            rows = conn.execute(sa.select(table).order_by(*order))
            for row in rows.mappings():
                item = {key: _access_value(value) for key, value in row.items()}
                line = json.dumps(item, ensure_ascii=False) + "\n"
                spool.write(line.encode("utf-8"))
        manifest.files[member] = _copy_member(archive, member, spool)


def _access_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def read_sequences(runtime: TenantRuntime) -> dict[str, int]:
    """Return every auto-number sequence of the tenant by its name."""
    sequences = _SERVICE_TABLES.tables["_sequences"]
    with runtime.engine.connect() as conn:
        rows = conn.execute(sa.select(sequences.c.name, sequences.c.value))
        return {str(row.name): int(row.value) for row in rows}


# Reading


class Archive:
    """A checked archive, open for reading.

    Opening it checks the member names and declared sizes, parses the
    manifest and compares every member's SHA-256 with it, so nothing is
    created from an archive that fails any check.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise ArchiveError(
                f"{str(path)!r} is not a readable zip archive ({err}): pass a file "
                "written by 'metacrm tenant export' or 'metacrm backup'"
            ) from err
        try:
            self._check_members()
            self.manifest = self._read_manifest()
            self._check_checksums()
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            self.zip.close()
            raise ArchiveError(
                f"{str(path)!r} is damaged ({err}): use an intact copy"
            ) from err
        except BaseException:
            self.zip.close()
            raise

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_members(self) -> None:
        total = 0
        for info in self.zip.infolist():
            _check_member_name(self.path, info.filename)
            if info.file_size > MAX_MEMBER_SIZE:
                raise ArchiveError(
                    f"member {info.filename!r} of {str(self.path)!r} declares "
                    f"{info.file_size} bytes, over the limit of {MAX_MEMBER_SIZE}: "
                    "the archive is damaged or was not written by MetaCRM"
                )
            total += info.file_size
        if total > MAX_TOTAL_SIZE:
            raise ArchiveError(
                f"{str(self.path)!r} declares {total} bytes in all, over the "
                f"limit of {MAX_TOTAL_SIZE}"
            )

    def _read_manifest(self) -> Manifest:
        try:
            raw = json.loads(self.read_bytes(MANIFEST))
            tenant = raw["tenant"]
            version = raw["format_version"]
            manifest = Manifest(
                slug=str(tenant["slug"]),
                name=str(tenant["name"]),
                metadata_hash=str(raw["metadata_hash"]),
                exported_at=str(raw["exported_at"]),
                counts={str(k): int(v) for k, v in raw["record_counts"].items()},
                files={str(k): str(v) for k, v in raw["files"].items()},
                kind=str(raw.get("kind", "export")),
                counts_journal=int(raw.get("journal_entries", 0)),
            )
        except KeyError as err:
            raise ArchiveError(
                f"{MANIFEST} of {str(self.path)!r} is missing or lacks {err}"
            ) from err
        except (ValueError, TypeError, AttributeError) as err:
            raise ArchiveError(
                f"{MANIFEST} of {str(self.path)!r} is invalid: {err}"
            ) from err
        if version != FORMAT_VERSION:
            raise ArchiveError(
                f"{str(self.path)!r} has archive format {version!r}, but this version "
                f"of MetaCRM reads format {FORMAT_VERSION} only: export it again with "
                "this version"
            )
        return manifest

    def _check_checksums(self) -> None:
        names = set(self.zip.namelist()) - {MANIFEST}
        listed = set(self.manifest.files)
        for name in sorted(names - listed):
            raise ArchiveError(
                f"member {name!r} of {str(self.path)!r} is not listed in "
                f"{MANIFEST}: the archive was changed after it was written"
            )
        for name in sorted(listed):
            if name not in names:
                raise ArchiveError(
                    f"member {name!r} listed in {MANIFEST} is missing from "
                    f"{str(self.path)!r}"
                )
            digest = hashlib.sha256()
            with self.zip.open(name) as member:
                while chunk := member.read(1 << 16):
                    digest.update(chunk)
            if digest.hexdigest() != self.manifest.files[name]:
                raise ArchiveError(
                    f"checksum mismatch in {name!r} of {str(self.path)!r}: the file "
                    "was changed or damaged after export; use an intact copy"
                )

    def read_bytes(self, name: str) -> bytes:
        try:
            with self.zip.open(name) as member:
                return member.read(MAX_MEMBER_SIZE + 1)
        except KeyError as err:
            raise ArchiveError(
                f"member {name!r} is missing from {str(self.path)!r}"
            ) from err

    def definition(self) -> Definition:
        """Compile the archived definition documents."""
        documents: dict[str, Any] = {}
        for name in self.manifest.files:
            if name.startswith(DEFINITION_PREFIX):
                key = name.removeprefix(DEFINITION_PREFIX)
                documents[key] = json.loads(self.read_bytes(name))
        try:
            return compile_documents(documents)
        except DefinitionError as err:
            raise ArchiveError(
                f"the definition in {str(self.path)!r} is invalid: {err}"
            ) from err

    def sequences(self) -> dict[str, int]:
        if SEQUENCES not in self.manifest.files:
            return {}
        raw = json.loads(self.read_bytes(SEQUENCES))
        return {str(name): int(value) for name, value in raw.items()}

    def journal_entries(self) -> Iterator[dict[str, Any]]:
        """Yield the archived journal entries as rows of ``_journal``."""
        if JOURNAL not in self.manifest.files:
            return
        with self.zip.open(JOURNAL) as member:
            lines = io.TextIOWrapper(member, encoding="utf-8", newline="\n")
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield _journal_row(self.path, number, line)

    @property
    def has_access_tables(self) -> bool:
        """Return True if the archive contains the access tables."""
        return any(name.startswith(ACCESS_PREFIX) for name in self.manifest.files)

    def access_rows(
        self, table: sa.Table, name: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield the archived rows of service table ``table``, checked, from
        member ``name`` (default: the table's file under ``access/``)."""
        name = name or f"{ACCESS_PREFIX}{table.name.removeprefix('_')}.jsonl"
        if name not in self.manifest.files:
            return
        with self.zip.open(name) as member:
            lines = io.TextIOWrapper(member, encoding="utf-8", newline="\n")
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield _access_row(table, f"{name} line {number}", line)

    def iter_rows(self, entity_name: str) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (row number, record as JSON) of ``data/<entity>.json``."""
        name = f"{DATA_PREFIX}{entity_name}.json"
        if name not in self.manifest.files:
            return
        with self.zip.open(name) as member:
            lines = io.TextIOWrapper(member, encoding="utf-8", newline="\n")
            number = 0
            for line in lines:
                text = line.strip().rstrip(",")
                if text in {"[", "]", ""}:
                    continue
                number += 1
                try:
                    yield number, json.loads(text)
                except ValueError as err:
                    raise ArchiveError(
                        f"{name} row {number}: invalid JSON ({err})"
                    ) from err


def _journal_row(path: Path, number: int, line: str) -> dict[str, Any]:
    place = f"{JOURNAL} line {number} of {str(path)!r}"
    try:
        raw = json.loads(line)
        row = {
            "seq": int(raw["seq"]),
            "at": _datetime(str(raw["at"])),
            "actor_id": _optional_text(raw.get("actor_id")),
            "action": str(raw["action"]),
            "entity": str(raw["entity"]),
            "record_id": str(raw["record_id"]),
            "version": None if raw.get("version") is None else int(raw["version"]),
            "changes": raw["changes"],
            "request_id": _optional_text(raw.get("request_id")),
        }
    except (KeyError, ValueError, TypeError) as err:
        raise ArchiveError(f"{place} is invalid: {err!r}") from err
    if row["action"] not in journal.ACTIONS or not isinstance(row["changes"], dict):
        raise ArchiveError(
            f"{place} is invalid: action {row['action']!r} must be one of "
            f"{', '.join(journal.ACTIONS)} and changes a JSON object"
        )
    return row


def _access_row(table: sa.Table, place: str, line: str) -> dict[str, Any]:
    """Parse one archived row of an access table: a JSON object with
    exactly the table's columns."""
    try:
        raw = json.loads(line)
    except ValueError as err:
        raise ArchiveError(f"{place} is invalid JSON: {err}") from err
    columns = set(table.columns.keys())
    if not isinstance(raw, dict) or set(raw) != columns:
        keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ArchiveError(
            f"{place} is invalid: expected an object with the columns "
            f"{', '.join(sorted(columns))}, got {keys!r}"
        )
    for column in table.columns:
        value = raw[column.name]
        if isinstance(column.type, UTCDateTime) and value is not None:
            try:
                raw[column.name] = _datetime(str(value))
            except ValueError as err:
                raise ArchiveError(
                    f"{place} has an invalid {column.name}: {err}"
                ) from err
    return raw


def _load_access(conn: sa.Connection, archive: Archive) -> dict[str, int]:
    """Replace the access tables with the archived rows; returns the rows
    loaded per table. An archive without them changes nothing."""
    if not archive.has_access_tables:
        log.info("%s contains no access tables, so teams, reporting lines, "
                 "permission set assignments and shares are left as they are",
                 archive.path)
        return {}
    for name in reversed(ACCESS_TABLES):
        conn.execute(_SERVICE_TABLES.tables[name].delete())
    counts: dict[str, int] = {}
    for name in ACCESS_TABLES:
        table = _SERVICE_TABLES.tables[name]
        counts[name] = _load_rows(conn, archive, table)
    return counts


def _load_rows(
    conn: sa.Connection, archive: Archive, table: sa.Table, member: str | None = None
) -> int:
    """Insert the archived rows of service table ``table`` from ``member``
    (default: its file under ``access/``) page by page; returns how many."""
    count = 0
    batch: list[dict[str, Any]] = []
    for row in archive.access_rows(table, member):
        batch.append(row)
        if len(batch) == PAGE_SIZE:
            count += _insert_access(conn, table, batch)
            batch = []
    if batch:
        count += _insert_access(conn, table, batch)
    return count


def _process_member(table_name: str) -> str:
    return f"{PROCESS_PREFIX}{table_name.removeprefix('_')}.jsonl"


def _load_process_tables(conn: sa.Connection, archive: Archive) -> dict[str, int]:
    """Replace the workflow and automation tables with the archived rows;
    returns the rows loaded per table. An archive without them changes
    nothing."""
    counts: dict[str, int] = {}
    for name in PROCESS_TABLES:
        member = _process_member(name)
        if member not in archive.manifest.files:
            continue
        table = _SERVICE_TABLES.tables[name]
        conn.execute(table.delete())
        counts[name] = _load_rows(conn, archive, table, member)
    return counts


def _load_webhook_endpoints(conn: sa.Connection, archive: Archive) -> int:
    """Replace the webhook endpoints with the archived ones, secrets still
    encrypted; returns how many were loaded. An archive without them changes
    nothing."""
    table = _WEBHOOK_ENDPOINTS
    if WEBHOOK_ENDPOINTS_MEMBER not in archive.manifest.files:
        return 0
    conn.execute(table.delete())
    return _load_rows(conn, archive, table, WEBHOOK_ENDPOINTS_MEMBER)


def _insert_access(
    conn: sa.Connection, table: sa.Table, batch: list[dict[str, Any]]
) -> int:
    try:
        conn.execute(table.insert(), batch)
    except sa.exc.DBAPIError as err:
        raise ArchiveError(
            f"the database rejected a row of {table.name} from the archive "
            f"({err.orig}): the archive is inconsistent"
        ) from err
    return len(batch)


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _load_journal(conn: sa.Connection, archive: Archive) -> int:
    """Insert the archived journal in batches; returns the entries loaded."""
    count = 0
    batch: list[dict[str, Any]] = []
    for row in archive.journal_entries():
        batch.append(row)
        if len(batch) == PAGE_SIZE:
            conn.execute(journal.JOURNAL.insert(), batch)
            count += len(batch)
            batch = []
    if batch:
        conn.execute(journal.JOURNAL.insert(), batch)
        count += len(batch)
    # The journal is read after the sequences when an archive is written, so
    # a write in between can leave entries past the archived counter.
    last = conn.execute(sa.select(sa.func.max(journal.JOURNAL.c.seq))).scalar()
    if last is not None:
        counter = journal.SEQUENCES
        stored = conn.execute(
            sa.select(counter.c.value).where(counter.c.name == journal.COUNTER_NAME)
        ).scalar()
        if stored is None:
            conn.execute(counter.insert().values(name=journal.COUNTER_NAME, value=last))
        elif stored < last:
            conn.execute(
                counter.update()
                .where(counter.c.name == journal.COUNTER_NAME)
                .values(value=last)
            )
    if count != archive.manifest.counts_journal:
        raise ArchiveError(
            f"loaded {count} journal entries from {str(archive.path)!r}, but its "
            f"{MANIFEST} lists {archive.manifest.counts_journal}: the archive is "
            "inconsistent"
        )
    return count


def _check_member_name(path: Path, name: str) -> None:
    parts = name.split("/")
    unsafe = (
        name.startswith("/")
        or "\\" in name
        or ":" in name
        or any(part in {"", ".", ".."} for part in parts)
    )
    if unsafe:
        raise ArchiveError(
            f"unsafe member name {name!r} in {str(path)!r}: archive members must "
            "be relative paths without '..'"
        )


# Loading records


def entity_order(definition: Definition) -> list[Entity]:
    """Return the entities with each lookup target before the entities that
    point at it, as far as cycles allow (self-references are ignored)."""
    remaining = {entity.name: entity for entity in definition.entities}
    ordered: list[Entity] = []
    while remaining:
        ready = [
            entity
            for entity in remaining.values()
            if all(
                field.target not in remaining or field.target == entity.name
                for field in entity.lookups
            )
        ]
        if not ready:
            # A cycle: take the first entity left. Its lookups into the cycle
            # are filled in a second pass.
            ready = [next(iter(remaining.values()))]
        for entity in ready:
            ordered.append(entity)
            del remaining[entity.name]
    return ordered


def convert_row(entity: Entity, number: int, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Turn one record as stored in JSON back into column values."""
    values: dict[str, Any] = {}
    for name in SYSTEM_COLUMNS:
        value = raw.get(name)
        if name in {"created_at", "updated_at"}:
            value = _parse(entity, number, name, value, _datetime)
        values[name] = value
    for field in entity.fields:
        value = raw.get(field.name)
        if field.type in _DECIMAL_TYPES:
            value = _parse(entity, number, field.name, value, decimal.Decimal)
        elif field.type == "datetime":
            value = _parse(entity, number, field.name, value, _datetime)
        elif field.type == "date":
            value = _parse(entity, number, field.name, value, dt.date.fromisoformat)
        values[field.name] = value
    if not values["id"]:
        raise ArchiveError(f"{entity.name} row {number}: field 'id' is empty")
    return values


def _datetime(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return value.astimezone(dt.UTC)


def _parse(
    entity: Entity, number: int, name: str, value: Any, parse: Callable[[str], Any]
) -> Any:
    if value is None:
        return None
    try:
        return parse(str(value))
    except (ValueError, ArithmeticError) as err:
        raise ArchiveError(
            f"{entity.name} row {number}: field {name!r} has invalid value "
            f"{value!r} ({err})"
        ) from err


def load_records(
    conn: sa.Connection,
    runtime: TenantRuntime,
    archive: Archive,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Insert every archived record into ``runtime``'s tables through ``conn``
    and return the count per entity.

    Lookups to an entity not yet loaded (a cycle) or to the same entity are
    inserted empty and filled in a second pass once all rows exist.
    """
    definition = runtime.definition
    loaded: set[str] = set()
    deferred: list[tuple[Entity, list[str]]] = []
    counts: dict[str, int] = {}
    for entity in entity_order(definition):
        later = [
            field.name
            for field in entity.lookups
            if field.target not in loaded or field.target == entity.name
        ]
        counts[entity.name] = _insert_entity(
            conn, runtime, archive, entity, later, progress
        )
        loaded.add(entity.name)
        if later:
            deferred.append((entity, later))
    for entity, names in deferred:
        _fill_lookups(conn, runtime, archive, entity, names)
    return counts


def _insert_entity(
    conn: sa.Connection,
    runtime: TenantRuntime,
    archive: Archive,
    entity: Entity,
    later: list[str],
    progress: Progress | None,
) -> int:
    table = runtime.tables[entity.name]
    batch: list[tuple[int, dict[str, Any]]] = []
    count = 0
    for number, raw in archive.iter_rows(entity.name):
        values = convert_row(entity, number, raw)
        for name in later:
            values[name] = None
        batch.append((number, values))
        if len(batch) >= PAGE_SIZE:
            count += _execute_batch(conn, entity, table.insert(), batch)
            if progress:
                progress(entity.name, len(batch))
            batch = []
    if batch:
        count += _execute_batch(conn, entity, table.insert(), batch)
        if progress:
            progress(entity.name, len(batch))
    return count


def _fill_lookups(
    conn: sa.Connection,
    runtime: TenantRuntime,
    archive: Archive,
    entity: Entity,
    names: list[str],
) -> None:
    table = runtime.tables[entity.name]
    statement = (
        table.update()
        .where(table.c.id == sa.bindparam("_id"))
        .values({name: sa.bindparam(f"v_{name}") for name in names})
    )
    batch: list[tuple[int, dict[str, Any]]] = []
    for number, raw in archive.iter_rows(entity.name):
        if not any(raw.get(name) for name in names):
            continue
        parameters = {f"v_{name}": raw.get(name) for name in names}
        parameters["_id"] = raw.get("id")
        batch.append((number, parameters))
        if len(batch) >= PAGE_SIZE:
            _execute_batch(conn, entity, statement, batch)
            batch = []
    if batch:
        _execute_batch(conn, entity, statement, batch)


def _execute_batch(
    conn: sa.Connection,
    entity: Entity,
    statement: Any,
    batch: list[tuple[int, dict[str, Any]]],
) -> int:
    try:
        conn.execute(statement, [values for _, values in batch])
    except sa.exc.DBAPIError as err:
        first, last = batch[0][0], batch[-1][0]
        raise ArchiveError(
            f"{entity.name} rows {first}-{last}: the database rejected one of "
            f"them ({err.orig}). The constraint named there identifies the field"
        ) from err
    return len(batch)


def write_sequences(conn: sa.Connection, sequences: Mapping[str, int]) -> None:
    """Replace every auto-number sequence value with ``sequences``."""
    table = _SERVICE_TABLES.tables["_sequences"]
    conn.execute(table.delete())
    if sequences:
        conn.execute(
            table.insert(),
            [{"name": name, "value": value} for name, value in sequences.items()],
        )


# Import and restore


def import_archive(
    platform: Platform, slug: str, path: Path, progress: Progress | None = None
) -> dict[str, int]:
    """Create tenant ``slug`` from the archive at ``path`` with every record.

    The archive is checked before anything is created, and the new tenant
    is dropped again if any record fails to load.
    """
    with Archive(path) as archive:
        if platform.control.find_tenant(slug) is not None:
            raise ArchiveError(
                f"tenant {slug!r} already exists: import into a new slug, or use "
                "'metacrm restore' to replace an existing tenant's records"
            )
        definition = archive.definition()
        runtime = _create_from(platform, slug, archive.manifest.name, definition)
        try:
            with runtime.engine.begin() as conn:
                counts = load_records(conn, runtime, archive, progress)
                _check_counts(archive, counts)
                write_sequences(conn, archive.sequences())
                _load_journal(conn, archive)
                _load_access(conn, archive)
                _load_webhook_endpoints(conn, archive)
                _load_process_tables(conn, archive)
        except BaseException:
            log.exception(
                "import of %s into tenant %s failed, so the tenant is dropped",
                path,
                slug,
            )
            platform.drop_tenant(runtime.tenant)
            raise
    log.info("imported tenant %s from %s: %s", slug, path, counts)
    return counts


def _create_from(
    platform: Platform, slug: str, name: str, definition: Definition
) -> TenantRuntime:
    """Create a tenant from compiled documents through ``create_tenant``,
    which only accepts a folder, so the documents are written to one."""
    with tempfile.TemporaryDirectory(prefix="metacrm-import-") as folder:
        root = Path(folder)
        (root / "entities").mkdir()
        for key, document in definition.documents.items():
            folder_name = document_folder(key)
            valid = key == "definition.json" or (
                folder_name is not None
                and _DOCUMENT_NAME.match(key.removeprefix(folder_name + "/"))
            )
            if not valid:
                raise ArchiveError(
                    f"invalid definition document name {key!r}: expected "
                    "definition.json or FOLDER/NAME.json, with FOLDER entities, "
                    "roles, permission_sets, sharing_rules, permission_tests or "
                    "rule_tests"
                )
            path = root / key
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        return platform.create_tenant(slug, root, name)


def restore_archive(
    platform: Platform,
    slug: str,
    path: Path,
    apply_definition: bool = False,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Replace every record and sequence of tenant ``slug`` with the archive's.

    Runs in one transaction, so a failure leaves the tenant as it was. With
    ``apply_definition``, an archive with another metadata hash first has
    its definition applied, which only adds entities, fields and indexes.
    """
    with Archive(path) as archive:
        runtime = platform.runtime(slug)
        current = runtime.definition.content_hash
        if archive.manifest.metadata_hash != current:
            if not apply_definition:
                raise ArchiveError(
                    f"the archive's metadata hash {archive.manifest.metadata_hash!r}"
                    f" differs from tenant {slug!r}'s {current!r}: pass "
                    "--apply-definition to apply the archived definition first"
                )
            # NOTE: applying runs in its own transaction, before the records
            # are replaced, so a failed restore keeps the applied definition.
            runtime = platform.apply(slug, archive.definition(), applied_by="restore")
        with runtime.engine.begin() as conn:
            journal.lock(conn)
            erased = journal.erasures(conn)
            _delete_records(conn, runtime)
            conn.execute(journal.JOURNAL.delete())
            counts = load_records(conn, runtime, archive, progress)
            _check_counts(archive, counts)
            write_sequences(conn, archive.sequences())
            _load_journal(conn, archive)
            _load_access(conn, archive)
            _load_webhook_endpoints(conn, archive)
            _load_process_tables(conn, archive)
            _erase_again(conn, runtime, erased)
    log.info("restored tenant %s from %s: %s", slug, path, counts)
    return counts


def _erase_again(
    conn: sa.Connection,
    runtime: TenantRuntime,
    erased: list[tuple[str, str, list[str]]],
) -> None:
    """Erase again, in the restored records and journal, what the tenant's
    journal records as erased before the restore, so that restoring an older
    backup never brings back a person's erased data."""
    targets = [
        (entity, record_id, names)
        for entity, record_id, names in erased
        if runtime.definition.has_entity(entity)
    ]
    if not targets:
        return
    entries = journal.Journal(actor_id=None)
    entries.start(conn)
    done = erase_fields(conn, runtime, targets, entries, missing_ok=True)
    entries.write(conn)
    log.warning(
        "restore of tenant %s erased again the personal fields of %d records "
        "erased before the restore",
        runtime.slug,
        len(done),
    )


def _check_counts(archive: Archive, counts: Mapping[str, int]) -> None:
    """Raise if the records loaded differ in number from the manifest's."""
    for name, count in counts.items():
        expected = archive.manifest.counts.get(name, 0)
        if count != expected:
            raise ArchiveError(
                f"loaded {count} {name} records from {str(archive.path)!r}, but "
                f"its {MANIFEST} lists {expected}: the archive is inconsistent"
            )


def _delete_records(conn: sa.Connection, runtime: TenantRuntime) -> None:
    """Delete every record, emptying lookups first so that no foreign key
    blocks a delete, whatever the order of entities."""
    for entity in runtime.definition.entities:
        names = [field.name for field in entity.lookups]
        if names:
            table = runtime.tables[entity.name]
            conn.execute(table.update().values({name: None for name in names}))
    for entity in runtime.definition.entities:
        conn.execute(runtime.tables[entity.name].delete())
