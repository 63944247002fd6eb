"""Load-time checks of workflows (``workflows/NAME.json``) and automation
rules (``automations/NAME.json``).

They run on merged, schema-valid documents after the entity checks. Every
expression is compiled and type-checked here, so that a definition whose
workflow guard or automation action cannot run is rejected with its file,
JSON pointer and the position inside the expression, before any record is
saved.
"""

from __future__ import annotations

import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import lark

from metadata_engine.expression_types import (
    FIELD_CEL_TYPES,
    FUNCTION_TYPES,
    infer_type,
    unknown_functions,
    with_article,
)
from metadata_engine.expressions import ExpressionError, compile_expression
from metadata_engine.field_checks import Report
from metadata_engine.layout_checks import EntityFields, suggest
from metadata_engine.model import ADMIN_ROLE, SYSTEM_COLUMNS
from metadata_engine.permission_checks import References, ReportFor
from metadata_engine.record_rule_checks import VARIABLES

Document = Mapping[str, Any]

#: Names that automation and workflow expressions read besides the record's
#: fields, its system columns and ``VARIABLES``. ``previous`` is the stored
#: record before the write as a map, with every field null on create.
PROCESS_VARIABLES: Mapping[str, str] = {
    **VARIABLES,
    "previous": "map",
    "is_new": "bool",
}
#: Fields that hold a user id, whose manager an approval or notice can reach.
USER_FIELDS: tuple[str, ...] = ("owner_id", "created_by", "updated_by")
#: Field types that no action may set: the platform computes them.
COMPUTED_TYPES = frozenset({"auto_number"})
#: Actions that change the triggering record before it is written.
BEFORE_SAVE_ACTIONS = frozenset({"set_fields", "assign_owner"})
#: Field types a time trigger can count from.
TIME_TYPES = frozenset({"date", "datetime"})


@dataclass(frozen=True)
class _Scope:
    """The names the expressions of one document may read, with the
    context to report problems."""

    report: Report
    fields: EntityFields
    #: CEL type of every readable name, None where unknown.
    types: Mapping[str, str | None]
    #: The transitions of the entity's workflows, by name: whether each
    #: needs an approval.
    transitions: Mapping[str, bool]
    #: Fields of the entity that some role or permission set hides.
    hidden: frozenset[str] = frozenset()

    def with_alias(self, alias: str) -> _Scope:
        types = {**self.types, alias: "map"}
        return _Scope(self.report, self.fields, types, self.transitions, self.hidden)


def check_processes(
    report_for: ReportFor,
    documents: Mapping[str, Document],
    refs: References,
    role_names: Collection[str],
    grantees: Collection[Document] = (),
) -> None:
    """Check every workflow and automation rule among ``documents`` (merged
    documents by key) against the entities, the declared roles and the
    field levels of ``grantees`` (role and permission set documents)."""
    roles = sorted({ADMIN_ROLE, *role_names, *(
        PurePosixPath(key).stem
        for key in refs.broken_documents
        if key.startswith("roles/")
    )})
    state_fields: dict[tuple[str, str], str] = {}
    transitions: dict[str, dict[str, bool]] = {}
    for key, document in documents.items():
        if key.startswith("workflows/"):
            transitions.setdefault(document["entity"], {}).update(
                (item["name"], "approval" in item)
                for item in document["transitions"]
            )
    for key, document in documents.items():
        report = report_for(key)
        fields = _entity_fields(report, document, refs)
        if fields is None:
            continue
        scope = _Scope(report, fields, _types(fields),
                       transitions.get(document["entity"], {}),
                       _hidden_fields(grantees, document["entity"]))
        if key.startswith("workflows/"):
            _check_workflow(scope, document, roles, refs, state_fields, key)
        else:
            _check_automation(scope, document, roles, refs)
    _check_state_fields_untouched(report_for, documents, state_fields)


def _hidden_fields(grantees: Collection[Document], entity: str) -> frozenset[str]:
    hidden: set[str] = set()
    for grantee in grantees:
        for name, grant in grantee.get("entities", {}).items():
            if name not in (entity, "*") or not isinstance(grant, Mapping):
                continue
            levels = grant.get("fields", {})
            hidden.update(field for field, level in levels.items() if level == "hidden")
    return frozenset(hidden)


