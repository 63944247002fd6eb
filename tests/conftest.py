"""Fixtures shared by the whole suite: a data directory, the platform, and
tenants built from real definitions."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm_platform.app import create_app
from crm_platform.config import Settings
from crm_platform.control import Actor
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform, TenantRuntime

pytest_plugins = ["tests.plugins.postgres", "tests.plugins.browser"]

ROOT = Path(__file__).resolve().parent.parent
STANDARD_CRM = ROOT / "tenant_definitions" / "standard_crm"
TELCO = ROOT / "examples" / "telco"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct-horse-42"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    data_dir = tmp_path / "data"
    (data_dir / "tenants").mkdir(parents=True)
    return Settings(data_dir=data_dir, secret_key=secrets.token_urlsafe(32))


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    platform = Platform(settings)
    yield platform
    platform.dispose()


def make_member(platform: Platform, slug: str, email: str, role: str) -> Actor:
    tenant = platform.control.get_tenant(slug)
    user_id = platform.control.find_user_id(email)
    if user_id is None:
        user_id = platform.control.create_user(email, ADMIN_PASSWORD)
    platform.control.add_member(tenant, user_id, role)
    actor = platform.control.actor(tenant, user_id)
    assert actor is not None
    return actor


@pytest.fixture
def crm(platform: Platform) -> TenantRuntime:
    """A tenant named ``acme`` on the standard CRM template."""
    return platform.create_tenant("acme", STANDARD_CRM, name="Acme Ltd")


@pytest.fixture
def admin(platform: Platform, crm: TenantRuntime) -> Actor:
    return make_member(platform, crm.slug, ADMIN_EMAIL, "admin")


@pytest.fixture
def records(crm: TenantRuntime, admin: Actor) -> RecordService:
    return RecordService(crm, admin, "en")


@pytest.fixture
def app(settings: Settings, platform: Platform) -> Flask:
    app = create_app(settings, platform)
    app.config.update(TESTING=True)
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def token(platform: Platform, crm: TenantRuntime, admin: Actor) -> str:
    return platform.control.create_token(crm.tenant, admin.user_id)


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    """Headers of an API request as the tenant's admin."""
    return {"Authorization": f"Bearer {token}"}
