"""Workflows: records moving through the states of a picklist field.

A workflow (``workflows/NAME.json``) names the picklist that contains the
state, the state new records start in, and the transitions between states.
The record service rejects every other change of that field, on every write
path, so the only way to move a record is ``WorkflowService.transition``.

A transition needs the edit right on the record, a role it lists, the record
in one of its source states, its guard condition true and its required
fields filled. It then writes the new state and the given values through
the record service in one transaction, so rules, formulas, roll-ups, the
journal and automation all run, records a ``_transitions`` row, and runs its
actions. A transition with an approval first creates a request for the
eligible approvers. The approval that reaches the count performs it, for
the requester.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from uuid_utils import uuid7

from metadata_engine.expressions import ExpressionError
from metadata_engine.model import ADMIN_ROLE, Entity, Transition, Workflow
from metadata_engine.tables import build_service_tables

from . import automation, notifications
from .access import Access
from .errors import Conflict, Forbidden, NotFound, RecordInvalid
from .records import RecordService, _read_row, storable

log = logging.getLogger("crm_platform")

_SERVICE_TABLES = sa.MetaData()
build_service_tables(_SERVICE_TABLES)
TRANSITIONS = _SERVICE_TABLES.tables["_transitions"]
REQUESTS = _SERVICE_TABLES.tables["_approval_requests"]
#: Maximum number of history entries or requests read for one record.
HISTORY_LIMIT = 200
MAX_COMMENT_LENGTH = 2_000


@dataclass(frozen=True)
class Option:
    """A transition of a record's workflow and whether the actor may take
    it now. ``reason`` explains a refusal in English."""

    workflow: Workflow
    transition: Transition
    allowed: bool
    reason: str | None = None
    #: The kind of refusal, for callers that word it themselves: "state",
    #: "edit", "role", "pending" or "guard". None when allowed.
    code: str | None = None


@dataclass(frozen=True)
class Step:
    """One entry of a record's transition history."""

    id: str
    workflow: str
    transition: str
    from_state: str | None
    to_state: str
    actor_id: str | None
    at: dt.datetime
    comment: str | None
    approvers: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workflow": self.workflow,
            "transition": self.transition,
            "from": self.from_state,
            "to": self.to_state,
            "actor_id": self.actor_id,
            "at": self.at.isoformat(),
            "comment": self.comment,
            "approvers": list(self.approvers),
        }


@dataclass(frozen=True)
class ApprovalRequest:
    id: str
    entity: str
    record_id: str
    workflow: str
    transition: str
    requested_by: str
    requested_at: dt.datetime
    comment: str | None
    required: int
    approvers: tuple[str, ...]
    decisions: tuple[Mapping[str, Any], ...]
    status: str
    #: The field values the transition writes when approved, as JSON.
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def approvals(self) -> int:
        return sum(1 for item in self.decisions if item["decision"] == "approve")

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "entity": self.entity,
            "record_id": self.record_id,
            "workflow": self.workflow,
            "transition": self.transition,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(),
            "comment": self.comment,
            "required": self.required,
            "approvers": list(self.approvers),
            "decisions": [dict(item) for item in self.decisions],
            "status": self.status,
            "values": dict(self.values),
        }


@dataclass(frozen=True)
class Outcome:
    """The result of ``transition``: the record moved ("done") or an
    approval request created ("pending")."""

    status: str
    record: dict[str, Any]
    request: ApprovalRequest | None = None


