"""Compiled, immutable metadata: what every other layer reads.

The loader turns JSON documents into these objects once per definition.
Everything here is frozen so that one compiled definition can be shared by
all requests of a tenant without copying or locking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

#: Columns that every entity table carries and metadata never declares.
SYSTEM_COLUMNS: tuple[str, ...] = (
    "id",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
    "owner_id",
    "version",
)

FORM_MODES: tuple[str, ...] = ("create", "edit", "detail")
#: Membership roles that see a sensitive field in full when its metadata
#: lists no ``unmasked_roles``.
DEFAULT_UNMASKED_ROLES: tuple[str, ...] = ("admin",)


@dataclass(frozen=True)
class Text:
    """A label that is either one string or a map of locale to text."""

    translations: Mapping[str, str]
    default_locale: str = "en"

    @classmethod
    def of(cls, value: str | Mapping[str, str], default_locale: str = "en") -> Text:
        if isinstance(value, str):
            return cls(MappingProxyType({default_locale: value}), default_locale)
        return cls(MappingProxyType(dict(value)), default_locale)

    def get(self, locale: str | None = None) -> str:
        """Return the text for ``locale``, falling back to the default locale,
        then to the language without its region, then to the first entry."""
        if locale:
            if locale in self.translations:
                return self.translations[locale]
            language = locale.split("-")[0].split("_")[0]
            for key, text in self.translations.items():
                if key.split("-")[0] == language:
                    return text
        if self.default_locale in self.translations:
            return self.translations[self.default_locale]
        return next(iter(self.translations.values()), "")

    def __str__(self) -> str:
        return self.get()


@dataclass(frozen=True)
class Option:
    """One choice of a picklist or multi-picklist field."""

    value: str
    label: Text
    color: str | None = None


@dataclass(frozen=True)
class Rollup:
    """``function`` (count, sum, min, max) of ``field`` over the records of
    ``entity`` whose lookup ``via`` points at the record, among those that
    meet every condition of ``where``."""

    entity: str
    via: str
    function: str
    field: str | None = None
    where: tuple[Filter, ...] = ()


@dataclass(frozen=True)
class Field:
    """A field declared in metadata, with type-specific properties."""

    name: str
    type: str
    label: Text
    help_text: Text | None = None
    required: bool = False
    unique: bool = False
    default: Any = None
    read_only: bool = False
    indexed: bool = False
    searchable: bool = False
    # Type-specific properties; unused ones stay None.
    max_length: int | None = None
    pattern: str | None = None
    minimum: Any = None
    maximum: Any = None
    precision: int | None = None
    scale: int | None = None
    currency_code: str | None = None
    options: tuple[Option, ...] = ()
    target: str | None = None
    on_delete: str | None = None
    prefix: str | None = None
    digits: int | None = None
    #: Stored encrypted, shown masked to roles outside ``unmasked_roles``.
    sensitive: bool = False
    #: Personal data, blanked by a request to forget a person.
    personal: bool = False
    unmasked_roles: tuple[str, ...] = DEFAULT_UNMASKED_ROLES
    #: Name of the entity that declares the field, filled in by the compiler.
    #: Encryption binds each stored value to it.
    entity: str = field(default="", compare=False)
    #: CEL source of a formula field, computed on every write; such a field
    #: is also read-only. See ``metadata_engine.record_rules``.
    formula: str | None = None
    #: Dependent picklist: the controlling field, and the option values each
    #: of its values allows. See ``allowed_options``.
    depends_on: str | None = None
    #: Roll-up: a summary of related records stored in this read-only field.
    rollup: Rollup | None = None
    dependent_options: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: CEL sources of the field's expression options, evaluated by
    #: ``record_rules``: the value a create stores when the input gives none,
    #: the condition on the stored record that blocks changes, and the
    #: condition that shows the field in forms and on detail pages.
    default_expr: str | None = None
    read_only_when: str | None = None
    visible_when: str | None = None

    def allowed_options(self, controlling_value: Any) -> tuple[str, ...]:
        """Return the option values allowed when the controlling field is
        ``controlling_value``. An empty or unlisted value allows none."""
        if controlling_value is None:
            return ()
        return self.dependent_options.get(str(controlling_value), ())

    def option(self, value: str) -> Option | None:
        for option in self.options:
            if option.value == value:
                return option
        return None

    @property
    def writable(self) -> bool:
        return not self.read_only and self.type != "auto_number"

    def masked_for(self, role: str | None) -> bool:
        """Return True if values of this field are masked for a member with
        ``role``. Without a role (``None``) every sensitive field is masked."""
        return self.sensitive and (role is None or role not in self.unmasked_roles)


@dataclass(frozen=True)
class Index:
    """A database index or unique constraint over one or more fields."""

    name: str
    fields: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True)
class FormItem:
    field: str
    modes: tuple[str, ...] = FORM_MODES


@dataclass(frozen=True)
class FormSection:
    label: Text
    columns: int
    items: tuple[FormItem, ...]
    modes: tuple[str, ...] = FORM_MODES

    def fields_for(self, mode: str) -> tuple[str, ...]:
        if mode not in self.modes:
            return ()
        return tuple(item.field for item in self.items if mode in item.modes)


@dataclass(frozen=True)
class Form:
    sections: tuple[FormSection, ...]

    def fields_for(self, mode: str) -> tuple[str, ...]:
        """Return the field names shown in ``mode``, in form order."""
        names: list[str] = []
        for section in self.sections:
            names.extend(section.fields_for(mode))
        return tuple(names)


@dataclass(frozen=True)
class Filter:
    """A saved filter condition: ``field op value``."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class ListView:
    name: str
    label: Text
    columns: tuple[str, ...]
    sort: tuple[str, ...] = ("-created_at",)
    filters: tuple[Filter, ...] = ()
    page_size: int = 25


