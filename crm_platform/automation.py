"""Automation rules: actions that run when records change or a time comes.

The record service calls ``before_save`` with the record about to be
written, which applies the ``set_fields`` and ``assign_owner`` actions of the
matching rules in name order, each rule seeing the changes of the ones
before it. Once the record is written and journaled, ``after_save`` runs the
other actions of those rules in the same transaction. Records created there
go through the same code path, so their own rules, formulas and automation
run. Notifications go to ``_notifications`` and webhook calls to the outbox.
If the write rolls back, none of it remains.

Actions run in system context: they need no permission of the user whose
write triggered them, and their journal entries name that user. A rule that
creates a record whose rules create records again stops at ``MAX_DEPTH``
with ``AutomationLoop``, and nothing of the write is kept.

Time triggers are run by the worker (``run_time_triggers``): once per rule,
record and value of the date field, recorded in ``_automation_runs``.
"""

from __future__ import annotations

import datetime as dt
import logging
import string
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from marshmallow import ValidationError

from metadata_engine.expressions import Expression, ExpressionError, compile_expression
from metadata_engine.model import SYSTEM_COLUMNS, Action, Automation, Entity
from metadata_engine.process_checks import PROCESS_VARIABLES
from metadata_engine.tables import build_service_tables

from . import journal, notifications
from .errors import Conflict, RecordInvalid
from .serialize import record_to_json, value_to_json

if TYPE_CHECKING:
    from .records import RecordService
    from .tenancy import Platform, TenantRuntime

log = logging.getLogger("crm_platform")

#: Maximum depth of records created by automation that trigger automation.
MAX_DEPTH = 5
#: Actions that change the triggering record before it is written.
BEFORE_SAVE = frozenset({"set_fields", "assign_owner"})
#: Key of the compiled process expressions in ``Entity.derived``.
CACHE_KEY = "process_expressions"
#: Maximum number of records one run of the time rules handles, so that a
#: worker tick is bounded. The rest wait for the next tick.
TIME_BATCH = 500
#: How late a time trigger may still run. A worker that was stopped for
#: longer skips the older times, and a rule added today does not fire for
#: every date of the past.
LATE_WINDOW = dt.timedelta(days=7)

_SERVICE_TABLES = sa.MetaData()
build_service_tables(_SERVICE_TABLES)
REPORTING = _SERVICE_TABLES.tables["_reporting"]
RUNS = _SERVICE_TABLES.tables["_automation_runs"]


class AutomationLoop(Conflict):
    """Raised when records created by automation keep creating records."""

    code = "automation_loop"


@dataclass
class Run:
    """The automation of one write transaction."""

    service: RecordService
    conn: sa.Connection
    entries: journal.Journal
    now: dt.datetime
    depth: int = 0
    chain: tuple[str, ...] = ()
    #: Records created by actions so far, by their ``as`` name.
    created: dict[str, dict[str, Any]] = field(default_factory=dict)

    def deeper(self, rule: str) -> Run:
        chain = (*self.chain, rule)
        if self.depth + 1 > MAX_DEPTH:
            raise AutomationLoop(
                f"automation stopped after {MAX_DEPTH} levels of records "
                f"creating records: {' → '.join(chain)}; change the rules so "
                "that a created record does not trigger the same chain again",
                details={"chain": list(chain)},
            )
        return Run(self.service, self.conn, self.entries, self.now,
                   self.depth + 1, chain)


# Expressions --------------------------------------------------------------


def expression(
    entity: Entity, source: str, aliases: Collection[str] = ()
) -> Expression:
    """Return ``source`` compiled for the processes of ``entity``, cached.
    The definition's load checks compiled it already, so an error here
    means a definition that bypassed them."""
    cache: dict[tuple[str, tuple[str, ...]], Expression]
    cache = entity.derived.setdefault(CACHE_KEY, {})
    key = (source, tuple(sorted(aliases)))
    compiled = cache.get(key)
    if compiled is None:
        names = [*entity.field_names, *SYSTEM_COLUMNS, *PROCESS_VARIABLES, *key[1]]
        compiled = compile_expression(source, names)
        cache[key] = compiled
    return compiled


