"""Encryption of sensitive field values with AES-256-GCM.

Stored values have the form
``v1:<key id>:<urlsafe base64 of nonce + ciphertext>``.
Each value gets a random 96-bit nonce, and the associated data is the
qualified field name (``contact.national_id``), so a value copied into
another field fails to decrypt. Keys come from ``METACRM_ENCRYPTION_KEYS``
(see ``crm_platform.config.encryption_keys``): the first key encrypts, every
key decrypts, which lets ``metacrm keys rotate`` move values to a new key.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from metadata_engine.model import Entity, Field
from metadata_engine.sqltypes import install_cipher, installed_cipher

from .config import ENCRYPTION_KEYS_ENV, Settings, encryption_keys
from .errors import PlatformError

if TYPE_CHECKING:
    from .tenancy import TenantRuntime

log = logging.getLogger(__name__)

FORMAT_VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
#: Key ids are short names without colons, because a colon ends the id in a
#: stored value.
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class EncryptionError(PlatformError):
    """Raised when keys are misconfigured or a stored value cannot be
    decrypted. Messages name key ids and fields, never values or keys."""

    status = 500
    code = "encryption_error"


@dataclass(frozen=True)
class KeyRing:
    """The encryption keys of a process by id. The key ``active_id`` encrypts."""

    active_id: str
    keys: Mapping[str, AESGCM] = dataclass_field(repr=False)
    #: Where the keys came from, named in errors: a variable or a file.
    source: str = ENCRYPTION_KEYS_ENV

    @classmethod
    def parse(cls, text: str, source: str = ENCRYPTION_KEYS_ENV) -> KeyRing:
        """Parse comma-separated ``id:base64key`` entries of 32-byte keys."""
        keys: dict[str, AESGCM] = {}
        for position, entry in enumerate(text.split(","), start=1):
            entry = entry.strip()
            if not entry:
                continue
            key_id, key = _parse_entry(entry, position, source)
            if key_id in keys:
                raise EncryptionError(
                    f"key id {key_id!r} appears more than once in {source}: "
                    "give every key its own id"
                )
            keys[key_id] = AESGCM(key)
        if not keys:
            raise EncryptionError(
                f"{source} contains no key: set it to comma-separated "
                "'id:base64key' entries, for example the output of "
                "'metacrm keys generate'"
            )
        return cls(next(iter(keys)), MappingProxyType(keys), source)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self.keys)

    def encrypt(self, plaintext: str, context: str) -> str:
        """Encrypt ``plaintext`` with the active key, bound to ``context``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.keys[self.active_id].encrypt(
            nonce, plaintext.encode("utf-8"), context.encode("utf-8")
        )
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
        return f"{FORMAT_VERSION}:{self.active_id}:{body}"

    def decrypt(self, token: str, context: str) -> str:
        """Decrypt a stored value of the field named by ``context``.

        Text without the ``v1:`` prefix is returned as it is: it was stored
        before the field became sensitive, and ``metacrm keys rotate``
        encrypts it.
        """
        key_id = stored_key_id(token)
        if key_id is None:
            return token
        aead = self.keys.get(key_id)
        if aead is None:
            raise EncryptionError(
                f"a value of {context} is encrypted with key id {key_id!r}, "
                f"which is not configured: add that key to {ENCRYPTION_KEYS_ENV} "
                f"(the keys now come from {self.source})",
                details={"key_id": key_id, "field": context},
            )
        try:
            raw = base64.urlsafe_b64decode(token.split(":", 2)[2])
            plain = aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode("utf-8")
            )
        except (InvalidTag, ValueError, binascii.Error) as err:
            raise EncryptionError(
                f"a value of {context} failed to decrypt with key id {key_id!r}: "
                "it was changed in the database, copied from another field, or "
                "the key under that id is not the one that encrypted it",
                details={"key_id": key_id, "field": context},
            ) from err
        return plain.decode("utf-8")


def stored_key_id(token: str) -> str | None:
    """Return the key id of a stored value, or None for plaintext."""
    if not token.startswith(FORMAT_VERSION + ":"):
        return None
    parts = token.split(":", 2)
    return parts[1] if len(parts) == 3 else None


def _parse_entry(entry: str, position: int, source: str) -> tuple[str, bytes]:
    key_id, separator, encoded = entry.partition(":")
    key_id = key_id.strip()
    if not separator or not KEY_ID.match(key_id):
        raise EncryptionError(
            f"entry {position} of {source} is not 'id:base64key' with an id of "
            "1 to 32 letters, digits, '-' or '_': fix it, or replace it with a "
            "line from 'metacrm keys generate'"
        )
    try:
        key = base64.b64decode(_urlsafe(encoded.strip()), b"-_", validate=True)
    except (binascii.Error, ValueError) as err:
        raise EncryptionError(
            f"key {key_id!r} in {source} is not valid base64: generate a key "
            "with 'metacrm keys generate'"
        ) from err
    if len(key) != KEY_BYTES:
        raise EncryptionError(
            f"key {key_id!r} in {source} has {len(key)} bytes, not {KEY_BYTES}: "
            "generate a key with 'metacrm keys generate'"
        )
    return key_id, key


def _urlsafe(encoded: str) -> str:
    """Accept standard or URL-safe base64, with or without padding."""
    text = encoded.replace("+", "-").replace("/", "_").rstrip("=")
    return text + "=" * (-len(text) % 4)


def new_key_line(key_id: str | None = None) -> str:
    """Return a new ``id:base64key`` entry; the id defaults to the UTC time."""
    chosen = key_id or dt.datetime.now(dt.UTC).strftime("k%Y%m%d%H%M%S")
    if not KEY_ID.match(chosen):
        raise EncryptionError(
            f"invalid key id {chosen!r}: use 1 to 32 letters, digits, '-' or '_'"
        )
    key = base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")
    return f"{chosen}:{key}"


