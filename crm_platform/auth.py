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
from .errors import NotFound, Unauthorized
from .records import RecordService
from .tenancy import TenantRuntime

SESSION_KEY = "members"


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
    return actor


def actor_from_session(runtime: TenantRuntime) -> Actor | None:
    """Return the member signed in to this tenant in the browser session."""
    members = session.get(SESSION_KEY) or {}
    user_id = members.get(runtime.slug)
    if not user_id:
        return None
    return get_platform().control.actor(runtime.tenant, user_id)


def sign_in(runtime: TenantRuntime, actor: Actor) -> None:
    members = dict(session.get(SESSION_KEY) or {})
    members[runtime.slug] = actor.user_id
    session[SESSION_KEY] = members
    session.permanent = True


def sign_out(runtime: TenantRuntime) -> None:
    members = dict(session.get(SESSION_KEY) or {})
    members.pop(runtime.slug, None)
    session[SESSION_KEY] = members


def require_tenant_match(runtime: TenantRuntime, actor: Actor) -> None:
    if actor.tenant_id != runtime.tenant.id:
        raise NotFound(f"tenant {runtime.slug!r} not found")


def record_service(locale: str | None = None) -> RecordService:
    """Return the record service for the current tenant and user."""
    actor: Actor = g.actor
    chosen = normalize_locale(locale or g.get("locale") or actor.locale)
    return get_platform().records(g.runtime, actor, chosen)
