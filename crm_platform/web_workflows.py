"""Workflow transitions, approval requests and notifications in the web UI
and the REST API.

The record detail page shows a workflow panel (``crm/workflow_panel.html``)
built by ``record_workflows``: the current state of each workflow, a form per
transition, pending approval requests and the transition history. The other
pages are ``/t/<tenant>/approvals`` and ``/t/<tenant>/notifications``. The
API endpoints live under ``/t/<tenant>/api/v1``: ``/records/<entity>/<id>/
transitions``, ``/approvals`` and ``/notifications``.
``crm_platform.workflows`` checks rights and input, and importing this module
adds the routes to the blueprints of ``crm_platform.web`` and
``crm_platform.api``, which ``create_app`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import (
    Response,
    flash,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext, lazy_gettext
from werkzeug.datastructures import MultiDict
from wtforms import TextAreaField

from metadata_engine.model import ADMIN_ROLE, Entity, Field, Transition, Workflow
from renderers import forms

from . import api, notifications, web
from .auth import record_service
from .context import get_platform
from .errors import (
    BadQuery,
    Conflict,
    Forbidden,
    NotFound,
    PlatformError,
    RecordInvalid,
    VersionConflict,
)
from .records import RecordService
from .serialize import record_to_json
from .workflows import (
    MAX_COMMENT_LENGTH,
    ApprovalRequest,
    Option,
    Step,
    WorkflowService,
)

log = logging.getLogger(__name__)

#: Form field that carries a transition's comment.
COMMENT_FIELD = "comment"


def workflow_service(locale: str | None = None) -> WorkflowService:
    """Return the workflow service of the request's tenant and member."""
    return WorkflowService(record_service(locale))


# Transition forms


class TransitionForm(forms.RecordForm):
    """Base of the generated form of one transition: its required fields
    and a comment. CSRF is checked with ``forms.ActionForm`` instead, so the
    page's ordinary ``csrf_token`` input serves every transition form."""

    comment = TextAreaField(
        lazy_gettext("Comment"),
        render_kw={"maxlength": MAX_COMMENT_LENGTH, "rows": 2},
    )


def find_transition(entity: Entity, name: str) -> tuple[Workflow, Transition]:
    """Return the workflow and transition called ``name`` of ``entity``."""
    for workflow in g.runtime.definition.workflows_for(entity.name):
        transition = workflow.transition(name)
        if transition is not None:
            return workflow, transition
    raise NotFound(f"entity {entity.name!r} has no transition {name!r}")


def transition_inputs(
    entity: Entity, workflow: Workflow, transition: Transition,
    locked: frozenset[str],
) -> tuple[Field, ...]:
    """Return the required fields of ``transition`` that the member may fill
    in: writable, not the state field and not hidden or read-only for them."""
    fields: list[Field] = []
    for name in transition.required_fields:
        if name == workflow.field or name in locked or not entity.has_field(name):
            continue
        if entity.field(name).writable:
            fields.append(entity.field(name))
    return tuple(fields)


def transition_form_class(
    entity: Entity, workflow: Workflow, transition: Transition, locale: str,
    locked: frozenset[str],
) -> type[TransitionForm]:
    fields = transition_inputs(entity, workflow, transition, locked)
    attributes: dict[str, Any] = {
        "entity": entity,
        "mode": "edit",
        "locale": locale,
        "input_fields": fields,
    }
    for item in fields:
        unbound = forms.converter_for(item.type).build(item, locale, "edit")
        if item.type != "boolean":
            render_kw = dict(unbound.kwargs.get("render_kw") or {})
            render_kw["required"] = True
            unbound.kwargs["render_kw"] = render_kw
        attributes[forms.input_name(item.name)] = unbound
    return type("TransitionFormOf" + transition.name.title().replace("_", ""),
                (TransitionForm,), attributes)


