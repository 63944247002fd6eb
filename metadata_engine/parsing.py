"""Parse and schema-validate the documents of one definition folder.

Works on bytes and parsed JSON only, so that documents from files and from
the platform's database go through the same validation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from jsonschema.exceptions import ValidationError

from metadata_engine.checks import check_file_name
from metadata_engine.errors import Problem
from metadata_engine.merge import (
    MANIFEST_KEY,
    PERMISSION_DIRS,
    EntityFile,
    FolderDocuments,
    PermissionFile,
    document_folder,
)
from metadata_engine.schema_validation import (
    ENTITY_SCHEMA,
    MANIFEST_SCHEMA,
    PathItem,
    _sort_key,
    _Translator,
    _validator,
    validate_document,
)

GRANTEE_SCHEMA = "grantee.schema.json"
SHARING_RULE_SCHEMA = "sharing_rule.schema.json"
PERMISSION_TEST_SCHEMA = "permission_test.schema.json"
RULE_TEST_SCHEMA = "rule_test.schema.json"
WORKFLOW_SCHEMA = "workflow.schema.json"
AUTOMATION_SCHEMA = "automation.schema.json"
#: The schema of each permission folder, and the noun for one of its documents.
PERMISSION_SCHEMAS: dict[str, tuple[str, str]] = {
    "roles": (GRANTEE_SCHEMA, "role"),
    "permission_sets": (GRANTEE_SCHEMA, "permission set"),
    "sharing_rules": (SHARING_RULE_SCHEMA, "sharing rule"),
    "permission_tests": (PERMISSION_TEST_SCHEMA, "permission test"),
    "rule_tests": (RULE_TEST_SCHEMA, "rule test"),
    "workflows": (WORKFLOW_SCHEMA, "workflow"),
    "automations": (AUTOMATION_SCHEMA, "automation rule"),
}
#: Singular nouns for the items of the lists of permission documents.
_PERMISSION_ITEM_NOUNS = {
    "read": "scope",
    "edit": "scope",
    "delete": "scope",
    "where": "condition",
    "roles": "role",
    "teams": "team",
    "cases": "case",
    "permission_sets": "permission set",
    "transitions": "transition",
    "actions": "action",
    "from": "state",
    "required_fields": "field",
}

_FIELD_POINTER = re.compile(r"/fields/(\d+)(?:/|$)")


def parse_json(file: str, data: bytes) -> tuple[Any, Problem | None]:
    """Decode UTF-8 JSON, or return a problem with the line and column."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return None, Problem(
            file,
            "",
            f"file is not valid UTF-8: byte {data[err.start]:#04x} at offset "
            f"{err.start}",
            "save the file as UTF-8",
        )
    try:
        return json.loads(text), None
    except json.JSONDecodeError as err:
        return None, Problem(
            file,
            "",
            f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}",
            "fix the JSON syntax at that place",
        )
    except (RecursionError, ValueError) as err:
        # Nesting deeper than the interpreter's recursion limit, or an
        # integer literal longer than Python's 4,300-digit conversion limit.
        return None, Problem(
            file,
            "",
            f"JSON cannot be read: {type(err).__name__}",
            "flatten the nesting and keep numbers under 4,300 digits",
        )


def collect_folder(
    parsed: Mapping[str, Any], *, prefix: str, manifest_exists: bool
) -> FolderDocuments:
    """Validate each parsed document against its schema and sort them out."""
    manifest_file = prefix + MANIFEST_KEY
    result = FolderDocuments(manifest_file, None, [], set(), [])
    if not manifest_exists:
        result.problems.append(
            Problem(
                manifest_file,
                "",
                "definition.json not found",
                "add definition.json with format, name, label and version",
            )
        )
    names: dict[str, str] = {}
    permission_names: dict[str, dict[str, str]] = {}
    for key in sorted(parsed):
        file = prefix + key
        document = parsed[key]
        folder = document_folder(key)
        if folder in PERMISSION_DIRS:
            by_name = permission_names.setdefault(folder, {})
            _collect_permission(result, file, folder, document, by_name)
            continue
        schema = MANIFEST_SCHEMA if key == MANIFEST_KEY else ENTITY_SCHEMA
        problems = validate_document(file, document, schema)
        if key == MANIFEST_KEY:
            result.problems += problems
            result.manifest = None if problems else document
            continue
        entity = EntityFile(file, document)
        if problems:
            result.problems += problems
            pruned = _without_broken_fields(entity, problems)
            if pruned is None:
                result.broken |= _names_of(key, document)
                continue
            entity, broken_fields = pruned
            result.broken_fields.setdefault(document["name"], set()).update(
                broken_fields
            )
        # A file named after another entity is reported, but its content is
        # still checked, so that a duplicate name is reported as such.
        result.problems += check_file_name(file, document)
        name = document["name"]
        if name in names:
            result.problems.append(
                Problem(
                    file,
                    "/name",
                    f"entity name {name!r} is already used by {names[name]}",
                    "give every entity a unique name",
                )
            )
            continue
        names[name] = file
        result.entities.append(entity)
    return result


