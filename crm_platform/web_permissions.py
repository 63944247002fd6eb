"""Access explanations for one member and one record, and the pages and
endpoints where tenant admins edit roles, permission sets and sharing rules.

``GET /t/<tenant>/access`` (page) and ``GET /t/<tenant>/api/v1/access``
explain each right of one member on one record with ``Access.explain``.
Admins may ask about any member, other members only about themselves. A
record that the asking member may not read is not found, so that the response
never reveals that it exists.

The routes belong to the ``web`` and ``api`` blueprints, so their sign-in,
tenant and locale handling apply; ``create_app`` imports this module.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
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
from flask_babel import gettext, lazy_gettext
from flask_wtf import FlaskForm

from metadata_engine.errors import DefinitionError
from metadata_engine.model import (
    ADMIN_ROLE,
    FIELD_ACCESS,
    RIGHTS,
    SCOPED_RIGHTS,
    SCOPES,
    SYSTEM_COLUMNS,
    Definition,
    Entity,
)
from renderers import forms

from . import api, web
from . import permission_admin as admin_docs
from .access import Access, Decision, Principal, load_principal
from .auth import record_service
from .context import get_platform
from .control import Actor
from .errors import BadQuery, Forbidden, NotFound, PlatformError, RecordInvalid
from .members import list_members
from .records import RecordService
from .tenancy import TenantRuntime

log = logging.getLogger(__name__)

RIGHT_LABELS = {
    "read": lazy_gettext("Read"),
    "create": lazy_gettext("Create"),
    "edit": lazy_gettext("Edit"),
    "delete": lazy_gettext("Delete"),
    "export": lazy_gettext("Export"),
    "import": lazy_gettext("Import"),
    "change_owner": lazy_gettext("Change owner"),
}
SCOPE_LABELS = {
    "": lazy_gettext("None"),
    "own": lazy_gettext("Own records"),
    "team": lazy_gettext("Team's records"),
    "subordinates": lazy_gettext("Subordinates' records"),
    "all": lazy_gettext("All records"),
}
LEVEL_LABELS = {
    "": lazy_gettext("Not set (editable)"),
    "hidden": lazy_gettext("Hidden"),
    "read_only": lazy_gettext("Read-only"),
    "editable": lazy_gettext("Editable"),
}
KIND_LABELS = {
    "role": lazy_gettext("Role"),
    "permission_set": lazy_gettext("Permission set"),
}


class PermissionsForm(FlaskForm):
    """The CSRF token of the permission pages' forms. The templates write
    the inputs and the views read ``request.form``."""


# Why: the question and its answer


@dataclass(frozen=True)
class Question:
    """A request to explain rights: an entity, and optionally a record and
    one of its fields."""

    entity: str
    record_id: str | None = None
    field: str | None = None


def requested_member(runtime: TenantRuntime, asker: Actor, user: str | None) -> Actor:
    """Return the member that ``user`` (an id or e-mail address, None for the
    asker) names. Only admins may ask about another member."""
    if not user or user == asker.user_id or user.strip().lower() == asker.email:
        return asker
    if not asker.is_admin:
        raise Forbidden(
            f"only admins may ask about another member: user {asker.user_id!r} "
            f"has the role {asker.role!r}; leave out 'user' to ask about yourself",
            details={"role": asker.role},
        )
    control = get_platform().control
    user_id = control.find_user_id(user) if "@" in user else user
    member = None if user_id is None else control.actor(runtime.tenant, user_id)
    if member is None:
        raise NotFound(f"user {user!r} is not a member of tenant {runtime.slug!r}")
    return member


def question_from(args: Mapping[str, str]) -> Question:
    entity = (args.get("entity") or "").strip()
    if not entity:
        raise BadQuery("missing parameter 'entity': name the entity to explain",
                       details={"parameter": "entity"})
    record_id = (args.get("record_id") or "").strip() or None
    field_name = (args.get("field") or "").strip() or None
    return Question(entity, record_id, field_name)


def principal_of(runtime: TenantRuntime, member: Actor) -> Principal:
    if member.role == ADMIN_ROLE:
        return Principal(member.user_id, member.role)
    with runtime.engine.connect() as conn:
        return load_principal(conn, member.user_id, member.role)


def explain(
    runtime: TenantRuntime, service: RecordService, member: Actor,
    question: Question,
) -> dict[str, Any]:
    """Explain why ``member`` has or lacks each right on the record, and
    return the JSON body of ``GET /access``. ``service`` is the record
    service of the asking member, whose read right decides what is found."""
    entity = runtime.entity(question.entity)
    if question.record_id is not None and not service.readable(
        entity.name, question.record_id
    ):
        raise NotFound(f"{entity.name} record {question.record_id!r} not found")

    if question.field is not None:
        _check_field(entity, service.access(entity.name), question.field)
    principal = principal_of(runtime, member)
    access = Access(runtime.definition, entity, principal)
    table = runtime.tables[entity.name]

    with runtime.engine.connect() as conn:
        rights = {}
        for right in RIGHTS:
            if question.record_id is None and access.allows(right) \
                    and right in SCOPED_RIGHTS:
                decision = _without_record(access, right)
            else:
                # Unscoped rights, and rights not granted at all, need no record.
                decision = access.explain(conn, table, right,
                                          question.record_id or "")
            rights[right] = decision.as_json()

    body: dict[str, Any] = {
        "user": {"id": member.user_id, "email": member.email, "name": member.name},
        "role": member.role,
        "permission_sets": list(principal.permission_sets),
        "entity": entity.name,
        "record_id": question.record_id,
        "rights": rights,
        "field": None,
    }
    if question.field is not None:
        decision = access.explain_field(question.field)
        body["field"] = {"name": question.field,
                         "level": access.level(question.field), **decision.as_json()}
    return body


def _check_field(entity: Entity, asker_access: Access, name: str) -> None:
    """Reject an unknown field, and a field hidden from a non-admin asker with
    the same message, as list filters do."""
    known = entity.has_field(name) or name in SYSTEM_COLUMNS
    if known and (asker_access.principal.is_admin or asker_access.visible(name)):
        return
    visible = [n for n in entity.field_names if asker_access.visible(n)]
    raise RecordInvalid(
        f"unknown field {name!r} for entity {entity.name!r}: use one of "
        + ", ".join([*visible, *SYSTEM_COLUMNS]),
        details={"field": [f"unknown field {name!r}"]},
    )


def _without_record(access: Access, right: str) -> Decision:
    """Explain a granted scoped right with no record named: its scopes."""
    reasons = [
        f"{' and '.join(access.granted[right][scope])} grants it on {scope} records"
        for scope in SCOPES
        if scope in access.granted[right]
    ]
    reasons.append("name a record to see whether sharing rules or shares add it")
    return Decision(True, reasons)


# Why: the API endpoint and the page


@api.blueprint.get("/access")
def api_access() -> Response:
    """Explain one member's rights on one record (admins: any member)."""
    member = requested_member(g.runtime, g.actor, request.args.get("user"))
    question = question_from(request.args)
    return jsonify(explain(g.runtime, record_service(), member, question))


