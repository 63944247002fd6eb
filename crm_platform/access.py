"""Record permissions: one user's grants compiled into SQL predicates.

A user's rights on an entity are the union of what their role and their
permission sets grant. Nothing is granted by default, and the ``admin``
role has every right. ``Access`` gathers those grants for one entity and turns
each scoped right (read, edit, delete) into one SQLAlchemy boolean
expression that ``RecordService`` adds to the WHERE clause of its query:

- own records: ``owner_id = :user``;
- the team's records: ``owner_id IN (SELECT ...)`` over ``_team_members``;
- subordinates' records: ``owner_id IN (SELECT ...)`` over ``_hierarchy``;
- sharing rules from metadata: their conditions, for the roles and teams
  they name;
- records shared by hand: ``EXISTS (SELECT 1 FROM _shares ...)``.

The database applies the predicate with the user's own filters, so pages,
counts and totals only ever see permitted rows, and no list of record ids
is ever inlined. ``explain`` runs each part on its own to report why one
record is or is not permitted.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from metadata_engine.model import (
    ADMIN_ROLE,
    FIELD_ACCESS,
    RIGHTS,
    SCOPED_RIGHTS,
    SCOPES,
    Definition,
    Entity,
    EntityGrant,
    Grantee,
    SharingRule,
)
from metadata_engine.tables import build_service_tables

from .querying import Condition, compile_condition

log = logging.getLogger(__name__)

_SERVICE_TABLES = sa.MetaData()
build_service_tables(_SERVICE_TABLES)
TEAMS = _SERVICE_TABLES.tables["_teams"]
TEAM_MEMBERS = _SERVICE_TABLES.tables["_team_members"]
REPORTING = _SERVICE_TABLES.tables["_reporting"]
HIERARCHY = _SERVICE_TABLES.tables["_hierarchy"]
ASSIGNMENTS = _SERVICE_TABLES.tables["_permission_set_assignments"]
SHARES = _SERVICE_TABLES.tables["_shares"]

#: Share levels that carry each right: an edit share also lets one read.
SHARE_LEVELS: Mapping[str, tuple[str, ...]] = {
    "read": ("read", "edit"),
    "edit": ("edit",),
    "delete": (),
}


@dataclass(frozen=True)
class Principal:
    """The member a check is for: user id, role, permission sets and teams."""

    user_id: str
    role: str
    permission_sets: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN_ROLE


def load_principal(conn: sa.Connection, user_id: str, role: str) -> Principal:
    """Read a member's permission sets and team names from tenant data, in
    one statement."""
    sets = sa.select(
        sa.literal("set").label("kind"), ASSIGNMENTS.c.permission_set.label("name")
    ).where(ASSIGNMENTS.c.user_id == user_id)
    teams = (
        sa.select(sa.literal("team").label("kind"), TEAMS.c.name.label("name"))
        .join(TEAM_MEMBERS, TEAM_MEMBERS.c.team_id == TEAMS.c.id)
        .where(TEAM_MEMBERS.c.user_id == user_id)
    )
    found: dict[str, list[str]] = {"set": [], "team": []}
    for kind, name in conn.execute(sa.union_all(sets, teams)):
        found[kind].append(name)
    return Principal(
        user_id, role, tuple(sorted(found["set"])), tuple(sorted(found["team"]))
    )


#: Compiled ``Access`` objects by (definition hash, entity, principal); see
#: ``access_for``.
_CACHE: OrderedDict[tuple[str, str, Principal], Access] = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 4096


def access_for(
    definition: Definition, entity: Entity, principal: Principal
) -> Access:
    """Return the ``Access`` of ``principal`` on ``entity``, compiled once per
    definition and principal. A principal includes its permission sets and
    team names, and the predicates read team members, the hierarchy and
    shares in SQL, so a cached ``Access`` does not go stale."""
    key = (definition.content_hash, entity.name, principal)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    access = Access(definition, entity, principal)
    with _CACHE_LOCK:
        _CACHE[key] = access
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return access


@dataclass(frozen=True)
class Reason:
    """One part of a right: what grants it, and to which records."""

    kind: str  # "scope", "sharing_rule", "share" or "admin"
    detail: str  # the scope, rule name or share level
    source: str  # "role sales_rep", "permission set data_export", ...

    def describe(self) -> str:
        if self.kind == "admin":
            return f"{self.source} holds every right"
        if self.kind == "scope":
            return f"{self.source} grants it on {_SCOPE_TEXT[self.detail]}"
        if self.kind == "sharing_rule":
            return f"sharing rule {self.detail!r} shares the record ({self.source})"
        return f"the record is shared with {self.source}"


_SCOPE_TEXT = {
    "own": "records the user owns",
    "team": "records owned by the user's teams",
    "subordinates": "records owned by the user or anyone reporting to them",
    "all": "all records",
}


@dataclass
class Decision:
    """The result of a permission check, with the grants or rules behind it."""

    allowed: bool
    reasons: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reasons": list(self.reasons)}


class Access:
    """One principal's rights on one entity, compiled once per request."""

    def __init__(
        self, definition: Definition, entity: Entity, principal: Principal
    ) -> None:
        self.definition = definition
        self.entity = entity
        self.principal = principal
        self.grantees = _grantees(definition, principal)
        #: For each right, the scopes granted and which grantee granted them.
        self.granted: dict[str, dict[str, list[str]]] = {
            right: {} for right in RIGHTS
        }
        #: For each field named by a grant, its level and the grants deciding it.
        self.field_sources: dict[str, list[tuple[str, str]]] = {}
        if principal.is_admin:
            for right in RIGHTS:
                self.granted[right]["all"] = [f"role {ADMIN_ROLE}"]
        else:
            self._collect()
        self.levels = self._field_levels()
        self.hidden = frozenset(
            name for name, level in self.levels.items() if level == "hidden"
        )
        self.read_only = frozenset(
            name for name, level in self.levels.items() if level == "read_only"
        )
        self._predicates: dict[
            tuple[str, sa.Table], sa.ColumnElement[bool] | None
        ] = {}
        self.sharing_rules = tuple(
            rule
            for rule in definition.sharing_rules_for(entity.name)
            if principal.role in rule.roles
            or not set(principal.teams).isdisjoint(rule.teams)
        )

    def _collect(self) -> None:
        # Only grants that give read decide field levels: a permission set
        # that adds export alone must not make a hidden field visible.
        readers: list[tuple[str, EntityGrant]] = []
        for source, grantee in self.grantees:
            for grant in grantee.grants_for(self.entity.name):
                for right in RIGHTS:
                    for scope in grant.scopes(right):
                        self.granted[right].setdefault(scope, []).append(source)
                if grant.read:
                    readers.append((source, grant))
        for source, grant in readers:
            for name, level in grant.fields.items():
                self.field_sources.setdefault(name, []).append((level, source))
        # A grant that names the entity but not a field leaves the field
        # editable, and grants add up, so record that for explanations.
        for source, grant in readers:
            for name in self.field_sources:
                if name not in grant.fields:
                    self.field_sources[name].append(("editable", source))

    def _field_levels(self) -> dict[str, str]:
        levels: dict[str, str] = {}
        for name, sources in self.field_sources.items():
            levels[name] = max(
                (level for level, _ in sources), key=FIELD_ACCESS.index
            )
        return levels

    # Entity rights

    def allows(self, right: str) -> bool:
        """Return True if any grant gives ``right`` on some records. Edit
        and delete also need read, as a record cannot be changed unseen."""
        if right in ("edit", "delete") and not self.granted["read"]:
            return False
        return bool(self.granted[right])

    def scopes(self, right: str) -> tuple[str, ...]:
        return tuple(scope for scope in SCOPES if scope in self.granted[right])

    # Fields

    def level(self, name: str) -> str:
        """Return "hidden", "read_only" or "editable" for a field. System
        columns are read-only here; ``owner_id`` changes need the
        change_owner right, checked by ``RecordService``."""
        if not self.entity.has_field(name):
            return "read_only"
        return self.levels.get(name, "editable")

    def visible(self, name: str) -> bool:
        return name not in self.hidden

    def strip(self, record: dict[str, Any]) -> dict[str, Any]:
        """Remove hidden fields from a record, in place, and return it."""
        for name in self.hidden:
            record.pop(name, None)
        return record

    # Predicates

    def predicate(self, right: str, table: sa.Table) -> sa.ColumnElement[bool] | None:
        """Return the WHERE condition that selects the records this user may
        ``right``; None when every record qualifies. Built once per table."""
        key = (right, table)
        if key not in self._predicates:
            self._predicates[key] = self._build_predicate(right, table)
        return self._predicates[key]

    def _build_predicate(
        self, right: str, table: sa.Table
    ) -> sa.ColumnElement[bool] | None:
        parts = self.parts(right, table)
        if not parts:
            return sa.false()
        if any(clause is None for _, clause in parts):
            combined = None
        else:
            clauses = [clause for _, clause in parts if clause is not None]
            combined = clauses[0] if len(clauses) == 1 else sa.or_(*clauses)
        if right == "read":
            return combined
        # Edit and delete apply only to records the user may also read.
        readable = self.predicate("read", table)
        if combined is None:
            return readable
        if readable is None:
            return combined
        return sa.and_(combined, readable)

    def parts(
        self, right: str, table: sa.Table
    ) -> list[tuple[Reason, sa.ColumnElement[bool] | None]]:
        """Return each way the user may hold ``right`` on a record, with the
        condition a record must meet for it (None: any record)."""
        if right not in SCOPED_RIGHTS:
            raise ValueError(f"{right!r} is not a scoped right: use one of "
                             f"{', '.join(SCOPED_RIGHTS)}")
        if self.principal.is_admin:
            return [(Reason("admin", "all", f"role {ADMIN_ROLE}"), None)]
        granted = self.granted[right]
        if not self.allows(right):
            return []
        user = self.principal.user_id
        parts: list[tuple[Reason, sa.ColumnElement[bool] | None]] = []
        for scope in SCOPES:
            if scope not in granted:
                continue
            reason = Reason("scope", scope, " and ".join(granted[scope]))
            clause = _scope_clause(scope, table, user, with_own="own" not in granted)
            parts.append((reason, clause))
        if right == "delete":
            return parts
        for rule in self.sharing_rules:
            if rule.access in SHARE_LEVELS[right]:
                reason = Reason("sharing_rule", rule.name, _rule_audience(rule))
                parts.append((reason, _rule_clause(rule, table)))
        levels = SHARE_LEVELS[right]
        reason = Reason("share", "/".join(levels), "the user or one of their teams")
        parts.append((reason, _share_clause(self.entity.name, table, user, levels)))
        return parts

    def explain(
        self, conn: sa.Connection, table: sa.Table, right: str, record_id: str
    ) -> Decision:
        """Say whether the user may ``right`` the record ``record_id``, and
        which grant or rule decided it. Each part of the predicate runs alone
        against the record, so the result is the database's own."""
        if right not in SCOPED_RIGHTS:
            if self.allows(right):
                sources = sorted({s for v in self.granted[right].values() for s in v})
                return Decision(True, [f"{' and '.join(sources)} grants {right}"])
            return Decision(False, [self._not_granted(right)])
        parts = self.parts(right, table)
        if not parts:
            return Decision(False, [self._not_granted(right)])
        if right != "read":
            readable = self.explain(conn, table, "read", record_id)
            if not readable.allowed:
                return Decision(False, [
                    f"{right} needs read, and the user may not read this record",
                    *readable.reasons,
                ])
        matched = []
        for reason, clause in parts:
            statement = sa.select(table.c.id).where(table.c.id == record_id)
            if clause is not None:
                statement = statement.where(clause)
            if conn.execute(statement).first() is not None:
                matched.append(reason.describe())
        if matched:
            return Decision(True, matched)
        tried = "; ".join(reason.describe() for reason, _ in parts)
        return Decision(False, [
            f"no grant or rule covers this record for {right}; tried: {tried}"
        ])

    def explain_field(self, name: str) -> Decision:
        """Say how the user may use field ``name``, and which grants decided."""
        level = self.level(name)
        if self.principal.is_admin:
            return Decision(True, [f"role {ADMIN_ROLE} sees and edits every field"])
        if not self.allows("read"):
            return Decision(False, [self._not_granted("read")])
        sources = self.field_sources.get(name)
        if not sources:
            reasons = [f"no grant restricts {name!r}, so it is editable"]
        else:
            reasons = [f"{source} makes it {lvl}" for lvl, source in sources]
            reasons.append(f"the most open level wins: {level}")
        return Decision(level != "hidden", [f"field {name!r} is {level}", *reasons])

    def _not_granted(self, right: str) -> str:
        names = ", ".join(source for source, _ in self.grantees) or "no role"
        if right in ("edit", "delete") and self.granted[right]:
            return (f"{names} grants {right} but not read on {self.entity.name}, "
                    f"and {right} needs read; an admin can add read to the role")
        return (f"{names} grants no {right} right on {self.entity.name}; "
                "an admin can add it to the role or a permission set")


