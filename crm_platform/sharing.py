"""Tenant data behind record permissions: teams, reporting lines, permission
set assignments and records shared by hand.

Roles, permission sets and sharing rules are metadata. What this module
changes is tenant data that ``access.Access`` reads when it builds a user's
predicates: who is in which team (the ``team`` scope), who reports to whom
(the ``subordinates`` scope, through the derived ``_hierarchy`` table),
which member has which permission set, and which record is shared with
which user or team.

Teams, reporting lines and assignments are changed by tenant admins only.
A record is shared by an admin or by a member who may edit it. Every
function raises a ``PlatformError`` subclass that names the bad value and
the fix, so the API, the UI and the CLI report it as it is.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from uuid_utils import uuid7

from . import journal
from .access import ASSIGNMENTS, HIERARCHY, REPORTING, SHARES, TEAM_MEMBERS, TEAMS
from .control import Actor
from .errors import Conflict, Forbidden, NotFound, RecordInvalid
from .records import RecordService
from .tenancy import Platform, TenantRuntime

log = logging.getLogger(__name__)

#: Team names are API names: lower-case letters, digits and underscores.
TEAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: Maximum length of a team label, in characters (``_teams.label``).
MAX_LABEL_LENGTH = 200
#: Share levels: an edit share also lets the user read the record.
SHARE_ACCESS: tuple[str, ...] = ("read", "edit")
#: Name of the ``_sequences`` row whose upsert serializes reporting-line
#: changes, so two concurrent changes cannot build a cycle together.
REPORTING_LOCK = "_reporting_lock"


class TeamExists(Conflict):
    """Raised when a new team's name is already taken."""

    code = "team_exists"


class ReportingCycle(Conflict):
    """Raised when a manager change would make someone report to themselves."""

    code = "reporting_cycle"


@dataclass(frozen=True)
class Team:
    """A team and the user ids of its members, sorted."""

    id: str
    name: str
    label: str
    members: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "members": list(self.members)}


@dataclass(frozen=True)
class Share:
    """One record shared by hand with a user or a team."""

    id: str
    entity: str
    record_id: str
    user_id: str | None
    team: str | None
    access: str
    created_at: dt.datetime
    created_by: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "entity": self.entity,
            "record_id": self.record_id,
            "user_id": self.user_id,
            "team": self.team,
            "access": self.access,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class MemberAccess:
    """One member's manager, teams and permission sets, for the admin pages."""

    manager_id: str | None = None
    teams: tuple[str, ...] = ()
    permission_sets: tuple[str, ...] = ()


@dataclass
class Overview:
    """The tenant's access data keyed by user id, read in one connection."""

    teams: list[Team] = field(default_factory=list)
    members: dict[str, MemberAccess] = field(default_factory=dict)


