"""In-app notifications: messages that automation rules and workflows leave
for members of a tenant, each read only by the member it is for.

A notification keeps its message in every locale of the definition, with the
record's values already filled in. It reads the same later even if the record
changes, and each member reads it in their own language.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from uuid_utils import uuid7

from metadata_engine.model import Text
from metadata_engine.tables import build_service_tables

from .errors import NotFound

_SERVICE_TABLES = sa.MetaData()
build_service_tables(_SERVICE_TABLES)
NOTIFICATIONS = _SERVICE_TABLES.tables["_notifications"]
#: Maximum number of notifications one page or API call returns.
PAGE_SIZE = 50


@dataclass(frozen=True)
class Notification:
    id: str
    created_at: dt.datetime
    entity: str | None
    record_id: str | None
    source: str | None
    message: Text
    read_at: dt.datetime | None

    def as_json(self, locale: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "entity": self.entity,
            "record_id": self.record_id,
            "source": self.source,
            "message": self.message.get(locale),
            "read": self.read_at is not None,
        }


def notify(
    conn: sa.Connection,
    user_ids: Iterable[str],
    message: Mapping[str, str],
    entity: str | None = None,
    record_id: str | None = None,
    source: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Leave ``message`` (locale to text) for each of ``user_ids`` in
    ``conn``'s transaction and return how many were left."""
    at = now or dt.datetime.now(dt.UTC)
    rows = [
        {
            "id": str(uuid7()),
            "user_id": user_id,
            "created_at": at,
            "entity": entity,
            "record_id": record_id,
            "source": source,
            "message": dict(message),
            "read_at": None,
        }
        for user_id in sorted(set(user_ids))
    ]
    if rows:
        conn.execute(NOTIFICATIONS.insert(), rows)
    return len(rows)


def for_user(
    conn: sa.Connection, user_id: str, unread_only: bool = False,
    limit: int = PAGE_SIZE,
) -> list[Notification]:
    """Return the newest notifications of ``user_id``."""
    query = (
        sa.select(NOTIFICATIONS)
        .where(NOTIFICATIONS.c.user_id == user_id)
        .order_by(NOTIFICATIONS.c.created_at.desc(), NOTIFICATIONS.c.id.desc())
        .limit(limit)
    )
    if unread_only:
        query = query.where(NOTIFICATIONS.c.read_at.is_(None))
    return [_notification(row) for row in conn.execute(query).mappings()]


def unread_count(conn: sa.Connection, user_id: str) -> int:
    query = sa.select(sa.func.count()).where(
        NOTIFICATIONS.c.user_id == user_id, NOTIFICATIONS.c.read_at.is_(None)
    )
    return int(conn.execute(query).scalar_one())


def mark_read(
    conn: sa.Connection, user_id: str, notification_id: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Mark one notification of ``user_id`` read, or all of them without an
    id. Another member's notification is reported as missing."""
    statement = (
        NOTIFICATIONS.update()
        .where(NOTIFICATIONS.c.user_id == user_id, NOTIFICATIONS.c.read_at.is_(None))
        .values(read_at=now or dt.datetime.now(dt.UTC))
    )
    if notification_id is not None:
        statement = statement.where(NOTIFICATIONS.c.id == notification_id)
    count = conn.execute(statement).rowcount
    if notification_id is not None and count == 0:
        exists = sa.select(NOTIFICATIONS.c.id).where(
            NOTIFICATIONS.c.id == notification_id, NOTIFICATIONS.c.user_id == user_id
        )
        if conn.execute(exists).first() is None:
            raise NotFound(f"notification {notification_id!r} does not exist")
    return int(count)


def _notification(row: sa.RowMapping) -> Notification:
    message = row["message"]
    return Notification(
        id=row["id"],
        created_at=row["created_at"],
        entity=row["entity"],
        record_id=row["record_id"],
        source=row["source"],
        message=Text.of(message if isinstance(message, Mapping) else str(message)),
        read_at=row["read_at"],
    )