@web.blueprint.route("/t/<tenant>/access", endpoint="access_page")
def access_page(tenant: str) -> ResponseReturnValue:
    """Show the why form and, once an entity is chosen, the explanation.

    The reasons come from ``Access`` in English, whatever the UI language."""
    runtime: TenantRuntime = g.runtime
    actor: Actor = g.actor
    answer = None
    error = None
    status = 200
    if request.args.get("entity"):
        try:
            member = requested_member(runtime, actor, request.args.get("user"))
            answer = explain(runtime, record_service(g.locale), member,
                             question_from(request.args))
        except (NotFound, RecordInvalid, BadQuery) as err:
            log.info("rejected why request of user %s in tenant %s: %s",
                     actor.user_id, tenant, err.message)
            error = _why_error(err)
            status = err.status
    members = list_members(get_platform().control, runtime.tenant) \
        if actor.is_admin else []
    return render_template(
        "crm/access.html", answer=answer, error=error, members=members,
        values=request.args, rights=RIGHTS, right_labels=RIGHT_LABELS,
        level_labels=LEVEL_LABELS,
    ), status


def _why_error(error: PlatformError) -> str:
    if isinstance(error, NotFound):
        return gettext("No such member, entity or record, or you may not see it.")
    if isinstance(error, RecordInvalid) and "field" in error.details:
        return gettext("This entity has no such field.")
    return error.message


