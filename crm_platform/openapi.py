"""The OpenAPI 3.1 document of a tenant's REST API, built from its metadata.

Request bodies come from the compiled marshmallow schemas through apispec's
MarshmallowPlugin, so the document and the validation cannot drift apart.
Record responses, filter parameters and errors are written here from the
field types. The document depends only on the definition and the locale, so
it is built once per (content hash, locale) and copied for each request.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from metadata_engine import fieldtypes
from metadata_engine.messages import SUPPORTED_LOCALES
from metadata_engine.model import SYSTEM_COLUMNS, Definition, Entity, Field

from .querying import DEFAULT_LIMIT, MAX_LIMIT, SYSTEM_TYPES
from .serialize import (
    DECIMAL_TYPES,
    DEFAULT_SCALE,
    default_to_json,
    metadata_value_to_json,
)
from .tenancy import TenantRuntime

#: Number of built documents kept, one per definition and locale.
CACHE_SIZE = 32
API_PREFIX = "/t/{slug}/api/v1"
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"

API_DESCRIPTION = """\
Records of one tenant. Authenticate every request with
`Authorization: Bearer <token>` (create a token with `metacrm token create`).

Lists take filters as `?field=value` (equality) or `?field__op=value`, where
`op` is one of the operators that the field's type allows; a parameter
repeated is combined with AND. `sort` takes field names separated by commas,
with `-` for descending. Pages are walked with `cursor=<next_cursor>`, which
the response also sends as a `Link: <...>; rel="next"` header.