def install_key_ring(settings: Settings) -> KeyRing:
    """Read the keys of ``settings`` and make them the process's cipher."""
    text, source = encryption_keys(settings)
    ring = KeyRing.parse(text, source)
    install_cipher(ring)
    log.info(
        "field encryption keys loaded from %s: active key %s, %d key(s)",
        source,
        ring.active_id,
        len(ring.keys),
    )
    return ring


# Key status and rotation of stored values.

#: Label of values stored before their field became sensitive.
PLAINTEXT = "plaintext"
#: Rows re-encrypted per transaction by ``rotate_tenant``.
ROTATE_BATCH_SIZE = 500


def sensitive_fields(runtime: TenantRuntime) -> list[tuple[Entity, list[Field]]]:
    """Return each entity of the tenant that has sensitive fields, with them."""
    found = []
    for entity in runtime.definition.entities:
        fields = [field for field in entity.fields if field.sensitive]
        if fields:
            found.append((entity, fields))
    return found


def _raw(table: sa.Table, field: Field) -> sa.ColumnElement[str]:
    """Return the column as stored text, bypassing its decryption."""
    return sa.type_coerce(table.c[field.name], sa.Text())


def count_key_ids(runtime: TenantRuntime) -> Counter[str]:
    """Count the tenant's stored sensitive values by key id.

    Values stored in plaintext count under ``PLAINTEXT``. Every value is read,
    so the time grows with the number of stored values.
    """
    counts: Counter[str] = Counter()
    with runtime.engine.connect() as conn:
        for entity, fields in sensitive_fields(runtime):
            table = runtime.tables[entity.name]
            for field in fields:
                raw = _raw(table, field)
                statement = sa.select(raw).where(raw.is_not(None))
                for (value,) in conn.execute(statement):
                    counts[stored_key_id(value) or PLAINTEXT] += 1
    return counts


def _pending(
    table: sa.Table, fields: list[Field], active_id: str
) -> sa.ColumnElement[bool]:
    """Return the condition of rows with a value not under the active key."""
    prefix = f"{FORMAT_VERSION}:{active_id}:"
    return sa.or_(
        *(
            sa.and_(
                _raw(table, field).is_not(None),
                sa.not_(_raw(table, field).startswith(prefix, autoescape=True)),
            )
            for field in fields
        )
    )


def count_pending(runtime: TenantRuntime, ring: KeyRing) -> int:
    """Count the tenant's rows that hold a value not under the active key."""
    total = 0
    with runtime.engine.connect() as conn:
        for entity, fields in sensitive_fields(runtime):
            table = runtime.tables[entity.name]
            statement = (
                sa.select(sa.func.count())
                .select_from(table)
                .where(_pending(table, fields, ring.active_id))
            )
            total += conn.execute(statement).scalar_one()
    return total


def rotate_tenant(
    runtime: TenantRuntime,
    ring: KeyRing,
    progress: Callable[[int], None] | None = None,
    batch_size: int = ROTATE_BATCH_SIZE,
) -> int:
    """Re-encrypt every sensitive value of the tenant that is not under the
    active key, one transaction per batch of rows, and return the rows changed.

    ``ring`` must be the installed cipher, which encrypts the new values.
    Each batch commits on its own, so an interrupted run loses at most one
    batch and a new run continues with the rows still pending. A row whose
    value changed after it was read is left for the next run, so a
    concurrent edit is never overwritten. Versions and timestamps stay as
    they are, since the values do not change.
    """
    if installed_cipher() is not ring:
        raise EncryptionError(
            "rotation needs the installed key ring: start the platform first"
        )
    rotated = 0
    for entity, fields in sensitive_fields(runtime):
        rotated += _rotate_entity(runtime, entity, fields, ring, progress, batch_size)
    log.info(
        "re-encrypted %d rows of tenant %s with key %s",
        rotated,
        runtime.slug,
        ring.active_id,
    )
    return rotated


def _rotate_entity(
    runtime: TenantRuntime,
    entity: Entity,
    fields: list[Field],
    ring: KeyRing,
    progress: Callable[[int], None] | None,
    batch_size: int,
) -> int:
    table = runtime.tables[entity.name]
    pending = _pending(table, fields, ring.active_id)
    columns = [_raw(table, field) for field in fields]
    rotated = 0
    last_id = ""
    while True:
        with runtime.engine.begin() as conn:
            rows = conn.execute(
                sa.select(table.c.id, *columns)
                .where(pending, table.c.id > last_id)
                .order_by(table.c.id)
                .limit(batch_size)
            ).all()
            if not rows:
                return rotated
            for row in rows:
                rotated += _rotate_row(conn, table, entity, fields, ring, row)
        last_id = rows[-1][0]
        if progress is not None:
            progress(len(rows))


def _rotate_row(
    conn: sa.Connection,
    table: sa.Table,
    entity: Entity,
    fields: list[Field],
    ring: KeyRing,
    row: sa.Row[Any],
) -> int:
    """Re-encrypt one row's values that are not under the active key, only
    if they are still the values that were read."""
    record_id = row[0]
    stored: list[str | None] = list(row[1:])
    values: dict[str, str] = {}
    unchanged: list[sa.ColumnElement[bool]] = [table.c.id == record_id]
    for sensitive, token in zip(fields, stored, strict=True):
        if token is None or stored_key_id(token) == ring.active_id:
            continue
        context = f"{entity.name}.{sensitive.name}"
        values[sensitive.name] = ring.decrypt(token, context)
        unchanged.append(_raw(table, sensitive) == token)
    if not values:
        return 0
    result = conn.execute(table.update().where(*unchanged).values(**values))
    return result.rowcount
