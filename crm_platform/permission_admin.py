"""Changes to a tenant's permission metadata made by its admins in the browser
or through the API: roles, permission sets and sharing rules.

Each change replaces, adds or removes one document of the tenant's current
definition (``roles/NAME.json``, ``permission_sets/NAME.json`` or
``sharing_rules/NAME.json``), compiles the whole definition again and applies
it with ``Platform.apply``, as ``metacrm apply`` does. A definition that does
not compile raises ``DefinitionError`` and nothing is applied.

The form helpers turn the grid of the role page into a grant document and
back. The grid's inputs are named ``ENTITY:RIGHT``, ``ENTITY:listed`` and
``ENTITY:field:FIELD``, where ENTITY is an entity name or ``*``.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from metadata_engine.errors import DefinitionError
from metadata_engine.loader import compile_documents
from metadata_engine.model import (
    ADMIN_ROLE,
    FIELD_ACCESS,
    SCOPED_RIGHTS,
    SCOPES,
    Definition,
    Entity,
)
from metadata_engine.permission_checks import GRANTABLE_SYSTEM_COLUMN

from .access import ASSIGNMENTS
from .control import Tenant, memberships
from .errors import BadQuery, Conflict, NotFound, RecordInvalid
from .querying import parse_value
from .tenancy import Platform, TenantRuntime

log = logging.getLogger(__name__)

#: Folder of each kind of grantee document.
GRANTEE_FOLDERS: Mapping[str, str] = {
    "role": "roles",
    "permission_set": "permission_sets",
}
SHARING_RULES_FOLDER = "sharing_rules"
#: Rights that a grant gives or withholds with true or false.
UNSCOPED_RIGHTS: tuple[str, ...] = ("create", "export", "import", "change_owner")
#: The grant key that covers every entity the role does not list.
WILDCARD = "*"
#: Names a new document may have: lower snake case, as the schemas require.
NAME_PATTERN = re.compile(r"^[a-z](?:_?[a-z0-9])*$")
MAX_NAME_LENGTH = 48
#: Names that would collide with the pages' own paths (``/roles/new``).
RESERVED_NAMES = frozenset({"new"})
#: Filter operators a sharing rule condition may use, as in the schema.
CONDITION_OPERATORS: tuple[str, ...] = (
    "eq", "ne", "lt", "lte", "gt", "gte", "in",
    "contains", "icontains", "startswith", "isnull",
)
#: Empty condition rows the sharing rule form offers below the filled ones.
SPARE_CONDITION_ROWS = 2
SHARE_ACCESS: tuple[str, ...] = ("read", "edit")


class AdminRoleFixed(Conflict):
    """Raised on a change to the ``admin`` role, which has every right."""

    code = "admin_role_fixed"


class StillHeld(Conflict):
    """Raised when a role or permission set to delete is held by members."""

    code = "still_held"


class StaleDefinition(Conflict):
    """Raised when the definition changed after the page or client read it."""

    code = "stale_definition"


class AlreadyExists(Conflict):
    """Raised when a new document would replace one of the same name."""

    code = "already_exists"


# Documents


def document_key(folder: str, name: str) -> str:
    return f"{folder}/{name}.json"


def folder_of(kind: str) -> str:
    """Return the folder of a grantee kind, "role" or "permission_set"."""
    try:
        return GRANTEE_FOLDERS[kind]
    except KeyError:
        raise NotFound(
            f"unknown kind {kind!r}: use one of {', '.join(GRANTEE_FOLDERS)}"
        ) from None


def stored_document(
    definition: Definition, folder: str, name: str
) -> dict[str, Any] | None:
    """Return a deep copy of one document of the definition, or None."""
    document = definition.documents.get(document_key(folder, name))
    return None if document is None else copy.deepcopy(dict(document))


def documents_in(definition: Definition, folder: str) -> list[dict[str, Any]]:
    """Return the documents of one folder, sorted by name."""
    prefix = folder + "/"
    keys = sorted(key for key in definition.documents if key.startswith(prefix))
    return [copy.deepcopy(dict(definition.documents[key])) for key in keys]


def check_name(name: str, kind_text: str) -> None:
    """Raise ``RecordInvalid`` unless ``name`` can name a new document."""
    if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.match(name):
        raise RecordInvalid(
            f"invalid {kind_text} name {name!r}: use lower snake case, a letter "
            f"first, at most {MAX_NAME_LENGTH} characters",
            details={"name": ["expected lower snake case"]},
        )
    if name in RESERVED_NAMES:
        raise RecordInvalid(
            f"{kind_text} name {name!r} is reserved for a page of the web UI: "
            "choose another name",
            details={"name": ["reserved name"]},
        )


def check_not_admin(kind: str, name: str) -> None:
    if kind == "role" and name == ADMIN_ROLE:
        raise AdminRoleFixed(
            f"role {ADMIN_ROLE!r} has every right on every entity and cannot "
            "be changed: give other roles or permission sets the rights instead",
            details={"role": name},
        )


def change_document(
    platform: Platform,
    runtime: TenantRuntime,
    key: str,
    document: Mapping[str, Any] | None,
    applied_by: str,
    based_on: str | None = None,
) -> TenantRuntime:
    """Replace, add or (with ``document`` None) remove one document, compile
    the definition and apply it. Raises ``DefinitionError`` with every
    problem, and changes nothing, when the result does not compile.

    ``based_on`` is the content hash of the definition the editor started
    from. When the tenant has applied another since, ``StaleDefinition`` is
    raised so that the change does not silently drop the other one.

    NOTE: the check and the apply are not one transaction, so two changes
    within a few milliseconds can still both pass it."""
    current = platform.control.get_tenant(runtime.slug).metadata_hash
    if based_on is not None and based_on != current:
        raise StaleDefinition(
            f"the definition of tenant {runtime.slug!r} changed after version "
            f"{based_on[:12]!r} was read: reload it and make the change again",
            details={"metadata_hash": current},
        )
    documents = copy.deepcopy(dict(runtime.definition.documents))
    if document is None:
        if documents.pop(key, None) is None:
            raise NotFound(f"document {key!r} not found in tenant {runtime.slug!r}")
    else:
        documents[key] = copy.deepcopy(dict(document))
    definition = compile_documents(documents)
    applied = platform.apply(runtime.slug, definition, applied_by)
    log.warning("user %s changed %s of tenant %s (metadata %s)", applied_by, key,
                runtime.slug, definition.content_hash[:12])
    return applied


def problem_lines(error: DefinitionError) -> list[str]:
    """Return one line per problem: the file, the place in it and the fix."""
    return [str(problem) for problem in error.problems]


# Roles and permission sets


def save_grantee(
    platform: Platform,
    runtime: TenantRuntime,
    kind: str,
    name: str,
    document: Mapping[str, Any],
    applied_by: str,
    *,
    new: bool = False,
    based_on: str | None = None,
) -> TenantRuntime:
    """Store the role or permission set document ``name`` and apply it. A
    new role can be given to members as soon as it is applied, because
    membership roles are the definition's roles."""
    folder = folder_of(kind)
    check_not_admin(kind, name)
    exists = document_key(folder, name) in runtime.definition.documents
    if new:
        check_name(name, kind.replace("_", " "))
        if exists:
            raise AlreadyExists(
                f"{kind.replace('_', ' ')} {name!r} already exists: edit it or "
                "choose another name",
                details={"name": ["already exists"]},
            )
    elif not exists:
        raise NotFound(f"{kind.replace('_', ' ')} {name!r} not found")
    if document.get("name") != name:
        raise RecordInvalid(
            f"the document's name {document.get('name')!r} differs from {name!r} "
            "in the URL: send the same name in both",
            details={"name": ["differs from the URL"]},
        )
    return change_document(platform, runtime, document_key(folder, name), document,
                           applied_by, based_on)


