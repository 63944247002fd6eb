"""Compile one marshmallow schema per entity from its metadata.

The schema is the single definition of a valid record: the API, the HTML
forms and the importer all load input through it. Schemas are built per
locale because their error messages are data from ``messages``.
"""

from __future__ import annotations

import datetime as dt
import decimal
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
    typed: Mapping[str, tuple[Any, tuple[type, ...]]]

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
            if missing and (
                partial or field.default is not None or field.default_expr
            ):
                continue
            value = data.get(field.name)
            if value is None or value == "" or value == []:
                key = "required" if missing else "null"
                errors[field.name] = [self.messages[key]]
        if errors:
            raise ValidationError(errors)

    def _validated_fields(self) -> frozenset[str]:
        """Return the names of fields that have validators, computed once."""
        names = self.__dict__.get("_validated_names")
        if names is None:
            names = frozenset(
                name
                for name, field in self.fields.items()
                if field.validators
                or (isinstance(field, fields.List) and field.inner.validators)
            )
            self.__dict__["_validated_names"] = names
        return names

    def is_typed(self, data: Mapping[str, Any]) -> bool:
        """Return True if every value already has its field's Python type."""
        for key, value in data.items():
            kinds = self.typed.get(key)
            if value is None or kinds is None:
                continue
            if not isinstance(value, kinds[0]) or isinstance(value, kinds[1]):
                return False
            if isinstance(value, dt.datetime) and value.tzinfo is None:
                return False
        return True

    def validate_typed(self, data: Mapping[str, Any]) -> dict[str, list[str]]:
        """Check values that already have their Python types (rows that an
        importer converted from text) with this schema's own validators.

        It skips only deserialization, which such values do not need, and is
        several times faster than ``load`` for wide entities. The caller
        checks ``is_typed`` first. Errors of list items are listed under
        their field, not under the item's index.
        """
        errors: dict[str, list[str]] = {}
        fields_by_name = self.fields
        validated = self._validated_fields()
        for key, value in data.items():
            field = fields_by_name.get(key)
            if field is None or field.dump_only:
                errors[key] = [self.error_messages["unknown"]]
            elif value is None:
                if not field.allow_none:
                    errors[key] = [str(field.error_messages["null"])]
            elif key in validated:
                problems = _run_validators(field, value)
                if problems:
                    errors[key] = problems
        passed = {key: value for key, value in data.items() if key not in errors}
        try:
            self.check_required(passed, data, partial=False)
        except ValidationError as err:
            if isinstance(err.messages, dict):
                for key, messages in err.messages.items():
                    errors.setdefault(str(key), []).extend(messages)
        return errors


#: Python types of values already converted from text, per field type; used
#: to decide whether a row may skip deserialization.
TYPED_VALUES: Mapping[str, type | tuple[type, ...]] = {
    "integer": int,
    "decimal": decimal.Decimal,
    "currency": decimal.Decimal,
    "percent": decimal.Decimal,
    "boolean": bool,
    "date": dt.date,
    "datetime": dt.datetime,
    "multi_picklist": list,
}


#: Subclasses that do not count as the expected type: bool is an int, and a
#: datetime is a date.
_EXCLUDED: Mapping[str, tuple[type, ...]] = {"integer": (bool,), "date": (dt.datetime,)}


def typed_fields(entity: Entity) -> dict[str, tuple[Any, tuple[type, ...]]]:
    """Return, per field, the accepted and the excluded Python types."""
    return {
        field.name: (TYPED_VALUES.get(field.type, str), _EXCLUDED.get(field.type, ()))
        for field in entity.fields
    }


def build_schema(entity: Entity, locale: str | None = "en") -> type[RecordSchema]:
    """Return a schema class that validates writes to ``entity``.

    Read-only and auto-number fields are left out, so the schema rejects them
    as unknown; the record service reports them as read-only first.
    """
    messages = messages_for(locale)
    attributes: dict[str, Any] = {
        "entity": entity,
        "messages": messages,
        "typed": typed_fields(entity),
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


def _run_validators(field: fields.Field, value: Any) -> list[str]:
    problems: list[str] = []
    for validator in field.validators:
        try:
            validator(value)
        except ValidationError as err:
            problems.extend(str(message) for message in err.messages)
    if isinstance(field, fields.List):
        for item in value:
            for validator in field.inner.validators:
                try:
                    validator(item)
                except ValidationError as err:
                    problems.extend(str(message) for message in err.messages)
    return problems


def _uuid_validator(messages: Mapping[str, str]) -> Any:
    def check(value: str) -> None:
        try:
            uuid.UUID(value)
        except ValueError:
            raise ValidationError(messages["invalid_id"]) from None

    return check
