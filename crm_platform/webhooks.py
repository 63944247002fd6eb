"""Outgoing webhooks: endpoints, the outbox and its delivery.

A tenant registers named endpoints (``_webhook_endpoints``: a URL and a
signing secret stored encrypted with the platform's key ring). Writers call
``enqueue`` inside their own transaction, which adds a row to
``_webhook_outbox``, so a rolled-back write sends nothing and a committed one
stays queued until it is delivered or fails for good. ``deliver_due`` (run by
``crm_platform.worker``) claims due rows one at a time with a lease, POSTs
them, and writes every attempt to ``_webhook_deliveries``, the delivery log.

Each request is signed: ``X-MetaCRM-Signature: sha256=<hex>`` is the
HMAC-SHA256, keyed with the endpoint's secret (its UTF-8 bytes), of
``"<X-MetaCRM-Timestamp>.<body>"``. ``X-MetaCRM-Delivery`` is the outbox row's
id, the same on every retry, so receivers can drop duplicates. Delivery is at
least once: a worker that dies after the receiver responded, but before it
recorded the response, leaves the row to be sent again.

``crm_platform.webhook_http`` checks URLs and addresses and sends the
request: http or https only, no private, loopback, link-local or reserved
address unless ``Settings.webhook_allowed_networks`` allows it, and no
redirect followed.

This module defines its tables without importing the rest of the platform at
load time, so that ``metadata_engine.tables`` may import it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import random
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from uuid_utils import uuid7

from metadata_engine.tables import build_service_tables

from .errors import Conflict, NotFound, RecordInvalid
from .webhook_http import (
    USER_AGENT,
    DeliveryPolicy,
    Network,
    Outcome,
    check_url,
    post,
    sign,
)

if TYPE_CHECKING:
    from .config import Settings
    from .crypto import KeyRing
    from .tenancy import TenantRuntime

log = logging.getLogger(__name__)

ENDPOINT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: Names that API paths under ``/webhooks/`` use for other things.
RESERVED_NAMES = frozenset({"deliveries", "outbox"})
EVENT_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,120}$")
#: Statuses of an outbox row.
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
#: Statuses of a delivery log row: the attempt's outcome, or ``skipped`` when
#: ``enqueue`` named an unknown or inactive endpoint and queued nothing.
RETRY, SKIPPED = "retry", "skipped"
#: Bytes of a secret before base64 encoding (256 bits).
SECRET_BYTES = 32


# Tables


_TABLES = sa.MetaData()
build_service_tables(_TABLES)
ENDPOINTS = _TABLES.tables["_webhook_endpoints"]
OUTBOX = _TABLES.tables["_webhook_outbox"]
DELIVERIES = _TABLES.tables["_webhook_deliveries"]
WEBHOOK_TABLES = (ENDPOINTS, OUTBOX, DELIVERIES)


# Records read by callers


@dataclass(frozen=True)
class Endpoint:
    """A registered endpoint, without its secret."""

    name: str
    url: str
    active: bool
    created_at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "active": self.active,
                "created_at": utc_text(self.created_at)}


@dataclass(frozen=True)
class Attempt:
    """One row of the delivery log."""

    id: str
    outbox_id: str | None
    endpoint: str
    event: str
    attempt: int | None
    status: str
    status_code: int | None
    duration_ms: int | None
    error: str | None
    at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "delivery_id": self.outbox_id, "endpoint": self.endpoint,
            "event": self.event, "attempt": self.attempt, "status": self.status,
            "status_code": self.status_code, "duration_ms": self.duration_ms,
            "error": self.error, "at": utc_text(self.at),
        }


@dataclass(frozen=True)
class Delivery:
    """One outbox row: an event for one endpoint and its delivery state."""

    id: str
    endpoint: str
    event: str
    status: str
    attempts: int
    created_at: dt.datetime
    next_attempt_at: dt.datetime
    last_error: str | None
    delivered_at: dt.datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "endpoint": self.endpoint, "event": self.event,
            "status": self.status, "attempts": self.attempts,
            "created_at": utc_text(self.created_at),
            "next_attempt_at": utc_text(self.next_attempt_at),
            "last_error": self.last_error,
            "delivered_at": utc_text(self.delivered_at),
        }


def utc_text(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_id() -> str:
    return str(uuid7())


# Managing endpoints


def _secret_context(name: str) -> str:
    """Return the associated data of an endpoint's encrypted secret, so that a
    secret copied to another endpoint's row fails to decrypt."""
    return f"_webhook_endpoints.{name}.secret"


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def _check_name(name: str) -> None:
    if not ENDPOINT_NAME.match(name) or name in RESERVED_NAMES:
        reason = ("use 1 to 63 lower-case letters, digits and underscores, "
                  "starting with a letter")
        if name in RESERVED_NAMES:
            reason = f"{name!r} is reserved: choose another name"
        raise RecordInvalid(f"invalid webhook endpoint name {name!r}: {reason}",
                            details={"name": [reason]})


