"""SQLite engines set up for a multi-threaded web server."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa

#: How long a writer waits for another writer's lock, in milliseconds.
BUSY_TIMEOUT_MS = 10_000


def create_sqlite_engine(path: str | os.PathLike[str]) -> sa.Engine:
    """Return an engine on the SQLite file ``path`` with foreign keys enforced,
    write-ahead logging (readers do not block the writer) and a busy timeout."""
    engine = sa.create_engine(
        f"sqlite:///{os.fspath(path)}",
        connect_args={"check_same_thread": False},
        pool_size=8,
        max_overflow=8,
    )
    sa.event.listen(engine, "connect", _configure_connection)
    return engine


def _configure_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # LIKE is case-insensitive for ASCII by default in SQLite; the contains
    # and startswith operators are case-sensitive, as on PostgreSQL.
    cursor.execute("PRAGMA case_sensitive_like = ON")
    cursor.close()
