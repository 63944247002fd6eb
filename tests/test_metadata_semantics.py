"""Semantic checks: problems that the JSON Schemas cannot see."""

from __future__ import annotations

import re

import pytest

from metadata_engine.errors import DefinitionError
from metadata_engine.loader import compile_documents
from tests.definitions.builders import documents, entity, field, problems_of

ACCOUNT = "entities/account.json"
GRADES = [{"value": "a", "label": "A"}, {"value": "b", "label": "B"}]


def fails_with(docs: dict, text: str) -> None:
    """Assert that compiling ``docs`` reports a problem starting with ``text``."""
    with pytest.raises(DefinitionError, match="(?m)^  " + re.escape(text)):
        compile_documents(docs)


def list_view(**changes: object) -> dict:
    view: dict = {"name": "all", "label": "All", "columns": ["name"]}
    view.update(changes)
    return view


def with_filter(*fields: dict, **condition: object) -> dict:
    """Return documents of an account whose list view has one filter."""
    view = list_view(filters=[condition])
    return documents(entity("account", *fields, list_views=[view]))


# Names


def test_entity_file_named_differently() -> None:
    docs = {**documents(), "entities/customer.json": entity("account")}
    fails_with(
        docs,
        "entities/customer.json#/name: entity 'account' is in file 'customer.json' "
        "(rename the file to 'account.json' or change the entity name)",
    )


def test_duplicate_entity_name() -> None:
    docs = {**documents(entity("account")), "entities/other.json": entity("account")}
    fails_with(
        docs,
        "entities/other.json#/name: entity name 'account' is already used by "
        "entities/account.json",
    )


def test_duplicate_field_name() -> None:
    docs = documents(entity("account", field("name")))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/name: field name 'name' appears more than once in "
        "entity 'account'",
    )


