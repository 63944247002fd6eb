"""The OpenAPI document: valid OpenAPI 3.1, complete, and true to the API.

Records that the API returns must validate against the document's response
schemas, and bodies that the API accepts against its input schemas, so the
document cannot drift from what the server does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from crm_platform import openapi
from crm_platform.openapi import build_openapi, sort_pattern
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import make_member

ALL_TYPES = Path(__file__).resolve().parent / "definitions" / "all_types"
BASE = "/t/acme/api/v1"
Headers = dict[str, str]


def fetch_document(client: FlaskClient, auth: Headers, query: str = "") -> Any:
    response = client.get(f"{BASE}/openapi.json{query}", headers=auth)
    assert response.status_code == 200, response.json
    return response.json


def component_validator(document: Any, name: str) -> jsonschema.Draft202012Validator:
    """Return a validator for one component schema, with its refs resolvable."""
    schema = {"$ref": f"#/components/schemas/{name}",
              "components": document["components"]}
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


@pytest.fixture
def types_tenant(platform: Platform) -> TenantRuntime:
    return platform.create_tenant("types", ALL_TYPES, name="All types")


@pytest.fixture
def types_auth(platform: Platform, types_tenant: TenantRuntime) -> Headers:
    actor = make_member(platform, types_tenant.slug, "types@example.com", "admin")
    token = platform.control.create_token(types_tenant.tenant, actor.user_id)
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_document_is_valid_openapi(
    client: FlaskClient, auth: Headers, lang: str
) -> None:
    document = fetch_document(client, auth, f"?lang={lang}")
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_all_types_document_is_valid(
    client: FlaskClient, types_auth: Headers
) -> None:
    response = client.get("/t/types/api/v1/openapi.json", headers=types_auth)
    validate(response.json)


def test_document_lists_every_entity(
    client: FlaskClient, auth: Headers, crm: TenantRuntime
) -> None:
    document = fetch_document(client, auth)
    paths = document["paths"]
    schemas = document["components"]["schemas"]
    for entity in crm.definition.entities:
        assert f"/records/{entity.name}" in paths, entity.name
        assert f"/records/{entity.name}/{{id}}" in paths, entity.name
        assert f"/records/{entity.name}/{{id}}/related" in paths, entity.name
    assert {"Account", "AccountInput", "AccountPatch", "SurveyResponse",
            "SurveyResponseInput"} <= set(schemas)


def test_document_operations(client: FlaskClient, auth: Headers) -> None:
    document = fetch_document(client, auth)
    collection = document["paths"]["/records/account"]
    item = document["paths"]["/records/account/{id}"]
    assert set(collection) == {"get", "post"}
    assert {"get", "patch", "delete"} <= set(item)
    assert item["patch"]["responses"]["412"] == {
        "$ref": "#/components/responses/PreconditionFailed"
    }
    assert collection["post"]["responses"]["422"] == {
        "$ref": "#/components/responses/ValidationFailed"
    }
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]
    assert document["servers"] == [{"url": "/t/acme/api/v1"}]


def test_filter_parameters_follow_types(client: FlaskClient, auth: Headers) -> None:
    document = fetch_document(client, auth)
    parameters = document["paths"]["/records/account"]["get"]["parameters"]
    filters = next(p for p in parameters if p.get("name") == "filters")
    properties = filters["schema"]["properties"]
    assert filters["style"] == "form"
    assert filters["explode"] is True
    assert properties["grade"]["enum"] == ["a", "b", "c"]
    assert "grade__in" in properties
    assert "grade__lt" not in properties
    assert properties["annual_revenue__gte"]["format"] == "decimal"
    assert properties["name__icontains"]["type"] == "string"
    assert properties["created_at__lt"]["format"] == "date-time"
    assert properties["city__isnull"]["type"] == "boolean"


def test_sort_pattern_accepts_sortable(crm: TenantRuntime) -> None:
    pattern = sort_pattern(crm.definition.entity("account"))
    assert re.fullmatch(pattern, "-annual_revenue,name")
    assert re.fullmatch(pattern, "created_at")
    assert not re.fullmatch(pattern, "description")
    assert not re.fullmatch(pattern, "name,")


def test_document_labels_follow_locale(client: FlaskClient, auth: Headers) -> None:
    english = fetch_document(client, auth, "?lang=en")
    chinese = fetch_document(client, auth, "?lang=zh-CN")
    account_en = english["components"]["schemas"]["AccountInput"]
    account_zh = chinese["components"]["schemas"]["AccountInput"]
    assert account_en["properties"]["industry"]["title"] == "Industry"
    assert account_zh["properties"]["industry"]["title"] == "行业"
    assert account_zh["title"] == "客户"
    assert english["info"]["title"] == "Standard CRM API"
    assert chinese["info"]["title"] == "标准 CRM API"


def test_input_schema_details(client: FlaskClient, auth: Headers) -> None:
    schemas = fetch_document(client, auth)["components"]["schemas"]
    account = schemas["AccountInput"]
    opportunity = schemas["OpportunityInput"]
    assert account["required"] == ["name"]
    assert account["additionalProperties"] is False
    assert "account_number" not in account["properties"]
    assert account["properties"]["latitude"]["minimum"] == -90
    assert account["properties"]["latitude"]["type"] == ["string", "number", "null"]
    assert account["properties"]["website"]["format"] == "uri"
    assert opportunity["properties"]["probability"]["default"] == "10.00"
    assert "required" not in schemas["AccountPatch"]


def test_input_pattern_is_portable(
    client: FlaskClient, types_auth: Headers
) -> None:
    document = client.get("/t/types/api/v1/openapi.json", headers=types_auth).json
    code = document["components"]["schemas"]["SampleInput"]["properties"]["code"]
    assert code["pattern"] == "^(?:^[A-Z]{2}[0-9]{2}$)$"


def test_document_needs_token(client: FlaskClient, crm: TenantRuntime) -> None:
    response = client.get(f"{BASE}/openapi.json")
    assert response.status_code == 401


def test_document_is_cached_per_locale(crm: TenantRuntime) -> None:
    first = build_openapi(crm, "en")
    first["paths"].clear()
    second = build_openapi(crm, "en")
    chinese = build_openapi(crm, "zh-CN")
    assert (crm.definition.content_hash, "en") in openapi._cache
    assert "/records/account" in second["paths"]
    assert second["info"] == first["info"]
    assert chinese["info"]["title"] != second["info"]["title"]


def test_record_matches_response_schema(
    client: FlaskClient, types_auth: Headers
) -> None:
    base = "/t/types/api/v1"
    target = client.post(f"{base}/records/target", json={"name": "T"},
                         headers=types_auth).json["data"]
    body = {
        "title": "Every type", "code": "AB12", "notes": "text", "quantity": 5,
        "big_number": 2**62, "ratio": "0.25", "wide_decimal": "12.5",
        "price": 19.99, "discount": "1", "active": True, "due_on": "2024-02-29",
        "happened_at": "2024-03-10T23:30:15+08:00", "email": "a@example.com",
        "phone": "+1 555 0100", "website": "https://example.com",
        "colour": "red", "tags": ["beta"], "target": target["id"],
    }
    document = client.get(f"{base}/openapi.json", headers=types_auth).json
    component_validator(document, "SampleInput").validate(body)
    created = client.post(f"{base}/records/sample", json=body, headers=types_auth)
    empty = client.post(f"{base}/records/sample", json={"title": "Bare"},
                        headers=types_auth)
    record_schema = component_validator(document, "Sample")
    record_schema.validate(created.json["data"])
    record_schema.validate(empty.json["data"])
    component_validator(document, "Target").validate(target)


def test_input_schema_rejects_what_api_rejects(
    client: FlaskClient, types_auth: Headers
) -> None:
    document = client.get("/t/types/api/v1/openapi.json", headers=types_auth).json
    validator = component_validator(document, "SampleInput")
    for bad in ({}, {"title": "T", "colour": "purple"}, {"title": "T", "serial": "X"},
                {"title": "T", "quantity": 1001}, {"title": "x" * 21}):
        assert not validator.is_valid(bad), bad