@dataclass(frozen=True)
class ValidationRule:
    """A CEL condition that makes a record invalid when it is true.

    ``fields`` names the fields that show ``message``; empty means the record
    as a whole (the error key ``_schema``).
    """

    name: str
    when: str
    message: Text
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entity:
    name: str
    label: Text
    plural_label: Text
    title_field: str
    fields: tuple[Field, ...]
    form: Form
    list_views: tuple[ListView, ...]
    description: Text | None = None
    icon: str | None = None
    indexes: tuple[Index, ...] = ()
    validation_rules: tuple[ValidationRule, ...] = ()
    _by_name: Mapping[str, Field] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    #: Objects derived once from this entity, such as its compiled rules and
    #: formulas (``record_rules``). Not an init argument, so a copy made with
    #: ``dataclasses.replace`` starts with an empty cache.
    derived: dict[str, Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_name = MappingProxyType({f.name: f for f in self.fields})
        object.__setattr__(self, "_by_name", by_name)

    def field(self, name: str) -> Field:
        """Return the field called ``name``; raise ``KeyError`` if none."""
        return self._by_name[name]

    def has_field(self, name: str) -> bool:
        return name in self._by_name

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def lookups(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.type == "lookup")

    @property
    def searchable_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.searchable)

    @property
    def default_list_view(self) -> ListView:
        return self.list_views[0]

    def list_view(self, name: str) -> ListView | None:
        for view in self.list_views:
            if view.name == name:
                return view
        return None


#: Rights a grant gives on an entity's records.
RIGHTS: tuple[str, ...] = (
    "read", "create", "edit", "delete", "export", "import", "change_owner",
)
#: Rights that apply to some records only, with a scope per grant.
SCOPED_RIGHTS: tuple[str, ...] = ("read", "edit", "delete")
#: Record scopes, narrowest first. ``team`` and ``subordinates`` include the
#: user's own records.
SCOPES: tuple[str, ...] = ("own", "team", "subordinates", "all")
#: Field access levels, least first; the union of grants takes the highest.
FIELD_ACCESS: tuple[str, ...] = ("hidden", "read_only", "editable")
#: The role with every right on every entity, whatever its metadata grants,
#: so that a tenant cannot lock itself out of its own definition.
ADMIN_ROLE = "admin"


