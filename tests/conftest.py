"""Fixtures shared by the whole suite: a data directory, the platform, and
tenants built from real definitions.

``platform`` stores tenants in SQLite files. A test module that sets
``pytestmark = pytest.mark.both_backends`` runs each of its tests that use
``platform`` twice: on SQLite and on PostgreSQL, in a database of its own.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
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
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "both_backends: run the tests that use `platform` on SQLite and on "
        "PostgreSQL",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marked = metafunc.definition.get_closest_marker("both_backends") is not None
    if marked and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server of ``server_url``, yield its
    URL, and drop it afterwards, closing any connection still open to it.

    The server's user needs the CREATEDB privilege, and the server must be
    PostgreSQL 13 or later for ``DROP DATABASE ... WITH (FORCE)``.
    """
    name = f"metacrm_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(server_url, poolclass=sa.pool.NullPool,
                             isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            url = sa.make_url(server_url).set(database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings on SQLite, or on PostgreSQL with a fresh database, as the
    parameter set by ``both_backends`` selects. Without one, SQLite."""
    data_dir = tmp_path / "data"
    (data_dir / "tenants").mkdir(parents=True)
    secret_key = secrets.token_urlsafe(32)
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield Settings(data_dir=data_dir, secret_key=secret_key)
        return
    server_url = request.getfixturevalue("postgres_url")
    with fresh_database(server_url) as url:
        yield Settings(data_dir=data_dir, secret_key=secret_key, database_url=url)


@pytest.fixture
def settings(backend: Settings) -> Settings:
    return backend


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