def transition_form(
    service: RecordService, entity: Entity, workflow: Workflow,
    transition: Transition, record: Mapping[str, Any],
    formdata: MultiDict[str, str] | None = None,
) -> TransitionForm:
    """Return the form of ``transition``, showing ``formdata`` (a submitted
    form) or else the record's current values."""
    access = service.access(entity.name)
    form_class = transition_form_class(entity, workflow, transition, g.locale,
                                       access.hidden | access.read_only)
    prefix = f"{transition.name}-"
    if formdata is None:
        formdata = MultiDict()
        role = forms.current_role()
        for item in form_class.input_fields:
            if item.masked_for(role):
                continue
            converter = forms.converter_for(item.type)
            for text in converter.initial(item, record.get(item.name)):
                formdata.add(prefix + forms.input_name(item.name), text)
    form = form_class(formdata=formdata, prefix=prefix, meta={"csrf": False})
    if any(item.type == "lookup" for item in form_class.input_fields):
        current = dict(record)
        forms.fill_lookup_choices(
            form,
            lambda target, limit: service.search_titles(target, "", limit),
            current,
            service.lookup_titles(entity.name, [current]),
        )
    return form


def submitted_transition(
    form: TransitionForm, formdata: MultiDict[str, str]
) -> tuple[dict[str, Any], str | None]:
    """Return the field values and the comment of a submitted form."""
    values: dict[str, Any] = {}
    for item in form.input_fields:
        bound = form.input_for(item.name)
        assert bound is not None
        converter = forms.converter_for(item.type)
        values[item.name] = converter.submitted(item, formdata.getlist(bound.name))
    comment = (form.comment.data or "").strip() or None
    return values, comment


# The workflow panel of the detail page


@dataclass
class Failure:
    """A rejected transition, shown again on the detail page."""

    transition: str
    message: str
    problems: list[str]
    form: TransitionForm


@dataclass
class Choice:
    """A transition button of the panel, with a ``form`` only when the
    member may take the transition."""

    transition: Transition
    allowed: bool
    reason: str | None
    form: TransitionForm | None


@dataclass
class PendingRequest:
    request: ApprovalRequest
    label: str
    can_decide: bool
    can_withdraw: bool


@dataclass
class Panel:
    """One workflow of the record: its state, transitions and requests."""

    workflow: Workflow
    state_field: Field
    state: str | None
    choices: list[Choice]
    pending: list[PendingRequest]
    failure: Failure | None = None


@dataclass
class HistoryEntry:
    step: Step
    workflow_label: str
    transition_label: str
    state_field: Field
    approver_names: list[str] = field(default_factory=list)


@dataclass
class RecordWorkflows:
    """The workflow panels and transition history of a record's detail page."""

    panels: list[Panel]
    history: list[HistoryEntry]
    names: dict[str, str] = field(default_factory=dict)


def refusal_text(option: Option) -> str | None:
    """Return why a transition is not allowed, in the member's language."""
    if option.code == "role":
        return gettext("Only these roles may do this: %(roles)s.",
                       roles=", ".join(option.transition.roles))
    if option.code == "edit":
        return gettext("Your role may not edit these records.")
    if option.code == "pending":
        return gettext("An approval request for this workflow is pending.")
    if option.code == "edit" and option.reason == "you may not edit this record":
        return gettext("You may not edit this record.")
    return option.reason


def transition_label(entity: Entity, workflow_name: str, name: str) -> str:
    for workflow in g.runtime.definition.workflows_for(entity.name):
        if workflow.name == workflow_name:
            transition = workflow.transition(name)
            if transition is not None:
                return transition.label.get(g.locale)
    return name


def record_workflows(entity: Entity, record: Mapping[str, Any]
                     ) -> RecordWorkflows | None:
    """Return the workflow panels and transition history of a record for its
    detail page, or None without running a query when the entity has no
    workflow."""
    workflows = g.runtime.definition.workflows_for(entity.name)
    if not workflows:
        return None
    service = record_service(g.locale)
    flows = WorkflowService(service)
    record_id = str(record["id"])
    options = flows.options(entity.name, record_id)
    requests = [r for r in flows.requests(entity.name, record_id)
                if r.status == "pending"]
    panels = [
        build_panel(service, entity, workflow, record, options, requests)
        for workflow in workflows
    ]
    history = build_history(entity, workflows, flows.history(entity.name, record_id))

    people: set[str] = set()
    for entry in history:
        people.update(entry.step.approvers)
        if entry.step.actor_id:
            people.add(entry.step.actor_id)
    for item in requests:
        people.add(item.requested_by)
        people.update(decision["user_id"] for decision in item.decisions)
    names = get_platform().control.user_names(people)
    for entry in history:
        entry.approver_names = [names.get(user_id, user_id)
                                for user_id in entry.step.approvers]
    return RecordWorkflows(panels, history, names)