def _grantees(
    definition: Definition, principal: Principal
) -> list[tuple[str, Grantee]]:
    found: list[tuple[str, Grantee]] = []
    role = definition.role(principal.role)
    if role is not None:
        found.append((f"role {role.name}", role))
    for name in principal.permission_sets:
        permission_set = definition.permission_set(name)
        if permission_set is not None:
            found.append((f"permission set {name}", permission_set))
        else:
            log.warning("user %s is assigned permission set %s, which the "
                        "definition does not declare; ignoring it",
                        principal.user_id, name)
    return found


def _scope_clause(
    scope: str, table: sa.Table, user_id: str, with_own: bool = True
) -> sa.ColumnElement[bool] | None:
    """Return the condition of one scope. ``team`` and ``subordinates``
    include the user's own records unless ``with_own`` is False, because an
    ``own`` part covers them already."""
    owner = table.c.owner_id
    if scope == "all":
        return None
    if scope == "own":
        return owner == user_id
    if scope == "team":
        mine = TEAM_MEMBERS.alias("my_teams")
        mates = TEAM_MEMBERS.alias("team_mates")
        others = (
            sa.select(mates.c.user_id)
            .join(mine, mine.c.team_id == mates.c.team_id)
            .where(mine.c.user_id == user_id)
        )
    elif scope == "subordinates":
        others = sa.select(HIERARCHY.c.user_id).where(
            HIERARCHY.c.manager_id == user_id
        )
    else:
        raise ValueError(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
    if with_own:
        return sa.or_(owner == user_id, owner.in_(others))
    return owner.in_(others)


def _rule_clause(rule: SharingRule, table: sa.Table) -> sa.ColumnElement[bool]:
    clauses = [
        compile_condition(table, Condition(item.field, item.op, item.value))
        for item in rule.conditions
    ]
    return sa.and_(*clauses)


def _rule_audience(rule: SharingRule) -> str:
    parts = []
    if rule.roles:
        parts.append("roles " + ", ".join(rule.roles))
    if rule.teams:
        parts.append("teams " + ", ".join(rule.teams))
    return "with " + " and ".join(parts)


def _share_clause(
    entity: str, table: sa.Table, user_id: str, levels: tuple[str, ...]
) -> sa.ColumnElement[bool]:
    my_teams = sa.select(TEAM_MEMBERS.c.team_id).where(
        TEAM_MEMBERS.c.user_id == user_id
    )
    return sa.exists().where(
        SHARES.c.entity == entity,
        SHARES.c.record_id == table.c.id,
        SHARES.c.access.in_(levels),
        sa.or_(SHARES.c.user_id == user_id, SHARES.c.team_id.in_(my_teams)),
    )
