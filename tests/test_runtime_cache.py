"""Caches that keep provisioning and serving many tenants cheap: compiled
templates reused until a file changes, and a bounded set of runtimes."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from crm_platform.config import Settings
from crm_platform.tenancy import Platform
from metadata_engine.loader import load_definition_cached
from tests.conftest import STANDARD_CRM

pytestmark = pytest.mark.both_backends


def test_template_compiled_once(tmp_path: Path) -> None:
    folder = tmp_path / "crm"
    shutil.copytree(STANDARD_CRM, folder)
    first = load_definition_cached(folder)
    assert load_definition_cached(folder) is first


def test_template_reloaded_after_edit(tmp_path: Path) -> None:
    folder = tmp_path / "crm"
    shutil.copytree(STANDARD_CRM, folder)
    first = load_definition_cached(folder)
    manifest = folder / "definition.json"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace('"version"', '"version" ', 1), encoding="utf-8")
    stat = manifest.stat()
    os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = load_definition_cached(folder)
    assert second is not first


def test_runtimes_bounded(settings: Settings) -> None:
    small = dataclasses.replace(settings, runtime_cache_size=2)
    platform = Platform(small)
    try:
        for slug in ("one", "two", "three"):
            platform.create_tenant(slug, STANDARD_CRM)
        assert list(platform._runtimes) == ["two", "three"]
        runtime = platform.runtime("one")
        assert runtime.slug == "one"
        assert list(platform._runtimes) == ["three", "one"]
    finally:
        platform.dispose()


def test_evicted_tenant_still_serves(settings: Settings) -> None:
    small = dataclasses.replace(settings, runtime_cache_size=1)
    platform = Platform(small)
    try:
        first = platform.create_tenant("one", STANDARD_CRM)
        platform.create_tenant("two", STANDARD_CRM)
        with first.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        again = platform.runtime("one")
        assert again is not first
        assert list(platform._runtimes) == ["one"]
    finally:
        platform.dispose()
