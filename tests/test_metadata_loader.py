"""Loading definition folders: files, extends, defaults, hashes and stored documents."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from metadata_engine.compiler import index_name
from metadata_engine.errors import DefinitionError
from metadata_engine.loader import compile_documents, load_definition
from metadata_engine.model import FORM_MODES
from tests.definitions.builders import (
    EXTENSION,
    MINIMAL,
    documents,
    entity,
    field,
    manifest,
    problems_of,
    write_folder,
)

ROOT = Path(__file__).resolve().parent.parent
Write = Callable[[Mapping[str, Any]], Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Write files under tmp_path and return the path of its ``demo`` folder."""

    def write_files(files: Mapping[str, Any]) -> Path:
        write_folder(tmp_path, files)
        return tmp_path / "demo"

    return write_files


def folder_files(folder: str, *entities: dict, **manifest_changes: Any) -> dict:
    """Return the files of a definition folder named ``folder``."""
    files: dict[str, Any] = {f"{folder}/definition.json": manifest(**manifest_changes)}
    for document in entities:
        files[f"{folder}/entities/{document['name']}.json"] = document
    return files


def extension(name: str, **changes: Any) -> dict:
    document: dict[str, Any] = {"name": name, "extend": True}
    document.update(changes)
    return document


def fails_with(action: Callable[[], object], text: str) -> None:
    """Assert that ``action`` raises a problem whose line starts with ``text``."""
    with pytest.raises(DefinitionError, match="(?m)^  " + re.escape(text)):
        action()


# Compiling and defaults


def test_minimal_definition_loads() -> None:
    definition = load_definition(MINIMAL)
    assert definition.name == "minimal"
    assert [entity.name for entity in definition.entities] == ["company", "person"]
    assert definition.locales == ("en", "zh-CN")


def test_labels_keep_translations() -> None:
    company = load_definition(MINIMAL).entity("company")
    assert company.label.get("zh-CN") == "公司"
    assert company.label.get() == "Company"


def test_field_defaults_are_filled() -> None:
    docs = documents(
        entity(
            "account",
            field("notes", "long_text"),
            field("email", "email"),
            field("amount", "currency"),
            field("rate", "percent"),
            field("parent", "lookup", target="account"),
            field("number", "auto_number"),
        )
    )
    account = compile_documents(docs).entity("account")
    assert account.field("name").max_length == 255
    assert account.field("notes").max_length == 100_000
    assert account.field("email").max_length == 254
    assert account.field("amount").precision == 18
    assert account.field("amount").scale == 2
    assert account.field("amount").currency_code == "USD"
    assert account.field("rate").currency_code is None
    assert account.field("parent").on_delete == "restrict"
    assert account.field("number").digits == 5
    assert account.field("number").prefix == ""


def test_auto_number_is_unique_and_read_only() -> None:
    docs = documents(entity("account", field("number", "auto_number", prefix="A-")))
    number = compile_documents(docs).entity("account").field("number")
    assert number.unique
    assert number.read_only


def test_field_flags_are_kept() -> None:
    docs = documents(entity("account", field("code", unique=True, indexed=True)))
    code = compile_documents(docs).entity("account").field("code")
    assert code.unique
    assert code.indexed
    assert not code.searchable


def test_entity_defaults_are_filled() -> None:
    account = compile_documents(documents(entity("account"))).entity("account")
    assert account.plural_label == account.label
    assert account.description is None
    assert account.indexes == ()


def test_default_form_lists_every_field() -> None:
    docs = documents(entity("account", field("code"), field("size", "integer")))
    form = compile_documents(docs).entity("account").form
    assert len(form.sections) == 1
    assert form.sections[0].columns == 2
    assert form.fields_for("create") == ("name", "code", "size")
    assert form.sections[0].modes == FORM_MODES


def test_default_list_view_shows_title_and_five() -> None:
    fields = [field(f"f{number}") for number in range(1, 8)]
    docs = documents(entity("account", *fields, title_field="f3"))
    view = compile_documents(docs).entity("account").default_list_view
    assert view.name == "all"
    assert view.columns == ("f3", "name", "f1", "f2", "f4", "f5")
    assert view.sort == ("-created_at",)
    assert view.page_size == 25


