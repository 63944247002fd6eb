"""Semantic checks of merged, schema-valid documents, across all files.

Every check reports into one list, so that a definition's author gets every
problem in one run. Problems are located through a ``locate`` callback that
maps a merged document's pointer back to the file the author wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import PurePosixPath
from typing import Any

from metadata_engine import rules
from metadata_engine.errors import Problem
from metadata_engine.field_checks import check_field, check_sensitive
from metadata_engine.layout_checks import (
    EntityFields,
    Report,
    check_filter,
    check_form,
    check_indexes,
    check_list_view,
    suggest,
)
from metadata_engine.merge import MANIFEST_KEY, document_folder, is_entity_key
from metadata_engine.model import SYSTEM_COLUMNS
from metadata_engine.permission_checks import References, check_permissions
from metadata_engine.process_checks import check_processes
from metadata_engine.record_rule_checks import check_record_rules
from metadata_engine.rule_test_checks import check_rule_tests

#: Maps (document key, pointer) of a merged document to (file, pointer).
Locate = Callable[[str, str], tuple[str, str]]

Document = Mapping[str, Any]


class Reporter:
    """Collects Problems for merged documents, located in the authors' files."""

    def __init__(self, locate: Locate) -> None:
        self.locate = locate
        self.problems: list[Problem] = []

    def add(self, key: str, pointer: str, message: str, hint: str) -> None:
        file, original = self.locate(key, pointer)
        self.problems.append(Problem(file, original, message, hint))

    def for_document(self, key: str) -> Report:
        """Return a reporting function bound to the document ``key``."""

        def report(pointer: str, message: str, hint: str) -> None:
            self.add(key, pointer, message, hint)

        return report


def check_documents(
    documents: Mapping[str, Document],
    locate: Locate,
    broken: Collection[str] = (),
    broken_fields: Mapping[str, Collection[str]] | None = None,
    broken_documents: Collection[str] = (),
) -> list[Problem]:
    """Run every semantic check and return the problems found.

    ``broken`` names entities whose files failed schema validation, and
    ``broken_fields`` the fields of each entity that did. ``broken_documents``
    contains the keys of permission documents that did. All of them count as
    existing for references, so that one mistake is reported only once.
    """
    reporter = Reporter(locate)
    manifest = documents.get(MANIFEST_KEY)
    if manifest is not None:
        _check_manifest(reporter.for_document(MANIFEST_KEY), manifest)
    entities = {key: doc for key, doc in documents.items() if is_entity_key(key)}
    known = {doc["name"] for doc in entities.values()} | set(broken)
    skipped = broken_fields or {}
    for key, entity in entities.items():
        report = reporter.for_document(key)
        _check_entity(report, entity, known, skipped.get(entity["name"], ()))
    by_entity = {doc["name"]: doc for doc in entities.values()}
    for key, entity in entities.items():
        _check_rollups(reporter.for_document(key), entity, by_entity, set(broken))
    references = References(
        entities={doc["name"]: doc for doc in entities.values()},
        broken_entities=frozenset(broken),
        broken_fields=skipped,
        broken_documents=frozenset(broken_documents),
    )
    check_permissions(reporter.for_document, documents, references)
    check_rule_tests(
        reporter.for_document,
        _in_folder(documents, "rule_tests"),
        _in_folder(documents, "roles"),
        references,
    )
    processes = {
        **_in_folder(documents, "workflows"),
        **_in_folder(documents, "automations"),
    }
    check_processes(
        reporter.for_document,
        processes,
        references,
        [doc["name"] for doc in _in_folder(documents, "roles").values()],
        [
            *_in_folder(documents, "roles").values(),
            *_in_folder(documents, "permission_sets").values(),
        ],
    )
    return reporter.problems


def _in_folder(documents: Mapping[str, Document], folder: str) -> dict[str, Document]:
    return {
        key: document
        for key, document in documents.items()
        if document_folder(key) == folder
    }


def check_file_name(
    file: str, document: Document, noun: str = "entity"
) -> list[Problem]:
    """Check that a file is named after the entity (or other ``noun``) it
    declares."""
    expected = f"{document['name']}.json"
    actual = PurePosixPath(file).name
    if actual == expected:
        return []
    return [
        Problem(
            file,
            "/name",
            f"{noun} {document['name']!r} is in file {actual!r}",
            f"rename the file to {expected!r} or change the {noun} name",
        )
    ]


def _check_manifest(report: Report, manifest: Document) -> None:
    default_locale = manifest.get("default_locale", rules.DEFAULT_LOCALE)
    locales = manifest.get("locales", [default_locale])
    if default_locale not in locales:
        report(
            "/default_locale",
            f"default locale {default_locale!r} is not in locales {locales!r}",
            f"add {default_locale!r} to locales or use one of: {', '.join(locales)}",
        )