def scope(
    entity: Entity,
    record: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    user: Mapping[str, Any],
    now: dt.datetime,
    created: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return what process expressions read: the record's fields and system
    columns, ``previous`` (every field null for a new record), ``is_new``,
    ``user``, ``now``, ``today`` and the records created so far."""
    values = _plain_values(entity, record)
    values["previous"] = _plain_values(entity, previous or {})
    values.update(
        is_new=previous is None,
        user={"id": user.get("id"), "role": user.get("role")},
        now=now,
        today=now.date(),
    )
    for alias, row in (created or {}).items():
        values[alias] = dict(row)
    return values


def _plain_values(entity: Entity, record: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in (*SYSTEM_COLUMNS, *entity.field_names):
        value = record.get(name)
        if isinstance(value, str) and not value.strip():
            value = None
        elif isinstance(value, frozenset | set):
            value = sorted(value)
        values[name] = value
    return values


def evaluate(
    entity: Entity, source: str, values: Mapping[str, Any], owner: str,
    aliases: Collection[str] = (),
) -> Any:
    """Evaluate one expression of the process ``owner``; a failure becomes a
    ``RecordInvalid`` that names the process and the expression."""
    try:
        return expression(entity, source, aliases).evaluate(values)
    except ExpressionError as err:
        log.warning("%s failed on %s: %s", owner, entity.name, err)
        raise RecordInvalid(
            f"{owner} could not evaluate {source!r}: {err.message}; correct the "
            "expression in the metadata, or the record's values it reads",
            details={"_schema": [f"{owner}: {err.message}"]},
        ) from err


def holds(
    entity: Entity, source: str | None, values: Mapping[str, Any], owner: str
) -> bool:
    """Return True if the condition ``source`` is true; no condition holds."""
    if source is None:
        return True
    return evaluate(entity, source, values, owner) is True


# Record triggers ----------------------------------------------------------


def before_save(
    run: Run,
    entity: Entity,
    record: dict[str, Any],
    previous: Mapping[str, Any] | None,
    on: str,
) -> list[Automation]:
    """Find the rules of ``entity`` that ``on`` (create, update or delete)
    triggers, apply their before-save actions to ``record`` in place, and
    return the rules for ``after_save``."""
    rules = run.service.runtime.definition.automations_for(entity.name, on)
    if not rules:
        return []
    matched: list[Automation] = []
    for rule in rules:
        if on == "update" and rule.trigger.fields and not _changed(
            rule.trigger.fields, record, previous or {}
        ):
            continue
        values = scope(entity, record, previous, _user(run), run.now)
        owner = f"automation rule {rule.name!r}"
        if not holds(entity, rule.when, values, owner):
            continue
        matched.append(rule)
        if on != "delete":
            apply_before_save(run, entity, record, previous, rule.actions, owner)
    return matched


def split_actions(
    actions: Sequence[Action],
) -> tuple[tuple[Action, ...], tuple[Action, ...]]:
    """Split ``actions`` into the leading set_fields and assign_owner ones,
    applied to the record before it is written, and the rest, run after.
    A set_fields after a create_record can read the created record, so it
    runs after the write as a second update of the record."""
    for index, action in enumerate(actions):
        if action.kind not in BEFORE_SAVE:
            return tuple(actions[:index]), tuple(actions[index:])
    return tuple(actions), ()


def apply_before_save(
    run: Run,
    entity: Entity,
    record: dict[str, Any],
    previous: Mapping[str, Any] | None,
    actions: Sequence[Action],
    owner: str,
) -> None:
    """Apply the leading set_fields and assign_owner ``actions`` to
    ``record`` in place, each seeing the changes of the ones before."""
    for action in split_actions(actions)[0]:
        values = scope(entity, record, previous, _user(run), run.now)
        if action.kind == "set_fields":
            set_fields(run, entity, record, action, values, owner)
        else:
            assign_owner(run, entity, record, action, values, owner)


def after_save(
    run: Run,
    entity: Entity,
    record: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    rules: Sequence[Automation],
    on: str,
) -> None:
    """Run the create_record, notify and webhook actions of ``rules`` for
    the written ``record`` (for a delete, the record as it was)."""
    for rule in rules:
        run_actions(run, entity, record, previous, rule.actions,
                    f"automation rule {rule.name!r}", rule.name, on)


def run_actions(
    run: Run,
    entity: Entity,
    record: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    actions: Sequence[Action],
    owner: str,
    source: str,
    on: str,
) -> None:
    """Run the after-save ``actions`` of one rule or transition: those
    after its leading set_fields and assign_owner ones."""
    created: dict[str, dict[str, Any]] = {}
    created_entities: dict[str, Entity] = {}
    current = dict(record)
    for action in split_actions(actions)[1]:
        values = scope(entity, current, previous, _user(run), run.now, created)
        if action.kind == "create_record":
            row = create_record(run, entity, action, values, owner, source, created)
            if action.alias:
                assert action.entity is not None
                created[action.alias] = row
                created_entities[action.alias] = run.service.runtime.entity(
                    action.entity
                )
        elif action.kind == "notify":
            send_notice(run, entity, current, action, values, owner, source)
        elif action.kind == "webhook" and action.record:
            call_webhook(run, created_entities[action.record],
                         created[action.record], action, source, on)
        elif action.kind == "webhook":
            call_webhook(run, entity, current, action, source, on)
        elif action.kind == "transition":
            current = take_transition(run, entity, current, action, owner, source)
        elif on != "delete":
            current = _update_after(run, entity, current, action, values, owner,
                                    source)


def take_transition(
    run: Run,
    entity: Entity,
    record: dict[str, Any],
    action: Action,
    owner: str,
    source: str,
) -> dict[str, Any]:
    """Take a workflow transition for a rule, in system context. A record
    outside the transition's source states, or whose guard is false, stays
    as it is."""
    from .workflows import take_in_run

    assert action.transition is not None
    return take_in_run(run.deeper(source), entity, record, action.transition, owner)


def _update_after(
    run: Run,
    entity: Entity,
    record: dict[str, Any],
    action: Action,
    values: Mapping[str, Any],
    owner: str,
    source: str,
) -> dict[str, Any]:
    """Apply a set_fields or assign_owner action that follows a
    create_record as an update of the written record, in system context."""
    changed = dict(record)
    if action.kind == "set_fields":
        data = {
            name: _as_input(entity, name, evaluate(entity, expr, values, owner,
                                                   _aliases(values, entity)))
            for name, expr in action.values.items()
        }
        changed.update(load_values(run, entity, data, owner))
    else:
        assign_owner(run, entity, changed, action, values, owner)
    writes = {k: v for k, v in changed.items() if v != record.get(k)}
    if not writes:
        return record
    access = run.service.system_access(entity.name)
    return run.service.update_in_run(
        run.deeper(source), access, str(record["id"]), writes, system=True
    )


def _aliases(values: Mapping[str, Any], entity: Entity) -> list[str]:
    known = {*SYSTEM_COLUMNS, *entity.field_names, *PROCESS_VARIABLES}
    return [name for name in values if name not in known]


def _changed(
    names: Iterable[str], record: Mapping[str, Any], previous: Mapping[str, Any]
) -> bool:
    return any(record.get(name) != previous.get(name) for name in names)


def _user(run: Run) -> dict[str, Any]:
    actor = run.service.actor
    return {"id": actor.user_id, "role": actor.role}


# Actions ------------------------------------------------------------------


def set_fields(
    run: Run,
    entity: Entity,
    record: dict[str, Any],
    action: Action,
    values: Mapping[str, Any],
    owner: str,
) -> None:
    """Evaluate each value of ``action`` and store it in ``record``, checked
    like input to the field."""
    data = {
        name: _as_input(entity, name, evaluate(entity, source, values, owner))
        for name, source in action.values.items()
    }
    record.update(load_values(run, entity, data, owner))


def assign_owner(
    run: Run,
    entity: Entity,
    record: dict[str, Any],
    action: Action,
    values: Mapping[str, Any],
    owner: str,
) -> None:
    assert action.user is not None
    user_id = evaluate(entity, action.user, values, owner)
    if not isinstance(user_id, str) or not run.service.is_tenant_member(user_id):
        raise RecordInvalid(
            f"{owner} assigns {entity.name} {record.get('id')} to {user_id!r}, "
            "who is not a member of the tenant; correct the rule's user "
            "expression or add the member",
            details={"owner_id": [f"{owner}: {user_id!r} is not a member"]},
        )
    record["owner_id"] = user_id


def load_values(
    run: Run, entity: Entity, data: Mapping[str, Any], owner: str
) -> dict[str, Any]:
    """Check ``data`` (JSON values by field) through the entity's schema and
    return the loaded values; raise ``RecordInvalid`` naming ``owner``."""
    schema = run.service.runtime.schema(entity.name, run.service.locale)
    fields = {k: v for k, v in data.items() if k != "owner_id"}
    try:
        loaded = dict(schema.load(fields, partial=True))
    except ValidationError as err:
        messages = err.messages if isinstance(err.messages, dict) else {}
        described = "; ".join(
            f"{name} = {data.get(name)!r}: {' '.join(map(str, problems))}"
            for name, problems in messages.items()
        )
        raise RecordInvalid(
            f"{owner} sets invalid values on {entity.name}: {described}; correct "
            "the rule's expressions",
            details={name: [f"{owner}: {problems}"] for name, problems in
                     messages.items()},
        ) from err
    if "owner_id" in data:
        loaded["owner_id"] = data["owner_id"]
    return loaded


def _as_input(entity: Entity, name: str, value: Any) -> Any:
    """Return an expression's result in the JSON form the field accepts."""
    if value is None or not entity.has_field(name):
        return value
    item = entity.field(name)
    if isinstance(value, dt.datetime) and item.type == "date":
        return value.astimezone(dt.UTC).date().isoformat()
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, float) and item.type in ("decimal", "currency", "percent"):
        return repr(round(value, item.scale if item.scale is not None else 6))
    return value


