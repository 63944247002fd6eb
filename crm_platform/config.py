"""Settings read from the environment and the data directory."""

from __future__ import annotations

import base64
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "metacrm-data"
#: Comma-separated ``id:base64key`` entries; the first key encrypts.
ENCRYPTION_KEYS_ENV = "METACRM_ENCRYPTION_KEYS"
#: Key file in the data directory, used when the variable is not set.
ENCRYPTION_KEYS_FILE = "encryption_keys"
#: Id of the key created in that file.
LOCAL_KEY_ID = "local"
#: Largest request body the app accepts, in bytes.
DEFAULT_MAX_CONTENT_LENGTH = 2 * 1024 * 1024
#: Tenant runtimes kept in memory by default. One takes about 1.5 MiB on
#: SQLite (docs/benchmarks.md), so 200 stay near 300 MiB.
DEFAULT_RUNTIME_CACHE_SIZE = 200
#: Days a closed tenant keeps its data before it may be purged.
DEFAULT_RETENTION_DAYS = 30


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
    #: Field encryption keys as ``METACRM_ENCRYPTION_KEYS`` writes them. When
    #: None, that variable or the data directory's key file is read.
    encryption_keys: str | None = field(default=None, repr=False)
    #: Days between closing a tenant and the earliest purge of its data.
    retention_days: int = DEFAULT_RETENTION_DAYS
    #: Tenant runtimes (compiled tables, schemas, SQLite connections) kept in
    #: memory; the least recently used one is dropped beyond this number.
    runtime_cache_size: int = DEFAULT_RUNTIME_CACHE_SIZE
    #: Comma-separated networks (``127.0.0.1/32,10.0.0.0/8``) that webhook
    #: URLs may reach although they are private, loopback, link-local or
    #: reserved; empty rejects every such address (``crm_platform.webhooks``).
    webhook_allowed_networks: str = ""
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
                    database_url=database_url,
                    retention_days=_retention_days_from_environment(),
                    runtime_cache_size=_runtime_cache_size_from_environment(),
                    webhook_allowed_networks=os.environ.get(
                        "METACRM_WEBHOOK_ALLOWED_NETWORKS", "").strip())


def _retention_days_from_environment() -> int:
    raw = os.environ.get("METACRM_RETENTION_DAYS", "").strip()
    if not raw:
        return DEFAULT_RETENTION_DAYS
    try:
        days = int(raw)
    except ValueError as err:
        raise ValueError(
            f"invalid METACRM_RETENTION_DAYS {raw!r}: use a whole number of days"
        ) from err
    if days < 0:
        raise ValueError(
            f"invalid METACRM_RETENTION_DAYS {raw!r}: use 0 or more days"
        )
    return days


def _runtime_cache_size_from_environment() -> int:
    raw = os.environ.get("METACRM_RUNTIME_CACHE_SIZE", "").strip()
    if not raw:
        return DEFAULT_RUNTIME_CACHE_SIZE
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"invalid METACRM_RUNTIME_CACHE_SIZE {raw!r}: use a whole number of "
            "tenants, 1 or more"
        )
    return int(raw)


def _read_or_create_secret(data_dir: Path) -> str:
    key_file = data_dir / "secret_key"
    if key_file.exists():
        return key_file.read_text(encoding="ascii").strip()
    secret = secrets.token_urlsafe(48)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secret)
    return secret


def encryption_keys(settings: Settings) -> tuple[str, str]:
    """Return the field encryption keys and where they came from.

    The keys are ``settings.encryption_keys``, else ``METACRM_ENCRYPTION_KEYS``,
    else the file ``encryption_keys`` in the data directory, which is created
    with one new key and mode 0600 on first use.
    """
    if settings.encryption_keys:
        return settings.encryption_keys, "Settings.encryption_keys"
    configured = os.environ.get(ENCRYPTION_KEYS_ENV, "").strip()
    if configured:
        return configured, ENCRYPTION_KEYS_ENV
    key_file = settings.data_dir / ENCRYPTION_KEYS_FILE
    if key_file.exists():
        log.info("%s is not set: using the key file %s", ENCRYPTION_KEYS_ENV, key_file)
        return key_file.read_text(encoding="ascii").strip(), str(key_file)
    return _create_key_file(key_file), str(key_file)


def _create_key_file(key_file: Path) -> str:
    """Write a new key to ``key_file`` with mode 0600 and warn that
    production should set ``METACRM_ENCRYPTION_KEYS`` instead."""
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")
    text = f"{LOCAL_KEY_ID}:{key}"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created the file since the check above.
        return key_file.read_text(encoding="ascii").strip()
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(text + "\n")
    log.warning(
        "%s is not set, so sensitive fields are encrypted with the new key file "
        "%s (key id %s). In production, set %s and keep the keys outside the "
        "data directory",
        ENCRYPTION_KEYS_ENV,
        key_file,
        LOCAL_KEY_ID,
        ENCRYPTION_KEYS_ENV,
    )
    return text