def build_panel(
    service: RecordService, entity: Entity, workflow: Workflow,
    record: Mapping[str, Any], options: list[Option],
    requests: list[ApprovalRequest],
) -> Panel:
    """Build the panel of one workflow. A transition rejected in this
    request keeps its submitted form, and the panel shows its errors."""
    failure: Failure | None = g.get("workflow_failure")
    if failure is not None and workflow.transition(failure.transition) is None:
        failure = None
    choices = []
    for option in options:
        if option.workflow.name != workflow.name:
            continue
        transition = option.transition
        failed = None
        if failure is not None and failure.transition == transition.name:
            failed = failure
        form = None
        if option.allowed and failed is not None:
            form = failed.form
        elif option.allowed:
            form = transition_form(service, entity, workflow, transition, record)
        choices.append(Choice(transition, option.allowed, refusal_text(option),
                              form))
    me = g.actor.user_id
    pending = [
        PendingRequest(
            item,
            transition_label(entity, item.workflow, item.transition),
            can_decide=me in item.approvers
            and all(decision["user_id"] != me for decision in item.decisions),
            can_withdraw=me == item.requested_by or g.actor.role == ADMIN_ROLE,
        )
        for item in requests
        if item.workflow == workflow.name
    ]
    return Panel(workflow, entity.field(workflow.field), record.get(workflow.field),
                 choices, pending, failure)


def build_history(
    entity: Entity, workflows: tuple[Workflow, ...], steps: list[Step]
) -> list[HistoryEntry]:
    labels = {w.name: w.label.get(g.locale) for w in workflows}
    fields = {w.name: entity.field(w.field) for w in workflows}
    # A step of a workflow removed since keeps the first workflow's field,
    # which only decides how its state values are labelled.
    fallback = fields[workflows[0].name]
    return [
        HistoryEntry(step, labels.get(step.workflow, step.workflow),
                     transition_label(entity, step.workflow, step.transition),
                     fields.get(step.workflow, fallback))
        for step in steps
    ]


def unread_notifications() -> int:
    """Return the signed-in member's unread notification count, with one
    COUNT query per request. Without a signed-in member it is 0."""
    cached: int | None = g.get("unread_notifications")
    if cached is not None:
        return cached
    actor = g.get("actor")
    runtime = g.get("runtime")
    count = 0
    if actor is not None and runtime is not None:
        with runtime.engine.connect() as conn:
            count = notifications.unread_count(conn, actor.user_id)
    g.unread_notifications = count
    return count


@web.blueprint.app_context_processor
def inject_workflow_helpers() -> dict[str, Any]:
    return {"record_workflows": record_workflows,
            "unread_notifications": unread_notifications}


# Taking a transition from the detail page


def detail_url(entity: str, record_id: str) -> str:
    return url_for("web.record_detail", tenant=g.runtime.slug, entity=entity,
                   record_id=record_id)


def show_failure(
    entity: Entity, record_id: str, failure: Failure, status: int
) -> ResponseReturnValue:
    """Render the detail page again with the rejected transition's form and
    its errors."""
    g.workflow_failure = failure
    response = make_response(web.record_detail(g.runtime.slug, entity.name,
                                               record_id))
    response.status_code = status
    return response


