"""Webhook endpoints and the delivery log in the web UI and the REST API,
for tenant admins only.

The page is ``/t/<tenant>/webhooks``: the endpoints with their status, the
failed deliveries with a retry button, and the newest rows of the delivery
log. The API endpoints live under ``/t/<tenant>/api/v1/webhooks``. Importing
this module adds the routes to the blueprints of ``crm_platform.web`` and
``crm_platform.api``, whose sign-in, tenant and locale handling apply;
``create_app`` imports it. A new or rotated secret appears in one response
only, since the database stores it encrypted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from flask import (
    Response,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext

from renderers import forms

from . import api, web, webhook_http, webhooks
from .context import get_platform
from .control import Actor
from .errors import Conflict, Forbidden, NotFound, RecordInvalid
from .tenancy import TenantRuntime

log = logging.getLogger(__name__)

#: Rows of the delivery log and of failed deliveries shown on the page.
PAGE_ROWS = 50
MAX_API_ROWS = 500


def require_admin(actor: Actor, action: str) -> None:
    """Raise ``Forbidden`` unless ``actor`` is an admin of the tenant."""
    if not actor.is_admin:
        raise Forbidden(
            f"only admins may {action}: user {actor.user_id!r} has the role "
            f"{actor.role!r}; ask an admin of the tenant",
            details={"role": actor.role},
        )


def require_writable(runtime: TenantRuntime) -> None:
    """Raise ``Forbidden`` unless the tenant is active: a read-only tenant's
    endpoints stay as they are."""
    status = runtime.tenant.status
    if status != "active":
        raise Forbidden(
            f"tenant {runtime.slug!r} is {status.replace('_', '-')}: webhook "
            "endpoints can be changed once an operator makes it active again",
            details={"tenant_status": status},
        )


def _allowed() -> tuple[webhook_http.Network, ...]:
    return webhook_http.parse_networks(get_platform().settings.webhook_allowed_networks)


# The page


def render_page(
    error: str | None = None, status: int = 200,
    secret: tuple[str, str] | None = None,
) -> ResponseReturnValue:
    engine = g.runtime.engine
    return render_template(
        "crm/webhooks.html",
        form=forms.ActionForm(),
        endpoints=webhooks.list_endpoints(engine),
        failed=webhooks.list_outbox(engine, webhooks.FAILED, PAGE_ROWS),
        attempts=webhooks.list_attempts(engine, limit=PAGE_ROWS),
        error=error,
        secret=secret,
        values=request.form if request.method == "POST" else {},
    ), status


def page_change(action: Callable[[], object], success: str) -> ResponseReturnValue:
    """Run one change from a form of the page and redirect back to it, or
    show the page again with the error."""
    require_admin(g.actor, "manage webhooks")
    if not forms.csrf_valid(forms.ActionForm()):
        return render_page(web.expired_form_message(), 400)
    require_writable(g.runtime)
    try:
        action()
    except (Conflict, RecordInvalid, NotFound) as err:
        log.info("rejected webhook change in tenant %s: %s", g.runtime.slug,
                 err.message)
        return render_page(err.message, err.status)
    flash(success, "success")
    return redirect(url_for("web.webhooks", tenant=g.runtime.slug))


def show_secret(name: str, produce: Callable[[], str]) -> ResponseReturnValue:
    """Run a change that yields a secret and show the page with it once."""
    require_admin(g.actor, "manage webhooks")
    if not forms.csrf_valid(forms.ActionForm()):
        return render_page(web.expired_form_message(), 400)
    require_writable(g.runtime)
    try:
        secret = produce()
    except (Conflict, RecordInvalid, NotFound) as err:
        log.info("rejected webhook change in tenant %s: %s", g.runtime.slug,
                 err.message)
        return render_page(err.message, err.status)
    return render_page(secret=(name, secret))


@web.blueprint.route("/t/<tenant>/webhooks", methods=["GET", "POST"],
                     endpoint="webhooks")
def webhooks_page(tenant: str) -> ResponseReturnValue:
    """List endpoints and the delivery log; POST adds an endpoint and shows
    its secret once (admins only)."""
    require_admin(g.actor, "manage webhooks")
    if request.method == "GET":
        return render_page()
    name = request.form.get("name", "").strip()
    url = request.form.get("url", "").strip()
    platform = get_platform()

    def add() -> str:
        _, secret = webhooks.add_endpoint(g.runtime.engine, platform.key_ring,
                                          name, url, _allowed())
        return secret

    return show_secret(name, add)


@web.blueprint.route("/t/<tenant>/webhooks/<name>/delete", methods=["POST"],
                     endpoint="webhook_delete")
def webhook_delete(tenant: str, name: str) -> ResponseReturnValue:
    return page_change(
        lambda: webhooks.remove_endpoint(g.runtime.engine, name),
        gettext("Webhook endpoint %(name)s removed.", name=name),
    )


@web.blueprint.route("/t/<tenant>/webhooks/<name>/rotate", methods=["POST"],
                     endpoint="webhook_rotate")
def webhook_rotate(tenant: str, name: str) -> ResponseReturnValue:
    platform = get_platform()
    return show_secret(name, lambda: webhooks.rotate_secret(
        g.runtime.engine, platform.key_ring, name))


@web.blueprint.route("/t/<tenant>/webhooks/<name>/active", methods=["POST"],
                     endpoint="webhook_active")
def webhook_active(tenant: str, name: str) -> ResponseReturnValue:
    """Activate the endpoint when the form sends ``active=1``, else
    deactivate it."""
    active = request.form.get("active") == "1"
    message = (gettext("Webhook endpoint %(name)s activated.", name=name) if active
               else gettext("Webhook endpoint %(name)s deactivated.", name=name))
    return page_change(
        lambda: webhooks.set_active(g.runtime.engine, name, active),
        message,
    )


@web.blueprint.route("/t/<tenant>/webhooks/outbox/<delivery_id>/retry",
                     methods=["POST"], endpoint="webhook_retry")
def webhook_retry(tenant: str, delivery_id: str) -> ResponseReturnValue:
    return page_change(
        lambda: webhooks.retry_delivery(g.runtime.engine, delivery_id),
        gettext("The delivery is queued again."),
    )


# The API


def _json_body(allowed: frozenset[str]) -> dict[str, Any]:
    body = api.read_json_object()
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RecordInvalid(
            f"unknown fields {', '.join(map(repr, unknown))}: send only "
            + ", ".join(sorted(allowed)),
            details={name: ["unknown field"] for name in unknown},
        )
    return body


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise RecordInvalid(f"invalid {name} {value!r}: expected a string",
                            details={name: ["expected a string"]})
    return value


def _limit() -> int:
    raw = request.args.get("limit", str(PAGE_ROWS))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_API_ROWS:
        raise RecordInvalid(
            f"invalid limit {raw!r}: use a whole number from 1 to {MAX_API_ROWS}",
            details={"limit": ["out of range"]},
        )
    return int(raw)


def _flag(name: str) -> bool:
    raw = request.args.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise RecordInvalid(f"invalid {name} {raw!r}: use true or false",
                            details={name: ["expected true or false"]})
    return raw in ("true", "1")


def _admin(action: str) -> TenantRuntime:
    require_admin(g.actor, action)
    runtime: TenantRuntime = g.runtime
    return runtime


def _admin_writer(action: str) -> TenantRuntime:
    runtime = _admin(action)
    require_writable(runtime)
    return runtime


@api.blueprint.get("/webhooks")
def api_list_webhooks() -> Response:
    """List the endpoints, without secrets (admins only)."""
    runtime = _admin("list webhook endpoints")
    endpoints = webhooks.list_endpoints(runtime.engine)
    return jsonify({"data": [endpoint.as_json() for endpoint in endpoints]})


@api.blueprint.post("/webhooks")
def api_add_webhook() -> tuple[Response, int]:
    """Add an endpoint from {"name", "url"}; the response carries its secret,
    which no later response shows (admins only)."""
    runtime = _admin_writer("add webhook endpoints")
    body = _json_body(frozenset({"name", "url"}))
    endpoint, secret = webhooks.add_endpoint(
        runtime.engine, get_platform().key_ring, _text(body, "name"),
        _text(body, "url"), _allowed())
    return jsonify({"data": {**endpoint.as_json(), "secret": secret}}), 201


@api.blueprint.get("/webhooks/deliveries")
def api_webhook_deliveries() -> Response:
    """Return the delivery log, newest first; ``?failed=true`` keeps the
    attempts that did not deliver (admins only)."""
    runtime = _admin("read the webhook delivery log")
    attempts = webhooks.list_attempts(runtime.engine, _flag("failed"), _limit())
    return jsonify({"data": [attempt.as_json() for attempt in attempts]})


@api.blueprint.get("/webhooks/outbox")
def api_webhook_outbox() -> Response:
    """Return queued deliveries, newest first; ``?status=`` keeps one status
    (admins only)."""
    runtime = _admin("read the webhook outbox")
    status = request.args.get("status")
    choices = (webhooks.PENDING, webhooks.DELIVERED, webhooks.FAILED)
    if status is not None and status not in choices:
        raise RecordInvalid(f"invalid status {status!r}: use one of "
                            + ", ".join(choices), details={"status": ["invalid"]})
    rows = webhooks.list_outbox(runtime.engine, status, _limit())
    return jsonify({"data": [row.as_json() for row in rows]})


@api.blueprint.post("/webhooks/outbox/<delivery_id>/retry")
def api_retry_webhook(delivery_id: str) -> tuple[str, int]:
    runtime = _admin_writer("retry webhook deliveries")
    webhooks.retry_delivery(runtime.engine, delivery_id)
    return "", 204


@api.blueprint.patch("/webhooks/<name>")
def api_update_webhook(name: str) -> Response:
    """Activate or deactivate an endpoint from {"active": true|false}."""
    runtime = _admin_writer("change webhook endpoints")
    body = _json_body(frozenset({"active"}))
    active = body.get("active")
    if not isinstance(active, bool):
        raise RecordInvalid(f"invalid active {active!r}: expected true or false",
                            details={"active": ["expected true or false"]})
    endpoint = webhooks.set_active(runtime.engine, name, active)
    return jsonify({"data": endpoint.as_json()})


@api.blueprint.post("/webhooks/<name>/rotate")
def api_rotate_webhook(name: str) -> Response:
    """Give an endpoint a new secret and return it this once."""
    runtime = _admin_writer("rotate webhook secrets")
    secret = webhooks.rotate_secret(runtime.engine, get_platform().key_ring, name)
    return jsonify({"data": {"name": name, "secret": secret}})


@api.blueprint.delete("/webhooks/<name>")
def api_remove_webhook(name: str) -> tuple[str, int]:
    runtime = _admin_writer("remove webhook endpoints")
    webhooks.remove_endpoint(runtime.engine, name)
    return "", 204


# The OpenAPI document


def openapi_components() -> dict[str, dict[str, Any]]:
    """Return the component schemas of the webhook endpoints."""
    text = {"type": "string"}
    nullable_text = {"type": ["string", "null"]}
    moment = {"type": "string", "format": "date-time"}
    endpoint = {
        "type": "object",
        "required": ["name", "url", "active", "created_at"],
        "properties": {"name": text, "url": text, "active": {"type": "boolean"},
                       "created_at": moment},
    }
    attempt = {
        "type": "object",
        "description": "One row of the delivery log: an attempt, or an event "
        "that was not queued (`skipped`).",
        "properties": {
            "id": text, "delivery_id": nullable_text, "endpoint": text,
            "event": text, "attempt": {"type": ["integer", "null"]},
            "status": {"type": "string",
                       "enum": ["delivered", "retry", "failed", "skipped"]},
            "status_code": {"type": ["integer", "null"]},
            "duration_ms": {"type": ["integer", "null"]},
            "error": nullable_text, "at": moment,
        },
    }
    delivery = {
        "type": "object",
        "description": "A queued event for one endpoint.",
        "properties": {
            "id": text, "endpoint": text, "event": text,
            "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer"}, "created_at": moment,
            "next_attempt_at": moment, "last_error": nullable_text,
            "delivered_at": {"type": ["string", "null"], "format": "date-time"},
        },
    }
    new_endpoint = {
        "type": "object", "additionalProperties": False, "required": ["name", "url"],
        "properties": {"name": {"type": "string",
                                "pattern": webhooks.ENDPOINT_NAME.pattern},
                       "url": {"type": "string", "format": "uri",
                               "maxLength": webhook_http.MAX_URL_LENGTH}},
    }
    secret = {"type": "object", "required": ["name", "secret"],
              "properties": {"name": text, "secret": text}}
    return {
        "WebhookEndpoint": endpoint,
        "NewWebhookEndpoint": new_endpoint,
        "WebhookEndpointChange": {
            "type": "object", "additionalProperties": False, "required": ["active"],
            "properties": {"active": {"type": "boolean"}},
        },
        "WebhookSecret": secret,
        "WebhookAttempt": attempt,
        "WebhookDelivery": delivery,
    }


def _data(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"type": "object", "required": ["data"],
                   "properties": {"data": schema}}}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(operation_id: str, summary: str, responses: dict[str, Any],
               body: str | None = None,
               parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary,
                                 "tags": ["Webhooks"], "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _ref(body)}}}
    if parameters:
        operation["parameters"] = parameters
    return operation


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"in": "query", "name": name, "required": False, "schema": schema,
            "description": description}


def _path(name: str) -> dict[str, Any]:
    return {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}


def openapi_paths(
    read_refs: Mapping[str, Any], write_refs: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Return the path items of the webhook endpoints (all admins only).
    ``read_refs`` and ``write_refs`` map statuses to error responses."""
    limit = _query("limit", {"type": "integer", "minimum": 1,
                             "maximum": MAX_API_ROWS, "default": PAGE_ROWS},
                   "Rows to return, newest first.")
    failed = _query("failed", {"type": "boolean", "default": False},
                    "Only attempts that did not deliver.")
    status = _query("status", {"type": "string",
                               "enum": ["pending", "delivered", "failed"]},
                    "Only deliveries with this status.")
    endpoint = _data("The endpoint.", _ref("WebhookEndpoint"))
    secret = _data("The secret, shown only in this response.", _ref("WebhookSecret"))
    done = {"204": {"description": "Done."}, **write_refs}
    return {
        "/webhooks": {
            "get": _operation("list_webhooks", "List the webhook endpoints",
                              {"200": _data("The endpoints.", {
                                  "type": "array",
                                  "items": _ref("WebhookEndpoint")}), **read_refs}),
            "post": _operation(
                "add_webhook", "Add an endpoint; the response carries its secret",
                {"201": _data("The endpoint and its secret.", {"allOf": [
                    _ref("WebhookEndpoint"), _ref("WebhookSecret")]}),
                 **write_refs}, "NewWebhookEndpoint"),
        },
        "/webhooks/deliveries": {
            "get": _operation("list_webhook_attempts", "Read the delivery log",
                              {"200": _data("The log rows.", {
                                  "type": "array",
                                  "items": _ref("WebhookAttempt")}), **read_refs},
                              parameters=[failed, limit]),
        },
        "/webhooks/outbox": {
            "get": _operation("list_webhook_deliveries", "List queued deliveries",
                              {"200": _data("The deliveries.", {
                                  "type": "array",
                                  "items": _ref("WebhookDelivery")}), **read_refs},
                              parameters=[status, limit]),
        },
        "/webhooks/outbox/{delivery_id}/retry": {
            "parameters": [_path("delivery_id")],
            "post": _operation("retry_webhook_delivery",
                               "Queue a failed delivery again", done),
        },
        "/webhooks/{name}": {
            "parameters": [_path("name")],
            "patch": _operation("change_webhook", "Activate or deactivate an "
                                "endpoint", {"200": endpoint, **write_refs},
                                "WebhookEndpointChange"),
            "delete": _operation("remove_webhook", "Remove an endpoint; its "
                                 "pending deliveries are marked failed", done),
        },
        "/webhooks/{name}/rotate": {
            "parameters": [_path("name")],
            "post": _operation("rotate_webhook_secret", "Give an endpoint a new "
                               "secret", {"200": secret, **write_refs}),
        },
    }
