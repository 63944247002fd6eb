"""Server-rendered HTML for MetaCRM: templates, forms, formatting, translations.

``init_app`` installs what the pages need on a Flask application. Bootstrap 5
and Bootstrap Icons are served from the installed Bootstrap-Flask package,
never from a CDN, because the Content-Security-Policy allows only this
origin. It also installs Flask-Babel with the UI catalogues, this package's
templates and static files, and the Jinja filters that format values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, g
from flask_bootstrap import Bootstrap5
from flask_wtf.csrf import generate_csrf

from crm_platform.serialize import visible_value
from metadata_engine.model import Entity, Field, Text

from . import formatting, i18n, listing

#: Bootstrap Icons names are lower-case words joined by hyphens.
ICON_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
DEFAULT_ICON = "folder2-open"

assets = Blueprint(
    "renderers",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)


def init_app(app: Flask) -> None:
    """Install the UI's extensions, templates, static files and filters."""
    app.config["BOOTSTRAP_SERVE_LOCAL"] = True
    Bootstrap5(app)
    i18n.init_i18n(app)
    app.register_blueprint(assets)
    app.jinja_env.autoescape = True
    app.jinja_env.filters.update(
        t=translate_text,
        icon_name=icon_name,
        number=format_number,
    )
    app.jinja_env.globals.update(
        csrf_token=generate_csrf,
        format_value=format_for_locale,
        masked_value=masked_value,
        option_color=formatting.option_color,
        option_label=label_of_option,
        record_title=record_title,
        safe_link=safe_link,
        system_field=listing.system_field,
    )


def current_locale() -> str:
    return str(g.get("locale") or i18n.DEFAULT_LOCALE)


def translate_text(text: Text | str | None) -> str:
    """Return a metadata label in the request's locale (a Jinja filter)."""
    if text is None:
        return ""
    if isinstance(text, Text):
        return text.get(current_locale())
    return str(text)


def format_number(number: int) -> str:
    """Return a count with the locale's digit grouping (a Jinja filter)."""
    return formatting.format_count(number, current_locale())


def current_role() -> str | None:
    """Return the signed-in member's role, or None, which masks every
    sensitive field."""
    actor = g.get("actor")
    role = getattr(actor, "role", None)
    return str(role) if role is not None else None


def masked_value(field: Field, value: Any) -> str | None:
    """Return the masked text that replaces ``value`` for the current member,
    or None when the member may see ``value`` as it is."""
    if value is None or value == "" or not field.masked_for(current_role()):
        return None
    return str(visible_value(field, value, current_role()))


def format_for_locale(field: Field, value: Any) -> str:
    """Return ``value`` as display text, masked if the member may not see it."""
    shown = visible_value(field, value, current_role())
    return formatting.format_value(field, shown, current_locale())


def label_of_option(field: Field, value: str) -> str:
    return formatting.option_label(field, str(value), current_locale())


def icon_name(name: str | None) -> str:
    """Return a Bootstrap Icons name, or the default for a missing or odd one."""
    if name and ICON_NAME.match(name):
        return name
    return DEFAULT_ICON


def record_title(entity: Entity, record: Mapping[str, Any]) -> str:
    """Return the record's title field, or its id when the title is empty."""
    value = record.get(entity.title_field)
    if value is None or str(value).strip() == "":
        return str(record.get("id", ""))
    if entity.has_field(entity.title_field):
        text = format_for_locale(entity.field(entity.title_field), value)
        if text:
            return text
    return str(value)


def safe_link(field: Field, value: Any) -> str | None:
    """Return an ``href`` for url, email and phone values, or None.

    Only http and https URLs become links, so a stored ``javascript:`` value
    is shown as text and never runs.
    """
    if value is None or value == "":
        return None
    text = str(value).strip()
    if field.type == "url":
        lowered = text.lower()
        if lowered.startswith(("http://", "https://")):
            return text
        return None
    if field.type == "email" and "@" in text and ":" not in text:
        return f"mailto:{text}"
    if field.type == "phone":
        digits = re.sub(r"[^0-9+]", "", text)
        return f"tel:{digits}" if digits else None
    return None
