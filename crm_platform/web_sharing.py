"""Teams, reporting lines, permission set assignments and manual shares in
the web UI and the REST API.

The HTML pages are ``/t/<tenant>/teams`` (admins only) and a record's
``/t/<tenant>/<entity>/<id>/sharing``. The API endpoints live under
``/t/<tenant>/api/v1``: ``/teams``, ``/members/<user_id>/manager``,
``/members/<user_id>/permission-sets/<name>`` and
``/records/<entity>/<id>/shares``. ``crm_platform.sharing`` checks rights
and input, and importing this module adds the routes to the blueprints of
``crm_platform.web`` and ``crm_platform.api``, which ``create_app`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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

from . import api, web
from .auth import record_service
from .context import get_platform
from .errors import Conflict, Forbidden, NotFound, PlatformError, RecordInvalid
from .members import list_members, role_labels
from .sharing import (
    MAX_LABEL_LENGTH,
    SHARE_ACCESS,
    TEAM_NAME,
    ReportingCycle,
    SharingService,
    TeamExists,
    user_ids,
)

log = logging.getLogger(__name__)


def sharing_service() -> SharingService:
    """Return the sharing service of the request's tenant and member."""
    return SharingService(get_platform(), g.runtime, g.actor)


# The teams page


def error_message(error: PlatformError) -> str:
    """Return a rejected change's message in the user's language, where the
    error is one the pages expect; else the service's own message."""
    if isinstance(error, TeamExists):
        return gettext("A team with this name already exists.")
    if isinstance(error, ReportingCycle):
        return gettext("This manager already reports to the member, directly or "
                       "through others, so the member cannot report to them.")
    if isinstance(error, RecordInvalid) and "name" in error.details:
        return gettext("Enter a team name of lower-case letters, digits and "
                       "underscores that starts with a letter.")
    if isinstance(error, RecordInvalid) and "label" in error.details:
        return gettext("Enter a label of at most %(num)d characters.",
                       num=MAX_LABEL_LENGTH)
    return error.message


def render_teams(error: str | None = None, status: int = 200) -> ResponseReturnValue:
    service = sharing_service()
    overview = service.overview()
    members = list_members(get_platform().control, g.runtime.tenant)
    names = {member.user_id: member.name for member in members}
    return render_template(
        "crm/teams.html",
        form=forms.ActionForm(),
        overview=overview,
        members=members,
        names=names,
        role_labels=role_labels(g.runtime.definition, g.locale,
                                [member.role for member in members]),
        permission_sets=g.runtime.definition.permission_sets,
        error=error,
        values=request.form if request.method == "POST" else {},
    ), status


def teams_url() -> str:
    return url_for("web.teams", tenant=g.runtime.slug)


def teams_change(action: Any, success: str) -> ResponseReturnValue:
    """Run one admin change from a teams page form and redirect back, or
    show the page again with the error."""
    sharing_service().require_admin("manage teams")
    if not forms.csrf_valid(forms.ActionForm()):
        return render_teams(web.expired_form_message(), 400)
    try:
        action()
    except (Conflict, RecordInvalid, NotFound) as err:
        log.info("rejected team change in tenant %s: %s", g.runtime.slug,
                 err.message)
        return render_teams(error_message(err), err.status)
    flash(success, "success")
    return redirect(teams_url())


@web.blueprint.route("/t/<tenant>/teams", methods=["GET", "POST"], endpoint="teams")
def teams_page(tenant: str) -> ResponseReturnValue:
    """List teams and members' managers and permission sets; POST creates a
    team (admins only)."""
    sharing_service().require_admin("manage teams")
    if request.method == "GET":
        return render_teams()
    name = request.form.get("name", "").strip()
    label = request.form.get("label", "").strip() or name
    return teams_change(
        lambda: sharing_service().create_team(name, label),
        gettext("Team %(name)s created.", name=name),
    )


@web.blueprint.route("/t/<tenant>/teams/<name>/delete", methods=["POST"],
                     endpoint="team_delete")