def test_form_and_view_defaults_are_filled() -> None:
    form = {"sections": [{"label": "Main", "fields": ["name"]}]}
    view = {"name": "mine", "label": "Mine", "columns": ["name"]}
    account = compile_documents(
        documents(entity("account", form=form, list_views=[view]))
    ).entity("account")
    assert account.form.sections[0].columns == 2
    assert account.form.sections[0].items[0].modes == FORM_MODES
    assert account.list_views[0].sort == ("-created_at",)
    assert account.list_views[0].page_size == 25
    assert account.list_views[0].filters == ()


def test_form_modes_keep_canonical_order() -> None:
    item = {"field": "name", "modes": ["detail", "create"]}
    form = {"sections": [{"label": "Main", "fields": [item]}]}
    account = compile_documents(documents(entity("account", form=form)))
    assert account.entity("account").form.sections[0].items[0].modes == (
        "create",
        "detail",
    )


def test_typed_values_are_converted() -> None:
    docs = documents(
        entity(
            "account",
            field("due", "date", minimum="2024-01-01", default="2024-06-30"),
            field("at", "datetime", default="2024-06-30T08:00:00"),
            field("amount", "decimal", minimum=0, default=0.1),
            field(
                "tags",
                "multi_picklist",
                options=[{"value": "a", "label": "A"}],
                default=["a"],
            ),
        )
    )
    account = compile_documents(docs).entity("account")
    assert account.field("due").default == date(2024, 6, 30)
    assert account.field("due").minimum == date(2024, 1, 1)
    assert account.field("at").default == datetime(2024, 6, 30, 8, tzinfo=UTC)
    assert account.field("amount").default == Decimal("0.1")
    assert account.field("amount").minimum == Decimal("0")
    assert account.field("tags").default == ("a",)


def test_entities_are_sorted_by_name() -> None:
    docs = documents(entity("zone"), entity("account"), entity("lead"))
    names = [item.name for item in compile_documents(docs).entities]
    assert names == ["account", "lead", "zone"]


# Indexes


def test_indexes_get_deterministic_names() -> None:
    docs = documents(
        entity(
            "account",
            field("industry"),
            indexes=[{"fields": ["industry", "name"]}],
            unique=[{"fields": ["name", "industry"]}],
        )
    )
    indexes = compile_documents(docs).entity("account").indexes
    assert [index.name for index in indexes] == [
        "ix_account_industry_name",
        "uq_account_name_industry",
    ]
    assert [index.unique for index in indexes] == [False, True]


def test_long_index_names_are_shortened() -> None:
    first = index_name("account", ("a" * 40, "b" * 30), unique=False)
    second = index_name("account", ("a" * 40, "c" * 30), unique=False)
    assert len(first) == 60
    assert len(second) == 60
    assert first != second
    assert first.startswith("ix_account_aaaa")


def test_index_name_of_short_fields_unchanged() -> None:
    assert index_name("case", ("status",), unique=True) == "uq_case_status"


# Content hash and stored documents


def test_hash_ignores_key_order() -> None:
    docs = documents(entity("account", field("code", max_length=20, required=True)))
    reordered = {
        key: dict(reversed(list(document.items())))
        for key, document in reversed(list(docs.items()))
    }
    assert compile_documents(docs).content_hash == (
        compile_documents(reordered).content_hash
    )


def test_hash_changes_with_label() -> None:
    before = compile_documents(documents(entity("account")))
    after = compile_documents(documents(entity("account", label="Customer")))
    assert before.content_hash != after.content_hash


def test_hash_is_sha256_hex() -> None:
    content_hash = compile_documents(documents(entity("account"))).content_hash
    assert re.fullmatch(r"[0-9a-f]{64}", content_hash)


def test_hash_ignores_loading_keys() -> None:
    plain = documents(entity("account"))
    marked = documents(entity("account", extend=False), extends=None)
    marked["definition.json"]["$schema"] = "../schemas/definition.schema.json"
    assert compile_documents(plain).content_hash == (
        compile_documents(marked).content_hash
    )


def test_stored_documents_round_trip() -> None:
    definition = load_definition(EXTENSION)
    stored = json.loads(json.dumps(dict(definition.documents)))
    reloaded = compile_documents(stored)
    assert reloaded.content_hash == definition.content_hash
    assert reloaded == definition


