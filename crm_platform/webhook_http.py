"""The HTTP side of webhook delivery: which addresses the worker may reach,
the retry policy, and one signed POST.

``check_url`` accepts absolute http and https URLs without credentials.
``post`` resolves the host and rejects the request if any of its addresses is
private, loopback, link-local, reserved or otherwise not global, unless it
lies in ``DeliveryPolicy.allowed``. It then connects to the checked address
itself, so a second DNS answer cannot redirect the request. It follows no
redirect and reads at most ``max_response_bytes`` of the response.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import random
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import RecordInvalid

if TYPE_CHECKING:
    from .config import Settings

MAX_URL_LENGTH = 2000
USER_AGENT = "MetaCRM-Webhooks/1"
#: Characters of a receiver's error or redirect target kept in the log.
MAX_ERROR_LENGTH = 500


# Checking URLs and addresses


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str) -> tuple[Network, ...]:
    """Parse ``Settings.webhook_allowed_networks``: comma-separated addresses
    or CIDR networks."""
    networks: list[Network] = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as err:
            raise ValueError(
                f"invalid network {entry!r} in METACRM_WEBHOOK_ALLOWED_NETWORKS: "
                "use comma-separated addresses or CIDR networks such as "
                "127.0.0.1/32"
            ) from err
    return tuple(networks)


def address_problem(address: Address, allowed: Iterable[Network]) -> str | None:
    """Return why the worker may not connect to ``address``, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return None
    if address.is_global and not address.is_multicast:
        return None
    return (
        f"address {str(address)!r} is private, loopback, link-local or reserved: "
        "use a public address, or add it to METACRM_WEBHOOK_ALLOWED_NETWORKS"
    )


def check_url(url: str, allowed: Iterable[Network] = ()) -> urllib.parse.SplitResult:
    """Return ``url`` split, or raise ``RecordInvalid`` if it is not an
    absolute http or https URL, carries credentials, or names a literal
    address that ``address_problem`` rejects. Host names are checked when
    the worker resolves them."""
    def invalid(reason: str) -> RecordInvalid:
        return RecordInvalid(f"invalid webhook URL {url!r}: {reason}",
                             details={"url": [reason]})

    if len(url) > MAX_URL_LENGTH:
        raise invalid(f"use at most {MAX_URL_LENGTH} characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise invalid(f"it cannot be parsed ({err})") from err
    if parts.scheme not in ("http", "https"):
        raise invalid("use an http:// or https:// URL")
    if not parts.hostname:
        raise invalid("add the receiver's host name")
    if parts.username is not None or parts.password is not None:
        raise invalid("remove the user name and password; receivers check the "
                      "signature header instead")
    if port == 0:
        raise invalid("use a port between 1 and 65535")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return parts
    problem = address_problem(literal, allowed)
    if problem is not None:
        raise invalid(problem)
    return parts


# Delivery policy and the HTTP request


@dataclass(frozen=True)
class DeliveryPolicy:
    """Timeouts, retries and leases of the worker.

    The delays before retries grow as ``base_delay * 2 ** (attempt - 1)``,
    capped at ``max_delay``, plus up to ``jitter`` of that delay at random so
    that many failed rows do not come due at the same moment. With the
    defaults, the ten attempts of a delivery spread over 4.3 to 5.3 hours.
    """

    #: Seconds that connecting, sending and each read may take.
    timeout: float = 10.0
    #: Seconds that reading the whole response may take.
    read_deadline: float = 30.0
    max_attempts: int = 10
    base_delay: float = 30.0
    max_delay: float = 6 * 3600.0
    jitter: float = 0.25
    #: Seconds a claimed row stays with its worker: longer than one request
    #: can take, so that no second worker sends it while the first does.
    lease: float = 300.0
    #: Bytes of the response body read before the connection is closed.
    max_response_bytes: int = 64 * 1024
    #: Networks allowed although not global (``Settings``).
    allowed: tuple[Network, ...] = field(default=())

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(allowed=parse_networks(settings.webhook_allowed_networks))

    def retry_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the seconds to wait after failed attempt number ``attempt``."""
        delay = min(self.max_delay, self.base_delay * 2 ** max(attempt - 1, 0))
        return delay + delay * self.jitter * (rng or random).random()


@dataclass(frozen=True)
class Outcome:
    """The result of one HTTP attempt. ``final`` marks an error that retrying
    cannot fix, such as an address the policy rejects."""

    status_code: int | None
    error: str | None
    duration_ms: int
    final: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to an address checked beforehand, so that a second
    DNS lookup cannot lead it elsewhere."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port),
                                             self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to a checked address that verifies the
    certificate against the URL's host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Return the ``X-MetaCRM-Signature`` value of a request."""
    message = timestamp.encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def resolve(host: str, port: int, policy: DeliveryPolicy) -> str:
    """Return the address to connect to for ``host``; raise ``PermissionError``
    if any of its addresses is rejected, ``OSError`` if it does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    for text in addresses:
        problem = address_problem(ipaddress.ip_address(text.split("%")[0]),
                                  policy.allowed)
        if problem is not None:
            raise PermissionError(f"host {host!r}: {problem}")
    return addresses[0]


def post(url: str, headers: Mapping[str, str], body: bytes,
         policy: DeliveryPolicy) -> Outcome:
    """POST ``body`` to ``url`` once, following no redirect."""
    started = time.monotonic()

    def outcome(code: int | None, error: str | None, final: bool = False) -> Outcome:
        elapsed = round((time.monotonic() - started) * 1000)
        return Outcome(code, error and error[:MAX_ERROR_LENGTH], elapsed, final)

    try:
        parts = check_url(url, policy.allowed)
    except RecordInvalid as err:
        return outcome(None, err.message, final=True)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    try:
        address = resolve(host, port, policy)
    except PermissionError as err:
        return outcome(None, str(err), final=True)
    except OSError as err:
        return outcome(None, f"host {host!r} did not resolve: {err}")
    kind = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
    connection = kind(host, port, address, policy.timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        connection.request("POST", target, body=body, headers=dict(headers))
        response = connection.getresponse()
        _read_limited(response, policy, started)
    except TimeoutError as err:
        return outcome(None, f"timed out after {policy.timeout:g} s: {err}")
    except (OSError, http.client.HTTPException) as err:
        return outcome(None, f"request failed: {type(err).__name__}: {err}")
    finally:
        connection.close()
    error = None
    if not 200 <= response.status < 300:
        error = f"HTTP {response.status} {response.reason}"
        location = response.getheader("Location")
        if 300 <= response.status < 400 and location:
            error += (f"; redirects are not followed, so point the endpoint at "
                      f"{location!r} if that is the receiver")
    return outcome(response.status, error)


def _read_limited(response: http.client.HTTPResponse, policy: DeliveryPolicy,
                  started: float) -> None:
    """Read up to ``max_response_bytes`` of the body within ``read_deadline``."""
    remaining = policy.max_response_bytes
    while remaining > 0:
        if time.monotonic() - started > policy.read_deadline:
            raise TimeoutError(
                f"the response took longer than {policy.read_deadline:g} s"
            )
        chunk = response.read(min(8192, remaining))
        if not chunk:
            return
        remaining -= len(chunk)