def holders(platform: Platform, runtime: TenantRuntime, kind: str, name: str) -> int:
    """Return how many members hold the role, or the permission set."""
    if kind == "role":
        return role_holders(platform, runtime.tenant).get(name, 0)
    query = sa.select(sa.func.count()).select_from(ASSIGNMENTS).where(
        ASSIGNMENTS.c.permission_set == name
    )
    with runtime.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def role_holders(platform: Platform, tenant: Tenant) -> dict[str, int]:
    """Return the number of members of ``tenant`` per role."""
    query = (
        sa.select(memberships.c.role, sa.func.count())
        .where(memberships.c.tenant_id == tenant.id)
        .group_by(memberships.c.role)
    )
    with platform.control.engine.connect() as conn:
        return {role: int(count) for role, count in conn.execute(query)}


def delete_grantee(
    platform: Platform, runtime: TenantRuntime, kind: str, name: str,
    applied_by: str, based_on: str | None = None,
) -> TenantRuntime:
    """Remove a role or permission set that no member holds, and apply."""
    check_not_admin(kind, name)
    count = holders(platform, runtime, kind, name)
    kind_text = kind.replace("_", " ")
    if count:
        hint = ("give them another role on the members page first" if kind == "role"
                else "remove the permission set from them first")
        raise StillHeld(
            f"{kind_text} {name!r} is held by {count} member(s): {hint}",
            details={"name": name, "holders": count},
        )
    return change_document(platform, runtime, document_key(folder_of(kind), name),
                           None, applied_by, based_on)


