"""Semantic checks of roles, permission sets, sharing rules and permission tests.

These run on merged, schema-valid documents after the entity checks, and
report every reference to an entity, field, role or permission set that the
definition does not declare.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from metadata_engine import values
from metadata_engine.field_checks import Report
from metadata_engine.layout_checks import EntityFields, check_filter, suggest
from metadata_engine.merge import document_folder, entity_key
from metadata_engine.model import ADMIN_ROLE, SYSTEM_COLUMNS

Document = Mapping[str, Any]
#: Returns the reporting function of one merged document key.
ReportFor = Callable[[str], Report]

#: The only system column that a grant may give a field access level, so that
#: a role can be kept from reading or changing a record's owner.
GRANTABLE_SYSTEM_COLUMN = "owner_id"
#: Actions of a permission case that check one field rather than a record.
FIELD_ACTIONS: tuple[str, ...] = ("see", "change")
#: Maximum length of a role name, because the platform's membership table
#: stores a member's role in a 40-character column.
MAX_ROLE_NAME = 40


@dataclass(frozen=True)
class References:
    """The entities that permission documents may refer to, and the names of
    broken entities, fields and documents.

    Broken ones failed to parse or validate and were reported then, so
    references to them are not reported again.
    """

    entities: Mapping[str, Document]
    broken_entities: frozenset[str] = frozenset()
    broken_fields: Mapping[str, Collection[str]] | None = None
    broken_documents: frozenset[str] = frozenset()

    def fields_of(self, entity: str) -> EntityFields:
        document = self.entities[entity]
        by_name = {field["name"]: field for field in document["fields"]}
        skipped = (self.broken_fields or {}).get(entity, ())
        return EntityFields(entity, by_name, skipped)

    def is_broken(self, folder: str, name: str) -> bool:
        return f"{folder}/{name}.json" in self.broken_documents


@dataclass(frozen=True)
class _Names:
    """The declared roles (``admin`` included) and permission sets."""

    roles: Mapping[str, str]
    permission_sets: Mapping[str, str]


def check_permissions(
    report_for: ReportFor, documents: Mapping[str, Document], refs: References
) -> None:
    """Check every permission document of the merged ``documents``."""
    by_folder: dict[str, dict[str, Document]] = {}
    for key, document in documents.items():
        folder = document_folder(key)
        if folder is not None:
            by_folder.setdefault(folder, {})[key] = document
    roles = {doc["name"]: key for key, doc in by_folder.get("roles", {}).items()}
    roles.setdefault(ADMIN_ROLE, "")
    sets = by_folder.get("permission_sets", {})
    names = _Names(roles, {doc["name"]: key for key, doc in sets.items()})
    for key, document in by_folder.get("roles", {}).items():
        _check_grantee(report_for(key), document, "role", refs)
    for key, document in sets.items():
        _check_grantee(report_for(key), document, "permission set", refs)
        _check_set_name(report_for(key), document["name"], names)
    for key, document in by_folder.get("sharing_rules", {}).items():
        _check_sharing_rule(report_for(key), document, refs, names)
    for key, document in by_folder.get("permission_tests", {}).items():
        _check_permission_test(report_for(key), document, refs, names)
    for name in sorted(refs.entities):
        _check_unmasked_roles(report_for(entity_key(name)), refs.entities[name],
                              names)


def _check_unmasked_roles(report: Report, entity: Document, names: _Names) -> None:
    """Report roles in a field's ``unmasked_roles`` that the definition does
    not declare: they would never match a member."""
    for index, field in enumerate(entity.get("fields", [])):
        for position, role in enumerate(field.get("unmasked_roles", [])):
            if role in names.roles:
                continue
            known = sorted(names.roles)
            report(
                f"/fields/{index}/unmasked_roles/{position}",
                f"unknown role {role!r} in unmasked_roles of "
                f"{entity['name']}.{field['name']}",
                f"{suggest(role, known)}declare it in roles/{role}.json or use one "
                f"of: {', '.join(known)}",
            )


# Roles and permission sets ---------------------------------------------------


def _check_grantee(
    report: Report, document: Document, noun: str, refs: References
) -> None:
    name = document["name"]
    grants = document.get("entities", {})
    if noun == "role" and len(name) > MAX_ROLE_NAME:
        report(
            "/name",
            f"role name {name!r} is {len(name)} characters long, more than the "
            f"maximum of {MAX_ROLE_NAME}",
            f"shorten it to at most {MAX_ROLE_NAME} characters, the length of a "
            "member's role in the membership table",
        )
    if noun == "role" and name == ADMIN_ROLE and grants:
        report(
            "/entities",
            f"role {ADMIN_ROLE!r} lists entities, but it always holds every "
            "right on every entity",
            'remove "entities"; this file may only set the label and description',
        )
        return
    for entity, grant in grants.items():
        pointer = f"/entities/{entity}"
        if entity == "*":
            if "fields" in grant:
                report(
                    f"{pointer}/fields",
                    f"{noun} {name!r} sets field access under '*', but field "
                    "names differ between entities",
                    "move the fields to the grant of the entity that has them",
                )
            continue
        if entity not in refs.entities:
            if entity not in refs.broken_entities:
                report(
                    pointer,
                    f"{noun} {name!r} grants rights on entity {entity!r}, which "
                    "does not exist",
                    _entity_hint(entity, refs) + ", or '*' for every entity",
                )
            continue
        fields = refs.fields_of(entity)
        for field_name in grant.get("fields", {}):
            field_pointer = f"{pointer}/fields/{field_name}"
            _check_grant_field(report, field_pointer, field_name, fields)


def _check_grant_field(
    report: Report, pointer: str, name: str, fields: EntityFields
) -> None:
    if name in fields.by_name or name in fields.skipped:
        return
    if name == GRANTABLE_SYSTEM_COLUMN:
        return
    if name in SYSTEM_COLUMNS:
        report(
            pointer,
            f"system column {name!r} of entity {fields.entity!r} cannot have a "
            "field access level",
            f"remove it; of the system columns only {GRANTABLE_SYSTEM_COLUMN!r} "
            "can be hidden or read-only",
        )
        return
    choices = [*fields.by_name, GRANTABLE_SYSTEM_COLUMN]
    report(
        pointer,
        f"field {name!r} is not a field of entity {fields.entity!r}",
        suggest(name, choices) + f"use one of: {', '.join(choices)}",
    )


def _check_set_name(report: Report, name: str, names: _Names) -> None:
    if name not in names.roles:
        return
    where = names.roles[name] or "the built-in role"
    report(
        "/name",
        f"permission set name {name!r} is already used by role {name!r} ({where})",
        "rename the permission set; a role and a permission set cannot share a name",
    )


# Sharing rules ------------------------------------------------------------------


def _check_sharing_rule(
    report: Report, document: Document, refs: References, names: _Names
) -> None:
    name = document["name"]
    roles = document.get("roles", [])
    if not roles and not document.get("teams"):
        report(
            "",
            f"sharing rule {name!r} shares records with no role and no team",
            'add "roles", "teams" or both, with at least one name',
        )
    for index, role in enumerate(roles):
        if role not in names.roles and not refs.is_broken("roles", role):
            report(
                f"/roles/{index}",
                f"sharing rule {name!r} shares with role {role!r}, which is not "
                "declared",
                _role_hint(role, names),
            )
    entity = document["entity"]
    if entity not in refs.entities:
        if entity not in refs.broken_entities:
            report(
                "/entity",
                f"sharing rule {name!r} applies to entity {entity!r}, which does "
                "not exist",
                _entity_hint(entity, refs),
            )
        return
    fields = refs.fields_of(entity)
    for index, condition in enumerate(document["where"]):
        pointer = f"/where/{index}"
        check_filter(report, pointer, condition, fields)
        _check_sensitive_condition(report, pointer, name, condition, fields)


def _check_sensitive_condition(
    report: Report,
    pointer: str,
    rule: str,
    condition: Document,
    fields: EntityFields,
) -> None:
    field = fields.by_name.get(condition["field"])
    if field is None or not field.get("sensitive"):
        return
    qualified = f"{fields.entity}.{condition['field']}"
    report(
        f"{pointer}/field",
        f"sharing rule {rule!r} filters on sensitive field {qualified!r}, whose "
        "stored values are encrypted",
        "filter on a field that is not sensitive",
    )


# Permission tests ---------------------------------------------------------------


def _check_permission_test(
    report: Report, document: Document, refs: References, names: _Names
) -> None:
    for index, case in enumerate(document["cases"]):
        pointer = f"/cases/{index}"
        role = case["role"]
        if role not in names.roles and not refs.is_broken("roles", role):
            report(
                f"{pointer}/role",
                f"permission case {index} uses role {role!r}, which is not declared",
                _role_hint(role, names),
            )
        _check_case_sets(report, pointer, index, case, refs, names)
        _check_case_field_action(report, pointer, index, case)
        entity = case["entity"]
        if entity in refs.entities:
            _check_case_fields(report, pointer, case, refs.fields_of(entity))
        elif entity not in refs.broken_entities:
            report(
                f"{pointer}/entity",
                f"permission case {index} uses entity {entity!r}, which does not exist",
                _entity_hint(entity, refs),
            )


def _check_case_sets(
    report: Report,
    pointer: str,
    index: int,
    case: Document,
    refs: References,
    names: _Names,
) -> None:
    declared = names.permission_sets
    for position, name in enumerate(case.get("permission_sets", [])):
        if name in declared or refs.is_broken("permission_sets", name):
            continue
        listed = ", ".join(sorted(declared)) or "none"
        report(
            f"{pointer}/permission_sets/{position}",
            f"permission case {index} uses permission set {name!r}, which is not "
            "declared",
            suggest(name, declared) + f"declared permission sets: {listed}; or add "
            f"permission_sets/{name}.json",
        )


def _check_case_field_action(
    report: Report, pointer: str, index: int, case: Document
) -> None:
    action = case["action"]
    if action in FIELD_ACTIONS and "field" not in case:
        report(
            pointer,
            f"permission case {index} checks action {action!r} without a field",
            'add "field" with the name of the field to check',
        )
    if action not in FIELD_ACTIONS and "field" in case:
        report(
            f"{pointer}/field",
            f"permission case {index} names field {case['field']!r}, but action "
            f"{action!r} applies to a whole record",
            "remove \"field\", or use the action 'see' or 'change'",
        )


def _check_case_fields(
    report: Report, pointer: str, case: Document, fields: EntityFields
) -> None:
    field_name = case.get("field")
    known = [*fields.by_name, GRANTABLE_SYSTEM_COLUMN]
    unknown = field_name not in known and field_name not in fields.skipped
    if field_name is not None and unknown:
        report(
            f"{pointer}/field",
            f"field {field_name!r} is not a field of entity {fields.entity!r}",
            suggest(field_name, known) + f"use one of: {', '.join(known)}",
        )
    for name, value in case.get("values", {}).items():
        _check_case_value(report, f"{pointer}/values/{name}", name, value, fields)


def _check_case_value(
    report: Report, pointer: str, name: str, value: Any, fields: EntityFields
) -> None:
    if name in fields.skipped:
        return
    field = fields.by_name.get(name)
    if field is None:
        report(
            pointer,
            f"field {name!r} is not a field of entity {fields.entity!r}",
            suggest(name, fields.by_name)
            + f"use one of: {', '.join(fields.by_name)}; the owner is set by "
            '"owner"',
        )
        return
    if value is None:
        return
    problem = values.value_problem(field, value, constraints=False)
    if problem:
        report(
            pointer,
            f"value {value!r} of field {name!r} is invalid: {problem}",
            "give a value of the field's type, or null for an empty field",
        )


# Hints ----------------------------------------------------------------------------


def _entity_hint(entity: str, refs: References) -> str:
    known = sorted(refs.entities)
    return suggest(entity, known) + f"use one of the entities: {', '.join(known)}"


def _role_hint(role: str, names: _Names) -> str:
    known = sorted(names.roles)
    return (
        suggest(role, known)
        + f"declared roles: {', '.join(known)}; or add roles/{role}.json"
    )
