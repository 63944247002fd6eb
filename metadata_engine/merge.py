"""Merge a definition folder onto its base, remembering where each part came from.

Problems found in merged documents must point at the file and JSON pointer the
author wrote, not at the merged document. A SourceMap records, for parts of a
merged document, the file and pointer they were copied from.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from metadata_engine.errors import Problem

MANIFEST_KEY = "definition.json"
ENTITIES_DIR = "entities"
#: Folders of documents next to entities/, with one NAME.json per role,
#: permission set, sharing rule, permission test, rule test, workflow or
#: automation rule. The last three are not about permissions but load, merge
#: and replace by name the same way.
PERMISSION_DIRS: tuple[str, ...] = (
    "roles",
    "permission_sets",
    "sharing_rules",
    "permission_tests",
    "rule_tests",
    "workflows",
    "automations",
)

#: Entity properties that an extension replaces when it sets them.
REPLACED_BY_EXTENSION = (
    "label",
    "plural_label",
    "description",
    "icon",
    "form",
    "list_views",
)
#: Entity lists that an extension appends to.
APPENDED_BY_EXTENSION = ("fields", "indexes", "unique", "validation_rules")


def entity_key(name: str) -> str:
    """Return the document key of the entity called ``name``."""
    return f"{ENTITIES_DIR}/{name}.json"


def document_folder(key: str) -> str | None:
    """Return the folder of a ``FOLDER/NAME.json`` document key, if the folder
    is entities/ or a permission folder, else None."""
    path = PurePosixPath(key)
    if len(path.parts) != 2 or path.suffix != ".json":
        return None
    folder = path.parts[0]
    if folder == ENTITIES_DIR or folder in PERMISSION_DIRS:
        return folder
    return None


def is_entity_key(key: str) -> bool:
    return document_folder(key) == ENTITIES_DIR


@dataclass
class SourceMap:
    """Maps JSON pointers of one merged document to the file they came from.

    A pointer that no entry covers belongs to ``file`` at the same pointer.
    The longest entry that is a whole-segment prefix of a pointer wins.
    """

    file: str
    entries: dict[str, tuple[str, str]] = field(default_factory=dict)

    def assign(self, prefix: str, file: str, original: str) -> None:
        """Record that ``prefix`` and everything under it came from ``file``."""
        covered = [key for key in self.entries if _is_under(key, prefix)]
        for key in covered:
            del self.entries[key]
        self.entries[prefix] = (file, original)

    def locate(self, pointer: str) -> tuple[str, str]:
        best = ""
        for prefix in self.entries:
            if _is_under(pointer, prefix) and len(prefix) > len(best):
                best = prefix
        if not best:
            return self.file, pointer
        file, original = self.entries[best]
        return file, original + pointer[len(best) :]

    def copy(self) -> SourceMap:
        return SourceMap(self.file, dict(self.entries))


def _is_under(pointer: str, prefix: str) -> bool:
    return pointer == prefix or pointer.startswith(prefix + "/")


@dataclass
class EntityFile:
    """A schema-valid entity document and the file it was read from."""

    file: str
    document: dict[str, Any]
    #: The index in the file of each field of ``document``, when fields that
    #: failed validation were left out of it.
    field_origins: list[int] | None = None

    def field_origin(self, index: int) -> int:
        """Return the index in the file of the field at ``index`` of ``document``."""
        return index if self.field_origins is None else self.field_origins[index]


@dataclass
class PermissionFile:
    """A schema-valid role, permission set, sharing rule, permission test or
    rule test."""

    file: str
    folder: str
    document: dict[str, Any]

    @property
    def key(self) -> str:
        """Return the merged document key, ``FOLDER/NAME.json``."""
        return f"{self.folder}/{self.document['name']}.json"


@dataclass
class FolderDocuments:
    """The schema-valid documents of one definition folder, before merging."""

    manifest_file: str
    manifest: dict[str, Any] | None
    entities: list[EntityFile]
    #: Names of entities whose files failed to parse or validate. Checks skip
    #: references to them, so one broken file does not cause follow-on problems.
    broken: set[str]
    problems: list[Problem]
    #: Names of fields, by entity, that failed validation and were left out.
    broken_fields: dict[str, set[str]] = field(default_factory=dict)
    permissions: list[PermissionFile] = field(default_factory=list)
    #: Keys (``roles/NAME.json`` and so on) of permission documents that failed
    #: to parse or validate. References to them are not reported again.
    broken_documents: set[str] = field(default_factory=set)


@dataclass
class Layer:
    """A definition merged with all its bases."""

    documents: dict[str, dict[str, Any]]
    sources: dict[str, SourceMap]
    broken: set[str]
    problems: list[Problem]
    broken_fields: dict[str, set[str]] = field(default_factory=dict)
    broken_documents: set[str] = field(default_factory=set)

    def locate(self, key: str, pointer: str) -> tuple[str, str]:
        """Return the file and pointer that the merged ``key#pointer`` came from."""
        if key in self.sources:
            return self.sources[key].locate(pointer)
        return key, pointer