def _endpoint_from(row: Mapping[Any, Any]) -> Endpoint:
    return Endpoint(name=row["name"], url=row["url"], active=bool(row["active"]),
                    created_at=row["created_at"])


def add_endpoint(
    engine: sa.Engine, ring: KeyRing, name: str, url: str,
    allowed: Iterable[Network] = (),
) -> tuple[Endpoint, str]:
    """Register an active endpoint and return it with its new secret, which
    is stored only encrypted: show it to the caller once."""
    _check_name(name)
    check_url(url, allowed)
    secret = new_secret()
    row = {"id": _new_id(), "name": name, "url": url, "active": True,
           "secret": ring.encrypt(secret, _secret_context(name)),
           "created_at": _now()}
    with engine.begin() as conn:
        exists = conn.execute(sa.select(ENDPOINTS.c.id)
                              .where(ENDPOINTS.c.name == name)).first()
        if exists is not None:
            raise Conflict(
                f"webhook endpoint {name!r} already exists: remove it first or "
                "choose another name", details={"name": ["already exists"]},
            )
        conn.execute(ENDPOINTS.insert().values(row))
    log.info("added webhook endpoint %s", name)
    return _endpoint_from(row), secret


def list_endpoints(engine: sa.Engine) -> list[Endpoint]:
    columns = [ENDPOINTS.c.name, ENDPOINTS.c.url, ENDPOINTS.c.active,
               ENDPOINTS.c.created_at]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*columns).order_by(ENDPOINTS.c.name))
        return [_endpoint_from(row) for row in rows.mappings()]


def get_endpoint(engine: sa.Engine, name: str) -> Endpoint:
    for endpoint in list_endpoints(engine):
        if endpoint.name == name:
            return endpoint
    raise _missing_endpoint(name)


def _missing_endpoint(name: str) -> NotFound:
    return NotFound(f"webhook endpoint {name!r} not found: list the endpoints "
                    "with 'metacrm webhook list'")


def remove_endpoint(engine: sa.Engine, name: str, now: dt.datetime | None = None
                    ) -> int:
    """Delete an endpoint and mark its pending deliveries failed; returns how
    many were pending. The delivery log keeps its rows."""
    with engine.begin() as conn:
        deleted = conn.execute(ENDPOINTS.delete().where(ENDPOINTS.c.name == name))
        if deleted.rowcount == 0:
            raise _missing_endpoint(name)
        abandoned = conn.execute(
            OUTBOX.update()
            .where(OUTBOX.c.endpoint == name, OUTBOX.c.status == PENDING)
            .values(status=FAILED, lease_until=None,
                    last_error="the endpoint was removed")
        ).rowcount
    log.info("removed webhook endpoint %s; %d pending deliveries marked failed",
             name, abandoned)
    return abandoned


def rotate_secret(engine: sa.Engine, ring: KeyRing, name: str) -> str:
    """Give an endpoint a new secret and return it. Requests sent from then
    on, including retries, are signed with the new secret."""
    secret = new_secret()
    with engine.begin() as conn:
        changed = conn.execute(
            ENDPOINTS.update().where(ENDPOINTS.c.name == name)
            .values(secret=ring.encrypt(secret, _secret_context(name)))
        )
    if changed.rowcount == 0:
        raise _missing_endpoint(name)
    log.info("rotated the secret of webhook endpoint %s", name)
    return secret


def set_active(engine: sa.Engine, name: str, active: bool) -> Endpoint:
    """Activate or deactivate an endpoint. Deliveries queued for an inactive
    endpoint wait in the outbox and are sent once it is active again."""
    with engine.begin() as conn:
        changed = conn.execute(
            ENDPOINTS.update().where(ENDPOINTS.c.name == name).values(active=active)
        )
    if changed.rowcount == 0:
        raise _missing_endpoint(name)
    log.info("webhook endpoint %s is now %s", name,
             "active" if active else "inactive")
    return get_endpoint(engine, name)