def create_record(
    run: Run,
    entity: Entity,
    action: Action,
    values: Mapping[str, Any],
    owner: str,
    source: str,
    created: Mapping[str, Any],
) -> dict[str, Any]:
    assert action.entity is not None
    target = run.service.runtime.entity(action.entity)
    data = {
        name: _as_input(target, name, evaluate(entity, expr, values, owner, created))
        for name, expr in action.values.items()
    }
    return run.service.create_in_run(run.deeper(source), target, data, owner)


def send_notice(
    run: Run,
    entity: Entity,
    record: Mapping[str, Any],
    action: Action,
    values: Mapping[str, Any],
    owner: str,
    source: str,
) -> int:
    recipients = recipients_of(run, entity, record, action.recipients, values, owner)
    assert action.message is not None
    message = {
        locale: fill_message(entity, text, record)
        for locale, text in action.message.translations.items()
    }
    return notifications.notify(
        run.conn, recipients, message, entity.name, str(record.get("id")), source,
        run.now,
    )


def recipients_of(
    run: Run,
    entity: Entity,
    record: Mapping[str, Any],
    to: Mapping[str, Any],
    values: Mapping[str, Any],
    owner: str,
) -> set[str]:
    """Return the user ids that ``to`` names for ``record``: its owner, the
    manager of the user in a field, the members holding roles, the user an
    expression gives. Ids that are not members are left out."""
    users: set[str] = set()
    if to.get("owner") and record.get("owner_id"):
        users.add(str(record["owner_id"]))
    if to.get("manager_of"):
        manager = manager_of(run.conn, record.get(to["manager_of"]))
        if manager:
            users.add(manager)
    if to.get("roles"):
        users.update(run.service.members_in_roles(to["roles"]))
    if to.get("user"):
        user_id = evaluate(entity, to["user"], values, owner)
        if isinstance(user_id, str):
            users.add(user_id)
    members = {user for user in users if run.service.is_tenant_member(user)}
    if users - members:
        log.warning("%s skipped %d recipients who are not members", owner,
                    len(users - members))
    return members


