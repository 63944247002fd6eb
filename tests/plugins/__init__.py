"""Reusable pytest plugins: a throwaway PostgreSQL server and headless Chromium.

Register them in ``tests/conftest.py`` with
``pytest_plugins = ["tests.plugins.postgres", "tests.plugins.browser"]``.
Outside CI, tests that need a missing PostgreSQL or Chromium are skipped with
the reason. When the ``CI`` environment variable is set, they fail instead.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

_FALSE_VALUES = frozenset({"", "0", "false", "no", "off"})


def running_in_ci() -> bool:
    """Return whether the ``CI`` environment variable is set to a true value."""
    return os.environ.get("CI", "").strip().lower() not in _FALSE_VALUES


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the requesting test outside CI, or fail it under CI.

    CI must exercise the real PostgreSQL and Chromium, so a missing program
    there is an error in the machine setup, not a reason to skip.
    """
    if running_in_ci():
        pytest.fail(
            f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False
        )
    pytest.skip(reason)