def test_stored_documents_are_merged() -> None:
    documents_ = load_definition(EXTENSION).documents
    company = documents_["entities/company.json"]
    assert "extends" not in documents_["definition.json"]
    assert "extend" not in company
    assert [item["name"] for item in company["fields"]] == ["name", "tier", "revenue"]
    assert sorted(documents_) == [
        "definition.json",
        "entities/company.json",
        "entities/contract.json",
        "entities/person.json",
    ]


def test_unmerged_manifest_rejected() -> None:
    docs = documents(entity("account"), extends="standard_crm")
    fails_with(
        lambda: compile_documents(docs),
        "definition.json#/extends: stored documents still extend 'standard_crm'",
    )


def test_unmerged_extension_rejected() -> None:
    docs = {
        **documents(entity("account")),
        "entities/account.json": extension("account"),
    }
    fails_with(
        lambda: compile_documents(docs),
        "entities/account.json#/extend: stored entity 'account' is an unmerged "
        "extension",
    )


def test_unexpected_document_key_rejected() -> None:
    docs = {**documents(entity("account")), "entities/sub/account.json": {}}
    fails_with(
        lambda: compile_documents(docs),
        "entities/sub/account.json: unexpected document key "
        "'entities/sub/account.json'",
    )


# Reading files


def test_malformed_json_gives_line_and_column(write: Write) -> None:
    text = '{\n  "name": "account",\n  "label": "Account"\n  "fields": []\n}\n'
    folder = write({**folder_files("demo"), "demo/entities/account.json": text})
    fails_with(
        lambda: load_definition(folder),
        "entities/account.json: invalid JSON at line 4, column 3: Expecting ',' "
        "delimiter",
    )


def test_non_utf8_file_reported(write: Write) -> None:
    data = '{"name": "café"}'.encode("latin-1")
    folder = write({**folder_files("demo"), "demo/entities/account.json": data})
    fails_with(
        lambda: load_definition(folder),
        "entities/account.json: file is not valid UTF-8: byte 0xe9 at offset 13 "
        "(save the file as UTF-8)",
    )


def test_utf8_byte_order_mark_accepted(write: Write) -> None:
    text = json.dumps(entity("account", label="客户"), ensure_ascii=False)
    data = b"\xef\xbb\xbf" + text.encode("utf-8")
    folder = write({**folder_files("demo"), "demo/entities/account.json": data})
    assert load_definition(folder).entity("account").label.get() == "客户"


def test_missing_manifest_reported(write: Write) -> None:
    folder = write({"demo/entities/account.json": entity("account")})
    fails_with(
        lambda: load_definition(folder),
        "definition.json: definition.json not found (add definition.json with "
        "format, name, label and version)",
    )


def test_missing_entities_folder_reported(write: Write) -> None:
    folder = write(folder_files("demo"))
    fails_with(
        lambda: load_definition(folder),
        "entities: entities folder not found (create entities/ with one NAME.json "
        "file per entity)",
    )


def test_empty_entities_folder_reported(write: Write) -> None:
    folder = write({**folder_files("demo"), "demo/entities/README.md": "notes"})
    fails_with(
        lambda: load_definition(folder),
        "entities: entities folder contains no .json files",
    )


def test_missing_definition_folder_reported(tmp_path: Path) -> None:
    fails_with(
        lambda: load_definition(tmp_path / "nowhere"),
        f".: definition folder {str(tmp_path / 'nowhere')!r} not found",
    )


def test_other_files_are_ignored(write: Write) -> None:
    folder = write(
        {
            **folder_files("demo", entity("account")),
            "demo/README.md": "# Demo",
            "demo/entities/notes.txt": "not JSON",
            "demo/entities/.draft.json": "{",
        }
    )
    assert [item.name for item in load_definition(folder).entities] == ["account"]


def test_problems_in_two_files_reported_together(write: Write) -> None:
    folder = write(
        {
            **folder_files("demo", format=2),
            "demo/entities/account.json": entity(
                "account", field("code", "strng"), title_field="nope"
            ),
        }
    )
    problems = problems_of(lambda: load_definition(folder))
    places = [(problem.file, problem.pointer) for problem in problems]
    assert places == [
        ("definition.json", "/format"),
        ("entities/account.json", "/fields/1/type"),
        ("entities/account.json", "/title_field"),
    ]