Decimals are strings with the field's number of decimal places, dates are
`YYYY-MM-DD`, datetimes are ISO 8601 in UTC ending in `Z`, multi-picklists
are sorted lists of option values, lookups are the id of the target record.
Validation messages are in the locale of `?lang=`, else of
`Accept-Language`, else of the user.
"""

OPERATOR_TEXT = {
    "eq": "equal to",
    "ne": "not equal to (an empty value counts as not equal)",
    "lt": "less than",
    "lte": "less than or equal to",
    "gt": "greater than",
    "gte": "greater than or equal to",
    "in": "one of a comma-separated list",
    "contains": "contains the text, case-sensitive",
    "icontains": "contains the text, ignoring case",
    "startswith": "starts with the text",
    "isnull": "`true` for records without a value, `false` for records with one",
}

#: Error responses: component name, HTTP status, description.
ERROR_RESPONSES: tuple[tuple[str, int, str], ...] = (
    ("BadRequest", 400,
     "Invalid query (`invalid_query`), JSON body (`invalid_json`) or header "
     "(`invalid_header`)."),
    ("Unauthorized", 401, "Missing, invalid, expired or revoked bearer token."),
    ("Forbidden", 403,
     "The tenant is suspended or the user's role does not allow the request "
     "(`forbidden`), or the tenant's plan does not include the API or a limit "
     "of the plan is reached (`plan_limit`: `details` names the `feature` and "
     "`plan`, or the `record_quota`)."),
    ("NotFound", 404,
     "Unknown tenant, entity or record; records of other tenants are reported "
     "the same way."),
    ("Conflict", 409,
     "A unique value is taken, or other records still refer to this one."),
    ("PreconditionFailed", 412,
     "`If-Match` names a version that is no longer current (`version_conflict`)."),
    ("PayloadTooLarge", 413, "The request body is over the server's limit."),
    ("ValidationFailed", 422,
     "The record is invalid; `details` maps each field to its messages."),
    ("InternalError", 500,
     "An unexpected error; `details.request_id` identifies it in the server log."),
)
READ_ERRORS = ("BadRequest", "Unauthorized", "Forbidden", "NotFound", "InternalError")
WRITE_ERRORS = (
    "BadRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict",
    "PayloadTooLarge",
    "ValidationFailed", "InternalError",
)

_cache: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
_cache_lock = threading.Lock()


def build_openapi(runtime: TenantRuntime, locale: str) -> dict[str, Any]:
    """Return the OpenAPI document of ``runtime``'s API with labels in
    ``locale``, as a copy that the caller may change."""
    key = (runtime.definition.content_hash, locale)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
    if cached is None:
        cached = build_document(runtime, locale)
        with _cache_lock:
            _cache[key] = cached
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    document = copy.deepcopy(cached)
    document["servers"] = [{"url": API_PREFIX.format(slug=runtime.slug)}]
    return document


def build_document(runtime: TenantRuntime, locale: str) -> dict[str, Any]:
    """Build the document without the tenant-specific ``servers`` entry."""
    definition = runtime.definition
    spec = APISpec(
        title=f"{definition.label.get(locale)} API",
        version=definition.version,
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": API_DESCRIPTION},
        security=[{"bearer": []}],
    )
    _add_shared_components(spec)

    names = schema_names(definition)
    for entity in definition.entities:
        name = names[entity.name]
        required = [f.name for f in entity.fields if f.required and f.writable]
        spec.components.schema(
            f"{name}Input",
            {"required": required} if required else None,
            schema=runtime.schema(entity.name, locale),
        )
        spec.components.schema(name, record_schema(entity, locale))
        _add_entity_paths(spec, definition, entity, name, locale)
    _add_metadata_paths(spec)
    _add_member_paths(spec, definition.role_names)
    _add_sharing_paths(spec)
    _add_permission_paths(spec)
    _add_webhook_paths(spec)
    _add_workflow_paths(spec)
    _add_journal_paths(spec)

    document = spec.to_dict()
    schemas = document["components"]["schemas"]
    for entity in definition.entities:
        name = names[entity.name]
        refine_input_schema(schemas[f"{name}Input"], entity, locale)
        schemas[f"{name}Patch"] = patch_schema(schemas[f"{name}Input"])

    result: dict[str, Any] = to_json_values(document)
    return result


def schema_names(definition: Definition) -> dict[str, str]:
    """Return a unique CamelCase component name per entity (``survey_response``
    becomes ``SurveyResponse``), falling back to the entity name on a clash."""
    names: dict[str, str] = {}
    used_names: set[str] = set()
    for entity in definition.entities:
        name = "".join(part.capitalize() for part in entity.name.split("_"))
        if name in used_names:
            name = entity.name
        used_names.add(name)
        names[entity.name] = name
    return names


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


# Shared components


def _add_shared_components(spec: APISpec) -> None:
    spec.components.security_scheme(
        "bearer",
        {"type": "http", "scheme": "bearer",
         "description": "An API token of this tenant."},
    )
    spec.components.schema("Error", _error_schema({"type": "object"}))
    spec.components.schema(
        "ValidationError",
        _error_schema({
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        }),
    )
    for name, _status, description in ERROR_RESPONSES:
        schema = "ValidationError" if name == "ValidationFailed" else "Error"
        spec.components.response(
            name,
            {"description": description,
             "content": {"application/json": {"schema": _ref("schemas", schema)}}},
        )
    for name, parameter in _shared_parameters().items():
        spec.components.parameter(name, parameter.pop("in"), parameter)


def _error_schema(details: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "examples": ["validation_failed"]},
                    "message": {"type": "string"},
                    "details": details,
                },
            }
        },
    }


def _shared_parameters() -> dict[str, dict[str, Any]]:
    return {
        "Lang": {
            "in": "query", "name": "lang",
            "description": "Locale of labels and validation messages; overrides "
            "Accept-Language.",
            "schema": {"type": "string", "enum": list(SUPPORTED_LOCALES)},
        },
        "Limit": {
            "in": "query", "name": "limit",
            "description": "Number of records per page.",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                       "default": DEFAULT_LIMIT},
        },
        "Cursor": {
            "in": "query", "name": "cursor",
            "description": "The `next_cursor` of the previous page, unchanged, with "
            "the same filters and sort.",
            "schema": {"type": "string"},
        },
        "Count": {
            "in": "query", "name": "count",
            "description": "Add `total`, the number of matching records.",
            "schema": {"type": "boolean", "default": False},
        },
        "IfMatch": {
            "in": "header", "name": "If-Match",
            "description": 'The record\'s ETag (`"3"`; `W/"3"` and `3` are also '
            "accepted). The request fails with 412 if the record has changed "
            "since.",
            "schema": {"type": "string"},
        },
        "RecordId": {
            "in": "path", "name": "id", "required": True,
            "description": "The record's id.",
            "schema": {"type": "string", "maxLength": 36},
        },
    }


# Per-entity schemas


def record_schema(entity: Entity, locale: str) -> dict[str, Any]:
    """Return the JSON Schema of a record as the API returns it."""
    properties: dict[str, Any] = {
        name: _system_column_schema(name) for name in SYSTEM_COLUMNS
    }
    for field in entity.fields:
        properties[field.name] = field_output_schema(field, locale)
    return {
        "type": "object",
        "title": entity.label.get(locale),
        "required": list(properties),
        "properties": properties,
    }


def _system_column_schema(name: str) -> dict[str, Any]:
    type_name = SYSTEM_TYPES[name]
    if type_name == "datetime":
        return {"type": "string", "format": "date-time", "readOnly": True}
    if type_name == "integer":
        return {"type": "integer", "minimum": 1, "readOnly": True}
    schema: dict[str, Any] = {"type": "string", "maxLength": 36}
    if name == "owner_id":
        schema["description"] = "Id of the user who owns the record."
    elif name == "id":
        schema["description"] = "A UUID; a client may choose it on create."
    else:
        schema["readOnly"] = True
    if name in ("created_by", "updated_by", "owner_id"):
        schema["type"] = ["string", "null"]
    return schema


def field_output_schema(field: Field, locale: str) -> dict[str, Any]:
    """Return the JSON Schema of one field's value in a response."""
    schema = _value_schema(field)
    schema["type"] = [schema["type"], "null"]
    if "enum" in schema:
        schema["enum"] = [*schema["enum"], None]
    schema["title"] = field.label.get(locale)
    if field.help_text is not None:
        schema["description"] = field.help_text.get(locale)
    if not field.writable:
        schema["readOnly"] = True
    return schema