def team_delete(tenant: str, name: str) -> ResponseReturnValue:
    return teams_change(lambda: sharing_service().delete_team(name),
                        gettext("Team %(name)s deleted.", name=name))


@web.blueprint.route("/t/<tenant>/teams/<name>/members", methods=["POST"],
                     endpoint="team_add_member")
def team_add_member(tenant: str, name: str) -> ResponseReturnValue:
    user_id = request.form.get("user_id", "")
    return teams_change(lambda: sharing_service().add_team_member(name, user_id),
                        gettext("Member added to team %(name)s.", name=name))


@web.blueprint.route("/t/<tenant>/teams/<name>/members/<user_id>/remove",
                     methods=["POST"], endpoint="team_remove_member")
def team_remove_member(tenant: str, name: str, user_id: str) -> ResponseReturnValue:
    return teams_change(
        lambda: sharing_service().remove_team_member(name, user_id),
        gettext("Member removed from team %(name)s.", name=name),
    )


@web.blueprint.route("/t/<tenant>/members/<user_id>/manager", methods=["POST"],
                     endpoint="member_manager")
def member_manager(tenant: str, user_id: str) -> ResponseReturnValue:
    """Set a member's manager, or clear it when the form sends none."""
    manager_id = request.form.get("manager_id", "")
    service = sharing_service()

    def change() -> None:
        if manager_id:
            service.set_manager(user_id, manager_id)
        elif service.manager_of(user_id) is not None:
            service.clear_manager(user_id)

    return teams_change(change, gettext("Manager saved."))


@web.blueprint.route("/t/<tenant>/members/<user_id>/permission-sets",
                     methods=["POST"], endpoint="member_assign_set")
def member_assign_set(tenant: str, user_id: str) -> ResponseReturnValue:
    name = request.form.get("permission_set", "")
    return teams_change(
        lambda: sharing_service().assign_permission_set(user_id, name),
        gettext("Permission set assigned."),
    )


@web.blueprint.route("/t/<tenant>/members/<user_id>/permission-sets/<name>/remove",
                     methods=["POST"], endpoint="member_unassign_set")
def member_unassign_set(tenant: str, user_id: str, name: str) -> ResponseReturnValue:
    return teams_change(
        lambda: sharing_service().unassign_permission_set(user_id, name),
        gettext("Permission set removed."),
    )


# The sharing page of a record


def render_sharing(
    entity: str, record_id: str, error: str | None = None, status: int = 200
) -> ResponseReturnValue:
    metadata = g.runtime.entity(entity)
    service = sharing_service()
    shares = service.shares(metadata.name, record_id)
    record = record_service(g.locale).get(metadata.name, record_id)
    control = get_platform().control
    members = list_members(control, g.runtime.tenant)
    names = {member.user_id: member.name for member in members}
    names.update(control.user_names(user_ids(shares) - set(names)))
    teams = service.team_choices()
    return render_template(
        "crm/sharing.html",
        form=forms.ActionForm(),
        entity=metadata,
        record=record,
        shares=shares,
        members=members,
        names=names,
        teams=teams,
        access_levels=SHARE_ACCESS,
        error=error,
    ), status


def sharing_url(entity: str, record_id: str) -> str:
    return url_for("web.record_sharing", tenant=g.runtime.slug, entity=entity,
                   record_id=record_id)


def refusal_page(error: Forbidden) -> ResponseReturnValue:
    """Render the 403 page for a member who may read but not share the
    record. Other rejections (a read-only tenant) keep their own message."""
    if "record_id" not in error.details:
        raise error
    log.info("web request %s %s rejected: %s", request.method, request.path,
             error.message)
    message = gettext("You may share only records that you may edit.")
    return render_template("crm/error.html", status=403, message=message), 403


@web.blueprint.route("/t/<tenant>/<entity>/<record_id>/sharing",
                     methods=["GET", "POST"], endpoint="record_sharing")
def record_sharing(tenant: str, entity: str, record_id: str) -> ResponseReturnValue:
    """List a record's shares; POST shares it with a member or a team."""
    try:
        if request.method == "GET":
            return render_sharing(entity, record_id)
        return add_share(entity, record_id)
    except Forbidden as err:
        return refusal_page(err)


