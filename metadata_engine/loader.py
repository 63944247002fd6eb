"""Load a tenant definition folder, or stored documents, into a Definition.

``read_folder`` is the only function of the engine that reads definition
files. Everything after it works on parsed documents, so that the platform
can compile documents it stored in its database with ``compile_documents``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from metadata_engine.checks import check_documents
from metadata_engine.compiler import compile_definition, normalize_documents
from metadata_engine.errors import DefinitionError, Problem
from metadata_engine.merge import (
    ENTITIES_DIR,
    MANIFEST_KEY,
    PERMISSION_DIRS,
    FolderDocuments,
    Layer,
    document_folder,
    is_entity_key,
    merge_folder,
)
from metadata_engine.model import Definition
from metadata_engine.parsing import collect_folder, parse_json

logger = logging.getLogger("metadata_engine")

TEMPLATES_ENV = "METACRM_TEMPLATES_DIR"
DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "tenant_definitions"
#: The document keys that ``compile_documents`` accepts, for its problems.
_KEY_NAMES = [
    f"'{key}'"
    for key in (
        MANIFEST_KEY,
        *(f"{folder}/NAME.json" for folder in (ENTITIES_DIR, *PERMISSION_DIRS)),
    )
]
_DOCUMENT_KEYS = ", ".join(_KEY_NAMES[:-1]) + " or " + _KEY_NAMES[-1]


def templates_dir_default() -> Path:
    """Return ``$METACRM_TEMPLATES_DIR``, or the repository's tenant_definitions/."""
    configured = os.environ.get(TEMPLATES_ENV)
    return Path(configured) if configured else DEFAULT_TEMPLATES_DIR


def load_definition(
    path: str | Path, *, templates_dir: str | Path | None = None
) -> Definition:
    """Load, merge, validate and compile the definition folder at ``path``.

    ``extends`` in definition.json names a base folder: a relative path, or a
    template under ``templates_dir`` (see ``templates_dir_default``). Raises
    DefinitionError listing every problem in every file, bases included.
    """
    folder = Path(path).resolve()
    templates = Path(templates_dir) if templates_dir else templates_dir_default()
    layer = _load_layer(folder, templates.resolve(), top=folder, chain=())
    definition = _finish(layer)
    logger.info(
        "loaded definition %s %s from %s (%s entities, hash %s)",
        definition.name,
        definition.version,
        folder,
        len(definition.entities),
        definition.content_hash[:12],
    )
    return definition


#: Compiled definitions by (folder, templates directory), with the file
#: signature they were compiled from; see ``load_definition_cached``.
_LOADED: dict[tuple[Path, Path], tuple[tuple[Any, ...], Definition]] = {}
_LOADED_LOCK = threading.Lock()


def load_definition_cached(
    path: str | Path, *, templates_dir: str | Path | None = None
) -> Definition:
    """Return ``load_definition(path)``, compiled again only when a JSON file
    of the folder or of the templates directory changed (size or modification
    time).

    Provisioning many tenants from one template then validates it once:
    validation and compilation take about 80% of creating a tenant.
    Definitions are immutable, so callers may share one.
    """
    # NOTE: a base that ``extends`` names by a relative path outside both
    # folders is not in the signature, so a change there is not noticed
    # until the process restarts.
    folder = Path(path).resolve()
    templates = (
        Path(templates_dir) if templates_dir else templates_dir_default()
    ).resolve()
    signature = _file_signature(folder) + _file_signature(templates)
    key = (folder, templates)
    with _LOADED_LOCK:
        cached = _LOADED.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    definition = load_definition(folder, templates_dir=templates)
    with _LOADED_LOCK:
        _LOADED[key] = (signature, definition)
    return definition