def _check_name(report: Report, pointer: str, name: str, kind: str) -> None:
    if name in SYSTEM_COLUMNS:
        report(
            pointer,
            f"{kind} name {name!r} is reserved for a system column",
            "rename it; every entity table has the columns "
            + ", ".join(SYSTEM_COLUMNS),
        )
    if kind == "entity" and name in rules.RESERVED_ENTITY_NAMES:
        report(
            pointer,
            f"entity name {name!r} is reserved for a path of the web UI or API",
            "rename it; these names are reserved: "
            + ", ".join(sorted(rules.RESERVED_ENTITY_NAMES)),
        )
    if kind == "field" and name in rules.QUERY_PARAMETERS:
        report(
            pointer,
            f"field name {name!r} is reserved for a query parameter of list "
            "requests",
            "rename it; these names are reserved: "
            + ", ".join(sorted(rules.QUERY_PARAMETERS)),
        )
    for prefix in rules.RESERVED_PREFIXES:
        if name.startswith(prefix):
            report(
                pointer,
                f"{kind} name {name!r} starts with the reserved prefix {prefix!r}",
                "rename it; SQLite reserves names starting with sqlite_ and "
                "PostgreSQL names starting with pg_",
            )


#: Field types a roll-up may store, per function.
ROLLUP_TYPES: Mapping[str, frozenset[str]] = {
    "count": frozenset({"integer", "decimal"}),
    "sum": frozenset({"integer", "decimal", "currency", "percent"}),
    "min": frozenset({"integer", "decimal", "currency", "percent", "date", "datetime"}),
    "max": frozenset({"integer", "decimal", "currency", "percent", "date", "datetime"}),
}


def _check_rollups(
    report: Report,
    entity: Document,
    by_entity: Mapping[str, Document],
    broken: Collection[str],
) -> None:
    """Check each roll-up: a related entity whose lookup points here, a
    summarised field that fits the function, conditions like list filters."""
    fields: list[Document] = entity["fields"]
    for index, field in enumerate(fields):
        rollup = field.get("rollup")
        if rollup is None:
            continue
        pointer = f"/fields/{index}/rollup"
        function = rollup["function"]
        if field["type"] not in ROLLUP_TYPES[function]:
            report(f"{pointer}/function",
                   f"roll-up {field['name']!r} of type {field['type']!r} cannot "
                   f"store a {function}",
                   f"use a field of type {' or '.join(sorted(ROLLUP_TYPES[function]))}")
        if rollup["entity"] in broken:
            continue
        child = by_entity.get(rollup["entity"])
        if child is None:
            report(f"{pointer}/entity",
                   f"roll-up {field['name']!r} summarises entity "
                   f"{rollup['entity']!r}, which does not exist",
                   f"use one of: {', '.join(sorted(by_entity))}")
            continue
        child_fields = {item["name"]: item for item in child["fields"]}
        via = child_fields.get(rollup["via"])
        if via is None or via["type"] != "lookup" or via["target"] != entity["name"]:
            lookups = sorted(name for name, item in child_fields.items()
                             if item["type"] == "lookup"
                             and item.get("target") == entity["name"])
            report(f"{pointer}/via",
                   f"{rollup['entity']}.{rollup['via']} is not a lookup to "
                   f"{entity['name']!r}",
                   f"use one of: {', '.join(lookups) or 'none; add such a lookup'}")
            continue
        _check_rollup_field(report, pointer, rollup, child_fields)
        child_view = EntityFields(child["name"], child_fields, ())
        for position, condition in enumerate(rollup.get("where", [])):
            check_filter(report, f"{pointer}/where/{position}", condition, child_view)


def _check_rollup_field(
    report: Report,
    pointer: str,
    rollup: Document,
    child_fields: Mapping[str, Document],
) -> None:
    name = rollup.get("field")
    if rollup["function"] == "count":
        if name is not None:
            report(f"{pointer}/field", "a count roll-up counts records and takes "
                   "no field", "remove field")
        return
    summarised = child_fields.get(name) if name else None
    if summarised is None or summarised["type"] not in ROLLUP_TYPES[rollup["function"]]:
        report(f"{pointer}/field",
               f"roll-up {rollup['function']} needs a number or date field of "
               f"{rollup['entity']!r}, not {name!r}",
               "name a number, currency, percent or date field")


def _check_dependencies(
    report: Report,
    entity: Document,
    by_name: Mapping[str, Document],
    skipped: Collection[str],
) -> None:
    """Check each dependent picklist: its controlling field is another
    picklist of the entity, and every value it maps names real options."""
    fields: list[Document] = entity["fields"]
    for index, field in enumerate(fields):
        dependency = field.get("depends_on")
        if dependency is None or by_name.get(field["name"]) is not field:
            continue
        pointer = f"/fields/{index}/depends_on"
        controlling = by_name.get(dependency["field"])
        if dependency["field"] in skipped:
            continue
        if controlling is None or controlling["type"] != "picklist":
            choices = sorted(
                name for name, other in by_name.items()
                if other["type"] == "picklist" and name != field["name"]
            )
            report(
                f"{pointer}/field",
                f"dependent picklist {field['name']!r} depends on "
                f"{dependency['field']!r}, which is not a picklist field of "
                f"entity {entity['name']!r}",
                f"use one of its picklist fields: {', '.join(choices) or 'none'}",
            )
            continue
        if controlling is field:
            report(f"{pointer}/field", f"picklist {field['name']!r} depends on "
                   "itself", "name another picklist field of the entity")
            continue
        controlling_values = {option["value"] for option in controlling["options"]}
        own_values = {option["value"] for option in field["options"]}
        for key, allowed in dependency["options"].items():
            if key not in controlling_values:
                report(
                    f"{pointer}/options/{key}",
                    f"{key!r} is not an option of {dependency['field']!r}",
                    f"use one of: {', '.join(sorted(controlling_values))}",
                )
            for position, value in enumerate(allowed):
                if value not in own_values:
                    report(
                        f"{pointer}/options/{key}/{position}",
                        f"{value!r} is not an option of {field['name']!r}",
                        f"use one of: {', '.join(sorted(own_values))}",
                    )