def add_share(entity: str, record_id: str) -> ResponseReturnValue:
    if not forms.csrf_valid(forms.ActionForm()):
        return render_sharing(entity, record_id, web.expired_form_message(), 400)
    target = request.form.get("target", "")
    kind, _, value = target.partition(":")
    user_id = value if kind == "user" and value else None
    team = value if kind == "team" and value else None
    if user_id is None and team is None:
        return render_sharing(entity, record_id,
                              gettext("Choose a member or a team."), 422)
    try:
        sharing_service().share(entity, record_id, request.form.get("access", ""),
                                user_id=user_id, team=team)
    except (RecordInvalid, Conflict) as err:
        log.info("rejected share in tenant %s: %s", g.runtime.slug, err.message)
        return render_sharing(entity, record_id, err.message, err.status)
    flash(gettext("Record shared."), "success")
    return redirect(sharing_url(entity, record_id))


@web.blueprint.route("/t/<tenant>/<entity>/<record_id>/sharing/<share_id>/remove",
                     methods=["POST"], endpoint="record_unshare")
def record_unshare(
    tenant: str, entity: str, record_id: str, share_id: str
) -> ResponseReturnValue:
    """Remove one share of the record."""
    try:
        if not forms.csrf_valid(forms.ActionForm()):
            return render_sharing(entity, record_id, web.expired_form_message(), 400)
        sharing_service().unshare(entity, record_id, share_id)
    except Forbidden as err:
        return refusal_page(err)
    flash(gettext("Share removed."), "success")
    return redirect(sharing_url(entity, record_id))


# The API


def json_body(allowed: frozenset[str]) -> dict[str, Any]:
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


def string_field(body: Mapping[str, Any], name: str, required: bool) -> str | None:
    """Return ``body[name]`` if it is a string; None if absent and optional."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise RecordInvalid(f"invalid {name} {value!r}: expected a string",
                            details={name: ["expected a string"]})
    return value


@api.blueprint.get("/teams")
def api_list_teams() -> Response:
    """List the teams with their members' user ids (admins only)."""
    teams = sharing_service().list_teams()
    return jsonify({"data": [team.as_json() for team in teams]})


@api.blueprint.post("/teams")
def api_create_team() -> tuple[Response, int]:
    """Create a team from {"name", "label"} (admins only)."""
    sharing_service().require_admin("create teams")
    body = json_body(frozenset({"name", "label"}))
    name = string_field(body, "name", required=True) or ""
    team = sharing_service().create_team(name, string_field(body, "label", False))
    response = jsonify({"data": team.as_json()})
    response.headers["Location"] = url_for(".api_get_team", name=team.name,
                                           _external=True)
    return response, 201


@api.blueprint.get("/teams/<name>")
def api_get_team(name: str) -> Response:
    return jsonify({"data": sharing_service().get_team(name).as_json()})


@api.blueprint.patch("/teams/<name>")
def api_relabel_team(name: str) -> Response:
    """Change a team's label from {"label"} (admins only)."""
    sharing_service().require_admin("rename teams")
    body = json_body(frozenset({"label"}))
    label = string_field(body, "label", required=True) or ""
    return jsonify({"data": sharing_service().relabel_team(name, label).as_json()})


@api.blueprint.delete("/teams/<name>")
def api_delete_team(name: str) -> tuple[str, int]:
    sharing_service().delete_team(name)
    return "", 204


@api.blueprint.put("/teams/<name>/members/<user_id>")
def api_add_team_member(name: str, user_id: str) -> Response:
    team = sharing_service().add_team_member(name, user_id)
    return jsonify({"data": team.as_json()})


@api.blueprint.delete("/teams/<name>/members/<user_id>")
def api_remove_team_member(name: str, user_id: str) -> tuple[str, int]:
    sharing_service().remove_team_member(name, user_id)
    return "", 204