def _entity_fields(
    report: Report, document: Document, refs: References
) -> EntityFields | None:
    entity = document["entity"]
    if entity in refs.entities:
        return refs.fields_of(entity)
    if entity not in refs.broken_entities:
        known = sorted(refs.entities)
        report(
            "/entity",
            f"entity {entity!r} does not exist",
            suggest(entity, known) + f"use one of the entities: {', '.join(known)}",
        )
    return None


def _types(fields: EntityFields) -> dict[str, str | None]:
    types: dict[str, str | None] = {name: None for name in fields.skipped}
    for name, item in fields.by_name.items():
        types[name] = FIELD_CEL_TYPES.get(str(item["type"]))
    for name in SYSTEM_COLUMNS:
        types[name] = "int" if name == "version" else (
            "timestamp" if name.endswith("_at") else "string"
        )
    types.update(PROCESS_VARIABLES)
    return types


# Workflows ----------------------------------------------------------------


def _check_workflow(
    scope: _Scope,
    document: Document,
    roles: list[str],
    refs: References,
    state_fields: dict[tuple[str, str], str],
    key: str,
) -> None:
    report, fields = scope.report, scope.fields
    name = document["field"]
    item = fields.by_name.get(name)
    if item is None:
        if name not in fields.skipped:
            report("/field", f"workflow state field {name!r} does not exist",
                   fields.unknown_column_hint(name))
        return
    if item["type"] != "picklist" or item.get("formula") or item.get("rollup"):
        report(
            "/field",
            f"workflow state field {name!r} is {with_article(item['type'])} "
            "field, not a picklist that users set",
            "hold the state in a picklist field without formula or roll-up",
        )
        return
    other = state_fields.setdefault((document["entity"], name), key)
    if other != key:
        report(
            "/field",
            f"field {document['entity']}.{name} is already the state of the "
            f"workflow in {other}",
            "merge the two workflows into one, or use another field",
        )
    states = [str(option["value"]) for option in item["options"]]
    _check_state(report, "/initial", document["initial"], states, name)
    default = item.get("default")
    if default is not None and default != document["initial"]:
        report(
            "/initial",
            f"field {name!r} defaults to {default!r}, but new records start in "
            f"state {document['initial']!r}",
            "make the field's default the initial state, or remove the default",
        )
    seen: set[str] = set()
    for index, transition in enumerate(document["transitions"]):
        pointer = f"/transitions/{index}"
        if transition["name"] in seen:
            report(
                f"{pointer}/name",
                f"transition name {transition['name']!r} is used twice",
                "give each transition of a workflow its own name",
            )
        seen.add(transition["name"])
        _check_transition(scope, pointer, transition, states, name, roles, refs)


def _check_state(
    report: Report, pointer: str, state: str, states: list[str], field: str
) -> None:
    if state not in states:
        report(
            pointer,
            f"state {state!r} is not an option of field {field!r}",
            suggest(state, states) + f"use one of: {', '.join(states)}",
        )


def _check_transition(
    scope: _Scope,
    pointer: str,
    transition: Document,
    states: list[str],
    state_field: str,
    roles: list[str],
    refs: References,
) -> None:
    report, fields = scope.report, scope.fields
    for index, state in enumerate(transition["from"]):
        _check_state(report, f"{pointer}/from/{index}", state, states, state_field)
    _check_state(report, f"{pointer}/to", transition["to"], states, state_field)
    _check_roles(report, f"{pointer}/roles", transition.get("roles", []), roles)
    if "when" in transition:
        _check_expression(scope, f"{pointer}/when", transition["when"], "bool")
    for index, name in enumerate(transition.get("required_fields", [])):
        if fields.column_type(name) is None and name not in fields.skipped:
            report(f"{pointer}/required_fields/{index}",
                   f"required field {name!r} does not exist",
                   fields.unknown_column_hint(name))
    approval = transition.get("approval")
    if approval is not None:
        approvers = approval["approvers"]
        if "manager_of" in approvers:
            _check_user_field(report, f"{pointer}/approval/approvers/manager_of",
                              approvers["manager_of"])
        _check_roles(report, f"{pointer}/approval/approvers/roles",
                     approvers.get("roles", []), roles)
    _check_actions(
        scope, f"{pointer}/actions", transition.get("actions", []), "transition",
        refs, roles, state_field,
    )


