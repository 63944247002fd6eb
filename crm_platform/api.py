"""The REST API, version 1: records, entity metadata and the OpenAPI document.

Every route lives under ``/t/<tenant>/api/v1``. Authentication is an
``Authorization: Bearer <token>`` header and nothing else: the API never
reads the browser session cookie, so it needs no CSRF protection and a page
on another site cannot act through a signed-in browser.

The API responds to unknown tenants and bad credentials as follows:

- an unknown tenant gives 404 ``not_found``, whatever the token;
- a known tenant with a missing, invalid, expired or revoked token gives 401;
- a token of tenant A sent to tenant B gives the same 401 as an invalid
  token, because tokens are looked up per tenant.

So a caller without a token can tell whether a tenant slug exists (401 or
404). Slugs appear in every URL and are not secrets. Records of a tenant are
only ever read with a token of that tenant, and a record id of another
tenant gives the same 404 as a missing id.

Errors are JSON ``{"error": {"code", "message", "details"}}`` with the status
of the ``PlatformError`` subclass. Validation details are in the request's
locale: ``?lang=``, else ``Accept-Language``, else the user's locale.
"""

from __future__ import annotations

import decimal
import json
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from metadata_engine.messages import normalize_locale

from . import audit, journal, personal_data
from .auth import authenticate_bearer, record_service
from .billing import require_feature
from .context import error_body, get_platform
from .control import Actor
from .errors import BadQuery, NotFound, PlatformError, RecordInvalid
from .openapi import build_openapi
from .querying import MAX_LIMIT, parse_list_query
from .serialize import entity_to_json, record_to_json

log = logging.getLogger(__name__)

blueprint = Blueprint("api", __name__, url_prefix="/t/<tenant>/api/v1")

#: Locales offered to ``Accept-Language`` negotiation, best first.
OFFERED_LOCALES = ["en", "zh-CN", "zh"]
#: Methods the catch-all route accepts, so that a wrong method on a known
#: path and an unknown path both reach the API's JSON error handlers.
CATCH_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
DEFAULT_RELATED_LIMIT = 10
_IF_MATCH = re.compile(r'(?:W/)?(?:"(\d{1,18})"|(\d{1,18}))')
_JSON_MIMETYPE = re.compile(r"application/(?:[\w.+-]+\+)?json")


class InvalidJSON(PlatformError):
    """Raised when a request body is not a well-formed JSON document."""

    code = "invalid_json"


class InvalidHeader(PlatformError):
    """Raised when a request header has a value the API cannot use."""

    code = "invalid_header"


# Tenant, user and locale of every request


@blueprint.url_value_preprocessor
def _take_tenant(endpoint: str | None, values: dict[str, Any] | None) -> None:
    if values is not None:
        g.tenant_slug = values.pop("tenant", None)


@blueprint.url_defaults
def _add_tenant(endpoint: str, values: dict[str, Any]) -> None:
    if "tenant" not in values and g.get("tenant_slug"):
        values["tenant"] = g.tenant_slug


@blueprint.before_request
def _authenticate() -> None:
    """Load the tenant and the bearer token's user, check that the tenant's
    plan includes the API, then pick the locale."""
    actor = authenticate_bearer(g.tenant_slug, request.headers.get("Authorization"))
    require_feature(g.runtime.tenant, "api")
    g.actor = actor
    g.locale = request_locale(actor)


def request_locale(actor: Actor) -> str:
    """Return ``?lang=``, else the best ``Accept-Language`` match, else the
    user's locale, normalized to a supported locale."""
    chosen = request.args.get("lang") or request.accept_languages.best_match(
        OFFERED_LOCALES
    )
    return normalize_locale(chosen or actor.locale)


# Records


@blueprint.get("/records/<entity>")
def list_records(entity: str) -> Response:
    """List records with filters, sorting, search and cursor pagination."""
    service = record_service()
    model = g.runtime.entity(entity)
    if request.args.get("view"):
        raise BadQuery(
            "the API does not apply saved list views: send the view's filters "
            "and sort as query parameters (GET entities lists them)",
            details={"parameter": "view"},
        )
    query = parse_list_query(model, request.args.to_dict(flat=False))
    page = service.list(entity, query)
    body: dict[str, Any] = {
        "data": [record_to_json(model, record, g.actor.role)
                 for record in page.records],
        "next_cursor": page.next_cursor,
    }
    if page.total is not None:
        body["total"] = page.total
    response = jsonify(body)
    if page.next_cursor:
        response.headers["Link"] = f'<{_next_page_url(page.next_cursor)}>; rel="next"'
    return response


