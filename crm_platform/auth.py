"""Authentication: bearer tokens for the API, signed sessions for the UI.

Both end in the same place: ``g.runtime`` (the tenant) and ``g.actor`` (the
member of that tenant), set before any view runs. A user of another tenant,
an unknown tenant and a bad credential all look the same from outside.
"""

from __future__ import annotations

from flask import g, session

from metadata_engine.messages import normalize_locale

from .context import get_platform
from .control import Actor
from .errors import Forbidden, NotFound, Unauthorized
from .records import RecordService
from .tenancy import TenantRuntime

#: Session key of the members signed in, by tenant slug: ``{slug: {"user":
#: user id, "generation": the user's session generation at sign-in}}``.
SESSION_KEY = "members"
SESSION_USER = "user"
SESSION_GENERATION = "generation"
SESSION_ID = "sid"


def load_tenant(slug: str) -> TenantRuntime:
    """Set ``g.runtime`` for ``slug`` or raise ``NotFound``."""
    runtime = get_platform().runtime(slug)
    g.runtime = runtime
    return runtime


def authenticate_bearer(slug: str, header: str | None) -> Actor:
    """Set ``g.runtime`` and return the member named by an ``Authorization:
    Bearer`` header, with one control-plane query when the token is valid.

    An unknown tenant raises ``NotFound`` whatever the token; a missing,
    invalid, expired or revoked token, or one of another tenant, raises
    ``Unauthorized``.
    """
    platform = get_platform()
    if not header or not header.startswith("Bearer "):
        load_tenant(slug)
        raise Unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>' with a "
            "token from 'metacrm token create'"
        )
    token = header.removeprefix("Bearer ").strip()
    found = platform.control.member_for_token(slug, token)
    if found is None:
        load_tenant(slug)
        raise Unauthorized("invalid, expired or revoked token")
    tenant, actor = found
    g.runtime = platform.runtime_for(tenant)
    check_not_suspended(g.runtime)
    return actor


def check_not_suspended(runtime: TenantRuntime) -> None:
    """Raise ``Forbidden`` for members of a suspended or closed tenant."""
    status = runtime.tenant.status
    if status == "suspended":
        raise Forbidden(
            f"tenant {runtime.slug!r} is suspended: ask the service operator to "
            "resume it",
            details={"tenant_status": "suspended"},
        )
    if status == "closed":
        raise Forbidden(
            f"tenant {runtime.slug!r} is closed: ask the service operator to "
            "reopen it before its data is purged",
            details={"tenant_status": "closed"},
        )


def actor_from_session(runtime: TenantRuntime) -> Actor | None:
    """Return the member signed in to this tenant in the browser session.

    A session signed in before the user's last password change or "sign out
    everywhere" stores an older generation and is not accepted, and neither
    is a session in the format of earlier versions, which stored none.
    """
    members = session.get(SESSION_KEY) or {}
    entry = members.get(runtime.slug)
    if not isinstance(entry, dict):
        return None
    user_id = entry.get(SESSION_USER)
    generation = entry.get(SESSION_GENERATION)
    session_id = entry.get(SESSION_ID)
    if not isinstance(user_id, str) or not isinstance(generation, int):
        return None
    if not isinstance(session_id, str):
        return None
    control = get_platform().control
    if not control.web_session_active(runtime.tenant, user_id, session_id):
        return None
    return control.actor(runtime.tenant, user_id, generation)


def sign_in(runtime: TenantRuntime, actor: Actor) -> None:
    control = get_platform().control
    generation = control.session_generation(actor.user_id)
    session_id = control.start_web_session(runtime.tenant, actor.user_id)
    members = dict(session.get(SESSION_KEY) or {})
    members[runtime.slug] = {
        SESSION_USER: actor.user_id,
        SESSION_GENERATION: generation,
        SESSION_ID: session_id,
    }
    session[SESSION_KEY] = members
    session.permanent = True


def sign_out(runtime: TenantRuntime) -> None:
    """Sign this browser out of the tenant and end the session on the server,
    so that a copy of the cookie does not sign in again."""
    members = dict(session.get(SESSION_KEY) or {})
    entry = members.pop(runtime.slug, None)
    session[SESSION_KEY] = members
    if isinstance(entry, dict) and isinstance(entry.get(SESSION_ID), str):
        get_platform().control.end_web_session(entry[SESSION_ID])


def require_tenant_match(runtime: TenantRuntime, actor: Actor) -> None:
    if actor.tenant_id != runtime.tenant.id:
        raise NotFound(f"tenant {runtime.slug!r} not found")


def record_service(locale: str | None = None) -> RecordService:
    """Return the record service for the current tenant and user."""
    actor: Actor = g.actor
    chosen = normalize_locale(locale or g.get("locale") or actor.locale)
    return get_platform().records(
        g.runtime, actor, chosen, request_id=g.get("request_id")
    )
