"""CSV import through the record service: conversion, rejects, upserts."""

from __future__ import annotations

import csv
import decimal
from pathlib import Path

import pytest

from crm_platform.control import Actor
from crm_platform.importer import ColumnMapping, ImportFailed, import_csv, snake_case
from crm_platform.querying import ListQuery
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import TELCO, make_member

pytestmark = pytest.mark.both_backends

TELCO_CSV = TELCO / "data" / "Telco-Customer-Churn.csv"


def write_csv(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        csv.writer(handle).writerows(rows)
    return path


def all_accounts(records: RecordService) -> list[dict[str, object]]:
    return records.list("account", ListQuery(limit=200, sort=["name"])).records


@pytest.fixture
def telco(platform: Platform) -> TenantRuntime:
    return platform.create_tenant("telco", TELCO)


@pytest.fixture
def telco_records(platform: Platform, telco: TenantRuntime) -> RecordService:
    actor = make_member(platform, telco.slug, "ops@example.com", "admin")
    return RecordService(telco, actor)


def test_snake_case_headers() -> None:
    assert snake_case("customerID") == "customer_id"
    assert snake_case("MonthlyCharges") == "monthly_charges"
    assert snake_case("StreamingTV") == "streaming_tv"
    assert snake_case("Annual revenue ($)") == "annual_revenue"


def test_import_by_header_names(tmp_path: Path, records: RecordService) -> None:
    path = write_csv(
        tmp_path / "a.csv",
        [
            ["Name", "Grade", "AnnualRevenue"],
            ["Acme", "a", "1,250.50"],
            ["Globex", "b", ""],
        ],
    )
    report = import_csv(records, "account", path)
    assert report.created == 2
    assert report.rejected == []
    stored = all_accounts(records)
    assert [row["name"] for row in stored] == ["Acme", "Globex"]
    assert stored[0]["annual_revenue"] == decimal.Decimal("1250.50")
    assert stored[1]["annual_revenue"] is None


def test_invalid_rows_rejected_valid_kept(
    tmp_path: Path, records: RecordService
) -> None:
    path = write_csv(
        tmp_path / "a.csv",
        [
            ["name", "grade", "annual_revenue", "email"],
            ["Good one", "a", "10", "ok@example.com"],
            ["", "a", "10", ""],
            ["Bad grade", "z", "10", ""],
            ["Bad number", "a", "ten", ""],
            ["Bad mail", "a", "1", "not-an-email"],
            ["Good two", "c", "", ""],
        ],
    )
    report = import_csv(records, "account", path)
    assert report.rows == 6
    assert report.created == 2
    rejected = {row.line: row.errors for row in report.rejected}
    assert set(rejected) == {3, 4, 5, 6}
    assert "name" in rejected[3]
    assert "grade" in rejected[4]
    assert "'ten'" in rejected[5]["annual_revenue"][0]
    assert "email" in rejected[6]
    assert [row["name"] for row in all_accounts(records)] == ["Good one", "Good two"]


def test_dry_run_writes_nothing(tmp_path: Path, records: RecordService) -> None:
    path = write_csv(tmp_path / "a.csv", [["name"], ["One"], ["Two"]])
    report = import_csv(records, "account", path, dry_run=True)
    assert report.created == 2
    assert report.dry_run
    assert all_accounts(records) == []


def test_wrong_encoding_names_line(tmp_path: Path, records: RecordService) -> None:
    path = write_csv(
        tmp_path / "gbk.csv", [["name"], ["Acme"], ["北京客户"]], encoding="gbk"
    )
    with pytest.raises(ImportFailed, match=r"not valid utf-8: byte 0x.. on line 3"):
        import_csv(records, "account", path)
    assert all_accounts(records) == []
    report = import_csv(records, "account", path, encoding="gbk")
    assert report.created == 2
    assert "北京客户" in [row["name"] for row in all_accounts(records)]


def test_oversized_cell_rejects_row(tmp_path: Path, records: RecordService) -> None:
    huge = "x" * (10 * 1024 * 1024)
    path = write_csv(
        tmp_path / "big.csv",
        [
            ["name", "description"],
            ["Small", "fine"],
            ["Big", huge],
            ["After", ""],
        ],
    )
    report = import_csv(records, "account", path)
    assert report.created == 2
    assert [row.line for row in report.rejected] == [3]
    assert [row["name"] for row in all_accounts(records)] == ["After", "Small"]


def test_ragged_row_rejected(tmp_path: Path, records: RecordService) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("name,grade\nAcme,a\nOnly,a,extra\n", encoding="utf-8")
    report = import_csv(records, "account", path)
    assert report.created == 1
    assert "3 cells but the header has 2" in report.rejected[0].errors["_row"][0]


def test_mapping_unknown_field(tmp_path: Path, records: RecordService) -> None:
    path = write_csv(tmp_path / "a.csv", [["Company"], ["Acme"]])
    mapping = ColumnMapping(entity="account", columns={"Company": ["company_name"]})
    with pytest.raises(ImportFailed, match="unknown field 'company_name'"):
        import_csv(records, "account", path, mapping)


def test_mapping_missing_column(tmp_path: Path, records: RecordService) -> None:
    path = write_csv(tmp_path / "a.csv", [["name"], ["Acme"]])
    mapping = ColumnMapping(entity="account", columns={"Title": ["name"]})
    with pytest.raises(ImportFailed, match="column 'Title' is not in the file"):
        import_csv(records, "account", path, mapping)


def test_key_updates_instead_of_duplicating(
    tmp_path: Path, telco_records: RecordService
) -> None:
    mapping = ColumnMapping(
        entity="account",
        columns={"id": ["customer_id", "name"], "charges": ["monthly_charges"]},
        key="customer_id",
    )
    first = write_csv(
        tmp_path / "1.csv", [["id", "charges"], ["C1", "10"], ["C2", "20"]]
    )
    second = write_csv(
        tmp_path / "2.csv",
        [["id", "charges"], ["C1", "10"], ["C2", "25"], ["C3", "30"]],
    )
    assert import_csv(telco_records, "account", first, mapping).created == 2
    report = import_csv(telco_records, "account", second, mapping)
    assert (report.created, report.updated, report.unchanged) == (1, 1, 1)
    stored = {row["customer_id"]: row for row in all_accounts(telco_records)}
    assert len(stored) == 3
    assert stored["C2"]["monthly_charges"] == decimal.Decimal("25.00")
    assert stored["C2"]["version"] == 2
    assert stored["C1"]["version"] == 1


def test_duplicate_key_in_file(tmp_path: Path, telco_records: RecordService) -> None:
    mapping = ColumnMapping(
        entity="account", columns={"id": ["customer_id", "name"]}, key="customer_id"
    )
    path = write_csv(tmp_path / "dup.csv", [["id"], ["C1"], ["C1"]])
    report = import_csv(telco_records, "account", path, mapping)
    assert report.created == 1
    assert "duplicate customer_id 'C1'" in report.rejected[0].errors["customer_id"][0]


def test_unique_violation_isolated(
    tmp_path: Path, telco_records: RecordService
) -> None:
    path = write_csv(
        tmp_path / "u.csv",
        [["name", "customer_id"], ["A", "X1"], ["B", "X1"], ["C", "X2"]],
    )
    report = import_csv(telco_records, "account", path)
    assert report.created == 2
    assert [row.line for row in report.rejected] == [3]
    assert "customer_id" in report.rejected[0].errors


def test_missing_lookup_target(
    tmp_path: Path, records: RecordService, crm: TenantRuntime
) -> None:
    account = records.create("account", {"name": "Acme"})
    path = write_csv(
        tmp_path / "o.csv",
        [
            ["name", "account", "stage", "close_date"],
            ["Real", account["id"], "prospecting", "2027-01-31"],
            [
                "Ghost",
                "01a241e0-0000-7000-8000-000000000000",
                "prospecting",
                "2027-01-31",
            ],
        ],
    )
    report = import_csv(records, "opportunity", path)
    assert report.created == 1
    assert "account" in report.rejected[0].errors


@pytest.mark.slow
def test_real_telco_import(telco_records: RecordService) -> None:
    mapping = ColumnMapping.from_file(TELCO / "import-accounts.json")
    report = import_csv(telco_records, "account", TELCO_CSV, mapping)
    assert report.rows == 7043
    assert report.created == 7043
    assert report.rejected == []
    runtime = telco_records.runtime
    table = runtime.tables["account"]
    import sqlalchemy as sa

    with runtime.engine.connect() as conn:
        churned = conn.execute(
            sa.select(sa.func.count()).where(table.c.churn.is_(True))
        ).scalar_one()
        blank_total = conn.execute(
            sa.select(sa.func.count()).where(table.c.total_charges.is_(None))
        ).scalar_one()
        charges = conn.execute(sa.select(table.c.monthly_charges)).scalars().all()
        seniors = conn.execute(
            sa.select(sa.func.count()).where(table.c.senior_citizen.is_(True))
        ).scalar_one()
    assert churned == 1869
    assert blank_total == 11
    assert sum(charges, decimal.Decimal(0)) == decimal.Decimal("456116.60")
    assert seniors == 1142
    again = import_csv(telco_records, "account", TELCO_CSV, mapping)
    assert again.unchanged == 7043
    assert again.created == 0


def test_import_as_member_sets_owner(
    tmp_path: Path, records: RecordService, admin: Actor
) -> None:
    path = write_csv(tmp_path / "a.csv", [["name"], ["Acme"]])
    import_csv(records, "account", path)
    (stored,) = all_accounts(records)
    assert stored["owner_id"] == admin.user_id
    assert stored["created_by"] == admin.user_id
