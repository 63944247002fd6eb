"""Compile merged, checked documents into the immutable model, filling defaults."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from metadata_engine import rules, values
from metadata_engine.merge import MANIFEST_KEY, PERMISSION_DIRS, document_folder
from metadata_engine.messages import messages_for
from metadata_engine.model import (
    ADMIN_ROLE,
    DEFAULT_UNMASKED_ROLES,
    FORM_MODES,
    SCOPED_RIGHTS,
    SCOPES,
    Definition,
    Entity,
    EntityGrant,
    Field,
    Filter,
    Form,
    FormItem,
    FormSection,
    Grantee,
    Index,
    ListView,
    Option,
    PermissionCase,
    PermissionTest,
    Rollup,
    RuleCase,
    RuleTest,
    SharingRule,
    Text,
    ValidationRule,
)
from metadata_engine.process_compiler import compile_automation, compile_workflow

#: Keys that only matter while loading and are dropped from stored documents.
LOADING_KEYS = ("$schema", "extends", "extend")
MAX_INDEX_NAME = 60
#: Label of the ``admin`` role when no roles/admin.json declares one.
ADMIN_LABEL: Mapping[str, str] = MappingProxyType(
    {"en": "Administrator", "zh-CN": "管理员"}
)


def normalize_documents(documents: Mapping[str, Any]) -> dict[str, Any]:
    """Return a sorted deep copy of ``documents`` without loading-only keys."""
    normalized: dict[str, Any] = {}
    for key in sorted(documents):
        document = copy.deepcopy(dict(documents[key]))
        for loading_key in LOADING_KEYS:
            document.pop(loading_key, None)
        normalized[key] = document
    return normalized


def content_hash(documents: Mapping[str, Any]) -> str:
    """Return the SHA-256 hex digest of the canonical JSON of ``documents``."""
    canonical = json.dumps(
        dict(documents), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def compile_definition(documents: Mapping[str, Any]) -> Definition:
    """Compile normalized documents that passed every check."""
    manifest = documents[MANIFEST_KEY]
    locale = manifest.get("default_locale", rules.DEFAULT_LOCALE)
    folders = _by_folder(documents)
    entities = tuple(_compile_entity(doc, locale) for doc in folders["entities"])
    field_types = {
        entity.name: {field.name: field.type for field in entity.fields}
        for entity in entities
    }
    return Definition(
        name=manifest["name"],
        label=Text.of(manifest["label"], locale),
        version=manifest["version"],
        default_locale=locale,
        locales=tuple(manifest.get("locales", [locale])),
        entities=entities,
        content_hash=content_hash(documents),
        documents=MappingProxyType(dict(documents)),
        roles=_compile_roles(folders["roles"], locale),
        permission_sets=tuple(
            _compile_grantee(doc, "permission_set", locale)
            for doc in folders["permission_sets"]
        ),
        sharing_rules=tuple(
            _compile_sharing_rule(doc, locale) for doc in folders["sharing_rules"]
        ),
        permission_tests=tuple(
            _compile_permission_test(doc, field_types)
            for doc in folders["permission_tests"]
        ),
        rule_tests=tuple(_compile_rule_test(doc) for doc in folders["rule_tests"]),
        workflows=tuple(
            compile_workflow(doc, locale) for doc in folders["workflows"]
        ),
        automations=tuple(
            compile_automation(doc, locale) for doc in folders["automations"]
        ),
    )


def _by_folder(documents: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    """Return the documents of each folder, sorted by name."""
    folders: dict[str, list[Mapping[str, Any]]] = {
        folder: [] for folder in ("entities", *PERMISSION_DIRS)
    }
    for key, document in documents.items():
        folder = document_folder(key)
        if folder is not None:
            folders[folder].append(document)
    for items in folders.values():
        items.sort(key=lambda doc: str(doc["name"]))
    return folders


def index_name(entity: str, fields: tuple[str, ...], unique: bool) -> str:
    """Return a deterministic index name of at most 60 characters.

    Longer names are cut and end in 8 hex digits of their SHA-256, so that
    two long names that share a prefix stay distinct.
    """
    name = f"{'uq' if unique else 'ix'}_{entity}_{'_'.join(fields)}"
    if len(name) <= MAX_INDEX_NAME:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{name[: MAX_INDEX_NAME - 9]}_{digest}"


def _text(value: Any, locale: str) -> Text:
    return Text.of(value, locale)


def _optional_text(value: Any, locale: str) -> Text | None:
    return None if value is None else Text.of(value, locale)


def _compile_entity(document: Mapping[str, Any], locale: str) -> Entity:
    name = document["name"]
    label = _text(document["label"], locale)
    fields = tuple(_compile_field(doc, locale, name) for doc in document["fields"])
    indexes = tuple(
        Index(
            index_name(name, tuple(item["fields"]), unique),
            tuple(item["fields"]),
            unique,
        )
        for unique, kind in ((False, "indexes"), (True, "unique"))
        for item in document.get(kind, [])
    )
    if "form" in document:
        form = _compile_form(document["form"], locale)
    else:
        form = _default_form(label, fields)
    plural_label = _text(document.get("plural_label", document["label"]), locale)
    if "list_views" in document:
        views = tuple(_compile_list_view(doc, locale) for doc in document["list_views"])
    else:
        views = (_default_list_view(plural_label, document["title_field"], fields),)
    return Entity(
        name=name,
        label=label,
        plural_label=plural_label,
        title_field=document["title_field"],
        fields=fields,
        form=form,
        list_views=views,
        description=_optional_text(document.get("description"), locale),
        icon=document.get("icon"),
        indexes=indexes,
        validation_rules=(
            *(
                _compile_validation_rule(doc, locale)
                for doc in document.get("validation_rules", [])
            ),
            *(
                _required_rule(doc)
                for doc in document["fields"]
                if "required_when" in doc
            ),
        ),
    )


def _compile_rollup(document: Mapping[str, Any] | None) -> Rollup | None:
    if document is None:
        return None
    return Rollup(
        entity=document["entity"],
        via=document["via"],
        function=document["function"],
        field=document.get("field"),
        where=tuple(
            Filter(item["field"], item["op"], _freeze(item["value"]))
            for item in document.get("where", [])
        ),
    )


#: Prefix of the validation rules that ``required_when`` becomes.
REQUIRED_RULE_PREFIX = "required_when:"


def _required_rule(field: Mapping[str, Any]) -> ValidationRule:
    """Turn a field's ``required_when`` into a validation rule that fails
    when the condition is true and the field is empty."""
    name = field["name"]
    return ValidationRule(
        name=f"{REQUIRED_RULE_PREFIX}{name}",
        when=f"({field['required_when']}) && {name} == null",
        message=Text(MappingProxyType({
            locale: messages_for(locale)["required"] for locale in ("en", "zh-CN")
        })),
        fields=(name,),
    )


def _compile_validation_rule(
    document: Mapping[str, Any], locale: str
) -> ValidationRule:
    return ValidationRule(
        name=document["name"],
        when=document["when"],
        message=_text(document["message"], locale),
        fields=tuple(document.get("fields", [])),
    )


def _compile_field(document: Mapping[str, Any], locale: str, entity: str) -> Field:
    field_type = document["type"]
    is_auto_number = field_type == "auto_number"
    is_decimal = field_type in rules.DECIMAL_TYPES
    precision, scale = (
        values.precision_and_scale(document) if is_decimal else (None, None)
    )
    return Field(
        name=document["name"],
        type=field_type,
        label=_text(document["label"], locale),
        help_text=_optional_text(document.get("help_text"), locale),
        required=document.get("required", False),
        unique=document.get("unique", False) or is_auto_number,
        default=_convert(field_type, document.get("default")),
        read_only=(
            document.get("read_only", False)
            or is_auto_number
            or "formula" in document
            or "rollup" in document
        ),
        indexed=document.get("indexed", False),
        searchable=document.get("searchable", False),
        max_length=values.max_length(document),
        pattern=document.get("pattern"),
        minimum=_convert(field_type, document.get("minimum")),
        maximum=_convert(field_type, document.get("maximum")),
        precision=precision,
        scale=scale,
        currency_code=(
            document.get("currency_code", rules.CURRENCY_CODE)
            if field_type == "currency"
            else None
        ),
        options=tuple(
            Option(item["value"], _text(item["label"], locale), item.get("color"))
            for item in document.get("options", [])
        ),
        target=document.get("target"),
        on_delete=(
            document.get("on_delete", rules.ON_DELETE)
            if field_type == "lookup"
            else None
        ),
        prefix=(
            document.get("prefix", rules.AUTO_NUMBER_PREFIX) if is_auto_number else None
        ),
        digits=(
            document.get("digits", rules.AUTO_NUMBER_DIGITS) if is_auto_number else None
        ),
        sensitive=document.get("sensitive", False),
        personal=document.get("personal", False),
        unmasked_roles=tuple(
            document.get("unmasked_roles", DEFAULT_UNMASKED_ROLES)
        ),
        entity=entity,
        formula=document.get("formula"),
        rollup=_compile_rollup(document.get("rollup")),
        depends_on=document.get("depends_on", {}).get("field"),
        dependent_options=MappingProxyType({
            key: tuple(allowed)
            for key, allowed in document.get("depends_on", {})
            .get("options", {})
            .items()
        }),
        default_expr=document.get("default_expr"),
        read_only_when=document.get("read_only_when"),
        visible_when=document.get("visible_when"),
    )


def _convert(field_type: str, value: Any) -> Any:
    """Convert a checked JSON value to the Python type of ``field_type``."""
    if value is None:
        return None
    if field_type == "date":
        return values.parse_date(value)
    if field_type == "datetime":
        return values.parse_datetime(value)
    if field_type in rules.DECIMAL_TYPES:
        return Decimal(str(value))
    if isinstance(value, list):
        return tuple(value)
    return value


def _modes(value: Any) -> tuple[str, ...]:
    if value is None:
        return FORM_MODES
    return tuple(mode for mode in FORM_MODES if mode in value)


def _compile_form(document: Mapping[str, Any], locale: str) -> Form:
    sections = []
    for section in document["sections"]:
        items = []
        for item in section["fields"]:
            if isinstance(item, str):
                items.append(FormItem(item))
            else:
                items.append(FormItem(item["field"], _modes(item.get("modes"))))
        sections.append(
            FormSection(
                label=_text(section["label"], locale),
                columns=section.get("columns", rules.SECTION_COLUMNS),
                items=tuple(items),
                modes=_modes(section.get("modes")),
            )
        )
    return Form(tuple(sections))


def _default_form(label: Text, fields: tuple[Field, ...]) -> Form:
    items = tuple(FormItem(field.name) for field in fields)
    return Form((FormSection(label, rules.SECTION_COLUMNS, items),))


def _compile_list_view(document: Mapping[str, Any], locale: str) -> ListView:
    filters = tuple(
        Filter(item["field"], item["op"], _freeze(item["value"]))
        for item in document.get("filters", [])
    )
    return ListView(
        name=document["name"],
        label=_text(document["label"], locale),
        columns=tuple(document["columns"]),
        sort=tuple(document.get("sort", rules.SORT)),
        filters=filters,
        page_size=document.get("page_size", rules.PAGE_SIZE),
    )


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    return value


def _default_list_view(
    plural_label: Text, title: str, fields: tuple[Field, ...]
) -> ListView:
    others = [field.name for field in fields if field.name != title]
    columns = (title, *others[: rules.LIST_VIEW_EXTRA_COLUMNS])
    return ListView(rules.LIST_VIEW_NAME, plural_label, columns)


# Permissions ------------------------------------------------------------------


def _compile_roles(
    documents: list[Mapping[str, Any]], locale: str
) -> tuple[Grantee, ...]:
    """Compile the declared roles, with ``admin`` first whether declared or not."""
    roles = [_compile_grantee(doc, "role", locale) for doc in documents]
    admin = [role for role in roles if role.name == ADMIN_ROLE]
    others = [role for role in roles if role.name != ADMIN_ROLE]
    if not admin:
        admin = [Grantee(ADMIN_ROLE, Text.of(ADMIN_LABEL, locale), "role")]
    return (*admin, *others)


def _compile_grantee(document: Mapping[str, Any], kind: str, locale: str) -> Grantee:
    entities = document.get("entities", {})
    grants = tuple(
        _compile_grant(entity, entities[entity]) for entity in sorted(entities)
    )
    return Grantee(
        name=document["name"],
        label=_text(document["label"], locale),
        kind=kind,
        grants=grants,
        description=_optional_text(document.get("description"), locale),
    )


def _compile_grant(entity: str, document: Mapping[str, Any]) -> EntityGrant:
    scopes = {right: _scopes(document.get(right, False)) for right in SCOPED_RIGHTS}
    fields = document.get("fields", {})
    return EntityGrant(
        entity=entity,
        read=scopes["read"],
        edit=scopes["edit"],
        delete=scopes["delete"],
        create=document.get("create", False),
        export=document.get("export", False),
        import_records=document.get("import", False),
        change_owner=document.get("change_owner", False),
        fields=MappingProxyType({name: fields[name] for name in sorted(fields)}),
    )


def _scopes(value: bool | str | list[str]) -> tuple[str, ...]:
    """Return the scopes of a scoped right, unique and in ``SCOPES`` order."""
    if value is True:
        return ("all",)
    if value is False:
        return ()
    listed = [value] if isinstance(value, str) else value
    return tuple(scope for scope in SCOPES if scope in listed)


def _compile_sharing_rule(document: Mapping[str, Any], locale: str) -> SharingRule:
    conditions = tuple(
        Filter(item["field"], item["op"], _freeze(item["value"]))
        for item in document["where"]
    )
    return SharingRule(
        name=document["name"],
        label=_text(document["label"], locale),
        entity=document["entity"],
        conditions=conditions,
        access=document.get("access", "read"),
        roles=tuple(document.get("roles", [])),
        teams=tuple(document.get("teams", [])),
    )


def _compile_permission_test(
    document: Mapping[str, Any], field_types: Mapping[str, Mapping[str, str]]
) -> PermissionTest:
    cases = tuple(
        _compile_case(case, field_types[case["entity"]]) for case in document["cases"]
    )
    return PermissionTest(name=document["name"], cases=cases)


def _compile_case(
    document: Mapping[str, Any], field_types: Mapping[str, str]
) -> PermissionCase:
    """Compile one case, converting its values to the Python types of their
    fields (a date string to ``date``, a number of a currency to ``Decimal``)."""
    record_values = {
        name: _convert(field_types[name], value)
        for name, value in document.get("values", {}).items()
    }
    return PermissionCase(
        description=document["description"],
        role=document["role"],
        entity=document["entity"],
        action=document["action"],
        allowed=document["allowed"],
        owner=document.get("owner", "other"),
        permission_sets=tuple(document.get("permission_sets", [])),
        field_name=document.get("field"),
        values=MappingProxyType(record_values),
    )


def _compile_rule_test(document: Mapping[str, Any]) -> RuleTest:
    return RuleTest(
        name=document["name"],
        cases=tuple(_compile_rule_case(case) for case in document["cases"]),
    )


def _compile_rule_case(document: Mapping[str, Any]) -> RuleCase:
    """Compile one rule case. The record and the computed values stay in JSON
    form: the runner loads the record through the entity's schema, as the API
    does."""
    now = document.get("now")
    errors = {
        key: tuple(expected) for key, expected in document.get("errors", {}).items()
    }
    return RuleCase(
        description=document["description"],
        entity=document["entity"],
        record=MappingProxyType(copy.deepcopy(dict(document["record"]))),
        role=document.get("user", {}).get("role"),
        now=None if now is None else values.parse_datetime(now),
        errors=MappingProxyType(errors),
        valid=document.get("valid", False),
        computed=MappingProxyType(copy.deepcopy(dict(document.get("computed", {})))),
    )