def failure_of(
    error: PlatformError, transition: Transition, form: TransitionForm
) -> tuple[Failure, int]:
    """Turn a rejected transition into the message the page shows."""
    label = transition.label.get(g.locale)
    message = gettext("“%(transition)s” was not done.", transition=label)
    problems: list[str] = []
    if isinstance(error, RecordInvalid) and error.details:
        problems = forms.apply_errors(form, error.details)
    elif isinstance(error, VersionConflict):
        problems = [gettext("Someone else changed this record after you opened "
                            "this page. Check the record, then try again.")]
    else:
        problems = [error.message]
    return Failure(transition.name, message, problems, form), error.status


@web.blueprint.route("/t/<tenant>/<entity>/<record_id>/transitions/<name>",
                     methods=["POST"], endpoint="record_transition")
def record_transition(
    tenant: str, entity: str, record_id: str, name: str
) -> ResponseReturnValue:
    """Take a transition with the values and comment of its form."""
    metadata = g.runtime.entity(entity)
    service = record_service(g.locale)
    record = service.get(metadata.name, record_id)
    workflow, transition = find_transition(metadata, name)
    form = transition_form(service, metadata, workflow, transition, record,
                           request.form)
    if not forms.csrf_valid(forms.ActionForm()):
        failure = Failure(name, web.expired_form_message(), [], form)
        return show_failure(metadata, record_id, failure, 400)
    values, comment = submitted_transition(form, request.form)
    version = forms.submitted_version(request.form)
    try:
        outcome = WorkflowService(service).transition(
            metadata.name, record_id, name, values, comment, version)
    except (RecordInvalid, Conflict, Forbidden, VersionConflict) as err:
        log.info("rejected transition %s of %s %s in tenant %s: %s", name,
                 metadata.name, record_id, tenant, err.message)
        failure, status = failure_of(err, transition, form)
        return show_failure(metadata, record_id, failure, status)
    label = transition.label.get(g.locale)
    if outcome.status == "pending":
        flash(gettext("Approval requested for “%(transition)s”. The approvers "
                      "have been notified.", transition=label), "info")
    else:
        flash(gettext("“%(transition)s” done.", transition=label), "success")
    return redirect(detail_url(metadata.name, record_id))


# Approvals


def approvals_url() -> str:
    return url_for("web.approvals", tenant=g.runtime.slug)


@web.blueprint.route("/t/<tenant>/approvals", endpoint="approvals")
def approvals_page(tenant: str) -> ResponseReturnValue:
    """List the pending approval requests the member may still decide."""
    service = record_service(g.locale)
    requests = WorkflowService(service).awaiting_me()
    titles: dict[tuple[str, str], str] = {}
    for entity_name in {item.entity for item in requests}:
        ids = [item.record_id for item in requests if item.entity == entity_name]
        for record_id, title in service.titles(entity_name, ids).items():
            titles[(entity_name, record_id)] = title
    rows = []
    for item in requests:
        if not g.runtime.definition.has_entity(item.entity):
            continue
        entity = g.runtime.entity(item.entity)
        rows.append({
            "request": item,
            "entity": entity,
            "title": titles.get((item.entity, item.record_id), item.record_id),
            "label": transition_label(entity, item.workflow, item.transition),
        })
    names = get_platform().control.user_names({item.requested_by for item in requests})
    return render_template("crm/approvals.html", rows=rows, names=names,
                           form=forms.ActionForm())


def decide_from_page(request_id: str, decision: str) -> ResponseReturnValue:
    """Approve, reject or withdraw a request from a page form, then go back
    to the page named by ``next``, or else the approvals page."""
    target = web.safe_next(g.runtime.slug, request.form.get("next")) \
        if request.form.get("next") else approvals_url()
    if not forms.csrf_valid(forms.ActionForm()):
        flash(web.expired_form_message(), "danger")
        return redirect(target)
    comment = request.form.get(COMMENT_FIELD, "").strip() or None
    flows = workflow_service(g.locale)
    try:
        if decision == "withdraw":
            flows.cancel(request_id)
        else:
            flows.decide(request_id, approve=decision == "approve", comment=comment)
    except (Conflict, Forbidden, RecordInvalid) as err:
        log.info("rejected %s of approval request %s in tenant %s: %s", decision,
                 request_id, g.runtime.slug, err.message)
        flash(err.message, "danger")
        return redirect(target)
    messages = {
        "approve": gettext("You approved the request."),
        "reject": gettext("You rejected the request."),
        "withdraw": gettext("The request was withdrawn."),
    }
    flash(messages[decision], "success")
    return redirect(target)


