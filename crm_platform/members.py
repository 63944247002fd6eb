"""Tenant members managed by the tenant's admins: the service, the members
page of the web UI and the ``/members`` endpoints of the REST API.

Only members with the role ``admin`` may list or change members. Others get
403 ``forbidden``, as for any other action their role does not allow. A
tenant keeps at least one admin: removing or demoting its last admin raises
``LastAdmin``. Adding a member counts against the paid seats
(``billing.SeatLimitReached``, 409).

The routes are added to the blueprints of ``crm_platform.web`` and
``crm_platform.api`` when this module is imported, which ``create_app``
does.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
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

from metadata_engine.model import Definition
from renderers import forms

from . import api, web
from .billing import SeatLimitReached, count_members, membership_transaction
from .context import get_platform
from .control import (
    EMAIL_PATTERN,
    ROLES,
    Actor,
    ControlPlane,
    PasswordRejected,
    Tenant,
    memberships,
    subscriptions,
    tenants,
    users,
)
from .errors import (
    Conflict,
    Forbidden,
    LimitReached,
    NotFound,
    PlatformError,
    RecordInvalid,
)
from .sharing import SharingService

log = logging.getLogger(__name__)

#: Maximum length of a display name (``users.name``), in characters.
MAX_NAME_LENGTH = 255
#: Maximum length of an e-mail address (``users.email``), in characters.
MAX_EMAIL_LENGTH = 254
#: The fields a POST /members body may contain.
NEW_MEMBER_FIELDS = frozenset({"email", "role", "name", "password"})

#: Labels of the standard roles, for roles that the tenant's definition does
#: not declare (``admin`` always exists, declared or not).
ROLE_LABELS = {
    "admin": lazy_gettext("Admin"),
    "sales_manager": lazy_gettext("Sales manager"),
    "sales_rep": lazy_gettext("Sales representative"),
    "service_agent": lazy_gettext("Service agent"),
    "read_only": lazy_gettext("Read-only"),
}


def role_labels(
    definition: Definition, locale: str, extra: Sequence[str] = ()
) -> dict[str, str]:
    """Return the label of each role of ``definition`` and of each name in
    ``extra`` (roles members still hold after the definition dropped them).

    A declared role takes its label from the definition, in ``locale``.
    """
    labels: dict[str, str] = {}
    for name in (*definition.role_names, *extra):
        role = definition.role(name)
        if role is not None:
            labels[name] = role.label.get(locale)
        else:
            labels[name] = str(ROLE_LABELS.get(name, name))
    return labels


class AlreadyMember(Conflict):
    """Raised when the user to add is already a member of the tenant."""

    code = "already_member"


class LastAdmin(Conflict):
    """Raised when a change would leave the tenant without an admin."""

    code = "last_admin"


@dataclass(frozen=True)
class Member:
    user_id: str
    email: str
    name: str
    role: str
    #: None for memberships made before the control plane stored the time.
    added_at: dt.datetime | None


@dataclass(frozen=True)
class Seats:
    """Seats in use and seats paid. ``paid`` is None without a subscription."""

    used: int
    paid: int | None


# The service


def require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise Forbidden(
            f"only admins may manage members: user {actor.user_id!r} has the "
            f"role {actor.role!r}; ask an admin of the tenant",
            details={"role": actor.role},
        )


def _member_query(tenant: Tenant) -> sa.Select[Any]:
    return (
        sa.select(
            users.c.id,
            users.c.email,
            users.c.name,
            memberships.c.role,
            memberships.c.added_at,
        )
        .join(memberships, memberships.c.user_id == users.c.id)
        .where(memberships.c.tenant_id == tenant.id)
    )


def _member_from(row: sa.RowMapping) -> Member:
    return Member(
        user_id=row["id"],
        email=row["email"],
        name=row["name"],
        role=row["role"],
        added_at=row["added_at"],
    )


def list_members(control: ControlPlane, tenant: Tenant) -> list[Member]:
    """Return the members of ``tenant`` ordered by name, then e-mail."""
    query = _member_query(tenant).order_by(users.c.name, users.c.email)
    with control.engine.connect() as conn:
        return [_member_from(row) for row in conn.execute(query).mappings()]


def get_member(control: ControlPlane, tenant: Tenant, user_id: str) -> Member:
    """Return one member of ``tenant`` or raise ``NotFound``, also for the
    members of other tenants."""
    query = _member_query(tenant).where(users.c.id == user_id)
    with control.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"user {user_id!r} is not a member of tenant {tenant.slug!r}")
    return _member_from(row)


def seat_usage(control: ControlPlane, tenant: Tenant) -> Seats:
    query = sa.select(subscriptions.c.seats).where(
        subscriptions.c.tenant_id == tenant.id
    )
    with control.engine.connect() as conn:
        paid = conn.execute(query).scalar()
        used = count_members(conn, tenant.id)
    return Seats(used=used, paid=paid)


def check_role(role: str, roles: Sequence[str]) -> None:
    """Raise ``RecordInvalid`` unless ``role`` is one of ``roles``."""
    if role not in roles:
        message = f"unknown role {role!r}: use one of {', '.join(roles)}"
        raise RecordInvalid(message, details={"role": [message]})


def add_member(
    control: ControlPlane,
    tenant: Tenant,
    email: str,
    role: str,
    name: str | None = None,
    password: str | None = None,
    roles: Sequence[str] = ROLES,
) -> Member:
    """Add the user with ``email`` to ``tenant`` with ``role``, one of
    ``roles``: pass the tenant definition's ``role_names``, because the
    default is the standard template's roles.

    An unknown address creates a new user, which needs ``name`` and an initial
    ``password`` that the password policy accepts. For an existing user both
    are ignored: the user keeps their name and password. If adding the member
    fails (no free seat), the user created for it is deleted again.
    """
    check_role(role, roles)
    email = email.strip().lower()
    # NOTE: an address with a user on any tenant is added as it is, and one
    # without needs a name and password, so a tenant admin can tell which
    # addresses have an account somewhere on this platform.
    user_id = control.find_user_id(email)
    created = user_id is None
    if user_id is None:
        user_id = _create_user(control, email, name, password)
    elif control.actor(tenant, user_id) is not None:
        raise AlreadyMember(
            f"user {email!r} is already a member of tenant {tenant.slug!r}: "
            "change their role instead",
            details={"user_id": user_id},
        )
    try:
        control.add_member(tenant, user_id, role, roles)
    except PlatformError:
        if created:
            _delete_user(control, user_id)
        raise
    log.warning("added user %s to tenant %s as %s", user_id, tenant.slug, role)
    return get_member(control, tenant, user_id)


def _create_user(
    control: ControlPlane, email: str, name: str | None, password: str | None
) -> str:
    missing = {
        field: [f"{field} is required for a new user"]
        for field, value in (("name", name), ("password", password))
        if not value
    }
    if missing:
        raise RecordInvalid(
            f"no user has the e-mail address {email!r}, so a new user is "
            "created: send its name and an initial password",
            details=missing,
        )
    return control.create_user(email, password, name)


def _delete_user(control: ControlPlane, user_id: str) -> None:
    with control.engine.begin() as conn:
        conn.execute(users.delete().where(users.c.id == user_id))
    log.info("deleted user %s, created for a membership that failed", user_id)


def change_role(
    control: ControlPlane,
    tenant: Tenant,
    user_id: str,
    role: str,
    roles: Sequence[str] = ROLES,
) -> Member:
    """Give the member ``user_id`` of ``tenant`` the role ``role``, one of
    ``roles`` (see ``add_member``). Demoting the last admin raises
    ``LastAdmin``."""
    check_role(role, roles)
    with membership_transaction(control.engine) as conn:
        _check_keeps_admin(conn, tenant, user_id, role)
        conn.execute(
            memberships.update()
            .where(
                memberships.c.tenant_id == tenant.id,
                memberships.c.user_id == user_id,
            )
            .values(role=role)
        )
    log.warning("changed the role of user %s in tenant %s to %s", user_id,
                tenant.slug, role)
    return get_member(control, tenant, user_id)


def remove_member(control: ControlPlane, tenant: Tenant, user_id: str) -> None:
    """End the membership of ``user_id``. Removing the last admin raises
    ``LastAdmin``."""

    def keeps_admin(conn: sa.Connection) -> None:
        _check_keeps_admin(conn, tenant, user_id, None)

    control.remove_member(tenant, user_id, check=keeps_admin)


def _check_keeps_admin(
    conn: sa.Connection, tenant: Tenant, user_id: str, new_role: str | None
) -> None:
    """Raise ``LastAdmin`` if giving the member ``new_role`` (None: removing
    the member) leaves ``tenant`` without an active admin.

    On PostgreSQL it locks the tenant's row until the transaction ends, so
    two admins who demote each other at the same moment are checked one
    after the other. SQLite's ``membership_transaction`` holds the write lock
    already.
    """
    conn.execute(
        sa.select(tenants.c.id).where(tenants.c.id == tenant.id).with_for_update()
    )
    role = conn.execute(
        sa.select(memberships.c.role).where(
            memberships.c.tenant_id == tenant.id, memberships.c.user_id == user_id
        )
    ).scalar()
    if role is None:
        raise NotFound(f"user {user_id!r} is not a member of tenant {tenant.slug!r}")
    if role != "admin" or new_role == "admin":
        return
    others = conn.execute(
        sa.select(sa.func.count())
        .select_from(memberships)
        .join(users, users.c.id == memberships.c.user_id)
        .where(
            memberships.c.tenant_id == tenant.id,
            memberships.c.role == "admin",
            memberships.c.user_id != user_id,
            users.c.is_active.is_(True),
        )
    ).scalar_one()
    if others == 0:
        raise LastAdmin(
            f"user {user_id!r} is the last admin of tenant {tenant.slug!r}: make "
            "another member an admin first",
            details={"user_id": user_id},
        )


# The members page


class MembersForm(FlaskForm):
    """The CSRF token of the members page's forms. The template writes the
    inputs, and the views read them from ``request.form``."""


def seat_message(error: SeatLimitReached) -> str:
    """Return the seat-limit message for a tenant admin, in their language."""
    return gettext(
        "All %(paid)s paid seats are in use (%(used)s members). Remove a member "
        "or ask your service provider for more seats.",
        paid=error.details.get("seats_paid", "?"),
        used=error.details.get("seats_used", "?"),
    )


def error_message(error: PlatformError) -> str:
    """Return the message of a rejected member change for the page."""
    if isinstance(error, SeatLimitReached):
        return seat_message(error)
    if isinstance(error, LimitReached):
        return web.plan_limit_message(error)
    if isinstance(error, LastAdmin):
        return gettext("This member is the tenant's last admin. Make another "
                       "member an admin first.")
    if isinstance(error, AlreadyMember):
        return gettext("This user is already a member. Change their role in the "
                       "list instead.")
    if isinstance(error, PasswordRejected):
        return web.password_policy_message(error)
    return error.message


def form_problem(form: Mapping[str, str]) -> str | None:
    """Return what is wrong with the add-member form, in the user's language,
    or None. The service checks the same again for the API."""
    email = form.get("email", "").strip()
    if not email or len(email) > MAX_EMAIL_LENGTH or not EMAIL_PATTERN.match(email):
        return gettext("Enter a valid e-mail address.")
    if form.get("role", "") not in g.runtime.definition.role_names:
        return gettext("Choose a role.")
    if len(form.get("name", "")) > MAX_NAME_LENGTH:
        return gettext("The name is longer than %(num)d characters.",
                       num=MAX_NAME_LENGTH)
    if len(form.get("password", "")) > web.MAX_PASSWORD_LENGTH:
        return gettext("The password is longer than %(num)d characters.",
                       num=web.MAX_PASSWORD_LENGTH)
    known = get_platform().control.find_user_id(email) is not None
    if not known and not (form.get("name", "").strip() and form.get("password")):
        return gettext("No user has this e-mail address yet. Enter a name and an "
                       "initial password to create one.")
    return None


def render_members(error: str | None = None, status: int = 200
                   ) -> ResponseReturnValue:
    tenant: Tenant = g.runtime.tenant
    control = get_platform().control
    values = request.form if request.method == "POST" else {}
    definition: Definition = g.runtime.definition
    member_list = list_members(control, tenant)
    current_roles = [member.role for member in member_list]
    return render_template(
        "crm/members.html",
        form=MembersForm(),
        members=member_list,
        seats=seat_usage(control, tenant),
        roles=definition.role_names,
        default_role=default_role(definition),
        role_labels=role_labels(definition, g.locale, current_roles),
        error=error,
        values=values,
    ), status


def default_role(definition: Definition) -> str:
    """Return the role the add-member form preselects: the first role the
    definition declares besides ``admin``, so that no one becomes an admin
    by accident."""
    others = [name for name in definition.role_names if name != "admin"]
    return others[0] if others else "admin"


def members_url() -> str:
    return url_for("web.members", tenant=g.runtime.slug)


@web.blueprint.route("/t/<tenant>/members", methods=["GET", "POST"],
                     endpoint="members")
def members_page(tenant: str) -> ResponseReturnValue:
    """List the tenant's members and add one (admins only)."""
    actor: Actor = g.actor
    require_admin(actor)
    if request.method == "GET":
        return render_members()
    if not forms.csrf_valid(MembersForm()):
        return render_members(web.expired_form_message(), 400)
    problem = form_problem(request.form)
    if problem is not None:
        return render_members(problem, 422)
    try:
        member = add_member(
            get_platform().control,
            g.runtime.tenant,
            request.form["email"],
            request.form["role"],
            request.form.get("name", "").strip() or None,
            request.form.get("password") or None,
            g.runtime.definition.role_names,
        )
    except (
        Conflict, SeatLimitReached, LimitReached, RecordInvalid, PasswordRejected
    ) as err:
        log.info("rejected new member of tenant %s: %s", tenant, err.message)
        return render_members(error_message(err), _page_status(err))
    flash(gettext("%(name)s is now a member.", name=member.name), "success")
    return redirect(members_url())


