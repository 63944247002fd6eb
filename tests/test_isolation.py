"""Tenant isolation across every route of the REST API and the web UI.

Two tenants, ``acme`` and ``globex``, run on the standard CRM template with
records in every entity. The walks build their URLs from ``app.url_map``, so
a new route is probed without editing this file, and they check two things:

- acme's credentials (bearer token or session cookie) never reach globex;
- acme's own URLs, given globex's record ids, respond exactly as they do for
  a random id, so a response never reveals that an id exists elsewhere.

Every walk snapshots all rows of both tenants before and after and requires
them to be equal. The module shares one data directory between its tests
because no test changes a record if isolation holds.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule
from werkzeug.test import TestResponse

from crm_platform.app import create_app
from crm_platform.config import Settings
from crm_platform.control import Actor
from crm_platform.tenancy import Platform, TenantRuntime
from crm_platform.web import PUBLIC_ENDPOINTS
from metadata_engine.model import Entity
from renderers.forms import input_name
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, STANDARD_CRM, make_member
from tests.test_web import csrf_token, sign_in

GLOBEX_EMAIL = "boss@globex.example"
#: Text in every title of globex's records, which no response to acme may contain.
SECRET_MARK = "gxsecret"
RECORDS_PER_ENTITY = 2
#: A password-reset token that no tenant issued, for ``<token>`` in URLs.
RESET_TOKEN = secrets.token_urlsafe(32)
#: Endpoints without a ``<tenant>`` argument, which the walks cannot scope.
#: The three asset endpoints serve the same public files to everyone,
#: ``healthz`` returns a fixed status document, ``metrics`` labels its counts
#: with route templates (never slugs or ids), and ``web.index`` lists no
#: tenant (tests/test_web.py checks that it names none). The operator
#: endpoints manage every tenant and return 404 to anyone but a signed-in
#: operator (tests/test_operator.py checks every one of them).
UNSCOPED_ENDPOINTS = frozenset({
    "static", "bootstrap.static", "renderers.static", "healthz", "metrics",
    "web.index", "operator.index", "operator.login", "operator.logout",
    "operator.create_tenant",
})
#: Methods the walks leave out: HEAD runs the GET view without a body, and
#: Flask replies to OPTIONS without running a view.
IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
#: Headers that may differ between two otherwise equal responses.
VOLATILE_HEADERS = frozenset({"x-request-id", "set-cookie"})
CSRF_VALUE = re.compile(r'(name="csrf_token"[^>]*value=")[^"]+(")')


# The two tenants


@dataclass
class Side:
    """One tenant of the walk: its runtime, admin, token and records."""

    runtime: TenantRuntime
    actor: Actor
    email: str
    token: str
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.runtime.slug

    def first_id(self, entity: str) -> str:
        return str(self.records[entity][0]["id"])


@dataclass
class World:
    app: Flask
    platform: Platform
    acme: Side
    globex: Side


def creation_order(entities: tuple[Entity, ...]) -> list[Entity]:
    """Order entities so that each comes after the targets of its lookups."""
    ordered: list[Entity] = []
    pending = list(entities)
    while pending:
        done = {entity.name for entity in ordered}
        ready = [entity for entity in pending
                 if all(target in done or target == entity.name
                        for target in lookup_targets(entity))]
        assert ready, f"lookup cycle among {[e.name for e in pending]!r}"
        ordered.extend(ready)
        pending = [entity for entity in pending if entity not in ready]
    return ordered


def lookup_targets(entity: Entity) -> list[str]:
    return [item.target or "" for item in entity.fields if item.type == "lookup"]


def sample_values(
    entity: Entity, number: int, mark: str, existing: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Return values for a new record: the title, required fields and every
    lookup that has a target record."""
    values: dict[str, Any] = {}
    for item in entity.fields:
        if not item.writable:
            continue
        if item.type == "lookup":
            targets = existing.get(item.target or "", [])
            if targets:
                values[item.name] = targets[0]["id"]
        elif item.name == entity.title_field or (item.required and item.type == "text"):
            values[item.name] = f"{mark} {entity.name} {number}"
        elif item.required and item.default is None and item.type == "integer":
            values[item.name] = max(number + 1, item.minimum or 0)
    return values