class WorkflowService:
    """Transitions, history and approvals of one tenant for one user."""

    def __init__(self, records: RecordService) -> None:
        self.records = records
        self.runtime = records.runtime
        self.actor = records.actor

    # Reading

    def options(self, entity_name: str, record_id: str) -> list[Option]:
        """Return every transition from the record's current states, with
        whether the actor may take it now."""
        self.records.get(entity_name, record_id)
        access = self.records.access(entity_name)
        workflows = self.runtime.definition.workflows_for(entity_name)
        table = self.runtime.tables[entity_name]
        with self.runtime.engine.connect() as conn:
            # The whole row: guards may read fields hidden from the actor.
            record = _read_row(conn, table, record_id) or {}
            editable = self.records._passes(conn, access, "edit", record_id)
            pending = _pending_in(conn, entity_name, record_id)
        options: list[Option] = []
        for workflow in workflows:
            state = record.get(workflow.field)
            for transition in workflow.transitions:
                if state not in transition.sources:
                    continue
                refusal = self._refusal(access, workflow, transition, record, pending)
                if refusal is None and not editable:
                    refusal = ("edit", "you may not edit this record")
                if refusal is None:
                    refusal = self._guard_refusal(access.entity, transition, record)
                code, reason = refusal if refusal else (None, None)
                options.append(
                    Option(workflow, transition, refusal is None, reason, code)
                )
        return options

    def _guard_refusal(
        self, entity: Entity, transition: Transition, record: Mapping[str, Any]
    ) -> tuple[str, str] | None:
        """Return why the guard of ``transition`` fails on the stored record,
        or None. A guard that reads one of the transition's required fields
        is not evaluated, because the input may change the result."""
        if transition.when is None:
            return None
        guard = automation.expression(entity, transition.when)
        if guard.names & set(transition.required_fields):
            return None
        user = {"id": self.actor.user_id, "role": self.actor.role}
        now = dt.datetime.now(dt.UTC)
        values = automation.scope(entity, record, record, user, now)
        try:
            if guard.evaluate(values) is True:
                return None
        except ExpressionError:
            return None
        message = (
            transition.guard_message.get(self.records.locale)
            if transition.guard_message
            else f"the condition {transition.when} does not hold"
        )
        return "guard", message

    def history(self, entity_name: str, record_id: str) -> list[Step]:
        """Return the record's transitions, newest first; the actor must be
        able to read the record."""
        self.records.get(entity_name, record_id)
        query = (
            sa.select(TRANSITIONS)
            .where(
                TRANSITIONS.c.entity == entity_name,
                TRANSITIONS.c.record_id == record_id,
            )
            .order_by(TRANSITIONS.c.at.desc(), TRANSITIONS.c.id.desc())
            .limit(HISTORY_LIMIT)
        )
        with self.runtime.engine.connect() as conn:
            return [_step(row) for row in conn.execute(query).mappings()]

    def requests(self, entity_name: str, record_id: str) -> list[ApprovalRequest]:
        """Return the record's approval requests, newest first."""
        self.records.get(entity_name, record_id)
        query = (
            sa.select(REQUESTS)
            .where(REQUESTS.c.entity == entity_name, REQUESTS.c.record_id == record_id)
            .order_by(REQUESTS.c.requested_at.desc())
            .limit(HISTORY_LIMIT)
        )
        with self.runtime.engine.connect() as conn:
            return [_request(row) for row in conn.execute(query).mappings()]

    def awaiting_me(self) -> list[ApprovalRequest]:
        """Return the pending requests the actor may still decide."""
        query = (
            sa.select(REQUESTS)
            .where(REQUESTS.c.status == "pending")
            .order_by(REQUESTS.c.requested_at)
        )
        with self.runtime.engine.connect() as conn:
            pending = [_request(row) for row in conn.execute(query).mappings()]
        me = self.actor.user_id
        return [
            request
            for request in pending
            if me in request.approvers
            and all(item["user_id"] != me for item in request.decisions)
        ]

    def get_request(self, request_id: str) -> ApprovalRequest:
        """Return a request that the actor asked for, may decide, or whose
        record they may read."""
        with self.runtime.engine.connect() as conn:
            request = _read_request(conn, request_id)
        me = self.actor.user_id
        if request is None or (
            me != request.requested_by
            and me not in request.approvers
            and not self.records.readable(request.entity, request.record_id)
        ):
            raise NotFound(f"approval request {request_id!r} does not exist")
        return request

    # Transitions

    def transition(
        self,
        entity_name: str,
        record_id: str,
        name: str,
        data: Mapping[str, Any] | None = None,
        comment: str | None = None,
        expected_version: int | None = None,
    ) -> Outcome:
        """Take transition ``name`` of the record, with ``data`` (field
        values to write with it) and ``comment`` for the history."""
        self.records.check_writable()
        access = self.records.require(entity_name, "edit")
        entity = access.entity
        workflow, transition = self._find(entity, name)
        comment = _check_comment(comment)
        if workflow.field in (data or {}):
            message = self.records.messages["state_by_transition"]
            raise RecordInvalid(
                f"invalid transition values: {workflow.field!r} is the state, which "
                f"transition {name!r} sets to {transition.target!r}; leave it out",
                details={workflow.field: [message]},
            )
        values = self.records._load(entity, data or {}, partial=True, access=access)
        entries = self.records._journal()
        now = dt.datetime.now(dt.UTC)
        with self.runtime.engine.begin() as conn:
            entries.start(conn, expected=1)
            table = self.runtime.tables[entity_name]
            if not self.records._passes(conn, access, "edit", record_id):
                self.records._raise_write_rejected(
                    conn, access, "edit", record_id, expected_version
                )
            before = _read_row(conn, table, record_id)
            assert before is not None
            if expected_version is not None and before["version"] != expected_version:
                self.records._raise_write_rejected(
                    conn, access, "edit", record_id, expected_version
                )
            pending = _pending_in(conn, entity_name, record_id)
            refusal = self._refusal(access, workflow, transition, before, pending)
            if refusal is not None:
                raise _refused(entity, workflow, transition, before, *refusal)
            self.records.check_read_only(entity, before, values)
            merged = {**before, **values}
            self._check_conditions(entity, transition, merged, before, now)
            run = automation.Run(self.records, conn, entries, now)
            if transition.approval is not None:
                request = self._ask(run, entity, workflow, transition, before,
                                    values, comment)
                entries.write(conn)
                return Outcome("pending", access.strip(before), request)
            after = self._move(run, access, workflow, transition, before, values,
                               comment, self.actor.user_id, ())
        log.info("%s %s took transition %s in tenant %s", entity_name, record_id,
                 name, self.runtime.slug)
        return Outcome("done", access.strip(after))

    def _find(self, entity: Entity, name: str) -> tuple[Workflow, Transition]:
        for workflow in self.runtime.definition.workflows_for(entity.name):
            transition = workflow.transition(name)
            if transition is not None:
                return workflow, transition
        names = [
            t.name
            for w in self.runtime.definition.workflows_for(entity.name)
            for t in w.transitions
        ]
        raise NotFound(
            f"entity {entity.name!r} has no transition {name!r}"
            + (f"; its transitions are {', '.join(names)}" if names else
               "; it has no workflow"),
        )

    def _refusal(
        self,
        access: Access,
        workflow: Workflow,
        transition: Transition,
        record: Mapping[str, Any],
        pending: set[str],
    ) -> tuple[str, str] | None:
        """Return why the actor may not take ``transition`` now, as a code
        (see ``Option.code``) and a text, or None."""
        state = record.get(workflow.field)
        if state not in transition.sources:
            return "state", f"the record is in state {state!r}"
        if not access.allows("edit"):
            return "edit", "your role may not edit these records"
        role = self.actor.role
        if transition.roles and role != ADMIN_ROLE and role not in transition.roles:
            return "role", f"only the roles {', '.join(transition.roles)} may do this"
        if workflow.name in pending:
            return "pending", "an approval request for this workflow is pending"
        return None

    def _check_conditions(
        self,
        entity: Entity,
        transition: Transition,
        merged: Mapping[str, Any],
        before: Mapping[str, Any],
        now: dt.datetime,
    ) -> None:
        """Raise ``RecordInvalid`` with every unmet condition of the
        transition: its guard and its empty required fields."""
        locale = self.records.locale
        label = transition.label.get(locale)
        problems: list[str] = []
        details: dict[str, list[str]] = {}
        user = {"id": self.actor.user_id, "role": self.actor.role}
        values = automation.scope(entity, merged, before, user, now)
        owner = f"transition {transition.name!r}"
        if not automation.holds(entity, transition.when, values, owner):
            message = (
                transition.guard_message.get(locale)
                if transition.guard_message
                else f"the condition {transition.when} does not hold"
            )
            problems.append(message)
            details["_schema"] = [message]
        missing = [
            name
            for name in transition.required_fields
            if merged.get(name) in (None, "", [], frozenset())
            or (isinstance(merged.get(name), str) and not merged[name].strip())
        ]
        if missing:
            problems.append(f"fill in {', '.join(missing)} first")
            message = self.records.messages["required_for_transition"].format(
                transition=label
            )
            details.update({name: [message] for name in missing})
        if problems:
            raise RecordInvalid(
                f"cannot take transition {transition.name!r}: "
                + "; ".join(problems),
                details,
            )

    def _move(
        self,
        run: automation.Run,
        access: Access,
        workflow: Workflow,
        transition: Transition,
        before: Mapping[str, Any],
        values: Mapping[str, Any],
        comment: str | None,
        actor_id: str,
        approvers: tuple[str, ...],
    ) -> dict[str, Any]:
        """Write the new state with ``values`` and the transition's set_fields
        actions, record the step and run the other actions."""
        entity = access.entity
        owner = f"transition {transition.name!r}"
        changed = {**before, **values, workflow.field: transition.target}
        automation.apply_before_save(
            run, entity, changed, before, transition.actions, owner
        )
        writes = {
            name: value
            for name, value in changed.items()
            if name in values or value != before.get(name)
        }
        after = self.records.update_in_run(
            run, access, str(before["id"]), writes, transition=transition.name,
            system=True,
        )
        run.conn.execute(
            TRANSITIONS.insert().values(
                id=str(uuid7()),
                entity=entity.name,
                record_id=str(before["id"]),
                workflow=workflow.name,
                transition=transition.name,
                from_state=before.get(workflow.field),
                to_state=transition.target,
                actor_id=actor_id,
                at=run.now,
                comment=comment,
                approvers=list(approvers),
            )
        )
        automation.run_actions(
            run, entity, after, before, transition.actions, owner,
            f"{workflow.name}.{transition.name}", "transition",
        )
        run.entries.write(run.conn)
        if automation.split_actions(transition.actions)[1]:
            # Later actions may have written the record again.
            table = self.runtime.tables[entity.name]
            after = _read_row(run.conn, table, str(before["id"])) or after
        return after

    # Approvals

    def _ask(
        self,
        run: automation.Run,
        entity: Entity,
        workflow: Workflow,
        transition: Transition,
        record: Mapping[str, Any],
        values: Mapping[str, Any],
        comment: str | None,
    ) -> ApprovalRequest:
        approval = transition.approval
        assert approval is not None
        approvers: set[str] = set()
        if approval.manager_of:
            manager = automation.manager_of(run.conn, record.get(approval.manager_of))
            if manager:
                approvers.add(manager)
        if approval.roles:
            approvers.update(self.records.members_in_roles(approval.roles))
        approvers.discard(self.actor.user_id)
        if len(approvers) < approval.required:
            raise Conflict(
                f"cannot take transition {transition.name!r}: it needs "
                f"{approval.required} approval(s) and {len(approvers)} member(s) "
                "other than you may approve it; "
                "set the record owner's manager or give the approving role to a "
                "member",
                details={"approvers": sorted(approvers)},
            )
        request = ApprovalRequest(
            id=str(uuid7()),
            entity=entity.name,
            record_id=str(record["id"]),
            workflow=workflow.name,
            transition=transition.name,
            requested_by=self.actor.user_id,
            requested_at=run.now,
            comment=comment,
            required=approval.required,
            approvers=tuple(sorted(approvers)),
            decisions=(),
            status="pending",
            values=automation.plain_json(entity, values),
        )
        run.conn.execute(REQUESTS.insert().values(
            id=request.id,
            entity=request.entity,
            record_id=request.record_id,
            workflow=request.workflow,
            transition=request.transition,
            requested_by=request.requested_by,
            requested_at=request.requested_at,
            comment=comment,
            input=dict(request.values),
            required=request.required,
            approvers=list(request.approvers),
            decisions=[],
            status="pending",
        ))
        title = record.get(entity.title_field) or record["id"]
        notifications.notify(
            run.conn,
            request.approvers,
            {
                locale: text.format(transition=transition.label.get(locale),
                                    record=title)
                for locale, text in _APPROVAL_ASKED.items()
            },
            entity.name,
            request.record_id,
            f"{workflow.name}.{transition.name}",
            run.now,
        )
        return request

    def decide(
        self, request_id: str, approve: bool, comment: str | None = None
    ) -> ApprovalRequest:
        """Approve or reject a pending request as one of its approvers. The
        approval that reaches the required count performs the transition."""
        self.records.check_writable()
        comment = _check_comment(comment)
        entries = self.records._journal()
        now = dt.datetime.now(dt.UTC)
        me = self.actor.user_id
        with self.runtime.engine.begin() as conn:
            entries.start(conn)
            request = _read_request(conn, request_id, lock=True)
            if request is None or (
                me not in request.approvers
                and me != request.requested_by
                and not self.records.readable(request.entity, request.record_id)
            ):
                raise NotFound(f"approval request {request_id!r} does not exist")
            if me not in request.approvers:
                raise Forbidden(
                    f"you are not an approver of approval request {request_id!r}, "
                    "so you cannot decide it; one of its approvers must, or the "
                    "requester may withdraw it",
                    details={"approvers": list(request.approvers)},
                )
            if request.status != "pending":
                raise Conflict(
                    f"approval request {request_id!r} is {request.status}, not "
                    "pending; nothing to decide"
                )
            if any(item["user_id"] == me for item in request.decisions):
                raise Conflict(f"you already decided approval request {request_id!r}")
            decision = {
                "user_id": me,
                "decision": "approve" if approve else "reject",
                "at": now.isoformat(),
                "comment": comment,
            }
            decisions = [*request.decisions, decision]
            approvals = sum(1 for item in decisions if item["decision"] == "approve")
            status = "pending"
            if not approve:
                status = "rejected"
            elif approvals >= request.required:
                status = "approved"
            conn.execute(
                REQUESTS.update()
                .where(REQUESTS.c.id == request_id)
                .values(
                    decisions=decisions,
                    status=status,
                    decided_at=now if status != "pending" else None,
                )
            )
            run = automation.Run(self.records, conn, entries, now)
            if status == "approved":
                self._complete(run, request, decisions)
            if status != "pending":
                self._tell_requester(run, request, status)
            entries.write(conn)
        with self.runtime.engine.connect() as conn:
            decided = _read_request(conn, request_id)
        assert decided is not None
        return decided

    def cancel(self, request_id: str) -> ApprovalRequest:
        """Withdraw a pending request: its requester or an admin may."""
        self.records.check_writable()
        with self.runtime.engine.begin() as conn:
            request = _read_request(conn, request_id, lock=True)
            me = self.actor.user_id
            if request is None or (
                me != request.requested_by and me not in request.approvers
                and self.actor.role != ADMIN_ROLE
            ):
                raise NotFound(f"approval request {request_id!r} does not exist")
            if me != request.requested_by and self.actor.role != ADMIN_ROLE:
                raise Forbidden("only the member who asked, or an admin, may "
                                "withdraw an approval request")
            if request.status != "pending":
                raise Conflict(f"approval request {request_id!r} is {request.status}")
            conn.execute(
                REQUESTS.update().where(REQUESTS.c.id == request_id).values(
                    status="cancelled", decided_at=dt.datetime.now(dt.UTC)
                )
            )
            cancelled = _read_request(conn, request_id)
        assert cancelled is not None
        return cancelled

    def _complete(
        self,
        run: automation.Run,
        request: ApprovalRequest,
        decisions: list[Mapping[str, Any]],
    ) -> None:
        """Perform the approved transition in system context, recorded as
        taken by the requester with the approvers."""
        entity = self.runtime.entity(request.entity)
        found = self._request_transition(request)
        table = self.runtime.tables[entity.name]
        before = _read_row(run.conn, table, request.record_id)
        if found is None or before is None:
            raise Conflict(
                f"approval request {request.id!r} cannot complete: its record or "
                "transition no longer exists"
            )
        workflow, transition = found
        if before.get(workflow.field) not in transition.sources:
            raise Conflict(
                f"approval request {request.id!r} cannot complete: the record "
                f"moved to state {before.get(workflow.field)!r} meanwhile; withdraw "
                "the request and ask again"
            )
        stored = run.conn.execute(
            sa.select(REQUESTS.c.input).where(REQUESTS.c.id == request.id)
        ).scalar() or {}
        access = self.records.system_access(entity.name)
        values = self.records._load(entity, stored, partial=True, access=access)
        # The record may have changed since the request: its guard and
        # required fields must still hold, or the approval changes nothing.
        try:
            self._check_conditions(
                entity, transition, {**before, **values}, before, run.now
            )
        except RecordInvalid as err:
            raise Conflict(
                f"approval request {request.id!r} cannot complete, because the "
                f"record changed since it was made: {err.message}; the requester "
                "should withdraw it, correct the record and ask again",
                details=err.details,
            ) from err
        approvers = tuple(
            item["user_id"] for item in decisions if item["decision"] == "approve"
        )
        self._move(run, access, workflow, transition, before, values,
                   request.comment, request.requested_by, approvers)

    def _request_transition(
        self, request: ApprovalRequest
    ) -> tuple[Workflow, Transition] | None:
        """Return the workflow and transition of ``request``, or None when
        the definition no longer has them."""
        for workflow in self.runtime.definition.workflows_for(request.entity):
            transition = workflow.transition(request.transition)
            if workflow.name == request.workflow and transition is not None:
                return workflow, transition
        return None

    def _tell_requester(
        self, run: automation.Run, request: ApprovalRequest, status: str
    ) -> None:
        entity = self.runtime.entity(request.entity)
        found = self._request_transition(request)
        label = found[1].label if found else None
        notifications.notify(
            run.conn,
            [request.requested_by],
            {
                locale: text.format(
                    transition=label.get(locale) if label else request.transition
                )
                for locale, text in (
                    _APPROVED if status == "approved" else _REJECTED
                ).items()
            },
            entity.name,
            request.record_id,
            f"{request.workflow}.{request.transition}",
            run.now,
        )

    def _pending_workflows(self, entity_name: str, record_id: str) -> set[str]:
        with self.runtime.engine.connect() as conn:
            return _pending_in(conn, entity_name, record_id)