@api.blueprint.put("/members/<user_id>/manager")
def api_set_manager(user_id: str) -> Response:
    """Make a member report to {"manager_id"} (admins only)."""
    sharing_service().require_admin("change reporting lines")
    body = json_body(frozenset({"manager_id"}))
    manager_id = string_field(body, "manager_id", required=True) or ""
    sharing_service().set_manager(user_id, manager_id)
    return jsonify({"data": {"user_id": user_id, "manager_id": manager_id}})


@api.blueprint.delete("/members/<user_id>/manager")
def api_clear_manager(user_id: str) -> tuple[str, int]:
    sharing_service().clear_manager(user_id)
    return "", 204


@api.blueprint.put("/members/<user_id>/permission-sets/<name>")
def api_assign_permission_set(user_id: str, name: str) -> Response:
    sets = sharing_service().assign_permission_set(user_id, name)
    return jsonify({"data": {"user_id": user_id, "permission_sets": sets}})


@api.blueprint.delete("/members/<user_id>/permission-sets/<name>")
def api_unassign_permission_set(user_id: str, name: str) -> tuple[str, int]:
    sharing_service().unassign_permission_set(user_id, name)
    return "", 204


@api.blueprint.get("/records/<entity>/<record_id>/shares")
def api_list_shares(entity: str, record_id: str) -> Response:
    """List a record's shares (admins and members who may edit it)."""
    shares = sharing_service().shares(entity, record_id)
    return jsonify({"data": [share.as_json() for share in shares]})


@api.blueprint.post("/records/<entity>/<record_id>/shares")
def api_share_record(entity: str, record_id: str) -> tuple[Response, int]:
    """Share a record from {"user_id" or "team", "access"}: 201 for a new
    share, 200 when it changes the level of an existing one."""
    service = sharing_service()
    # The record first: another tenant's id is not found whatever the body.
    service.check_can_share(entity, record_id)
    body = json_body(frozenset({"user_id", "team", "access"}))
    share, created = service.share(
        entity, record_id, body.get("access"),
        user_id=body.get("user_id"), team=body.get("team"),
    )
    return jsonify({"data": share.as_json()}), 201 if created else 200


@api.blueprint.delete("/records/<entity>/<record_id>/shares/<share_id>")
def api_unshare_record(entity: str, record_id: str, share_id: str) -> tuple[str, int]:
    sharing_service().unshare(entity, record_id, share_id)
    return "", 204


# The OpenAPI document


def openapi_components() -> dict[str, dict[str, Any]]:
    """Return the component schemas of the team and share endpoints."""
    name = {"type": "string", "pattern": TEAM_NAME.pattern}
    label = {"type": "string", "minLength": 1, "maxLength": MAX_LABEL_LENGTH}
    team = {
        "type": "object",
        "required": ["name", "label", "members"],
        "properties": {
            "name": name,
            "label": {"type": "string"},
            "members": {"type": "array", "items": {"type": "string"},
                        "description": "User ids of the team's members."},
        },
    }
    share = {
        "type": "object",
        "required": ["id", "entity", "record_id", "user_id", "team", "access",
                     "created_at", "created_by"],
        "properties": {
            "id": {"type": "string"},
            "entity": {"type": "string"},
            "record_id": {"type": "string"},
            "user_id": {"type": ["string", "null"]},
            "team": {"type": ["string", "null"], "description": "Team name."},
            "access": {"type": "string", "enum": list(SHARE_ACCESS)},
            "created_at": {"type": "string", "format": "date-time"},
            "created_by": {"type": ["string", "null"]},
        },
    }
    new_share = {
        "type": "object",
        "additionalProperties": False,
        "required": ["access"],
        "description": "Send exactly one of `user_id` and `team`.",
        "properties": {
            "user_id": {"type": "string"},
            "team": name,
            "access": {"type": "string", "enum": list(SHARE_ACCESS)},
        },
    }
    return {
        "Team": team,
        "NewTeam": _object({"name": name, "label": label}, ["name"]),
        "TeamLabel": _object({"label": label}, ["label"]),
        "Manager": _object({"manager_id": {"type": "string"}}, ["manager_id"]),
        "Share": share,
        "NewShare": new_share,
    }


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False,
            "required": required, "properties": properties}


