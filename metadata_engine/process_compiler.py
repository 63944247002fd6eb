"""Compile checked workflow and automation documents into the model."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from metadata_engine.model import (
    Action,
    Approval,
    Automation,
    Text,
    Transition,
    Trigger,
    Workflow,
)

Document = Mapping[str, Any]


def compile_workflow(document: Document, locale: str) -> Workflow:
    return Workflow(
        name=document["name"],
        label=Text.of(document["label"], locale),
        entity=document["entity"],
        field=document["field"],
        initial=document["initial"],
        transitions=tuple(
            _compile_transition(item, locale) for item in document["transitions"]
        ),
    )


def compile_automation(document: Document, locale: str) -> Automation:
    trigger = document["trigger"]
    offset = trigger.get("offset", {})
    return Automation(
        name=document["name"],
        label=Text.of(document["label"], locale),
        entity=document["entity"],
        trigger=Trigger(
            on=trigger["on"],
            fields=tuple(trigger.get("fields", ())),
            date_field=trigger.get("date_field"),
            offset=timedelta(
                days=offset.get("days", 0),
                hours=offset.get("hours", 0),
                minutes=offset.get("minutes", 0),
            ),
        ),
        actions=compile_actions(document["actions"], locale),
        when=document.get("when"),
        active=document.get("active", True),
    )


def compile_actions(items: list[Document], locale: str) -> tuple[Action, ...]:
    return tuple(_compile_action(item, locale) for item in items)


def _compile_transition(document: Document, locale: str) -> Transition:
    approval = document.get("approval")
    guard_message = document.get("guard_message")
    return Transition(
        name=document["name"],
        label=Text.of(document["label"], locale),
        sources=tuple(document["from"]),
        target=document["to"],
        roles=tuple(document.get("roles", ())),
        when=document.get("when"),
        guard_message=Text.of(guard_message, locale) if guard_message else None,
        required_fields=tuple(document.get("required_fields", ())),
        actions=compile_actions(document.get("actions", []), locale),
        approval=None if approval is None else Approval(
            required=approval.get("required", 1),
            manager_of=approval["approvers"].get("manager_of"),
            roles=tuple(approval["approvers"].get("roles", ())),
        ),
    )


def _compile_action(document: Document, locale: str) -> Action:
    message = document.get("message")
    return Action(
        kind=document["type"],
        values=MappingProxyType(dict(document.get("values", {}))),
        user=document.get("user"),
        entity=document.get("entity"),
        alias=document.get("as"),
        recipients=MappingProxyType(dict(document.get("to", {}))),
        message=Text.of(message, locale) if message else None,
        endpoint=document.get("endpoint"),
        event=document.get("event"),
        record=document.get("record"),
        transition=document.get("name") if document["type"] == "transition" else None,
    )
