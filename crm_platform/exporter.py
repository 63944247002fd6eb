"""Export every record of an entity as CSV or JSON, page by page.

An export shows what its user may see: sensitive fields are masked unless
the user's role is one of the field's unmasked roles. The tenant archive
reads records with ``iter_records`` and keeps them in full.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
from collections.abc import Callable, Iterator
from typing import IO, Any

from metadata_engine.model import SYSTEM_COLUMNS

from .billing import require_feature
from .querying import ListQuery
from .records import RecordService
from .serialize import mask_record

PAGE_SIZE = 200
FORMATS = ("csv", "json")


def iter_records(service: RecordService, entity_name: str) -> Iterator[dict[str, Any]]:
    """Yield all records in creation order, following cursors, so memory use
    stays flat however many records there are."""
    query = ListQuery(sort=["created_at"], limit=PAGE_SIZE)
    while True:
        page = service.list(entity_name, query)
        yield from page.records
        if page.next_cursor is None:
            return
        query.cursor = page.next_cursor


#: First characters that make a spreadsheet treat a cell as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """Format a value for a CSV cell that spreadsheets will not execute.

    Text starting with a formula trigger gets a leading apostrophe, the
    usual defence against CSV injection; numbers are never changed.
    """
    text = to_text(value)
    if isinstance(value, str) and text.startswith(FORMULA_TRIGGERS):
        return "'" + text
    return text


def to_text(value: Any) -> str:
    """Format a stored value for a CSV cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (dt.date, decimal.Decimal)):
        return str(value) if isinstance(value, decimal.Decimal) else value.isoformat()
    if isinstance(value, list):
        return ";".join(str(item) for item in value)
    return str(value)


def to_json_value(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime, decimal.Decimal)):
        return to_text(value)
    return value


def export(
    service: RecordService,
    entity_name: str,
    output: IO[str],
    file_format: str = "csv",
    progress: Callable[[int], None] | None = None,
    check_plan: bool = True,
) -> int:
    """Write every record to ``output``; return how many were written.

    Raises ``LimitReached`` before writing anything if the tenant's plan does
    not include the feature ``export``, unless ``check_plan`` is False (an
    operator's override).
    """
    if check_plan:
        require_feature(service.runtime.tenant, "export")
    access = service.require(entity_name, "export")
    entity = access.entity
    columns = [*SYSTEM_COLUMNS, *(n for n in entity.field_names if access.visible(n))]
    role = service.actor.role
    records = (
        mask_record(entity, record, role)
        for record in iter_records(service, entity_name)
    )
    count = 0
    if file_format == "csv":
        writer = csv.writer(output)
        writer.writerow(columns)
        for record in records:
            writer.writerow([csv_cell(record.get(name)) for name in columns])
            count += 1
            if progress and count % PAGE_SIZE == 0:
                progress(count)
    elif file_format == "json":
        output.write("[")
        for record in records:
            item = {name: to_json_value(record.get(name)) for name in columns}
            output.write(("," if count else "") + "\n")
            output.write(json.dumps(item, ensure_ascii=False))
            count += 1
            if progress and count % PAGE_SIZE == 0:
                progress(count)
        output.write("\n]\n")
    else:
        raise ValueError(f"unknown format {file_format!r}: use one of {FORMATS}")
    if progress:
        progress(count)
    return count