def _value_schema(field: Field) -> dict[str, Any]:
    """Return the schema of a non-null value of ``field``."""
    if field.type in DECIMAL_TYPES:
        scale = DEFAULT_SCALE if field.scale is None else field.scale
        return {"type": "string", "format": "decimal",
                "pattern": _decimal_output_pattern(scale)}
    if field.type == "integer":
        return {"type": "integer"}
    if field.type == "boolean":
        return {"type": "boolean"}
    if field.type == "date":
        return {"type": "string", "format": "date"}
    if field.type == "datetime":
        return {"type": "string", "format": "date-time"}
    if field.type == "picklist":
        return {"type": "string", "enum": [option.value for option in field.options]}
    if field.type == "multi_picklist":
        options = [option.value for option in field.options]
        return {"type": "array", "uniqueItems": True,
                "items": {"type": "string", "enum": options}}
    schema: dict[str, Any] = {"type": "string"}
    if field.max_length:
        schema["maxLength"] = field.max_length
    if field.type == "email":
        schema["format"] = "email"
    elif field.type == "url":
        schema["format"] = "uri"
    elif field.type == "lookup":
        schema["description"] = f"Id of a {field.target} record."
    return schema


def _decimal_output_pattern(scale: int) -> str:
    if scale == 0:
        return r"^-?[0-9]+$"
    return rf"^-?[0-9]+\.[0-9]{{{scale}}}$"


def refine_input_schema(schema: dict[str, Any], entity: Entity, locale: str) -> None:
    """Correct what apispec cannot know about the generated input schema:
    localized titles, decimals sent as strings, date limits, defaults."""
    schema["title"] = entity.label.get(locale)
    properties = schema["properties"]
    for field in entity.fields:
        if field.name not in properties:
            continue
        prop = properties[field.name]
        prop["title"] = field.label.get(locale)
        prop.pop("description", None)
        if field.help_text is not None:
            prop["description"] = field.help_text.get(locale)
        if field.default is not None:
            prop["default"] = default_to_json(field)
        if field.pattern:
            # The compiled validator ends the pattern with Python's \Z, which
            # ECMAScript regular expressions read as a literal "Z".
            prop["pattern"] = f"^(?:{field.pattern})$"
        if field.type in DECIMAL_TYPES:
            _refine_decimal(prop, field)
        elif field.type == "date":
            _refine_date(prop, field)
        elif field.type == "url":
            prop["format"] = "uri"
        elif field.type == "lookup":
            prop["description"] = f"Id of a {field.target} record."
    if "id" in properties:
        properties["id"]["description"] = "A UUID for the new record; optional."
    if "owner_id" in properties:
        properties["owner_id"]["description"] = (
            "Id of the user who owns the record; defaults to the caller."
        )