# The role page's grid


@dataclass
class GrantRow:
    """One row of the role page's grid: an entity, or ``*`` for all."""

    key: str
    entity: Entity | None
    listed: bool = False
    scopes: dict[str, str] = field(default_factory=dict)
    flags: dict[str, bool] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)


def scope_text(value: Any) -> str:
    """Return the select value of a scoped right in a grant document: "" for
    none, a scope, or scopes joined with "+" ("team+subordinates")."""
    if value is True:
        return "all"
    if not value:
        return ""
    if isinstance(value, str):
        return value
    return "+".join(scope for scope in SCOPES if scope in value)


def scope_json(text: str, where: str) -> str | list[str] | None:
    """Return the document value of a scope select: None for none."""
    if not text:
        return None
    parts = text.split("+")
    unknown = [part for part in parts if part not in SCOPES]
    if unknown:
        raise RecordInvalid(
            f"invalid scope {text!r} in {where}: use one of {', '.join(SCOPES)}",
            details={where: ["invalid scope"]},
        )
    return parts[0] if len(parts) == 1 else parts


def grantable_fields(entity: Entity) -> list[str]:
    return [*entity.field_names, GRANTABLE_SYSTEM_COLUMN]


def grant_rows(definition: Definition, document: Mapping[str, Any]) -> list[GrantRow]:
    """Return the grid rows of a role or permission set document."""
    grants: Mapping[str, Any] = document.get("entities") or {}
    rows = []
    for key, entity in [(WILDCARD, None), *((e.name, e) for e in definition.entities)]:
        grant = grants.get(key) or {}
        row = GrantRow(key=key, entity=entity, listed=key in grants)
        for right in SCOPED_RIGHTS:
            row.scopes[right] = scope_text(grant.get(right))
        for right in UNSCOPED_RIGHTS:
            row.flags[right] = bool(grant.get(right))
        row.fields = {name: str(level) for name, level in
                      (grant.get("fields") or {}).items()}
        rows.append(row)
    return rows


