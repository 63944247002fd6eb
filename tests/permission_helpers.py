"""An independent model of record permissions, for the permission tests.

``Oracle`` decides, record by record in plain Python, what a user may do.
It reads the role, permission set and sharing rule documents as JSON and
takes only table objects from ``crm_platform.access``, so a test that
compares its decisions with ``RecordService`` compares two separate
implementations of the rules:

- a user's rights on an entity are the union of their role's and their
  permission sets' grants, nothing by default, everything for ``admin``;
- within one role or permission set, a grant naming the entity replaces
  the ``"*"`` grant;
- read, edit and delete have scopes: own, team (the owner is the user or
  shares a team with them), subordinates (the owner is the user or reports
  to them, directly or not) and all;
- fields no grant names are editable, and the most open level wins;
- sharing rules and manual shares widen read and edit, but only for users
  who have that right at some scope. An edit share also gives read.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from crm_platform import access as access_tables

ADMIN = "admin"
SCOPED = ("read", "edit", "delete")
UNSCOPED = ("create", "export", "import", "change_owner")
LEVELS = ("hidden", "read_only", "editable")
#: Share levels that carry each scoped right.
SHARE_LEVELS: Mapping[str, tuple[str, ...]] = {
    "read": ("read", "edit"),
    "edit": ("edit",),
    "delete": (),
}


@dataclass(frozen=True)
class Grant:
    """One entry of a role's or permission set's ``entities`` map."""

    scopes: Mapping[str, frozenset[str]]
    flags: Mapping[str, bool]
    fields: Mapping[str, str]

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> Grant:
        scopes = {right: _parse_scopes(document.get(right, False)) for right in SCOPED}
        flags = {right: bool(document.get(right, False)) for right in UNSCOPED}
        return cls(scopes, flags, dict(document.get("fields", {})))


def _parse_scopes(value: Any) -> frozenset[str]:
    """Read a scopes value: true (all), false (none), a scope or a list."""
    if value is True:
        return frozenset({"all"})
    if value is False:
        return frozenset()
    if isinstance(value, str):
        return frozenset({value})
    return frozenset(value)


@dataclass(frozen=True)
class Policy:
    """Roles, permission sets (name -> entity key -> grant) and sharing rules."""

    roles: Mapping[str, Mapping[str, Grant]]
    permission_sets: Mapping[str, Mapping[str, Grant]]
    rules: Sequence[Mapping[str, Any]]

    @classmethod
    def from_documents(cls, documents: Mapping[str, Any]) -> Policy:
        """Build from definition documents keyed by path (``roles/x.json``)."""
        roles: dict[str, dict[str, Grant]] = {}
        sets: dict[str, dict[str, Grant]] = {}
        rules: list[Mapping[str, Any]] = []
        for path, document in sorted(documents.items()):
            folder = path.split("/")[0]
            if folder == "roles":
                roles[document["name"]] = _parse_grantee(document)
            elif folder == "permission_sets":
                sets[document["name"]] = _parse_grantee(document)
            elif folder == "sharing_rules":
                rules.append(document)
        return cls(roles, sets, rules)

    @classmethod
    def from_folder(cls, folder: Path) -> Policy:
        documents = {
            f"{path.parent.name}/{path.name}": json.loads(path.read_text("utf-8"))
            for sub in ("roles", "permission_sets", "sharing_rules")
            for path in sorted((folder / sub).glob("*.json"))
        }
        return cls.from_documents(documents)


def _parse_grantee(document: Mapping[str, Any]) -> dict[str, Grant]:
    entities = document.get("entities", {})
    return {key: Grant.parse(value) for key, value in entities.items()}


def _grant_for(grants: Mapping[str, Grant], entity: str) -> Grant | None:
    if entity in grants:
        return grants[entity]
    return grants.get("*")


@dataclass(frozen=True)
class Share:
    """A record shared by hand with one user or one team."""

    entity: str
    record_id: str
    access: str
    user: str | None = None
    team: str | None = None


@dataclass
class People:
    """Tenant data that permissions read, with users as user ids: roles,
    permission sets, teams, reporting lines (user -> manager) and shares."""

    roles: dict[str, str]
    permission_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    teams: dict[str, set[str]] = field(default_factory=dict)
    managers: dict[str, str] = field(default_factory=dict)
    shares: list[Share] = field(default_factory=list)

    def teams_of(self, user: str) -> set[str]:
        return {name for name, members in self.teams.items() if user in members}

    def team_mates(self, user: str) -> set[str]:
        mates: set[str] = set()
        for name in self.teams_of(user):
            mates |= self.teams[name]
        return mates

    def subordinates(self, user: str) -> set[str]:
        """Return everyone who reports to ``user``, directly or not."""
        below: set[str] = set()
        frontier = {user}
        while frontier:
            frontier = {
                member
                for member, manager in self.managers.items()
                if manager in frontier and member not in below
            }
            below |= frontier
        return below

    def hierarchy(self) -> list[tuple[str, str]]:
        """Return the (manager, user) pairs of the reporting lines' closure."""
        return sorted(
            (manager, user)
            for manager in set(self.managers.values())
            for user in self.subordinates(manager)
        )