def test_error_message_counts_problems(write: Write) -> None:
    folder = write(folder_files("demo", entity("account", title_field="x"), format=2))
    with pytest.raises(DefinitionError, match=r"^definition has 2 problems:\n  "):
        load_definition(folder)


# Extends


def test_extension_appends_fields() -> None:
    company = load_definition(EXTENSION).entity("company")
    assert company.field_names == ("name", "tier", "revenue")
    assert company.field("revenue").currency_code == "EUR"


def test_extension_replaces_label() -> None:
    company = load_definition(EXTENSION).entity("company")
    assert company.label.get() == "Customer"


def test_extension_appends_indexes() -> None:
    company = load_definition(EXTENSION).entity("company")
    assert [index.name for index in company.indexes] == ["ix_company_tier_revenue"]


def test_extension_adds_entities() -> None:
    definition = load_definition(EXTENSION)
    assert definition.entity("contract").field("company").target == "company"
    assert definition.has_entity("person")


def test_extension_manifest_inherits_unset_keys() -> None:
    definition = load_definition(EXTENSION)
    assert definition.name == "extension"
    assert definition.version == "2.0.0"
    assert definition.locales == ("en", "zh-CN")


def test_extends_template_by_name(write: Write, tmp_path: Path) -> None:
    write(folder_files("templates/base", entity("account"), name="base"))
    folder = write(
        folder_files(
            "demo", extension("account", fields=[field("code")]), extends="base"
        )
    )
    definition = load_definition(folder, templates_dir=tmp_path / "templates")
    assert definition.entity("account").field_names == ("name", "code")