def reencrypt_secrets(engine: sa.Engine, ring: KeyRing) -> int:
    """Encrypt again, with the ring's active key, every endpoint secret that
    another key encrypted, and return how many changed. A secret rotated
    meanwhile is left as it is."""
    from .crypto import stored_key_id

    changed = 0
    with engine.begin() as conn:
        rows = conn.execute(sa.select(ENDPOINTS.c.name, ENDPOINTS.c.secret)).all()
        for name, token in rows:
            if stored_key_id(token) == ring.active_id:
                continue
            context = _secret_context(name)
            fresh = ring.encrypt(ring.decrypt(token, context), context)
            result = conn.execute(
                ENDPOINTS.update()
                .where(ENDPOINTS.c.name == name, ENDPOINTS.c.secret == token)
                .values(secret=fresh)
            )
            changed += result.rowcount
    if changed:
        log.info("re-encrypted %d webhook secrets with key %s", changed,
                 ring.active_id)
    return changed


def endpoint_secret(engine: sa.Engine, ring: KeyRing, name: str) -> str:
    """Return an endpoint's secret, decrypted."""
    with engine.connect() as conn:
        token = conn.execute(sa.select(ENDPOINTS.c.secret)
                             .where(ENDPOINTS.c.name == name)).scalar()
    if token is None:
        raise _missing_endpoint(name)
    return ring.decrypt(token, _secret_context(name))


# Queueing


def enqueue(
    conn: sa.Connection, endpoint_name: str, event: str, payload: Any,
    journal_seq: int | None = None, now: dt.datetime | None = None,
) -> str | None:
    """Queue ``payload`` for ``endpoint_name`` in the caller's transaction
    and return the outbox row's id.

    An unknown or inactive endpoint queues nothing: the call logs a warning,
    writes a ``skipped`` row to the delivery log and returns None, so that a
    missing endpoint never blocks the write that triggered the event.
    ``payload`` is stored as JSON: dates and times become ISO 8601 text and
    decimals become strings, so that no digit is lost.
    """
    moment = now or _now()
    if not EVENT_NAME.match(event):
        raise RecordInvalid(
            f"invalid webhook event name {event!r}: use 1 to 120 letters, digits, "
            "'.', '_', ':' or '-'", details={"event": ["invalid event name"]},
        )
    payload = json.loads(json.dumps(payload, default=_json_default))
    active = conn.execute(sa.select(ENDPOINTS.c.active)
                          .where(ENDPOINTS.c.name == endpoint_name)).scalar()
    if not active:
        reason = "unknown" if active is None else "inactive"
        log.warning("webhook event %s for the %s endpoint %s was not queued",
                    event, reason, endpoint_name)
        conn.execute(DELIVERIES.insert().values(
            id=_new_id(), outbox_id=None, endpoint=endpoint_name[:63], event=event,
            attempt=None, status=SKIPPED, status_code=None, duration_ms=None,
            error=f"the endpoint is {reason}, so the event was not queued",
            at=moment,
        ))
        return None
    outbox_id = _new_id()
    conn.execute(OUTBOX.insert().values(
        id=outbox_id, endpoint=endpoint_name, event=event, payload=payload,
        journal_seq=journal_seq, created_at=moment, status=PENDING, attempts=0,
        next_attempt_at=moment, lease_until=None, last_error=None,
        delivered_at=None,
    ))
    return outbox_id


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return utc_text(value.astimezone(dt.UTC) if value.tzinfo else value)
    if isinstance(value, dt.date | decimal.Decimal | uuid.UUID):
        return str(value)
    raise TypeError(
        f"webhook payload value {value!r} of type {type(value).__name__} is not "
        "JSON-serializable: convert it to a string, number, list or object"
    )


# Claiming and delivering


