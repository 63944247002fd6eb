"""Storage backends: a SQLite file or a PostgreSQL schema per tenant, routing
of shared table definitions, isolation through one pool, and clean-up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from crm_platform.backends import CONTROL_SCHEMA, PostgresBackend, tenant_schema_name
from crm_platform.cli import main
from crm_platform.config import Settings, load_settings
from crm_platform.errors import TenantError
from crm_platform.tenancy import Platform
from tests.conftest import STANDARD_CRM, TELCO, fresh_database

on_postgres = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

things = sa.Table(
    "things", sa.MetaData(), sa.Column("name", sa.String(20), primary_key=True)
)


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """URL of an empty database of this test's own."""
    with fresh_database(postgres_url) as url:
        yield url


@pytest.fixture
def tiny_pool(database_url: str) -> Iterator[PostgresBackend]:
    """A PostgreSQL backend whose pool has one connection, with tenants
    ``alpha`` and ``beta`` that each have a ``things`` table naming them."""
    backend = PostgresBackend(database_url, pool_size=1, max_overflow=0)
    for slug in ("alpha", "beta"):
        backend.create_tenant_storage(slug)
        engine = backend.tenant_engine(slug)
        things.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(things.insert().values(name=slug))
    yield backend
    backend.dispose()


def schema_names(platform: Platform) -> set[str]:
    engine = platform.backend.control_engine()
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_schema_names())


def table_names(platform: Platform, schema: str) -> set[str]:
    with platform.backend.control_engine().connect() as conn:
        return set(sa.inspect(conn).get_table_names(schema=schema))


# Settings


def test_settings_read_database_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+psycopg://crm:secret@127.0.0.1/crm"
    monkeypatch.setenv("METACRM_DATABASE_URL", url)
    assert load_settings(tmp_path / "data").database_url == url


def test_settings_default_to_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METACRM_DATABASE_URL", raising=False)
    settings = load_settings(tmp_path / "data")
    platform = Platform(settings)
    platform.dispose()
    assert settings.database_url is None
    assert platform.backend.name == "sqlite"


def test_settings_repr_hides_url(settings: Settings) -> None:
    hidden = Settings(data_dir=settings.data_dir, secret_key="k",
                      database_url="postgresql+psycopg://crm:hunter2@127.0.0.1/x")
    assert "hunter2" not in repr(hidden)


def test_unsupported_url_rejected(settings: Settings) -> None:
    other = Settings(data_dir=settings.data_dir, secret_key="k",
                     database_url="mysql+pymysql://crm@127.0.0.1/crm")
    with pytest.raises(TenantError, match="unsupported database URL scheme "
                       "'mysql\\+pymysql'"):
        Platform(other)


# Schemas on PostgreSQL


def test_schema_name_from_slug() -> None:
    assert tenant_schema_name("acme") == "tenant_acme"
    assert tenant_schema_name("big-co-2") == "tenant_big_co_2"


@on_postgres
def test_each_tenant_has_schema(platform: Platform) -> None:
    platform.create_tenant("alpha", STANDARD_CRM)
    platform.create_tenant("beta-two", TELCO)
    schemas = schema_names(platform)
    assert {CONTROL_SCHEMA, "tenant_alpha", "tenant_beta_two"} <= schemas
    assert "e_account" in table_names(platform, "tenant_beta_two")
    assert "tenants" in table_names(platform, CONTROL_SCHEMA)
    assert table_names(platform, "public") == set()


@on_postgres
def test_tenant_engine_sees_own_schema(platform: Platform) -> None:
    platform.create_tenant("alpha", STANDARD_CRM)
    platform.create_tenant("beta", STANDARD_CRM)
    widgets = sa.Table("e_widget", sa.MetaData(), sa.Column("id", sa.Integer,
                                                            primary_key=True))
    widgets.metadata.create_all(platform.engine("beta"))
    with platform.engine("beta").connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(widgets)
                            ).scalar_one() == 0
    with (
        platform.engine("alpha").connect() as conn,
        pytest.raises(sa.exc.ProgrammingError,
                      match='"tenant_alpha.e_widget" does not exist'),
    ):
        conn.execute(sa.select(widgets))