class SharingService:
    """Changes one tenant's teams, reporting lines, permission set
    assignments and shares on behalf of one member, ``actor``."""

    def __init__(
        self, platform: Platform, runtime: TenantRuntime, actor: Actor
    ) -> None:
        self.platform = platform
        self.runtime = runtime
        self.actor = actor

    # Checks

    def require_admin(self, action: str) -> None:
        """Raise ``Forbidden`` unless the actor is an admin of the tenant."""
        if not self.actor.is_admin:
            raise Forbidden(
                f"only admins may {action}: user {self.actor.user_id!r} has the "
                f"role {self.actor.role!r}; ask an admin of the tenant",
                details={"role": self.actor.role},
            )

    def _check_writable(self) -> None:
        status = self.runtime.tenant.status
        if status != "active":
            raise Forbidden(
                f"tenant {self.runtime.slug!r} is {status.replace('_', '-')}: "
                "teams and shares can be read but not changed until an operator "
                "makes it active again",
                details={"tenant_status": status},
            )

    def _start_admin_change(self, action: str) -> None:
        self.require_admin(action)
        self._check_writable()

    def member(self, user_id: str, field_name: str | None = None) -> Actor:
        """Return the tenant's member ``user_id``. A user of another tenant,
        or no user, raises ``NotFound``, or ``RecordInvalid`` on
        ``field_name`` when the id came in a request body."""
        actor = None
        if isinstance(user_id, str) and user_id:
            actor = self.platform.control.actor(self.runtime.tenant, user_id)
        if actor is not None:
            return actor
        message = (f"user {user_id!r} is not a member of tenant "
                   f"{self.runtime.slug!r}: use the user id of one of its members")
        if field_name is None:
            raise NotFound(message)
        raise RecordInvalid(message, details={field_name: ["not a member"]})

    # Teams

    def list_teams(self) -> list[Team]:
        """Return every team with its members, ordered by name (admins only)."""
        self.require_admin("list teams")
        with self.runtime.engine.connect() as conn:
            return _read_teams(conn)

    def team_choices(self) -> list[tuple[str, str]]:
        """Return every team's (name, label), for any member who shares records."""
        with self.runtime.engine.connect() as conn:
            rows = conn.execute(sa.select(TEAMS.c.name, TEAMS.c.label)
                                .order_by(TEAMS.c.name))
            return [(row.name, row.label) for row in rows]

    def get_team(self, name: str) -> Team:
        """Return one team with its members or raise ``NotFound`` (admins only)."""
        self.require_admin("read teams")
        with self.runtime.engine.connect() as conn:
            return _find_team(conn, self.runtime.slug, name)

    def create_team(self, name: str, label: str | None = None) -> Team:
        """Create team ``name``; the label defaults to the name."""
        self._start_admin_change("create teams")
        check_team_name(name)
        text = check_label(label if label is not None else name)
        team = Team(id=str(uuid7()), name=name, label=text)
        try:
            with self.runtime.engine.begin() as conn:
                conn.execute(TEAMS.insert().values(id=team.id, name=name, label=text))
        except sa.exc.IntegrityError as err:
            raise TeamExists(
                f"team {name!r} already exists in tenant {self.runtime.slug!r}: "
                "choose another name or add members to that team",
                details={"name": name},
            ) from err
        log.info("user %s created team %s in tenant %s", self.actor.user_id, name,
                 self.runtime.slug)
        return team

    def relabel_team(self, name: str, label: str) -> Team:
        """Change the label of team ``name``."""
        self._start_admin_change("rename teams")
        text = check_label(label)
        with self.runtime.engine.begin() as conn:
            team = _find_team(conn, self.runtime.slug, name)
            conn.execute(TEAMS.update().where(TEAMS.c.id == team.id).values(label=text))
        log.info("user %s relabelled team %s in tenant %s", self.actor.user_id, name,
                 self.runtime.slug)
        return Team(team.id, team.name, text, team.members)

    def delete_team(self, name: str) -> None:
        """Delete team ``name`` with its memberships and the shares made
        with it. Sharing rules that name the team match no one until a team
        of that name exists again."""
        self._start_admin_change("delete teams")
        with self.runtime.engine.begin() as conn:
            team = _find_team(conn, self.runtime.slug, name)
            # The foreign keys cascade too, but SQLite does so only with
            # ``PRAGMA foreign_keys``; deleting explicitly works everywhere.
            conn.execute(SHARES.delete().where(SHARES.c.team_id == team.id))
            conn.execute(TEAM_MEMBERS.delete().where(TEAM_MEMBERS.c.team_id == team.id))
            conn.execute(TEAMS.delete().where(TEAMS.c.id == team.id))
        log.info("user %s deleted team %s in tenant %s", self.actor.user_id, name,
                 self.runtime.slug)

    def add_team_member(self, name: str, user_id: str) -> Team:
        """Add member ``user_id`` to team ``name``; adding twice changes nothing."""
        self._start_admin_change("change teams")
        self.member(user_id)
        with self.runtime.engine.begin() as conn:
            team = _find_team(conn, self.runtime.slug, name)
            if user_id not in team.members:
                conn.execute(TEAM_MEMBERS.insert().values(team_id=team.id,
                                                          user_id=user_id))
            changed = _find_team(conn, self.runtime.slug, name)
        log.info("user %s added user %s to team %s in tenant %s",
                 self.actor.user_id, user_id, name, self.runtime.slug)
        return changed

    def remove_team_member(self, name: str, user_id: str) -> Team:
        """Remove ``user_id`` from team ``name``; ``NotFound`` if not in it."""
        self._start_admin_change("change teams")
        with self.runtime.engine.begin() as conn:
            team = _find_team(conn, self.runtime.slug, name)
            removed = conn.execute(
                TEAM_MEMBERS.delete().where(
                    TEAM_MEMBERS.c.team_id == team.id,
                    TEAM_MEMBERS.c.user_id == user_id,
                )
            )
            if removed.rowcount == 0:
                raise NotFound(f"user {user_id!r} is not in team {name!r}")
            changed = _find_team(conn, self.runtime.slug, name)
        log.info("user %s removed user %s from team %s in tenant %s",
                 self.actor.user_id, user_id, name, self.runtime.slug)
        return changed

    # Reporting lines

    def manager_of(self, user_id: str) -> str | None:
        """Return the user id of the member's direct manager, if any."""
        self.require_admin("read reporting lines")
        with self.runtime.engine.connect() as conn:
            return conn.execute(
                sa.select(REPORTING.c.manager_id).where(REPORTING.c.user_id == user_id)
            ).scalar()

    def set_manager(self, user_id: str, manager_id: str) -> None:
        """Make member ``user_id`` report directly to member ``manager_id``
        and rebuild ``_hierarchy`` in the same transaction. A change that
        would close a loop raises ``ReportingCycle``."""
        self._start_admin_change("change reporting lines")
        user = self.member(user_id)
        manager = self.member(manager_id, "manager_id")
        if user_id == manager_id:
            raise ReportingCycle(
                f"{user.email} cannot report to themselves: choose another manager",
                details={"user_id": user_id, "manager_id": manager_id},
            )
        with self.runtime.engine.begin() as conn:
            journal.advance_counter(conn, REPORTING_LOCK, 0)
            lines = _reporting_lines(conn)
            if _reports_to(lines, manager_id, user_id):
                raise ReportingCycle(
                    f"{manager.email} already reports to {user.email}, so "
                    f"{user.email} cannot report to {manager.email}: change "
                    f"{manager.email}'s manager first",
                    details={"user_id": user_id, "manager_id": manager_id},
                )
            conn.execute(REPORTING.delete().where(REPORTING.c.user_id == user_id))
            conn.execute(REPORTING.insert().values(user_id=user_id,
                                                   manager_id=manager_id))
            lines[user_id] = manager_id
            _rebuild_hierarchy(conn, lines)
        log.info("user %s made user %s report to %s in tenant %s",
                 self.actor.user_id, user_id, manager_id, self.runtime.slug)

    def clear_manager(self, user_id: str) -> None:
        """Remove the member's manager and rebuild ``_hierarchy``. Users who
        are no longer members can be cleared too, so that their stale
        reporting lines can be removed."""
        self._start_admin_change("change reporting lines")
        with self.runtime.engine.begin() as conn:
            journal.advance_counter(conn, REPORTING_LOCK, 0)
            removed = conn.execute(
                REPORTING.delete().where(REPORTING.c.user_id == user_id)
            )
            if removed.rowcount == 0:
                raise NotFound(f"user {user_id!r} has no manager to remove")
            _rebuild_hierarchy(conn, _reporting_lines(conn))
        log.info("user %s removed the manager of user %s in tenant %s",
                 self.actor.user_id, user_id, self.runtime.slug)

    # Permission set assignments

    def check_permission_set(self, name: str) -> None:
        """Raise ``NotFound`` unless the definition declares permission set
        ``name``, listing the declared ones."""
        if self.runtime.definition.permission_set(name) is not None:
            return
        declared = [item.name for item in self.runtime.definition.permission_sets]
        choice = ", ".join(declared) if declared else "none are declared"
        raise NotFound(
            f"permission set {name!r} is not declared in the definition of tenant "
            f"{self.runtime.slug!r}: use one of {choice}",
            details={"permission_sets": declared},
        )

    def permission_sets_of(self, user_id: str) -> list[str]:
        """Return the permission sets assigned to ``user_id``, sorted."""
        self.require_admin("read permission set assignments")
        with self.runtime.engine.connect() as conn:
            return list(conn.execute(
                sa.select(ASSIGNMENTS.c.permission_set)
                .where(ASSIGNMENTS.c.user_id == user_id)
                .order_by(ASSIGNMENTS.c.permission_set)
            ).scalars())

    def assign_permission_set(self, user_id: str, name: str) -> list[str]:
        """Give member ``user_id`` permission set ``name``; assigning twice
        changes nothing. Returns the member's permission sets."""
        self._start_admin_change("assign permission sets")
        self.check_permission_set(name)
        self.member(user_id)
        with self.runtime.engine.begin() as conn:
            found = conn.execute(
                sa.select(ASSIGNMENTS.c.user_id).where(
                    ASSIGNMENTS.c.user_id == user_id,
                    ASSIGNMENTS.c.permission_set == name,
                )
            ).first()
            if found is None:
                conn.execute(ASSIGNMENTS.insert().values(user_id=user_id,
                                                         permission_set=name))
        log.info("user %s assigned permission set %s to user %s in tenant %s",
                 self.actor.user_id, name, user_id, self.runtime.slug)
        return self.permission_sets_of(user_id)

    def unassign_permission_set(self, user_id: str, name: str) -> list[str]:
        """Take permission set ``name`` from ``user_id``. Names no longer
        declared can be removed too, so that stale assignments go away."""
        self._start_admin_change("assign permission sets")
        with self.runtime.engine.begin() as conn:
            removed = conn.execute(
                ASSIGNMENTS.delete().where(
                    ASSIGNMENTS.c.user_id == user_id,
                    ASSIGNMENTS.c.permission_set == name,
                )
            )
        if removed.rowcount == 0:
            raise NotFound(
                f"user {user_id!r} does not hold permission set {name!r}"
            )
        log.info("user %s took permission set %s from user %s in tenant %s",
                 self.actor.user_id, name, user_id, self.runtime.slug)
        return self.permission_sets_of(user_id)

    def forget_member(self, user_id: str) -> None:
        """Delete a former member's team memberships, reporting lines (as
        member and as manager), permission sets and the shares made with
        them, so that they get none of it back if they join again."""
        self._start_admin_change("change teams")
        with self.runtime.engine.begin() as conn:
            journal.advance_counter(conn, REPORTING_LOCK, 0)
            conn.execute(TEAM_MEMBERS.delete().where(TEAM_MEMBERS.c.user_id == user_id))
            conn.execute(ASSIGNMENTS.delete().where(ASSIGNMENTS.c.user_id == user_id))
            conn.execute(SHARES.delete().where(SHARES.c.user_id == user_id))
            conn.execute(REPORTING.delete().where(sa.or_(
                REPORTING.c.user_id == user_id, REPORTING.c.manager_id == user_id
            )))
            _rebuild_hierarchy(conn, _reporting_lines(conn))
        log.info("user %s removed the teams, manager, permission sets and shares "
                 "of user %s in tenant %s", self.actor.user_id, user_id,
                 self.runtime.slug)

    # Overview for the admin pages

    def overview(self) -> Overview:
        """Return every team and each user's manager, teams and permission
        sets (admins only)."""
        self.require_admin("list teams")
        with self.runtime.engine.connect() as conn:
            teams = _read_teams(conn)
            managers = _reporting_lines(conn)
            sets: dict[str, list[str]] = {}
            for row in conn.execute(
                sa.select(ASSIGNMENTS).order_by(ASSIGNMENTS.c.permission_set)
            ):
                sets.setdefault(row.user_id, []).append(row.permission_set)
        team_names: dict[str, list[str]] = {}
        for team in teams:
            for user_id in team.members:
                team_names.setdefault(user_id, []).append(team.name)
        users = set(managers) | set(sets) | set(team_names)
        members = {
            user_id: MemberAccess(
                manager_id=managers.get(user_id),
                teams=tuple(team_names.get(user_id, ())),
                permission_sets=tuple(sets.get(user_id, ())),
            )
            for user_id in users
        }
        return Overview(teams=teams, members=members)

    # Manual shares

    def _check_share_useful(self, entity: str, member: Actor, access: str) -> None:
        """Reject a share that would give ``member`` nothing: sharing widens
        the records of a right the member's role or permission sets already
        grant, so a role without it gains nothing from the share."""
        right = "edit" if access == "edit" else "read"
        records = self.platform.records(self.runtime, member)
        if records.access(entity).allows(right):
            return
        raise RecordInvalid(
            f"sharing {entity} records at {access!r} gives {member.email} "
            f"nothing: role {member.role!r} and their permission sets grant no "
            f"{right} right on {entity}. Give them the right at some scope "
            "(a role or a permission set) first",
            details={"user_id": [f"role {member.role!r} has no {right} right"]},
        )

    def check_can_share(self, entity: str, record_id: str) -> None:
        """Raise ``NotFound`` or ``Forbidden`` unless the actor may share the
        record."""
        self._sharing_access(entity, record_id)

    def _sharing_access(self, entity: str, record_id: str) -> RecordService:
        """Return the actor's record service after checking that they may
        share the record: ``NotFound`` if they cannot read it, ``Forbidden``
        if they can read but not edit it."""
        records = self.platform.records(self.runtime, self.actor)
        self.runtime.entity(entity)
        if not records.readable(entity, record_id):
            raise NotFound(f"{entity} record {record_id!r} not found")
        if self.actor.is_admin:
            return records
        if not records.permits(entity, "edit", record_id):
            raise Forbidden(
                f"user {self.actor.user_id!r} may read but not edit {entity} "
                f"record {record_id!r}, so they cannot share it: ask its owner "
                "or an admin",
                details={"entity": entity, "record_id": record_id},
            )
        return records

    def shares(self, entity: str, record_id: str) -> list[Share]:
        """Return the record's shares, oldest first."""
        self._sharing_access(entity, record_id)
        with self.runtime.engine.connect() as conn:
            return _read_shares(conn, entity, record_id)

    def share(
        self,
        entity: str,
        record_id: str,
        access: Any,
        user_id: Any = None,
        team: Any = None,
    ) -> tuple[Share, bool]:
        """Share a record with one member or one team at ``access``.

        Sharing again with the same user or team changes the level. Returns
        the share and whether it is new. The arguments may come from a JSON
        body as they are: ``check_share_target`` checks their types.
        """
        self._check_writable()
        self._sharing_access(entity, record_id)
        check_share_target(access, user_id, team)
        if user_id is not None:
            self._check_share_useful(entity, self.member(user_id, "user_id"), access)
        with self.runtime.engine.begin() as conn:
            team_id = None
            if team is not None:
                team_id = _find_team(conn, self.runtime.slug, team, "team").id
            target = (SHARES.c.team_id == team_id if team_id is not None
                      else SHARES.c.user_id == user_id)
            existing = conn.execute(
                sa.select(SHARES.c.id).where(
                    SHARES.c.entity == entity, SHARES.c.record_id == record_id, target
                )
            ).scalar()
            if existing is not None:
                conn.execute(SHARES.update().where(SHARES.c.id == existing)
                             .values(access=access))
                share_id = existing
            else:
                share_id = str(uuid7())
                conn.execute(SHARES.insert().values(
                    id=share_id, entity=entity, record_id=record_id,
                    user_id=user_id, team_id=team_id, access=access,
                    created_at=dt.datetime.now(dt.UTC),
                    created_by=self.actor.user_id,
                ))
            share = _read_share(conn, share_id)
        log.warning("user %s shared %s record %s with %s at %s in tenant %s",
                 self.actor.user_id, entity, record_id,
                 f"team {team}" if team else f"user {user_id}", access,
                 self.runtime.slug)
        return share, existing is None

    def unshare(self, entity: str, record_id: str, share_id: str) -> None:
        """Remove one share of the record; ``NotFound`` if it has no such share."""
        self._check_writable()
        self._sharing_access(entity, record_id)
        table = self.runtime.tables[entity]
        with self.runtime.engine.begin() as conn:
            where = (
                SHARES.c.id == share_id,
                SHARES.c.entity == entity,
                SHARES.c.record_id == record_id,
            )
            creator = conn.execute(sa.select(SHARES.c.created_by).where(*where)).first()
            owner = conn.execute(
                sa.select(table.c.owner_id).where(table.c.id == record_id)
            ).scalar()
            if creator is not None and not self.actor.is_admin and (
                self.actor.user_id not in (owner, creator[0])
            ):
                raise Forbidden(
                    f"only the record's owner, the person who shared it and "
                    f"admins may remove share {share_id!r}; ask one of them",
                    details={"share_id": share_id},
                )
            removed = conn.execute(SHARES.delete().where(*where))
        if removed.rowcount == 0:
            raise NotFound(
                f"share {share_id!r} of {entity} record {record_id!r} not found"
            )
        log.warning("user %s removed share %s of %s record %s in tenant %s",
                 self.actor.user_id, share_id, entity, record_id, self.runtime.slug)