def grants_from_form(
    definition: Definition, form: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Return the ``entities`` map of a grant document from the grid's inputs.

    An entity row is kept when it grants something or is marked listed, since
    a listed entity with no rights overrides the ``*`` row of the same role.
    """
    grants: dict[str, dict[str, Any]] = {}
    keys = [WILDCARD, *(entity.name for entity in definition.entities)]
    for key in keys:
        grant: dict[str, Any] = {}
        for right in SCOPED_RIGHTS:
            value = scope_json(form.get(f"{key}:{right}", ""), f"{key}:{right}")
            if value is not None:
                grant[right] = value
        for right in UNSCOPED_RIGHTS:
            if form.get(f"{key}:{right}"):
                grant[right] = True
        if key != WILDCARD:
            levels = _field_levels(definition.entity(key), form)
            if levels:
                grant["fields"] = levels
        if grant or form.get(f"{key}:listed"):
            grants[key] = grant
    return grants


def _field_levels(entity: Entity, form: Mapping[str, str]) -> dict[str, str]:
    levels = {}
    for name in grantable_fields(entity):
        level = form.get(f"{entity.name}:field:{name}", "")
        if not level:
            continue
        if level not in FIELD_ACCESS:
            raise RecordInvalid(
                f"invalid level {level!r} for field {entity.name}.{name}: use one "
                f"of {', '.join(FIELD_ACCESS)}",
                details={f"{entity.name}:field:{name}": ["invalid level"]},
            )
        levels[name] = level
    return levels


def texts_from_form(
    form: Mapping[str, str], prefix: str, locales: Sequence[str]
) -> dict[str, str]:
    """Return a label map from inputs named ``PREFIX:LOCALE``, without blanks."""
    texts = {}
    for locale in locales:
        text = form.get(f"{prefix}:{locale}", "").strip()
        if text:
            texts[locale] = text
    return texts


def text_map(value: Any, default_locale: str) -> dict[str, str]:
    """Return a label of a document as a map of locale to text."""
    if isinstance(value, str):
        return {default_locale: value}
    return dict(value or {})


def grantee_from_form(
    definition: Definition,
    name: str,
    form: Mapping[str, str],
    existing: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Return the role or permission set document that the page submitted,
    keeping the properties of ``existing`` that the page does not show."""
    document = dict(existing or {})
    document["name"] = name
    label = texts_from_form(form, "label", definition.locales)
    if not label:
        raise RecordInvalid(
            "missing label: enter a label in at least one language",
            details={"label": ["missing"]},
        )
    document["label"] = label
    description = texts_from_form(form, "description", definition.locales)
    if description:
        document["description"] = description
    else:
        document.pop("description", None)
    document["entities"] = grants_from_form(definition, form)
    return document


# Sharing rules


@dataclass
class ConditionRow:
    field: str = ""
    op: str = "eq"
    value: str = ""


def condition_text(value: Any) -> str:
    """Return a condition's JSON value as the text of the form's input."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(condition_text(item) for item in value)
    return "" if value is None else str(value)


def condition_rows(document: Mapping[str, Any]) -> list[ConditionRow]:
    """Return the condition rows of a sharing rule, plus empty spare rows."""
    rows = [
        ConditionRow(str(item.get("field", "")), str(item.get("op", "eq")),
                     condition_text(item.get("value")))
        for item in document.get("where") or []
    ]
    rows += [ConditionRow() for _ in range(SPARE_CONDITION_ROWS)]
    return rows


def condition_value(definition: Definition, entity: str, name: str, op: str,
                    raw: str) -> Any:
    """Convert a condition value from the form's text to JSON.

    Text that does not parse for the field's type stays text, so that the
    compiler reports it with its place in the document."""
    if not definition.has_entity(entity):
        return raw
    try:
        value = parse_value(definition.entity(entity), name, op, raw)
    except BadQuery:
        return raw
    return _as_json(value)


def _as_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_as_json(item) for item in value]
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def sharing_rule_from_form(
    definition: Definition, name: str, form: Mapping[str, str],
    roles: Sequence[str], existing: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Return the sharing rule document that the page submitted. ``roles`` are
    the roles ticked, since a form sends one ``roles`` input per box."""
    document = dict(existing or {})
    document["name"] = name
    label = texts_from_form(form, "label", definition.locales)
    if not label:
        raise RecordInvalid("missing label: enter a label in at least one language",
                            details={"label": ["missing"]})
    document["label"] = label
    entity = form.get("entity", "")
    document["entity"] = entity
    document["where"] = _conditions_from_form(definition, entity, form)
    access = form.get("access", "read")
    if access not in SHARE_ACCESS:
        raise RecordInvalid(
            f"invalid access {access!r}: use one of {', '.join(SHARE_ACCESS)}",
            details={"access": ["invalid access"]},
        )
    document["access"] = access
    document["roles"] = list(dict.fromkeys(roles))
    teams = [team.strip() for team in form.get("teams", "").split(",")]
    document["teams"] = list(dict.fromkeys(team for team in teams if team))
    return document


def _conditions_from_form(
    definition: Definition, entity: str, form: Mapping[str, str]
) -> list[dict[str, Any]]:
    conditions = []
    index = 0
    while f"condition-{index}-field" in form:
        name = form.get(f"condition-{index}-field", "").strip()
        op = form.get(f"condition-{index}-op", "eq")
        raw = form.get(f"condition-{index}-value", "")
        index += 1
        if not name:
            continue
        value = condition_value(definition, entity, name, op, raw)
        conditions.append({"field": name, "op": op, "value": value})
    if not conditions:
        raise RecordInvalid(
            "missing condition: a sharing rule needs at least one condition "
            "(field, operator and value)",
            details={"where": ["missing"]},
        )
    return conditions


def save_sharing_rule(
    platform: Platform, runtime: TenantRuntime, name: str,
    document: Mapping[str, Any], applied_by: str, *, new: bool = False,
    based_on: str | None = None,
) -> TenantRuntime:
    """Store the sharing rule document ``name`` and apply it."""
    key = document_key(SHARING_RULES_FOLDER, name)
    exists = key in runtime.definition.documents
    if new:
        check_name(name, "sharing rule")
        if exists:
            raise AlreadyExists(
                f"sharing rule {name!r} already exists: edit it or choose "
                "another name",
                details={"name": ["already exists"]},
            )
    elif not exists:
        raise NotFound(f"sharing rule {name!r} not found")
    return change_document(platform, runtime, key, document, applied_by, based_on)


def delete_sharing_rule(
    platform: Platform, runtime: TenantRuntime, name: str, applied_by: str,
    based_on: str | None = None,
) -> TenantRuntime:
    key = document_key(SHARING_RULES_FOLDER, name)
    return change_document(platform, runtime, key, None, applied_by, based_on)