def manager_of(conn: sa.Connection, user_id: Any) -> str | None:
    """Return the manager ``user_id`` reports to, if any."""
    if not user_id:
        return None
    query = sa.select(REPORTING.c.manager_id).where(
        REPORTING.c.user_id == str(user_id)
    )
    return conn.execute(query).scalar()


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def fill_message(entity: Entity, text: str, record: Mapping[str, Any]) -> str:
    """Replace each ``{field}`` of ``text`` with the record's value; a
    sensitive field shows no character of its value."""
    values = _Blank()
    shown = record_to_json(entity, record)
    for name, value in shown.items():
        if entity.has_field(name) and entity.field(name).sensitive:
            values[name] = "••••"
        elif isinstance(value, list):
            values[name] = ", ".join(map(str, value))
        elif value is not None:
            values[name] = str(value)
    try:
        return string.Formatter().vformat(text, (), values)
    except (ValueError, IndexError, KeyError) as err:
        log.warning("message %r of entity %s cannot be filled: %s", text,
                    entity.name, err)
        return text


def call_webhook(
    run: Run,
    entity: Entity,
    record: Mapping[str, Any],
    action: Action,
    source: str,
    on: str,
) -> None:
    """Put a call of ``action``'s endpoint in the outbox, with the record
    as the API returns it to a role for which every sensitive field is
    masked."""
    from . import webhooks

    assert action.endpoint is not None and action.event is not None
    sequence = run.entries.sequences.get(str(record.get("id")))
    # The envelope that ``webhooks`` sends adds the event, the tenant and
    # the journal number.
    payload = {
        "entity": entity.name,
        "record_id": str(record.get("id")),
        "trigger": on,
        "source": source,
        "at": run.now.isoformat(),
        "record": record_to_json(entity, record),
    }
    webhooks.enqueue(run.conn, action.endpoint, action.event, payload, sequence)