def _refine_decimal(prop: dict[str, Any], field: Field) -> None:
    """Decimals are accepted as JSON strings (exact) or numbers."""
    types = ["string", "number"]
    if not field.required:
        types.append("null")
    prop["type"] = types
    prop["pattern"] = DECIMAL_PATTERN
    prop["format"] = "decimal"
    precision = field.precision or 18
    scale = DEFAULT_SCALE if field.scale is None else field.scale
    prop["x-precision"] = precision
    prop["x-scale"] = scale
    # apispec writes the bounds of an as_string Decimal field as strings.
    for key, bound in (("minimum", field.minimum), ("maximum", field.maximum)):
        prop.pop(key, None)
        if bound is not None:
            prop[key] = json_number(decimal.Decimal(bound))


def _refine_date(prop: dict[str, Any], field: Field) -> None:
    """JSON Schema bounds apply to numbers only, so date limits are text."""
    prop.pop("minimum", None)
    prop.pop("maximum", None)
    limits = []
    if field.minimum is not None:
        limits.append(f"on or after {metadata_value_to_json(field.minimum)}")
    if field.maximum is not None:
        limits.append(f"on or before {metadata_value_to_json(field.maximum)}")
    if limits:
        prop["description"] = "A date " + " and ".join(limits) + "."


def patch_schema(input_schema: dict[str, Any]) -> dict[str, Any]:
    """Return the schema of a partial update: the input without ``required``."""
    schema = copy.deepcopy(input_schema)
    schema.pop("required", None)
    return schema


# Filters and sorting


def filter_properties(entity: Entity, locale: str) -> dict[str, Any]:
    """Return one property per allowed ``field__op`` query parameter."""
    properties: dict[str, Any] = {}
    for name, type_name, label, field in _filterable_columns(entity, locale):
        for op in fieldtypes.get(type_name).operators:
            key = name if op == "eq" else f"{name}__{op}"
            schema = _filter_value_schema(type_name, op, field)
            text = OPERATOR_TEXT[op]
            if op == "contains" and type_name == "multi_picklist":
                text = "has the option"
            schema["description"] = f"{label}: {text}."
            properties[key] = schema
    return properties


def _filterable_columns(
    entity: Entity, locale: str
) -> Iterator[tuple[str, str, str, Field | None]]:
    for name in SYSTEM_COLUMNS:
        yield name, SYSTEM_TYPES[name], name, None
    for field in entity.fields:
        # Sensitive fields are stored encrypted, so the API rejects filters.
        if not field.sensitive:
            yield field.name, field.type, field.label.get(locale), field


def _filter_value_schema(
    type_name: str, op: str, field: Field | None
) -> dict[str, Any]:
    if op == "isnull":
        return {"type": "boolean"}
    if op == "in":
        return {"type": "string"}
    if op in ("contains", "icontains", "startswith"):
        return {"type": "string"}
    if type_name == "integer":
        return {"type": "integer"}
    if type_name in DECIMAL_TYPES:
        return {"type": "string", "format": "decimal", "pattern": DECIMAL_PATTERN}
    if type_name == "boolean":
        return {"type": "boolean"}
    if type_name == "date":
        return {"type": "string", "format": "date"}
    if type_name == "datetime":
        return {"type": "string", "format": "date-time"}
    if type_name == "picklist" and field is not None:
        return {"type": "string", "enum": [option.value for option in field.options]}
    return {"type": "string"}


def sort_pattern(entity: Entity) -> str:
    """Return a regular expression for ``sort``: sortable names, comma-separated."""
    names = [*SYSTEM_COLUMNS]
    names += [
        f.name
        for f in entity.fields
        if fieldtypes.get(f.type).sortable and not f.sensitive
    ]
    key = "-?(?:" + "|".join(re.escape(name) for name in names) + ")"
    return f"^{key}(?:,{key})*$"


# Paths


