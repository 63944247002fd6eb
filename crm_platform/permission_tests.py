"""Run the permission tests a definition carries, on generated data.

A permission test case states what a user with some role may do with a
record of some owner ("a sales rep cannot read another rep's
opportunity"). ``run_permission_tests`` builds the definition's tables in a
private in-memory SQLite database, adds one record per case owned by the
case's kind of user, and checks it with the same compiled predicates that
``RecordService`` applies. ``metacrm validate`` and every apply refuse a
definition whose cases fail, with one problem per failed case.

The generated users stand in the usual relations to the user under test:
``team`` shares a team with them, ``subordinate`` reports to them,
``manager`` is the one they report to, and ``other`` is unrelated.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import threading
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from metadata_engine.errors import DefinitionError, Problem
from metadata_engine.model import (
    Definition,
    Entity,
    PermissionCase,
    PermissionTest,
)
from metadata_engine.tables import build_tables
from metadata_engine.values import parse_date, parse_datetime

from .access import HIERARCHY, REPORTING, TEAM_MEMBERS, TEAMS, Access, Principal

log = logging.getLogger(__name__)

#: User ids of the user under test and of one user in each relation to them.
USERS: Mapping[str, str] = {
    "self": "00000000-0000-7000-8000-000000000001",
    "other": "00000000-0000-7000-8000-000000000002",
    "team": "00000000-0000-7000-8000-000000000003",
    "subordinate": "00000000-0000-7000-8000-000000000004",
    "manager": "00000000-0000-7000-8000-000000000005",
}
TEAM_ID = "00000000-0000-7000-8000-0000000000aa"
#: Name of the team the user under test and the ``team`` user share.
TEAM_NAME = "permission_test_team"

_PASSED: set[str] = set()
_PASSED_LOCK = threading.Lock()


def check_permission_tests(definition: Definition) -> None:
    """Raise ``DefinitionError`` listing every failed case of the
    definition's permission tests. A definition that passed once in this
    process is not run again."""
    if not definition.permission_tests:
        return
    with _PASSED_LOCK:
        if definition.content_hash in _PASSED:
            return
    problems = run_permission_tests(definition)
    if problems:
        raise DefinitionError(problems)
    with _PASSED_LOCK:
        _PASSED.add(definition.content_hash)


def run_permission_tests(definition: Definition) -> list[Problem]:
    """Run every case and return one problem per case that failed."""
    engine = sa.create_engine("sqlite://")
    try:
        metadata = sa.MetaData()
        tables = build_tables(definition, metadata)
        metadata.create_all(engine)
        problems: list[Problem] = []
        with engine.begin() as conn:
            _add_users(conn)
            for test in definition.permission_tests:
                for index, case in enumerate(test.cases):
                    problem = _run_case(conn, definition, tables, test, index, case)
                    if problem is not None:
                        problems.append(problem)
        count = sum(len(test.cases) for test in definition.permission_tests)
        log.info("ran %d permission test cases of %s: %d failed",
                 count, definition.name, len(problems))
        return problems
    finally:
        engine.dispose()


def _add_users(conn: sa.Connection) -> None:
    conn.execute(TEAMS.insert().values(id=TEAM_ID, name=TEAM_NAME, label="Team"))
    conn.execute(TEAM_MEMBERS.insert(), [
        {"team_id": TEAM_ID, "user_id": USERS["self"]},
        {"team_id": TEAM_ID, "user_id": USERS["team"]},
    ])
    conn.execute(REPORTING.insert(), [
        {"user_id": USERS["subordinate"], "manager_id": USERS["self"]},
        {"user_id": USERS["self"], "manager_id": USERS["manager"]},
    ])
    conn.execute(HIERARCHY.insert(), [
        {"manager_id": USERS["self"], "user_id": USERS["subordinate"]},
        {"manager_id": USERS["manager"], "user_id": USERS["self"]},
        {"manager_id": USERS["manager"], "user_id": USERS["subordinate"]},
    ])


def _run_case(
    conn: sa.Connection,
    definition: Definition,
    tables: Mapping[str, sa.Table],
    test: PermissionTest,
    index: int,
    case: PermissionCase,
) -> Problem | None:
    file = f"permission_tests/{test.name}.json"
    pointer = f"/cases/{index}"
    entity = definition.entity(case.entity)
    table = tables[entity.name]
    record_id = f"00000000-0000-7000-9000-{index:012d}"
    with conn.begin_nested() as savepoint:
        try:
            conn.execute(table.insert().values(
                id=record_id, owner_id=USERS[case.owner], **_record_values(entity, case)
            ))
        except (sa.exc.StatementError, ValueError, TypeError) as err:
            savepoint.rollback()
            return Problem(
                file, f"{pointer}/values",
                f"case {case.description!r}: its values do not fit "
                f"{entity.name}: {err}",
                "give values of the fields' types, as the API accepts them",
            )
        principal = Principal(
            USERS["self"], case.role, case.permission_sets, (TEAM_NAME,)
        )
        access = Access(definition, entity, principal)
        allowed, reasons = _decide(conn, access, table, case, record_id)
        savepoint.rollback()
    if allowed == case.allowed:
        return None
    expected = "allowed" if case.allowed else "refused"
    actual = "allowed" if allowed else "refused"
    return Problem(
        file, pointer,
        f"permission test failed: {case.description!r} expects {case.action} "
        f"to be {expected}, but it is {actual}: {'; '.join(reasons)}",
        "change the roles, permission sets or sharing rules, or the test if "
        "its expectation is wrong",
    )


def _decide(
    conn: sa.Connection,
    access: Access,
    table: sa.Table,
    case: PermissionCase,
    record_id: str,
) -> tuple[bool, list[str]]:
    if case.action in ("see", "change"):
        right = "read" if case.action == "see" else "edit"
        record = access.explain(conn, table, right, record_id)
        if not record.allowed:
            return False, record.reasons
        field = access.explain_field(case.field_name or "")
        level = access.level(case.field_name or "")
        levels = ("read_only", "editable") if case.action == "see" else ("editable",)
        return level in levels, field.reasons
    decision = access.explain(conn, table, case.action, record_id)
    return decision.allowed, decision.reasons


def _record_values(entity: Entity, case: PermissionCase) -> dict[str, Any]:
    """Convert the case's JSON values into the column values of its record."""
    now = dt.datetime.now(dt.UTC)
    values: dict[str, Any] = {
        "created_at": now, "updated_at": now, "version": 1,
        "created_by": USERS[case.owner], "updated_by": USERS[case.owner],
    }
    for name, value in case.values.items():
        values[name] = _column_value(entity.field(name).type, value)
    return values


def _column_value(type_name: str, value: Any) -> Any:
    if value is None:
        return None
    if type_name == "date" and isinstance(value, str):
        parsed = parse_date(value)
        if parsed is None:
            raise ValueError(f"{value!r} is not a date: use YYYY-MM-DD")
        return parsed
    if type_name == "datetime" and isinstance(value, str):
        moment = parse_datetime(value)
        if moment is None:
            raise ValueError(f"{value!r} is not a date and time: use ISO 8601")
        return moment
    if type_name in {"decimal", "currency", "percent"}:
        return decimal.Decimal(str(value))
    return value