def _page_status(error: PlatformError) -> int:
    return 422 if isinstance(error, PasswordRejected) else error.status


@web.blueprint.route("/t/<tenant>/members/<user_id>/role", methods=["POST"],
                     endpoint="member_role")
def member_role(tenant: str, user_id: str) -> ResponseReturnValue:
    """Change a member's role (admins only)."""
    require_admin(g.actor)
    if not forms.csrf_valid(MembersForm()):
        return render_members(web.expired_form_message(), 400)
    role = request.form.get("role", "")
    roles = g.runtime.definition.role_names
    if role not in roles:
        return render_members(gettext("Choose a role."), 422)
    try:
        member = change_role(
            get_platform().control, g.runtime.tenant, user_id, role, roles
        )
    except LastAdmin as err:
        log.info("rejected role change in tenant %s: %s", tenant, err.message)
        return render_members(error_message(err), err.status)
    label = role_labels(g.runtime.definition, g.locale)[role]
    flash(gettext("%(name)s is now %(role)s.", name=member.name, role=label),
          "success")
    return redirect(members_url())


@web.blueprint.route("/t/<tenant>/members/<user_id>/remove", methods=["POST"],
                     endpoint="member_remove")
def member_remove(tenant: str, user_id: str) -> ResponseReturnValue:
    """Remove a member from the tenant (admins only)."""
    require_admin(g.actor)
    if not forms.csrf_valid(MembersForm()):
        return render_members(web.expired_form_message(), 400)
    control = get_platform().control
    member = get_member(control, g.runtime.tenant, user_id)
    try:
        remove_member(control, g.runtime.tenant, user_id)
    except LastAdmin as err:
        log.info("rejected removal in tenant %s: %s", tenant, err.message)
        return render_members(error_message(err), err.status)
    forget_access(user_id)
    flash(gettext("%(name)s is no longer a member.", name=member.name), "success")
    return redirect(members_url())