def build_side(platform: Platform, slug: str, email: str, mark: str) -> Side:
    runtime = platform.create_tenant(slug, STANDARD_CRM, name=slug.title())
    actor = make_member(platform, slug, email, "admin")
    token = platform.control.create_token(runtime.tenant, actor.user_id)
    side = Side(runtime=runtime, actor=actor, email=email, token=token)
    service = platform.records(runtime, actor)
    for entity in creation_order(runtime.definition.entities):
        side.records[entity.name] = [
            service.create(entity.name,
                           sample_values(entity, number, mark, side.records))
            for number in range(RECORDS_PER_ENTITY)
        ]
    return side


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("isolation") / "data"
    (data_dir / "tenants").mkdir(parents=True)
    settings = Settings(data_dir=data_dir, secret_key=secrets.token_urlsafe(32))
    platform = Platform(settings)
    acme = build_side(platform, "acme", ADMIN_EMAIL, "acmemark")
    globex = build_side(platform, "globex", GLOBEX_EMAIL, SECRET_MARK)
    app = create_app(settings, platform)
    app.config.update(TESTING=True)
    yield World(app=app, platform=platform, acme=acme, globex=globex)
    platform.dispose()


@pytest.fixture(scope="module")
def browser(world: World) -> FlaskClient:
    """A test client signed in to acme through the sign-in form."""
    client = world.app.test_client()
    response = sign_in(client, world.acme.slug)
    assert response.status_code == 302, response.text
    return client


@pytest.fixture(scope="module")
def acme_csrf(world: World, browser: FlaskClient) -> str:
    page = browser.get(f"/t/{world.acme.slug}/account/new")
    return csrf_token(page.text)


def snapshot(runtime: TenantRuntime) -> dict[str, list[dict[str, Any]]]:
    """Return every row of every table of a tenant, ordered by id."""
    rows: dict[str, list[dict[str, Any]]] = {}
    with runtime.engine.connect() as conn:
        for name, table in runtime.tables.items():
            result = conn.execute(sa.select(table).order_by(*table.primary_key))
            rows[name] = [dict(row) for row in result.mappings()]
    return rows


# Routes and requests


@dataclass
class Probe:
    """One request of a walk, and the id it carries in place of a record id."""

    rule: Rule
    method: str
    url: str
    entity: str
    record_id: str
    query: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None

    @property
    def name(self) -> str:
        query = "&".join(f"{key}=…" for key in self.query)
        return f"{self.method} {self.rule.endpoint} {self.url}?{query}"


def tenant_rules(app: Flask) -> list[Rule]:
    return [rule for rule in app.url_map.iter_rules() if "tenant" in rule.arguments]


def methods_of(rule: Rule) -> list[str]:
    return sorted((rule.methods or set()) - IGNORED_METHODS)


def build_url(rule: Rule, values: dict[str, str]) -> str:
    # Arguments with a default in the rule are not part of its URL.
    defaults = dict(rule.defaults or {})
    unknown = rule.arguments - values.keys() - defaults.keys()
    assert not unknown, (
        f"route {rule.rule!r} has arguments {sorted(unknown)!r} that the walk "
        "does not fill: add a value for them to url_values()"
    )
    given = {name: values[name] for name in rule.arguments if name not in defaults}
    built = rule.build({**given, **defaults}, append_unknown=False)
    assert built is not None, f"route {rule.rule!r} rejected values {values!r}"
    return built[1]


def url_values(slug: str, entity: str, record_id: str) -> dict[str, str]:
    return {"tenant": slug, "entity": entity, "record_id": record_id,
            "path": f"records/{entity}/{record_id}/unknown",
            "token": RESET_TOKEN, "user_id": record_id, "name": "sales",
            "share_id": record_id, "delivery_id": record_id,
            "request_id": record_id, "notification_id": record_id}


def entity_names(world: World, rule: Rule) -> list[str]:
    if "entity" not in rule.arguments:
        return [world.globex.runtime.definition.entities[0].name]
    return [entity.name for entity in world.globex.runtime.definition.entities]


def lookup_names(world: World, entity: str) -> list[str]:
    model = world.globex.runtime.entity(entity)
    return [item.name for item in model.fields if item.type == "lookup"]