def _file_signature(folder: Path) -> tuple[Any, ...]:
    """Return the path, size and modification time of every JSON file under
    ``folder``, in a stable order."""
    if not folder.is_dir():
        return ((str(folder), None),)
    entries = []
    for item in sorted(folder.rglob("*.json")):
        stat = item.stat()
        entries.append((str(item), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def compile_documents(documents: Mapping[str, Any]) -> Definition:
    """Validate and compile merged documents keyed by their path in the folder.

    The keys are ``definition.json``, ``entities/NAME.json``, and
    ``FOLDER/NAME.json`` for the folders roles, permission_sets, sharing_rules,
    permission_tests and rule_tests. The documents must not extend a base:
    pass ``Definition.documents`` of a loaded definition.
    """
    problems: list[Problem] = []
    parsed: dict[str, Any] = {}
    for key, document in documents.items():
        if key == MANIFEST_KEY or document_folder(key) is not None:
            parsed[key] = document
        else:
            problems.append(
                Problem(
                    key,
                    "",
                    f"unexpected document key {key!r}",
                    f"use {_DOCUMENT_KEYS}",
                )
            )
    folder = collect_folder(parsed, prefix="", manifest_exists=MANIFEST_KEY in parsed)
    folder.problems[:0] = problems
    _reject_unmerged(folder)
    return _finish(merge_folder(folder, None))


def _reject_unmerged(folder: FolderDocuments) -> None:
    manifest = folder.manifest
    if manifest is not None and manifest.get("extends") is not None:
        folder.problems.append(
            Problem(
                folder.manifest_file,
                "/extends",
                f"stored documents still extend {manifest['extends']!r}",
                "store Definition.documents of a loaded definition, which are merged",
            )
        )
    for entity in list(folder.entities):
        if entity.document.get("extend") is True:
            folder.entities.remove(entity)
            folder.broken.add(entity.document["name"])
            folder.problems.append(
                Problem(
                    entity.file,
                    "/extend",
                    f"stored entity {entity.document['name']!r} is an unmerged "
                    "extension",
                    "store Definition.documents of a loaded definition, which are "
                    "merged",
                )
            )


def _finish(layer: Layer) -> Definition:
    problems = list(layer.problems)
    problems += check_documents(
        layer.documents,
        layer.locate,
        layer.broken,
        layer.broken_fields,
        layer.broken_documents,
    )
    if problems:
        raise DefinitionError(problems)
    return compile_definition(normalize_documents(layer.documents))


# Reading files --------------------------------------------------------------


@dataclass
class FolderFiles:
    """The raw bytes of one definition folder's files, keyed by relative path."""

    files: dict[str, bytes] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    found: bool = True
    has_entities_dir: bool = False


def read_folder(folder: Path) -> FolderFiles:
    """Read definition.json, entities/*.json and the *.json files of the
    permission folders, the only definition files read."""
    result = FolderFiles()
    if not folder.is_dir():
        result.found = False
        result.problems.append(
            Problem(
                ".",
                "",
                f"definition folder {str(folder)!r} not found",
                "pass the path of a folder that contains definition.json",
            )
        )
        return result
    manifest = folder / MANIFEST_KEY
    paths = [manifest] if manifest.is_file() else []
    result.has_entities_dir = (folder / ENTITIES_DIR).is_dir()
    for name in (ENTITIES_DIR, *PERMISSION_DIRS):
        paths += _json_files(folder / name)
    for path in paths:
        key = path.relative_to(folder).as_posix()
        try:
            result.files[key] = path.read_bytes()
        except OSError as err:
            result.problems.append(
                Problem(key, "", f"cannot read {key}: {err}", "check the file")
            )
    return result


def _json_files(directory: Path) -> list[Path]:
    """Return the visible *.json files of ``directory``, sorted, if it exists."""
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.glob("*.json")
        if path.is_file() and not path.name.startswith(".")
    )


def _find_base(folder: Path, extends: str, templates: Path) -> tuple[Path, str]:
    """Return the folder that ``extends`` names, and a hint in case it is missing."""
    if "/" in extends or "\\" in extends or extends.startswith("."):
        candidate = (folder / extends).resolve()
        return (
            candidate,
            f"no folder {str(candidate)!r}; give a path relative to {str(folder)!r}",
        )
    candidate = (templates / extends).resolve()
    available = []
    if templates.is_dir():
        available = sorted(
            path.name for path in templates.iterdir() if (path / MANIFEST_KEY).is_file()
        )
    hint = (
        f"templates in {str(templates)!r}: {', '.join(available) or 'none'}; "
        "or give a relative path such as '../base'"
    )
    return candidate, hint


# Resolving extends -------------------------------------------------------------


def _load_layer(
    folder: Path, templates: Path, *, top: Path, chain: tuple[Path, ...]
) -> Layer:
    """Load ``folder`` merged onto its bases, collecting problems on the way."""
    prefix = _display_prefix(folder, top)
    raw = read_folder(folder)
    if not raw.found:
        return Layer({}, {}, set(), raw.problems)
    documents, extends = _parse_folder(raw, prefix)
    if extends is None:
        _require_entities(documents, raw, prefix)
        return merge_folder(documents, None)

    base_folder, hint = _find_base(folder, extends, templates)
    if not base_folder.is_dir():
        message = f"base definition {extends!r} not found"
        documents.problems.append(_extends_problem(prefix, message, hint))
        return merge_folder(documents, _missing_base(documents))
    if base_folder in (*chain, folder):
        cycle = " -> ".join(
            _display_prefix(path, top).rstrip("/") or "."
            for path in (*chain, folder, base_folder)
        )
        message = f"extends {extends!r} forms a cycle: {cycle}"
        hint = "make one definition in the cycle extend no base"
        documents.problems.append(_extends_problem(prefix, message, hint))
        return merge_folder(documents, _missing_base(documents))
    base = _load_layer(base_folder, templates, top=top, chain=(*chain, folder))
    return merge_folder(documents, base)


def _parse_folder(raw: FolderFiles, prefix: str) -> tuple[FolderDocuments, str | None]:
    """Parse and validate a folder's files, and return them with their ``extends``."""
    parsed: dict[str, Any] = {}
    parse_problems: list[Problem] = []
    for key, data in raw.files.items():
        document, problem = parse_json(prefix + key, data)
        if problem is None:
            parsed[key] = document
        else:
            parse_problems.append(problem)
    documents = collect_folder(
        parsed, prefix=prefix, manifest_exists=MANIFEST_KEY in raw.files
    )
    read_problems = [_prefixed(problem, prefix) for problem in raw.problems]
    documents.problems[:0] = read_problems + parse_problems
    for key in raw.files:
        if key in parsed or key == MANIFEST_KEY:
            continue
        if is_entity_key(key):
            documents.broken.add(PurePosixPath(key).stem)
        else:
            documents.broken_documents.add(key)
    return documents, _extends_of(parsed.get(MANIFEST_KEY))


def _missing_base(documents: FolderDocuments) -> Layer:
    """Return an empty base in which every extended entity counts as broken.

    The missing base is then reported once rather than once per extension.
    """
    extended = {entity.document["name"] for entity in documents.entities}
    return Layer({}, {}, extended, [])


def _extends_problem(prefix: str, message: str, hint: str) -> Problem:
    return Problem(prefix + MANIFEST_KEY, "/extends", message, hint)


def _extends_of(manifest: Any) -> str | None:
    if not isinstance(manifest, dict):
        return None
    extends = manifest.get("extends")
    return extends if isinstance(extends, str) and extends else None


def _require_entities(
    documents: FolderDocuments, raw: FolderFiles, prefix: str
) -> None:
    if not raw.has_entities_dir:
        documents.problems.append(
            Problem(
                prefix + ENTITIES_DIR,
                "",
                "entities folder not found",
                "create entities/ with one NAME.json file per entity",
            )
        )
    elif not any(is_entity_key(key) for key in raw.files):
        documents.problems.append(
            Problem(
                prefix + ENTITIES_DIR,
                "",
                "entities folder contains no .json files",
                "add one NAME.json file per entity",
            )
        )


def _display_prefix(folder: Path, top: Path) -> str:
    """Return the prefix that names ``folder``'s files relative to ``top``."""
    if folder == top:
        return ""
    return Path(os.path.relpath(folder, top)).as_posix() + "/"


def _prefixed(problem: Problem, prefix: str) -> Problem:
    if not prefix:
        return problem
    return Problem(
        prefix + problem.file, problem.pointer, problem.message, problem.hint
    )
