"""Access to the process's ``Platform`` from inside a request."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app

from .errors import PlatformError
from .tenancy import Platform


def get_platform(app: Flask | None = None) -> Platform:
    """Return the ``Platform`` that ``create_app`` attached to the app."""
    platform: Platform = (app or current_app).extensions["metacrm"]
    return platform


def error_body(error: PlatformError) -> dict[str, Any]:
    """Return the JSON body of an API error response."""
    return {
        "error": {
            "code": error.code,
            "message": error.message,
            "details": error.details,
        }
    }