@dataclass(frozen=True)
class EntityGrant:
    """What one role or permission set allows on one entity.

    ``entity`` is an entity name or ``"*"`` for every entity. Each scoped
    right contains the scopes it covers, and is not granted when empty.
    ``fields`` maps a field name to its access level; fields it does not
    name are editable.
    """

    entity: str
    read: tuple[str, ...] = ()
    edit: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    create: bool = False
    export: bool = False
    import_records: bool = False
    change_owner: bool = False
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def scopes(self, right: str) -> tuple[str, ...]:
        """Return the scopes of a scoped right, or ``("all",)`` for a granted
        unscoped right (create, export, import, change_owner)."""
        if right in SCOPED_RIGHTS:
            return tuple(getattr(self, right))
        granted = self.import_records if right == "import" else getattr(self, right)
        return ("all",) if granted else ()


@dataclass(frozen=True)
class Grantee:
    """A role or a permission set: a name, a label and its entity grants."""

    name: str
    label: Text
    kind: str  # "role" or "permission_set"
    grants: tuple[EntityGrant, ...] = ()
    description: Text | None = None

    def grants_for(self, entity: str) -> tuple[EntityGrant, ...]:
        """Return the grants that apply to ``entity``: the ones naming it, or
        else the ``"*"`` grants, so that a named entity overrides the
        wildcard within one role or permission set."""
        named = tuple(g for g in self.grants if g.entity == entity)
        return named or tuple(g for g in self.grants if g.entity == "*")


@dataclass(frozen=True)
class SharingRule:
    """Records of ``entity`` matching every condition are shared with members
    of ``roles`` and ``teams`` (team names, which are tenant data), with
    ``access`` "read" or "edit"."""

    name: str
    label: Text
    entity: str
    conditions: tuple[Filter, ...]
    access: str = "read"
    roles: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()


@dataclass(frozen=True)
class PermissionCase:
    """One expectation of a permission test.

    A user with ``role`` and ``permission_sets`` meets a record of ``entity``
    with ``values``, owned by ``owner``: "self", "other" (a user in no team
    with them), "team" (a team mate), "subordinate" or "manager".
    ``action`` is a right, or "see" / "change" for ``field_name``, and
    ``allowed`` is the expected result.
    """

    description: str
    role: str
    entity: str
    action: str
    allowed: bool
    owner: str = "other"
    permission_sets: tuple[str, ...] = ()
    field_name: str | None = None
    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class PermissionTest:
    """A named group of permission cases from one metadata document."""

    name: str
    cases: tuple[PermissionCase, ...]


@dataclass(frozen=True)
class RuleCase:
    """One case of a rule test: a record, and what the entity's validation
    rules and formulas must make of it.

    ``record`` contains the field values in the JSON form the API accepts.
    ``errors`` maps a field name, or ``_schema`` for the whole record, to
    substrings that the messages for that key must contain. ``valid`` expects
    no message at all. ``computed`` maps formula fields to their expected
    values, in JSON form. ``now`` is the write's time, or None for the time
    the case runs.
    """

    description: str
    entity: str
    record: Mapping[str, Any]
    role: str | None = None
    now: datetime | None = None
    errors: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    valid: bool = False
    computed: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class RuleTest:
    """A named group of rule cases from one metadata document."""

    name: str
    cases: tuple[RuleCase, ...]


@dataclass(frozen=True)
class Action:
    """One step of an automation rule or a workflow transition.

    ``kind`` is set_fields, assign_owner, create_record, notify, webhook or
    transition.
    ``values`` maps field names to CEL expressions (set_fields and
    create_record); ``user`` is a CEL expression giving a user id
    (assign_owner, or one recipient of notify). ``entity`` and ``alias`` are
    the created record's entity and the name later actions read it by.
    ``recipients`` contains notify's ``owner``, ``manager_of``, ``roles``
    and ``user``.
    """

    kind: str
    values: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    user: str | None = None
    entity: str | None = None
    alias: str | None = None
    recipients: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({})
    )
    message: Text | None = None
    endpoint: str | None = None
    event: str | None = None
    #: webhook: the ``as`` name of a created record to send instead of the
    #: triggering record.
    record: str | None = None
    #: transition: the name of the workflow transition to take.
    transition: str | None = None


@dataclass(frozen=True)
class Trigger:
    """When an automation rule runs: on create, update (only when one of
    ``fields`` changes, if given), delete, or ``offset`` after the value of
    ``date_field`` (time)."""

    on: str
    fields: tuple[str, ...] = ()
    date_field: str | None = None
    offset: timedelta = timedelta(0)