# The API


def member_to_json(member: Member) -> dict[str, Any]:
    added = member.added_at
    return {
        "user_id": member.user_id,
        "email": member.email,
        "name": member.name,
        "role": member.role,
        "added_at": None if added is None else added.isoformat() + "Z",
    }


def _string_field(body: Mapping[str, Any], name: str, limit: int) -> str | None:
    """Return the string ``body[name]``, None if absent or null, or raise
    ``RecordInvalid`` for another type or a longer string."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordInvalid(f"invalid {name}: expected a string",
                            details={name: ["expected a string"]})
    if len(value) > limit:
        message = f"longer than {limit} characters"
        raise RecordInvalid(f"invalid {name}: {message}", details={name: [message]})
    return value


def _new_member_values(body: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - NEW_MEMBER_FIELDS)
    if unknown:
        raise RecordInvalid(
            f"unknown fields {', '.join(map(repr, unknown))}: send only "
            + ", ".join(sorted(NEW_MEMBER_FIELDS)),
            details={name: ["unknown field"] for name in unknown},
        )
    email = _string_field(body, "email", MAX_EMAIL_LENGTH) or ""
    if not EMAIL_PATTERN.match(email.strip()):
        raise RecordInvalid(f"invalid e-mail address {email!r}",
                            details={"email": ["expected an e-mail address"]})
    return {
        "email": email,
        "role": _string_field(body, "role", 40) or "",
        "name": _string_field(body, "name", MAX_NAME_LENGTH),
        "password": _string_field(body, "password", web.MAX_PASSWORD_LENGTH),
    }


@api.blueprint.get("/members")
def api_list_members() -> Response:
    """List the members and the seats in use and paid (admins only)."""
    require_admin(g.actor)
    control = get_platform().control
    tenant: Tenant = g.runtime.tenant
    seats = seat_usage(control, tenant)
    return jsonify({
        "data": [member_to_json(item) for item in list_members(control, tenant)],
        "seats": {"used": seats.used, "paid": seats.paid},
    })


@api.blueprint.post("/members")
def api_add_member() -> tuple[Response, int]:
    """Add an existing user, or a new one with name and password (admins only)."""
    require_admin(g.actor)
    values = _new_member_values(api.read_json_object())
    member = add_member(get_platform().control, g.runtime.tenant, **values,
                        roles=g.runtime.definition.role_names)
    response = jsonify({"data": member_to_json(member)})
    response.headers["Location"] = url_for(
        ".api_get_member", user_id=member.user_id, _external=True
    )
    return response, 201


@api.blueprint.get("/members/<user_id>")
def api_get_member(user_id: str) -> Response:
    require_admin(g.actor)
    member = get_member(get_platform().control, g.runtime.tenant, user_id)
    return jsonify({"data": member_to_json(member)})


@api.blueprint.patch("/members/<user_id>")
def api_change_role(user_id: str) -> Response:
    """Change a member's role (admins only)."""
    require_admin(g.actor)
    body = api.read_json_object()
    unknown = sorted(set(body) - {"role"})
    if unknown:
        raise RecordInvalid(
            f"unknown fields {', '.join(map(repr, unknown))}: send only 'role'",
            details={name: ["unknown field"] for name in unknown},
        )
    role = _string_field(body, "role", 40) or ""
    member = change_role(get_platform().control, g.runtime.tenant, user_id, role,
                         g.runtime.definition.role_names)
    return jsonify({"data": member_to_json(member)})