# Input checks


def check_team_name(name: Any) -> str:
    """Return ``name`` if it is a valid team name, else raise ``RecordInvalid``."""
    if not isinstance(name, str) or not TEAM_NAME.match(name):
        raise RecordInvalid(
            f"invalid team name {name!r}: use 1 to 63 lower-case letters, digits "
            "and underscores, starting with a letter",
            details={"name": ["expected ^[a-z][a-z0-9_]{0,62}$"]},
        )
    return name


def check_label(label: Any) -> str:
    """Return the stripped label, or raise ``RecordInvalid`` if it is not a
    non-empty string of at most ``MAX_LABEL_LENGTH`` characters."""
    if not isinstance(label, str) or not label.strip():
        raise RecordInvalid(
            f"invalid team label {label!r}: send a non-empty string",
            details={"label": ["expected a non-empty string"]},
        )
    text = label.strip()
    if len(text) > MAX_LABEL_LENGTH:
        raise RecordInvalid(
            f"invalid team label: {len(text)} characters, over the maximum of "
            f"{MAX_LABEL_LENGTH}",
            details={"label": [f"longer than {MAX_LABEL_LENGTH} characters"]},
        )
    return text


def check_share_target(access: Any, user_id: Any, team: Any) -> None:
    """Raise ``RecordInvalid`` unless ``access`` is a share level and exactly
    one of ``user_id`` and ``team`` is a non-empty string."""
    if access not in SHARE_ACCESS:
        raise RecordInvalid(
            f"invalid access {access!r}: use one of {', '.join(SHARE_ACCESS)}",
            details={"access": [f"expected one of {', '.join(SHARE_ACCESS)}"]},
        )
    given = [name for name, value in (("user_id", user_id), ("team", team))
             if value is not None]
    if len(given) != 1:
        raise RecordInvalid(
            "send exactly one of 'user_id' and 'team' to name who gets the share"
            f" (got {', '.join(map(repr, given)) or 'neither'})",
            details={"user_id": ["send user_id or team"]},
        )
    value = user_id if user_id is not None else team
    if not isinstance(value, str) or not value:
        raise RecordInvalid(f"invalid {given[0]} {value!r}: expected a string",
                            details={given[0]: ["expected a string"]})


