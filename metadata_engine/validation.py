"""Compile one marshmallow schema per entity from its metadata.

The schema is the single definition of a valid record: the API, the HTML
forms and the importer all load input through it. Schemas are built per
locale because their error messages are data from ``messages``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from . import fieldtypes
from .messages import messages_for
from .model import Entity

#: System columns a client may send on create: ``id`` (so that records can be
#: created offline) and ``owner_id``.
WRITABLE_SYSTEM_COLUMNS = ("id", "owner_id")


class RecordSchema(Schema):
    """Base of every compiled entity schema."""

    class Meta:
        unknown = RAISE

    entity: Entity
    messages: Mapping[str, str]

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def check_required(
        self, data: dict[str, Any], original: Any, partial: Any, **kwargs: Any
    ) -> None:
        """Reject missing required fields on create and empty ones on update.

        Runs even when other fields failed, so that one response lists every
        problem. A field whose own validation failed is not reported again,
        and a missing field with a default is left to the record service,
        which fills it in.
        """
        errors: dict[str, list[str]] = {}
        for field in self.entity.fields:
            if not field.required or not field.writable:
                continue
            if isinstance(original, Mapping) and (
                field.name in original and field.name not in data
            ):
                continue
            missing = field.name not in data
            if missing and (partial or field.default is not None):
                continue
            value = data.get(field.name)
            if value is None or value == "" or value == []:
                key = "required" if missing else "null"
                errors[field.name] = [self.messages[key]]
        if errors:
            raise ValidationError(errors)


def build_schema(entity: Entity, locale: str | None = "en") -> type[RecordSchema]:
    """Return a schema class that validates writes to ``entity``.

    Read-only and auto-number fields are left out, so the schema rejects them
    as unknown; the record service reports them as read-only first.
    """
    messages = messages_for(locale)
    attributes: dict[str, Any] = {
        "entity": entity,
        "messages": messages,
        "Meta": type(
            "Meta",
            (),
            {"unknown": RAISE, "register": False},
        ),
    }
    for field in entity.fields:
        if not field.writable:
            continue
        attributes[field.name] = fieldtypes.get(field.type).schema_field(
            field, messages
        )
    attributes["id"] = fields.String(
        validate=[
            validate.Length(equal=36, error=messages["invalid_id"]),
            _uuid_validator(messages),
        ],
        error_messages={"invalid": messages["invalid_id"]},
    )
    attributes["owner_id"] = fields.String(
        allow_none=True,
        validate=[validate.Length(max=36, error=messages["invalid_id"])],
    )
    attributes["error_messages"] = {"unknown": messages["unknown"]}
    schema_class: type[RecordSchema] = type(
        f"{entity.name.title()}Schema", (RecordSchema,), attributes
    )
    return schema_class


def _uuid_validator(messages: Mapping[str, str]) -> Any:
    def check(value: str) -> None:
        try:
            uuid.UUID(value)
        except ValueError:
            raise ValidationError(messages["invalid_id"]) from None

    return check