def _add_entity_paths(
    spec: APISpec, definition: Definition, entity: Entity, name: str, locale: str
) -> None:
    tag = entity.plural_label.get(locale)
    record = _ref("schemas", name)
    spec.tag({"name": tag, "description": _entity_description(entity, locale)})
    spec.path(
        path=f"/records/{entity.name}",
        operations={
            "get": _list_operation(entity, record, tag, locale),
            "post": {
                "operationId": f"create_{entity.name}",
                "summary": f"Create a {entity.name} record",
                "tags": [tag],
                "parameters": ["Lang"],
                "requestBody": _json_body(_ref("schemas", f"{name}Input")),
                "responses": {
                    "201": _record_response("The created record.", record,
                                            location=True),
                    **_error_refs(WRITE_ERRORS),
                },
            },
        },
    )
    # apispec turns a component name into a $ref, though its hints ask for dicts.
    record_id: list[Any] = ["RecordId"]
    spec.path(
        path=f"/records/{entity.name}/{{id}}",
        parameters=record_id,
        operations=_record_operations(entity, name, record, tag),
    )
    spec.path(
        path=f"/records/{entity.name}/{{id}}/related",
        parameters=record_id,
        operations={"get": _related_operation(definition, entity, tag)},
    )


def _entity_description(entity: Entity, locale: str) -> str:
    if entity.description is not None:
        return entity.description.get(locale)
    return entity.label.get(locale)


def _list_operation(
    entity: Entity, record: dict[str, str], tag: str, locale: str
) -> dict[str, Any]:
    searchable = [f.name for f in entity.searchable_fields] or [entity.title_field]
    page = {
        "type": "object",
        "required": ["data", "next_cursor"],
        "properties": {
            "data": {"type": "array", "items": record},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the "
                "last page.",
            },
            "total": {"type": "integer",
                      "description": "Number of matching records, with count=true."},
        },
    }
    return {
        "operationId": f"list_{entity.name}",
        "summary": f"List {entity.name} records",
        "tags": [tag],
        "parameters": [
            {
                "in": "query", "name": "filters", "style": "form", "explode": True,
                "description": "Filters: each property is a query parameter "
                "`field` (equality) or `field__op`.",
                "schema": {"type": "object", "additionalProperties": False,
                           "properties": filter_properties(entity, locale)},
            },
            {
                "in": "query", "name": "sort",
                "description": "Sort keys separated by commas, `-` for "
                "descending; default `-created_at`. Ties are broken by id.",
                "schema": {"type": "string", "pattern": sort_pattern(entity)},
            },
            {
                "in": "query", "name": "q",
                "description": "Text that one of these fields must contain, "
                f"ignoring case: {', '.join(searchable)}.",
                "schema": {"type": "string", "maxLength": 1000},
            },
            "Limit",
            "Cursor",
            "Count",
            "Lang",
        ],
        "responses": {
            "200": {
                "description": "One page of records.",
                "headers": {
                    "Link": {
                        "description": 'The next page as `<URL>; rel="next"`, '
                        "absent on the last page.",
                        "schema": {"type": "string"},
                    }
                },
                "content": {"application/json": {"schema": page}},
            },
            **_error_refs(READ_ERRORS),
        },
    }


def _record_operations(
    entity: Entity, name: str, record: dict[str, str], tag: str
) -> dict[str, Any]:
    return {
        "get": {
            "operationId": f"get_{entity.name}",
            "summary": f"Get a {entity.name} record",
            "tags": [tag],
            "responses": {
                "200": _record_response("The record.", record),
                **_error_refs(READ_ERRORS),
            },
        },
        "patch": {
            "operationId": f"update_{entity.name}",
            "summary": f"Change fields of a {entity.name} record",
            "tags": [tag],
            "parameters": ["IfMatch", "Lang"],
            "requestBody": _json_body(_ref("schemas", f"{name}Patch")),
            "responses": {
                "200": _record_response("The changed record.", record),
                **_error_refs((*WRITE_ERRORS, "PreconditionFailed")),
            },
        },
        "delete": {
            "operationId": f"delete_{entity.name}",
            "summary": f"Delete a {entity.name} record",
            "tags": [tag],
            "parameters": ["IfMatch"],
            "responses": {
                "204": {"description": "The record was deleted."},
                **_error_refs(("BadRequest", "Unauthorized", "NotFound", "Conflict",
                               "PreconditionFailed", "InternalError")),
            },
        },
    }


