"""The JSON Schemas and how their errors read."""

from __future__ import annotations

import re

import pytest
from jsonschema import Draft202012Validator

from metadata_engine import fieldtypes
from metadata_engine.errors import DefinitionError
from metadata_engine.loader import compile_documents
from metadata_engine.schema_validation import (
    ENTITY_SCHEMA,
    MANIFEST_SCHEMA,
    field_properties,
    load_schema,
)
from tests.definitions.builders import documents, entity, field, problems_of

ACCOUNT = "entities/account.json"


def fails_with(docs: dict, text: str) -> None:
    """Assert that compiling ``docs`` reports a problem starting with ``text``."""
    with pytest.raises(DefinitionError, match="(?m)^  " + re.escape(text)):
        compile_documents(docs)


def list_view(**changes: object) -> dict:
    view: dict = {"name": "all", "label": "All", "columns": ["name"]}
    view.update(changes)
    return view


@pytest.mark.parametrize("file_name", [MANIFEST_SCHEMA, ENTITY_SCHEMA])
def test_schemas_are_valid_draft_2020_12(file_name: str) -> None:
    Draft202012Validator.check_schema(load_schema(file_name))


@pytest.mark.parametrize("file_name", [MANIFEST_SCHEMA, ENTITY_SCHEMA])
def test_schema_ids_use_invalid_domain(file_name: str) -> None:
    schema_id = load_schema(file_name)["$id"]
    assert schema_id == f"https://metacrm.invalid/schemas/{file_name}"


def test_schema_field_types_match_converters() -> None:
    enum = load_schema(ENTITY_SCHEMA)["$defs"]["field"]["properties"]["type"]["enum"]
    assert sorted(enum) == sorted(fieldtypes.names())


def test_schema_operators_match_api() -> None:
    ops = load_schema(ENTITY_SCHEMA)["$defs"]["filter"]["properties"]["op"]["enum"]
    assert tuple(ops) == fieldtypes.ALL_OPERATORS


def test_schemas_share_label_definition() -> None:
    manifest_label = load_schema(MANIFEST_SCHEMA)["$defs"]["label"]
    entity_label = load_schema(ENTITY_SCHEMA)["$defs"]["label"]
    assert manifest_label == entity_label


def test_type_specific_properties_per_type() -> None:
    allowed = field_properties()
    assert "pattern" in allowed["text"]
    assert "pattern" not in allowed["integer"]
    assert "currency_code" in allowed["currency"]
    assert "currency_code" not in allowed["decimal"]
    assert "target" in allowed["lookup"]
    assert "digits" in allowed["auto_number"]


def test_unknown_field_type_lists_types() -> None:
    docs = documents(entity("account", field("size", "strng")))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/type: unknown field type 'strng' in field 'size' "
        "(use one of: text, long_text, integer",
    )


def test_unknown_field_type_reports_once() -> None:
    docs = documents(entity("account", field("size", "strng", digits=3)))
    problems = problems_of(lambda: compile_documents(docs))
    assert len(problems) == 1


def test_property_of_other_type_rejected() -> None:
    docs = documents(entity("account", field("size", "integer", pattern="[0-9]+")))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/pattern: property 'pattern' is not allowed on field "
        "'size' of type 'integer' ('pattern' applies only to type(s) text; "
        "properties allowed for type 'integer': default,",
    )


def test_unknown_field_property_suggests_name() -> None:
    docs = documents(entity("account", field("code", max_lenght=3)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/max_lenght: unknown property 'max_lenght' in field "
        "'code' (did you mean 'max_length'? allowed properties:",
    )


def test_valid_type_specific_property_not_flagged() -> None:
    # A failing type-specific value makes jsonschema call the property
    # unevaluated. Only the range error may be reported.
    docs = documents(entity("account", field("code", max_length=0)))
    problems = problems_of(lambda: compile_documents(docs))
    assert [problem.pointer for problem in problems] == ["/fields/1/max_length"]


def test_wrong_json_type_names_expected() -> None:
    docs = documents(entity("account", field("code", max_length="12")))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/max_length: 'max_length' in field 'code' must be an "
        "integer, got '12' (change the value to an integer)",
    )