@blueprint.post("/records/<entity>")
def create_record(entity: str) -> tuple[Response, int]:
    """Create a record and return it, with its URL in ``Location``."""
    service = record_service()
    model = g.runtime.entity(entity)
    record = service.create(entity, read_json_object())
    response = _record_response(model.name, record)
    response.headers["Location"] = url_for(
        ".get_record", entity=entity, record_id=record["id"], _external=True
    )
    return response, 201


@blueprint.get("/records/<entity>/<record_id>")
def get_record(entity: str, record_id: str) -> Response:
    record = record_service().get(entity, record_id)
    return _record_response(entity, record)


@blueprint.patch("/records/<entity>/<record_id>")
def update_record(entity: str, record_id: str) -> Response:
    """Change the fields in the body, only at the ``If-Match`` version if sent."""
    service = record_service()
    g.runtime.entity(entity)
    expected = expected_version()
    record = service.update(entity, record_id, read_json_object(), expected)
    return _record_response(entity, record)


@blueprint.delete("/records/<entity>/<record_id>")
def delete_record(entity: str, record_id: str) -> tuple[str, int]:
    record_service().delete(entity, record_id, expected_version())
    return "", 204


@blueprint.get("/records/<entity>/<record_id>/related")
def related_records(entity: str, record_id: str) -> Response:
    """List the first records of each lookup field that points at this record."""
    service = record_service()
    limit = _int_argument("limit", DEFAULT_RELATED_LIMIT, 1, MAX_LIMIT)
    lists = []
    for related in service.related(entity, record_id, limit):
        lists.append({
            "entity": related.entity.name,
            "field": related.field.name,
            "label": related.entity.plural_label.get(g.locale),
            "field_label": related.field.label.get(g.locale),
            "data": [record_to_json(related.entity, record, g.actor.role)
                     for record in related.page.records],
            "total": related.page.total,
            "list_url": url_for(".list_records", entity=related.entity.name,
                                **{related.field.name: record_id}, _external=True),
        })
    return jsonify({"data": lists})


@blueprint.get("/records/<entity>/<record_id>/history")
def record_history(entity: str, record_id: str) -> Response:
    """List the record's change journal entries, newest first."""
    service = record_service()
    service.get(entity, record_id)
    before = audit.parse_int(request.args, "before_seq")
    entries = audit.record_history(g.runtime, entity, record_id, before,
                                   service.access(entity).hidden)
    return jsonify(_journal_page(entries, audit.PAGE_SIZE))


@blueprint.get("/audit")
def audit_log() -> Response:
    """Search the tenant's change journal (tenant admins only)."""
    audit.require_audit_access(g.runtime, g.actor)
    query = audit.parse_query(
        request.args, g.runtime.definition, get_platform().control.find_user_id
    )
    entries = audit.search(g.runtime, query)
    return jsonify(_journal_page(entries, query.limit))


@blueprint.get("/personal-data")
def personal_data_export() -> Response:
    """Return everything stored about one person (tenant admins only)."""
    service = record_service()
    personal_data.require_admin(service)
    found = personal_data.find(
        service,
        request.args.get("email"),
        request.args.get("entity"),
        request.args.get("record_id"),
    )
    return jsonify(personal_data.export_document(service, found))


#: Keys of an erasure request; ``confirm`` must be ``"erase"``.
ERASE_KEYS = ("email", "entity", "record_id", "confirm")