def take_in_run(
    run: automation.Run,
    entity: Entity,
    record: dict[str, Any],
    name: str,
    owner: str,
) -> dict[str, Any]:
    """Take transition ``name`` of ``record`` for the automation rule
    ``owner``, in system context and in ``run``'s transaction. A record not
    in a source state, or whose guard does not hold, stays as it is."""
    service = WorkflowService(run.service)
    workflow, transition = service._find(entity, name)
    if record.get(workflow.field) not in transition.sources:
        return record
    user = {"id": run.service.actor.user_id, "role": run.service.actor.role}
    values = automation.scope(entity, record, record, user, run.now)
    if not automation.holds(entity, transition.when, values, owner):
        log.info("%s left %s %s as it is: the guard of %s does not hold", owner,
                 entity.name, record["id"], name)
        return record
    access = run.service.system_access(entity.name)
    return service._move(run, access, workflow, transition, record, {}, owner,
                         run.service.actor.user_id, ())


_APPROVAL_ASKED = {
    "en": "Your approval is asked: {transition} for {record}",
    "zh-CN": "需要您审批：{record} 的「{transition}」",
}
_APPROVED = {
    "en": "Approved: {transition}",
    "zh-CN": "已批准：{transition}",
}
_REJECTED = {
    "en": "Rejected: {transition}",
    "zh-CN": "已驳回：{transition}",
}