def _related_operation(
    definition: Definition, entity: Entity, tag: str
) -> dict[str, Any]:
    pairs = definition.referencing(entity.name)
    referencing = sorted({other.name for other, _ in pairs})
    names = schema_names(definition)
    if referencing:
        item: dict[str, Any] = {
            "anyOf": [_ref("schemas", names[other]) for other in referencing]
        }
    else:
        item = {"type": "object"}
    related_list = {
        "type": "object",
        "required": ["entity", "field", "label", "data", "total", "list_url"],
        "properties": {
            "entity": {"type": "string"},
            "field": {"type": "string", "description": "The lookup field."},
            "label": {"type": "string"},
            "field_label": {"type": "string"},
            "data": {"type": "array", "items": item},
            "total": {"type": "integer"},
            "list_url": {"type": "string", "format": "uri",
                         "description": "The full list of these records."},
        },
    }
    return {
        "operationId": f"related_{entity.name}",
        "summary": f"List records that refer to a {entity.name} record",
        "tags": [tag],
        "parameters": [
            {"in": "query", "name": "limit",
             "description": "Number of records per related list.",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                        "default": 10}},
            "Lang",
        ],
        "responses": {
            "200": {
                "description": "One list per lookup field that can point here.",
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": {"type": "array", "items": related_list}},
                }}},
            },
            **_error_refs(READ_ERRORS),
        },
    }


def _record_response(
    description: str, record: dict[str, str], location: bool = False
) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "ETag": {"description": 'The record version, as `"3"`; send it back in '
                 "If-Match.", "schema": {"type": "string"}},
    }
    if location:
        headers["Location"] = {"description": "URL of the new record.",
                               "schema": {"type": "string", "format": "uri"}}
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["data"], "properties": {"data": record},
        }}},
    }


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _error_refs(names: tuple[str, ...]) -> dict[str, Any]:
    """Return responses by status; apispec turns the component names into refs."""
    statuses = {name: status for name, status, _ in ERROR_RESPONSES}
    return {str(statuses[name]): name for name in names}