@pytest.mark.parametrize(
    ("changes", "pointer", "hint"),
    [
        ({"max_length": 0}, "max_length", "use a value from 1 to 10000"),
        ({"max_length": 10001}, "max_length", "use a value from 1 to 10000"),
    ],
)
def test_text_max_length_range(changes: dict, pointer: str, hint: str) -> None:
    docs = documents(entity("account", field("code", **changes)))
    value = changes[pointer]
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/{pointer}: '{pointer}' in field 'code' is {value}, "
        f"out of range ({hint})",
    )


def test_decimal_precision_range() -> None:
    docs = documents(entity("account", field("amount", "decimal", precision=39)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/precision: 'precision' in field 'amount' is 39, out "
        "of range (use a value from 1 to 38)",
    )


def test_auto_number_digits_range() -> None:
    docs = documents(entity("account", field("number", "auto_number", digits=13)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/digits: 'digits' in field 'number' is 13, out of range "
        "(use a value from 1 to 12)",
    )


def test_page_size_range() -> None:
    docs = documents(entity("account", list_views=[list_view(page_size=500)]))
    fails_with(
        docs,
        f"{ACCOUNT}#/list_views/0/page_size: 'page_size' in list view 'all' is 500, "
        "out of range (use a value from 1 to 200)",
    )


def test_picklist_without_options() -> None:
    docs = documents(entity("account", field("grade", "picklist")))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1: field 'grade' is missing required property 'options' "
        '(add "options": a non-empty list',
    )


def test_picklist_with_empty_options() -> None:
    docs = documents(entity("account", field("grade", "picklist", options=[])))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/options: 'options' in field 'grade' must not be empty "
        "(add at least one option)",
    )


def test_lookup_without_target() -> None:
    docs = documents(entity("account", field("parent", "lookup")))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1: field 'parent' is missing required property 'target'",
    )


def test_field_without_type() -> None:
    docs = documents(entity("account", {"name": "code", "label": "Code"}))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1: field 'code' is missing required property 'type' "
        '(add "type" with one of: text,',
    )


def test_entity_without_title_field() -> None:
    document = entity("account")
    del document["title_field"]
    fails_with(
        documents(document),
        f"{ACCOUNT}: the entity is missing required property 'title_field'",
    )


def test_entity_without_fields() -> None:
    docs = documents(entity("account", fields=[]))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields: 'fields' must not be empty (add at least one field)",
    )


def test_invalid_on_delete_lists_choices() -> None:
    lookup = field("parent", "lookup", target="account", on_delete="nothing")
    fails_with(
        documents(entity("account", lookup)),
        f"{ACCOUNT}#/fields/1/on_delete: invalid value 'nothing' for 'on_delete' in "
        "field 'parent' (use one of: restrict, set_null, cascade)",
    )


def test_invalid_filter_operator() -> None:
    condition = {"field": "name", "op": "like", "value": "a"}
    docs = documents(entity("account", list_views=[list_view(filters=[condition])]))
    fails_with(
        docs,
        f"{ACCOUNT}#/list_views/0/filters/0/op: invalid value 'like' for 'op' in list "
        "view 'all' (use one of: eq, ne,",
    )


def test_field_name_not_snake_case() -> None:
    docs = documents(entity("account", field("Code")))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/name: invalid value 'Code' for 'name' in field 'Code' "
        "(expected lower snake case",
    )


@pytest.mark.parametrize("name", ["a__b", "code_", "_code", "1code", "código"])
def test_bad_field_names_rejected(name: str) -> None:
    docs = documents(entity("account", field(name)))
    fails_with(docs, f"{ACCOUNT}#/fields/1/name: invalid value {name!r} for 'name'")


