"""Roll-up fields: a parent's summary of its related records stays correct
when they are created, changed, moved, imported or deleted (by cascade too)."""

from __future__ import annotations

import decimal
from pathlib import Path
from typing import Any

import pytest

from crm_platform.errors import RecordInvalid
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform
from metadata_engine.loader import compile_documents
from tests.conftest import make_member
from tests.definitions.builders import (
    documents,
    entity,
    field,
    problems_of,
    write_folder,
)

pytestmark = pytest.mark.both_backends

WON = [{"field": "stage", "op": "eq", "value": "won"}]


def definition(**won_total: Any) -> dict[str, Any]:
    stages = [{"value": v, "label": v} for v in ("open", "won")]
    rollup = {"entity": "deal", "via": "account", "function": "sum",
              "field": "amount", "where": WON}
    rollup.update(won_total)
    return documents(
        entity("account",
               field("won_total", "currency", rollup=rollup),
               field("deals", "integer",
                     rollup={"entity": "deal", "via": "account", "function": "count"}),
               field("last_close", "date",
                     rollup={"entity": "deal", "via": "account", "function": "max",
                             "field": "closes"})),
        entity("campaign",
               field("deals", "integer",
                     rollup={"entity": "deal", "via": "campaign",
                             "function": "count"})),
        entity("deal",
               field("account", "lookup", target="account", on_delete="cascade"),
               field("campaign", "lookup", target="campaign", on_delete="set_null"),
               field("amount", "currency"),
               field("stage", "picklist", options=stages),
               field("closes", "date")),
    )


def test_bad_rollups_reported() -> None:
    problems = problems_of(lambda: compile_documents(
        definition(via="campaign", field="stage")
    ))
    messages = [problem.message for problem in problems]
    assert any("deal.campaign is not a lookup to 'account'" in m for m in messages)


def test_count_needs_no_field() -> None:
    problems = problems_of(lambda: compile_documents(
        definition(function="count")
    ))
    messages = [problem.message for problem in problems]
    assert any("takes no field" in message for message in messages)
    assert any("of type 'currency' cannot store a count" in m for m in messages)


@pytest.fixture
def service(platform: Platform, tmp_path: Path) -> RecordService:
    folder = write_folder(tmp_path / "d", definition())
    runtime = platform.create_tenant("sales", folder)
    admin = make_member(platform, "sales", "admin@sales.example", "admin")
    return platform.records(runtime, admin)


def won_total(service: RecordService, account_id: str) -> decimal.Decimal:
    return decimal.Decimal(service.get("account", account_id)["won_total"])


def test_writes_keep_rollups_current(service: RecordService) -> None:
    acme = service.create("account", {"name": "Acme"})["id"]
    globex = service.create("account", {"name": "Globex"})["id"]
    first = service.create("deal", {"name": "A", "account": acme, "amount": "100.00",
                                    "stage": "won", "closes": "2026-01-31"})
    service.create("deal", {"name": "B", "account": acme, "amount": "50.00",
                            "stage": "open", "closes": "2026-03-31"})
    assert won_total(service, acme) == decimal.Decimal("100.00")
    assert service.get("account", acme)["deals"] == 2
    assert str(service.get("account", acme)["last_close"]) == "2026-03-31"
    service.update("deal", first["id"], {"account": globex})
    assert won_total(service, acme) == decimal.Decimal("0.00")
    assert won_total(service, globex) == decimal.Decimal("100.00")
    service.delete("deal", first["id"])
    assert won_total(service, globex) == decimal.Decimal("0.00")
    assert service.get("account", globex)["deals"] == 0


def test_import_and_cascade_update_rollups(service: RecordService) -> None:
    acme = service.create("account", {"name": "Acme"})["id"]
    spring = service.create("campaign", {"name": "Spring"})["id"]
    result = service.import_batch("deal", [
        {"name": f"D{n}", "account": acme, "campaign": spring, "amount": "10.00",
         "stage": "won"} for n in range(3)
    ])
    assert result.created == 3
    assert won_total(service, acme) == decimal.Decimal("30.00")
    assert service.get("campaign", spring)["deals"] == 3
    service.delete("account", acme)
    assert service.get("campaign", spring)["deals"] == 0


def test_rollup_field_is_read_only(service: RecordService) -> None:
    with pytest.raises(RecordInvalid, match="check won_total"):
        service.create("account", {"name": "Acme", "won_total": "5.00"})


def test_rollup_over_own_entity(platform: Platform, tmp_path: Path) -> None:
    items = documents(entity(
        "item",
        field("parent", "lookup", target="item", on_delete="set_null"),
        field("quantity", "integer"),
        field("children_quantity", "integer",
              rollup={"entity": "item", "via": "parent", "function": "sum",
                      "field": "quantity"}),
    ))
    runtime = platform.create_tenant("stock", write_folder(tmp_path / "d", items))
    service = platform.records(
        runtime, make_member(platform, "stock", "admin@stock.example", "admin")
    )
    box = service.create("item", {"name": "Box", "quantity": 1})
    service.create("item", {"name": "A", "quantity": 5, "parent": box["id"]})
    service.create("item", {"name": "B", "quantity": 7, "parent": box["id"]})
    assert service.get("item", box["id"])["children_quantity"] == 12
