"""WTForms forms generated from entity metadata.

One form class is built per (entity, mode, locale): one WTForms field per
metadata field of the form's sections in that mode, made by a converter
registered for the field's type. The forms only render inputs and carry the
CSRF token. They do not validate record values: the submitted strings go to
``RecordService`` unchanged, so the entity's marshmallow schema stays the one
validator, and its messages (already in the user's locale) are put back on
the fields with ``apply_errors``.

Record inputs are named ``f_<field name>``. The prefix keeps metadata field
names such as ``data`` or ``errors`` from colliding with attributes of the
WTForms ``Form`` class, and with ``csrf_token`` and ``record_version``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    DecimalField,
    EmailField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TelField,
    TextAreaField,
    URLField,
)
from wtforms import Field as FormField
from wtforms.fields.core import UnboundField
from wtforms.widgets import CheckboxInput, ListWidget

from metadata_engine.model import Definition, Entity, Field

from . import current_role
from .formatting import field_scale

INPUT_PREFIX = "f_"
VERSION_FIELD = "record_version"
#: Maximum length of a text input whose field declares no ``max_length``,
#: as the metadata format defines it: 255 for text, 100000 for long text.
DEFAULT_TEXT_LENGTH = 255
DEFAULT_LONG_TEXT_LENGTH = 100_000
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
DATETIME_FORMATS = [DATETIME_FORMAT, "%Y-%m-%dT%H:%M"]
#: Maximum number of records a lookup select lists, besides the current value.
LOOKUP_CHOICE_LIMIT = 200


def input_name(field_name: str) -> str:
    """Return the HTML name of the input for metadata field ``field_name``."""
    return INPUT_PREFIX + field_name


class RecordForm(FlaskForm):
    """Base of every generated record form."""

    record_version = HiddenField()

    entity: ClassVar[Entity]
    mode: ClassVar[str]
    locale: ClassVar[str]
    #: The metadata fields that have an input, in form order.
    input_fields: ClassVar[tuple[Field, ...]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Messages that belong to no single input, shown above the form.
        self.record_errors: list[str] = []

    def input_for(self, field_name: str) -> FormField | None:
        """Return the bound input of a metadata field, or None if it has none."""
        name = input_name(field_name)
        if name not in self._fields:
            return None
        return self._fields[name]


class FieldConverter:
    """Builds the input of one field type and converts its submitted text.

    ``initial`` turns a record value into the strings the input shows, and
    ``submitted`` turns what the browser sends back into the value passed to
    the record service: a string, a bool, a list, or None for an empty input.
    """

    def build(self, field: Field, locale: str, mode: str) -> UnboundField:
        return StringField(**self.arguments(field, locale, mode))

    def arguments(self, field: Field, locale: str, mode: str) -> dict[str, Any]:
        """Return the label, description and HTML attributes every input gets."""
        render_kw: dict[str, Any] = {}
        if field.required and field.type != "boolean":
            render_kw["required"] = True
        render_kw.update(self.html_attributes(field))
        description = field.help_text.get(locale) if field.help_text else ""
        return {
            "label": field.label.get(locale),
            "description": description,
            "render_kw": render_kw,
        }

    def html_attributes(self, field: Field) -> dict[str, Any]:
        return {"maxlength": field.max_length or DEFAULT_TEXT_LENGTH}

    def initial(self, field: Field, value: Any) -> list[str]:
        if value is None:
            return []
        return [str(value)]

    def submitted(self, field: Field, raw: Sequence[str]) -> Any:
        text = raw[0] if raw else ""
        if text.strip() == "":
            return None
        return text


class LongTextConverter(FieldConverter):
    def build(self, field: Field, locale: str, mode: str) -> UnboundField:
        arguments = self.arguments(field, locale, mode)
        arguments["render_kw"]["rows"] = 5
        return TextAreaField(**arguments)

    def html_attributes(self, field: Field) -> dict[str, Any]:
        return {"maxlength": field.max_length or DEFAULT_LONG_TEXT_LENGTH}

    def submitted(self, field: Field, raw: Sequence[str]) -> Any:
        # Browsers send text area line breaks as CRLF, and records store LF.
        text = super().submitted(field, raw)
        return text.replace("\r\n", "\n") if text is not None else None


class FixedLengthConverter(FieldConverter):
    """Text-like types whose length limit is fixed by the type."""

    def __init__(self, field_class: type[FormField], max_length: int) -> None:
        self.field_class = field_class
        self.max_length = max_length

    def build(self, field: Field, locale: str, mode: str) -> UnboundField:
        return self.field_class(**self.arguments(field, locale, mode))

    def html_attributes(self, field: Field) -> dict[str, Any]:
        return {"maxlength": self.max_length}

    def submitted(self, field: Field, raw: Sequence[str]) -> Any:
        text = super().submitted(field, raw)
        return text.strip() if text is not None else None


class IntegerConverter(FieldConverter):
    def build(self, field: Field, locale: str, mode: str) -> UnboundField:
        return IntegerField(**self.arguments(field, locale, mode))

    def html_attributes(self, field: Field) -> dict[str, Any]:
        return range_attributes(field, step="1")

    def submitted(self, field: Field, raw: Sequence[str]) -> Any:
        text = super().submitted(field, raw)
        return text.strip() if text is not None else None


class DecimalConverter(FieldConverter):
    """Decimal, currency and percent: a number input with the field's places."""

    def build(self, field: Field, locale: str, mode: str) -> UnboundField:
        return DecimalField(places=field_scale(field), **self.arguments(
            field, locale, mode))

    def html_attributes(self, field: Field) -> dict[str, Any]:
        scale = field_scale(field)
        step = "1" if scale == 0 else "0." + "0" * (scale - 1) + "1"
        return range_attributes(field, step=step)

    def initial(self, field: Field, value: Any) -> list[str]:
        if value is None:
            return []
        number = decimal.Decimal(str(value))
        exponent = decimal.Decimal(1).scaleb(-field_scale(field))
        return [str(number.quantize(exponent))]

    def submitted(self, field: Field, raw: Sequence[str]) -> Any:
        text = super().submitted(field, raw)
        return text.strip() if text is not None else None