@web.blueprint.route("/t/<tenant>/approvals/<request_id>/approve", methods=["POST"],
                     endpoint="approval_approve")
def approval_approve(tenant: str, request_id: str) -> ResponseReturnValue:
    return decide_from_page(request_id, "approve")


@web.blueprint.route("/t/<tenant>/approvals/<request_id>/reject", methods=["POST"],
                     endpoint="approval_reject")
def approval_reject(tenant: str, request_id: str) -> ResponseReturnValue:
    return decide_from_page(request_id, "reject")


@web.blueprint.route("/t/<tenant>/approvals/<request_id>/withdraw",
                     methods=["POST"], endpoint="approval_withdraw")
def approval_withdraw(tenant: str, request_id: str) -> ResponseReturnValue:
    return decide_from_page(request_id, "withdraw")


# Notifications


def notifications_url() -> str:
    return url_for("web.notifications", tenant=g.runtime.slug)


@web.blueprint.route("/t/<tenant>/notifications", endpoint="notifications")
def notifications_page(tenant: str) -> ResponseReturnValue:
    """List the member's newest notifications, unread ones marked."""
    with g.runtime.engine.connect() as conn:
        items = notifications.for_user(conn, g.actor.user_id)
    definition = g.runtime.definition
    rows = [
        {
            "notification": item,
            "text": item.message.get(g.locale),
            "url": detail_url(item.entity, item.record_id)
            if item.entity and item.record_id and definition.has_entity(item.entity)
            else None,
        }
        for item in items
    ]
    return render_template("crm/notifications.html", rows=rows,
                           form=forms.ActionForm())


@web.blueprint.route("/t/<tenant>/notifications/<notification_id>/read",
                     methods=["POST"], endpoint="notification_read")
def notification_read(tenant: str, notification_id: str) -> ResponseReturnValue:
    if not forms.csrf_valid(forms.ActionForm()):
        flash(web.expired_form_message(), "danger")
        return redirect(notifications_url())
    record_service().check_writable()
    with g.runtime.engine.begin() as conn:
        notifications.mark_read(conn, g.actor.user_id, notification_id)
    return redirect(notifications_url())


@web.blueprint.route("/t/<tenant>/notifications/read-all", methods=["POST"],
                     endpoint="notifications_read_all")
def notifications_read_all(tenant: str) -> ResponseReturnValue:
    if not forms.csrf_valid(forms.ActionForm()):
        flash(web.expired_form_message(), "danger")
        return redirect(notifications_url())
    record_service().check_writable()
    with g.runtime.engine.begin() as conn:
        count = notifications.mark_read(conn, g.actor.user_id)
    flash(gettext("%(num)d notifications marked as read.", num=count), "success")
    return redirect(notifications_url())


# The API


def option_json(option: Option) -> dict[str, Any]:
    transition = option.transition
    return {
        "workflow": option.workflow.name,
        "name": transition.name,
        "label": transition.label.get(g.locale),
        "from": list(transition.sources),
        "to": transition.target,
        "allowed": option.allowed,
        "reason": option.reason,
        "reason_code": option.code,
        "required_fields": list(transition.required_fields),
        "approval": transition.approval is not None,
    }


def comment_body() -> str | None:
    """Return the optional ``comment`` of a decision's JSON body, which may
    also be empty."""
    if not request.get_data(cache=True):
        return None
    body = api_object(frozenset({"comment"}))
    comment = body.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise RecordInvalid(f"invalid comment {comment!r}: expected a string",
                            details={"comment": ["expected a string"]})
    return comment


def api_object(allowed: frozenset[str]) -> dict[str, Any]:
    """Read the request's JSON object, rejecting fields not in ``allowed``."""
    body = api.read_json_object()
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RecordInvalid(
            f"unknown fields {', '.join(map(repr, unknown))}: send only "
            + ", ".join(sorted(allowed)),
            details={name: ["unknown field"] for name in unknown},
        )
    return body


