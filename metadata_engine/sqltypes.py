"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Stores aware datetimes as UTC and returns them aware.

    SQLite has no time zone type, so values are kept as naive UTC there; on
    PostgreSQL the column is ``timestamp with time zone``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[dt.datetime]:
        return dt.datetime

    def process_bind_param(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: attach a time zone first")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class JSONList(sa.types.TypeDecorator[list[str]]):
    """A list of strings stored as JSON text, sorted for stable comparison.

    Stored as text on every backend so that ``contains`` filters can use a
    ``LIKE '%"value"%'`` match that needs no JSON functions.
    """

    impl = sa.Text()
    cache_ok = True

    @property
    def python_type(self) -> type[list[str]]:
        return list

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return json.dumps(sorted(set(value)), ensure_ascii=False)

    def process_result_value(self, value: Any, dialect: Dialect) -> list[str] | None:
        if value is None:
            return None
        result: list[str] = json.loads(value)
        return result


#: Largest precision whose scaled value fits SQLite's 64-bit integers.
SQLITE_EXACT_PRECISION = 18


class ExactDecimal(sa.types.TypeDecorator[decimal.Decimal]):
    """NUMERIC(precision, scale) that stays exact on SQLite too.

    SQLite keeps NUMERIC values as 8-byte floats, exact to about 15
    significant digits. For a precision of up to 18 this type stores the
    value times 10**scale as a 64-bit integer there, so sums, comparisons and
    sorting still work on the stored number. PostgreSQL gets a real NUMERIC.
    """

    impl = sa.Numeric
    cache_ok = True

    @property
    def python_type(self) -> type[decimal.Decimal]:
        return decimal.Decimal

    def __init__(self, precision: int, scale: int) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.precision = precision
        self.scale = scale

    def _scaled(self, dialect: Dialect) -> bool:
        return dialect.name == "sqlite" and self.precision <= SQLITE_EXACT_PRECISION

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if self._scaled(dialect):
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.Numeric(self.precision, self.scale))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or not self._scaled(dialect):
            return value
        number = decimal.Decimal(value).scaleb(self.scale)
        return int(number.to_integral_value(rounding=decimal.ROUND_HALF_EVEN))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if self._scaled(dialect):
            return decimal.Decimal(int(value)).scaleb(-self.scale)
        return decimal.Decimal(value).quantize(decimal.Decimal(1).scaleb(-self.scale))


class FieldCipher(Protocol):
    """Encrypts and decrypts the values of sensitive fields.

    ``context`` names the entity and field (``"contact.national_id"``), and
    an implementation binds each value to it, so that a value copied into
    another column fails to decrypt.
    """

    def encrypt(self, plaintext: str, context: str) -> str: ...

    def decrypt(self, token: str, context: str) -> str: ...


class CipherNotInstalled(RuntimeError):
    """Raised when a sensitive value is read or written before the platform
    installed a cipher with ``install_cipher``."""


_cipher: FieldCipher | None = None


def install_cipher(cipher: FieldCipher | None) -> None:
    """Set the cipher of every ``EncryptedText`` column in this process.

    The platform calls this once at start with its key ring. The last call
    wins, so two platforms in one process share the keys of the later one.
    """
    global _cipher
    _cipher = cipher


def installed_cipher() -> FieldCipher:
    """Return the installed cipher; raise ``CipherNotInstalled`` if none."""
    if _cipher is None:
        raise CipherNotInstalled(
            "a sensitive field was read or written, but no cipher is installed: "
            "start the platform (crm_platform.tenancy.Platform) first, or call "
            "metadata_engine.sqltypes.install_cipher"
        )
    return _cipher


class EncryptedText(sa.types.TypeDecorator[str]):
    """Text stored encrypted by the installed ``FieldCipher``.

    The column is TEXT on every backend, since ciphertext is longer than the
    field's own limit. Reads and writes convert transparently, but the
    database stores only ciphertext, so comparisons in SQL never match.
    """

    impl = sa.Text()
    cache_ok = True

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context

    @property
    def python_type(self) -> type[str]:
        return str

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return installed_cipher().encrypt(str(value), self.context)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return installed_cipher().decrypt(str(value), self.context)