@pytest.mark.parametrize("name", ["id", "created_at", "owner_id", "version"])
def test_field_named_like_system_column(name: str) -> None:
    docs = documents(entity("account", field(name)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/name: field name {name!r} is reserved for a system "
        "column (rename it; every entity table has the columns id,",
    )


@pytest.mark.parametrize("name", ["sqlite_master", "pg_class"])
def test_field_with_database_prefix(name: str) -> None:
    docs = documents(entity("account", field(name)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/name: field name {name!r} starts with the reserved "
        "prefix",
    )


def test_entity_with_database_prefix() -> None:
    docs = documents(entity("pg_stats"))
    fails_with(
        docs,
        "entities/pg_stats.json#/name: entity name 'pg_stats' starts with the "
        "reserved prefix 'pg_'",
    )


def test_sql_keywords_are_allowed_names() -> None:
    docs = documents(entity("case", field("order"), field("select", "integer")))
    definition = compile_documents(docs)
    assert definition.entity("case").field_names == ("name", "order", "select")


# Title field


def test_title_field_not_found() -> None:
    docs = documents(entity("account", title_field="nmae"))
    fails_with(
        docs,
        f"{ACCOUNT}#/title_field: title field 'nmae' is not a field of entity "
        "'account' (did you mean 'name'? use one of: name)",
    )


def test_title_field_of_wrong_type() -> None:
    docs = documents(entity("account", field("size", "integer"), title_field="size"))
    fails_with(
        docs,
        f"{ACCOUNT}#/title_field: title field 'size' has type 'integer', which "
        "cannot be a title (use a field of type auto_number, email, phone, text, url)",
    )


# Lookups


def test_lookup_target_not_found() -> None:
    docs = documents(
        entity("account", field("contact", "lookup", target="contcat")),
        entity("contact"),
    )
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/target: lookup field 'contact' targets entity "
        "'contcat', which does not exist (did you mean 'contact'?",
    )


def test_set_null_on_required_lookup() -> None:
    lookup = field(
        "parent", "lookup", target="account", required=True, on_delete="set_null"
    )
    fails_with(
        documents(entity("account", lookup)),
        f"{ACCOUNT}#/fields/1/on_delete: required lookup field 'parent' cannot use "
        "on_delete 'set_null' (use 'restrict' or 'cascade', or make the field "
        "optional)",
    )


def test_lookup_to_itself_is_allowed() -> None:
    lookup = field("parent", "lookup", target="account", on_delete="set_null")
    definition = compile_documents(documents(entity("account", lookup)))
    assert definition.referencing("account")[0][1].name == "parent"


# Options, ranges and patterns


def test_duplicate_option_value() -> None:
    options = [*GRADES, {"value": "a", "label": "Again"}]
    docs = documents(entity("account", field("grade", "picklist", options=options)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/options/2/value: option value 'a' appears more than "
        "once in field 'grade'",
    )


def test_minimum_above_maximum() -> None:
    docs = documents(entity("account", field("size", "integer", minimum=5, maximum=1)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/minimum: minimum 5 of field 'size' is greater than its "
        "maximum 1",
    )


def test_date_minimum_above_maximum() -> None:
    date_field = field("due", "date", minimum="2025-01-01", maximum="2024-01-01")
    fails_with(
        documents(entity("account", date_field)),
        f"{ACCOUNT}#/fields/1/minimum: minimum '2025-01-01' of field 'due' is greater "
        "than its maximum '2024-01-01'",
    )


def test_date_bound_that_does_not_exist() -> None:
    date_field = field("due", "date", minimum="2024-02-30", maximum="2024-12-31")
    fails_with(
        documents(entity("account", date_field)),
        f"{ACCOUNT}#/fields/1/minimum: minimum '2024-02-30' of field 'due' is not a "
        "date",
    )


def test_scale_above_precision() -> None:
    docs = documents(entity("account", field("rate", "decimal", precision=4, scale=6)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/scale: scale 6 of field 'rate' is greater than its "
        "precision 4",
    )


def test_scale_above_default_precision() -> None:
    docs = documents(entity("account", field("rate", "percent", scale=20)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/scale: scale 20 of field 'rate' is greater than its "
        "precision 18",
    )


def test_pattern_not_a_regex() -> None:
    docs = documents(entity("account", field("code", pattern="(abc")))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/pattern: pattern '(abc' of field 'code' is not a valid "
        "Python regular expression: missing ), unterminated subpattern",
    )


def test_multi_picklist_cannot_be_unique() -> None:
    tags = field("tags", "multi_picklist", options=GRADES, unique=True)
    fails_with(
        documents(entity("account", tags)),
        f"{ACCOUNT}#/fields/1/unique: multi_picklist field 'tags' cannot be unique",
    )


def test_required_read_only_without_default() -> None:
    docs = documents(entity("account", field("code", required=True, read_only=True)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/read_only: field 'code' is required and read-only but "
        "has no default",
    )


# Defaults


@pytest.mark.parametrize(
    ("definition", "reason"),
    [
        (field("code", max_length=3, default="abcd"), "is 4 characters long"),
        (field("code", pattern="[A-Z]+", default="abc"), "does not match the pattern"),
        (field("code", default=5), "expected a string"),
        (field("size", "integer", minimum=1, default=0), "is below the minimum 1"),
        (field("size", "integer", maximum=9, default=10), "is above the maximum 9"),
        (field("size", "integer", default=1.5), "expected an integer"),
        (field("size", "integer", default=True), "expected an integer"),
        (field("rate", "decimal", scale=1, default=1.25), "has 2 decimal places"),
        (field("rate", "decimal", precision=4, default=123.4), "has 3 digits before"),
        (field("flag", "boolean", default="yes"), "expected true or false"),
        (field("due", "date", default="2024-02-30"), "expected an ISO 8601 date"),
        (field("due", "date", default="20240101"), "expected an ISO 8601 date"),
        (
            field("due", "date", minimum="2024-01-01", default="2023-12-31"),
            "is before the minimum '2024-01-01'",
        ),
        (field("at", "datetime", default="tomorrow"), "expected an ISO 8601 date"),
        (
            field("grade", "picklist", options=GRADES, default="c"),
            "expected one of the",
        ),
        (
            field("tags", "multi_picklist", options=GRADES, default=["a", "c"]),
            "item 'c'",
        ),
        (
            field("tags", "multi_picklist", options=GRADES, default=["a", "a"]),
            "lists an option more than once",
        ),
    ],
)
def test_default_must_fit_field(definition: dict, reason: str) -> None:
    name = definition["name"]
    fails_with(
        documents(entity("account", definition)),
        f"{ACCOUNT}#/fields/1/default: default {definition['default']!r} of field "
        f"{name!r} does not fit the field: {reason}",
    )


@pytest.mark.parametrize(
    "definition",
    [
        field("code", max_length=3, pattern="[A-Z]+", default="ABC"),
        field("size", "integer", minimum=0, maximum=10, default=10),
        field("rate", "currency", precision=5, scale=2, default=999.99),
        field("flag", "boolean", default=False),
        field("due", "date", minimum="2024-01-01", default="2024-01-01"),
        field("at", "datetime", default="2024-05-01T09:30:00Z"),
        field("grade", "picklist", options=GRADES, default="b"),
        field("tags", "multi_picklist", options=GRADES, default=["a", "b"]),
    ],
)
def test_fitting_defaults_accepted(definition: dict) -> None:
    definition_ = compile_documents(documents(entity("account", definition)))
    assert definition_.entity("account").field(definition["name"]).default is not None


@pytest.mark.parametrize("field_type", ["lookup", "auto_number"])
def test_default_not_allowed_on_type(field_type: str) -> None:
    extra = {"target": "account"} if field_type == "lookup" else {}
    docs = documents(entity("account", field("ref", field_type, default="x", **extra)))
    fails_with(
        docs,
        f"{ACCOUNT}#/fields/1/default: field 'ref' of type {field_type!r} cannot have "
        "a default",
    )


# Indexes


def test_index_field_not_found() -> None:
    docs = documents(entity("account", indexes=[{"fields": ["name", "nope"]}]))
    fails_with(
        docs,
        f"{ACCOUNT}#/indexes/0/fields/1: index refers to 'nope', which is not a field "
        "of entity 'account'",
    )


def test_unique_field_not_found() -> None:
    docs = documents(entity("account", unique=[{"fields": ["nmae"]}]))
    fails_with(
        docs,
        f"{ACCOUNT}#/unique/0/fields/0: unique constraint refers to 'nmae', which is "
        "not a field of entity 'account' (did you mean 'name'?",
    )


def test_index_on_system_column_allowed() -> None:
    docs = documents(entity("account", indexes=[{"fields": ["owner_id", "name"]}]))
    index = compile_documents(docs).entity("account").indexes[0]
    assert index.fields == ("owner_id", "name")


def test_duplicate_index() -> None:
    docs = documents(entity("account", indexes=[{"fields": ["name"]}] * 2))
    fails_with(
        docs,
        f"{ACCOUNT}#/indexes/1: index on ['name'] repeats the one at /indexes/0",
    )


def test_index_on_multi_picklist() -> None:
    tags = field("tags", "multi_picklist", options=GRADES)
    docs = documents(entity("account", tags, indexes=[{"fields": ["tags"]}]))
    fails_with(
        docs,
        f"{ACCOUNT}#/indexes/0/fields/0: multi_picklist field 'tags' cannot be indexed",
    )


# Forms


def test_form_field_not_found() -> None:
    form = {"sections": [{"label": "Main", "fields": ["name", "nmae2"]}]}
    fails_with(
        documents(entity("account", form=form)),
        f"{ACCOUNT}#/form/sections/0/fields/1: form refers to 'nmae2', which is not a "
        "field of entity 'account'",
    )


def test_form_field_listed_twice() -> None:
    form = {
        "sections": [
            {"label": "Main", "fields": ["name"]},
            {"label": "More", "fields": [{"field": "name", "modes": ["detail"]}]},
        ]
    }
    fails_with(
        documents(entity("account", form=form)),
        f"{ACCOUNT}#/form/sections/1/fields/0/field: field 'name' appears more than "
        "once in the form, first at /form/sections/0/fields/0",
    )


def test_required_field_missing_from_create() -> None:
    form = {
        "sections": [
            {"label": "Main", "fields": ["name", {"field": "code", "modes": ["edit"]}]}
        ]
    }
    docs = documents(entity("account", field("code", required=True), form=form))
    fails_with(
        docs,
        f"{ACCOUNT}#/form: required field 'code' is not shown in the form's create "
        "mode",
    )


def test_required_field_in_detail_section() -> None:
    form = {
        "sections": [
            {"label": "Main", "fields": ["name"]},
            {"label": "Audit", "modes": ["detail"], "fields": ["code"]},
        ]
    }
    docs = documents(entity("account", field("code", required=True), form=form))
    fails_with(
        docs,
        f"{ACCOUNT}#/form: required field 'code' is not shown in the form's create "
        "mode",
    )


# List views


def test_list_view_column_not_found() -> None:
    docs = documents(entity("account", list_views=[list_view(columns=["nmae"])]))
    fails_with(
        docs,
        f"{ACCOUNT}#/list_views/0/columns/0: list view 'all' shows column 'nmae', "
        "which does not exist (did you mean 'name'? choose from the fields name and "
        "the system columns id,",
    )


def test_list_view_system_columns_allowed() -> None:
    view = list_view(columns=["name", "created_at", "owner_id"], sort=["-updated_at"])
    definition = compile_documents(documents(entity("account", list_views=[view])))
    assert definition.entity("account").list_views[0].sort == ("-updated_at",)


def test_list_view_sort_not_found() -> None:
    docs = documents(entity("account", list_views=[list_view(sort=["-nope"])]))
    fails_with(
        docs,
        f"{ACCOUNT}#/list_views/0/sort/0: list view 'all' sorts by 'nope', which "
        "does not exist",
    )


def test_list_view_sort_not_sortable() -> None:
    tags = field("tags", "multi_picklist", options=GRADES)
    docs = documents(entity("account", tags, list_views=[list_view(sort=["tags"])]))
    fails_with(
        docs,
        f"{ACCOUNT}#/list_views/0/sort/0: list view 'all' cannot sort by 'tags', "
        "because fields of type 'multi_picklist' are not sortable",
    )


def test_duplicate_list_view_name() -> None:
    docs = documents(entity("account", list_views=[list_view(), list_view()]))
    fails_with(
        docs,
        f"{ACCOUNT}#/list_views/1/name: list view name 'all' appears more than once "
        "in entity 'account'",
    )


def test_filter_field_not_found() -> None:
    fails_with(
        with_filter(field="nope", op="eq", value="x"),
        f"{ACCOUNT}#/list_views/0/filters/0/field: filter refers to 'nope', which "
        "does not exist",
    )


def test_filter_operator_not_for_type() -> None:
    fails_with(
        with_filter(field("size", "integer"), field="size", op="startswith", value="1"),
        f"{ACCOUNT}#/list_views/0/filters/0/op: operator 'startswith' does not apply "
        "to 'size' of type 'integer' (use one of: eq, ne, lt, lte, gt, gte, in, "
        "isnull)",
    )


def test_filter_operator_on_system_column() -> None:
    fails_with(
        with_filter(field="created_at", op="contains", value="2024"),
        f"{ACCOUNT}#/list_views/0/filters/0/op: operator 'contains' does not apply "
        "to 'created_at' of type 'datetime'",
    )


@pytest.mark.parametrize(
    ("fields", "condition", "reason"),
    [
        ([field("size", "integer")], ("size", "gt", "1"), "expected an integer"),
        ([], ("name", "isnull", "yes"), "expected true or false"),
        ([], ("name", "in", "a,b"), "expected a non-empty list"),
        ([], ("name", "in", []), "expected a non-empty list"),
        ([], ("name", "eq", None), "null matches nothing"),
        (
            [field("grade", "picklist", options=GRADES)],
            ("grade", "eq", "z"),
            "expected one",
        ),
        (
            [field("grade", "picklist", options=GRADES)],
            ("grade", "in", ["a", "z"]),
            "item 'z'",
        ),
        (
            [field("tags", "multi_picklist", options=GRADES)],
            ("tags", "contains", "z"),
            "expected one of the option values: a, b",
        ),
        ([], ("created_at", "gte", "last week"), "expected an ISO 8601 date"),
        ([], ("version", "gt", "2"), "expected an integer"),
    ],
)
def test_filter_value_must_fit(fields: list, condition: tuple, reason: str) -> None:
    name, op, value = condition
    fails_with(
        with_filter(*fields, field=name, op=op, value=value),
        f"{ACCOUNT}#/list_views/0/filters/0/value: value {value!r} of filter "
        f"'{name} {op}' is invalid: {reason}",
    )


@pytest.mark.parametrize(
    ("fields", "condition"),
    [
        ([field("size", "integer")], ("size", "gte", 3)),
        ([], ("name", "icontains", "acme")),
        ([], ("name", "in", ["a", "b"])),
        ([], ("owner_id", "isnull", True)),
        ([field("grade", "picklist", options=GRADES)], ("grade", "ne", "a")),
        ([field("tags", "multi_picklist", options=GRADES)], ("tags", "contains", "b")),
        ([], ("updated_at", "lt", "2024-05-01T00:00:00+08:00")),
    ],
)
def test_fitting_filters_accepted(fields: list, condition: tuple) -> None:
    name, op, value = condition
    definition = compile_documents(with_filter(*fields, field=name, op=op, value=value))
    assert definition.entity("account").list_views[0].filters[0].op == op


# Manifest and the whole definition


def test_default_locale_not_in_locales() -> None:
    docs = documents(entity("account"), default_locale="fr", locales=["en", "zh-CN"])
    fails_with(
        docs,
        "definition.json#/default_locale: default locale 'fr' is not in locales "
        "['en', 'zh-CN']",
    )


def test_semantic_problems_all_reported() -> None:
    docs = documents(
        entity("account", title_field="nope", indexes=[{"fields": ["nope"]}]),
        entity("contact", field("account", "lookup", target="acount")),
    )
    problems = problems_of(lambda: compile_documents(docs))
    places = [(problem.file, problem.pointer) for problem in problems]
    assert places == [
        (ACCOUNT, "/title_field"),
        (ACCOUNT, "/indexes/0/fields/0"),
        ("entities/contact.json", "/fields/1/target"),
    ]


def test_broken_field_hides_its_references() -> None:
    # The field with an unknown type is reported once, and the title field,
    # the column and the index that name it are not reported again.
    docs = documents(
        entity(
            "account",
            field("code", "strng"),
            title_field="code",
            indexes=[{"fields": ["code"]}],
            list_views=[list_view(columns=["code"])],
        )
    )
    problems = problems_of(lambda: compile_documents(docs))
    assert [problem.pointer for problem in problems] == ["/fields/1/type"]


def test_broken_field_keeps_other_checks() -> None:
    docs = documents(
        entity(
            "account",
            field("code", "strng"),
            field(
                "grade",
                "picklist",
                options=[
                    {"value": "a", "label": "A"},
                    {"value": "a", "label": "A again"},
                ],
            ),
        )
    )
    problems = problems_of(lambda: compile_documents(docs))
    pointers = [problem.pointer for problem in problems]
    assert pointers == ["/fields/1/type", "/fields/2/options/1/value"]