def test_templates_dir_from_environment(
    write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(folder_files("templates/base", entity("account"), name="base"))
    folder = write(folder_files("demo", extends="base"))
    monkeypatch.setenv("METACRM_TEMPLATES_DIR", str(tmp_path / "templates"))
    assert load_definition(folder).has_entity("account")


def test_repository_templates_are_default() -> None:
    definition = load_definition(ROOT / "examples" / "telco")
    assert definition.has_entity("opportunity")


def test_template_not_found_lists_templates(write: Write, tmp_path: Path) -> None:
    write(folder_files("templates/base", entity("account"), name="base"))
    folder = write(folder_files("demo", extends="bsae"))
    fails_with(
        lambda: load_definition(folder, templates_dir=tmp_path / "templates"),
        "definition.json#/extends: base definition 'bsae' not found (templates in "
        f"{str(tmp_path / 'templates')!r}: base;",
    )


def test_relative_base_not_found(write: Write, tmp_path: Path) -> None:
    folder = write(folder_files("demo", extends="../missing"))
    fails_with(
        lambda: load_definition(folder),
        "definition.json#/extends: base definition '../missing' not found (no folder "
        f"{str(tmp_path / 'missing')!r};",
    )


def test_missing_base_reported_once(write: Write) -> None:
    folder = write(
        folder_files(
            "demo", extension("account"), extension("contact"), extends="../missing"
        )
    )
    problems = problems_of(lambda: load_definition(folder))
    assert [problem.pointer for problem in problems] == ["/extends"]


def test_extends_cycle_reported(write: Write) -> None:
    folder = write(
        {
            **folder_files("demo", extends="../other"),
            **folder_files("other", entity("account"), extends="../demo"),
        }
    )
    fails_with(
        lambda: load_definition(folder),
        "../other/definition.json#/extends: extends '../demo' forms a cycle: . -> "
        "../other -> .",
    )


def test_extends_itself_reported(write: Write) -> None:
    folder = write(folder_files("demo", entity("account"), extends="."))
    fails_with(
        lambda: load_definition(folder),
        "definition.json#/extends: extends '.' forms a cycle: . -> .",
    )


def test_extension_field_already_in_base(write: Write) -> None:
    folder = write(
        {
            **folder_files("base", entity("account")),
            **folder_files(
                "demo", extension("account", fields=[field("name")]), extends="../base"
            ),
        }
    )
    fails_with(
        lambda: load_definition(folder),
        "entities/account.json#/fields/0/name: field 'name' already exists in base "
        "entity 'account'",
    )


def test_extension_without_base_entity(write: Write) -> None:
    folder = write(
        {
            **folder_files("base", entity("account")),
            **folder_files(
                "demo", extension("contact", fields=[field("x")]), extends="../base"
            ),
        }
    )
    fails_with(
        lambda: load_definition(folder),
        "entities/contact.json#/extend: extension entity 'contact' has no base "
        'entity to extend (remove "extend": true to declare a new entity; base '
        "entities: account)",
    )


def test_extend_without_extends(write: Write) -> None:
    folder = write(folder_files("demo", extension("account")))
    fails_with(
        lambda: load_definition(folder),
        "entities/account.json#/extend: entity 'account' sets \"extend\": true, but "
        "the definition extends no base",
    )


def test_extension_cannot_change_title(write: Write) -> None:
    folder = write(
        {
            **folder_files("base", entity("account")),
            **folder_files(
                "demo", extension("account", title_field="name"), extends="../base"
            ),
        }
    )
    fails_with(
        lambda: load_definition(folder),
        "entities/account.json#/title_field: an extension cannot change the title "
        "field of entity 'account'",
    )


def test_base_entity_declared_again(write: Write) -> None:
    folder = write(
        {
            **folder_files("base", entity("account")),
            **folder_files("demo", entity("account"), extends="../base"),
        }
    )
    fails_with(
        lambda: load_definition(folder),
        "entities/account.json#/name: entity 'account' already exists in the base "
        "definition (../base/entities/account.json)",
    )


def test_base_problem_names_base_file(write: Write) -> None:
    folder = write(
        {
            **folder_files("base", entity("account", title_field="nope")),
            **folder_files("demo", extends="../base"),
        }
    )
    fails_with(
        lambda: load_definition(folder),
        "../base/entities/account.json#/title_field: title field 'nope'",
    )


def test_extension_problem_names_extension_file(write: Write) -> None:
    added = [field("code"), field("parent", "lookup", target="acount")]
    folder = write(
        {
            **folder_files("base", entity("account", field("size", "integer"))),
            **folder_files(
                "demo", extension("account", fields=added), extends="../base"
            ),
        }
    )
    fails_with(
        lambda: load_definition(folder),
        "entities/account.json#/fields/1/target: lookup field 'parent' targets "
        "entity 'acount'",
    )


def test_replaced_list_view_problem_located(write: Write) -> None:
    views = [{"name": "all", "label": "All", "columns": ["name", "nope"]}]
    folder = write(
        {
            **folder_files("base", entity("account")),
            **folder_files(
                "demo", extension("account", list_views=views), extends="../base"
            ),
        }
    )
    fails_with(
        lambda: load_definition(folder),
        "entities/account.json#/list_views/0/columns/1: list view 'all' shows column "
        "'nope'",
    )


def test_two_levels_of_extends(write: Write) -> None:
    folder = write(
        {
            **folder_files("core", entity("account"), name="core"),
            **folder_files(
                "middle",
                extension("account", fields=[field("code")]),
                name="middle",
                extends="../core",
            ),
            **folder_files(
                "demo",
                extension("account", fields=[field("grade", "integer", default="x")]),
                extends="../middle",
            ),
        }
    )
    fails_with(
        lambda: load_definition(folder),
        "entities/account.json#/fields/0/default: default 'x' of field 'grade'",
    )


def test_broken_extension_field_located(write: Write) -> None:
    added = [field("code", "strng"), field("size", "integer", minimum=3, maximum=1)]
    folder = write(
        {
            **folder_files("base", entity("account")),
            **folder_files(
                "demo", extension("account", fields=added), extends="../base"
            ),
        }
    )
    problems = problems_of(lambda: load_definition(folder))
    places = [(problem.file, problem.pointer) for problem in problems]
    assert places == [
        ("entities/account.json", "/fields/0/type"),
        ("entities/account.json", "/fields/1/minimum"),
    ]


# Real definitions


@pytest.mark.parametrize("path", ["tenant_definitions/standard_crm", "examples/telco"])
def test_repository_definitions_load(path: str) -> None:
    definition = load_definition(ROOT / path)
    reloaded = compile_documents(definition.documents)
    assert reloaded.content_hash == definition.content_hash
