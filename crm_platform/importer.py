"""CSV import: map columns to fields, convert text, validate, write in batches.

Every row goes through the entity's schema, like a write from the API. Rows
that fail are reported with their line number, field and reason, and never
stop the valid rows from being written.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metadata_engine import fieldtypes
from metadata_engine.messages import messages_for
from metadata_engine.model import Entity, Field

from .billing import require_feature
from .errors import PlatformError
from .records import RecordService

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
#: Largest CSV cell accepted, in characters; longer cells reject their row.
MAX_CELL = 100_000
ProgressCallback = Callable[[int], None]


class ImportFailed(PlatformError):
    """Raised when a file cannot be imported at all (wrong encoding, a
    mapping that names unknown fields or columns)."""

    code = "import_failed"


@dataclass
class ColumnMapping:
    """The mapping of CSV columns to fields, and the key field for updates."""

    entity: str
    columns: dict[str, list[str]]
    key: str | None = None
    _converters: list[Any] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_file(cls, path: Path) -> ColumnMapping:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ImportFailed(
                f"cannot read mapping file {str(path)!r}: {err}"
            ) from err
        if not isinstance(document, dict) or not isinstance(
            document.get("columns"), dict
        ):
            raise ImportFailed(
                f"mapping file {str(path)!r} must be a JSON object with "
                '"columns": {"CSV header": "field" or ["field", ...]}'
            )
        columns = {
            str(header): [target] if isinstance(target, str) else list(target)
            for header, target in document["columns"].items()
        }
        return cls(
            entity=str(document.get("entity", "")),
            columns=columns,
            key=document.get("key"),
        )

    @classmethod
    def by_header(cls, entity: Entity, headers: list[str]) -> ColumnMapping:
        """Map each header to the field of the same name in snake case."""
        columns = {}
        for header in headers:
            name = snake_case(header)
            if entity.has_field(name):
                columns[header] = [name]
        return cls(entity=entity.name, columns=columns)


@dataclass
class RejectedRow:
    line: int
    errors: dict[str, list[str]]
    row: dict[str, str]


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    dry_run: bool = False
    rejected: list[RejectedRow] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would create" if self.dry_run else "created"
        return (
            f"{self.rows} rows read: {verb} {self.created}, updated {self.updated}, "
            f"unchanged {self.unchanged}, rejected {len(self.rejected)}"
        )


def snake_case(header: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", header.strip())
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    return re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """Read a CSV file, naming the line of the first byte that does not decode."""
    data = path.read_bytes()
    try:
        return data.decode(
            "utf-8-sig" if encoding.lower() in {"utf-8", "utf8"} else encoding
        )
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ImportFailed(
            f"{str(path)!r} is not valid {encoding}: byte {data[err.start]:#04x} on "
            f"line {line} cannot be decoded; pass --encoding with the file's "
            "encoding (for example gbk or latin-1) or save it as UTF-8"
        ) from err
    except LookupError as err:
        raise ImportFailed(f"unknown encoding {encoding!r}") from err


def import_csv(
    service: RecordService,
    entity_name: str,
    path: Path,
    mapping: ColumnMapping | None = None,
    dry_run: bool = False,
    encoding: str = "utf-8",
    progress: ProgressCallback | None = None,
    keep_existing: bool = False,
    key: str | None = None,
    check_plan: bool = True,
) -> ImportReport:
    """Import the rows of a CSV file into ``entity_name``.

    Raises ``LimitReached`` if the tenant's plan does not include the feature
    ``import``, unless ``check_plan`` is False (an operator's override), and
    ``Forbidden`` if the user holds no import right on the entity.
    """
    if check_plan:
        require_feature(service.runtime.tenant, "import")
    # Checked before the file is read, so that a file without rows is
    # rejected too.
    entity = service.require(entity_name, "import").entity
    text = read_text(path, encoding)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        headers = next(reader)
    except StopIteration:
        raise ImportFailed(f"{str(path)!r} is empty: expected a header row") from None
    except csv.Error as err:
        raise ImportFailed(f"{str(path)!r} has a malformed header: {err}") from err
    duplicates = sorted({h for h in headers if headers.count(h) > 1})
    if duplicates:
        raise ImportFailed(
            f"{str(path)!r} has duplicate column headers: {', '.join(duplicates)}; "
            "rename them so each column has its own header"
        )
    mapping = mapping or ColumnMapping.by_header(entity, headers)
    if key:
        mapping.key = key
    check_mapping(entity, mapping, headers)
    report = ImportReport(dry_run=dry_run)
    report.ignored_columns = [h for h in headers if h not in mapping.columns]
    batch: list[tuple[int, dict[str, str], dict[str, Any], dict[str, list[str]]]] = []
    for line, cells in _rows(reader, report):
        row = dict(zip(headers, cells, strict=False))
        values, errors = convert_row(entity, mapping, row, headers, len(cells))
        batch.append((line, row, values, errors))
        if len(batch) >= BATCH_SIZE:
            _flush(service, entity_name, mapping, batch, report, dry_run, keep_existing)
            batch = []
            if progress:
                progress(report.rows)
    _flush(service, entity_name, mapping, batch, report, dry_run, keep_existing)
    if progress:
        progress(report.rows)
    log.info(
        "imported %s into %s.%s: %s",
        path.name,
        service.runtime.slug,
        entity_name,
        report.summary(),
    )
    return report


def _rows(reader: Any, report: ImportReport) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, cells), rejecting rows the CSV parser cannot read."""
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            report.rows += 1
            message = str(err)
            if "field larger than field limit" in message:
                message = f"a cell is longer than {csv.field_size_limit()} characters"
            report.rejected.append(RejectedRow(line, {"_row": [message]}, {}))
            continue
        if not any(cell.strip() for cell in cells):
            continue
        report.rows += 1
        yield line, cells


def check_mapping(entity: Entity, mapping: ColumnMapping, headers: list[str]) -> None:
    problems = []
    for header, targets in mapping.columns.items():
        if header not in headers:
            problems.append(f"column {header!r} is not in the file's header")
        for name in targets:
            if not entity.has_field(name):
                problems.append(f"column {header!r} maps to unknown field {name!r}")
            elif not entity.field(name).writable:
                problems.append(f"column {header!r} maps to read-only field {name!r}")
    if mapping.key and not entity.has_field(mapping.key):
        problems.append(f"key {mapping.key!r} is not a field of {entity.name!r}")
    if problems:
        raise ImportFailed(
            "the column mapping does not fit the file and entity "
            f"{entity.name!r}: "
            + "; ".join(problems)
            + f". Fields of {entity.name!r}: {', '.join(entity.field_names)}"
        )


def convert_row(
    entity: Entity,
    mapping: ColumnMapping,
    row: Mapping[str, str],
    headers: list[str],
    cell_count: int,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Convert one row's cells to typed values; blank cells become None."""
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    if cell_count != len(headers):
        errors["_row"] = [
            f"the row has {cell_count} cells but the header has {len(headers)}"
        ]
        return values, errors
    for header, name, metadata_field, parse in _converters(entity, mapping):
        raw = row.get(header, "")
        if len(raw) > MAX_CELL:
            errors[name] = [f"value is {len(raw)} characters; the limit is {MAX_CELL}"]
            continue
        if raw.strip() == "":
            values[name] = None
            continue
        try:
            values[name] = parse(metadata_field, raw)
        except fieldtypes.ParseError as err:
            reason = messages_for("en")[err.message_key]
            errors[name] = [f"{raw!r}: {reason}"]
    return values, errors


Converter = tuple[str, str, Field, Callable[[Field, str], Any]]


def _converters(entity: Entity, mapping: ColumnMapping) -> list[Converter]:
    """Return (header, field name, field, parser) per mapped target, built
    once per mapping so that each row does no lookups."""
    cached: list[Converter] | None = mapping._converters
    if cached is None:
        cached = [
            (
                header,
                name,
                entity.field(name),
                fieldtypes.get(entity.field(name).type).parse_text,
            )
            for header, targets in mapping.columns.items()
            for name in targets
        ]
        mapping._converters = cached
    return cached


def _flush(
    service: RecordService,
    entity_name: str,
    mapping: ColumnMapping,
    batch: list[tuple[int, dict[str, str], dict[str, Any], dict[str, list[str]]]],
    report: ImportReport,
    dry_run: bool,
    keep_existing: bool,
) -> None:
    if not batch:
        return
    clean = [(line, row, values) for line, row, values, errors in batch if not errors]
    for line, row, _, errors in batch:
        if errors:
            report.rejected.append(RejectedRow(line, errors, row))
    result = service.import_batch(
        entity_name,
        [{k: v for k, v in values.items() if v is not None} for _, _, values in clean],
        key=mapping.key,
        dry_run=dry_run,
        keep_existing=keep_existing,
    )
    report.created += result.created
    report.updated += result.updated
    report.unchanged += result.unchanged
    for index, errors in sorted(result.errors.items()):
        line, row, _ = clean[index]
        report.rejected.append(RejectedRow(line, errors, row))
    report.rejected.sort(key=lambda rejected: rejected.line)


def write_rejects(report: ImportReport, path: Path) -> None:
    """Write rejected rows with their line and reasons to a CSV file."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "field", "message", "row"])
        for rejected in report.rejected:
            row_text = json.dumps(rejected.row, ensure_ascii=False)
            for name, messages in rejected.errors.items():
                for message in messages:
                    writer.writerow([rejected.line, name, message, row_text])