# Automation rules -----------------------------------------------------------


def _check_automation(
    scope: _Scope, document: Document, roles: list[str], refs: References
) -> None:
    report, fields = scope.report, scope.fields
    trigger = document["trigger"]
    on = trigger["on"]
    if "fields" in trigger and on != "update":
        report("/trigger/fields", f"a {on} trigger cannot list changed fields",
               'remove "fields", or use "on": "update"')
    for index, name in enumerate(trigger.get("fields", [])):
        if fields.column_type(name) is None and name not in fields.skipped:
            report(f"/trigger/fields/{index}",
                   f"trigger field {name!r} does not exist",
                   fields.unknown_column_hint(name))
    if on == "time":
        _check_time_trigger(report, trigger, fields)
    else:
        for key in ("date_field", "offset"):
            if key in trigger:
                report(f"/trigger/{key}",
                       f"a {on} trigger has no {key.replace('_', ' ')}",
                       f'remove "{key}", or use "on": "time"')
    if "when" in document:
        _check_expression(scope, "/when", document["when"], "bool")
    _check_actions(scope, "/actions", document["actions"], on, refs, roles, None)


def _check_time_trigger(
    report: Report, trigger: Document, fields: EntityFields
) -> None:
    name = trigger.get("date_field")
    if name is None:
        report("/trigger", "a time trigger needs a date field",
               'add "date_field": the date or date-time field to count from')
        return
    column_type = fields.column_type(name)
    if column_type is None:
        if name not in fields.skipped:
            report("/trigger/date_field", f"date field {name!r} does not exist",
                   fields.unknown_column_hint(name))
    elif column_type not in TIME_TYPES:
        report(
            "/trigger/date_field",
            f"field {name!r} is {with_article(column_type)} field, not a date",
            "count from a date or date-time field",
        )


# Actions ------------------------------------------------------------------


def _check_actions(
    scope: _Scope,
    pointer: str,
    actions: list[Document],
    trigger: str,
    refs: References,
    roles: list[str],
    state_field: str | None,
) -> None:
    for index, action in enumerate(actions):
        at = f"{pointer}/{index}"
        kind = action["type"]
        if kind in BEFORE_SAVE_ACTIONS and trigger == "delete":
            scope.report(
                f"{at}/type",
                f"a delete trigger cannot {kind.replace('_', ' ')}: the record "
                "is gone",
                "use create_record, notify or webhook, or trigger on update",
            )
            continue
        if kind == "set_fields":
            _check_values(scope, f"{at}/values", action["values"], scope.fields,
                          state_field)
        elif kind == "assign_owner":
            _check_expression(scope, f"{at}/user", action["user"], "string")
        elif kind == "create_record":
            scope = _check_create(scope, at, action, refs)
        elif kind == "notify":
            _check_notify(scope, at, action, roles)
        elif kind == "webhook" and "record" in action:
            _check_created(scope, f"{at}/record", action["record"], actions[:index])
        elif kind == "transition":
            _check_transition_action(scope, f"{at}/name", action["name"], trigger)


def _check_transition_action(
    scope: _Scope, pointer: str, name: str, trigger: str
) -> None:
    problem = None
    if trigger in ("transition", "delete"):
        problem = (
            f"a {trigger} cannot take transition {name!r}",
            "take transitions from create, update or time rules",
        )
    elif name not in scope.transitions:
        known = sorted(scope.transitions)
        problem = (
            f"entity {scope.fields.entity!r} has no workflow transition {name!r}",
            suggest(name, known)
            + (f"use one of: {', '.join(known)}" if known else "add a workflow"),
        )
    elif scope.transitions[name]:
        problem = (
            f"transition {name!r} needs an approval, which a rule cannot give",
            "take a transition without approval",
        )
    if problem is not None:
        scope.report(pointer, *problem)


def _check_created(
    scope: _Scope, pointer: str, alias: str, earlier: list[Document]
) -> None:
    names = [item["as"] for item in earlier if item["type"] == "create_record"
             and "as" in item]
    if alias not in names:
        scope.report(
            pointer,
            f"no earlier action creates a record named {alias!r}",
            suggest(alias, names)
            + 'name a record that a create_record action before this one '
            'creates with "as"',
        )