@blueprint.post("/personal-data/erase")
def personal_data_erase() -> Response:
    """Blank the personal fields of one person's records (tenant admins)."""
    service = record_service()
    personal_data.require_admin(service)
    body = read_json_object()
    unknown = sorted(set(body) - set(ERASE_KEYS))
    if unknown:
        raise RecordInvalid(
            f"unknown keys {', '.join(map(repr, unknown))} in the erasure request: "
            f"use {', '.join(ERASE_KEYS)}",
            details={name: ["unknown key"] for name in unknown},
        )
    for name in ERASE_KEYS:
        if body.get(name) is not None and not isinstance(body[name], str):
            raise BadQuery(
                f"invalid {name} {body[name]!r}: use a string",
                details={name: ["use a string"]},
            )
    if body.get("confirm") != "erase":
        raise BadQuery(
            'erasure not confirmed: add "confirm": "erase" to the request, '
            "because an erasure cannot be undone",
            details={"confirm": ['set to "erase"']},
        )
    found = personal_data.find(
        service, body.get("email"), body.get("entity"), body.get("record_id")
    )
    if not found.people:
        raise NotFound("no record matches this person, so nothing was erased")
    return jsonify({"data": personal_data.erase(service, found).as_json()})


def _journal_page(entries: list[journal.Entry], limit: int) -> dict[str, Any]:
    before = audit.next_before_seq(entries, limit)
    next_url = None
    if before is not None:
        arguments = request.args.copy()
        arguments["before_seq"] = str(before)
        next_url = f"{request.base_url}?{urlencode(list(arguments.items(multi=True)))}"
    return {"data": [entry.as_json() for entry in entries], "next": next_url}


def _record_response(entity: str, record: Mapping[str, Any]) -> Response:
    model = g.runtime.entity(entity)
    response = jsonify({"data": record_to_json(model, record, g.actor.role)})
    response.headers["ETag"] = f'"{record["version"]}"'
    return response


def _next_page_url(cursor: str) -> str:
    arguments = request.args.copy()
    arguments["cursor"] = cursor
    return f"{request.base_url}?{urlencode(list(arguments.items(multi=True)))}"


def _int_argument(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, "")
    if raw == "":
        return default
    try:
        number = int(raw)
    except ValueError:
        raise BadQuery(f"invalid {name} {raw!r}: use a whole number") from None
    if not low <= number <= high:
        raise BadQuery(f"invalid {name} {number}: use a number from {low} to {high}")
    return number


# Metadata


@blueprint.get("/entities")
def list_entities() -> Response:
    """Describe the entities the caller may read, with labels in the request
    locale and the caller's rights."""
    service = record_service()
    data = [
        entity_to_json(entity, g.locale, service.access(entity.name))
        for entity in g.runtime.definition.entities
        if service.access(entity.name).allows("read")
    ]
    return jsonify({"data": data})


@blueprint.get("/entities/<entity>")
def get_entity(entity: str) -> Response:
    """Describe one entity; an entity the caller may not read is not found."""
    access = record_service().access(entity)
    if not access.allows("read"):
        # The same error as an unknown entity, so that it reveals nothing.
        raise NotFound(f"entity {entity!r} not found in tenant {g.runtime.slug!r}")
    return jsonify({"data": entity_to_json(access.entity, g.locale, access)})


@blueprint.get("/openapi.json")
def openapi_document() -> Response:
    """Return the tenant's OpenAPI 3.1 document in the request locale."""
    return jsonify(build_openapi(g.runtime, g.locale))


# Request bodies and headers


def read_json_object() -> dict[str, Any]:
    """Parse the request body as a JSON object.

    JSON numbers with a fraction become ``Decimal`` so that decimal fields
    keep every digit. A body that is not JSON raises ``InvalidJSON`` (400),
    and JSON that is not an object raises ``RecordInvalid`` (422).
    """
    if not _JSON_MIMETYPE.fullmatch(request.mimetype):
        raise InvalidJSON(
            f"unsupported Content-Type {request.mimetype or '(none)'!r}: send the "
            "body as JSON with 'Content-Type: application/json'",
            details={"content_type": request.mimetype},
        )
    value = parse_json(request.get_data(cache=False))
    if not isinstance(value, dict):
        raise RecordInvalid(
            f"the request body must be a JSON object of field values, not "
            f"{_json_type_name(value)}",
            details={"_schema": [f"expected an object, got {_json_type_name(value)}"]},
        )
    return value


