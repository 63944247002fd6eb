"""Tenant members managed by admins: the service, the members page and the
``/members`` API, the seat limit under concurrent adds, and the last admin."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from crm_platform import members
from crm_platform.billing import SeatLimitReached, create_plan, set_subscription
from crm_platform.control import Actor, PasswordRejected
from crm_platform.errors import NotFound, RecordInvalid
from crm_platform.tenancy import Platform, TenantRuntime
from tests.conftest import ADMIN_PASSWORD, STANDARD_CRM, make_member
from tests.test_web import csrf_token, sign_in

pytestmark = pytest.mark.both_backends

PAID_UNTIL = dt.date(2099, 12, 31)
NEW_PASSWORD = "fresh-start-77"
HOSTILE_NAME = '<script>alert("x")</script>'
#: Threads that add one member each at the same moment in the race test.
RACE_THREADS = 8
#: Seconds the race test waits for its threads before it fails.
RACE_TIMEOUT = 60
Headers = dict[str, str]


def json_of(response: TestResponse) -> Any:
    """Return the JSON body of an API response."""
    return response.json


def subscribe(platform: Platform, seats: int) -> None:
    create_plan(platform.control, "team", "Team", seats=seats,
                features=["api", "import", "export"])
    set_subscription(platform.control, "acme", "team", PAID_UNTIL, seats)


def tenant_of(platform: Platform) -> Any:
    return platform.control.get_tenant("acme")


def members_page(client: FlaskClient) -> str:
    page = client.get("/t/acme/members")
    assert page.status_code == 200, page.text
    return page.text


def post_members(client: FlaskClient, url: str, data: dict[str, str]) -> Any:
    form = {"csrf_token": csrf_token(members_page(client)), **data}
    return client.post(url, data=form)


def emails(platform: Platform) -> list[str]:
    return [item.email for item in members.list_members(platform.control,
                                                        tenant_of(platform))]


@pytest.fixture
def browser(client: FlaskClient, admin: Actor) -> FlaskClient:
    assert sign_in(client).status_code == 302
    return client


# The service


def test_add_existing_user_within_seats(platform: Platform, admin: Actor) -> None:
    subscribe(platform, seats=2)
    platform.control.create_user("rep@example.com", ADMIN_PASSWORD, "Rep")
    member = members.add_member(platform.control, tenant_of(platform),
                                "Rep@Example.com", "sales_rep")
    assert member.email == "rep@example.com"
    assert member.role == "sales_rep"
    assert member.added_at is not None


def test_add_new_user_with_password(platform: Platform, admin: Actor) -> None:
    tenant = tenant_of(platform)
    member = members.add_member(platform.control, tenant, "new@example.com",
                                "sales_rep", "New Person", NEW_PASSWORD)
    actor = platform.control.authenticate(tenant, "new@example.com", NEW_PASSWORD)
    assert member.name == "New Person"
    assert actor.user_id == member.user_id


def test_add_new_user_needs_password(platform: Platform, admin: Actor) -> None:
    with pytest.raises(RecordInvalid, match="send its name and an initial") as err:
        members.add_member(platform.control, tenant_of(platform),
                           "new@example.com", "sales_rep", "New Person")
    assert err.value.details == {"password": ["password is required for a new user"]}
    assert platform.control.find_user_id("new@example.com") is None


def test_add_rejects_weak_password(platform: Platform, admin: Actor) -> None:
    with pytest.raises(PasswordRejected, match="password too short"):
        members.add_member(platform.control, tenant_of(platform),
                           "new@example.com", "sales_rep", "New", "short1")


def test_add_existing_ignores_password(platform: Platform, admin: Actor) -> None:
    platform.control.create_user("rep@example.com", ADMIN_PASSWORD, "Rep")
    tenant = tenant_of(platform)
    members.add_member(platform.control, tenant, "rep@example.com", "sales_rep",
                       "Other Name", NEW_PASSWORD)
    actor = platform.control.authenticate(tenant, "rep@example.com", ADMIN_PASSWORD)
    assert actor.name == "Rep"


def test_add_twice_is_conflict(platform: Platform, admin: Actor) -> None:
    with pytest.raises(members.AlreadyMember, match="already a member"):
        members.add_member(platform.control, tenant_of(platform),
                           admin.email, "sales_rep")


def test_seat_limit_leaves_no_user(platform: Platform, admin: Actor) -> None:
    subscribe(platform, seats=1)
    with pytest.raises(SeatLimitReached, match="1 of 1 seats in use"):
        members.add_member(platform.control, tenant_of(platform),
                           "new@example.com", "sales_rep", "New", NEW_PASSWORD)
    assert platform.control.find_user_id("new@example.com") is None


def test_seat_race_adds_only_free(platform: Platform, admin: Actor) -> None:
    """Threads adding members at one moment never exceed the paid seats."""
    subscribe(platform, seats=4)
    tenant = tenant_of(platform)
    user_ids = [
        platform.control.create_user(f"racer{index}@example.com", None)
        for index in range(RACE_THREADS)
    ]
    start = threading.Barrier(RACE_THREADS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def add(user_id: str) -> None:
        start.wait(timeout=RACE_TIMEOUT)
        try:
            platform.control.add_member(tenant, user_id, "sales_rep")
            outcome = "added"
        except SeatLimitReached:
            outcome = "seat_limit"
        except Exception as err:  # noqa: BLE001  (shown by the asserts below)
            outcome = repr(err)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=add, args=(user_id,)) for user_id in user_ids]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + RACE_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(set(outcomes)) == ["added", "seat_limit"]
    assert outcomes.count("added") == 3
    assert outcomes.count("seat_limit") == RACE_THREADS - 3
    assert members.seat_usage(platform.control, tenant).used == 4


def test_last_admin_cannot_leave(platform: Platform, admin: Actor) -> None:
    with pytest.raises(members.LastAdmin, match="last admin of tenant 'acme'"):
        members.remove_member(platform.control, tenant_of(platform), admin.user_id)
    assert emails(platform) == [admin.email]


def test_last_admin_cannot_be_demoted(platform: Platform, admin: Actor) -> None:
    with pytest.raises(members.LastAdmin, match="make another member an admin"):
        members.change_role(platform.control, tenant_of(platform), admin.user_id,
                            "sales_rep")


def test_second_admin_allows_leaving(platform: Platform, admin: Actor) -> None:
    make_member(platform, "acme", "second@example.com", "admin")
    members.remove_member(platform.control, tenant_of(platform), admin.user_id)
    assert emails(platform) == ["second@example.com"]


def test_role_change_keeps_added_at(platform: Platform, admin: Actor) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    tenant = tenant_of(platform)
    before = members.get_member(platform.control, tenant, rep.user_id)
    after = members.change_role(platform.control, tenant, rep.user_id, "admin")
    assert after.role == "admin"
    assert after.added_at == before.added_at


def test_other_tenant_member_not_found(platform: Platform, admin: Actor) -> None:
    platform.create_tenant("globex", STANDARD_CRM)
    boss = make_member(platform, "globex", "boss@globex.example", "admin")
    tenant = tenant_of(platform)
    with pytest.raises(NotFound, match="is not a member of tenant 'acme'"):
        members.change_role(platform.control, tenant, boss.user_id, "read_only")
    with pytest.raises(NotFound, match="is not a member of tenant 'acme'"):
        members.remove_member(platform.control, tenant, boss.user_id)


# The members page


def test_page_lists_members_and_seats(
    platform: Platform, browser: FlaskClient
) -> None:
    subscribe(platform, seats=3)
    make_member(platform, "acme", "rep@example.com", "sales_rep")
    page = members_page(browser)
    assert "rep@example.com" in page
    assert "2 of 3 paid seats in use." in page


def test_page_adds_new_member(platform: Platform, browser: FlaskClient) -> None:
    response = post_members(browser, "/t/acme/members", {
        "email": "new@example.com", "role": "sales_manager", "name": "New Person",
        "password": NEW_PASSWORD,
    })
    assert response.status_code == 302
    assert "new@example.com" in emails(platform)
    assert "New Person is now a member." in browser.get("/t/acme/members").text


def test_page_shows_seat_limit(platform: Platform, browser: FlaskClient) -> None:
    subscribe(platform, seats=1)
    response = post_members(browser, "/t/acme/members", {
        "email": "new@example.com", "role": "sales_rep", "name": "New",
        "password": NEW_PASSWORD,
    })
    assert response.status_code == 409
    assert "All 1 paid seats are in use (1 members)." in response.text
    assert 'data-testid="members-error"' in response.text


def test_page_seat_limit_in_chinese(platform: Platform, browser: FlaskClient) -> None:
    subscribe(platform, seats=1)
    browser.get("/t/acme/members?lang=zh-CN")
    response = post_members(browser, "/t/acme/members", {
        "email": "new@example.com", "role": "sales_rep", "name": "New",
        "password": NEW_PASSWORD,
    })
    assert response.status_code == 409
    assert "1 个付费席位已全部占用" in response.text


def test_page_new_user_needs_password(
    platform: Platform, browser: FlaskClient
) -> None:
    response = post_members(browser, "/t/acme/members", {
        "email": "new@example.com", "role": "sales_rep", "name": "New",
    })
    assert response.status_code == 422
    assert "Enter a name and an initial password" in response.text


def test_page_rejects_weak_password(platform: Platform, browser: FlaskClient) -> None:
    response = post_members(browser, "/t/acme/members", {
        "email": "new@example.com", "role": "sales_rep", "name": "New",
        "password": "abcdefghijkl",
    })
    assert response.status_code == 422
    assert "The password is too weak" in response.text
    assert platform.control.find_user_id("new@example.com") is None


def test_page_requires_csrf(platform: Platform, browser: FlaskClient) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    added = browser.post("/t/acme/members", data={
        "email": "new@example.com", "role": "sales_rep", "name": "New",
        "password": NEW_PASSWORD,
    })
    changed = browser.post(f"/t/acme/members/{rep.user_id}/role",
                           data={"role": "admin"})
    removed = browser.post(f"/t/acme/members/{rep.user_id}/remove", data={})
    assert added.status_code == 400
    assert changed.status_code == 400
    assert removed.status_code == 400
    assert emails(platform) == ["admin@example.com", "rep@example.com"]
    assert members.get_member(platform.control, tenant_of(platform),
                              rep.user_id).role == "sales_rep"


def test_page_changes_role(platform: Platform, browser: FlaskClient) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    response = post_members(browser, f"/t/acme/members/{rep.user_id}/role",
                            {"role": "sales_manager"})
    assert response.status_code == 302
    member = members.get_member(platform.control, tenant_of(platform), rep.user_id)
    assert member.role == "sales_manager"


def test_page_removes_member(platform: Platform, browser: FlaskClient) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    response = post_members(browser, f"/t/acme/members/{rep.user_id}/remove", {})
    assert response.status_code == 302
    assert emails(platform) == ["admin@example.com"]


def test_page_keeps_last_admin(
    platform: Platform, browser: FlaskClient, admin: Actor
) -> None:
    response = post_members(browser, f"/t/acme/members/{admin.user_id}/remove", {})
    assert response.status_code == 409
    assert "This member is the tenant&#39;s last admin." in response.text
    assert emails(platform) == [admin.email]


def test_page_refuses_non_admin(
    platform: Platform, client: FlaskClient, admin: Actor
) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    assert sign_in(client, email="rep@example.com").status_code == 302
    token = csrf_token(client.get("/t/acme/").text)
    page = client.get("/t/acme/members")
    added = client.post("/t/acme/members", data={
        "csrf_token": token, "email": "new@example.com", "role": "admin",
        "name": "New", "password": NEW_PASSWORD})
    promoted = client.post(f"/t/acme/members/{rep.user_id}/role",
                           data={"csrf_token": token, "role": "admin"})
    removed = client.post(f"/t/acme/members/{admin.user_id}/remove",
                          data={"csrf_token": token})
    assert page.status_code == 403
    assert added.status_code == 403
    assert promoted.status_code == 403
    assert removed.status_code == 403
    assert emails(platform) == ["admin@example.com", "rep@example.com"]
    assert members.get_member(platform.control, tenant_of(platform),
                              rep.user_id).role == "sales_rep"


def test_page_escapes_hostile_name(platform: Platform, browser: FlaskClient) -> None:
    response = post_members(browser, "/t/acme/members", {
        "email": "evil@example.com", "role": "sales_rep", "name": HOSTILE_NAME,
        "password": NEW_PASSWORD,
    })
    page = members_page(browser)
    assert response.status_code == 302
    assert HOSTILE_NAME not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


def test_page_anonymous_goes_to_login(client: FlaskClient, admin: Actor) -> None:
    response = client.get("/t/acme/members")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/t/acme/login")


# The API


def test_api_lists_members_and_seats(
    platform: Platform, client: FlaskClient, auth: Headers
) -> None:
    subscribe(platform, seats=5)
    response = client.get("/t/acme/api/v1/members", headers=auth)
    assert response.status_code == 200
    body = json_of(response)
    assert body["seats"] == {"used": 1, "paid": 5}
    assert [item["email"] for item in body["data"]] == ["admin@example.com"]
    assert body["data"][0]["role"] == "admin"


def test_api_adds_new_member(
    platform: Platform, client: FlaskClient, auth: Headers
) -> None:
    response = client.post("/t/acme/api/v1/members", headers=auth, json={
        "email": "new@example.com", "role": "sales_rep", "name": "New",
        "password": NEW_PASSWORD})
    assert response.status_code == 201, response.json
    assert json_of(response)["data"]["email"] == "new@example.com"
    user_id = json_of(response)["data"]["user_id"]
    assert response.headers["Location"].endswith(f"/t/acme/api/v1/members/{user_id}")


def test_api_seat_limit_is_409(
    platform: Platform, client: FlaskClient, auth: Headers
) -> None:
    subscribe(platform, seats=1)
    response = client.post("/t/acme/api/v1/members", headers=auth, json={
        "email": "new@example.com", "role": "sales_rep", "name": "New",
        "password": NEW_PASSWORD})
    assert response.status_code == 409
    error = json_of(response)["error"]
    assert error["code"] == "seat_limit_reached"
    assert error["details"] == {"seats_used": 1, "seats_paid": 1}


def test_api_rejects_unknown_field(client: FlaskClient, auth: Headers) -> None:
    response = client.post("/t/acme/api/v1/members", headers=auth, json={
        "email": "new@example.com", "role": "sales_rep", "is_operator": True})
    assert response.status_code == 422
    assert json_of(response)["error"]["details"] == {"is_operator": ["unknown field"]}


def test_api_rejects_unknown_role(client: FlaskClient, auth: Headers) -> None:
    response = client.post("/t/acme/api/v1/members", headers=auth, json={
        "email": "new@example.com", "role": "owner", "name": "New",
        "password": NEW_PASSWORD})
    assert response.status_code == 422
    assert "unknown role 'owner'" in json_of(response)["error"]["message"]


def test_api_changes_role(
    platform: Platform, client: FlaskClient, auth: Headers
) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    response = client.patch(f"/t/acme/api/v1/members/{rep.user_id}", headers=auth,
                            json={"role": "service_agent"})
    assert response.status_code == 200
    assert json_of(response)["data"]["role"] == "service_agent"


def test_api_removes_member_and_tokens(
    platform: Platform, client: FlaskClient, auth: Headers, crm: TenantRuntime
) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    rep_token = platform.control.create_token(crm.tenant, rep.user_id)
    response = client.delete(f"/t/acme/api/v1/members/{rep.user_id}", headers=auth)
    after = client.get("/t/acme/api/v1/entities",
                       headers={"Authorization": f"Bearer {rep_token}"})
    assert response.status_code == 204
    assert after.status_code == 401


def test_api_keeps_last_admin(
    client: FlaskClient, auth: Headers, admin: Actor
) -> None:
    response = client.delete(f"/t/acme/api/v1/members/{admin.user_id}", headers=auth)
    demoted = client.patch(f"/t/acme/api/v1/members/{admin.user_id}", headers=auth,
                           json={"role": "read_only"})
    assert response.status_code == 409
    assert json_of(response)["error"]["code"] == "last_admin"
    assert demoted.status_code == 409


def test_api_refuses_non_admin(
    platform: Platform, client: FlaskClient, crm: TenantRuntime, admin: Actor
) -> None:
    rep = make_member(platform, "acme", "rep@example.com", "sales_rep")
    headers = {"Authorization":
               f"Bearer {platform.control.create_token(crm.tenant, rep.user_id)}"}
    listed = client.get("/t/acme/api/v1/members", headers=headers)
    promoted = client.patch(f"/t/acme/api/v1/members/{rep.user_id}",
                            headers=headers, json={"role": "admin"})
    assert listed.status_code == 403
    assert json_of(listed)["error"]["code"] == "forbidden"
    assert promoted.status_code == 403


def test_api_foreign_user_looks_missing(
    platform: Platform, client: FlaskClient, auth: Headers
) -> None:
    platform.create_tenant("globex", STANDARD_CRM)
    boss = make_member(platform, "globex", "boss@globex.example", "admin")
    foreign = client.delete(f"/t/acme/api/v1/members/{boss.user_id}", headers=auth)
    missing = client.delete("/t/acme/api/v1/members/0190-missing", headers=auth)
    assert foreign.status_code == 404
    assert missing.status_code == 404
    assert platform.control.actor(platform.control.get_tenant("globex"),
                                  boss.user_id) is not None


def test_openapi_documents_members(client: FlaskClient, auth: Headers) -> None:
    document = json_of(client.get("/t/acme/api/v1/openapi.json", headers=auth))
    paths = document["paths"]
    assert set(paths["/members"]) == {"get", "post"}
    assert {"get", "patch", "delete"} <= set(paths["/members/{user_id}"])
    assert "seat_limit_reached" in (
        paths["/members"]["post"]["responses"]["409"]["description"])