class Oracle:
    """Decides record by record what a user may do, from the rules alone."""

    def __init__(self, policy: Policy, people: People) -> None:
        self.policy = policy
        self.people = people

    def grants(self, user: str, entity: str) -> list[Grant]:
        found = []
        role_grants = self.policy.roles.get(self.people.roles[user], {})
        sources = [role_grants] + [
            self.policy.permission_sets.get(name, {})
            for name in self.people.permission_sets.get(user, ())
        ]
        for grants in sources:
            grant = _grant_for(grants, entity)
            if grant is not None:
                found.append(grant)
        return found

    def is_admin(self, user: str) -> bool:
        return self.people.roles[user] == ADMIN

    def scopes(self, user: str, entity: str, right: str) -> set[str]:
        if self.is_admin(user):
            return {"all"}
        scopes: set[str] = set()
        for grant in self.grants(user, entity):
            scopes |= grant.scopes[right]
        return scopes

    def allows(self, user: str, entity: str, right: str) -> bool:
        """Return True if the user has ``right`` on at least some records."""
        if self.is_admin(user):
            return True
        if right in ("edit", "delete") and not self.scopes(user, entity, "read"):
            return False
        if right in SCOPED:
            return bool(self.scopes(user, entity, right))
        return any(grant.flags[right] for grant in self.grants(user, entity))

    def permits(
        self, user: str, entity: str, right: str, record: Mapping[str, Any]
    ) -> bool:
        """Return True if the user may ``right`` (read, edit, delete) ``record``.
        Edit and delete also need read on the record."""
        if right != "read" and not self.permits(user, entity, "read", record):
            return False
        scopes = self.scopes(user, entity, right)
        if not scopes:
            return False
        if self.in_scope(user, scopes, record["owner_id"]):
            return True
        if right == "delete":
            return False
        levels = SHARE_LEVELS[right]
        return self._ruled(user, entity, levels, record) or self._shared(
            user, entity, levels, record["id"]
        )

    def in_scope(self, user: str, scopes: set[str], owner: str) -> bool:
        if "all" in scopes or owner == user:
            return True
        if "team" in scopes and owner in self.people.team_mates(user):
            return True
        return "subordinates" in scopes and owner in self.people.subordinates(user)

    def _ruled(
        self, user: str, entity: str, levels: tuple[str, ...], record: Mapping[str, Any]
    ) -> bool:
        role = self.people.roles[user]
        teams = self.people.teams_of(user)
        for rule in self.policy.rules:
            if rule["entity"] != entity or rule.get("access", "read") not in levels:
                continue
            audience = role in rule.get("roles", ()) or bool(
                teams & set(rule.get("teams", ()))
            )
            if audience and all(matches(c, record) for c in rule["where"]):
                return True
        return False

    def _shared(
        self, user: str, entity: str, levels: tuple[str, ...], record_id: str
    ) -> bool:
        teams = self.people.teams_of(user)
        return any(
            share.entity == entity
            and share.record_id == record_id
            and share.access in levels
            and (share.user == user or share.team in teams)
            for share in self.people.shares
        )

    def level(self, user: str, entity: str, name: str) -> str:
        """Return hidden, read_only or editable: the most open level of the
        user's grants on the entity, editable where no grant names the field."""
        if self.is_admin(user):
            return "editable"
        # Only grants that give read on the entity decide field levels.
        grants = [g for g in self.grants(user, entity) if g.scopes["read"]]
        if not grants:
            return "editable"
        return max(
            (grant.fields.get(name, "editable") for grant in grants), key=LEVELS.index
        )


def matches(condition: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """Evaluate one filter condition of a sharing rule on a record. A blank
    value never equals, compares or belongs to a list, and it is "not equal"
    to any value."""
    value = record.get(condition["field"])
    expected = condition["value"]
    op = condition["op"]
    if op == "isnull":
        return (value is None) == bool(expected)
    if op == "eq":
        return value is None if expected is None else value == expected
    if op == "ne":
        return value is not None if expected is None else value != expected
    if value is None:
        return False
    if op == "in":
        return value in expected
    comparisons = {
        "lt": value < expected,
        "lte": value <= expected,
        "gt": value > expected,
        "gte": value >= expected,
    }
    return comparisons[op]


def store_people(conn: sa.Connection, people: People) -> dict[str, str]:
    """Write teams, members, reporting lines with their closure, permission
    set assignments and shares into a tenant's service tables, with users
    as user ids. Returns the team ids by team name."""
    team_ids = {
        name: f"team-{index}" for index, name in enumerate(sorted(people.teams))
    }
    for name, team_id in team_ids.items():
        conn.execute(
            access_tables.TEAMS.insert().values(
                id=team_id, name=name, label=name.title()
            )
        )
        for user in sorted(people.teams[name]):
            conn.execute(
                access_tables.TEAM_MEMBERS.insert().values(
                    team_id=team_id, user_id=user
                )
            )
    for user, manager in people.managers.items():
        conn.execute(
            access_tables.REPORTING.insert().values(user_id=user, manager_id=manager)
        )
    for manager, user in people.hierarchy():
        conn.execute(
            access_tables.HIERARCHY.insert().values(manager_id=manager, user_id=user)
        )
    for user, names in people.permission_sets.items():
        for name in names:
            conn.execute(
                access_tables.ASSIGNMENTS.insert().values(
                    user_id=user, permission_set=name
                )
            )
    for index, share in enumerate(people.shares):
        conn.execute(
            access_tables.SHARES.insert().values(
                id=f"share-{index}",
                entity=share.entity,
                record_id=share.record_id,
                user_id=share.user,
                team_id=team_ids[share.team] if share.team else None,
                access=share.access,
                created_at=dt.datetime.now(dt.UTC),
            )
        )
    return team_ids


def clear_people(conn: sa.Connection) -> None:
    """Delete every row of the permission service tables."""
    for table in (
        access_tables.SHARES,
        access_tables.TEAM_MEMBERS,
        access_tables.TEAMS,
        access_tables.REPORTING,
        access_tables.HIERARCHY,
        access_tables.ASSIGNMENTS,
    ):
        conn.execute(table.delete())


def ids_of(records: Iterable[Mapping[str, Any]]) -> set[str]:
    return {str(record["id"]) for record in records}