class BooleanConverter(FieldConverter):
    def build(self, field: Field, locale: str, mode: str) -> UnboundField:
        return BooleanField(**self.arguments(field, locale, mode))

    def html_attributes(self, field: Field) -> dict[str, Any]:
        return {}

    def initial(self, field: Field, value: Any) -> list[str]:
        return ["y"] if value else []

    def submitted(self, field: Field, raw: Sequence[str]) -> Any:
        # An unchecked checkbox sends nothing, so it cannot express "unknown".
        return bool(raw) and raw[0] not in ("", "false")


class DateConverter(FieldConverter):
    def build(self, field: Field, locale: str, mode: str) -> UnboundField:
        return DateField(**self.arguments(field, locale, mode))

    def html_attributes(self, field: Field) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        if field.minimum is not None:
            attributes["min"] = str(field.minimum)
        if field.maximum is not None:
            attributes["max"] = str(field.maximum)
        return attributes

    def initial(self, field: Field, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, dt.date):
            return [value.isoformat()]
        return [str(value)]

    def submitted(self, field: Field, raw: Sequence[str]) -> Any:
        text = super().submitted(field, raw)
        return text.strip() if text is not None else None


class DateTimeConverter(FieldConverter):
    """A ``datetime-local`` input whose value is read and written in UTC."""

    def build(self, field: Field, locale: str, mode: str) -> UnboundField:
        return DateTimeLocalField(format=DATETIME_FORMATS,
                                  **self.arguments(field, locale, mode))

    def html_attributes(self, field: Field) -> dict[str, Any]:
        return {"step": "1"}

    def initial(self, field: Field, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return [value.strftime(DATETIME_FORMAT)]

    def submitted(self, field: Field, raw: Sequence[str]) -> Any:
        text = super().submitted(field, raw)
        return text.strip() if text is not None else None


class PicklistConverter(FieldConverter):
    def build(self, field: Field, locale: str, mode: str) -> UnboundField:
        choices = option_choices(field, locale)
        if not field.required or field.default is None:
            choices.insert(0, SelectChoice("", "—"))
        return SelectField(choices=choices, validate_choice=False,
                           **self.arguments(field, locale, mode))

    def html_attributes(self, field: Field) -> dict[str, Any]:
        """Tell app.js which options a dependent picklist offers for each
        value of its controlling field; the server checks them anyway."""
        if not field.depends_on:
            return {}
        return {
            "data-depends-on": input_name(field.depends_on),
            "data-dependent-options": json.dumps(
                {key: list(allowed) for key, allowed in field.dependent_options.items()}
            ),
        }


class MultiPicklistConverter(FieldConverter):
    """A list of check boxes, one per option."""

    def build(self, field: Field, locale: str, mode: str) -> UnboundField:
        choices = option_choices(field, locale)
        arguments = self.arguments(field, locale, mode)
        # A required attribute on every box would demand all of them.
        arguments["render_kw"].pop("required", None)
        return SelectMultipleField(
            choices=choices,
            validate_choice=False,
            widget=ListWidget(prefix_label=False),
            option_widget=CheckboxInput(),
            **arguments,
        )

    def html_attributes(self, field: Field) -> dict[str, Any]:
        return {}

    def initial(self, field: Field, value: Any) -> list[str]:
        return [str(item) for item in value or []]

    def submitted(self, field: Field, raw: Sequence[str]) -> Any:
        values = [item for item in raw if item != ""]
        return values or None


class LookupConverter(FieldConverter):
    """A select of target records, whose options ``fill_lookup_choices`` adds."""

    def build(self, field: Field, locale: str, mode: str) -> UnboundField:
        return SelectField(choices=[], validate_choice=False,
                           **self.arguments(field, locale, mode))

    def html_attributes(self, field: Field) -> dict[str, Any]:
        return {}


def option_choices(field: Field, locale: str) -> list[SelectChoice]:
    return [SelectChoice(option.value, option.label.get(locale))
            for option in field.options]


def range_attributes(field: Field, step: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {"step": step}
    if field.minimum is not None:
        attributes["min"] = str(field.minimum)
    if field.maximum is not None:
        attributes["max"] = str(field.maximum)
    return attributes


_CONVERTERS: dict[str, FieldConverter] = {}


def register_converter(type_name: str, converter: FieldConverter) -> None:
    """Add or replace the form converter for fields of ``type_name``."""
    _CONVERTERS[type_name] = converter


def converter_for(type_name: str) -> FieldConverter:
    try:
        return _CONVERTERS[type_name]
    except KeyError:
        raise LookupError(
            f"no form converter for field type {type_name!r}: register one with "
            "renderers.forms.register_converter"
        ) from None


register_converter("text", FieldConverter())
register_converter("long_text", LongTextConverter())
register_converter("integer", IntegerConverter())
for _decimal_type in ("decimal", "currency", "percent"):
    register_converter(_decimal_type, DecimalConverter())
register_converter("boolean", BooleanConverter())
register_converter("date", DateConverter())
register_converter("datetime", DateTimeConverter())
register_converter("email", FixedLengthConverter(EmailField, 254))
register_converter("phone", FixedLengthConverter(TelField, 40))
register_converter("url", FixedLengthConverter(URLField, 2048))
register_converter("picklist", PicklistConverter())
register_converter("multi_picklist", MultiPicklistConverter())
register_converter("lookup", LookupConverter())


# Form classes


def input_fields(
    entity: Entity, mode: str, locked: frozenset[str] = frozenset()
) -> tuple[Field, ...]:
    """Return the writable fields that get an input in ``mode``, in form order.

    ``locked`` names the fields the user may not change (hidden or read-only
    for their role): they get no input, and values posted for them are
    ignored because only inputs are read back.
    """
    names = entity.form.fields_for(mode)
    seen: set[str] = set()
    fields: list[Field] = []
    for name in names:
        if name in seen or name in locked or not entity.has_field(name):
            continue
        seen.add(name)
        field = entity.field(name)
        if field.writable:
            fields.append(field)
    return tuple(fields)


def workflow_fields(definition: Definition, entity_name: str) -> frozenset[str]:
    """Return the fields of ``entity_name`` that store a workflow's state.

    Forms pass them in ``locked``, so they render read-only: the record
    service rejects any change of them outside a workflow transition.
    """
    return frozenset(w.field for w in definition.workflows_for(entity_name))


_FORM_CLASSES: dict[tuple[Any, ...], type[RecordForm]] = {}
_FORM_CLASSES_LOCK = threading.Lock()
#: Maximum number of cached form classes; a full cache is cleared.
MAX_CACHED_FORM_CLASSES = 512


def record_form_class(
    entity: Entity,
    mode: str,
    locale: str,
    definition_hash: str = "",
    locked: frozenset[str] = frozenset(),
) -> type[RecordForm]:
    """Return the form class of ``entity`` in ``mode`` (create or edit).

    ``locked`` names the fields that get no input (see ``input_fields``).
    Classes are cached by ``definition_hash``, entity, mode, locale and the
    locked fields, so a changed definition gets new classes. Without a hash
    nothing is cached.
    """
    if mode not in ("create", "edit"):
        raise ValueError(f"invalid form mode {mode!r}: use 'create' or 'edit'")
    key = (definition_hash, entity.name, mode, locale, tuple(sorted(locked)))
    if definition_hash:
        cached = _FORM_CLASSES.get(key)
        if cached is not None:
            return cached
    form_class = build_form_class(entity, mode, locale, locked)
    if definition_hash:
        with _FORM_CLASSES_LOCK:
            if len(_FORM_CLASSES) >= MAX_CACHED_FORM_CLASSES:
                _FORM_CLASSES.clear()
            _FORM_CLASSES[key] = form_class
    return form_class


def build_form_class(
    entity: Entity, mode: str, locale: str, locked: frozenset[str] = frozenset()
) -> type[RecordForm]:
    fields = input_fields(entity, mode, locked)
    attributes: dict[str, Any] = {
        "entity": entity,
        "mode": mode,
        "locale": locale,
        "input_fields": fields,
    }
    for field in fields:
        converter = converter_for(field.type)
        attributes[input_name(field.name)] = converter.build(field, locale, mode)
    class_name = f"{entity.name.title().replace('_', '')}{mode.title()}Form"
    return type(class_name, (RecordForm,), attributes)


def initial_formdata(
    form_class: type[RecordForm],
    values: Mapping[str, Any],
    version: int | None = None,
) -> MultiDict[str, str]:
    """Return the form data that shows ``values`` (record or default values)."""
    data: MultiDict[str, str] = MultiDict()
    role = current_role()
    for field in form_class.input_fields:
        if field.name not in values or field.masked_for(role):
            continue
        for text in converter_for(field.type).initial(field, values[field.name]):
            data.add(input_name(field.name), text)
    if version is not None:
        data.add(VERSION_FIELD, str(version))
    return data


def default_values(entity: Entity) -> dict[str, Any]:
    """Return the metadata defaults, which a create form starts with."""
    return {field.name: field.default for field in entity.fields
            if field.default is not None}


# Submission


def submitted_values(form: RecordForm, formdata: MultiDict[str, str]) -> dict[str, Any]:
    """Convert a submitted form into the input of the record service.

    A create leaves empty inputs out, so that metadata defaults and the
    "required" message apply. An edit sends None for an emptied input, which
    clears the field.
    """
    values: dict[str, Any] = {}
    for field in form.input_fields:
        converter = converter_for(field.type)
        raw = formdata.getlist(input_name(field.name))
        value = converter.submitted(field, raw)
        if form.mode == "create" and value is None:
            continue
        values[field.name] = value
    return values


def changed_values(
    form: RecordForm, formdata: MultiDict[str, str], record: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the submitted values that differ from what the form showed.

    An edit sends only these, so that it writes only what the user changed.
    A sensitive field masked for the member was shown empty, so leaving it
    empty keeps the stored value.
    """
    submitted = submitted_values(form, formdata)
    changed: dict[str, Any] = {}
    role = current_role()
    for field in form.input_fields:
        if field.masked_for(role):
            if submitted.get(field.name) is not None:
                changed[field.name] = submitted[field.name]
            continue
        converter = converter_for(field.type)
        shown_text = converter.initial(field, record.get(field.name))
        shown = converter.submitted(field, shown_text)
        if submitted.get(field.name) != shown:
            changed[field.name] = submitted.get(field.name)
    return changed


def submitted_version(formdata: MultiDict[str, str]) -> int | None:
    """Return the record version the edit form was rendered with."""
    raw = (formdata.get(VERSION_FIELD) or "").strip()
    if not raw.isdigit():
        return None
    return int(raw)


def csrf_valid(form: FlaskForm) -> bool:
    """Return whether the CSRF token is valid, without checking other inputs."""
    token_field = getattr(form, "csrf_token", None)
    if token_field is None:
        return True
    return bool(token_field.validate(form))


def apply_errors(form: RecordForm, details: Mapping[str, Any]) -> list[str]:
    """Put the messages of ``details`` on the inputs they name.

    Returns the messages that belong to no input of this form (schema-level
    errors, read-only fields), for the top of the form.
    """
    leftover: list[str] = []
    for key, messages in details.items():
        texts = [str(message) for message in as_list(messages)]
        bound = form.input_for(str(key))
        if bound is None:
            label = field_label(form.entity, str(key), form.locale)
            leftover.extend(f"{label}: {text}" if label else text for text in texts)
            continue
        bound.errors = [*bound.errors, *texts]
    form.record_errors.extend(leftover)
    return leftover


def field_label(entity: Entity, name: str, locale: str) -> str:
    if entity.has_field(name):
        return entity.field(name).label.get(locale)
    if name.startswith("_"):
        return ""
    return name


def as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


# Lookup choices


def fill_lookup_choices(
    form: RecordForm,
    search: Callable[[str, int], Sequence[tuple[str, str]]],
    current: Mapping[str, Any],
    titles: Mapping[str, Mapping[str, str]],
) -> None:
    """Fill each lookup select with up to ``LOOKUP_CHOICE_LIMIT`` targets.

    ``search(target, limit)`` returns ``(id, title)`` pairs. The record's
    current value is always an option, even beyond the limit.

    NOTE: a select of 200 records is a stopgap. Tenants with more target
    records need a search-as-you-type picker.
    """
    for field in form.input_fields:
        if field.type != "lookup" or not field.target:
            continue
        bound = form.input_for(field.name)
        if bound is None:
            continue
        pairs: list[tuple[str, str]] = list(search(field.target, LOOKUP_CHOICE_LIMIT))
        known = {record_id for record_id, _ in pairs}
        for value in as_list(current.get(field.name)):
            if value and value not in known:
                title = titles.get(field.name, {}).get(value, value)
                pairs.insert(0, (value, title))
                known.add(value)
        choices = [SelectChoice("", "—")]
        choices.extend(SelectChoice(record_id, title) for record_id, title in pairs)
        bound.choices = choices


# Small forms


class ActionForm(FlaskForm):
    """A form with only a CSRF token: sign out, delete."""


class LoginForm(FlaskForm):
    """The sign-in form, whose translated labels the template supplies."""

    email = EmailField(render_kw={"autocomplete": "username", "required": True,
                                  "maxlength": 254})
    password = PasswordField(render_kw={"autocomplete": "current-password",
                                        "required": True, "maxlength": 1024})


def login_values(form: LoginForm) -> tuple[str, str]:
    return (str(form.email.data or "").strip(), str(form.password.data or ""))

