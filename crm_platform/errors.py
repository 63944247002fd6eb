"""Exceptions of the platform, each mapped to one HTTP status and code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class PlatformError(Exception):
    """Base class: an error the API and UI report to the user as it is."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})


class BadQuery(PlatformError):
    """Raised when a list request has an invalid filter, sort or cursor."""

    code = "invalid_query"


class Unauthorized(PlatformError):
    """Raised when a request has no valid credentials."""

    status = 401
    code = "unauthorized"


class Forbidden(PlatformError):
    """Raised when the user is not allowed to perform the requested action."""

    status = 403
    code = "forbidden"


class NotFound(PlatformError):
    """Raised when a tenant, entity or record does not exist for this user.

    The same error is raised whether the thing is missing or belongs to
    another tenant, so that responses never reveal what exists elsewhere.
    """

    status = 404
    code = "not_found"


class Conflict(PlatformError):
    """Raised when a write collides with existing data (unique values,
    records that still refer to the one being deleted)."""

    status = 409
    code = "conflict"


class VersionConflict(PlatformError):
    """Raised when an update names a record version that is no longer current."""

    status = 412
    code = "version_conflict"


class RecordInvalid(PlatformError):
    """Raised when input fails validation; ``details`` maps field to messages."""

    status = 422
    code = "validation_failed"


class PayloadTooLarge(PlatformError):
    """Raised when a request body is over the configured limit."""

    status = 413
    code = "payload_too_large"


class TenantError(PlatformError):
    """Raised when a tenant cannot be created, found or changed as asked."""

    code = "tenant_error"


class UnsafeChange(TenantError):
    """Raised when applying a definition would drop or change stored data."""

    status = 409
    code = "unsafe_change"


class LimitReached(PlatformError):
    """Raised when a write would go past what the tenant's plan allows: its
    record quota, its paid seats, or a feature the plan does not include.
    ``details`` names the limit and its value."""

    status = 403
    code = "plan_limit"