# Roles and permission sets: pages


def require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise Forbidden(
            f"only admins may change permissions: user {actor.user_id!r} has the "
            f"role {actor.role!r}; ask an admin of the tenant",
            details={"role": actor.role},
        )


def render_roles(error: str | None = None, problems: list[str] | None = None,
                 status: int = 200) -> ResponseReturnValue:
    runtime: TenantRuntime = g.runtime
    definition = runtime.definition
    counts = admin_docs.role_holders(get_platform(), runtime.tenant)
    return render_template(
        "crm/permissions.html", form=PermissionsForm(), roles=definition.roles,
        permission_sets=definition.permission_sets, counts=counts,
        admin_role=ADMIN_ROLE, error=error, problems=problems or [],
    ), status


@web.blueprint.route("/t/<tenant>/roles", endpoint="roles")
def roles_page(tenant: str) -> ResponseReturnValue:
    """List the roles and permission sets (admins only)."""
    require_admin(g.actor)
    return render_roles()


def _register_grantee_pages(kind: str, path: str) -> None:
    """Add the new, edit and delete pages of one grantee kind."""
    web.blueprint.add_url_rule(
        f"/t/<tenant>/{path}/new", f"{kind}_new", grantee_page,
        methods=["GET", "POST"], defaults={"kind": kind, "name": None},
    )
    web.blueprint.add_url_rule(
        f"/t/<tenant>/{path}/<name>", f"{kind}_edit", grantee_page,
        methods=["GET", "POST"], defaults={"kind": kind},
    )
    web.blueprint.add_url_rule(
        f"/t/<tenant>/{path}/<name>/delete", f"{kind}_delete", grantee_delete,
        methods=["POST"], defaults={"kind": kind},
    )


def grantee_page(tenant: str, kind: str, name: str | None) -> ResponseReturnValue:
    """Show or save the grid of one role or permission set (admins only)."""
    require_admin(g.actor)
    runtime: TenantRuntime = g.runtime
    folder = admin_docs.folder_of(kind)
    existing = None
    if name is not None:
        existing = admin_docs.stored_document(runtime.definition, folder, name)
        if existing is None:
            raise NotFound(f"{kind.replace('_', ' ')} {name!r} not found")
    if request.method == "GET":
        return render_grantee(kind, name, existing or {})
    if not forms.csrf_valid(PermissionsForm()):
        return render_grantee(kind, name, existing or {},
                              [web.expired_form_message()], 400)

    chosen = name or request.form.get("name", "").strip()
    try:
        document = admin_docs.grantee_from_form(runtime.definition, chosen,
                                                request.form, existing)
        admin_docs.save_grantee(get_platform(), runtime, kind, chosen, document,
                                g.actor.user_id, new=name is None,
                                based_on=_based_on())
    except DefinitionError as err:
        log.info("rejected change of %s %s in tenant %s: %s", kind, chosen,
                 tenant, err)
        return render_grantee(kind, name, _draft(chosen, existing),
                              admin_docs.problem_lines(err), 422)
    except PlatformError as err:
        log.info("rejected change of %s %s in tenant %s: %s", kind, chosen,
                 tenant, err.message)
        return render_grantee(kind, name, _draft(chosen, existing),
                              [_page_message(err)], err.status)
    flash(gettext("Saved %(name)s. Members holding it have the new rights now.",
                  name=chosen), "success")
    return redirect(url_for("web.roles", tenant=tenant))


