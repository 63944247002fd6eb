"""Field expression options in the HTML user interface.

Record forms and detail pages hide the fields whose ``visible_when`` is
false, and edit forms show the fields whose ``read_only_when`` is true as
read-only. While the user types, ``app.js`` posts the form's inputs to the
``field_visibility`` endpoint here, which returns ``{field: visible}``.

Visibility is presentation, not a permission: the API returns every field
the user's field levels allow. Every expression here is evaluated on the
record as the user may read it. Fields hidden from the user and sensitive
values masked for them are null, so a visibility result never reveals them.

The routes and template globals belong to the ``web`` blueprint, so its
sign-in, tenant status and locale handling apply; importing this module
adds them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

from flask import Response, g, jsonify, request
from flask_wtf.csrf import validate_csrf
from marshmallow import ValidationError
from wtforms.validators import ValidationError as WTFormsValidationError

from metadata_engine.model import Entity
from metadata_engine.record_rules import field_expressions, read_only_fields, visibility
from renderers import forms

from .access import Access
from .api import read_json_object
from .auth import record_service
from .errors import PlatformError, RecordInvalid
from .web import blueprint

log = logging.getLogger(__name__)

#: Request header that carries the CSRF token of the page's form.
CSRF_HEADER = "X-CSRFToken"
#: Maximum number of values one input may post, more than any form sends.
MAX_VALUES_PER_INPUT = 1_000


@blueprint.route("/t/<tenant>/<entity>/field-visibility", methods=["POST"],
                 endpoint="field_visibility")
@blueprint.route("/t/<tenant>/<entity>/<record_id>/field-visibility",
                 methods=["POST"], endpoint="field_visibility")
def field_visibility(
    tenant: str, entity: str, record_id: str | None = None
) -> tuple[Response, int]:
    """Return ``{field: visible}`` for the form inputs in the JSON body.

    The body maps input names (``f_<field>``) to lists of strings, as the
    browser would submit the form, and an unchecked check box to an empty
    list. A field whose input the body leaves out keeps the stored value of
    record ``record_id``, or its metadata default without one. The user
    needs the read right on the entity, and on the record if one is given.
    """
    try:
        if record_id is not None:
            # A record the user cannot read is missing, whatever the token.
            record_service().get(entity, record_id)
        _check_csrf()
        body = read_json_object()
        return jsonify(_visibility_for(entity, record_id, body)), 200
    except PlatformError as error:
        log.info("rejected field visibility of %s in tenant %s: %s",
                 entity, g.runtime.slug, error.message)
        payload = {"error": {"code": error.code, "message": error.message,
                             "details": dict(error.details or {})}}
        return jsonify(payload), error.status


def _check_csrf() -> None:
    try:
        validate_csrf(request.headers.get(CSRF_HEADER))
    except WTFormsValidationError as err:
        raise RecordInvalid(
            f"invalid CSRF token: {err}; reload the page and try again",
            details={CSRF_HEADER: [str(err)]},
        ) from err


def _visibility_for(
    entity_name: str, record_id: str | None, body: Mapping[str, Any]
) -> dict[str, bool]:
    service = record_service(g.locale)
    access = service.require(entity_name, "read")
    entity = access.entity
    if not field_expressions(entity).visible:
        return {}
    if record_id:
        stored = service.get(entity.name, record_id)
    else:
        stored = forms.default_values(entity)
    values = _submitted(entity, access, body, "edit" if record_id else "create")
    typed = _typed(entity.name, values)
    record = {**stored, **typed}
    view = user_view(entity, access.hidden, record, typed)
    shown = visibility(entity, view, _user())
    return {name: visible for name, visible in shown.items()
            if name not in access.hidden}


def _submitted(
    entity: Entity, access: Access, body: Mapping[str, Any], mode: str
) -> dict[str, Any]:
    """Convert the posted inputs of the form in ``mode`` into the strings,
    lists and bools that the record service takes."""
    form_class = forms.record_form_class(
        entity, mode, g.locale, g.runtime.definition.content_hash,
        access.hidden | access.read_only,
    )
    values: dict[str, Any] = {}
    for field in form_class.input_fields:
        if forms.input_name(field.name) not in body:
            continue
        raw = body[forms.input_name(field.name)]
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or len(raw) > MAX_VALUES_PER_INPUT:
            raise RecordInvalid(
                f"invalid value of input {forms.input_name(field.name)!r}: "
                f"expected a list of at most {MAX_VALUES_PER_INPUT} strings",
                details={field.name: ["expected a list of strings"]},
            )
        texts = [item for item in raw if isinstance(item, str)]
        converter = forms.converter_for(field.type)
        values[field.name] = converter.submitted(field, texts)
    return values


def _typed(entity_name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Return the values that the entity's schema accepts, as Python values.

    A value the user is still typing may be invalid, such as ``12a`` in a
    number field: it is null here, and the save reports it.
    """
    schema = g.runtime.schema(entity_name, g.locale)
    try:
        return dict(schema.load(dict(values), partial=True))
    except ValidationError as err:
        valid = err.valid_data if isinstance(err.valid_data, dict) else {}
        return {name: valid.get(name) for name in values}


def user_view(
    entity: Entity,
    hidden: Collection[str],
    record: Mapping[str, Any],
    typed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return ``record`` as the current user may read it: the ``hidden``
    fields left out, and sensitive values masked for the user null unless
    the user typed them (``typed``)."""
    role = getattr(g.get("actor"), "role", None)
    view: dict[str, Any] = {}
    for name, value in record.items():
        if name in hidden:
            continue
        if entity.has_field(name) and entity.field(name).masked_for(role):
            value = (typed or {}).get(name)
        view[name] = value
    return view


def _user() -> dict[str, Any]:
    actor = g.actor
    return {"id": actor.user_id, "role": actor.role}


# Template globals


@blueprint.app_template_global()
def has_visibility_conditions(entity: Entity) -> bool:
    """Return True if a field of ``entity`` has ``visible_when``."""
    return bool(field_expressions(entity).visible)


@blueprint.app_template_global()
def fields_hidden_by_condition(
    entity: Entity,
    record: Mapping[str, Any] | None,
    hidden: Collection[str] = (),
) -> frozenset[str]:
    """Return the fields whose ``visible_when`` is false on ``record``, as
    the current user may read it without the ``hidden`` fields. A create
    form passes None, and the metadata defaults are evaluated instead."""
    if not field_expressions(entity).visible:
        return frozenset()
    values = record if record is not None else forms.default_values(entity)
    shown = visibility(entity, user_view(entity, hidden, values), _user())
    return frozenset(name for name, visible in shown.items() if not visible)


@blueprint.app_template_global()
def fields_read_only_by_condition(
    entity: Entity,
    record: Mapping[str, Any] | None,
    hidden: Collection[str] = (),
) -> frozenset[str]:
    """Return the fields whose ``read_only_when`` is true on the stored
    ``record``, which an edit form shows read-only."""
    if record is None or not field_expressions(entity).read_only:
        return frozenset()
    # NOTE: the record service evaluates the condition on the whole stored
    # record, and this on the record as the user may read it. A condition
    # that reads a field hidden from the user may differ, and the save
    # then reports the difference.
    return read_only_fields(entity, user_view(entity, hidden, record), _user())


@blueprint.app_template_global()
def stored_input_texts(field_name: str, entity: Entity, value: Any) -> list[str]:
    """Return the strings an input of the field shows for ``value``, which a
    read-only field posts back in hidden inputs so that its value does not
    count as changed."""
    field = entity.field(field_name)
    return forms.converter_for(field.type).initial(field, value)