def api_body(world: World, entity: str, record_id: str) -> dict[str, Any]:
    """Return a create or update body that points every lookup at
    ``record_id``."""
    body: dict[str, Any] = {name: record_id for name in lookup_names(world, entity)}
    title = world.globex.runtime.entity(entity).title_field
    body[title] = "acme probe"
    return body


def web_form(world: World, entity: str, record_id: str, csrf: str) -> dict[str, str]:
    form = {input_name(name): value
            for name, value in api_body(world, entity, record_id).items()}
    form["csrf_token"] = csrf
    form["record_version"] = "1"
    return form


def probes(
    world: World, slug: str, id_of: Callable[[str], str], csrf: str = ""
) -> list[Probe]:
    """Return a request for each tenant route, method and entity, with
    ``id_of(entity)`` in every place that takes a record id."""
    found: list[Probe] = []
    for rule in tenant_rules(world.app):
        for entity in entity_names(world, rule):
            record_id = id_of(entity)
            url = build_url(rule, url_values(slug, entity, record_id))
            for method in methods_of(rule):
                found.extend(probes_for(world, rule, method, url, entity,
                                        record_id, csrf))
    return found


def probes_for(
    world: World, rule: Rule, method: str, url: str, entity: str, record_id: str,
    csrf: str,
) -> list[Probe]:
    """Return the requests for one route and method: lookups in the body for
    writes, and one filter per lookup (and ``id``) for lists."""
    is_api = rule.endpoint.startswith("api.")
    if method != "GET":
        if is_api:
            body = api_body(world, entity, record_id)
            return [Probe(rule, method, url, entity, record_id, json=body)]
        form = web_form(world, entity, record_id, csrf)
        return [Probe(rule, method, url, entity, record_id, form=form)]
    filters = ["id", *lookup_names(world, entity)]
    found = [Probe(rule, method, url, entity, record_id)]
    if "entity" in rule.arguments and "record_id" not in rule.arguments:
        found.extend(
            Probe(rule, method, url, entity, record_id, query={name: record_id})
            for name in filters
        )
    return found


def constant(record_id: str) -> Callable[[str], str]:
    """Return an ``id_of`` for ``probes`` that gives every entity one id, so
    that each id is also tried on the routes of the other entities."""
    return lambda entity: record_id


def send(client: FlaskClient, probe: Probe, headers: dict[str, str] | None = None
         ) -> TestResponse:
    return client.open(probe.url, method=probe.method, query_string=probe.query,
                       json=probe.json, data=probe.form, headers=headers or {})


def carries_id(world: World, probe: Probe) -> bool:
    """Return whether the request puts its record id anywhere: in the URL,
    the query string or a lookup of the body."""
    arguments = probe.rule.arguments
    if probe.query or "record_id" in arguments or "path" in arguments:
        return True
    has_body = probe.json is not None or probe.form is not None
    if not has_body or "entity" not in arguments:
        return False
    if probe.form is not None:
        # An HTML form reads only the fields it shows, so a lookup shown on
        # the detail page alone (set by a workflow) carries nothing.
        form = world.globex.runtime.entity(probe.entity).form
        shown = set(form.fields_for("create")) | set(form.fields_for("edit"))
        return any(name in shown for name in lookup_names(world, probe.entity))
    return bool(lookup_names(world, probe.entity))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def invalid_token() -> str:
    return "mcrm_" + secrets.token_urlsafe(32)


def comparable(app: Flask, response: TestResponse, record_id: str
               ) -> tuple[int, dict[str, str], str]:
    """Return status, headers and body with the record id and per-request
    values (CSRF tokens, request ids, cookie signatures) replaced."""
    body = response.get_data(as_text=True).replace(record_id, "<id>")
    body = CSRF_VALUE.sub(r"\1<csrf>\2", body)
    headers = {name.lower(): value.replace(record_id, "<id>")
               for name, value in response.headers.items()
               if name.lower() not in VOLATILE_HEADERS}
    headers["set-cookie"] = repr(session_payloads(app, response))
    return response.status_code, headers, body


def session_payloads(app: Flask, response: TestResponse) -> list[Any]:
    """Return the decoded session of each ``Set-Cookie``, not its signature."""
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore
    name = app.config["SESSION_COOKIE_NAME"]
    payloads: list[Any] = []
    for header in response.headers.getlist("Set-Cookie"):
        cookie_name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0]
        if cookie_name == name and serializer is not None and value:
            payloads.append(serializer.loads(value))
        else:
            payloads.append(header)
    return payloads


