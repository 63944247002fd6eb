"""Translations of the UI and the choice of locale for each request.

The zh_CN catalogue lives as a ``.po`` file only. Compiled ``.mo`` files are
build output, so this module compiles each ``.po`` in memory the first time a
locale is used and hands Flask-Babel the resulting ``Translations``.

Two spellings of a locale exist side by side: metadata and the control plane
use ``"en"`` and ``"zh-CN"``, Babel uses ``"en"`` and ``"zh_CN"``.
"""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from flask import Flask, g, request, session
from flask_babel import Babel, Domain

from metadata_engine.messages import normalize_locale

log = logging.getLogger(__name__)

TRANSLATIONS_DIR = Path(__file__).resolve().parent / "translations"
#: Locales the UI offers, in metadata spelling, with their own names.
UI_LOCALES: dict[str, str] = {"en": "English", "zh-CN": "中文"}
DEFAULT_LOCALE = "en"
#: Session key of the locale picked with ``?lang=``.
SESSION_LOCALE_KEY = "locale"


def babel_name(locale: str) -> str:
    """Return Babel's spelling of a metadata locale: ``zh-CN`` → ``zh_CN``."""
    return locale.replace("-", "_")


def compile_catalog(po_path: Path, locale: str) -> Translations:
    """Compile one ``.po`` file into a ``Translations`` object in memory."""
    with po_path.open("rb") as handle:
        catalog = read_po(handle, locale=babel_name(locale))
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer, domain="messages")


class CompiledDomain(Domain):
    """A Flask-Babel domain whose catalogues are compiled from ``.po`` files.

    Each locale is compiled once per process and then shared by all requests.
    A locale without a ``.po`` file gets ``NullTranslations``, so the English
    text from the source is shown.
    """

    def __init__(self, directory: Path = TRANSLATIONS_DIR) -> None:
        super().__init__(translation_directories=[str(directory)])
        self.directory = directory
        self.compiled: dict[str, NullTranslations] = {}
        self.lock = threading.Lock()

    def translations_for(self, locale: str) -> NullTranslations:
        name = babel_name(locale)
        cached = self.compiled.get(name)
        if cached is not None:
            return cached
        with self.lock:
            cached = self.compiled.get(name)
            if cached is None:
                cached = self._load(name)
                self.compiled[name] = cached
        return cached

    def _load(self, name: str) -> NullTranslations:
        po_path = self.directory / name / "LC_MESSAGES" / "messages.po"
        if not po_path.exists():
            return NullTranslations()
        translations = compile_catalog(po_path, name)
        log.info("compiled UI translations for %s from %s", name, po_path)
        return translations

    def get_translations(self) -> NullTranslations:
        from flask_babel import get_locale

        locale = get_locale()
        if locale is None:
            return NullTranslations()
        # Babel parses "zh_CN" as zh_Hans_CN, but the catalogue folder has no
        # script subtag.
        name = locale.language
        if locale.territory:
            name = f"{name}_{locale.territory}"
        return self.translations_for(name)


class UIBabel(Babel):
    """Flask-Babel with the in-memory ``CompiledDomain`` as its default domain."""

    def __init__(self, domain: CompiledDomain) -> None:
        super().__init__()
        self.compiled_domain = domain

    @property
    def domain_instance(self) -> Domain:
        return self.compiled_domain


def request_locale() -> str:
    """Return the locale of the current request, in metadata spelling.

    The order is: ``?lang=`` on this request, the signed-in user's saved
    locale, a ``?lang=`` choice stored in the session, then the best match
    of ``Accept-Language``. The web views set ``g.locale`` once they know
    the user, and this function returns it from then on.
    """
    chosen = g.get("locale")
    if chosen:
        return str(chosen)
    requested = requested_locale()
    if requested:
        return requested
    actor = g.get("actor")
    if actor is not None and actor.locale:
        return normalize_locale(actor.locale)
    stored = session.get(SESSION_LOCALE_KEY)
    if stored:
        return normalize_locale(str(stored))
    return accepted_locale()


def requested_locale() -> str | None:
    """Return the locale asked for with ``?lang=``, or None if none or unknown."""
    raw = request.args.get("lang", "").strip()
    if not raw:
        return None
    locale = normalize_locale(raw)
    if locale not in UI_LOCALES:
        return None
    return locale


def accepted_locale() -> str:
    """Return the best ``Accept-Language`` match among the UI locales."""
    match = request.accept_languages.best_match(
        ["en", "zh-CN", "zh", "zh-Hans", "zh-SG"], default=DEFAULT_LOCALE
    )
    return normalize_locale(match)


def select_babel_locale() -> str:
    return babel_name(request_locale())


def init_i18n(app: Flask) -> CompiledDomain:
    """Install Flask-Babel with the in-memory catalogues and locale selector."""
    domain = CompiledDomain()
    babel = UIBabel(domain)
    babel.init_app(app, default_locale=DEFAULT_LOCALE,
                   locale_selector=select_babel_locale)
    app.extensions["metacrm_translations"] = domain
    return domain