def transition_input() -> tuple[dict[str, Any], str | None, int | None]:
    """Return the values, comment and version of a transition request. The
    version comes from the body, else from ``If-Match``."""
    body = api_object(frozenset({"values", "comment", "version"}))
    values = body.get("values") or {}
    if not isinstance(values, dict):
        raise RecordInvalid(
            f"invalid values {values!r}: expected an object of field values",
            details={"values": ["expected an object"]})
    comment = body.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise RecordInvalid(f"invalid comment {comment!r}: expected a string",
                            details={"comment": ["expected a string"]})
    version = body.get("version")
    if version is None:
        return values, comment, api.expected_version()
    if isinstance(version, bool) or not isinstance(version, int):
        raise RecordInvalid(
            f"invalid version {version!r}: send the record's version number",
            details={"version": ["expected an integer"]})
    return values, comment, version


@api.blueprint.get("/records/<entity>/<record_id>/transitions")
def api_list_transitions(entity: str, record_id: str) -> Response:
    """List the transitions from the record's states, its history and its
    approval requests."""
    flows = workflow_service()
    data = {
        "available": [option_json(o) for o in flows.options(entity, record_id)],
        "history": [step.as_json() for step in flows.history(entity, record_id)],
        "requests": [r.as_json() for r in flows.requests(entity, record_id)],
    }
    return jsonify({"data": data})


@api.blueprint.post("/records/<entity>/<record_id>/transitions/<name>")
def api_take_transition(
    entity: str, record_id: str, name: str
) -> tuple[Response, int]:
    """Take a transition: 200 with the record, or 202 with the approval
    request when the transition needs approval."""
    service = record_service()
    model = g.runtime.entity(entity)
    # The record first: another tenant's id is not found whatever the body.
    service.get(model.name, record_id)
    values, comment, version = transition_input()
    outcome = WorkflowService(service).transition(
        model.name, record_id, name, values, comment, version)
    if outcome.request is not None:
        response = jsonify({"data": outcome.request.as_json()})
        response.headers["Location"] = url_for(
            ".api_get_approval", request_id=outcome.request.id, _external=True)
        return response, 202
    record = outcome.record
    response = jsonify({"data": record_to_json(model, record, g.actor.role)})
    response.headers["ETag"] = f'"{record["version"]}"'
    return response, 200


@api.blueprint.get("/approvals")
def api_list_approvals() -> Response:
    """List the pending approval requests the caller may still decide."""
    requests = workflow_service().awaiting_me()
    return jsonify({"data": [item.as_json() for item in requests]})


@api.blueprint.get("/approvals/<request_id>")
def api_get_approval(request_id: str) -> Response:
    return jsonify({"data": workflow_service().get_request(request_id).as_json()})


@api.blueprint.post("/approvals/<request_id>/approve")
def api_approve(request_id: str) -> Response:
    flows = workflow_service()
    # The request first, so an unknown id is not found whatever the body.
    flows.get_request(request_id)
    decided = flows.decide(request_id, approve=True, comment=comment_body())
    return jsonify({"data": decided.as_json()})


@api.blueprint.post("/approvals/<request_id>/reject")
def api_reject(request_id: str) -> Response:
    flows = workflow_service()
    flows.get_request(request_id)
    decided = flows.decide(request_id, approve=False, comment=comment_body())
    return jsonify({"data": decided.as_json()})


@api.blueprint.post("/approvals/<request_id>/withdraw")
def api_withdraw(request_id: str) -> Response:
    flows = workflow_service()
    flows.get_request(request_id)
    # NOTE: the body's comment is validated but not stored, because
    # WorkflowService.cancel keeps no comment.
    comment_body()
    return jsonify({"data": flows.cancel(request_id).as_json()})