@dataclass
class Findings:
    """What a walk found, one list per kind of failure, each naming probes."""

    walked: int = 0
    wrong_status: list[str] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)


def walk_foreign_ids(
    world: World, client: FlaskClient, api: bool,
    headers: dict[str, str] | None = None, csrf: str = "",
) -> Findings:
    """Send each acme request that carries an id twice, once with a globex
    record's id and once with a random id, on the API or on the web UI."""
    findings = Findings()
    for entity in world.globex.records:
        foreign_id = world.globex.first_id(entity)
        missing_id = str(uuid.uuid4())
        pairs = zip(probes(world, world.acme.slug, constant(foreign_id), csrf),
                    probes(world, world.acme.slug, constant(missing_id), csrf),
                    strict=True)
        for foreign_probe, missing_probe in pairs:
            if foreign_probe.rule.endpoint.startswith("api.") != api:
                continue
            if not carries_id(world, foreign_probe):
                continue
            findings.walked += 1
            foreign = send(client, foreign_probe, headers)
            missing = send(client, missing_probe, headers)
            compare_pair(world.app, findings, foreign_probe, foreign, missing,
                         missing_id)
    return findings


def compare_pair(
    app: Flask, findings: Findings, probe: Probe, foreign: TestResponse,
    missing: TestResponse, missing_id: str,
) -> None:
    if "record_id" in probe.rule.arguments and foreign.status_code != 404:
        findings.wrong_status.append(f"{probe.name} -> {foreign.status_code}")
    if SECRET_MARK in foreign.get_data(as_text=True):
        findings.exposed.append(probe.name)
    if (comparable(app, foreign, probe.record_id)
            != comparable(app, missing, missing_id)):
        findings.different.append(probe.name)