def _draft(name: str, existing: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the submitted grant document as far as it can be read, so that
    a rejected form shows what was entered."""
    definition = g.runtime.definition
    draft = dict(existing or {})
    draft["name"] = name
    draft["label"] = admin_docs.texts_from_form(request.form, "label",
                                                definition.locales)
    draft["description"] = admin_docs.texts_from_form(
        request.form, "description", definition.locales)
    with contextlib.suppress(RecordInvalid):
        draft["entities"] = admin_docs.grants_from_form(definition, request.form)
    return draft


def _based_on() -> str | None:
    """Return the definition hash that the submitted page was made from."""
    return request.form.get("metadata_hash") or None


def _page_message(error: PlatformError) -> str:
    """Return the message of a rejected change for the page, translated
    where the page's words are clearer than the API's."""
    if isinstance(error, admin_docs.StaleDefinition):
        return gettext("Someone changed the permissions after you opened this "
                       "page. Reload it and make your change again.")
    return error.message


def render_grantee(
    kind: str, name: str | None, document: Mapping[str, Any],
    problems: list[str] | None = None, status: int = 200,
) -> ResponseReturnValue:
    definition: Definition = g.runtime.definition
    return render_template(
        "crm/permissions_grantee.html", form=PermissionsForm(), kind=kind,
        kind_label=KIND_LABELS[kind], name=name, document=document,
        label=admin_docs.text_map(document.get("label"), definition.default_locale),
        description=admin_docs.text_map(document.get("description"),
                                        definition.default_locale),
        rows=admin_docs.grant_rows(definition, document),
        fixed=kind == "role" and name == ADMIN_ROLE,
        scoped_rights=SCOPED_RIGHTS, unscoped_rights=admin_docs.UNSCOPED_RIGHTS,
        right_labels=RIGHT_LABELS, scope_labels=SCOPE_LABELS,
        scope_options=_scope_options, levels=("", *FIELD_ACCESS),
        level_labels=LEVEL_LABELS, grantable_fields=admin_docs.grantable_fields,
        problems=problems or [],
    ), status


def _scope_options(current: str) -> list[tuple[str, str]]:
    """Return the scope select's options, with a combined scope kept."""
    options = [(value, str(label)) for value, label in SCOPE_LABELS.items()]
    if current and current not in SCOPE_LABELS:
        parts = [str(SCOPE_LABELS.get(part, part)) for part in current.split("+")]
        options.append((current, " + ".join(parts)))
    return options


def grantee_delete(tenant: str, kind: str, name: str) -> ResponseReturnValue:
    """Delete a role or permission set that no member has (admins only)."""
    require_admin(g.actor)
    if not forms.csrf_valid(PermissionsForm()):
        return render_roles(web.expired_form_message(), status=400)
    try:
        admin_docs.delete_grantee(get_platform(), g.runtime, kind, name,
                                  g.actor.user_id, _based_on())
    except admin_docs.StillHeld as err:
        log.info("rejected deletion of %s %s in tenant %s: %s", kind, name, tenant,
                 err.message)
        message = gettext(
            "%(name)s is held by %(count)s member(s). Give them another role or "
            "remove it from them first.", name=name, count=err.details["holders"])
        return render_roles(message, status=err.status)
    except DefinitionError as err:
        log.info("rejected deletion of %s %s in tenant %s: %s", kind, name, tenant,
                 err)
        return render_roles(gettext("The definition would not be valid:"),
                            admin_docs.problem_lines(err), 422)
    except (admin_docs.AdminRoleFixed, admin_docs.StaleDefinition) as err:
        log.info("rejected deletion of %s %s in tenant %s: %s", kind, name, tenant,
                 err.message)
        return render_roles(_page_message(err), status=err.status)
    flash(gettext("Deleted %(name)s.", name=name), "success")
    return redirect(url_for("web.roles", tenant=tenant))


_register_grantee_pages("role", "roles")
_register_grantee_pages("permission_set", "permission-sets")


# Sharing rules: pages


@web.blueprint.route("/t/<tenant>/sharing-rules", endpoint="sharing_rules")
def sharing_rules_page(tenant: str) -> ResponseReturnValue:
    """List the sharing rules (admins only)."""
    require_admin(g.actor)
    return render_sharing_rules()


def render_sharing_rules(error: str | None = None,
                         problems: list[str] | None = None,
                         status: int = 200) -> ResponseReturnValue:
    return render_template(
        "crm/permissions_sharing.html", form=PermissionsForm(),
        rules=g.runtime.definition.sharing_rules, error=error,
        problems=problems or [],
    ), status


@web.blueprint.route("/t/<tenant>/sharing-rules/new", methods=["GET", "POST"],
                     endpoint="sharing_rule_new", defaults={"name": None})
@web.blueprint.route("/t/<tenant>/sharing-rules/<name>", methods=["GET", "POST"],
                     endpoint="sharing_rule_edit")
def sharing_rule_page(tenant: str, name: str | None) -> ResponseReturnValue:
    """Show or save one sharing rule (admins only)."""
    require_admin(g.actor)
    runtime: TenantRuntime = g.runtime
    existing = None
    if name is not None:
        existing = admin_docs.stored_document(
            runtime.definition, admin_docs.SHARING_RULES_FOLDER, name)
        if existing is None:
            raise NotFound(f"sharing rule {name!r} not found")
    if request.method == "GET":
        return render_sharing_rule(name, existing or {})
    if not forms.csrf_valid(PermissionsForm()):
        return render_sharing_rule(name, existing or {},
                                   [web.expired_form_message()], 400)
    chosen = name or request.form.get("name", "").strip()
    roles = request.form.getlist("roles")
    try:
        document = admin_docs.sharing_rule_from_form(
            runtime.definition, chosen, request.form, roles, existing)
        admin_docs.save_sharing_rule(get_platform(), runtime, chosen, document,
                                     g.actor.user_id, new=name is None,
                                     based_on=_based_on())
    except DefinitionError as err:
        log.info("rejected sharing rule %s in tenant %s: %s", chosen, tenant, err)
        return render_sharing_rule(name, _rule_draft(chosen, roles),
                                   admin_docs.problem_lines(err), 422)
    except PlatformError as err:
        log.info("rejected sharing rule %s in tenant %s: %s", chosen, tenant,
                 err.message)
        return render_sharing_rule(name, _rule_draft(chosen, roles),
                                   [_page_message(err)], err.status)
    flash(gettext("Saved sharing rule %(name)s.", name=chosen), "success")
    return redirect(url_for("web.sharing_rules", tenant=tenant))


def _rule_draft(name: str, roles: list[str]) -> dict[str, Any]:
    """Return the submitted sharing rule with its conditions as text."""
    form = request.form
    where = []
    index = 0
    while f"condition-{index}-field" in form:
        if form.get(f"condition-{index}-field", "").strip():
            where.append({"field": form[f"condition-{index}-field"].strip(),
                          "op": form.get(f"condition-{index}-op", "eq"),
                          "value": form.get(f"condition-{index}-value", "")})
        index += 1
    return {
        "name": name,
        "label": admin_docs.texts_from_form(form, "label",
                                            g.runtime.definition.locales),
        "entity": form.get("entity", ""),
        "where": where,
        "access": form.get("access", "read"),
        "roles": roles,
        "teams": [t.strip() for t in form.get("teams", "").split(",") if t.strip()],
    }


def render_sharing_rule(
    name: str | None, document: Mapping[str, Any],
    problems: list[str] | None = None, status: int = 200,
) -> ResponseReturnValue:
    definition: Definition = g.runtime.definition
    return render_template(
        "crm/permissions_sharing_rule.html", form=PermissionsForm(), name=name,
        document=document,
        label=admin_docs.text_map(document.get("label"), definition.default_locale),
        conditions=admin_docs.condition_rows(document),
        operators=admin_docs.CONDITION_OPERATORS, access_levels=admin_docs.SHARE_ACCESS,
        role_names=definition.role_names, problems=problems or [],
    ), status


@web.blueprint.route("/t/<tenant>/sharing-rules/<name>/delete", methods=["POST"],
                     endpoint="sharing_rule_delete")
def sharing_rule_delete(tenant: str, name: str) -> ResponseReturnValue:
    """Delete one sharing rule (admins only)."""
    require_admin(g.actor)
    if not forms.csrf_valid(PermissionsForm()):
        return render_sharing_rules(web.expired_form_message(), status=400)
    try:
        admin_docs.delete_sharing_rule(get_platform(), g.runtime, name,
                                       g.actor.user_id, _based_on())
    except admin_docs.StaleDefinition as err:
        log.info("rejected deletion of sharing rule %s in tenant %s: %s", name,
                 tenant, err.message)
        return render_sharing_rules(_page_message(err), status=err.status)
    except DefinitionError as err:
        log.info("rejected deletion of sharing rule %s in tenant %s: %s", name,
                 tenant, err)
        return render_sharing_rules(gettext("The definition would not be valid:"),
                                    admin_docs.problem_lines(err), 422)
    flash(gettext("Deleted sharing rule %(name)s.", name=name), "success")
    return redirect(url_for("web.sharing_rules", tenant=tenant))


# Roles and permission sets: the API


def _api_documents(kind: str) -> Response:
    require_admin(g.actor)
    folder = admin_docs.folder_of(kind)
    return jsonify({"data": admin_docs.documents_in(g.runtime.definition, folder)})


def _api_document(kind: str, name: str) -> Response:
    require_admin(g.actor)
    folder = admin_docs.folder_of(kind)
    document = admin_docs.stored_document(g.runtime.definition, folder, name)
    if document is None:
        raise NotFound(f"{kind.replace('_', ' ')} {name!r} not found")
    return jsonify({"data": document})


def _api_put(kind: str, name: str) -> tuple[Response, int]:
    """Replace or create one role or permission set from a JSON document."""
    require_admin(g.actor)
    document = api.read_json_object()
    key = admin_docs.document_key(admin_docs.folder_of(kind), name)
    new = key not in g.runtime.definition.documents
    try:
        runtime = admin_docs.save_grantee(get_platform(), g.runtime, kind, name,
                                          document, g.actor.user_id, new=new)
    except DefinitionError as err:
        raise _invalid_definition(err) from err
    stored = admin_docs.stored_document(runtime.definition,
                                        admin_docs.folder_of(kind), name)
    return jsonify({"data": stored}), 201 if new else 200


def _api_delete(kind: str, name: str) -> tuple[str, int]:
    require_admin(g.actor)
    try:
        admin_docs.delete_grantee(get_platform(), g.runtime, kind, name,
                                  g.actor.user_id)
    except DefinitionError as err:
        raise _invalid_definition(err) from err
    return "", 204


def _invalid_definition(error: DefinitionError) -> RecordInvalid:
    lines = admin_docs.problem_lines(error)
    return RecordInvalid(
        "the changed definition is invalid: " + "; ".join(lines),
        details={"problems": lines},
    )


def _register_api(kind: str, path: str) -> None:
    rules = (
        (f"/{path}", "GET", _api_documents),
        (f"/{path}/<name>", "GET", _api_document),
        (f"/{path}/<name>", "PUT", _api_put),
        (f"/{path}/<name>", "DELETE", _api_delete),
    )
    for rule, method, view in rules:
        endpoint = f"api_{kind}_{method.lower()}_{rule.count('<')}"
        api.blueprint.add_url_rule(rule, endpoint, view, methods=[method],
                                   defaults={"kind": kind})


_register_api("role", "roles")
_register_api("permission_set", "permission-sets")


# The OpenAPI document


def openapi_components() -> dict[str, dict[str, Any]]:
    """Return the component schemas of the access and roles endpoints."""
    decision = {
        "type": "object",
        "required": ["allowed", "reasons"],
        "properties": {
            "allowed": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"},
                        "description": "The grants, sharing rules or shares that "
                        "decided, in English."},
        },
    }
    field_decision = {
        "type": ["object", "null"],
        "required": ["name", "level", "allowed", "reasons"],
        "properties": {
            "name": {"type": "string"},
            "level": {"type": "string", "enum": list(FIELD_ACCESS)},
            "allowed": {"type": "boolean", "description": "False when hidden."},
            "reasons": {"type": "array", "items": {"type": "string"}},
        },
    }
    explanation = {
        "type": "object",
        "required": ["user", "role", "permission_sets", "entity", "record_id",
                     "rights", "field"],
        "properties": {
            "user": {"type": "object", "required": ["id", "email", "name"],
                     "properties": {"id": {"type": "string"},
                                    "email": {"type": "string"},
                                    "name": {"type": "string"}}},
            "role": {"type": "string"},
            "permission_sets": {"type": "array", "items": {"type": "string"}},
            "entity": {"type": "string"},
            "record_id": {"type": ["string", "null"]},
            "rights": {
                "type": "object",
                "required": list(RIGHTS),
                "properties": {
                    right: {"$ref": "#/components/schemas/AccessDecision"}
                    for right in RIGHTS
                },
            },
            "field": field_decision,
        },
    }
    document = {
        "type": "object",
        "description": "A roles/NAME.json or permission_sets/NAME.json document "
        "of the metadata format.",
        "required": ["name", "label"],
        "additionalProperties": True,
    }
    return {"AccessDecision": decision, "AccessExplanation": explanation,
            "GrantDocument": document}