@dataclass
class DeliveryCounts:
    """Counts of the attempts of one ``deliver_due`` call, by outcome."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def attempted(self) -> int:
        return self.delivered + self.retried + self.failed

    def add(self, other: DeliveryCounts) -> None:
        self.delivered += other.delivered
        self.retried += other.retried
        self.failed += other.failed


@dataclass(frozen=True)
class _Claim:
    row: Mapping[str, Any]
    url: str
    secret_token: str
    lease_until: dt.datetime


def _due(now: dt.datetime) -> sa.Select[Any]:
    """Select the ids of due rows of active endpoints, oldest first."""
    join = OUTBOX.join(ENDPOINTS, ENDPOINTS.c.name == OUTBOX.c.endpoint)
    return (
        sa.select(OUTBOX.c.id)
        .select_from(join)
        .where(
            OUTBOX.c.status == PENDING,
            OUTBOX.c.next_attempt_at <= now,
            sa.or_(OUTBOX.c.lease_until.is_(None), OUTBOX.c.lease_until <= now),
            ENDPOINTS.c.active.is_(True),
        )
        .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id)
        .limit(1)
    )


def claim_next(engine: sa.Engine, now: dt.datetime, policy: DeliveryPolicy
               ) -> _Claim | None:
    """Lease the oldest due row to this worker and count the attempt.

    On PostgreSQL, ``FOR UPDATE SKIP LOCKED`` lets concurrent workers pass
    over the row another one is claiming. SQLite has no row locks, so the
    claim is one UPDATE that repeats the due and lease conditions: it takes
    the database's write lock at once, and a second worker waits for it and
    then finds the row leased.
    """
    lease_until = now + dt.timedelta(seconds=policy.lease)
    lease_free = sa.or_(OUTBOX.c.lease_until.is_(None), OUTBOX.c.lease_until <= now)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            query = _due(now).with_for_update(of=OUTBOX, skip_locked=True)
            outbox_id = conn.execute(query).scalar()
            if outbox_id is None:
                return None
            condition = OUTBOX.c.id == outbox_id
        else:
            condition = OUTBOX.c.id == _due(now).scalar_subquery()
        claimed = conn.execute(
            OUTBOX.update()
            .where(condition, OUTBOX.c.status == PENDING, lease_free)
            .values(lease_until=lease_until, attempts=OUTBOX.c.attempts + 1)
            .returning(OUTBOX.c.id)
        ).scalar()
        if claimed is None:
            return None
        return _read_claim(conn, claimed, lease_until)


def _read_claim(conn: sa.Connection, outbox_id: str, lease_until: dt.datetime
                ) -> _Claim:
    """Read a row just claimed, with its endpoint, and warn if an earlier
    claim ended without recording its attempt (a worker that died)."""
    join = OUTBOX.join(ENDPOINTS, ENDPOINTS.c.name == OUTBOX.c.endpoint)
    row = conn.execute(
        sa.select(OUTBOX, ENDPOINTS.c.url, ENDPOINTS.c.secret.label("secret"))
        .select_from(join).where(OUTBOX.c.id == outbox_id)
    ).mappings().one()
    logged = conn.execute(
        sa.select(sa.func.count()).select_from(DELIVERIES)
        .where(DELIVERIES.c.outbox_id == outbox_id)
    ).scalar_one()
    if logged < row["attempts"] - 1:
        log.warning("claimed webhook delivery %s again: an earlier attempt "
                    "ended without a result, so its lease expired", outbox_id)
    return _Claim(dict(row), row["url"], row["secret"], lease_until)


def deliver_due(
    target: TenantRuntime | sa.Engine,
    settings: Settings,
    now: dt.datetime | None = None,
    limit: int = 100,
    *,
    ring: KeyRing | None = None,
    policy: DeliveryPolicy | None = None,
    should_stop: Callable[[], bool] | None = None,
    rng: random.Random | None = None,
) -> DeliveryCounts:
    """Send up to ``limit`` due deliveries of one tenant, one at a time.

    ``now`` decides what is due and stamps the requests and the log. Without
    it, the clock is read again before each claim, so that the lease of the
    last row of a slow run still starts when its request does.
    ``should_stop`` is checked between deliveries, so a stopping worker
    finishes the request in flight and leaves the rest pending. ``ring``
    defaults to the keys that ``settings`` name.
    """
    engine = target if isinstance(target, sa.Engine) else target.engine
    slug = None if isinstance(target, sa.Engine) else target.slug
    policy = policy or DeliveryPolicy.from_settings(settings)
    ring = ring or _key_ring(settings)
    counts = DeliveryCounts()
    for _ in range(limit):
        if should_stop is not None and should_stop():
            break
        moment = now or _now()
        claim = claim_next(engine, moment, policy)
        if claim is None:
            break
        status = _deliver(engine, ring, claim, moment, policy, slug, rng)
        if status == DELIVERED:
            counts.delivered += 1
        elif status == FAILED:
            counts.failed += 1
        else:
            counts.retried += 1
    return counts


def _key_ring(settings: Settings) -> KeyRing:
    from .config import encryption_keys
    from .crypto import KeyRing

    return KeyRing.parse(*encryption_keys(settings))


def request_body(row: Mapping[str, Any], tenant: str | None) -> bytes:
    """Return the JSON document sent for an outbox row."""
    document = {
        "id": row["id"], "event": row["event"], "tenant": tenant,
        "created_at": utc_text(row["created_at"]), "journal_seq": row["journal_seq"],
        "data": row["payload"],
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _deliver(
    engine: sa.Engine, ring: KeyRing, claim: _Claim, now: dt.datetime,
    policy: DeliveryPolicy, tenant: str | None, rng: random.Random | None,
) -> str:
    """Send one claimed row and record the outcome; returns the row's new
    status, or ``retry``."""
    from .crypto import EncryptionError

    row = claim.row
    try:
        secret = ring.decrypt(claim.secret_token, _secret_context(row["endpoint"]))
    except EncryptionError as err:
        result = Outcome(None, err.message, 0)
    else:
        body = request_body(row, tenant)
        timestamp = str(int(now.timestamp()))
        headers = {
            "Content-Type": "application/json", "User-Agent": USER_AGENT,
            "X-MetaCRM-Event": row["event"], "X-MetaCRM-Delivery": row["id"],
            "X-MetaCRM-Timestamp": timestamp,
            "X-MetaCRM-Signature": sign(secret, timestamp, body),
        }
        result = post(claim.url, headers, body, policy)
    return _record(engine, claim, result, now, policy, rng)


def _record(
    engine: sa.Engine, claim: _Claim, result: Outcome, now: dt.datetime,
    policy: DeliveryPolicy, rng: random.Random | None,
) -> str:
    row = claim.row
    attempt = int(row["attempts"])
    if result.ok:
        status = DELIVERED
        values: dict[str, Any] = {"status": DELIVERED, "delivered_at": now,
                                  "last_error": None}
    elif result.final or attempt >= policy.max_attempts:
        status = FAILED
        values = {"status": FAILED, "last_error": result.error}
    else:
        status = RETRY
        delay = policy.retry_delay(attempt, rng)
        values = {"next_attempt_at": now + dt.timedelta(seconds=delay),
                  "last_error": result.error}
    with engine.begin() as conn:
        # Only the worker that holds the lease changes the row: if the lease
        # ran out and another worker claimed the row, that worker records it.
        conn.execute(
            OUTBOX.update()
            .where(OUTBOX.c.id == row["id"],
                   OUTBOX.c.lease_until == claim.lease_until)
            .values(lease_until=None, **values)
        )
        conn.execute(DELIVERIES.insert().values(
            id=_new_id(), outbox_id=row["id"], endpoint=row["endpoint"],
            event=row["event"], attempt=attempt, status=status,
            status_code=result.status_code, duration_ms=result.duration_ms,
            error=result.error, at=now,
        ))
    _log_outcome(row, attempt, status, result)
    return status


def _log_outcome(row: Mapping[str, Any], attempt: int, status: str,
                 result: Outcome) -> None:
    if status == DELIVERED:
        log.info("delivered webhook %s (%s) to %s on attempt %d", row["id"],
                 row["event"], row["endpoint"], attempt)
    elif status == RETRY:
        log.warning("webhook %s to %s failed on attempt %d, will retry: %s",
                    row["id"], row["endpoint"], attempt, result.error)
    else:
        log.error("webhook %s to %s failed for good on attempt %d: %s",
                  row["id"], row["endpoint"], attempt, result.error)


# Reading the outbox and the log


def list_attempts(engine: sa.Engine, failed_only: bool = False, limit: int = 50
                  ) -> list[Attempt]:
    """Return the newest delivery log rows first; ``failed_only`` keeps the
    attempts that did not deliver (retried, failed and skipped)."""
    query = sa.select(DELIVERIES).order_by(DELIVERIES.c.at.desc(),
                                           DELIVERIES.c.id.desc()).limit(limit)
    if failed_only:
        query = query.where(DELIVERIES.c.status != DELIVERED)
    with engine.connect() as conn:
        return [Attempt(**row) for row in conn.execute(query).mappings()]


def list_outbox(engine: sa.Engine, status: str | None = None, limit: int = 50
                ) -> list[Delivery]:
    """Return outbox rows, newest first, optionally of one status."""
    columns = [OUTBOX.c[name] for name in Delivery.__dataclass_fields__]
    query = sa.select(*columns).order_by(OUTBOX.c.created_at.desc(),
                                         OUTBOX.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(OUTBOX.c.status == status)
    with engine.connect() as conn:
        return [Delivery(**row) for row in conn.execute(query).mappings()]


def retry_delivery(engine: sa.Engine, delivery_id: str,
                   now: dt.datetime | None = None) -> None:
    """Queue a failed outbox row again with a fresh count of attempts."""
    with engine.begin() as conn:
        changed = conn.execute(
            OUTBOX.update()
            .where(OUTBOX.c.id == delivery_id, OUTBOX.c.status == FAILED)
            .values(status=PENDING, attempts=0, next_attempt_at=now or _now(),
                    lease_until=None)
        ).rowcount
    if changed == 0:
        raise NotFound(f"failed webhook delivery {delivery_id!r} not found: only "
                       "deliveries with the status failed can be retried")
    log.info("queued failed webhook delivery %s again", delivery_id)