def assert_records_unchanged(
    world: World, before: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    acme_before, globex_before = before
    assert snapshot(world.globex.runtime) == globex_before
    assert snapshot(world.acme.runtime) == acme_before


def snapshots(world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    return snapshot(world.acme.runtime), snapshot(world.globex.runtime)


# Route coverage


def test_every_route_is_walked(world: World) -> None:
    unscoped = {rule.endpoint for rule in world.app.url_map.iter_rules()
                if "tenant" not in rule.arguments}
    assert unscoped <= UNSCOPED_ENDPOINTS, (
        f"routes {sorted(unscoped - UNSCOPED_ENDPOINTS)!r} have no <tenant> "
        "argument: scope them to a tenant or explain them in UNSCOPED_ENDPOINTS"
    )
    assert len(tenant_rules(world.app)) > 0


def test_walk_fills_every_argument(world: World) -> None:
    found = probes(world, world.globex.slug, world.globex.first_id)
    endpoints = {probe.rule.endpoint for probe in found}
    walked = {rule.endpoint for rule in tenant_rules(world.app)}
    assert endpoints == walked


# REST API


def test_api_other_tenant_token_is_401(world: World) -> None:
    """acme's token on globex's URLs gets the 401 of an invalid token."""
    client = world.app.test_client()
    globex = world.globex
    before = snapshots(world)
    wrong_status: list[str] = []
    different: list[str] = []
    for probe in probes(world, globex.slug, globex.first_id):
        if not probe.rule.endpoint.startswith("api."):
            continue
        foreign = send(client, probe, bearer(world.acme.token))
        invalid = send(client, probe, bearer(invalid_token()))
        if foreign.status_code != 401:
            wrong_status.append(f"{probe.name} -> {foreign.status_code}")
        if (comparable(world.app, foreign, probe.record_id)
                != comparable(world.app, invalid, probe.record_id)):
            different.append(probe.name)
    assert wrong_status == []
    assert different == []
    assert_records_unchanged(world, before)


def test_api_foreign_ids_look_missing(world: World) -> None:
    """acme's URLs with globex's ids respond as they do for random ids."""
    before = snapshots(world)
    client = world.app.test_client()

    findings = walk_foreign_ids(world, client, api=True,
                                headers=bearer(world.acme.token))

    assert findings.walked > 0
    assert findings.wrong_status == []
    assert findings.exposed == []
    assert findings.different == []
    assert_records_unchanged(world, before)


def test_api_ignores_params_naming_tenant(world: World) -> None:
    """globex's token on acme stays invalid whatever the query string contains."""
    client = world.app.test_client()
    url = f"/t/{world.acme.slug}/api/v1/records/account"
    params_list = [{"lang": "zh-CN"}, {"lang": "globex"}, {"tenant": "globex"},
                   {"tenant_slug": "globex"}, {"slug": "globex"}]
    for params in params_list:
        foreign = client.get(url, query_string=params,
                             headers=bearer(world.globex.token))
        invalid = client.get(url, query_string=params,
                             headers=bearer(invalid_token()))
        assert foreign.status_code == 401, params
        assert foreign.json == invalid.json, params


def test_api_ignores_query_string_tokens(world: World) -> None:
    client = world.app.test_client()
    url = f"/t/{world.acme.slug}/api/v1/records/account"
    without = client.get(url)
    token = world.acme.token
    for name in ("access_token", "token", "bearer", "api_key", "Authorization"):
        for value in (token, f"Bearer {token}"):
            response = client.get(url, query_string={name: value})
            assert response.status_code == 401, name
            assert response.json == without.json, name


def test_api_ignores_session_cookie(world: World, browser: FlaskClient) -> None:
    url = f"/t/{world.acme.slug}/api/v1/records/account"
    anonymous = world.app.test_client().get(url)
    with_cookie = browser.get(url)
    created = browser.post(url, json={"name": "through the cookie"})
    assert with_cookie.status_code == 401
    assert with_cookie.json == anonymous.json
    assert created.status_code == 401


# Web UI


def test_web_other_tenant_pages_hidden(
    world: World, browser: FlaskClient, acme_csrf: str
) -> None:
    """Signed in to acme, each globex page sends the browser to globex's
    sign-in page (or 404) and shows no globex data."""
    globex = world.globex
    login = f"/t/{globex.slug}/login"
    before = snapshots(world)
    exposed: list[str] = []
    wrong_target: list[str] = []
    for probe in probes(world, globex.slug, globex.first_id, acme_csrf):
        if probe.rule.endpoint.startswith("api."):
            continue
        response = send(browser, probe)
        if SECRET_MARK in response.get_data(as_text=True):
            exposed.append(probe.name)
        if probe.rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        location = response.headers.get("Location", "")
        redirected = response.status_code == 302 and location.startswith(login)
        if not redirected and response.status_code != 404:
            wrong_target.append(f"{probe.name} -> {response.status_code} {location}")
    assert exposed == []
    assert wrong_target == []
    assert_records_unchanged(world, before)
    with browser.session_transaction() as session:
        assert list(session.get("members", {})) == [world.acme.slug]


def test_web_foreign_ids_look_missing(
    world: World, browser: FlaskClient, acme_csrf: str
) -> None:
    """acme's pages with globex's ids respond as they do for random ids."""
    before = snapshots(world)

    findings = walk_foreign_ids(world, browser, api=False, csrf=acme_csrf)

    assert findings.walked > 0
    assert findings.wrong_status == []
    assert findings.exposed == []
    assert findings.different == []
    assert_records_unchanged(world, before)


def test_login_rejects_other_tenant_member(world: World) -> None:
    client = world.app.test_client()
    response = sign_in(client, world.globex.slug, ADMIN_EMAIL, ADMIN_PASSWORD)
    home = client.get(f"/t/{world.globex.slug}/")
    assert response.status_code == 401
    assert home.status_code == 302
    assert home.headers["Location"].startswith(f"/t/{world.globex.slug}/login")


def test_session_replay_after_logout(world: World) -> None:
    """A session cookie saved before signing out must not sign in again."""
    client = world.app.test_client()
    slug = world.acme.slug
    assert sign_in(client, slug).status_code == 302
    cookie = client.get_cookie(world.app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    saved = cookie.value
    page = client.get(f"/t/{slug}/")
    form = {"csrf_token": csrf_token(page.text)}
    logout = client.post(f"/t/{slug}/logout", data=form)
    assert logout.status_code == 302
    assert client.get(f"/t/{slug}/").status_code == 302
    client.set_cookie(world.app.config["SESSION_COOKIE_NAME"], saved)
    replayed = client.get(f"/t/{slug}/")
    assert replayed.status_code == 302