@dataclass(frozen=True)
class Automation:
    """Actions that run when records of ``entity`` change or a time comes,
    if the ``when`` condition (CEL) holds."""

    name: str
    label: Text
    entity: str
    trigger: Trigger
    actions: tuple[Action, ...]
    when: str | None = None
    active: bool = True


@dataclass(frozen=True)
class Approval:
    """``required`` approvals among the eligible approvers: the manager of
    the user in field ``manager_of`` and the members holding ``roles``."""

    required: int = 1
    manager_of: str | None = None
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Transition:
    """A move of a workflow's state from one of ``sources`` to ``target``."""

    name: str
    label: Text
    sources: tuple[str, ...]
    target: str
    roles: tuple[str, ...] = ()
    when: str | None = None
    guard_message: Text | None = None
    required_fields: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()
    approval: Approval | None = None


@dataclass(frozen=True)
class Workflow:
    """A state machine over the picklist ``field`` of ``entity``."""

    name: str
    label: Text
    entity: str
    field: str
    initial: str
    transitions: tuple[Transition, ...]

    def transition(self, name: str) -> Transition | None:
        for transition in self.transitions:
            if transition.name == name:
                return transition
        return None

    def leading_to(self, state: str, source: str | None) -> tuple[Transition, ...]:
        """Return the transitions from ``source`` to ``state``."""
        return tuple(
            t for t in self.transitions if t.target == state and source in t.sources
        )


@dataclass(frozen=True)
class Definition:
    """A whole compiled tenant definition, identified by its content hash."""

    name: str
    label: Text
    version: str
    default_locale: str
    locales: tuple[str, ...]
    entities: tuple[Entity, ...]
    content_hash: str
    #: The merged JSON documents the definition was compiled from, keyed by
    #: their path inside the definition, so that it can be stored and reloaded.
    documents: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    roles: tuple[Grantee, ...] = ()
    permission_sets: tuple[Grantee, ...] = ()
    sharing_rules: tuple[SharingRule, ...] = ()
    permission_tests: tuple[PermissionTest, ...] = ()
    rule_tests: tuple[RuleTest, ...] = ()
    workflows: tuple[Workflow, ...] = ()
    automations: tuple[Automation, ...] = ()
    _by_name: Mapping[str, Entity] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_name = MappingProxyType({e.name: e for e in self.entities})
        object.__setattr__(self, "_by_name", by_name)

    def entity(self, name: str) -> Entity:
        """Return the entity called ``name``; raise ``KeyError`` if none."""
        return self._by_name[name]

    def has_entity(self, name: str) -> bool:
        return name in self._by_name

    def role(self, name: str) -> Grantee | None:
        for role in self.roles:
            if role.name == name:
                return role
        return None

    def permission_set(self, name: str) -> Grantee | None:
        for permission_set in self.permission_sets:
            if permission_set.name == name:
                return permission_set
        return None

    @property
    def role_names(self) -> tuple[str, ...]:
        """Every role a member may hold: ``admin`` first, then the declared."""
        names = [ADMIN_ROLE]
        names += [role.name for role in self.roles if role.name != ADMIN_ROLE]
        return tuple(names)

    def sharing_rules_for(self, entity: str) -> tuple[SharingRule, ...]:
        return tuple(rule for rule in self.sharing_rules if rule.entity == entity)

    def workflows_for(self, entity: str) -> tuple[Workflow, ...]:
        return tuple(w for w in self.workflows if w.entity == entity)

    def automations_for(self, entity: str, on: str) -> tuple[Automation, ...]:
        """Return the active automation rules of ``entity`` with trigger
        ``on``, in name order."""
        return tuple(
            rule
            for rule in self.automations
            if rule.entity == entity and rule.trigger.on == on and rule.active
        )

    def referencing(self, target: str) -> tuple[tuple[Entity, Field], ...]:
        """Return every (entity, lookup field) pair that points at ``target``."""
        return tuple(
            (entity, f)
            for entity in self.entities
            for f in entity.lookups
            if f.target == target
        )