def _path_parameter(name: str) -> dict[str, Any]:
    return {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}


def _data(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["data"], "properties": {"data": schema},
        }}},
    }


def _body(component: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{component}"}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _operation(
    operation_id: str, summary: str, tag: str, responses: dict[str, Any],
    body: str | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary,
                                 "tags": [tag], "responses": responses}
    if body is not None:
        operation["requestBody"] = _body(body)
    return operation


def openapi_paths(
    read_refs: Mapping[str, Any], write_refs: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Return the path items of the team, manager, permission set and share
    endpoints. ``read_refs`` and ``write_refs`` map statuses to the error
    responses of reads and writes."""
    team = _data("The team.", {"$ref": "#/components/schemas/Team"})
    teams = _data("The teams.", {"type": "array",
                                 "items": {"$ref": "#/components/schemas/Team"}})
    share = _data("The share.", {"$ref": "#/components/schemas/Share"})
    shares = _data("The record's shares.", {
        "type": "array", "items": {"$ref": "#/components/schemas/Share"}})
    removed = {"204": {"description": "Removed."}, **write_refs}
    sets = _data("The member's permission sets.", {
        "type": "object", "properties": {
            "user_id": {"type": "string"},
            "permission_sets": {"type": "array", "items": {"type": "string"}}}})
    manager = _data("The new reporting line.", {
        "$ref": "#/components/schemas/Manager"})
    record = [_path_parameter("entity"), _path_parameter("record_id")]

    return {
        "/teams": {
            "get": _operation("list_teams", "List teams (admins only)", "Teams",
                              {"200": teams, **read_refs}),
            "post": _operation("create_team", "Create a team (admins only)", "Teams",
                               {"201": team, **write_refs}, "NewTeam"),
        },
        "/teams/{name}": {
            "parameters": [_path_parameter("name")],
            "get": _operation("get_team", "Get one team (admins only)", "Teams",
                              {"200": team, **read_refs}),
            "patch": _operation("relabel_team", "Change a team's label", "Teams",
                                {"200": team, **write_refs}, "TeamLabel"),
            "delete": _operation("delete_team", "Delete a team and its shares",
                                 "Teams", removed),
        },
        "/teams/{name}/members/{user_id}": {
            "parameters": [_path_parameter("name"), _path_parameter("user_id")],
            "put": _operation("add_team_member", "Add a member to a team", "Teams",
                              {"200": team, **write_refs}),
            "delete": _operation("remove_team_member", "Remove a member from a team",
                                 "Teams", removed),
        },
        "/members/{user_id}/manager": {
            "parameters": [_path_parameter("user_id")],
            "put": _operation(
                "set_manager", "Set a member's manager; a loop is a 409 "
                "`reporting_cycle` (admins only)", "Teams",
                {"200": manager, **write_refs}, "Manager"),
            "delete": _operation("clear_manager", "Remove a member's manager",
                                 "Teams", removed),
        },
        "/members/{user_id}/permission-sets/{name}": {
            "parameters": [_path_parameter("user_id"), _path_parameter("name")],
            "put": _operation("assign_permission_set",
                              "Assign a declared permission set (admins only)",
                              "Teams", {"200": sets, **write_refs}),
            "delete": _operation("unassign_permission_set",
                                 "Take a permission set from a member", "Teams",
                                 removed),
        },
        "/records/{entity}/{record_id}/shares": {
            "parameters": record,
            "get": _operation("list_shares", "List a record's shares (admins and "
                              "members who may edit it)", "Sharing",
                              {"200": shares, **read_refs}),
            "post": _operation("share_record", "Share a record with a member or a "
                               "team: 201 when new, 200 when the level changed",
                               "Sharing", {"200": share, "201": share,
                                           **write_refs}, "NewShare"),
        },
        "/records/{entity}/{record_id}/shares/{share_id}": {
            "parameters": [*record, _path_parameter("share_id")],
            "delete": _operation("unshare_record", "Remove one share of a record",
                                 "Sharing", removed),
        },
    }