def merge_folder(folder: FolderDocuments, base: Layer | None) -> Layer:
    """Merge ``folder`` onto ``base`` (or onto nothing) and return the new layer."""
    has_base = base is not None
    if base is None:
        base = Layer({}, {}, set(), [])
    layer = Layer(
        documents=copy.deepcopy(base.documents),
        sources={key: source.copy() for key, source in base.sources.items()},
        broken=base.broken | folder.broken,
        problems=[*base.problems, *folder.problems],
        broken_fields={name: set(names) for name, names in base.broken_fields.items()},
        broken_documents=base.broken_documents | folder.broken_documents,
    )
    for name, names in folder.broken_fields.items():
        layer.broken_fields.setdefault(name, set()).update(names)
    if folder.manifest is not None:
        _merge_manifest(layer, folder.manifest_file, folder.manifest)
    else:
        layer.documents.pop(MANIFEST_KEY, None)
    base_names = {
        doc["name"] for key, doc in base.documents.items() if is_entity_key(key)
    }
    for entity in folder.entities:
        if entity.document.get("extend") is not True:
            _add_entity(layer, entity, base_names)
        elif not has_base:
            layer.problems.append(_extension_without_base(entity))
        else:
            _merge_extension(layer, entity, base_names, base.broken)
    for permission in folder.permissions:
        # A permission document replaces the base's document of the same
        # folder and name whole, so that an extension can redefine a role.
        layer.documents[permission.key] = copy.deepcopy(permission.document)
        layer.sources[permission.key] = SourceMap(permission.file)
    return layer


def _merge_manifest(layer: Layer, file: str, manifest: Mapping[str, Any]) -> None:
    merged = layer.documents.get(MANIFEST_KEY)
    if merged is None:
        layer.documents[MANIFEST_KEY] = dict(manifest)
        layer.sources[MANIFEST_KEY] = SourceMap(file)
        return
    source = layer.sources[MANIFEST_KEY]
    for key, value in manifest.items():
        merged[key] = copy.deepcopy(value)
        source.assign(f"/{key}", file, f"/{key}")


def _add_entity(layer: Layer, entity: EntityFile, base_names: set[str]) -> None:
    name = entity.document["name"]
    if name in base_names:
        base_file = layer.sources[entity_key(name)].file
        layer.problems.append(
            Problem(
                entity.file,
                "/name",
                f"entity {name!r} already exists in the base definition ({base_file})",
                'set "extend": true to add to it, or choose another name',
            )
        )
        return
    key = entity_key(name)
    layer.documents[key] = copy.deepcopy(entity.document)
    source = SourceMap(entity.file)
    for index in range(len(entity.document["fields"])):
        origin = entity.field_origin(index)
        if origin != index:
            source.assign(f"/fields/{index}", entity.file, f"/fields/{origin}")
    layer.sources[key] = source


def _merge_extension(
    layer: Layer, entity: EntityFile, base_names: set[str], base_broken: set[str]
) -> None:
    document = entity.document
    name = document["name"]
    if name not in base_names:
        if name not in base_broken:
            layer.problems.append(_missing_base_entity(entity, name, base_names))
        return
    if "title_field" in document:
        layer.problems.append(
            Problem(
                entity.file,
                "/title_field",
                f"an extension cannot change the title field of entity {name!r}",
                "remove title_field; the base entity's title field stays",
            )
        )
    key = entity_key(name)
    merged = layer.documents[key]
    source = layer.sources[key]
    for prop in REPLACED_BY_EXTENSION:
        if prop in document:
            merged[prop] = copy.deepcopy(document[prop])
            source.assign(f"/{prop}", entity.file, f"/{prop}")
    existing = {item["name"] for item in merged.get("fields", [])}
    for prop in APPENDED_BY_EXTENSION:
        items = document.get(prop, [])
        if not items:
            continue
        target = merged.setdefault(prop, [])
        for index, item in enumerate(items):
            if prop == "fields":
                index = entity.field_origin(index)
                if item["name"] in existing:
                    layer.problems.append(
                        _duplicate_base_field(entity, index, item, name)
                    )
                    continue
            source.assign(f"/{prop}/{len(target)}", entity.file, f"/{prop}/{index}")
            target.append(copy.deepcopy(item))


def _extension_without_base(entity: EntityFile) -> Problem:
    return Problem(
        entity.file,
        "/extend",
        f'entity {entity.document["name"]!r} sets "extend": true, but the '
        "definition extends no base",
        'set "extends" in definition.json, or remove "extend": true',
    )


def _missing_base_entity(
    entity: EntityFile, name: str, base_names: set[str]
) -> Problem:
    known = ", ".join(sorted(base_names)) or "none"
    return Problem(
        entity.file,
        "/extend",
        f"extension entity {name!r} has no base entity to extend",
        f'remove "extend": true to declare a new entity; base entities: {known}',
    )


def _duplicate_base_field(
    entity: EntityFile, index: int, item: Mapping[str, Any], name: str
) -> Problem:
    return Problem(
        entity.file,
        f"/fields/{index}/name",
        f"field {item['name']!r} already exists in base entity {name!r}",
        "rename the field; an extension can add fields but not change base fields",
    )