@api.blueprint.delete("/members/<user_id>")
def api_remove_member(user_id: str) -> tuple[str, int]:
    """Remove a member and revoke their tokens of this tenant (admins only)."""
    require_admin(g.actor)
    remove_member(get_platform().control, g.runtime.tenant, user_id)
    forget_access(user_id)
    return "", 204


def forget_access(user_id: str) -> None:
    """Drop a removed member's teams, manager, permission sets and shares, so
    that they get none of them back if they join again."""
    SharingService(get_platform(), g.runtime, g.actor).forget_member(user_id)


# The OpenAPI document


def openapi_components(roles: Sequence[str] = ROLES) -> dict[str, dict[str, Any]]:
    """Return the component schemas of the members endpoints. A role sent in
    a request must be one of ``roles`` (the tenant definition's
    ``role_names``)."""
    member = {
        "type": "object",
        "required": ["user_id", "email", "name", "role", "added_at"],
        "properties": {
            "user_id": {"type": "string"},
            "email": {"type": "string"},
            "name": {"type": "string"},
            "role": {
                "type": "string",
                "description": "One of the definition's roles, or a role that "
                "the definition no longer declares, which grants nothing.",
            },
            "added_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "Null for members added before this was stored.",
            },
        },
    }
    new_member = {
        "type": "object",
        "additionalProperties": False,
        "required": ["email", "role"],
        "properties": {
            "email": {"type": "string", "maxLength": MAX_EMAIL_LENGTH},
            "role": {"type": "string", "enum": list(roles)},
            "name": {
                "type": ["string", "null"], "maxLength": MAX_NAME_LENGTH,
                "description": "Required when no user has the e-mail address.",
            },
            "password": {
                "type": ["string", "null"], "maxLength": web.MAX_PASSWORD_LENGTH,
                "description": "Initial password of a new user; required when no "
                "user has the e-mail address, ignored otherwise.",
            },
        },
    }
    role_change = {
        "type": "object",
        "additionalProperties": False,
        "required": ["role"],
        "properties": {"role": {"type": "string", "enum": list(roles)}},
    }
    return {"Member": member, "NewMember": new_member, "RoleChange": role_change}


