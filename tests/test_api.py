"""The REST API on the standard CRM: CRUD, lists, errors and authentication.

Every test talks HTTP to the real Flask app through its test client, with
tenants in real SQLite files under ``tmp_path``.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import uuid
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm_platform.auth import SESSION_KEY
from crm_platform.control import Actor
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import STANDARD_CRM, make_member

BASE = "/t/acme/api/v1"
Headers = dict[str, str]


def post_account(client: FlaskClient, auth: Headers, **values: Any) -> dict[str, Any]:
    body = {"name": "Acme Corp", **values}
    response = client.post(f"{BASE}/records/account", json=body, headers=auth)
    assert response.status_code == 201, response.json
    data: dict[str, Any] = response.json["data"]
    return data


def error_of(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = response.json["error"]
    return error


@pytest.fixture
def globex(platform: Platform, crm: TenantRuntime) -> TenantRuntime:
    """A second tenant on the same template."""
    return platform.create_tenant("globex", STANDARD_CRM, name="Globex")


@pytest.fixture
def globex_auth(platform: Platform, globex: TenantRuntime) -> Headers:
    actor = make_member(platform, globex.slug, "boss@globex.example", "admin")
    token = platform.control.create_token(globex.tenant, actor.user_id)
    return {"Authorization": f"Bearer {token}"}


# Create, read, update, delete


def test_create_returns_201_and_location(client: FlaskClient, auth: Headers) -> None:
    response = client.post(
        f"{BASE}/records/account", json={"name": "Acme Corp"}, headers=auth
    )
    data = response.json["data"]
    assert response.status_code == 201
    assert response.headers["Location"].endswith(f"{BASE}/records/account/{data['id']}")
    assert response.headers["ETag"] == '"1"'
    assert data["name"] == "Acme Corp"
    assert data["version"] == 1
    assert data["account_number"] == "ACC-000001"
    assert data["customer_type"] == "consumer"


def test_create_sets_system_columns(
    client: FlaskClient, auth: Headers, admin: Actor
) -> None:
    data = post_account(client, auth)
    assert uuid.UUID(data["id"]).version == 7
    assert data["created_by"] == admin.user_id
    assert data["owner_id"] == admin.user_id
    assert data["created_at"].endswith("Z")
    assert data["created_at"] == data["updated_at"]


def test_create_accepts_client_id(client: FlaskClient, auth: Headers) -> None:
    chosen = "01900000-0000-7000-8000-00000000abcd"
    data = post_account(client, auth, id=chosen)
    assert data["id"] == chosen
    again = client.post(
        f"{BASE}/records/account", json={"name": "Twin", "id": chosen}, headers=auth
    )
    assert again.status_code == 409
    assert error_of(again)["code"] == "conflict"


def test_get_returns_record_and_etag(client: FlaskClient, auth: Headers) -> None:
    created = post_account(client, auth, city="Lyon")
    response = client.get(f"{BASE}/records/account/{created['id']}", headers=auth)
    assert response.status_code == 200
    assert response.headers["ETag"] == '"1"'
    assert response.json == {"data": created}
    assert response.headers["Cache-Control"] == "private, no-store"


def test_patch_changes_given_fields(client: FlaskClient, auth: Headers) -> None:
    created = post_account(client, auth, city="Lyon", grade="a")
    response = client.patch(
        f"{BASE}/records/account/{created['id']}", json={"city": "Paris"}, headers=auth
    )
    data = response.json["data"]
    assert response.status_code == 200
    assert data["city"] == "Paris"
    assert data["grade"] == "a"
    assert data["version"] == 2
    assert response.headers["ETag"] == '"2"'


def test_patch_clears_optional_field(client: FlaskClient, auth: Headers) -> None:
    created = post_account(client, auth, city="Lyon")
    response = client.patch(
        f"{BASE}/records/account/{created['id']}", json={"city": None}, headers=auth
    )
    assert response.status_code == 200
    assert response.json["data"]["city"] is None


def test_patch_cannot_clear_required(client: FlaskClient, auth: Headers) -> None:
    created = post_account(client, auth)
    response = client.patch(
        f"{BASE}/records/account/{created['id']}", json={"name": None}, headers=auth
    )
    assert response.status_code == 422
    assert error_of(response)["details"] == {
        "name": ["This field is required and cannot be empty."]
    }


def test_delete_returns_204(client: FlaskClient, auth: Headers) -> None:
    created = post_account(client, auth)
    url = f"{BASE}/records/account/{created['id']}"
    response = client.delete(url, headers=auth)
    assert response.status_code == 204
    assert response.data == b""
    assert client.get(url, headers=auth).status_code == 404


def test_read_only_field_rejected(client: FlaskClient, auth: Headers) -> None:
    response = client.post(
        f"{BASE}/records/account",
        json={"name": "Acme", "account_number": "ACC-999999", "version": 7},
        headers=auth,
    )
    details = error_of(response)["details"]
    message = ["This field is read-only and cannot be written."]
    assert response.status_code == 422
    assert details["account_number"] == message
    assert details["version"] == message


def test_unknown_field_rejected(client: FlaskClient, auth: Headers) -> None:
    response = client.post(
        f"{BASE}/records/account", json={"name": "Acme", "colour": "red"}, headers=auth
    )
    assert response.status_code == 422
    assert error_of(response)["details"] == {
        "colour": ["Unknown field: it is not part of this entity."]
    }


# Not found


def test_unknown_entity_is_404(client: FlaskClient, auth: Headers) -> None:
    response = client.get(f"{BASE}/records/spaceship", headers=auth)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    assert "'spaceship'" in error_of(response)["message"]


def test_unknown_id_is_404(client: FlaskClient, auth: Headers) -> None:
    missing = str(uuid.uuid4())
    for method in ("get", "patch", "delete"):
        call = getattr(client, method)
        response = call(f"{BASE}/records/account/{missing}", json={}, headers=auth)
        assert response.status_code == 404, method
        assert error_of(response) == {
            "code": "not_found",
            "message": f"account record {missing!r} not found",
            "details": {},
        }, method


def test_unknown_path_is_json_404(client: FlaskClient, auth: Headers) -> None:
    response = client.get(f"{BASE}/no/such/thing", headers=auth)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert error_of(response)["code"] == "not_found"


def test_wrong_method_is_json_405(client: FlaskClient, auth: Headers) -> None:
    response = client.put(f"{BASE}/records/account", json={}, headers=auth)
    assert response.status_code == 405
    assert response.mimetype == "application/json"
    assert error_of(response)["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert "PUT" not in response.headers["Allow"]


def test_put_on_record_is_405(client: FlaskClient, auth: Headers) -> None:
    created = post_account(client, auth)
    response = client.put(
        f"{BASE}/records/account/{created['id']}", json={}, headers=auth
    )
    assert response.status_code == 405
    assert error_of(response)["details"]["allowed_methods"] == ["GET", "PATCH",
                                                                  "DELETE"]


# Authentication and tenants


def test_missing_token_is_401(client: FlaskClient, crm: TenantRuntime) -> None:
    response = client.get(f"{BASE}/records/account")
    assert response.status_code == 401
    assert error_of(response)["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_invalid_token_is_401(client: FlaskClient, crm: TenantRuntime) -> None:
    for header in ("Bearer mcrm_not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer "):
        response = client.get(f"{BASE}/records/account",
                              headers={"Authorization": header})
        assert response.status_code == 401, header


def test_revoked_token_is_401(
    client: FlaskClient, platform: Platform, token: str, auth: Headers
) -> None:
    assert client.get(f"{BASE}/records/account", headers=auth).status_code == 200
    platform.control.revoke_token(token)
    response = client.get(f"{BASE}/records/account", headers=auth)
    assert response.status_code == 401
    assert error_of(response)["message"] == "invalid, expired or revoked token"


def test_expired_token_is_401(
    client: FlaskClient, platform: Platform, crm: TenantRuntime, admin: Actor
) -> None:
    expired = platform.control.create_token(
        crm.tenant, admin.user_id, expires_in=dt.timedelta(seconds=-1)
    )
    response = client.get(f"{BASE}/records/account",
                          headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401


def test_unknown_tenant_is_404(client: FlaskClient, auth: Headers) -> None:
    with_token = client.get("/t/initech/api/v1/records/account", headers=auth)
    without_token = client.get("/t/initech/api/v1/records/account")
    assert with_token.status_code == 404
    assert without_token.status_code == 404
    assert with_token.json == without_token.json


def test_token_of_other_tenant_is_401(
    client: FlaskClient, auth: Headers, globex: TenantRuntime
) -> None:
    other = client.get("/t/globex/api/v1/records/account", headers=auth)
    invalid = client.get("/t/globex/api/v1/records/account",
                         headers={"Authorization": "Bearer mcrm_invalid"})
    assert other.status_code == 401
    assert other.json == invalid.json


def test_other_tenant_record_is_404(
    client: FlaskClient, auth: Headers, globex_auth: Headers
) -> None:
    response = client.post("/t/globex/api/v1/records/account",
                           json={"name": "Globex"}, headers=globex_auth)
    foreign_id = response.json["data"]["id"]
    missing_id = str(uuid.uuid4())
    url = f"{BASE}/records/account/"
    foreign = client.get(url + foreign_id, headers=auth)
    missing = client.get(url + missing_id, headers=auth)
    assert foreign.status_code == 404
    assert error_of(foreign)["message"] == error_of(missing)["message"].replace(
        missing_id, foreign_id
    )
    patched = client.patch(url + foreign_id, json={"name": "Mine"}, headers=auth)
    deleted = client.delete(url + foreign_id, headers=auth)
    assert patched.status_code == 404
    assert deleted.status_code == 404
    listed = client.get(f"{BASE}/records/account?id={foreign_id}", headers=auth)
    assert listed.json["data"] == []
    still = client.get(f"/t/globex/api/v1/records/account/{foreign_id}",
                       headers=globex_auth)
    assert still.json["data"]["name"] == "Globex"


def test_session_cookie_is_not_accepted(
    app: Flask, client: FlaskClient, admin: Actor, crm: TenantRuntime
) -> None:
    with client.session_transaction() as session:
        session[SESSION_KEY] = {crm.slug: admin.user_id}
    response = client.get(f"{BASE}/records/account")
    assert response.status_code == 401
    created = client.post(f"{BASE}/records/account", json={"name": "Sneaky"})
    assert created.status_code == 401


def test_post_needs_no_csrf_token(app: Flask, client: FlaskClient, auth: Headers
                                  ) -> None:
    app.config.update(WTF_CSRF_ENABLED=True)
    response = client.post(f"{BASE}/records/account", json={"name": "A"},
                           headers=auth)
    assert response.status_code == 201


# Request bodies


def test_malformed_json_is_400(client: FlaskClient, auth: Headers) -> None:
    response = client.post(
        f"{BASE}/records/account",
        data='{"name": "Acme",\n "city": }',
        content_type="application/json",
        headers=auth,
    )
    error = error_of(response)
    assert response.status_code == 400
    assert error["code"] == "invalid_json"
    assert "line 2 column 10" in error["message"]
    assert error["details"]["line"] == 2


@pytest.mark.parametrize(
    ("body", "content_type", "wording"),
    [
        (b'{"name": "Acme"}', "text/plain", "unsupported Content-Type 'text/plain'"),
        (b"name=Acme", "application/x-www-form-urlencoded", "unsupported Content-Type"),
        (b"", "application/json", "request body is empty"),
        (b'{"name": "\xff"}', "application/json", "not UTF-8"),
        (b'{"annual_revenue": NaN, "name": "A"}', "application/json",
         "NaN is not a JSON value"),
        (b"[" * 100_000, "application/json", "nested too deeply"),
    ],
)
def test_bad_body_is_400(
    client: FlaskClient, auth: Headers, body: bytes, content_type: str, wording: str
) -> None:
    response = client.post(
        f"{BASE}/records/account", data=body, content_type=content_type, headers=auth
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"
    assert wording in error_of(response)["message"]


def test_json_array_body_is_422(client: FlaskClient, auth: Headers) -> None:
    response = client.post(f"{BASE}/records/account", json=[{"name": "A"}],
                           headers=auth)
    assert response.status_code == 422
    assert error_of(response)["code"] == "validation_failed"
    assert "not an array" in error_of(response)["message"]


def test_oversized_body_is_413(
    app: Flask, client: FlaskClient, auth: Headers, records: RecordService
) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 10_000
    body = {"name": "Big", "description": "x" * 20_000}
    response = client.post(f"{BASE}/records/account", json=body, headers=auth)
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert error_of(response)["details"]["limit"] == 10_000
    assert records.list("account", _count_query()).total == 0


def test_huge_string_is_422(
    client: FlaskClient, auth: Headers, records: RecordService
) -> None:
    body = {"name": "Big", "description": "x" * 200_000}
    response = client.post(f"{BASE}/records/account", json=body, headers=auth)
    assert response.status_code == 422
    assert error_of(response)["details"] == {
        "description": ["Longer than the maximum length of 100000 characters."]
    }
    assert records.list("account", _count_query()).total == 0


def _count_query() -> Any:
    from crm_platform.querying import ListQuery

    return ListQuery(count=True)


# Optimistic locking


def test_stale_if_match_is_412(client: FlaskClient, auth: Headers) -> None:
    created = post_account(client, auth)
    url = f"{BASE}/records/account/{created['id']}"
    client.patch(url, json={"city": "Paris"}, headers=auth)
    response = client.patch(url, json={"city": "Rome"},
                            headers={**auth, "If-Match": '"1"'})
    assert response.status_code == 412
    assert error_of(response)["code"] == "version_conflict"
    assert error_of(response)["details"] == {"current_version": 2}
    current = client.get(url, headers=auth).json["data"]
    assert current["city"] == "Paris"


@pytest.mark.parametrize("header", ['"1"', "1", 'W/"1"', "*"])
def test_current_if_match_updates(
    client: FlaskClient, auth: Headers, header: str
) -> None:
    created = post_account(client, auth)
    response = client.patch(f"{BASE}/records/account/{created['id']}",
                            json={"city": "Rome"}, headers={**auth, "If-Match": header})
    assert response.status_code == 200
    assert response.json["data"]["version"] == 2


def test_invalid_if_match_is_400(client: FlaskClient, auth: Headers) -> None:
    created = post_account(client, auth)
    response = client.patch(f"{BASE}/records/account/{created['id']}",
                            json={"city": "Rome"},
                            headers={**auth, "If-Match": '"abc"'})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_header"
    assert "'\"abc\"'" in error_of(response)["message"]


def test_delete_honours_if_match(client: FlaskClient, auth: Headers) -> None:
    created = post_account(client, auth)
    url = f"{BASE}/records/account/{created['id']}"
    client.patch(url, json={"city": "Paris"}, headers=auth)
    stale = client.delete(url, headers={**auth, "If-Match": '"1"'})
    assert stale.status_code == 412
    assert client.get(url, headers=auth).status_code == 200
    current = client.delete(url, headers={**auth, "If-Match": '"2"'})
    assert current.status_code == 204


# Deleting referenced records


def test_delete_referenced_account_is_409(client: FlaskClient, auth: Headers) -> None:
    account = post_account(client, auth)
    for name in ("Deal 1", "Deal 2"):
        response = client.post(
            f"{BASE}/records/opportunity",
            json={"name": name, "account": account["id"], "stage": "proposal"},
            headers=auth,
        )
        assert response.status_code == 201, response.json
    response = client.delete(f"{BASE}/records/account/{account['id']}", headers=auth)
    error = error_of(response)
    assert response.status_code == 409
    assert error["code"] == "conflict"
    assert "2 Opportunities" in error["message"]
    assert error["details"] == {"entity": "opportunity", "field": "account", "count": 2}


def test_related_lists_opportunities(client: FlaskClient, auth: Headers) -> None:
    account = post_account(client, auth)
    for name in ("Deal 1", "Deal 2", "Deal 3"):
        client.post(f"{BASE}/records/opportunity",
                    json={"name": name, "account": account["id"], "stage": "proposal"},
                    headers=auth)
    response = client.get(
        f"{BASE}/records/account/{account['id']}/related?limit=2", headers=auth
    )
    lists = {item["entity"]: item for item in response.json["data"]}
    deals = lists["opportunity"]
    assert response.status_code == 200
    assert deals["field"] == "account"
    assert deals["total"] == 3
    assert len(deals["data"]) == 2
    assert deals["list_url"].endswith(
        f"{BASE}/records/opportunity?account={account['id']}"
    )
    listed = client.get(deals["list_url"], headers=auth)
    assert len(listed.json["data"]) == 3


def test_lookup_to_missing_record_is_422(client: FlaskClient, auth: Headers) -> None:
    missing = "01900000-0000-7000-8000-000000000000"
    body = {"name": "Deal", "account": missing, "stage": "proposal"}
    response = client.post(f"{BASE}/records/opportunity", json=body, headers=auth)
    assert response.status_code == 422
    assert error_of(response)["details"] == {
        "account": [f"No Account record has the id {missing!r}."]
    }


def test_required_field_uses_default(client: FlaskClient, auth: Headers) -> None:
    """An opportunity's stage is required and defaults to prospecting, so a
    create without it must take the default."""
    account = post_account(client, auth)
    response = client.post(f"{BASE}/records/opportunity",
                           json={"name": "Deal", "account": account["id"]},
                           headers=auth)
    assert response.status_code == 201, response.json
    assert response.json["data"]["stage"] == "prospecting"


# Lists: pagination


@pytest.fixture
def sixty_accounts(records: RecordService) -> list[dict[str, Any]]:
    """Sixty accounts created out of name order; every fourth has no city."""
    created = []
    for number in range(60):
        index = (number * 37) % 60
        city = None if index % 4 == 0 else f"City {index % 7}"
        created.append(records.create("account", {
            "name": f"Account {index:02d}",
            "city": city,
            "annual_revenue": Decimal(index * 1000),
        }))
    return created


def walk_pages(
    client: FlaskClient, auth: Headers, query: str, follow_link: bool = False
) -> list[dict[str, Any]]:
    """Return every record of a list, page by page, checking each page."""
    seen: list[dict[str, Any]] = []
    url = f"{BASE}/records/account?{query}"
    for _ in range(20):
        response = client.get(url, headers=auth)
        assert response.status_code == 200, response.json
        body = response.json
        seen.extend(body["data"])
        if body["next_cursor"] is None:
            assert "Link" not in response.headers
            return seen
        if follow_link:
            link = response.headers["Link"]
            assert link.endswith('>; rel="next"')
            url = link[1:link.index(">")]
        else:
            url = f"{BASE}/records/account?{query}&cursor={body['next_cursor']}"
    raise AssertionError("pagination did not end after 20 pages")


def expected_order(
    records: list[dict[str, Any]], key: str, descending: bool
) -> list[str]:
    """Return ids in SQLite's order: NULL first ascending, last descending,
    ties broken by id in the same direction."""
    def sort_key(record: dict[str, Any]) -> tuple[bool, Any, str]:
        value = record[key]
        return (value is not None, value if value is not None else "", record["id"])

    ordered = sorted(records, key=sort_key, reverse=descending)
    return [record["id"] for record in ordered]


def test_pagination_sees_each_once(
    client: FlaskClient, auth: Headers, sixty_accounts: list[dict[str, Any]]
) -> None:
    seen = walk_pages(client, auth, "sort=name&limit=25")
    ids = [record["id"] for record in seen]
    assert len(ids) == 60
    assert len(set(ids)) == 60
    assert [record["name"] for record in seen] == [
        f"Account {index:02d}" for index in range(60)
    ]


def test_pagination_page_sizes(
    client: FlaskClient, auth: Headers, sixty_accounts: list[dict[str, Any]]
) -> None:
    first = client.get(f"{BASE}/records/account?sort=name&limit=25", headers=auth)
    cursor = first.json["next_cursor"]
    second = client.get(
        f"{BASE}/records/account?sort=name&limit=25&cursor={cursor}", headers=auth
    )
    cursor = second.json["next_cursor"]
    third = client.get(
        f"{BASE}/records/account?sort=name&limit=25&cursor={cursor}", headers=auth
    )
    assert len(first.json["data"]) == 25
    assert len(second.json["data"]) == 25
    assert len(third.json["data"]) == 10
    assert third.json["next_cursor"] is None


def test_pagination_follows_link_header(
    client: FlaskClient, auth: Headers, sixty_accounts: list[dict[str, Any]]
) -> None:
    seen = walk_pages(client, auth, "sort=-name&limit=25&count=true",
                      follow_link=True)
    assert [record["name"] for record in seen] == [
        f"Account {index:02d}" for index in reversed(range(60))
    ]


@pytest.mark.parametrize("sort", ["city", "-city", "-annual_revenue", "-created_at"])
def test_pagination_on_sort_key(
    client: FlaskClient,
    auth: Headers,
    sixty_accounts: list[dict[str, Any]],
    records: RecordService,
    sort: str,
) -> None:
    stored = [records.get("account", record["id"]) for record in sixty_accounts]
    expected = expected_order(stored, sort.removeprefix("-"), sort.startswith("-"))
    seen = walk_pages(client, auth, f"sort={sort}&limit=25")
    assert [record["id"] for record in seen] == expected


def test_pagination_with_filter(
    client: FlaskClient, auth: Headers, sixty_accounts: list[dict[str, Any]]
) -> None:
    seen = walk_pages(client, auth, "sort=city&limit=7&city__isnull=false")
    cities = [record["city"] for record in seen]
    assert len(seen) == 45
    assert None not in cities
    assert cities == sorted(cities)


def test_default_sort_is_newest_first(
    client: FlaskClient, auth: Headers, sixty_accounts: list[dict[str, Any]]
) -> None:
    response = client.get(f"{BASE}/records/account?limit=200", headers=auth)
    created = [record["created_at"] for record in response.json["data"]]
    assert created == sorted(created, reverse=True)
    assert response.json["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "wording"),
    [
        ("limit=0", "invalid limit 0: use a number from 1 to 200"),
        ("limit=201", "invalid limit 201"),
        ("limit=ten", "invalid limit 'ten'"),
        ("cursor=garbage!!", "invalid cursor"),
        ("sort=colour", "unknown field 'colour'"),
        ("sort=description", "cannot sort by 'description'"),
        ("view=key_accounts", "does not apply saved list views"),
    ],
)
def test_bad_list_parameter_is_400(
    client: FlaskClient, auth: Headers, query: str, wording: str
) -> None:
    response = client.get(f"{BASE}/records/account?{query}", headers=auth)
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_query"
    assert wording in error_of(response)["message"]


def test_cursor_of_other_sort_is_400(
    client: FlaskClient, auth: Headers, sixty_accounts: list[dict[str, Any]]
) -> None:
    first = client.get(f"{BASE}/records/account?sort=name,city", headers=auth)
    cursor = first.json["next_cursor"]
    response = client.get(f"{BASE}/records/account?sort=name&cursor={cursor}",
                          headers=auth)
    assert response.status_code == 400
    assert "does not match this sort order" in error_of(response)["message"]


# Lists: filters, count and search


@pytest.fixture
def filter_accounts(records: RecordService) -> dict[str, str]:
    """Five accounts with distinct values; returns their ids by name."""
    rows = [
        {"name": "Acme Corp", "grade": "a", "industry": "finance",
         "annual_revenue": Decimal("5000.00"), "email": "sales@acme.example"},
        {"name": "acme labs", "grade": "b", "industry": "retail",
         "annual_revenue": Decimal("999.99")},
        {"name": "Beta Industries", "grade": "a", "industry": "energy",
         "annual_revenue": Decimal("1000.00")},
        {"name": "Gamma 100% Ltd", "industry": "finance"},
        {"name": "Delta_Co", "grade": "c", "annual_revenue": Decimal("0.00")},
    ]
    return {row["name"]: records.create("account", row)["id"] for row in rows}


def names_for(client: FlaskClient, auth: Headers, query: str) -> set[str]:
    response = client.get(f"{BASE}/records/account?{query}", headers=auth)
    assert response.status_code == 200, response.json
    return {record["name"] for record in response.json["data"]}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("grade=a", {"Acme Corp", "Beta Industries"}),
        ("grade__eq=a", {"Acme Corp", "Beta Industries"}),
        ("grade__ne=a", {"acme labs", "Gamma 100% Ltd", "Delta_Co"}),
        ("annual_revenue__lt=1000", {"acme labs", "Delta_Co"}),
        ("annual_revenue__gte=1000", {"Acme Corp", "Beta Industries"}),
        ("annual_revenue__gt=999.99&annual_revenue__lte=1000", {"Beta Industries"}),
        ("industry__in=finance,retail", {"Acme Corp", "acme labs", "Gamma 100% Ltd"}),
        ("name__contains=labs", {"acme labs"}),
        ("name__icontains=ACME", {"Acme Corp", "acme labs"}),
        ("name__contains=100%25", {"Gamma 100% Ltd"}),
        ("name__contains=_", {"Delta_Co"}),
        ("name__startswith=Beta", {"Beta Industries"}),
        ("grade__isnull=true", {"Gamma 100% Ltd"}),
        ("grade__isnull=false&industry=finance", {"Acme Corp"}),
        ("email__icontains=SALES@", {"Acme Corp"}),
    ],
)
def test_filter_operators(
    client: FlaskClient,
    auth: Headers,
    filter_accounts: dict[str, str],
    query: str,
    expected: set[str],
) -> None:
    assert names_for(client, auth, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("name__contains=acme", {"acme labs"}),
        ("name__startswith=Acme", {"Acme Corp"}),
    ],
)
def test_contains_is_case_sensitive(
    client: FlaskClient,
    auth: Headers,
    filter_accounts: dict[str, str],
    query: str,
    expected: set[str],
) -> None:
    assert names_for(client, auth, query) == expected


def test_filter_on_created_at(
    client: FlaskClient, auth: Headers, filter_accounts: dict[str, str]
) -> None:
    future = "2999-01-01T00:00:00Z"
    assert names_for(client, auth, f"created_at__lt={future}") == set(filter_accounts)
    assert names_for(client, auth, f"created_at__gte={future}") == set()


def test_filter_on_id(
    client: FlaskClient, auth: Headers, filter_accounts: dict[str, str]
) -> None:
    first, second = filter_accounts["Acme Corp"], filter_accounts["Delta_Co"]
    assert names_for(client, auth, f"id__in={first},{second}") == {"Acme Corp",
                                                                     "Delta_Co"}


@pytest.mark.parametrize(
    ("query", "wording", "details"),
    [
        ("colour=red", "unknown field 'colour' for entity 'account'",
         {"field": "colour"}),
        ("grade__lt=a", "operator 'lt' is not allowed on field 'grade'",
         {"field": "grade", "operator": "lt"}),
        ("grade__like=a", "operator 'like' is not allowed", {"operator": "like"}),
        ("annual_revenue__gt=abc", "invalid value 'abc' for field 'annual_revenue'",
         {"field": "annual_revenue", "value": "abc"}),
        ("grade__isnull=maybe", "invalid value 'maybe' for grade__isnull", {}),
        ("created_at__gt=yesterday", "invalid value 'yesterday'",
         {"field": "created_at"}),
        ("version__gte=two", "invalid value 'two' for field 'version'",
         {"field": "version"}),
    ],
)
def test_bad_filter_is_400(
    client: FlaskClient, auth: Headers, query: str, wording: str,
    details: dict[str, str],
) -> None:
    response = client.get(f"{BASE}/records/account?{query}", headers=auth)
    error = error_of(response)
    assert response.status_code == 400
    assert error["code"] == "invalid_query"
    assert wording in error["message"]
    for key, value in details.items():
        assert error["details"][key] == value


def test_count_adds_total(
    client: FlaskClient, auth: Headers, filter_accounts: dict[str, str]
) -> None:
    counted = client.get(f"{BASE}/records/account?count=true&limit=2&grade__ne=c",
                         headers=auth)
    uncounted = client.get(f"{BASE}/records/account?limit=2", headers=auth)
    assert counted.json["total"] == 4
    assert len(counted.json["data"]) == 2
    assert "total" not in uncounted.json


def test_search_matches_searchable_fields(
    client: FlaskClient, auth: Headers, filter_accounts: dict[str, str]
) -> None:
    assert names_for(client, auth, "q=ACME") == {"Acme Corp", "acme labs"}
    assert names_for(client, auth, "q=sales@acme") == {"Acme Corp"}
    assert names_for(client, auth, "q=ACC-000003") == {"Beta Industries"}
    assert names_for(client, auth, "q=acme&grade=b") == {"acme labs"}


def test_date_filters_on_opportunity(
    client: FlaskClient, auth: Headers, records: RecordService
) -> None:
    account = records.create("account", {"name": "Buyer"})
    for day in (1, 15, 28):
        records.create("opportunity", {
            "name": f"Deal {day}", "account": account["id"], "stage": "proposal",
            "close_date": f"2025-02-{day:02d}",
        })
    records.create("opportunity", {"name": "Undated", "account": account["id"],
                                   "stage": "proposal"})

    def deals(query: str) -> set[str]:
        response = client.get(f"{BASE}/records/opportunity?{query}", headers=auth)
        assert response.status_code == 200, response.json
        return {record["name"] for record in response.json["data"]}

    assert deals("close_date__lt=2025-02-15") == {"Deal 1"}
    assert deals("close_date__gte=2025-02-15") == {"Deal 15", "Deal 28"}
    assert deals("close_date=2025-02-28") == {"Deal 28"}
    assert deals("close_date__isnull=true") == {"Undated"}
    assert deals(f"account={account['id']}&close_date__ne=2025-02-01") == {
        "Deal 15", "Deal 28", "Undated"
    }


# Locale of messages


def test_validation_in_user_locale(
    client: FlaskClient, platform: Platform, admin: Actor, auth: Headers
) -> None:
    platform.control.set_locale(admin.user_id, "zh-CN")
    response = client.post(f"{BASE}/records/account", json={}, headers=auth)
    assert error_of(response)["details"] == {"name": ["此字段为必填项。"]}


def test_lang_beats_accept_language(client: FlaskClient, auth: Headers) -> None:
    response = client.post(
        f"{BASE}/records/account?lang=en",
        json={},
        headers={**auth, "Accept-Language": "zh-CN,zh;q=0.9"},
    )
    assert error_of(response)["details"] == {"name": ["This field is required."]}


# Metadata endpoints


def test_entities_lists_every_entity(
    client: FlaskClient, auth: Headers, crm: TenantRuntime
) -> None:
    response = client.get(f"{BASE}/entities", headers=auth)
    names = [entity["name"] for entity in response.json["data"]]
    assert response.status_code == 200
    assert names == [entity.name for entity in crm.definition.entities]


def test_entities_in_request_locale(client: FlaskClient, auth: Headers) -> None:
    response = client.get(f"{BASE}/entities/account",
                          headers={**auth, "Accept-Language": "zh-CN"})
    account = response.json["data"]
    fields = {field["name"]: field for field in account["fields"]}
    assert account["label"] == "客户"
    assert fields["industry"]["label"] == "行业"
    assert fields["industry"]["options"][0] == {
        "value": "telecommunications", "label": "电信", "color": None
    }


def test_entities_describe_fields(client: FlaskClient, auth: Headers) -> None:
    response = client.get(f"{BASE}/entities/account", headers=auth)
    account = response.json["data"]
    fields = {field["name"]: field for field in account["fields"]}
    system = {column["name"]: column for column in account["system_columns"]}
    assert fields["name"]["required"] is True
    assert fields["name"]["max_length"] == 255
    assert fields["account_number"]["read_only"] is True
    assert fields["latitude"]["minimum"] == "-90"
    assert fields["grade"]["operators"] == ["eq", "ne", "in", "isnull"]
    assert fields["description"]["sortable"] is False
    assert system["version"] == {"name": "version", "type": "integer",
                                 "read_only": True, "sortable": True,
                                 "operators": ["eq", "ne", "lt", "lte", "gt",
                                               "gte", "in", "isnull"]}
    assert system["owner_id"]["read_only"] is False
    assert account["list_views"][0]["name"] == "all"


def test_unknown_entity_description_is_404(client: FlaskClient, auth: Headers
                                           ) -> None:
    response = client.get(f"{BASE}/entities/spaceship", headers=auth)
    assert response.status_code == 404


# Unexpected errors


def test_unexpected_error_is_json_500(
    client: FlaskClient,
    auth: Headers,
    crm: TenantRuntime,
    platform: Platform,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = platform.settings.tenant_db_path(crm.slug)
    with sqlite3.connect(database) as conn:
        conn.execute("DROP TABLE e_survey_response")
    with caplog.at_level(logging.ERROR, logger="crm_platform.api"):
        response = client.get(f"{BASE}/records/survey_response", headers=auth)
    error = error_of(response)
    request_id = error["details"]["request_id"]
    assert response.status_code == 500
    assert error["code"] == "internal_error"
    assert request_id in error["message"]
    assert response.headers["X-Request-ID"] == request_id
    assert "Traceback" not in response.get_data(as_text=True)
    assert "e_survey_response" not in response.get_data(as_text=True)
    logged = [record for record in caplog.records if request_id in record.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