# Time triggers --------------------------------------------------------------


def run_time_triggers(
    platform: Platform, runtime: TenantRuntime, now: dt.datetime | None = None,
    limit: int = TIME_BATCH, failures: list[str] | None = None,
) -> int:
    """Run every time-triggered rule of the tenant for the records whose
    time has come, each once per value of its date field, and return how
    many records the rules ran for. ``failures`` receives "rule record-id"
    for each rule that failed on a record, which the next run tries again."""
    moment = now or dt.datetime.now(dt.UTC)
    total = 0
    for rule in runtime.definition.automations:
        if rule.trigger.on != "time" or not rule.active:
            continue
        total += _run_time_rule(platform, runtime, rule, moment, limit - total,
                                failures)
        if total >= limit:
            break
    return total


def _run_time_rule(
    platform: Platform,
    runtime: TenantRuntime,
    rule: Automation,
    now: dt.datetime,
    limit: int,
    failures: list[str] | None,
) -> int:
    entity = runtime.entity(rule.entity)
    table = runtime.tables[entity.name]
    date_field = rule.trigger.date_field
    assert date_field is not None
    column = table.c[date_field]
    due = now - rule.trigger.offset
    since = due - LATE_WINDOW
    is_date = entity.has_field(date_field) and entity.field(date_field).type == "date"
    bound: Any = due.date() if is_date else due
    start: Any = since.date() if is_date else since
    done = sa.select(RUNS.c.record_id).where(
        RUNS.c.automation == rule.name, RUNS.c.record_id == table.c.id
    )
    query = (
        sa.select(table)
        .where(column > start, column <= bound, ~sa.exists(done))
        .order_by(column, table.c.id)
        .limit(max(limit, 0))
    )
    with runtime.engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(query).mappings()]
    ran = 0
    for row in rows:
        try:
            if _fire(platform, runtime, rule, entity, row, now):
                ran += 1
        except (RecordInvalid, Conflict) as err:
            log.warning("time rule %s failed for %s %s in tenant %s: %s",
                        rule.name, entity.name, row["id"], runtime.slug,
                        err.message)
            if failures is not None:
                failures.append(f"{rule.name} {row['id']}")
    if ran:
        log.info("time rule %s ran for %d %s records in tenant %s", rule.name, ran,
                 entity.name, runtime.slug)
    return ran