# Queries


def _read_teams(conn: sa.Connection, where: Any = None) -> list[Team]:
    statement = sa.select(TEAMS).order_by(TEAMS.c.name)
    if where is not None:
        statement = statement.where(where)
    rows = conn.execute(statement).all()
    members: dict[str, list[str]] = {row.id: [] for row in rows}
    if members:
        pairs = conn.execute(
            sa.select(TEAM_MEMBERS.c.team_id, TEAM_MEMBERS.c.user_id)
            .where(TEAM_MEMBERS.c.team_id.in_(list(members)))
            .order_by(TEAM_MEMBERS.c.user_id)
        )
        for team_id, user_id in pairs:
            members[team_id].append(user_id)
    return [Team(row.id, row.name, row.label, tuple(members[row.id])) for row in rows]


def _find_team(
    conn: sa.Connection, slug: str, name: str, field_name: str | None = None
) -> Team:
    found = _read_teams(conn, TEAMS.c.name == name)
    if found:
        return found[0]
    message = (f"team {name!r} not found in tenant {slug!r}: create it first, "
               "or list the teams to check the name")
    if field_name is None:
        raise NotFound(message)
    raise RecordInvalid(message, details={field_name: ["no such team"]})


def _reporting_lines(conn: sa.Connection) -> dict[str, str]:
    """Return each user's direct manager."""
    rows = conn.execute(sa.select(REPORTING.c.user_id, REPORTING.c.manager_id))
    return {user_id: manager_id for user_id, manager_id in rows}


