"""Parse and schema-validate the documents of one definition folder.

Works on bytes and parsed JSON only, so that documents from files and from
the platform's database go through the same validation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from metadata_engine.checks import check_file_name
from metadata_engine.errors import Problem
from metadata_engine.merge import MANIFEST_KEY, EntityFile, FolderDocuments
from metadata_engine.schema_validation import (
    ENTITY_SCHEMA,
    MANIFEST_SCHEMA,
    validate_document,
)

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
    for key in sorted(parsed):
        file = prefix + key
        document = parsed[key]
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