def _check_create(
    scope: _Scope, pointer: str, action: Document, refs: References
) -> _Scope:
    entity = action["entity"]
    if entity in refs.entities:
        target = refs.fields_of(entity)
        _check_values(scope, f"{pointer}/values", action["values"], target, None)
        _check_required_given(scope, f"{pointer}/values", action["values"], target)
    elif entity not in refs.broken_entities:
        known = sorted(refs.entities)
        scope.report(f"{pointer}/entity", f"entity {entity!r} does not exist",
                     suggest(entity, known) + f"use one of: {', '.join(known)}")
    alias = action.get("as")
    if alias is None:
        return scope
    if alias in scope.types:
        scope.report(
            f"{pointer}/as",
            f"name {alias!r} is already a field or variable of these expressions",
            "choose another name for the created record",
        )
        return scope
    return scope.with_alias(alias)


def _check_values(
    scope: _Scope,
    pointer: str,
    values: Mapping[str, str],
    target: EntityFields,
    state_field: str | None,
) -> None:
    for name, source in values.items():
        at = f"{pointer}/{name}"
        item = target.by_name.get(name)
        if item is None:
            if name == "owner_id":
                _check_expression(scope, at, source, "string")
            elif name in SYSTEM_COLUMNS:
                scope.report(at, f"{name!r} is a system column, which the "
                             "platform sets", "remove it from the values")
            elif name not in target.skipped:
                scope.report(at, f"field {target.entity}.{name} does not exist",
                             target.unknown_column_hint(name))
            continue
        problem = _unsettable(item, state_field)
        if problem:
            scope.report(at, f"field {target.entity}.{name} {problem}",
                         "remove it from the values")
            continue
        _check_expression(scope, at, source, FIELD_CEL_TYPES.get(item["type"]))


def _check_required_given(
    scope: _Scope, pointer: str, values: Mapping[str, str], target: EntityFields
) -> None:
    """Report the required fields of a created record that the action leaves
    empty and that have no default, since every such create would fail."""
    missing = [
        name
        for name, item in target.by_name.items()
        if item.get("required")
        and name not in values
        and "default" not in item
        and "default_expr" not in item
        and not item.get("formula")
        and item["type"] not in COMPUTED_TYPES
    ]
    if missing:
        scope.report(
            pointer,
            f"the created {target.entity} leaves the required field(s) "
            f"{', '.join(missing)} empty, so creating it always fails",
            "give each of them a value here, or a default in the entity",
        )


def _unsettable(item: Document, state_field: str | None) -> str | None:
    if item.get("formula"):
        return "is a formula, computed on every write"
    if item.get("rollup"):
        return "is a roll-up, computed from related records"
    if item["type"] in COMPUTED_TYPES:
        return "is numbered by the platform"
    if item["name"] == state_field:
        return "is the state of this workflow, which the transition sets"
    return None


def _check_notify(
    scope: _Scope, pointer: str, action: Document, roles: list[str]
) -> None:
    recipients = action["to"]
    if "manager_of" in recipients:
        _check_user_field(scope.report, f"{pointer}/to/manager_of",
                          recipients["manager_of"])
    _check_roles(scope.report, f"{pointer}/to/roles", recipients.get("roles", []),
                 roles)
    if "user" in recipients:
        _check_expression(scope, f"{pointer}/to/user", recipients["user"], "string")
    message = action["message"]
    texts = message.values() if isinstance(message, Mapping) else [message]
    known = [*scope.fields.by_name, *SYSTEM_COLUMNS]
    for text in texts:
        for name in _placeholders(scope.report, f"{pointer}/message", text):
            if name not in known and name not in scope.fields.skipped:
                scope.report(
                    f"{pointer}/message",
                    f"message {text!r} refers to {{{name}}}, which is not a field",
                    suggest(name, known) + "use {field} with a field of the record",
                )
            elif name in scope.hidden:
                scope.report(
                    f"{pointer}/message",
                    f"message {text!r} shows {{{name}}}, which some role or "
                    "permission set hides, so a recipient could read it",
                    "leave the field out of the message",
                )