def openapi_paths(
    error_refs: Mapping[str, Any], write_error_refs: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Return the path items of ``/access`` and the roles and permission set
    endpoints. ``error_refs`` and ``write_error_refs`` map statuses to the
    error responses of reads and writes."""
    query = [
        {"in": "query", "name": "user", "required": False,
         "schema": {"type": "string"},
         "description": "User id or e-mail address of a member (admins only). "
         "Without it, the asking member."},
        {"in": "query", "name": "entity", "required": True,
         "schema": {"type": "string"}},
        {"in": "query", "name": "record_id", "required": False,
         "schema": {"type": "string"},
         "description": "Without it, scoped rights list the scopes granted."},
        {"in": "query", "name": "field", "required": False,
         "schema": {"type": "string"}},
    ]
    paths: dict[str, dict[str, Any]] = {
        "/access": {
            "get": {
                "operationId": "explain_access",
                "summary": "Explain a member's rights on a record",
                "tags": ["Permissions"],
                "parameters": query,
                "responses": {
                    "200": _json_response("The rights and their reasons.",
                                          "AccessExplanation"),
                    **error_refs,
                    **{key: value for key, value in write_error_refs.items()
                       if key == "422"},
                },
            },
        },
    }
    for kind, path in (("role", "roles"), ("permission_set", "permission-sets")):
        paths.update(_grantee_paths(kind, path, error_refs, write_error_refs))
    return paths


def _grantee_paths(
    kind: str, path: str, error_refs: Mapping[str, Any],
    write_error_refs: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    noun = kind.replace("_", " ")
    one = _data_response(f"The {noun} document.",
                         {"$ref": "#/components/schemas/GrantDocument"})
    many = _data_response(f"Every {noun} document.", {
        "type": "array", "items": {"$ref": "#/components/schemas/GrantDocument"}})
    conflict = {"409": {
        "description": "The admin role cannot change (`admin_role_fixed`), or "
        "members still have it (`still_held`).",
        "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}},
    }}
    name = {"in": "path", "name": "name", "required": True,
            "schema": {"type": "string"}}
    tags = ["Permissions"]
    return {
        f"/{path}": {"get": {
            "operationId": f"list_{kind}s", "summary": f"List {noun}s (admins only)",
            "tags": tags, "responses": {"200": many, **error_refs},
        }},
        f"/{path}/{{name}}": {
            "parameters": [name],
            "get": {"operationId": f"get_{kind}", "summary": f"Read one {noun}",
                    "tags": tags, "responses": {"200": one, **error_refs}},
            "put": {
                "operationId": f"put_{kind}",
                "summary": f"Create or replace a {noun} and apply the definition",
                "tags": tags,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/GrantDocument"}}}},
                "responses": {"200": one, "201": one, **write_error_refs,
                              **conflict},
            },
            "delete": {
                "operationId": f"delete_{kind}",
                "summary": f"Delete a {noun} that no member has",
                "tags": tags,
                "responses": {"204": {"description": "Deleted."},
                              **write_error_refs, **conflict},
            },
        },
    }


def _data_response(description: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"type": "object", "required": ["data"],
                   "properties": {"data": data}}}}}


def _json_response(description: str, component: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{component}"}}}}