def _pending_in(conn: sa.Connection, entity_name: str, record_id: str) -> set[str]:
    query = sa.select(REQUESTS.c.workflow).where(
        REQUESTS.c.entity == entity_name,
        REQUESTS.c.record_id == record_id,
        REQUESTS.c.status == "pending",
    )
    return set(conn.execute(query).scalars())


def _refused(
    entity: Entity,
    workflow: Workflow,
    transition: Transition,
    record: Mapping[str, Any],
    code: str,
    reason: str,
) -> Exception:
    message = (
        f"cannot take transition {transition.name!r} of {entity.name} "
        f"{record['id']}: {reason}"
    )
    if code in ("role", "edit"):
        return Forbidden(message + "; ask a member who holds one of them")
    return Conflict(
        message + f"; it leads from {', '.join(transition.sources)} to "
        f"{transition.target}",
        details={"state": record.get(workflow.field)},
    )


def _check_comment(comment: Any) -> str | None:
    if comment is None or comment == "":
        return None
    if not isinstance(comment, str):
        raise RecordInvalid(
            f"a comment must be text, not {type(comment).__name__}",
            details={"comment": ["must be text"]},
        )
    if not storable(comment):
        raise RecordInvalid(
            "invalid comment: it contains a NUL or another control character "
            "that text cannot hold; remove it",
            details={"comment": ["contains a control character"]},
        )
    if len(comment) > MAX_COMMENT_LENGTH:
        raise RecordInvalid(
            f"the comment has {len(comment):,} characters, more than "
            f"{MAX_COMMENT_LENGTH:,}; shorten it",
            details={"comment": [f"at most {MAX_COMMENT_LENGTH} characters"]},
        )
    return comment


def _step(row: sa.RowMapping) -> Step:
    return Step(
        id=row["id"],
        workflow=row["workflow"],
        transition=row["transition"],
        from_state=row["from_state"],
        to_state=row["to_state"],
        actor_id=row["actor_id"],
        at=row["at"],
        comment=row["comment"],
        approvers=tuple(row["approvers"] or ()),
    )


def _read_request(
    conn: sa.Connection, request_id: str, lock: bool = False
) -> ApprovalRequest | None:
    query = sa.select(REQUESTS).where(REQUESTS.c.id == str(request_id))
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return None if row is None else _request(row)


def _request(row: sa.RowMapping) -> ApprovalRequest:
    return ApprovalRequest(
        id=row["id"],
        entity=row["entity"],
        record_id=row["record_id"],
        workflow=row["workflow"],
        transition=row["transition"],
        requested_by=row["requested_by"],
        requested_at=row["requested_at"],
        comment=row["comment"],
        required=row["required"],
        approvers=tuple(row["approvers"] or ()),
        decisions=tuple(row["decisions"] or ()),
        status=row["status"],
        values=dict(row["input"] or {}),
    )