def _placeholders(report: Report, pointer: str, text: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:
        report(pointer, f"message {text!r} has a stray brace: {err}",
               "write {field} for a value and {{ or }} for a brace")
        return []
    return [name for _, name, _, _ in parsed if name]


def _check_user_field(report: Report, pointer: str, name: str) -> None:
    if name not in USER_FIELDS:
        report(pointer, f"{name!r} does not hold a user",
               f"use one of: {', '.join(USER_FIELDS)}")


def _check_roles(
    report: Report, pointer: str, names: list[str], roles: list[str]
) -> None:
    for index, name in enumerate(names):
        if name not in roles:
            report(f"{pointer}/{index}", f"role {name!r} is not declared",
                   suggest(name, roles) + f"declared roles: {', '.join(roles)}")


def _check_expression(
    scope: _Scope, pointer: str, source: str, expected: str | None
) -> None:
    """Compile ``source`` and report its problems, or a result that is not
    of type ``expected`` (a CEL type name; None accepts any)."""
    try:
        expression = compile_expression(source, scope.types)
    except ExpressionError as err:
        hint = (
            "expressions read the record's fields, "
            + ", ".join(sorted(set(scope.types) - set(scope.fields.by_name)))
            if err.message.startswith("unknown name")
            else "correct the expression at the given line and column"
        )
        scope.report(pointer, f"invalid expression: {err}", hint)
        return
    assert expression.tree is not None
    for function, token in unknown_functions(expression.tree):
        scope.report(
            pointer,
            f"invalid expression: unknown function {function!r} at line "
            f"{token.line}, column {token.column} in {source!r}",
            suggest(function, FUNCTION_TYPES) + "use one of: "
            + ", ".join(sorted(FUNCTION_TYPES)),
        )
    known = [*scope.fields.by_name, *SYSTEM_COLUMNS]
    for name, token in _previous_members(expression.tree):
        if name not in known and name not in scope.fields.skipped:
            scope.report(
                pointer,
                f"invalid expression: previous.{name} at line {token.line}, "
                f"column {token.column} in {source!r} is not a field of "
                f"{scope.fields.entity!r}",
                suggest(name, known) + "previous holds the record's fields and "
                "system columns as stored before the write",
            )
    result, problems = infer_type(expression.tree, scope.types)
    for problem in problems:
        scope.report(
            pointer,
            f"invalid expression: {problem.message} at line {problem.line}, "
            f"column {problem.column} in {source!r}",
            "change the expression so that both sides have the same type",
        )
    if _mismatch(expected, result):
        scope.report(
            pointer,
            f"expression {source!r} returns {with_article(str(result))}, not "
            f"{with_article(str(expected))}",
            f"write an expression that gives {with_article(str(expected))}",
        )


def _previous_members(tree: lark.Tree) -> list[tuple[str, lark.Token]]:
    """Return the names read as ``previous.NAME`` in ``tree``."""
    found: list[tuple[str, lark.Token]] = []
    for node in tree.iter_subtrees():
        if node.data != "member_dot" or len(node.children) != 2:
            continue
        inner, name = node.children
        if not isinstance(name, lark.Token) or not isinstance(inner, lark.Tree):
            continue
        idents = [
            token for token in inner.scan_values(lambda v: isinstance(v, lark.Token))
        ]
        if len(idents) == 1 and str(idents[0]) == "previous":
            found.append((str(name), name))
    return found


def _mismatch(expected: str | None, result: str | None) -> bool:
    if expected is None or result in (None, "null_type", expected):
        return False
    return not (expected == "double" and result == "int")


def _check_state_fields_untouched(
    report_for: ReportFor,
    documents: Mapping[str, Document],
    state_fields: Mapping[tuple[str, str], str],
) -> None:
    """Automation rules may not set a workflow's state field: only its
    transitions move it."""
    for key, document in documents.items():
        if not key.startswith("automations/"):
            continue
        for index, action in enumerate(document["actions"]):
            targets: list[tuple[str, str]] = []
            if action["type"] == "set_fields":
                targets = [(document["entity"], name) for name in action["values"]]
            for target in targets:
                workflow = state_fields.get(target)
                if workflow is not None:
                    report_for(key)(
                        f"/actions/{index}/values/{target[1]}",
                        f"field {target[0]}.{target[1]} is the state of the "
                        f"workflow in {workflow}; only its transitions change it",
                        "add a transition with this action, or remove the value",
                    )