@api.blueprint.get("/notifications")
def api_list_notifications() -> Response:
    """List the caller's newest notifications, or with ``?unread=true``
    only the unread ones."""
    raw = request.args.get("unread", "false").strip().lower()
    if raw not in ("true", "false"):
        raise BadQuery(f"invalid unread {raw!r}: use true or false",
                       details={"unread": raw})
    with g.runtime.engine.connect() as conn:
        items = notifications.for_user(conn, g.actor.user_id,
                                       unread_only=raw == "true")
    return jsonify({"data": [item.as_json(g.locale) for item in items]})


@api.blueprint.post("/notifications/<notification_id>/read")
def api_read_notification(notification_id: str) -> Response:
    record_service().check_writable()
    with g.runtime.engine.begin() as conn:
        count = notifications.mark_read(conn, g.actor.user_id, notification_id)
    return jsonify({"data": {"id": notification_id, "marked": count}})


@api.blueprint.post("/notifications/read-all")
def api_read_all_notifications() -> Response:
    record_service().check_writable()
    with g.runtime.engine.begin() as conn:
        count = notifications.mark_read(conn, g.actor.user_id)
    return jsonify({"data": {"marked": count}})


# The OpenAPI document


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False,
            "required": required, "properties": properties}


def _ref(component: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{component}"}


def _array_of(component: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(component)}


def openapi_components() -> dict[str, dict[str, Any]]:
    """Return the component schemas of the transition, approval and
    notification endpoints."""
    text = {"type": "string"}
    nullable_text = {"type": ["string", "null"]}
    moment = {"type": "string", "format": "date-time"}
    names = {"type": "array", "items": text}
    comment = {"type": ["string", "null"], "maxLength": MAX_COMMENT_LENGTH}
    option = {
        "type": "object",
        "required": ["workflow", "name", "label", "from", "to", "allowed"],
        "properties": {
            "workflow": text, "name": text, "label": text, "from": names,
            "to": text, "allowed": {"type": "boolean"},
            "reason": {**nullable_text,
                       "description": "Why the caller may not take it now."},
            "reason_code": {
                "type": ["string", "null"],
                "enum": ["state", "edit", "role", "pending", "guard", None],
                "description": "The reason as a code: the record's state, no "
                "edit right, a role the transition does not list, a pending "
                "approval request, or a guard that the record fails.",
            },
            "required_fields": names,
            "approval": {"type": "boolean",
                         "description": "Taking it asks for approval first."},
        },
    }

    step = {
        "type": "object",
        "required": ["id", "workflow", "transition", "from", "to", "at"],
        "properties": {
            "id": text, "workflow": text, "transition": text,
            "from": nullable_text, "to": text, "actor_id": nullable_text,
            "at": moment, "comment": nullable_text,
            "approvers": {**names, "description": "User ids who approved it."},
        },
    }

    decision = {
        "type": "object",
        "properties": {"user_id": text,
                       "decision": {"type": "string", "enum": ["approve", "reject"]},
                       "at": moment, "comment": nullable_text},
    }

    approval = {
        "type": "object",
        "required": ["id", "entity", "record_id", "workflow", "transition",
                     "requested_by", "requested_at", "required", "approvers",
                     "decisions", "status"],
        "properties": {
            "id": text, "entity": text, "record_id": text, "workflow": text,
            "transition": text, "requested_by": text, "requested_at": moment,
            "comment": nullable_text,
            "required": {"type": "integer", "minimum": 1},
            "approvers": {**names, "description": "User ids who may decide."},
            "decisions": {"type": "array", "items": decision},
            "status": {"type": "string", "enum": ["pending", "approved",
                                                  "rejected", "cancelled"]},
        },
    }

    notification = {
        "type": "object",
        "required": ["id", "created_at", "message", "read"],
        "properties": {
            "id": text, "created_at": moment, "entity": nullable_text,
            "record_id": nullable_text, "source": nullable_text,
            "message": {**text, "description": "In the request's locale."},
            "read": {"type": "boolean"},
        },
    }

    return {
        "TransitionOption": option,
        "TransitionStep": step,
        "ApprovalRequest": approval,
        "Notification": notification,
        "RecordTransitions": _object({
            "available": _array_of("TransitionOption"),
            "history": _array_of("TransitionStep"),
            "requests": _array_of("ApprovalRequest"),
        }, ["available", "history", "requests"]),
        "TransitionInput": _object({
            "values": {"type": "object",
                       "description": "Field values written with the transition."},
            "comment": comment,
            "version": {"type": "integer", "description": "The record version "
                        "the caller saw; a newer one gives 412."},
        }, []),
        "DecisionInput": _object({"comment": comment}, []),
    }


def _parameter(name: str) -> dict[str, Any]:
    return {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}


def _data(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["data"], "properties": {"data": schema},
        }}},
    }