def _reports_to(lines: Mapping[str, str], user_id: str, manager_id: str) -> bool:
    """Return True if ``user_id`` reports to ``manager_id`` directly or
    through others. Stops on a loop already stored, which set_manager never
    writes but a hand-edited database might hold."""
    seen: set[str] = set()
    current = lines.get(user_id)
    while current is not None and current not in seen:
        if current == manager_id:
            return True
        seen.add(current)
        current = lines.get(current)
    return False


def closure(lines: Mapping[str, str]) -> set[tuple[str, str]]:
    """Return every (manager, user) pair where the user reports to the
    manager directly or through others: the rows of ``_hierarchy``."""
    pairs: set[tuple[str, str]] = set()
    for user_id in lines:
        seen: set[str] = set()
        current = lines.get(user_id)
        while current is not None and current not in seen:
            if current != user_id:
                pairs.add((current, user_id))
            seen.add(current)
            current = lines.get(current)
    return pairs


def _rebuild_hierarchy(conn: sa.Connection, lines: Mapping[str, str]) -> None:
    conn.execute(HIERARCHY.delete())
    pairs = sorted(closure(lines))
    if pairs:
        conn.execute(HIERARCHY.insert(),
                     [{"manager_id": m, "user_id": u} for m, u in pairs])


def _share_query() -> sa.Select[Any]:
    return sa.select(SHARES, TEAMS.c.name.label("team_name")).outerjoin(
        TEAMS, TEAMS.c.id == SHARES.c.team_id
    )


def _share_from(row: Any) -> Share:
    return Share(
        id=row.id, entity=row.entity, record_id=row.record_id, user_id=row.user_id,
        team=row.team_name, access=row.access, created_at=row.created_at,
        created_by=row.created_by,
    )


def _read_share(conn: sa.Connection, share_id: str) -> Share:
    row = conn.execute(_share_query().where(SHARES.c.id == share_id)).one()
    return _share_from(row)


def _read_shares(conn: sa.Connection, entity: str, record_id: str) -> list[Share]:
    rows = conn.execute(
        _share_query()
        .where(SHARES.c.entity == entity, SHARES.c.record_id == record_id)
        .order_by(SHARES.c.created_at, SHARES.c.id)
    )
    return [_share_from(row) for row in rows]


def user_ids(shares: Iterable[Share]) -> set[str]:
    """Return the user ids that ``shares`` name, to look up their names."""
    return {share.user_id for share in shares if share.user_id is not None}