def _fire(
    platform: Platform,
    runtime: TenantRuntime,
    rule: Automation,
    entity: Entity,
    row: dict[str, Any],
    now: dt.datetime,
) -> bool:
    """Run ``rule`` for one record in its own transaction, unless another
    worker did. A rule that fails raises, and nothing of it is kept."""
    return _fire_in_transaction(platform, runtime, rule, entity, row, now)


def _fire_in_transaction(
    platform: Platform,
    runtime: TenantRuntime,
    rule: Automation,
    entity: Entity,
    row: dict[str, Any],
    now: dt.datetime,
) -> bool:
    # The rule acts for the record's owner, in system context; its journal
    # entries carry the rule's name as their request id.
    service = platform.automation_service(runtime, str(row["owner_id"]), rule.name)
    table = runtime.tables[entity.name]
    date_field = rule.trigger.date_field
    assert date_field is not None
    owner = f"automation rule {rule.name!r}"
    entries = journal.Journal(service.actor.user_id, service.request_id)
    with runtime.engine.begin() as conn:
        entries.start(conn)
        current = conn.execute(
            sa.select(table).where(table.c.id == row["id"])
        ).mappings().first()
        if current is None or current[date_field] != row[date_field]:
            return False
        record = dict(current)
        run = Run(service, conn, entries, now)
        values = scope(entity, record, record, _user(run), now)
        ran = holds(entity, rule.when, values, owner)
        outcome = "ran" if ran else "skipped"
        if not record_run(conn, rule.name, record["id"], _fire_key(row[date_field]),
                          now, outcome) or not ran:
            entries.write(conn)
            return False
        changed = dict(record)
        apply_before_save(run, entity, changed, record, rule.actions, owner)
        changes = {k: v for k, v in changed.items() if v != record.get(k)}
        if changes:
            access = service.system_access(entity.name)
            record = service.update_in_run(
                run, access, record["id"], changes, system=True
            )
        run_actions(run, entity, record, dict(current), rule.actions, owner,
                    rule.name, "time")
        entries.write(conn)
    return True


def _fire_key(value: Any) -> str:
    """Return the date value a time rule counted from, as ISO 8601."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def record_run(
    conn: sa.Connection,
    rule: str,
    record_id: str,
    fire_key: str,
    now: dt.datetime,
    outcome: str,
) -> bool:
    """Record that ``rule`` came due for the record; False if another worker
    recorded it first. ``outcome`` is "ran", or "skipped" when the rule's
    condition did not hold then."""
    try:
        with conn.begin_nested():
            conn.execute(RUNS.insert().values(
                automation=rule, record_id=record_id, fire_key=fire_key, at=now,
                outcome=outcome,
            ))
    except sa.exc.IntegrityError:
        return False
    return True


def rearm(
    conn: sa.Connection,
    definition: Any,
    entity: Entity,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
) -> None:
    """Forget the time rules that came due for a record whose date field
    changed (a renewed contract), so that they come due again."""
    rules = [
        rule.name
        for rule in definition.automations
        if rule.entity == entity.name
        and rule.trigger.on == "time"
        and rule.trigger.date_field is not None
        and before.get(rule.trigger.date_field) != after.get(rule.trigger.date_field)
    ]
    if rules:
        conn.execute(RUNS.delete().where(
            RUNS.c.automation.in_(rules), RUNS.c.record_id == str(after["id"])
        ))


def plain_json(entity: Entity, record: Mapping[str, Any]) -> dict[str, Any]:
    """Return a record's fields as JSON values, for the input of a write."""
    return {
        item.name: value_to_json(item, record[item.name])
        for item in entity.fields
        if item.name in record
    }

