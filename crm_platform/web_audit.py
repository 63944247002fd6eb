"""Pages over the change journal and personal data: a record's history, the
audit log search, and a person's data export and erasure.

The routes belong to the ``web`` blueprint, so its sign-in, tenant status
and locale handling apply; importing this module adds them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from flask import Response, g, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext

from renderers import forms, listing

from . import audit, journal, personal_data
from .auth import record_service
from .context import get_platform
from .errors import BadQuery, NotFound
from .records import RecordService
from .web import blueprint, expired_form_message

log = logging.getLogger(__name__)


@blueprint.route("/t/<tenant>/<entity>/<record_id>/history")
def record_history(tenant: str, entity: str, record_id: str) -> ResponseReturnValue:
    """Show the record's change journal, newest first."""
    metadata = g.runtime.entity(entity)
    service = record_service(g.locale)
    record = service.get(metadata.name, record_id)
    before = audit.parse_int(request.args, "before_seq")
    entries = audit.record_history(g.runtime, metadata.name, record_id, before,
                                   service.access(metadata.name).hidden)
    rows = audit.describe(get_platform(), g.runtime, entries, g.locale,
                          record_service(g.locale).titles)
    older = audit.next_before_seq(entries, audit.PAGE_SIZE)
    return render_template("crm/history.html", entity=metadata, record=record,
                           rows=rows, older=older)


@blueprint.route("/t/<tenant>/audit")
def audit_log(tenant: str) -> ResponseReturnValue:
    """Search the tenant's change journal: tenant admins only."""
    audit.require_audit_access(g.runtime, g.actor)
    error = None
    entries: list[journal.Entry] = []
    query = journal.AuditQuery(limit=audit.PAGE_SIZE)
    try:
        query = audit.parse_query(request.args, g.runtime.definition,
                                  get_platform().control.find_user_id)
        entries = audit.search(g.runtime, query)
    except BadQuery as err:
        error = err.message
    rows = audit.describe(get_platform(), g.runtime, entries, g.locale,
                          record_service(g.locale).titles)
    older = audit.next_before_seq(entries, query.limit)
    older_url = None
    if older is not None:
        older_url = listing.url_with(url_for("web.audit_log", tenant=tenant),
                                     request.args, before_seq=str(older))
    return render_template("crm/audit.html", rows=rows, error=error,
                           filters=request.args, older_url=older_url,
                           actions=journal.ACTIONS,
                           entities=g.runtime.definition.entities)


@blueprint.route("/t/<tenant>/personal-data")
def personal_data_page(tenant: str) -> ResponseReturnValue:
    """Find a person by e-mail or record and offer export and erasure."""
    service = record_service(g.locale)
    personal_data.require_admin(service)
    found, error = find_person(service)
    form = forms.ActionForm()
    return render_template("crm/personal_data.html", found=found, error=error,
                           form=form, filters=request.args, erased=None)


@blueprint.route("/t/<tenant>/personal-data/export")
def personal_data_export(tenant: str) -> ResponseReturnValue:
    """Download everything about one person as a JSON file."""
    service = record_service(g.locale)
    personal_data.require_admin(service)
    found, error = find_person(service)
    if found is None:
        raise BadQuery(error or gettext("Name a person first."))
    document = personal_data.export_document(service, found)
    body = json.dumps(document, ensure_ascii=False, indent=2)
    response = Response(body, mimetype="application/json")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="personal-data-{tenant}.json"'
    )
    return response


@blueprint.route("/t/<tenant>/personal-data/erase", methods=["POST"])
def personal_data_erase(tenant: str) -> ResponseReturnValue:
    """Erase the personal fields of one person's records, after confirmation."""
    service = record_service(g.locale)
    personal_data.require_admin(service)
    form = forms.ActionForm()
    found, error = find_person(service, request.form)
    if not forms.csrf_valid(form):
        return render_template("crm/personal_data.html", found=found,
                               error=expired_form_message(), form=form,
                               filters=request.form, erased=None), 400
    if found is not None and request.form.get("confirm") != "erase":
        error = gettext("Tick the box to confirm the erasure.")
    if found is None or error:
        return render_template("crm/personal_data.html", found=found, error=error,
                               form=form, filters=request.form, erased=None), 400
    report = personal_data.erase(service, found)
    return render_template("crm/personal_data.html", found=None, error=None,
                           form=form, filters={}, erased=report)


def find_person(
    service: RecordService, source: Mapping[str, str] | None = None
) -> tuple[personal_data.Found | None, str | None]:
    """Return the person named in ``source`` (else the query string) and
    None, or None and an error message. A request that names no one returns
    (None, None)."""
    values = source if source is not None else request.args
    email = (values.get("email") or "").strip()
    entity = (values.get("entity") or "").strip()
    record_id = (values.get("record_id") or "").strip()
    if not email and not (entity and record_id):
        return None, None
    try:
        return personal_data.find(service, email or None, entity or None,
                                  record_id or None), None
    except (BadQuery, NotFound) as err:
        return None, err.message