def _add_metadata_paths(spec: APISpec) -> None:
    description = {
        "type": "object",
        "required": ["name", "label", "plural_label", "title_field", "fields"],
        "properties": {
            "name": {"type": "string"},
            "label": {"type": "string"},
            "plural_label": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "icon": {"type": ["string", "null"]},
            "title_field": {"type": "string"},
            "system_columns": {"type": "array", "items": {"type": "object"}},
            "fields": {"type": "array", "items": {"type": "object"}},
            "list_views": {"type": "array", "items": {"type": "object"}},
            "access": {
                "type": "object",
                "description": "The caller's rights: `rights` maps read, edit "
                "and delete to their scopes (own, team, subordinates, all; empty "
                "when not granted) and create, export, import and change_owner "
                "to booleans; `fields` maps each field the caller can see to "
                "read_only or editable. Fields hidden from the caller are left "
                "out of `fields`, of `access` and of the list views' columns.",
                "required": ["rights", "fields"],
                "properties": {
                    "rights": {"type": "object"},
                    "fields": {"type": "object",
                               "additionalProperties": {"type": "string"}},
                },
            },
        },
    }
    spec.components.schema("EntityDescription", description)
    entity_ref = _ref("schemas", "EntityDescription")
    spec.tag({"name": "Metadata", "description": "Entities, fields and this document."})
    spec.path(path="/entities", operations={"get": {
        "operationId": "list_entities",
        "summary": "Describe every entity the caller may read: labels, fields, "
        "types, operators and the caller's rights",
        "tags": ["Metadata"],
        "parameters": ["Lang"],
        "responses": {
            "200": _data_response("The entities.", {"type": "array",
                                                     "items": entity_ref}),
            **_error_refs(("Unauthorized", "NotFound", "InternalError")),
        },
    }})
    spec.path(path="/entities/{name}", operations={"get": {
        "operationId": "get_entity",
        "summary": "Describe one entity; 404 if the caller may not read it",
        "tags": ["Metadata"],
        "parameters": [
            {"in": "path", "name": "name", "required": True,
             "schema": {"type": "string"}},
            "Lang",
        ],
        "responses": {
            "200": _data_response("The entity.", entity_ref),
            **_error_refs(("Unauthorized", "NotFound", "InternalError")),
        },
    }})
    spec.path(path="/openapi.json", operations={"get": {
        "operationId": "get_openapi",
        "summary": "This document",
        "tags": ["Metadata"],
        "parameters": ["Lang"],
        "responses": {
            "200": {"description": "The OpenAPI 3.1 document.",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
            **_error_refs(("Unauthorized", "NotFound", "InternalError")),
        },
    }})


def _add_member_paths(spec: APISpec, roles: tuple[str, ...]) -> None:
    # Imported here because members imports the API module, which imports this.
    from .members import openapi_components, openapi_paths

    for name, schema in openapi_components(roles).items():
        spec.components.schema(name, schema)
    spec.tag({"name": "Members", "description": "Members of the tenant and seats."})
    paths = openapi_paths(_error_refs(READ_ERRORS), _error_refs(WRITE_ERRORS))
    for path, item in paths.items():
        operations = {key: value for key, value in item.items()
                      if key != "parameters"}
        spec.path(path=path, operations=operations,
                  parameters=item.get("parameters"))


def _add_sharing_paths(spec: APISpec) -> None:
    # Imported here because web_sharing imports the API module, which imports
    # this one.
    from .web_sharing import openapi_components, openapi_paths

    for name, schema in openapi_components().items():
        spec.components.schema(name, schema)
    spec.tag({"name": "Teams", "description": "Teams, reporting lines and "
              "permission set assignments."})
    spec.tag({"name": "Sharing", "description": "Records shared by hand."})
    paths = openapi_paths(_error_refs(READ_ERRORS), _error_refs(WRITE_ERRORS))
    for path, item in paths.items():
        operations = {key: value for key, value in item.items()
                      if key != "parameters"}
        spec.path(path=path, operations=operations,
                  parameters=item.get("parameters"))


def _add_permission_paths(spec: APISpec) -> None:
    # Imported here because web_permissions imports the API module, which
    # imports this one.
    from .web_permissions import openapi_components, openapi_paths

    for name, schema in openapi_components().items():
        spec.components.schema(name, schema)
    spec.tag({"name": "Permissions", "description": "Why a member may act on a "
              "record, and the roles and permission sets that grant it."})
    paths = openapi_paths(_error_refs(READ_ERRORS), _error_refs(WRITE_ERRORS))
    for path, item in paths.items():
        operations = {key: value for key, value in item.items()
                      if key != "parameters"}
        spec.path(path=path, operations=operations,
                  parameters=item.get("parameters"))


def _add_webhook_paths(spec: APISpec) -> None:
    # Imported here because web_webhooks imports the API module, which
    # imports this one.
    from .web_webhooks import openapi_components, openapi_paths

    for name, schema in openapi_components().items():
        spec.components.schema(name, schema)
    spec.tag({"name": "Webhooks", "description": "Webhook endpoints and their "
              "delivery log (admins only)."})
    paths = openapi_paths(_error_refs(READ_ERRORS), _error_refs(WRITE_ERRORS))
    for path, item in paths.items():
        operations = {key: value for key, value in item.items()
                      if key != "parameters"}
        spec.path(path=path, operations=operations,
                  parameters=item.get("parameters"))


def _add_workflow_paths(spec: APISpec) -> None:
    # Imported here because web_workflows imports the API module, which
    # imports this one.
    from .web_workflows import openapi_components, openapi_paths

    for name, schema in openapi_components().items():
        spec.components.schema(name, schema)
    spec.tag({"name": "Workflows", "description": "Transitions of records "
              "between workflow states, and approval requests."})
    spec.tag({"name": "Notifications", "description": "Messages that "
              "workflows and automation rules leave for the caller."})
    paths = openapi_paths(_error_refs(READ_ERRORS), _error_refs(WRITE_ERRORS))
    for path, item in paths.items():
        operations = {key: value for key, value in item.items()
                      if key != "parameters"}
        spec.path(path=path, operations=operations,
                  parameters=item.get("parameters"))


JOURNAL_ENTRY = {
    "type": "object",
    "required": ["seq", "at", "action", "entity", "record_id", "changes"],
    "properties": {
        "seq": {"type": "integer", "description": "Gapless, in commit order."},
        "at": {"type": "string", "format": "date-time"},
        "actor_id": {"type": ["string", "null"]},
        "action": {"type": "string", "enum": ["create", "update", "delete", "erase"]},
        "entity": {"type": "string"},
        "record_id": {"type": "string"},
        "version": {"type": ["integer", "null"]},
        "changes": {
            "type": "object",
            "description": "Changed fields as [before, after]. Sensitive values "
            "read \"[encrypted]\" and erased ones \"[erased]\".",
            "additionalProperties": {"type": "array", "minItems": 2, "maxItems": 2},
        },
        "request_id": {"type": ["string", "null"]},
    },
}
JOURNAL_PAGE = {
    "description": "Journal entries, newest first.",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["data", "next"],
        "properties": {
            "data": {"type": "array", "items": _ref("schemas", "JournalEntry")},
            "next": {"type": ["string", "null"],
                     "description": "URL of older entries."},
        },
    }}},
}


