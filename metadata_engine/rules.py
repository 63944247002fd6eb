"""Defaults of optional properties and fixed rules of metadata format version 1."""

from __future__ import annotations

#: Maximum length in characters of each text-like type, when a field sets none.
#: ``text`` and ``long_text`` accept ``max_length``, the others are fixed.
MAX_LENGTHS: dict[str, int] = {
    "text": 255,
    "long_text": 100_000,
    "email": 254,
    "phone": 40,
    "url": 2048,
}
PRECISION = 18
SCALE = 2
CURRENCY_CODE = "USD"
ON_DELETE = "restrict"
AUTO_NUMBER_DIGITS = 5
AUTO_NUMBER_PREFIX = ""
SECTION_COLUMNS = 2
PAGE_SIZE = 25
SORT: tuple[str, ...] = ("-created_at",)
DEFAULT_LOCALE = "en"
#: Name of the list view created for an entity that declares none.
LIST_VIEW_NAME = "all"
#: Number of fields after the title field in that default list view.
LIST_VIEW_EXTRA_COLUMNS = 5
#: Types that can be an entity's title field.
TITLE_TYPES = frozenset({"text", "email", "phone", "url", "auto_number"})
#: Prefixes that SQLite and PostgreSQL reserve for their own objects.
RESERVED_PREFIXES: tuple[str, ...] = ("sqlite_", "pg_")

#: URL parameters of list requests; a field with one of these names could not
#: be filtered on with ``?name=value``.
QUERY_PARAMETERS: frozenset[str] = frozenset(
    {"sort", "limit", "cursor", "count", "q", "view", "page", "offset", "lang"}
)

#: Path segments the web UI and API use under /t/<tenant>/, which an entity
#: name would collide with.
RESERVED_ENTITY_NAMES: frozenset[str] = frozenset(
    {
        "api", "login", "logout", "audit", "members", "operator", "access",
        "roles", "teams",
    }
)

DECIMAL_TYPES = frozenset({"decimal", "currency", "percent"})

#: Field type of each system column, as far as filtering and sorting go.
SYSTEM_COLUMN_TYPES: dict[str, str] = {
    "id": "text",
    "created_at": "datetime",
    "updated_at": "datetime",
    "created_by": "text",
    "updated_by": "text",
    "owner_id": "text",
    "version": "integer",
}