def _check_entity(
    report: Report, entity: Document, known: Collection[str], skipped: Collection[str]
) -> None:
    _check_name(report, "/name", entity["name"], "entity")
    by_name: dict[str, Document] = {}
    for index, field in enumerate(entity["fields"]):
        pointer = f"/fields/{index}"
        name = field["name"]
        if name in by_name:
            report(
                f"{pointer}/name",
                f"field name {name!r} appears more than once in entity "
                f"{entity['name']!r}",
                "rename one of the fields; field names are unique within an entity",
            )
        else:
            by_name[name] = field
        _check_name(report, f"{pointer}/name", name, "field")
        check_field(report, pointer, field, known)
        check_sensitive(report, pointer, entity["name"], field)
    fields = EntityFields(entity["name"], by_name, skipped)
    check_record_rules(report, entity, by_name, skipped)
    _check_dependencies(report, entity, by_name, skipped)
    _check_title_field(report, entity["title_field"], fields)
    check_indexes(report, entity, fields)
    _check_sensitive_uses(report, entity, by_name)
    if "form" in entity:
        check_form(report, entity["form"], fields)
    view_names: set[str] = set()
    for index, view in enumerate(entity.get("list_views", [])):
        pointer = f"/list_views/{index}"
        if view["name"] in view_names:
            report(
                f"{pointer}/name",
                f"list view name {view['name']!r} appears more than once in entity "
                f"{entity['name']!r}",
                "give every list view of an entity a unique name",
            )
        view_names.add(view["name"])
        check_list_view(report, pointer, view, fields)


def _check_title_field(report: Report, title: str, fields: EntityFields) -> None:
    if title in fields.skipped:
        return
    if title not in fields.by_name:
        report(
            "/title_field",
            f"title field {title!r} is not a field of entity {fields.entity!r}",
            suggest(title, fields.by_name) + f"use one of: {', '.join(fields.by_name)}",
        )
        return
    field_type = fields.by_name[title]["type"]
    if field_type not in rules.TITLE_TYPES:
        report(
            "/title_field",
            f"title field {title!r} has type {field_type!r}, which cannot be a title",
            "use a field of type " + ", ".join(sorted(rules.TITLE_TYPES)),
        )


def _check_sensitive_uses(
    report: Report, entity: Document, by_name: Mapping[str, Document]
) -> None:
    """Report a sensitive field used where the database would have to read
    its plaintext: the title, an index, a saved sort or filter."""
    sensitive = {name for name, field in by_name.items() if field.get("sensitive")}
    if not sensitive:
        return
    entity_name = entity["name"]
    title = entity["title_field"]
    if title in sensitive:
        report(
            "/title_field",
            f"title field {entity_name + '.' + title!r} is sensitive, so every "
            "lookup and link would show its value",
            "choose a title field that is not sensitive",
        )
    for kind, noun in (("indexes", "index"), ("unique", "unique constraint")):
        for index, item in enumerate(entity.get(kind, [])):
            for position, name in enumerate(item["fields"]):
                if name in sensitive:
                    report(
                        f"/{kind}/{index}/fields/{position}",
                        f"{noun} contains sensitive field "
                        f"{entity_name + '.' + name!r}, whose encrypted values "
                        "cannot be indexed or compared",
                        f"remove {name!r} from the {noun}",
                    )
    for index, view in enumerate(entity.get("list_views", [])):
        _check_view_uses(report, f"/list_views/{index}", entity_name, view, sensitive)


def _check_view_uses(
    report: Report,
    pointer: str,
    entity_name: str,
    view: Document,
    sensitive: Collection[str],
) -> None:
    for index, key in enumerate(view.get("sort", [])):
        name = key.removeprefix("-")
        if name in sensitive:
            report(
                f"{pointer}/sort/{index}",
                f"list view {view['name']!r} sorts by sensitive field "
                f"{entity_name + '.' + name!r}, whose stored values are encrypted",
                "sort by a field that is not sensitive",
            )
    for index, condition in enumerate(view.get("filters", [])):
        if condition["field"] in sensitive:
            report(
                f"{pointer}/filters/{index}/field",
                f"list view {view['name']!r} filters on sensitive field "
                f"{entity_name + '.' + condition['field']!r}, whose stored values are "
                "encrypted",
                "filter on a field that is not sensitive",
            )
