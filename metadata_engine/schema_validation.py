"""JSON Schema validation of definition documents, with readable problems.

jsonschema's own messages ("Unevaluated properties are not allowed") do not
say how to fix a definition, so every error is translated into a Problem
that names the bad value, its place and the fix.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from metadata_engine.errors import Problem

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
MANIFEST_SCHEMA = "definition.schema.json"
ENTITY_SCHEMA = "entity.schema.json"

PathItem = str | int

_JSON_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "null",
}

# Singular nouns for the items of each list, used to name a list item.
_ITEM_NOUNS = {
    "fields": "field",
    "options": "option",
    "sections": "form section",
    "list_views": "list view",
    "filters": "filter",
    "indexes": "index",
    "unique": "unique constraint",
    "columns": "column",
    "sort": "sort key",
    "locales": "locale",
    "modes": "mode",
}

_REQUIRED_HINTS = {
    "format": 'add "format": 1',
    "options": 'add "options": a non-empty list of {"value": ..., "label": ...}',
    "target": 'add "target" with the name of the entity this lookup points to',
    "sections": 'add "sections": a list of {"label", "fields"} objects',
}


@cache
def load_schema(file_name: str) -> dict[str, Any]:
    """Read one of the package's schema files (cached, never changed)."""
    text = (SCHEMA_DIR / file_name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator(file_name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(file_name), registry=_registry())


@cache
def _registry() -> Registry:
    """Return every schema of the package by its ``$id``, so that one
    schema can refer to the definitions of another (workflows use the
    actions of automations)."""
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.schema.json")):
        schema = load_schema(path.name)
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


@cache
def field_properties() -> dict[str, frozenset[str]]:
    """Return the properties allowed on a field of each type, read from the schema."""
    field = load_schema(ENTITY_SCHEMA)["$defs"]["field"]
    common = set(field["properties"])
    allowed: dict[str, frozenset[str]] = {}
    for rule in field["allOf"]:
        field_type = rule["if"]["properties"]["type"]["const"]
        allowed[field_type] = frozenset(common | set(rule["then"]["properties"]))
    return allowed


def validate_document(file: str, document: Any, schema_file: str) -> list[Problem]:
    """Validate ``document`` against ``schema_file`` and translate every error."""
    errors = sorted(_validator(schema_file).iter_errors(document), key=_sort_key)
    translator = _Translator(file, document, schema_file)
    problems: list[Problem] = []
    for error in errors:
        for problem in translator.translate(error):
            if problem not in problems:
                problems.append(problem)
    return problems


def json_pointer(path: Iterable[PathItem]) -> str:
    """Return the JSON pointer (RFC 6901) for a path of keys and indexes."""
    parts = (str(part).replace("~", "~0").replace("/", "~1") for part in path)
    return "".join("/" + part for part in parts)


def _sort_key(error: ValidationError) -> tuple[tuple[int, str], ...]:
    return tuple(
        (part, "") if isinstance(part, int) else (-1, str(part))
        for part in error.absolute_path
    )


def _one_of(choices: Iterable[Any]) -> str:
    return ", ".join(str(choice) for choice in choices)


def _suggestion(value: Any, choices: Sequence[str]) -> str:
    """Return ``"did you mean 'x'? "`` for a close match, or an empty string."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, choices, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


class _Translator:
    """Translator of the jsonschema errors of one document into Problems."""

    def __init__(self, file: str, document: Any, schema_file: str) -> None:
        self.file = file
        self.document = document
        self.root_noun = (
            "the manifest" if schema_file == MANIFEST_SCHEMA else "the entity"
        )

    def translate(self, error: ValidationError) -> list[Problem]:
        path: tuple[PathItem, ...] = tuple(error.absolute_path)
        if "propertyNames" in error.relative_schema_path:
            return [self._invalid_key(error, path)]
        handler = getattr(self, f"_on_{error.validator}", None)
        if handler is None:
            return [self._problem(path, error.message, "")]
        result: list[Problem] = handler(error, path)
        return result

    def _problem(self, path: Sequence[PathItem], message: str, hint: str) -> Problem:
        return Problem(self.file, json_pointer(path), message, hint)

    # Naming the place of an error -------------------------------------------

    def _value_at(self, path: Sequence[PathItem]) -> Any:
        value = self.document
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return None
        return value

    def _item_name(self, path: Sequence[PathItem]) -> str:
        """Name a list item: ``field 'budget'`` or ``option 2``."""
        parent = path[-2] if len(path) >= 2 else ""
        noun = _ITEM_NOUNS.get(str(parent), "item")
        if parent == "fields" and "sections" in path:
            noun = "form entry"
        item = self._value_at(path)
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            return f"{noun} {item['name']!r}"
        return f"{noun} {path[-1]}"

    def _owner(self, path: Sequence[PathItem]) -> str:
        """Name the nearest field or list view that contains ``path``."""
        for end in range(len(path), 1, -1):
            if path[end - 2] in ("fields", "list_views") and isinstance(
                path[end - 1], int
            ):
                return self._item_name(path[:end])
        return ""

    def _subject(self, path: Sequence[PathItem]) -> str:
        if not path:
            return self.root_noun
        last = path[-1]
        subject = self._item_name(path) if isinstance(last, int) else repr(last)
        owner = self._owner(path[:-1])
        return f"{subject} in {owner}" if owner else subject

    # One handler per JSON Schema keyword --------------------------------------

    def _invalid_key(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> Problem:
        message = f"invalid key {error.instance!r} in {self._subject(path)}"
        return self._problem(path, message, self._expected(error.schema))

    @staticmethod
    def _expected(schema: Any) -> str:
        description = schema.get("description", "") if isinstance(schema, dict) else ""
        if not description:
            return ""
        return "expected " + description[0].lower() + description[1:].rstrip(".")

    def _on_type(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        expected_types = error.validator_value
        if isinstance(expected_types, str):
            expected_types = [expected_types]
        expected = " or ".join(_JSON_TYPE_WORDS[name] for name in expected_types)
        message = f"{self._subject(path)} must be {expected}, got {error.instance!r}"
        return [self._problem(path, message, f"change the value to {expected}")]

    def _on_required(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        instance = error.instance if isinstance(error.instance, dict) else {}
        subject = self._subject(path)
        problems = []
        for name in error.validator_value:
            if name in instance:
                continue
            message = f"{subject} is missing required property {name!r}"
            if name == "type":
                hint = f'add "type" with one of: {_one_of(field_properties())}'
            else:
                hint = _REQUIRED_HINTS.get(name, f'add "{name}"')
            problems.append(self._problem(path, message, hint))
        return problems

    def _on_additionalProperties(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        allowed = sorted(error.schema.get("properties", {}))
        extras = [key for key in error.instance if key not in allowed]
        return [self._unknown_property(path, key, allowed) for key in extras]

    def _unknown_property(
        self, path: tuple[PathItem, ...], key: str, allowed: Sequence[str]
    ) -> Problem:
        message = f"unknown property {key!r} in {self._subject(path)}"
        hint = _suggestion(key, allowed) + f"allowed properties: {_one_of(allowed)}"
        return self._problem((*path, key), message, hint)

    def _on_unevaluatedProperties(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        # Only fields use unevaluatedProperties. jsonschema also lists valid
        # properties of a type-specific block that failed, so recompute.
        field = error.instance
        allowed_by_type = field_properties()
        field_type = field.get("type")
        if field_type not in allowed_by_type:
            return []  # the missing or unknown type is reported on its own
        allowed = sorted(allowed_by_type[field_type])
        problems = []
        for key in field:
            if key in allowed:
                continue
            owners = [name for name, props in allowed_by_type.items() if key in props]
            if not owners:
                problems.append(self._unknown_property(path, key, allowed))
                continue
            message = (
                f"property {key!r} is not allowed on {self._subject(path)} "
                f"of type {field_type!r}"
            )
            hint = (
                f"{key!r} applies only to type(s) {_one_of(owners)}; properties "
                f"allowed for type {field_type!r}: {_one_of(allowed)}"
            )
            problems.append(self._problem((*path, key), message, hint))
        return problems

    def _on_enum(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        choices = [str(choice) for choice in error.validator_value]
        hint = _suggestion(error.instance, choices) + f"use one of: {_one_of(choices)}"
        owner = self._owner(path[:-1]) if path else ""
        if path and path[-1] == "type" and owner.startswith("field"):
            message = f"unknown field type {error.instance!r} in {owner}"
        else:
            message = f"invalid value {error.instance!r} for {self._subject(path)}"
        return [self._problem(path, message, hint)]

    def _on_const(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        const = error.validator_value
        message = f"{self._subject(path)} must be {const!r}, got {error.instance!r}"
        return [self._problem(path, message, f"set it to {const!r}")]

    def _range_hint(self, schema: dict[str, Any]) -> str:
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"use a value from {low} to {high}"
        if low is not None:
            return f"use a value of at least {low}"
        return f"use a value of at most {high}"

    def _on_minimum(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        message = f"{self._subject(path)} is {error.instance!r}, out of range"
        return [self._problem(path, message, self._range_hint(error.schema))]

    _on_maximum = _on_minimum

    def _on_minLength(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        subject = self._subject(path)
        if error.validator_value == 1:
            return [self._problem(path, f"{subject} must not be empty", "give a value")]
        message = (
            f"{subject} {error.instance!r} is shorter than "
            f"{error.validator_value} characters"
        )
        return [self._problem(path, message, "lengthen it")]

    def _on_maxLength(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        limit = error.validator_value
        message = (
            f"{self._subject(path)} is {len(error.instance)} characters long, more "
            f"than the maximum of {limit}"
        )
        hint = f"shorten it to at most {limit} characters"
        return [self._problem(path, message, hint)]

    def _on_pattern(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        message = f"invalid value {error.instance!r} for {self._subject(path)}"
        hint = self._expected(error.schema) or f"match {error.validator_value!r}"
        return [self._problem(path, message, hint)]

    def _on_minItems(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        noun = _ITEM_NOUNS.get(str(path[-1]), "item") if path else "item"
        subject = self._subject(path)
        minimum = error.validator_value
        if minimum == 1:
            message = f"{subject} must not be empty"
        else:
            message = f"{subject} must have at least {minimum} items"
        return [self._problem(path, message, f"add at least one {noun}")]

    def _on_uniqueItems(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        seen: list[Any] = []
        duplicates: list[Any] = []
        for item in error.instance:
            if item in seen and item not in duplicates:
                duplicates.append(item)
            seen.append(item)
        listed = ", ".join(repr(item) for item in duplicates)
        message = f"{self._subject(path)} lists {listed} more than once"
        return [self._problem(path, message, "remove the duplicate")]

    def _on_minProperties(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        message = f"{self._subject(path)} must not be empty"
        hint = 'add at least one entry, such as {"en": "..."}'
        return [self._problem(path, message, hint)]

    def _on_anyOf(
        self, error: ValidationError, path: tuple[PathItem, ...]
    ) -> list[Problem]:
        # Each branch starts with a type check. When the value has the type of
        # one branch, the errors inside that branch are the useful ones.
        branches: dict[int, list[ValidationError]] = {}
        for sub_error in error.context or []:
            index = int(sub_error.relative_schema_path[0])
            branches.setdefault(index, []).append(sub_error)
        for sub_errors in branches.values():
            wrong_type = any(
                sub.validator == "type" and not sub.relative_path for sub in sub_errors
            )
            if not wrong_type:
                problems: list[Problem] = []
                for sub in sorted(sub_errors, key=_sort_key):
                    problems.extend(self.translate(sub))
                return problems
        message = f"invalid value {error.instance!r} for {self._subject(path)}"
        return [self._problem(path, message, self._expected(error.schema))]

    _on_oneOf = _on_anyOf