@on_postgres
def test_drop_tenant_removes_schema(platform: Platform) -> None:
    runtime = platform.create_tenant("alpha", STANDARD_CRM)
    platform.drop_tenant(runtime.tenant)
    assert "tenant_alpha" not in schema_names(platform)
    assert platform.control.find_tenant("alpha") is None
    again = platform.create_tenant("alpha", STANDARD_CRM)
    assert again.tenant.metadata_version == 1


@on_postgres
def test_existing_schema_not_adopted(platform: Platform) -> None:
    with platform.backend.control_engine().begin() as conn:
        conn.execute(sa.schema.CreateSchema("tenant_gamma"))
        conn.execute(sa.text("CREATE TABLE tenant_gamma.keep (id int)"))
    with pytest.raises(TenantError, match="schema 'tenant_gamma' of new tenant "
                       "'gamma' already exists"):
        platform.create_tenant("gamma", STANDARD_CRM)
    assert platform.control.find_tenant("gamma") is None
    assert table_names(platform, "tenant_gamma") == {"keep"}


def test_existing_file_not_adopted(platform: Platform, settings: Settings) -> None:
    leftover = settings.tenant_db_path("gamma")
    leftover.write_bytes(b"")
    with pytest.raises(TenantError, match="gamma.sqlite' of new tenant 'gamma' "
                       "already exists"):
        platform.create_tenant("gamma", STANDARD_CRM)
    assert platform.control.find_tenant("gamma") is None
    assert leftover.exists()


@on_postgres
def test_second_process_sees_tenants(platform: Platform, settings: Settings) -> None:
    created = platform.create_tenant("alpha", STANDARD_CRM)
    other = Platform(settings)
    try:
        runtime = other.runtime("alpha")
    finally:
        other.dispose()
    assert runtime.definition.content_hash == created.definition.content_hash


# One pool shared by tenants


def test_pool_isolates_alternating_tenants(tiny_pool: PostgresBackend) -> None:
    alpha = tiny_pool.tenant_engine("alpha")
    beta = tiny_pool.tenant_engine("beta")
    driver_connections = set()
    for _ in range(4):
        for engine, expected in ((alpha, ["alpha"]), (beta, ["beta"])):
            with engine.connect() as conn:
                driver_connections.add(id(conn.connection.dbapi_connection))
                assert conn.execute(sa.select(things.c.name)).scalars().all() \
                    == expected
    assert len(driver_connections) == 1


def test_pool_returns_plain_connections(tiny_pool: PostgresBackend) -> None:
    with tiny_pool.tenant_engine("alpha").connect() as conn:
        conn.execute(sa.select(things.c.name)).all()
    with tiny_pool.base_engine.connect() as conn:
        assert "schema_translate_map" not in conn.get_execution_options()
        search_path = conn.execute(sa.text("SHOW search_path")).scalar_one()
        assert search_path == '"$user", public'
        with pytest.raises(sa.exc.ProgrammingError, match='"things" does not exist'):
            conn.execute(sa.select(things.c.name))


def test_lightweight_table_not_routed(tiny_pool: PostgresBackend) -> None:
    """``sa.table()`` ignores schema_translate_map, so tenant code that runs
    on PostgreSQL must use ``sa.Table``."""
    light = sa.table("things", sa.column("name"))
    with (
        tiny_pool.tenant_engine("alpha").connect() as conn,
        pytest.raises(sa.exc.ProgrammingError, match='"things" does not exist'),
    ):
        conn.execute(sa.select(light.c.name))


def test_drop_storage_keeps_other_tenant(tiny_pool: PostgresBackend) -> None:
    tiny_pool.drop_tenant_storage("alpha")
    with tiny_pool.tenant_engine("beta").connect() as conn:
        assert conn.execute(sa.select(things.c.name)).scalars().all() == ["beta"]
    with (
        tiny_pool.tenant_engine("alpha").connect() as conn,
        pytest.raises(sa.exc.ProgrammingError,
                      match='"tenant_alpha.things" does not exist'),
    ):
        conn.execute(sa.select(things.c.name))


# The command line


def test_cli_creates_tenant_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("METACRM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("METACRM_DATABASE_URL", database_url)
    runner = CliRunner()
    result = runner.invoke(main, ["tenant", "create", "acme", "--template",
                                  str(STANDARD_CRM)])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(main, ["tenant", "list"])
    assert listed.output.startswith("acme\tactive\tv1")
    assert not (tmp_path / "data" / "control.sqlite").exists()
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names(schema="tenant_acme")
    finally:
        engine.dispose()
    assert "e_account" in tables