def parse_json(body: bytes) -> Any:
    """Decode a UTF-8 JSON document, raising ``InvalidJSON`` with the place
    of the first error."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidJSON(
            f"request body is not UTF-8: invalid byte at position {err.start}",
            details={"position": err.start},
        ) from err
    if not text.strip():
        raise InvalidJSON("request body is empty: send a JSON object")
    try:
        return json.loads(
            text, parse_float=decimal.Decimal, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as err:
        raise InvalidJSON(
            f"invalid JSON: {err.msg} at line {err.lineno} column {err.colno}",
            details={"line": err.lineno, "column": err.colno, "position": err.pos},
        ) from err
    except RecursionError as err:
        raise InvalidJSON("invalid JSON: arrays or objects nested too deeply") from err
    except ValueError as err:
        # Raised for integers longer than Python's int conversion limit and
        # for NaN and Infinity, which JSON does not allow.
        raise InvalidJSON(f"invalid JSON: {err}") from err


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value: send a number or null")


def _json_type_name(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def expected_version() -> int | None:
    """Return the record version named by ``If-Match``, or None without one.

    Accepts the ETag as sent (``"3"``), its weak form (``W/"3"``) and a bare
    number (``3``). ``*`` matches any version.
    """
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    match = _IF_MATCH.fullmatch(header.strip())
    if match is None:
        raise InvalidHeader(
            f"invalid If-Match header {header!r}: send the record's ETag, such "
            'as "3", as returned by GET',
            details={"header": "If-Match"},
        )
    return int(match.group(1) or match.group(2))


# Unknown paths and methods


@blueprint.route("/", methods=CATCH_ALL_METHODS)
@blueprint.route("/<path:path>", methods=CATCH_ALL_METHODS)
def unmatched(path: str = "") -> NoReturn:
    """Raise 405 for a known path requested with a wrong method, else 404."""
    allowed = _allowed_methods()
    if allowed:
        raise MethodNotAllowed(valid_methods=allowed)
    raise NotFound(
        f"no API endpoint at {request.path!r}: openapi.json lists the endpoints"
    )


def _allowed_methods() -> list[str]:
    adapter = current_app.create_url_adapter(request)
    if adapter is None:
        return []
    allowed = []
    for method in CATCH_ALL_METHODS:
        try:
            rule, _ = adapter.match(request.path, method=method, return_rule=True)
        except HTTPException:
            continue
        if rule.endpoint != request.endpoint:
            allowed.append(method)
    return allowed


# Errors


@blueprint.errorhandler(PlatformError)
def _platform_error(error: PlatformError) -> tuple[Response, int]:
    log.info("request %s %s of tenant %s rejected with %d %s: %s", request.method,
             request.path, g.get("tenant_slug"), error.status, error.code,
             error.message)
    response = jsonify(error_body(error))
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="metacrm"'
    return response, error.status


@blueprint.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[Response, int]:
    status = error.code or 500
    details: dict[str, Any] = {}
    if status == 413:
        code = "payload_too_large"
        limit = request.max_content_length
        message = f"request body is larger than the limit of {limit} bytes"
        details["limit"] = limit
    else:
        code = (error.name or "error").lower().replace(" ", "_")
        message = error.description or error.name or "request failed"
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        details["allowed_methods"] = list(error.valid_methods)
    log.info("request %s %s of tenant %s rejected with %d %s", request.method,
             request.path, g.get("tenant_slug"), status, code)
    body = {"error": {"code": code, "message": message, "details": details}}
    response = jsonify(body)
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response, status


@blueprint.errorhandler(Exception)
def _unexpected_error(error: Exception) -> tuple[Response, int]:
    request_id = g.get("request_id") or uuid.uuid4().hex
    log.exception(
        "request %s %s failed with an unexpected error (request id %s)",
        request.method, request.path, request_id, exc_info=error,
    )
    body = {
        "error": {
            "code": "internal_error",
            "message": "internal server error: the server logged it with request "
            f"id {request_id}; quote that id when you report the problem",
            "details": {"request_id": request_id},
        }
    }
    response = jsonify(body)
    response.headers["X-Request-ID"] = request_id
    return response, 500