def test_field_name_too_long() -> None:
    name = "x" * 49
    docs = documents(entity("account", field(name)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/name: 'name' in field {name!r} is 49 characters long, "
        "more than the maximum of 48 (shorten it to at most 48 characters)",
    )


def test_label_of_wrong_type() -> None:
    docs = documents(entity("account", label=5))
    fails_with(
        docs,
        f"{ACCOUNT}#/label: invalid value 5 for 'label' (expected a string, or a map "
        "of locale to text",
    )


def test_label_with_invalid_locale() -> None:
    docs = documents(entity("account", label={"zh_CN": "客户"}))
    fails_with(
        docs,
        f"{ACCOUNT}#/label: invalid key 'zh_CN' in 'label' (expected a BCP 47 "
        "language tag",
    )


def test_empty_label_map() -> None:
    docs = documents(entity("account", label={}))
    fails_with(docs, f"{ACCOUNT}#/label: 'label' must not be empty")


def test_unsupported_format_version() -> None:
    docs = documents(entity("account"), format=2)
    fails_with(docs, "definition.json#/format: 'format' must be 1, got 2 (set it to 1)")


def test_manifest_unknown_property() -> None:
    docs = documents(entity("account"), title="Demo")
    fails_with(
        docs,
        "definition.json#/title: unknown property 'title' in the manifest (allowed "
        "properties: $schema, default_locale, extends,",
    )


def test_manifest_missing_version() -> None:
    docs = documents(entity("account"))
    del docs["definition.json"]["version"]
    fails_with(
        docs, "definition.json: the manifest is missing required property 'version'"
    )


def test_document_not_an_object() -> None:
    docs = {**documents(entity("account")), "entities/contact.json": ["contact"]}
    fails_with(
        docs,
        "entities/contact.json: the entity must be an object, got ['contact']",
    )


def test_duplicate_list_view_columns() -> None:
    docs = documents(entity("account", list_views=[list_view(columns=["name"] * 2)]))
    fails_with(
        docs,
        f"{ACCOUNT}#/list_views/0/columns: 'columns' in list view 'all' lists 'name' "
        "more than once (remove the duplicate)",
    )


def test_option_value_with_comma() -> None:
    options = [{"value": "a,b", "label": "A or B"}]
    docs = documents(entity("account", field("grade", "picklist", options=options)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/options/0/value: invalid value 'a,b' for 'value' in "
        "field 'grade' (expected an API value without commas",
    )


def test_option_color_must_be_hex() -> None:
    options = [{"value": "a", "label": "A", "color": "green"}]
    docs = documents(entity("account", field("grade", "picklist", options=options)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/options/0/color: invalid value 'green' for 'color' in "
        "field 'grade' (expected a CSS hex colour",
    )


def test_form_entry_of_wrong_type() -> None:
    form = {"sections": [{"label": "Main", "fields": [3]}]}
    fails_with(
        documents(entity("account", form=form)),
        f"{ACCOUNT}#/form/sections/0/fields/0: invalid value 3 for form entry 0 "
        '(expected a field name, or {"field": NAME, "modes": [...]})',
    )


def test_form_entry_unknown_property() -> None:
    form = {"sections": [{"label": "Main", "fields": [{"field": "name", "mode": []}]}]}
    fails_with(
        documents(entity("account", form=form)),
        f"{ACCOUNT}#/form/sections/0/fields/0/mode: unknown property 'mode' in form "
        "entry 0 (did you mean 'modes'?",
    )


def test_form_section_columns_enum() -> None:
    form = {"sections": [{"label": "Main", "columns": 3, "fields": ["name"]}]}
    fails_with(
        documents(entity("account", form=form)),
        f"{ACCOUNT}#/form/sections/0/columns: invalid value 3 for 'columns' "
        "(use one of: 1, 2)",
    )


def test_extension_needs_only_name() -> None:
    extension = {"name": "account", "extend": True, "fields": [field("code")]}
    docs = {**documents(entity("account")), "entities/account.json": extension}
    problems = problems_of(lambda: compile_documents(docs))
    assert [problem.pointer for problem in problems] == ["/extend"]


def test_schema_problems_are_all_reported() -> None:
    docs = documents(
        entity(
            "account",
            field("size", "strng"),
            field("code", max_length=0),
            label=5,
        )
    )
    problems = problems_of(lambda: compile_documents(docs))
    pointers = sorted(problem.pointer for problem in problems)
    assert pointers == ["/fields/1/type", "/fields/2/max_length", "/label"]