def _operation(
    operation_id: str, summary: str, tag: str, responses: dict[str, Any],
    body: str | None = None, parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary,
                                 "tags": [tag], "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": False, "content": {
            "application/json": {"schema": _ref(body)}}}
    if parameters:
        operation["parameters"] = parameters
    return operation


def openapi_paths(
    read_refs: Mapping[str, Any], write_refs: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Return the path items of the transition, approval and notification
    endpoints. ``read_refs`` and ``write_refs`` map statuses to the error
    responses of reads and writes."""
    request_data = _data("The approval request.", _ref("ApprovalRequest"))
    record = {"type": "object", "description": "The record after the transition, "
              "as GET /records/{entity}/{record_id} returns it."}
    marked = _data("How many notifications were marked read.", {
        "type": "object", "properties": {"marked": {"type": "integer"}}})
    unread = {"in": "query", "name": "unread", "required": False,
              "description": "true lists only unread notifications.",
              "schema": {"type": "string", "enum": ["true", "false"]}}
    decision_paths = {
        f"/approvals/{{request_id}}/{verb}": {
            "parameters": [_parameter("request_id")],
            "post": _operation(f"{verb}_approval", summary, "Workflows",
                               {"200": request_data, **write_refs},
                               "DecisionInput"),
        }
        for verb, summary in (
            ("approve", "Approve a request as one of its approvers; the "
             "approval that reaches the required count takes the transition"),
            ("reject", "Reject a request as one of its approvers; it closes"),
            ("withdraw", "Withdraw a pending request (its requester or an admin)"),
        )
    }
    return {
        "/records/{entity}/{record_id}/transitions": {
            "parameters": [_parameter("entity"), _parameter("record_id")],
            "get": _operation(
                "list_transitions", "List the transitions from the record's "
                "states, its transition history and its approval requests",
                "Workflows", {"200": _data("The record's workflow state.",
                                           _ref("RecordTransitions")), **read_refs}),
        },
        "/records/{entity}/{record_id}/transitions/{name}": {
            "parameters": [_parameter("entity"), _parameter("record_id"),
                           _parameter("name")],
            "post": _operation(
                "take_transition", "Take a transition: 200 with the record, or "
                "202 with an approval request when it needs approval",
                "Workflows", {"200": _data("The record.", record),
                              "202": request_data, **write_refs},
                "TransitionInput"),
        },
        "/approvals": {
            "get": _operation("list_approvals", "List the pending approval "
                              "requests the caller may still decide", "Workflows",
                              {"200": _data("The requests.",
                                            _array_of("ApprovalRequest")),
                               **read_refs}),
        },
        "/approvals/{request_id}": {
            "parameters": [_parameter("request_id")],
            "get": _operation("get_approval", "Get one approval request",
                              "Workflows", {"200": request_data, **read_refs}),
        },
        **decision_paths,
        "/notifications": {
            "get": _operation("list_notifications", "List the caller's newest "
                              "notifications", "Notifications",
                              {"200": _data("The notifications, newest first.",
                                            _array_of("Notification")),
                               **read_refs}, parameters=[unread]),
        },
        "/notifications/{notification_id}/read": {
            "parameters": [_parameter("notification_id")],
            "post": _operation("read_notification", "Mark one notification read",
                               "Notifications", {"200": marked, **write_refs}),
        },
        "/notifications/read-all": {
            "post": _operation("read_all_notifications", "Mark every notification "
                               "of the caller read", "Notifications",
                               {"200": marked, **write_refs}),
        },
    }