def _collect_permission(
    result: FolderDocuments,
    file: str,
    folder: str,
    document: Any,
    names: dict[str, str],
) -> None:
    """Validate one permission document and add it to ``result`` if valid."""
    schema, noun = PERMISSION_SCHEMAS[folder]
    problems = validate_permission_document(file, document, schema, noun)
    if problems:
        result.problems += problems
        result.broken_documents |= {
            f"{folder}/{name}.json" for name in _names_of(file, document)
        }
        return
    result.problems += check_file_name(file, document, noun)
    name = document["name"]
    if name in names:
        result.problems.append(
            Problem(
                file,
                "/name",
                f"{noun} name {name!r} is already used by {names[name]}",
                f"give every {noun} a unique name",
            )
        )
        return
    names[name] = file
    result.permissions.append(PermissionFile(file, folder, document))


def validate_permission_document(
    file: str, document: Any, schema_file: str, noun: str
) -> list[Problem]:
    """Validate a permission document, naming it as ``noun`` in problems."""
    errors = sorted(_validator(schema_file).iter_errors(document), key=_sort_key)
    translator = _PermissionTranslator(file, document, schema_file, noun)
    problems: list[Problem] = []
    for error in errors:
        for problem in translator.translate(error):
            if problem not in problems:
                problems.append(problem)
    return problems


class _PermissionTranslator(_Translator):
    """Translator of schema errors that names permission documents and items."""

    def __init__(self, file: str, document: Any, schema_file: str, noun: str) -> None:
        super().__init__(file, document, schema_file)
        self.root_noun = f"the {noun}"

    def _item_name(self, path: Sequence[PathItem]) -> str:
        parent = str(path[-2]) if len(path) >= 2 else ""
        if parent not in _PERMISSION_ITEM_NOUNS:
            return super()._item_name(path)
        return f"{_PERMISSION_ITEM_NOUNS[parent]} {path[-1]}"

    def _on_minItems(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        key = str(path[-1]) if path else ""
        if key not in _PERMISSION_ITEM_NOUNS:
            return super()._on_minItems(error, path)
        message = f"{self._subject(path)} must not be empty"
        hint = f"add at least one {_PERMISSION_ITEM_NOUNS[key]}"
        if key in ("read", "edit", "delete"):
            hint += ", or use false to grant none"
        return [self._problem(path, message, hint)]


def _without_broken_fields(
    entity: EntityFile, problems: list[Problem]
) -> tuple[EntityFile, set[str]] | None:
    """Leave out the fields that ``problems`` are about, if they are all in fields.

    The rest of the entity is then valid and its semantic checks can still run,
    so that the author gets those problems in the same run.
    """
    bad_indexes: set[int] = set()
    for problem in problems:
        match = _FIELD_POINTER.match(problem.pointer)
        if match is None:
            return None
        bad_indexes.add(int(match.group(1)))
    fields = entity.document["fields"]
    kept_indexes = [index for index in range(len(fields)) if index not in bad_indexes]
    names = {
        fields[index]["name"]
        for index in bad_indexes
        if isinstance(fields[index], dict)
        and isinstance(fields[index].get("name"), str)
    }
    document = {**entity.document, "fields": [fields[i] for i in kept_indexes]}
    return EntityFile(entity.file, document, kept_indexes), names


def _names_of(key: str, document: Any) -> set[str]:
    """Return the entity names a broken file may have been meant to declare."""
    names = {PurePosixPath(key).stem}
    if isinstance(document, dict) and isinstance(document.get("name"), str):
        names.add(document["name"])
    return names
