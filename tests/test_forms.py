"""Record forms generated from metadata: inputs per type and mode, labels,
CSRF, and the mapping of record-service errors back onto inputs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, g
from flask_babel import refresh
from werkzeug.datastructures import MultiDict
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    DecimalField,
    EmailField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    TelField,
    TextAreaField,
    URLField,
)
from wtforms import Field as FormField

from metadata_engine.loader import compile_documents
from metadata_engine.model import Entity
from renderers import forms
from tests.conftest import ROOT
from tests.definitions.builders import documents, entity, field

ALL_TYPES = ROOT / "tests" / "definitions" / "all_types"


@pytest.fixture
def sample() -> Entity:
    from metadata_engine.loader import load_definition

    return load_definition(ALL_TYPES).entity("sample")


@pytest.fixture
def request_context(app: Flask) -> Iterator[None]:
    with app.test_request_context("/"):
        g.locale = "en"
        yield


@pytest.fixture
def chinese_context(app: Flask) -> Iterator[None]:
    with app.test_request_context("/"):
        g.locale = "zh-CN"
        refresh()
        yield


def post_context(app: Flask, data: MultiDict[str, str]) -> Any:
    return app.test_request_context("/", method="POST", data=data)


def bound(form: forms.RecordForm, name: str) -> FormField:
    result = form.input_for(name)
    assert result is not None, name
    return result


def entity_of(*fields: dict[str, Any], **changes: Any) -> Entity:
    definition = compile_documents(documents(entity("thing", *fields, **changes)))
    return definition.entity("thing")


# Inputs per field type


@pytest.mark.parametrize(("name", "field_class"), [
    ("title", StringField),
    ("notes", TextAreaField),
    ("quantity", IntegerField),
    ("ratio", DecimalField),
    ("price", DecimalField),
    ("discount", DecimalField),
    ("active", BooleanField),
    ("due_on", DateField),
    ("happened_at", DateTimeLocalField),
    ("email", EmailField),
    ("phone", TelField),
    ("website", URLField),
    ("colour", SelectField),
    ("tags", SelectMultipleField),
    ("target", SelectField),
])
def test_input_class_per_type(
    sample: Entity, request_context: None, name: str, field_class: type
) -> None:
    form = forms.record_form_class(sample, "create", "en")(formdata=None)
    assert type(bound(form, name)) is field_class


def test_read_only_fields_have_no_input(sample: Entity, request_context: None) -> None:
    form = forms.record_form_class(sample, "edit", "en")(formdata=None)
    assert form.input_for("serial") is None
    assert form.input_for("legacy_code") is None


def test_inputs_follow_form_modes(request_context: None) -> None:
    thing = entity_of(
        field("secret"),
        form={"sections": [{"label": "Main", "columns": 1, "fields": [
            "name", {"field": "secret", "modes": ["edit", "detail"]}]}]},
    )
    create = forms.record_form_class(thing, "create", "en")(formdata=None)
    edit = forms.record_form_class(thing, "edit", "en")(formdata=None)
    assert create.input_for("secret") is None
    assert edit.input_for("secret") is not None


def test_detail_mode_rejected(sample: Entity) -> None:
    with pytest.raises(ValueError, match="invalid form mode 'detail'"):
        forms.record_form_class(sample, "detail", "en")


def test_inputs_prefixed_against_collisions(request_context: None) -> None:
    thing = entity_of(field("data"), field("errors"), field("meta"))
    form = forms.record_form_class(thing, "create", "en")(formdata=None)
    assert bound(form, "data").name == "f_data"
    assert isinstance(form.errors, dict)


def test_unknown_type_has_no_converter() -> None:
    with pytest.raises(LookupError, match="no form converter for field type 'geo'"):
        forms.converter_for("geo")


def test_registered_converter_used(request_context: None) -> None:
    class ShoutingConverter(forms.FieldConverter):
        def submitted(self, field: Any, raw: Any) -> Any:
            text = super().submitted(field, raw)
            return text.upper() if text else text

    original = forms.converter_for("text")
    forms.register_converter("text", ShoutingConverter())
    try:
        thing = entity_of()
        form = forms.record_form_class(thing, "create", "en")(formdata=None)
        values = forms.submitted_values(form, MultiDict({"f_name": "quiet"}))
    finally:
        forms.register_converter("text", original)
    assert values == {"name": "QUIET"}


def test_form_classes_cached_per_hash(sample: Entity) -> None:
    first = forms.record_form_class(sample, "create", "en", "hash-1")
    again = forms.record_form_class(sample, "create", "en", "hash-1")
    other = forms.record_form_class(sample, "create", "zh-CN", "hash-1")
    assert first is again
    assert first is not other


# Labels, attributes and choices


def test_required_and_maxlength_rendered(sample: Entity, request_context: None) -> None:
    form = forms.record_form_class(sample, "create", "en")(formdata=None)
    html = str(bound(form, "title")())
    assert "required" in html
    assert 'maxlength="20"' in html


def test_number_attributes_rendered(sample: Entity, request_context: None) -> None:
    form = forms.record_form_class(sample, "create", "en")(formdata=None)
    ratio = str(bound(form, "ratio")())
    assert 'step="0.0001"' in ratio
    assert 'min="-1"' in ratio
    assert 'max="1"' in ratio


def test_help_text_is_description(sample: Entity, request_context: None) -> None:
    form = forms.record_form_class(sample, "create", "en")(formdata=None)
    assert bound(form, "code").description == "Two capitals, two digits."


def test_labels_in_chinese(sample: Entity, chinese_context: None) -> None:
    form = forms.record_form_class(sample, "create", "zh-CN")(formdata=None)
    assert bound(form, "colour").label.text == "颜色"
    assert bound(form, "title").label.text == "标题"


def test_picklist_options_in_chinese(sample: Entity, chinese_context: None) -> None:
    form = forms.record_form_class(sample, "create", "zh-CN")(formdata=None)
    labels = [choice.label for choice in bound(form, "colour").choices]
    assert labels == ["—", "红", "绿", "蓝"]


def test_required_picklist_with_default(request_context: None) -> None:
    thing = entity_of(field("size", "picklist", required=True, default="s",
                            options=[{"value": "s", "label": "S"},
                                     {"value": "m", "label": "M"}]))
    form = forms.record_form_class(thing, "create", "en")(formdata=None)
    assert [choice.value for choice in bound(form, "size").choices] == ["s", "m"]


def test_lookup_choices_keep_current(sample: Entity, request_context: None) -> None:
    form = forms.record_form_class(sample, "edit", "en")(formdata=None)
    forms.fill_lookup_choices(
        form,
        lambda target, limit: [("t1", "One"), ("t2", "Two")],
        {"target": "t9"},
        {"target": {"t9": "Nine"}},
    )
    values = [(choice.value, choice.label) for choice in bound(form, "target").choices]
    assert values == [("", "—"), ("t9", "Nine"), ("t1", "One"), ("t2", "Two")]


def test_lookup_choices_limited(sample: Entity, request_context: None) -> None:
    form = forms.record_form_class(sample, "create", "en")(formdata=None)
    limits: list[int] = []

    def search(target: str, limit: int) -> list[tuple[str, str]]:
        limits.append(limit)
        return []

    forms.fill_lookup_choices(form, search, {}, {})
    assert limits == [forms.LOOKUP_CHOICE_LIMIT]


# Values in and out


def test_initial_data_shows_record(sample: Entity, request_context: None) -> None:
    import datetime as dt
    from decimal import Decimal

    form_class = forms.record_form_class(sample, "edit", "en")
    record = {"title": "T", "ratio": Decimal("0.5"), "active": True,
              "due_on": dt.date(2030, 1, 2), "tags": ["beta"],
              "happened_at": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)}
    data = forms.initial_formdata(form_class, record, version=3)
    assert data["f_ratio"] == "0.5000"
    assert data["f_active"] == "y"
    assert data["f_due_on"] == "2030-01-02"
    assert data["f_happened_at"] == "2024-01-02T03:04:05"
    assert data.getlist("f_tags") == ["beta"]
    assert data["record_version"] == "3"


def test_create_leaves_out_empty(sample: Entity, request_context: None) -> None:
    form = forms.record_form_class(sample, "create", "en")(formdata=None)
    values = forms.submitted_values(form, MultiDict({"f_title": "T", "f_code": " "}))
    assert values == {"title": "T", "active": False}


def test_edit_sends_none_for_empty(sample: Entity, request_context: None) -> None:
    form = forms.record_form_class(sample, "edit", "en")(formdata=None)
    values = forms.submitted_values(form, MultiDict({"f_title": "T"}))
    assert values["code"] is None
    assert values["tags"] is None
    assert values["target"] is None


def test_changed_values_skip_unchanged(sample: Entity, request_context: None) -> None:
    from decimal import Decimal

    form = forms.record_form_class(sample, "edit", "en")(formdata=None)
    record = {"title": "T", "ratio": Decimal("0.5"), "active": False}
    submitted = MultiDict({"f_title": "T", "f_ratio": "0.5000", "f_code": "AB12"})
    assert forms.changed_values(form, submitted, record) == {"code": "AB12"}


def test_text_area_line_breaks_normalised(sample: Entity, request_context: None
                                          ) -> None:
    form = forms.record_form_class(sample, "create", "en")(formdata=None)
    values = forms.submitted_values(form, MultiDict({"f_notes": "a\r\nb"}))
    assert values["notes"] == "a\nb"


def test_submitted_version_parsed() -> None:
    assert forms.submitted_version(MultiDict({"record_version": "7"})) == 7
    assert forms.submitted_version(MultiDict({"record_version": "x"})) is None
    assert forms.submitted_version(MultiDict()) is None


# CSRF and errors


def test_csrf_missing_rejected(app: Flask, sample: Entity) -> None:
    with post_context(app, MultiDict({"f_title": "T"})):
        form = forms.record_form_class(sample, "create", "en")()
        assert forms.csrf_valid(form) is False


def test_csrf_token_accepted(app: Flask, sample: Entity) -> None:
    from flask_wtf.csrf import generate_csrf

    with post_context(app, MultiDict()):
        token = generate_csrf()
        form_class = forms.record_form_class(sample, "create", "en")
        form = form_class(formdata=MultiDict({"csrf_token": token}))
        assert forms.csrf_valid(form) is True


def test_csrf_token_of_other_session(app: Flask, sample: Entity) -> None:
    from flask_wtf.csrf import generate_csrf

    with app.test_request_context("/"):
        token = generate_csrf()
    with post_context(app, MultiDict({"csrf_token": token})):
        form = forms.record_form_class(sample, "create", "en")()
        assert forms.csrf_valid(form) is False


def test_errors_land_on_inputs(sample: Entity, request_context: None) -> None:
    form = forms.record_form_class(sample, "create", "en")(formdata=None)
    leftover = forms.apply_errors(form, {
        "title": ["This field is required."],
        "serial": ["This field is read-only and cannot be written."],
        "_schema": ["Broken."],
    })
    assert bound(form, "title").errors == ["This field is required."]
    assert leftover == ["Serial: This field is read-only and cannot be written.",
                        "Broken."]
    assert form.record_errors == leftover


def test_login_password_autocomplete(request_context: None) -> None:
    form = forms.LoginForm(formdata=None)
    assert 'autocomplete="current-password"' in str(form.password())