def openapi_paths(
    error_refs: Mapping[str, Any], write_error_refs: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Return the path items of the members endpoints.

    ``error_refs`` and ``write_error_refs`` map statuses to the error
    responses of reads and writes. The 409 of the seat limit and the last
    admin is added here.
    """
    member_ref = {"$ref": "#/components/schemas/Member"}
    one = _data_response("The member.", member_ref)
    conflict = {
        "409": {
            "description": "The user is already a member (`already_member`), "
            "every paid seat is in use (`seat_limit_reached`, with `seats_used` "
            "and `seats_paid` in `details`), or the change would leave no admin "
            "(`last_admin`).",
            "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}},
        }
    }
    user_id = {"in": "path", "name": "user_id", "required": True,
               "schema": {"type": "string"}}
    tags = ["Members"]
    listing = _data_response("The members.", {"type": "array", "items": member_ref})
    seats = {"type": "object", "required": ["used", "paid"], "properties": {
        "used": {"type": "integer"},
        "paid": {"type": ["integer", "null"],
                 "description": "Null when the tenant has no subscription."},
    }}
    schema = listing["content"]["application/json"]["schema"]
    schema["required"].append("seats")
    schema["properties"]["seats"] = seats
    return {
        "/members": {
            "get": {
                "operationId": "list_members",
                "summary": "List the members and seats (admins only)",
                "tags": tags,
                "responses": {"200": listing, **error_refs},
            },
            "post": {
                "operationId": "add_member",
                "summary": "Add an existing or a new user as a member (admins only)",
                "tags": tags,
                "requestBody": _json_body("NewMember"),
                "responses": {"201": one, **write_error_refs, **conflict},
            },
        },
        "/members/{user_id}": {
            "parameters": [user_id],
            "get": {
                "operationId": "get_member",
                "summary": "Get one member (admins only)",
                "tags": tags,
                "responses": {"200": one, **error_refs},
            },
            "patch": {
                "operationId": "change_member_role",
                "summary": "Change a member's role (admins only)",
                "tags": tags,
                "requestBody": _json_body("RoleChange"),
                "responses": {"200": one, **write_error_refs, **conflict},
            },
            "delete": {
                "operationId": "remove_member",
                "summary": "Remove a member and revoke their tokens (admins only)",
                "tags": tags,
                "responses": {"204": {"description": "Removed."}, **error_refs,
                              **conflict},
            },
        },
    }


def _data_response(description: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["data"], "properties": {"data": data},
        }}},
    }


def _json_body(component: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{component}"}
    return {"required": True, "content": {"application/json": {"schema": schema}}}
