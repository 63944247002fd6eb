"""The record service on SQLite and on PostgreSQL: writes, locking, lists,
pagination, type round trips, and metadata changes of a live tenant."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from crm_platform.control import Actor
from crm_platform.errors import Conflict, NotFound, UnsafeChange, VersionConflict
from crm_platform.querying import Condition, ListQuery
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from metadata_engine.loader import compile_documents
from metadata_engine.model import Definition
from tests.conftest import STANDARD_CRM, TELCO, make_member

pytestmark = pytest.mark.both_backends

#: The required picklists of a case, which the record service does not fill
#: from their defaults.
NEW_CASE = {"type": "question", "priority": "low", "status": "new"}


def make_accounts(records: RecordService) -> dict[str, dict[str, Any]]:
    """Create accounts that the filter and search tests tell apart."""
    rows = [
        {"name": "ACME Corp", "grade": "a", "industry": "finance",
         "annual_revenue": Decimal("1500.00"), "email": "sales@acme.example"},
        {"name": "acme labs", "grade": "b", "industry": "retail",
         "annual_revenue": Decimal("999.99")},
        {"name": "Beta Industries", "grade": "a", "industry": "energy",
         "annual_revenue": Decimal("1000.00")},
        {"name": "Gamma 100% Ltd", "industry": "finance"},
    ]
    return {row["name"]: records.create("account", row) for row in rows}


def names(records: RecordService, query: ListQuery) -> set[str]:
    return {row["name"] for row in records.list("account", query).records}


def walk(records: RecordService, sort: list[str], limit: int) -> list[str]:
    """Return the ids of every account, reading pages of ``limit`` by cursor."""
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        page = records.list("account", ListQuery(sort=sort, limit=limit,
                                                 cursor=cursor))
        seen.extend(row["id"] for row in page.records)
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor
    raise AssertionError("pagination did not end after 50 pages")


def changed_definition(runtime: TenantRuntime, entity: str, fields: list[Any]
                       ) -> Definition:
    """Return the tenant's definition with ``entity``'s fields replaced."""
    documents = copy.deepcopy(dict(runtime.definition.documents))
    document = documents[f"entities/{entity}.json"]
    document["fields"] = fields
    document.pop("form", None)
    document.pop("list_views", None)
    return compile_documents(documents)


def product_fields(runtime: TenantRuntime) -> list[dict[str, Any]]:
    document = runtime.definition.documents["entities/product.json"]
    return copy.deepcopy(list(document["fields"]))


# Writes and optimistic locking


def test_create_sets_system_columns(records: RecordService, admin: Actor) -> None:
    created = records.create("account", {"name": "Acme"})
    assert created["version"] == 1
    assert created["owner_id"] == admin.user_id
    assert created["created_by"] == admin.user_id
    assert created["created_at"].tzinfo == dt.UTC
    assert records.get("account", created["id"]) == created


def test_update_with_current_version(records: RecordService) -> None:
    created = records.create("account", {"name": "Acme"})
    updated = records.update("account", created["id"], {"city": "Oslo"},
                             expected_version=1)
    assert updated["version"] == 2
    assert updated["city"] == "Oslo"
    assert updated["updated_at"] >= created["updated_at"]


def test_update_with_stale_version(records: RecordService) -> None:
    created = records.create("account", {"name": "Acme"})
    records.update("account", created["id"], {"city": "Oslo"}, expected_version=1)
    with pytest.raises(VersionConflict, match="is at version 2, not 1"):
        records.update("account", created["id"], {"city": "Bergen"},
                       expected_version=1)
    assert records.get("account", created["id"])["city"] == "Oslo"


def test_update_missing_record(records: RecordService) -> None:
    with pytest.raises(NotFound, match="account record 'nope' not found"):
        records.update("account", "nope", {"city": "Oslo"})


def test_delete_restricted_by_reference(records: RecordService) -> None:
    account = records.create("account", {"name": "Acme"})
    deal = records.create("opportunity", {"name": "Deal", "account": account["id"],
                                          "stage": "prospecting",
                                          "close_date": "2027-01-31"})
    with pytest.raises(Conflict, match="1 Opportunities refer to it through"):
        records.delete("account", account["id"])
    records.delete("opportunity", deal["id"])
    records.delete("account", account["id"])
    with pytest.raises(NotFound):
        records.get("account", account["id"])


def test_delete_sets_lookup_null(records: RecordService) -> None:
    account = records.create("account", {"name": "Acme"})
    contact = records.create("contact", {"name": "Ann", "account": account["id"]})
    records.delete("account", account["id"])
    assert records.get("contact", contact["id"])["account"] is None


def test_delete_with_stale_version(records: RecordService) -> None:
    created = records.create("account", {"name": "Acme"})
    records.update("account", created["id"], {"city": "Oslo"})
    with pytest.raises(VersionConflict, match="is at version 2, not 1"):
        records.delete("account", created["id"], expected_version=1)
    assert records.get("account", created["id"])["version"] == 2


def test_unique_violation_names_field(records: RecordService) -> None:
    records.create("product", {"name": "Router", "code": "R-1"})
    with pytest.raises(Conflict, match="another product already has this code") as info:
        records.create("product", {"name": "Other router", "code": "R-1"})
    assert list(info.value.details) == ["code"]


def test_unique_violation_on_update(records: RecordService) -> None:
    records.create("product", {"name": "Router", "code": "R-1"})
    other = records.create("product", {"name": "Switch", "code": "S-1"})
    with pytest.raises(Conflict, match="already has this code"):
        records.update("product", other["id"], {"code": "R-1"})
    assert records.get("product", other["id"])["code"] == "S-1"


def test_unique_violation_in_batch(records: RecordService) -> None:
    result = records.import_batch("product", [
        {"name": "Router", "code": "R-1"},
        {"name": "Copy", "code": "R-1"},
        {"name": "Switch", "code": "S-1"},
    ])
    assert result.created == 2
    assert list(result.errors) == [1]
    assert list(result.errors[1]) == ["code"]


def test_auto_numbers_continue(records: RecordService) -> None:
    first = records.create("account", {"name": "One"})
    second = records.create("account", {"name": "Two"})
    records.import_batch("account", [{"name": "Three"}, {"name": "Four"}])
    fifth = records.create("account", {"name": "Five"})
    assert first["account_number"] == "ACC-000001"
    assert second["account_number"] == "ACC-000002"
    assert fifth["account_number"] == "ACC-000005"
    numbers = {row["account_number"] for row in
               records.list("account", ListQuery(limit=10)).records}
    assert numbers == {f"ACC-00000{number}" for number in range(1, 6)}


# Types


def test_datetime_keeps_instant(records: RecordService) -> None:
    account = records.create("account", {"name": "Acme"})
    case = records.create("case", {**NEW_CASE, "subject": "No signal",
                                   "account": account["id"],
                                   "opened_at": "2026-03-01T09:30:00+08:00"})
    opened = records.get("case", case["id"])["opened_at"]
    assert opened == dt.datetime(2026, 3, 1, 1, 30, tzinfo=dt.UTC)
    assert opened.utcoffset() == dt.timedelta(0)


def test_datetime_filter(records: RecordService) -> None:
    account = records.create("account", {"name": "Acme"})
    for hour in (8, 10, 12):
        records.create("case", {**NEW_CASE, "subject": f"At {hour}",
                                "account": account["id"],
                                "opened_at": f"2026-03-01T{hour:02d}:00:00Z"})
    cutoff = dt.datetime(2026, 3, 1, 11, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    query = ListQuery(conditions=[Condition("opened_at", "lt", cutoff)])
    subjects = {row["subject"] for row in records.list("case", query).records}
    assert subjects == {"At 8"}


def test_decimal_exact(records: RecordService) -> None:
    created = records.create("account", {
        "name": "Small", "annual_revenue": "1234567890123.45",
    })
    stored = records.get("account", created["id"])["annual_revenue"]
    assert stored == Decimal("1234567890123.45")
    assert isinstance(stored, Decimal)


def test_decimal_exact_at_full_precision(
    records: RecordService
) -> None:
    created = records.create("account", {
        "name": "Big", "annual_revenue": "9999999999999999.99",
    })
    stored = records.get("account", created["id"])["annual_revenue"]
    assert stored == Decimal("9999999999999999.99")


def test_boolean_filters(records: RecordService) -> None:
    records.create("product", {"name": "On", "active": True})
    records.create("product", {"name": "Off", "active": False})
    records.create("product", {"name": "Unset", "active": None})

    def product_names(op: str, value: Any) -> set[str]:
        query = ListQuery(conditions=[Condition("active", op, value)])
        return {row["name"] for row in records.list("product", query).records}

    assert product_names("eq", True) == {"On"}
    assert product_names("eq", False) == {"Off"}
    assert product_names("ne", True) == {"Off", "Unset"}
    assert product_names("isnull", True) == {"Unset"}


def test_multi_picklist_contains(records: RecordService) -> None:
    for name, tags in [("Spring", ["upsell", "b2b"]), ("Summer", ["b2c"]),
                       ("Quiet", None)]:
        records.create("campaign", {"name": name, "status": "planned",
                                    "tags": tags})

    def campaign_names(value: str) -> set[str]:
        query = ListQuery(conditions=[Condition("tags", "contains", value)])
        return {row["name"] for row in records.list("campaign", query).records}

    assert campaign_names("b2b") == {"Spring"}
    assert campaign_names("b2") == set()
    stored = records.list("campaign", ListQuery(sort=["name"])).records
    assert [row["tags"] for row in stored] == [None, ["b2b", "upsell"], ["b2c"]]


# Lists


#: Filters on the accounts of ``make_accounts`` and the names they keep.
FILTER_CASES = [
    (Condition("grade", "eq", "a"), {"ACME Corp", "Beta Industries"}),
    (Condition("grade", "ne", "a"), {"acme labs", "Gamma 100% Ltd"}),
    (Condition("industry", "in", ["finance", "retail"]),
     {"ACME Corp", "acme labs", "Gamma 100% Ltd"}),
    (Condition("name", "icontains", "ACME"), {"ACME Corp", "acme labs"}),
    (Condition("name", "contains", "100%"), {"Gamma 100% Ltd"}),
    (Condition("name", "startswith", "Beta"), {"Beta Industries"}),
    (Condition("annual_revenue", "isnull", True), {"Gamma 100% Ltd"}),
    (Condition("annual_revenue", "gt", Decimal("999.99")),
     {"ACME Corp", "Beta Industries"}),
]


def test_list_filters(records: RecordService) -> None:
    make_accounts(records)
    for condition, expected in FILTER_CASES:
        found = names(records, ListQuery(conditions=[condition]))
        assert found == expected, condition


def test_search_ignores_case(records: RecordService) -> None:
    make_accounts(records)
    assert names(records, ListQuery(search="Acme")) == {"ACME Corp", "acme labs"}
    assert names(records, ListQuery(search="SALES@")) == {"ACME Corp"}


def test_count_with_filter(records: RecordService) -> None:
    make_accounts(records)
    query = ListQuery(conditions=[Condition("grade", "eq", "a")], limit=1,
                      count=True)
    page = records.list("account", query)
    assert page.total == 2
    assert len(page.records) == 1


def test_keyset_pages_with_nulls(records: RecordService) -> None:
    for index in range(13):
        city = None if index % 3 == 0 else f"City {index % 4}"
        records.create("account", {"name": f"Account {index:02d}", "city": city})
    for sort in (["city"], ["-city"], ["city", "-name"]):
        whole = records.list("account", ListQuery(sort=sort, limit=200)).records
        paged = walk(records, sort, limit=4)
        assert len(whole) == 13, sort
        assert paged == [row["id"] for row in whole], sort


def test_null_sorts_by_backend(platform: Platform, records: RecordService) -> None:
    records.create("account", {"name": "Blank"})
    records.create("account", {"name": "Set", "city": "Oslo"})
    page = records.list("account", ListQuery(sort=["city"], limit=10))
    ascending = [row["name"] for row in page.records]
    # PostgreSQL sorts NULL above every value, SQLite below.
    if platform.backend.name == "postgresql":
        assert ascending == ["Set", "Blank"]
    else:
        assert ascending == ["Blank", "Set"]


# Tenants and metadata


def test_tenants_do_not_share_rows(
    platform: Platform, records: RecordService
) -> None:
    other = platform.create_tenant("other-co", STANDARD_CRM)
    other_records = RecordService(
        other, make_member(platform, other.slug, "other@example.com", "admin")
    )
    mine = records.create("account", {"name": "Mine"})
    other_records.create("account", {"name": "Theirs"})
    assert names(records, ListQuery()) == {"Mine"}
    assert names(other_records, ListQuery()) == {"Theirs"}
    with pytest.raises(NotFound):
        other_records.get("account", mine["id"])


def test_auto_numbers_per_tenant(platform: Platform, records: RecordService) -> None:
    other = platform.create_tenant("other-co", STANDARD_CRM)
    other_records = RecordService(
        other, make_member(platform, other.slug, "other@example.com", "admin")
    )
    records.create("account", {"name": "Mine"})
    theirs = other_records.create("account", {"name": "Theirs"})
    assert theirs["account_number"] == "ACC-000001"


def test_telco_tenant_created(platform: Platform) -> None:
    runtime = platform.create_tenant("telco", TELCO)
    assert runtime.table("account").c.churn is not None
    assert len(runtime.definition.entities) == 11


def test_stored_definition_round_trip(platform: Platform, crm: TenantRuntime) -> None:
    fresh = Platform(platform.settings)
    try:
        reloaded = fresh.runtime(crm.slug)
    finally:
        fresh.dispose()
    assert reloaded.definition is not crm.definition
    assert reloaded.definition.content_hash == crm.tenant.metadata_hash
    assert dict(reloaded.definition.documents) == dict(crm.definition.documents)


def test_apply_adds_fields(
    platform: Platform, crm: TenantRuntime, records: RecordService, admin: Actor
) -> None:
    fields = product_fields(crm)
    fields.append({"name": "warranty_months", "type": "integer",
                   "label": "Warranty", "minimum": 0})
    fields.append({"name": "supplier", "type": "lookup", "label": "Supplier",
                   "target": "account", "on_delete": "set_null"})
    fields.append({"name": "sku", "type": "text", "label": "SKU", "unique": True})
    runtime = platform.apply(crm.slug, changed_definition(crm, "product", fields))
    assert runtime.tenant.metadata_version == 2
    service = RecordService(runtime, admin)
    supplier = service.create("account", {"name": "Supplier"})
    product = service.create("product", {"name": "Router", "warranty_months": 24,
                                         "supplier": supplier["id"], "sku": "X"})
    assert service.get("product", product["id"])["warranty_months"] == 24
    with pytest.raises(Conflict, match="already has this sku"):
        service.create("product", {"name": "Copy", "sku": "X"})
    service.delete("account", supplier["id"])
    assert service.get("product", product["id"])["supplier"] is None


def test_apply_rejects_removed_field(platform: Platform, crm: TenantRuntime) -> None:
    fields = [field for field in product_fields(crm) if field["name"] != "family"]
    definition = changed_definition(crm, "product", fields)
    with pytest.raises(UnsafeChange, match="field 'family' of entity 'product'"):
        platform.apply(crm.slug, definition)
    assert platform.control.get_tenant(crm.slug).metadata_version == 1
    assert "family" in platform.runtime(crm.slug).table("product").c


def test_apply_same_definition_is_noop(platform: Platform, crm: TenantRuntime) -> None:
    runtime = platform.apply(crm.slug, crm.definition)
    assert runtime.tenant.metadata_version == 1
