"""The Flask application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, request

from renderers import init_app as init_renderers

from . import members as _members  # noqa: F401  (adds the members routes)
from . import observability
from . import web_audit as _web_audit  # noqa: F401  (adds the audit routes)
from . import web_expressions as _web_expressions  # noqa: F401  (field visibility)
from . import web_permissions as _web_permissions  # noqa: F401  (why, roles pages)
from . import web_sharing as _web_sharing  # noqa: F401  (teams and shares routes)
from . import web_webhooks as _web_webhooks  # noqa: F401  (webhooks page and API)
from . import web_workflows as _web_workflows  # noqa: F401  (transitions, approvals)
from .api import blueprint as api_blueprint
from .config import Settings, load_settings
from .operator import blueprint as operator_blueprint
from .tenancy import Platform
from .web import blueprint as web_blueprint

log = logging.getLogger(__name__)

#: The UI loads scripts, styles and fonts from this server only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; font-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; object-src 'none'"
)


def create_app(
    settings: Settings | None = None, platform: Platform | None = None
) -> Flask:
    """Build the web application for one data directory."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        SESSION_COOKIE_NAME="metacrm_session",
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.extensions["metacrm"] = platform or Platform(settings)
    app.extensions["metacrm_settings"] = settings

    app.json.sort_keys = False  # type: ignore[attr-defined]
    observability.init_app(app)
    app.register_blueprint(api_blueprint)
    _register_web(app)

    app.after_request(_security_headers)
    app.register_error_handler(413, _too_large)
    app.add_url_rule("/healthz", "healthz", _healthz)
    return app


def _register_web(app: Flask) -> None:
    init_renderers(app)
    app.register_blueprint(web_blueprint)
    app.register_blueprint(operator_blueprint)



def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if getattr(g, "actor", None) is not None:
        response.headers.setdefault("Cache-Control", "private, no-store")
    return response


def _too_large(error: Any) -> tuple[Response, int]:
    limit = request.max_content_length
    body = {
        "error": {
            "code": "payload_too_large",
            "message": f"request body is larger than the limit of {limit} bytes",
            "details": {"limit": limit},
        }
    }
    return jsonify(body), 413


def _healthz() -> Response:
    return jsonify({"status": "ok"})

