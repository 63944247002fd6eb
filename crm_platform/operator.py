"""The operator page: every tenant of the instance, with lifecycle actions.

Operators are users with ``users.is_operator`` set (``metacrm user operator
EMAIL --grant``). They sign in at ``/operator/login`` with their password,
under the same lockout as tenant sign-ins, into a server-side session of
their own (``operator_sessions``) that no tenant membership gives. Every
other ``/operator/`` URL returns 404, exactly as an unknown URL does, unless
an operator is signed in, so the page does not reveal itself. The sign-in
page is the exception, because operators need it before they have a session.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from argon2.exceptions import InvalidHashError, VerificationError
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from uuid_utils import uuid7

from metadata_engine.errors import DefinitionError
from renderers import forms

from . import lifecycle
from .billing import count_members, find_subscription
from .context import get_platform
from .control import (
    FAILED_LOGIN_RETENTION,
    ControlPlane,
    LockedOut,
    Tenant,
    email_digest,
    hash_token,
    operator_failed_logins,
    operator_sessions,
    users,
    utcnow,
)
from .errors import NotFound, PlatformError, Unauthorized
from .tenancy import Platform

log = logging.getLogger(__name__)

blueprint = Blueprint("operator", __name__, url_prefix="/operator")

#: Session key of the signed-in operator: ``{"user": user id, "generation":
#: the user's session generation at sign-in, "sid": the session's random id}``.
SESSION_KEY = "operator"
#: Maximum password length, in characters, passed to the password hasher.
MAX_PASSWORD_LENGTH = 1024
#: Folders whose subfolders with a ``definition.json`` the create form offers.
TEMPLATE_ROOTS = ("tenant_definitions", "examples")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Operator:
    user_id: str
    email: str
    name: str


# Accounts and sessions


def set_operator(control: ControlPlane, email: str, grant: bool) -> str:
    """Grant or revoke the operator flag of user ``email``; return the id."""
    user_id = control.find_user_id(email)
    if user_id is None:
        raise NotFound(
            f"user {email!r} not found: create the user first with 'metacrm user "
            "create SLUG EMAIL --role ROLE --operator'"
        )
    with control.engine.begin() as conn:
        conn.execute(
            users.update().where(users.c.id == user_id).values(is_operator=grant)
        )
        if not grant:
            conn.execute(
                operator_sessions.delete().where(
                    operator_sessions.c.user_id == user_id
                )
            )
    log.warning(
        "%s the operator flag of user %s", "granted" if grant else "revoked", user_id
    )
    return user_id


def authenticate_operator(
    control: ControlPlane, email: str, password: str, client_address: str
) -> Operator:
    """Return the operator with these credentials or raise ``Unauthorized``.

    A wrong password, an unknown address and a user who is not an operator
    get the same error, and each is recorded as a failed sign-in that counts
    towards the lockout shared with tenant sign-ins (``LockedOut``).
    """
    email = email.strip().lower()
    now = utcnow()
    until = control.locked_until(email, now)
    if until is not None:
        log.warning(
            "rejected operator sign-in of e-mail %s from %s: locked out until %s",
            email_digest(email),
            client_address or "-",
            until.isoformat(timespec="seconds"),
        )
        raise LockedOut(until, now)
    operator = _check_operator_password(control, email, password)
    if operator is None:
        _record_failure(control, email, client_address, now)
        raise Unauthorized("invalid e-mail or password")
    control.clear_failed_logins(email)
    return operator


def _check_operator_password(
    control: ControlPlane, email: str, password: str
) -> Operator | None:
    query = sa.select(users).where(users.c.email == email)
    with control.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None or not row["password_hash"]:
        # Spend the time of a real check, so timing does not reveal accounts.
        control.hasher.hash(password)
        return None
    try:
        control.hasher.verify(row["password_hash"], password)
    except (VerificationError, InvalidHashError):
        return None
    if not row["is_active"] or not row["is_operator"]:
        return None
    return Operator(user_id=row["id"], email=row["email"], name=row["name"])


def _record_failure(
    control: ControlPlane, email: str, client_address: str, now: dt.datetime
) -> None:
    table = operator_failed_logins
    with control.engine.begin() as conn:
        conn.execute(
            table.delete().where(table.c.created_at <= now - FAILED_LOGIN_RETENTION)
        )
        conn.execute(
            table.insert().values(
                id=str(uuid7()),
                email=email,
                client_address=client_address[:64],
                created_at=now,
            )
        )
    log.warning(
        "failed operator sign-in of e-mail %s from %s",
        email_digest(email),
        client_address or "-",
    )
    until = control.locked_until(email, now)
    if until is not None:
        log.warning(
            "locked out e-mail %s until %s after failed sign-ins, the last at "
            "the operator page from %s",
            email_digest(email),
            until.isoformat(timespec="seconds"),
            client_address or "-",
        )


def start_operator_session(control: ControlPlane, user_id: str) -> str:
    """Record a new operator session and return its random id."""
    session_id = secrets.token_urlsafe(32)
    with control.engine.begin() as conn:
        conn.execute(
            operator_sessions.insert().values(
                id_hash=hash_token(session_id), user_id=user_id, created_at=utcnow()
            )
        )
    return session_id


def find_operator(
    control: ControlPlane, user_id: str, generation: int, session_id: str
) -> Operator | None:
    """Return the operator of a stored session, or None if the session ended,
    the user lost the flag or was deactivated, or signed out everywhere."""
    query = (
        sa.select(users.c.id, users.c.email, users.c.name)
        .join(operator_sessions, operator_sessions.c.user_id == users.c.id)
        .where(
            operator_sessions.c.id_hash == hash_token(session_id),
            users.c.id == user_id,
            users.c.is_active.is_(True),
            users.c.is_operator.is_(True),
            users.c.session_generation == generation,
        )
    )
    with control.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    return Operator(user_id=row.id, email=row.email, name=row.name)


def end_operator_session(control: ControlPlane, session_id: str) -> None:
    with control.engine.begin() as conn:
        conn.execute(
            operator_sessions.delete().where(
                operator_sessions.c.id_hash == hash_token(session_id)
            )
        )


def operator_from_session() -> Operator | None:
    # A copy of the session, because reading ``flask.session`` adds "Vary:
    # Cookie" to the response, which would tell a 404 here apart from the 404
    # of an unknown URL.
    stored = current_app.session_interface.open_session(current_app, request)
    entry = None if stored is None else stored.get(SESSION_KEY)
    if not isinstance(entry, dict):
        return None
    user_id = entry.get("user")
    generation = entry.get("generation")
    session_id = entry.get("sid")
    if not isinstance(user_id, str) or not isinstance(generation, int):
        return None
    if not isinstance(session_id, str):
        return None
    return find_operator(get_platform().control, user_id, generation, session_id)


# Request set-up


@blueprint.before_request
def require_operator() -> None:
    """Abort with 404 unless an operator is signed in, except on sign-in."""
    operator = operator_from_session()
    g.operator = operator
    if operator is None and request.endpoint != "operator.login":
        abort(404)


@blueprint.after_request
def no_store(response: Response) -> Response:
    """Keep operator pages out of caches. A 404 gets no extra header, so it
    stays identical to the 404 of an unknown URL."""
    if g.get("operator") is not None or request.endpoint == "operator.login":
        response.headers["Cache-Control"] = "private, no-store"
    return response


# Sign-in


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if g.operator is not None and request.method == "GET":
        return redirect(url_for("operator.index"))
    form = forms.LoginForm()
    if request.method == "GET":
        return render_template("operator/login.html", form=form, error=None)
    if not forms.csrf_valid(form):
        log.info("rejected operator sign-in: invalid CSRF token")
        return _login_error(form, "The form expired. Sign in again.", 400)
    email, password = forms.login_values(form)
    control = get_platform().control
    try:
        if not email or not password or len(password) > MAX_PASSWORD_LENGTH:
            raise Unauthorized("invalid e-mail or password")
        operator = authenticate_operator(
            control, email, password, request.remote_addr or ""
        )
    except LockedOut as err:
        unit = "minute" if err.minutes == 1 else "minutes"
        message = (
            "Invalid e-mail address or password. Too many failed attempts: "
            f"try again in {err.minutes} {unit}."
        )
        return _login_error(form, message, 429)
    except Unauthorized:
        return _login_error(form, "Invalid e-mail address or password.", 401)
    _sign_in(control, operator)
    log.warning("operator %s signed in to the operator page", operator.user_id)
    return redirect(url_for("operator.index"))


def _login_error(
    form: forms.LoginForm, message: str, status: int
) -> ResponseReturnValue:
    return render_template("operator/login.html", form=form, error=message), status


def _sign_in(control: ControlPlane, operator: Operator) -> None:
    session[SESSION_KEY] = {
        "user": operator.user_id,
        "generation": control.session_generation(operator.user_id),
        "sid": start_operator_session(control, operator.user_id),
    }
    session.permanent = True


@blueprint.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    if not forms.csrf_valid(forms.ActionForm()):
        return _expired_form()
    entry = session.pop(SESSION_KEY, None)
    if isinstance(entry, dict) and isinstance(entry.get("sid"), str):
        end_operator_session(get_platform().control, entry["sid"])
    return redirect(url_for("operator.login"))


# The tenant table


@dataclass(frozen=True)
class TenantRow:
    """One line of the operator page."""

    tenant: Tenant
    plan: str
    seats_used: int
    seats_paid: int | None
    records: int | None
    storage: str
    due: bool


@blueprint.route("/")
def index() -> ResponseReturnValue:
    platform = get_platform()
    rows = [_tenant_row(platform, tenant) for tenant in platform.control.list_tenants()]
    return render_template(
        "operator/index.html",
        rows=rows,
        templates=sorted(tenant_templates()),
        retention_days=platform.settings.retention_days,
    )


def _tenant_row(platform: Platform, tenant: Tenant) -> TenantRow:
    subscription = None
    if tenant.status != "purged":
        subscription = find_subscription(platform.control, tenant.slug)
    if subscription is None:
        with platform.control.engine.connect() as conn:
            used = count_members(conn, tenant.id)
    else:
        used = subscription.seats_used
    records, storage = _usage(platform, tenant)
    return TenantRow(
        tenant=tenant,
        plan=subscription.plan_code if subscription else "",
        seats_used=used,
        seats_paid=subscription.seats if subscription else None,
        records=records,
        storage=storage,
        due=lifecycle.is_due(tenant),
    )


def _usage(platform: Platform, tenant: Tenant) -> tuple[int | None, str]:
    """Return the record count and storage size of a tenant, or None and an
    empty size for a purged one or one whose storage cannot be read."""
    if tenant.status == "purged":
        return None, ""
    try:
        runtime = platform.runtime_for(tenant)
        records = sum(lifecycle.record_counts(runtime).values())
        size = format_size(lifecycle.storage_bytes(platform, tenant.slug))
    except (PlatformError, DefinitionError, sa.exc.SQLAlchemyError) as err:
        log.warning("cannot read the usage of tenant %s: %s", tenant.slug, err)
        return None, ""
    return records, size


def format_size(size: int) -> str:
    """Return a byte count in B, KiB, MiB or GiB with one decimal."""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def tenant_templates() -> dict[str, Path]:
    """Return the definition folders the create form offers, by their path
    relative to the project (``tenant_definitions/standard_crm``)."""
    found: dict[str, Path] = {}
    for root_name in TEMPLATE_ROOTS:
        root = PROJECT_ROOT / root_name
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if (folder / "definition.json").is_file():
                found[f"{root_name}/{folder.name}"] = folder
    return found


# Actions


@blueprint.route("/tenants", methods=["POST"])
def create_tenant() -> ResponseReturnValue:
    if not forms.csrf_valid(forms.ActionForm()):
        return _expired_form()
    slug = request.form.get("slug", "").strip()
    name = request.form.get("name", "").strip() or None
    template = request.form.get("template", "")
    folder = tenant_templates().get(template)
    if folder is None:
        flash(f"Unknown template {template!r}: choose one from the list.", "danger")
        return redirect(url_for("operator.index"))
    try:
        get_platform().create_tenant(slug, folder, name)
    except (PlatformError, DefinitionError) as err:
        flash(f"Tenant {slug!r} was not created: {_message(err)}", "danger")
        return redirect(url_for("operator.index"))
    log.warning(
        "operator %s created tenant %s from %s", g.operator.user_id, slug, template
    )
    flash(f"Created tenant {slug} from {template}.", "success")
    return redirect(url_for("operator.index"))


def _run_action(
    tenant: str, action: Callable[[Platform, str], Any], done: str
) -> ResponseReturnValue:
    """Check the CSRF token, run ``action`` on tenant ``tenant`` and go back
    to the table with ``done`` or the error as a message."""
    if not forms.csrf_valid(forms.ActionForm()):
        return _expired_form()
    platform = get_platform()
    if platform.control.find_tenant(tenant) is None:
        abort(404)
    try:
        action(platform, tenant)
    except PlatformError as err:
        flash(f"Tenant {tenant}: {err.message}", "danger")
        return redirect(url_for("operator.index"))
    log.warning("operator %s: tenant %s %s", g.operator.user_id, tenant, done)
    flash(f"Tenant {tenant} {done}.", "success")
    return redirect(url_for("operator.index"))


@blueprint.route("/tenants/<tenant>/suspend", methods=["POST"])
def suspend(tenant: str) -> ResponseReturnValue:
    return _run_action(
        tenant,
        lambda platform, slug: platform.control.set_status(slug, "suspended"),
        "is suspended",
    )


@blueprint.route("/tenants/<tenant>/read-only", methods=["POST"])
def read_only(tenant: str) -> ResponseReturnValue:
    return _run_action(
        tenant,
        lambda platform, slug: platform.control.set_status(slug, "read_only"),
        "is read-only",
    )


@blueprint.route("/tenants/<tenant>/resume", methods=["POST"])
def resume(tenant: str) -> ResponseReturnValue:
    return _run_action(
        tenant,
        lambda platform, slug: platform.control.set_status(slug, "active"),
        "is active",
    )


@blueprint.route("/tenants/<tenant>/close", methods=["POST"])
def close(tenant: str) -> ResponseReturnValue:
    return _run_action(tenant, lifecycle.close_tenant, "is closed")


@blueprint.route("/tenants/<tenant>/reopen", methods=["POST"])
def reopen(tenant: str) -> ResponseReturnValue:
    return _run_action(tenant, lifecycle.reopen_tenant, "is reopened")


@blueprint.route("/tenants/<tenant>/export", methods=["POST"])
def export(tenant: str) -> ResponseReturnValue:
    """Send the tenant's checked export archive as a download."""
    if not forms.csrf_valid(forms.ActionForm()):
        return _expired_form()
    platform = get_platform()
    if platform.control.find_tenant(tenant) is None:
        abort(404)
    descriptor, name = tempfile.mkstemp(prefix="metacrm-export-", suffix=".zip")
    os.close(descriptor)
    path = Path(name)
    try:
        lifecycle.export_tenant(platform, tenant, path)
        handle = path.open("rb")
    except PlatformError as err:
        flash(f"Tenant {tenant}: export failed: {err.message}", "danger")
        return redirect(url_for("operator.index"))
    finally:
        # An open handle keeps the data readable after the name is gone.
        path.unlink(missing_ok=True)
    log.warning("operator %s downloaded the export of tenant %s",
                g.operator.user_id, tenant)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return send_file(
        handle,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"{tenant}-export-{stamp}.zip",
    )


