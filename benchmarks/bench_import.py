"""CSV import speed in rows per second.

MetaCRM side: ``crm_platform.importer.import_csv`` of the Telco customer CSV,
replicated to N rows with unique customer ids, into the telco example
tenant's ``account`` entity with ``examples/telco/import-accounts.json``. The
timed part reads and parses the file, converts and validates every row,
looks up existing records by the key ``customer_id``, takes auto numbers and
inserts in batches of 1,000 rows.

Baseline: one Core ``executemany`` of the same rows, converted and completed
(ids, timestamps, account numbers) before the clock starts, into the same
table of another fresh tenant, plus one ``executemany`` of an audit row per
record into the tenant's journal table, in one transaction. MetaCRM must
keep that audit trail, so a hand-written importer would write it too.

Each round of each side gets a new tenant, so both always write into an
empty table with the same indexes.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import shutil
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from uuid_utils import uuid7

from crm_platform.importer import ColumnMapping, import_csv
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform

from . import handwritten
from .common import (
    DATA_DIR,
    TELCO,
    Measurement,
    Result,
    bench_actor,
    cpu_comparison,
    interleave,
    log,
    median_rate,
    open_platform,
    spread_rate,
    timed,
)

SOURCE_CSV = TELCO / "data" / "Telco-Customer-Churn.csv"
#: The tenant's journal table, declared by hand as a baseline author would.
JOURNAL_TABLE = sa.Table(
    "_journal",
    sa.MetaData(),
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("at", sa.DateTime(), nullable=False),
    sa.Column("actor_id", sa.String(36)),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("record_id", sa.String(36), nullable=False),
    sa.Column("version", sa.Integer()),
    sa.Column("changes", sa.JSON(), nullable=False),
    sa.Column("request_id", sa.String(64)),
)
MAPPING = TELCO / "import-accounts.json"
#: The tolerated MetaCRM speed, as a share of the baseline's rows per second.
TARGET_RATIO = 1 / 3
BOOLEAN_COLUMNS = {
    "Partner": "partner",
    "Dependents": "dependents",
    "PhoneService": "phone_service",
    "PaperlessBilling": "paperless_billing",
    "Churn": "churn",
}
TEXT_COLUMNS = {
    "gender": "gender",
    "MultipleLines": "multiple_lines",
    "InternetService": "internet_service",
    "OnlineSecurity": "online_security",
    "OnlineBackup": "online_backup",
    "DeviceProtection": "device_protection",
    "TechSupport": "tech_support",
    "StreamingTV": "streaming_tv",
    "StreamingMovies": "streaming_movies",
    "Contract": "contract",
    "PaymentMethod": "payment_method",
}


def replicated_csv(rows: int) -> Path:
    """Return a CSV of ``rows`` Telco customers, written once and cached.

    Copy ``n`` of the 7,043 real rows gets the customer id ``<id>-<n>``
    (for example ``7590-VHVEG-003``), so every id is unique.
    """
    path = DATA_DIR / f"telco-{rows}.csv"
    if path.exists():
        return path
    with SOURCE_CSV.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        source = list(reader)
    id_column = header.index("customerID")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for number in range(rows):
            copy, index = divmod(number, len(source))
            cells = list(source[index])
            cells[id_column] = f"{cells[id_column]}-{copy:03d}"
            writer.writerow(cells)
    partial.replace(path)
    return path


def converted_rows(path: Path, user_id: str) -> list[dict[str, Any]]:
    """Convert the CSV by hand into complete rows of the account table.

    The values match what the importer stores: ``customerID`` fills both
    ``customer_id`` and ``name``, Yes/No and 0/1 become booleans, blank
    total charges become NULL, and the standard account's ``customer_type``
    gets its default, ``consumer``.
    """
    now = dt.datetime.now(dt.UTC)
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for number, record in enumerate(csv.DictReader(handle), start=1):
            row: dict[str, Any] = {
                "id": str(uuid7()),
                "created_at": now,
                "updated_at": now,
                "created_by": user_id,
                "updated_by": user_id,
                "owner_id": user_id,
                "version": 1,
                "account_number": f"ACC-{number:06d}",
                "customer_type": "consumer",
                "name": record["customerID"],
                "customer_id": record["customerID"],
                "senior_citizen": record["SeniorCitizen"] == "1",
                "tenure": int(record["tenure"]),
                "monthly_charges": decimal.Decimal(record["MonthlyCharges"]),
                "total_charges": _optional_decimal(record["TotalCharges"]),
            }
            for column, name in BOOLEAN_COLUMNS.items():
                row[name] = record[column] == "Yes"
            for column, name in TEXT_COLUMNS.items():
                row[name] = record[column]
            rows.append(row)
    return rows


def _optional_decimal(text: str) -> decimal.Decimal | None:
    return decimal.Decimal(text) if text.strip() else None


class ImportComparison:
    """Fresh telco tenants in one work directory, one per timed round."""

    def __init__(self, work_dir: Path, csv_path: Path, rows: int) -> None:
        self.platform: Platform = open_platform(work_dir)
        self.csv_path = csv_path
        self.rows = rows
        self.mapping = ColumnMapping.from_file(MAPPING)
        self.tenant_count = 0
        self.baseline_rows: list[dict[str, Any]] | None = None

    def _new_tenant(self, side: str) -> RecordService:
        self.tenant_count += 1
        slug = f"{side}-{self.tenant_count}"
        runtime = self.platform.create_tenant(slug, TELCO)
        return RecordService(runtime, bench_actor(self.platform, slug), "en")

    def _drop(self, service: RecordService) -> None:
        self.platform.drop_tenant(service.runtime.tenant)

    def metacrm(self) -> Measurement:
        service = self._new_tenant("metacrm")
        measurement = self._import(service)
        self._drop(service)
        return measurement

    def baseline(self) -> Measurement:
        service = self._new_tenant("baseline")
        measurement = self._insert(service)
        self._drop(service)
        return measurement

    def check_same_rows(self) -> None:
        """Run both sides once and raise unless they stored the same rows.

        Ids and timestamps differ by nature, so the check compares every
        other column.
        """
        imported = self._new_tenant("metacrm")
        inserted = self._new_tenant("baseline")
        self._import(imported)
        self._insert(inserted)
        imported_rows = _stored_rows(imported)
        inserted_rows = _stored_rows(inserted)
        if imported_rows != inserted_rows:
            different = next(
                (pair for pair in zip(imported_rows, inserted_rows, strict=False)
                 if pair[0] != pair[1]),
                None,
            )
            raise RuntimeError(
                "the baseline rows differ from what the importer stored, so the "
                f"comparison would be unfair; first difference: {different!r}"
            )
        self._drop(imported)
        self._drop(inserted)

    def _import(self, service: RecordService) -> Measurement:
        holder: dict[str, Any] = {}

        def action() -> None:
            holder["report"] = import_csv(service, "account", self.csv_path,
                                          self.mapping)

        measurement = timed(self.rows, action)
        report = holder["report"]
        if report.created != self.rows or report.rejected:
            raise RuntimeError(
                f"MetaCRM import: {report.summary()}, expected {self.rows} rows "
                "created and none rejected"
            )
        return measurement

    def _insert(self, service: RecordService) -> Measurement:
        if self.baseline_rows is None:
            self.baseline_rows = converted_rows(self.csv_path,
                                                service.actor.user_id)
        rows = self.baseline_rows
        table = service.runtime.tables["account"]
        engine = service.runtime.engine
        now = dt.datetime.now(dt.UTC)
        audit_rows = [
            {
                "seq": number, "at": now, "actor_id": service.actor.user_id,
                "action": "create", "entity": "account", "record_id": row["id"],
                "version": 1, "changes": handwritten.audit_changes(row),
                "request_id": None,
            }
            for number, row in enumerate(rows, start=1)
        ]

        def action() -> None:
            with engine.begin() as conn:
                conn.execute(table.insert(), rows)
                conn.execute(JOURNAL_TABLE.insert(), audit_rows)

        return timed(len(rows), action)

    def close(self) -> None:
        self.platform.dispose()


def _stored_rows(service: RecordService) -> list[tuple[Any, ...]]:
    """Return every account row without its id and timestamps, in
    account-number order."""
    table = service.runtime.tables["account"]
    skipped = {"id", "created_at", "updated_at"}
    columns = [column for column in table.columns if column.name not in skipped]
    query = sa.select(*columns).order_by(table.c.account_number)
    with service.runtime.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def run(rows: int, rounds: int) -> list[Result]:
    """Time ``rounds`` imports of ``rows`` rows on each side; return one row."""
    csv_path = replicated_csv(rows)
    work_dir = DATA_DIR / "import-work"
    shutil.rmtree(work_dir, ignore_errors=True)
    comparison = ImportComparison(work_dir, csv_path, rows)
    try:
        log.info("import warm-up: checking that both sides store the same rows")
        comparison.check_same_rows()
        metacrm_runs, baseline_runs = interleave(comparison.metacrm,
                                                 comparison.baseline, rounds)
    finally:
        comparison.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    return [
        Result(
            name=f"CSV import of {rows:,} Telco rows",
            unit="rows/s",
            metacrm=median_rate(metacrm_runs),
            baseline=median_rate(baseline_runs),
            target=TARGET_RATIO,
            higher_is_better=True,
            details=[spread_rate("MetaCRM", metacrm_runs),
                     spread_rate("baseline", baseline_runs),
                     cpu_comparison(metacrm_runs, baseline_runs)],
        )
    ]
