"""Every field type through the REST API, on tests/definitions/all_types.

The ``sample`` entity has one field of each type of the metadata format and a
lookup to ``target``. Values go in by POST and must come back by GET equal,
and bad values must be rejected with the message of the request's locale.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from crm_platform.tenancy import Platform, TenantRuntime
from metadata_engine.messages import MESSAGES
from tests.conftest import make_member

ALL_TYPES = Path(__file__).resolve().parent / "definitions" / "all_types"
BASE = "/t/types/api/v1"
SAMPLES = f"{BASE}/records/sample"
MISSING_ID = "01900000-0000-7000-8000-000000000000"
Headers = dict[str, str]


@pytest.fixture
def types_tenant(platform: Platform) -> TenantRuntime:
    return platform.create_tenant("types", ALL_TYPES, name="All types")


@pytest.fixture
def types_auth(platform: Platform, types_tenant: TenantRuntime) -> Headers:
    actor = make_member(platform, types_tenant.slug, "types@example.com", "admin")
    token = platform.control.create_token(types_tenant.tenant, actor.user_id)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def target_id(client: FlaskClient, types_auth: Headers) -> str:
    response = client.post(f"{BASE}/records/target", json={"name": "Bullseye"},
                           headers=types_auth)
    assert response.status_code == 201, response.json
    record_id: str = response.json["data"]["id"]
    return record_id


def post_sample(client: FlaskClient, auth: Headers, **values: Any) -> Any:
    return client.post(SAMPLES, json={"title": "Sample", **values}, headers=auth)


def full_sample(target: str) -> dict[str, Any]:
    """A value for every writable field, in the form a client sends."""
    return {
        "title": "Every type",
        "code": "AB12",
        "notes": "Line one\nLine two, 中文, emoji \U0001f600",
        "quantity": 1000,
        "big_number": 2**62 + 1,
        "ratio": "-0.1234",
        "wide_decimal": "1234567890123.45",
        "price": "19.99",
        "discount": "12.50",
        "active": False,
        "due_on": "2024-02-29",
        "happened_at": "2024-03-10T23:30:15.250000Z",
        "email": "someone@example.com",
        "phone": "+86 (10) 1234-5678",
        "website": "https://example.com/path?q=1",
        "colour": "green",
        "tags": ["alpha", "gamma"],
        "target": target,
    }


# Round trips


def test_every_type_round_trips(
    client: FlaskClient, types_auth: Headers, target_id: str
) -> None:
    sent = full_sample(target_id)
    created = client.post(SAMPLES, json=sent, headers=types_auth)
    assert created.status_code == 201, created.json
    record_id = created.json["data"]["id"]
    fetched = client.get(f"{SAMPLES}/{record_id}", headers=types_auth)
    data = fetched.json["data"]
    for name, value in sent.items():
        assert data[name] == value, name
    assert fetched.json["data"] == created.json["data"]


def test_generated_values(
    client: FlaskClient, types_auth: Headers, target_id: str
) -> None:
    first = post_sample(client, types_auth).json["data"]
    second = post_sample(client, types_auth).json["data"]
    assert first["serial"] == "SMP-00001"
    assert second["serial"] == "SMP-00002"
    assert first["legacy_code"] is None
    assert first["discount"] == "5.00"
    assert first["active"] is True
    assert first["tags"] is None


def test_decimals_as_json_numbers_are_exact(
    client: FlaskClient, types_auth: Headers
) -> None:
    body = '{"title": "Numbers", "ratio": 0.1, "price": 1e3, "wide_decimal": 12}'
    response = client.post(SAMPLES, data=body, content_type="application/json",
                           headers=types_auth)
    data = response.json["data"]
    assert response.status_code == 201, response.json
    assert data["ratio"] == "0.1000"
    assert data["price"] == "1000.00"
    assert data["wide_decimal"] == "12.00"


def test_decimal_keeps_scale(client: FlaskClient, types_auth: Headers) -> None:
    response = post_sample(client, types_auth, ratio="0.5", price="7")
    assert response.json["data"]["ratio"] == "0.5000"
    assert response.json["data"]["price"] == "7.00"


def test_eighteen_digit_decimal_is_exact(
    client: FlaskClient, types_auth: Headers
) -> None:
    response = post_sample(client, types_auth, wide_decimal="9876543210987654.32")
    assert response.json["data"]["wide_decimal"] == "9876543210987654.32"


def test_datetime_with_zone_becomes_utc(
    client: FlaskClient, types_auth: Headers
) -> None:
    response = post_sample(client, types_auth, happened_at="2024-03-11T07:30:15+08:00")
    stored = response.json["data"]["happened_at"]
    assert stored == "2024-03-10T23:30:15Z"
    parsed = dt.datetime.fromisoformat(stored.replace("Z", "+00:00"))
    assert parsed == dt.datetime(2024, 3, 11, 7, 30, 15,
                                 tzinfo=dt.timezone(dt.timedelta(hours=8)))


def test_naive_datetime_is_utc(client: FlaskClient, types_auth: Headers) -> None:
    response = post_sample(client, types_auth, happened_at="2024-03-10T12:00:00")
    assert response.json["data"]["happened_at"] == "2024-03-10T12:00:00Z"


def test_multi_picklist_is_sorted_set(
    client: FlaskClient, types_auth: Headers
) -> None:
    response = post_sample(client, types_auth, tags=["gamma", "alpha", "gamma"])
    assert response.json["data"]["tags"] == ["alpha", "gamma"]


def test_patch_every_type_to_null(
    client: FlaskClient, types_auth: Headers, target_id: str
) -> None:
    created = client.post(SAMPLES, json=full_sample(target_id), headers=types_auth)
    optional = [name for name in full_sample(target_id) if name != "title"]
    response = client.patch(f"{SAMPLES}/{created.json['data']['id']}",
                            json=dict.fromkeys(optional), headers=types_auth)
    assert response.status_code == 200, response.json
    for name in optional:
        assert response.json["data"][name] is None, name


@pytest.mark.parametrize("field", ["serial", "legacy_code"])
def test_read_only_rejected_on_write(
    client: FlaskClient, types_auth: Headers, field: str
) -> None:
    created = post_sample(client, types_auth)
    patched = client.patch(f"{SAMPLES}/{created.json['data']['id']}",
                           json={field: "SMP-99999"}, headers=types_auth)
    posted = post_sample(client, types_auth, **{field: "SMP-99999"})
    message = ["This field is read-only and cannot be written."]
    assert posted.status_code == 422
    assert posted.json["error"]["details"] == {field: message}
    assert patched.status_code == 422
    assert patched.json["error"]["details"] == {field: message}


# Validation messages, in English and Chinese


def message(locale: str, key: str, **params: Any) -> str:
    return MESSAGES[locale][key].format(**params)


#: (field, bad value, message key, message parameters)
INVALID_VALUES: list[tuple[str, Any, str, dict[str, Any]]] = [
    ("title", None, "null", {}),
    ("title", "x" * 21, "max_length", {"max": 20}),
    ("code", "ab12", "pattern", {}),
    ("quantity", 1001, "range", {"min": 0, "max": 1000}),
    ("quantity", -1, "range", {"min": 0, "max": 1000}),
    ("quantity", "abc", "invalid_integer", {}),
    ("quantity", True, "invalid_integer", {}),
    ("ratio", "1.5", "range", {"min": -1, "max": 1}),
    ("ratio", "0.12345", "decimal_places", {"places": 4}),
    ("ratio", "abc", "invalid_decimal", {}),
    ("price", "-0.01", "min", {"min": 0}),
    ("active", "maybe", "invalid_boolean", {}),
    ("due_on", "2024-02-30", "invalid_date", {}),
    ("due_on", "1999-12-31", "range",
     {"min": dt.date(2000, 1, 1), "max": dt.date(2099, 12, 31)}),
    ("happened_at", "yesterday", "invalid_datetime", {}),
    ("email", "not-an-email", "invalid_email", {}),
    ("phone", "call me", "invalid_phone", {}),
    ("website", "ftp://example.com", "invalid_url", {}),
    ("colour", "purple", "choice", {"input": "purple", "choices": "red, green, blue"}),
    ("tags", "alpha", "invalid_list", {}),
    ("target", MISSING_ID, "lookup_missing", {"input": MISSING_ID}),
]


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
@pytest.mark.parametrize(
    ("field", "value", "key", "params"),
    INVALID_VALUES,
    ids=[f"{case[0]}-{case[2]}" for case in INVALID_VALUES],
)
def test_invalid_value_message(
    client: FlaskClient,
    types_auth: Headers,
    locale: str,
    field: str,
    value: Any,
    key: str,
    params: dict[str, Any],
) -> None:
    if key == "lookup_missing":
        params = {**params, "entity": {"en": "Target", "zh-CN": "目标"}[locale]}
    response = client.post(f"{SAMPLES}?lang={locale}",
                           json={"title": "Sample", field: value}, headers=types_auth)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "validation_failed"
    assert response.json["error"]["details"] == {
        field: [message(locale, key, **params)]
    }


def test_missing_required_in_chinese(
    client: FlaskClient, types_auth: Headers
) -> None:
    response = client.post(SAMPLES, json={"code": "AB12"},
                           headers={**types_auth, "Accept-Language": "zh-CN,zh;q=0.9"})
    assert response.json["error"]["details"] == {"title": ["此字段为必填项。"]}


def test_accept_language_english(client: FlaskClient, types_auth: Headers) -> None:
    response = client.post(SAMPLES, json={"code": "AB12"},
                           headers={**types_auth, "Accept-Language": "en-GB"})
    assert response.json["error"]["details"] == {"title": ["This field is required."]}


def test_bad_option_in_multi_picklist(
    client: FlaskClient, types_auth: Headers
) -> None:
    response = post_sample(client, types_auth, tags=["alpha", "delta"])
    details = response.json["error"]["details"]
    assert response.status_code == 422
    assert details == {"tags": [
        message("en", "choice", input="delta", choices="alpha, beta, gamma")
    ]}


def test_every_error_reported_at_once(
    client: FlaskClient, types_auth: Headers
) -> None:
    response = client.post(SAMPLES, json={
        "title": "T", "quantity": "abc", "email": "nope", "colour": "purple",
        "serial": "X",
    }, headers=types_auth)
    details = response.json["error"]["details"]
    assert set(details) == {"quantity", "email", "colour", "serial"}


def test_missing_required_with_other_errors(
    client: FlaskClient, types_auth: Headers
) -> None:
    response = client.post(SAMPLES, json={"quantity": "abc"}, headers=types_auth)
    details = response.json["error"]["details"]
    assert set(details) == {"title", "quantity"}


def test_invalid_sample_stores_nothing(
    client: FlaskClient, types_auth: Headers
) -> None:
    post_sample(client, types_auth, quantity=5000)
    response = client.get(f"{SAMPLES}?count=true", headers=types_auth)
    assert response.json["total"] == 0


def test_fractional_integer_rejected(
    client: FlaskClient, types_auth: Headers
) -> None:
    response = client.post(SAMPLES, data='{"title": "T", "quantity": 1.5}',
                           content_type="application/json", headers=types_auth)
    assert response.status_code == 422


def test_decimal_exponent_over_precision(
    client: FlaskClient, types_auth: Headers
) -> None:
    response = post_sample(client, types_auth, wide_decimal="1E+20")
    assert response.status_code == 422


# Filters on every type


@pytest.fixture
def three_samples(
    client: FlaskClient, types_auth: Headers, target_id: str
) -> dict[str, str]:
    """Samples one, two and three with ascending values; two has no values."""
    bodies = [
        {"title": "one", "quantity": 1, "ratio": "-0.5", "price": "10.00",
         "active": True, "due_on": "2024-01-01", "happened_at": "2024-01-01T08:00:00Z",
         "colour": "red", "tags": ["alpha"], "target": target_id,
         "website": "https://one.example"},
        {"title": "two"},
        {"title": "three", "quantity": 3, "ratio": "0.5", "price": "30.00",
         "active": False, "due_on": "2024-12-31", "happened_at": "2024-12-31T20:00:00Z",
         "colour": "blue", "tags": ["alpha", "beta"],
         "website": "https://three.example"},
    ]
    ids = {}
    for body in bodies:
        response = client.post(SAMPLES, json=body, headers=types_auth)
        assert response.status_code == 201, response.json
        ids[body["title"]] = response.json["data"]["id"]
    return ids


def titles(client: FlaskClient, auth: Headers, query: str) -> set[str]:
    response = client.get(f"{SAMPLES}?{query}", headers=auth)
    assert response.status_code == 200, response.json
    return {record["title"] for record in response.json["data"]}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("quantity__gte=2", {"three"}),
        ("quantity__in=1,3", {"one", "three"}),
        ("ratio__lt=0", {"one"}),
        ("price__gt=10", {"three"}),
        ("active=true", {"one", "two"}),
        ("active=false", {"three"}),
        ("active__isnull=true", set()),
        ("due_on__lt=2024-06-01", {"one"}),
        ("due_on__gte=2024-06-01", {"three"}),
        ("happened_at__gt=2024-06-01T00:00:00%2B08:00", {"three"}),
        ("happened_at__lte=2024-01-01T08:00:00Z", {"one"}),
        ("colour__in=red,blue", {"one", "three"}),
        ("tags__contains=beta", {"three"}),
        ("tags__contains=alpha", {"one", "three"}),
        ("tags__isnull=true", {"two"}),
        ("website__startswith=https://three", {"three"}),
        ("quantity__isnull=true", {"two"}),
    ],
)
def test_filter_by_type(
    client: FlaskClient,
    types_auth: Headers,
    three_samples: dict[str, str],
    query: str,
    expected: set[str],
) -> None:
    assert titles(client, types_auth, query) == expected


def test_filter_by_lookup(
    client: FlaskClient,
    types_auth: Headers,
    three_samples: dict[str, str],
    target_id: str,
) -> None:
    assert titles(client, types_auth, f"target={target_id}") == {"one"}
    assert titles(client, types_auth, "target__isnull=false") == {"one"}


@pytest.mark.parametrize(
    ("query", "wording"),
    [
        ("tags=alpha", "operator 'eq' is not allowed on field 'tags'"),
        ("active__gt=true", "operator 'gt' is not allowed on field 'active'"),
        ("due_on__lt=soon", "invalid value 'soon' for field 'due_on' of type date"),
        ("quantity__in=1,two", "invalid value 'two' for field 'quantity'"),
        ("sort=tags", "cannot sort by 'tags'"),
    ],
)
def test_filter_errors_by_type(
    client: FlaskClient, types_auth: Headers, query: str, wording: str
) -> None:
    response = client.get(f"{SAMPLES}?{query}", headers=types_auth)
    assert response.status_code == 400
    assert wording in response.json["error"]["message"]


def test_sort_by_decimal(
    client: FlaskClient, types_auth: Headers, three_samples: dict[str, str]
) -> None:
    response = client.get(f"{SAMPLES}?sort=-ratio", headers=types_auth)
    ratios = [record["ratio"] for record in response.json["data"]]
    assert ratios == ["0.5000", "-0.5000", None]
    assert Decimal(ratios[0]) > Decimal(ratios[1])