@blueprint.route("/tenants/<tenant>/purge", methods=["GET", "POST"])
def purge(tenant: str) -> ResponseReturnValue:
    """Ask the operator to type the slug, then purge a due tenant."""
    platform = get_platform()
    found = platform.control.find_tenant(tenant)
    if found is None:
        abort(404)
    if not lifecycle.is_due(found):
        flash(
            f"Tenant {tenant} cannot be purged: only a closed tenant past its "
            "purge date can.",
            "danger",
        )
        return redirect(url_for("operator.index"))
    if request.method == "GET":
        return render_template("operator/purge.html", tenant=found, error=None)
    if not forms.csrf_valid(forms.ActionForm()):
        return _expired_form()
    if request.form.get("confirm_slug", "").strip() != tenant:
        error = f"Type {tenant} exactly to confirm the purge."
        return render_template("operator/purge.html", tenant=found, error=error), 400
    return _run_action(tenant, lifecycle.purge_tenant, "is purged")


@blueprint.route("/tenants/<tenant>/delete", methods=["GET", "POST"])
def delete(tenant: str) -> ResponseReturnValue:
    """Ask the operator to type the slug, then write and check an export in
    the data directory's ``exports`` folder and purge the tenant at once."""
    platform = get_platform()
    found = platform.control.find_tenant(tenant)
    if found is None or found.status == "purged":
        abort(404)
    if request.method == "GET":
        return render_template("operator/delete.html", tenant=found, error=None)
    if not forms.csrf_valid(forms.ActionForm()):
        return _expired_form()
    if request.form.get("confirm_slug", "").strip() != tenant:
        error = f"Type {tenant} exactly to confirm the deletion."
        return render_template("operator/delete.html", tenant=found,
                               error=error), 400
    exports = platform.settings.data_dir / "exports"
    exports.mkdir(mode=0o700, exist_ok=True)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    path = exports / f"{tenant}-before-delete-{stamp}.zip"
    try:
        lifecycle.delete_tenant(platform, tenant, path)
    except PlatformError as err:
        flash(f"Tenant {tenant} was not deleted: {err.message}", "danger")
        return redirect(url_for("operator.index"))
    log.warning("operator %s deleted tenant %s after exporting it to %s",
                g.operator.user_id, tenant, path)
    flash(f"Tenant {tenant} is deleted. Its export is on the server at {path}.",
          "success")
    return redirect(url_for("operator.index"))


def _expired_form() -> ResponseReturnValue:
    message = "The form expired or its security token is missing. Reload and retry."
    return render_template("operator/error.html", message=message), 400


def _message(error: Exception) -> str:
    return error.message if isinstance(error, PlatformError) else str(error)