def _query_parameter(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"in": "query", "name": name, "required": False,
            "description": description, "schema": schema or {"type": "string"}}


def _add_journal_paths(spec: APISpec) -> None:
    spec.components.schema("JournalEntry", JOURNAL_ENTRY)
    spec.tag({"name": "Audit", "description": "The change journal and personal data."})
    before = _query_parameter("before_seq", "Only entries below this number.",
                              type="integer", minimum=1)
    spec.path(path="/records/{entity}/{id}/history", operations={"get": {
        "operationId": "record_history",
        "summary": "List a record's changes, newest first",
        "tags": ["Audit"],
        "parameters": [
            {"in": "path", "name": "entity", "required": True,
             "schema": {"type": "string"}},
            {"in": "path", "name": "id", "required": True,
             "schema": {"type": "string"}},
            before,
        ],
        "responses": {"200": JOURNAL_PAGE, **_error_refs(READ_ERRORS)},
    }})
    spec.path(path="/audit", operations={"get": {
        "operationId": "search_audit_log",
        "summary": "Search the change journal (tenant admins)",
        "tags": ["Audit"],
        "parameters": [
            _query_parameter("entity", "Entity API name."),
            _query_parameter("record_id", "Record id."),
            _query_parameter("actor", "User id of the actor."),
            _query_parameter("action", "Kind of change.",
                             type="string",
                             enum=["create", "update", "delete", "erase"]),
            _query_parameter("field", "Only changes of this field."),
            _query_parameter("since", "First day, YYYY-MM-DD (UTC).",
                             type="string", format="date"),
            _query_parameter("until", "Last day, YYYY-MM-DD (UTC).",
                             type="string", format="date"),
            _query_parameter("limit", "Entries per page.", type="integer",
                             minimum=1, maximum=200),
            before,
        ],
        "responses": {"200": JOURNAL_PAGE, **_error_refs(READ_ERRORS)},
    }})
    person = [
        _query_parameter("email", "E-mail address of the person."),
        _query_parameter("entity", "Entity of a record of the person."),
        _query_parameter("record_id", "Id of a record of the person."),
    ]
    spec.path(path="/personal-data", operations={"get": {
        "operationId": "export_personal_data",
        "summary": "Export every record of one person with its history (admins)",
        "tags": ["Audit"],
        "parameters": person,
        "responses": {
            "200": {"description": "The person's records and journal entries.",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
            **_error_refs(READ_ERRORS),
        },
    }})
    spec.path(path="/personal-data/erase", operations={"post": {
        "operationId": "erase_personal_data",
        "summary": "Blank the personal fields of one person's records (admins)",
        "tags": ["Audit"],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "properties": {
                "email": {"type": "string"}, "entity": {"type": "string"},
                "record_id": {"type": "string"},
            }},
        }}},
        "responses": {
            "200": _data_response("Records and fields erased, per entity.",
                                  {"type": "object"}),
            **_error_refs(WRITE_ERRORS),
        },
    }})


def _data_response(description: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["data"], "properties": {"data": data},
        }}},
    }


def to_json_values(value: Any) -> Any:
    """Replace values JSON cannot carry: decimals become numbers and dates
    become ISO strings, wherever apispec copied them from validators."""
    if isinstance(value, dict):
        return {key: to_json_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_values(item) for item in value]
    if isinstance(value, decimal.Decimal):
        return json_number(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return metadata_value_to_json(value)
    return value


def json_number(value: decimal.Decimal) -> int | float:
    """Return ``value`` as an int when whole, else as the nearest float."""
    return int(value) if value == value.to_integral_value() else float(value)
