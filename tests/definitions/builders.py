"""Build definition documents as dicts and write them as definition folders."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from metadata_engine.errors import DefinitionError, Problem

HERE = Path(__file__).resolve().parent
#: A definition with two entities, stored as files.
MINIMAL = HERE / "minimal"
#: A definition that extends MINIMAL by relative path.
EXTENSION = HERE / "extension"


def manifest(**changes: Any) -> dict[str, Any]:
    """Return a valid definition.json document with ``changes`` applied."""
    document = {"format": 1, "name": "demo", "label": "Demo", "version": "1.0.0"}
    document.update(changes)
    return document


def field(name: str, field_type: str = "text", **changes: Any) -> dict[str, Any]:
    """Return a field document labelled after its name."""
    document = {"name": name, "type": field_type, "label": name.title()}
    document.update(changes)
    return document


def entity(name: str, *fields: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Return an entity document whose title field ``name`` comes first."""
    document: dict[str, Any] = {
        "name": name,
        "label": name.title(),
        "title_field": "name",
        "fields": [field("name"), *fields],
    }
    document.update(changes)
    return document


def documents(*entities: dict[str, Any], **manifest_changes: Any) -> dict[str, Any]:
    """Return documents keyed by path, as ``compile_documents`` takes them."""
    result: dict[str, Any] = {"definition.json": manifest(**manifest_changes)}
    for document in entities:
        result[f"entities/{document['name']}.json"] = document
    return result


def write_folder(folder: Path, files: Mapping[str, Any]) -> Path:
    """Write ``files`` (path -> document, text or bytes) under ``folder``."""
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            text = json.dumps(content, indent=2, ensure_ascii=False)
            path.write_text(text, encoding="utf-8")
    return folder


def problems_of(action: Callable[[], object]) -> list[Problem]:
    """Run ``action`` and return the problems of the DefinitionError it raises."""
    with pytest.raises(DefinitionError) as caught:
        action()
    return caught.value.problems
