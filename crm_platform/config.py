"""Settings read from the environment and the data directory."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATA_DIR = "metacrm-data"
#: Largest request body the app accepts, in bytes.
DEFAULT_MAX_CONTENT_LENGTH = 2 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Data locations, the session secret and request limits of one process."""

    data_dir: Path
    secret_key: str
    max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH
    #: Set to False only for tests that drive plain HTTP without a browser.
    session_cookie_secure: bool = False
    #: SQLAlchemy URL of a PostgreSQL database (``postgresql+psycopg://…``)
    #: that contains the control plane and every tenant, one schema each. When
    #: None, they are SQLite files in ``data_dir``. Left out of ``repr`` because
    #: the URL may contain a password.
    database_url: str | None = field(default=None, repr=False)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def control_db_path(self) -> Path:
        return self.data_dir / "control.sqlite"

    @property
    def tenants_dir(self) -> Path:
        return self.data_dir / "tenants"

    def tenant_db_path(self, slug: str) -> Path:
        return self.tenants_dir / f"{slug}.sqlite"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the data directory: the argument, ``METACRM_DATA_DIR``, or
    ``./metacrm-data``."""
    chosen = data_dir or os.environ.get("METACRM_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


def load_settings(data_dir: str | os.PathLike[str] | None = None) -> Settings:
    """Build settings, creating the data directory and a secret key if needed.

    The secret key comes from ``METACRM_SECRET_KEY`` or from the file
    ``secret_key`` in the data directory, which is created with mode 0600 on
    first use. ``METACRM_DATABASE_URL``, when set, moves the control plane
    and the tenants into that PostgreSQL database.
    """
    path = resolve_data_dir(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "tenants").mkdir(exist_ok=True)
    secret = os.environ.get("METACRM_SECRET_KEY") or _read_or_create_secret(path)
    max_length = int(
        os.environ.get("METACRM_MAX_CONTENT_LENGTH", DEFAULT_MAX_CONTENT_LENGTH)
    )
    database_url = os.environ.get("METACRM_DATABASE_URL", "").strip() or None
    return Settings(data_dir=path, secret_key=secret, max_content_length=max_length,
                    database_url=database_url)


def _read_or_create_secret(data_dir: Path) -> str:
    key_file = data_dir / "secret_key"
    if key_file.exists():
        return key_file.read_text(encoding="ascii").strip()
    secret = secrets.token_urlsafe(48)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secret)
    return secret
