"""The metacrm command line, run as users run it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crm_platform.cli import main
from tests.conftest import STANDARD_CRM, TELCO

PASSWORD = "correct-horse-42"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("METACRM_DATA_DIR", str(tmp_path / "data"))
    return CliRunner()


def invoke(runner: CliRunner, *args: str, input: str | None = None) -> str:
    result = runner.invoke(main, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def setup_tenant(runner: CliRunner) -> str:
    """Create tenant acme with an admin; return an API token."""
    invoke(runner, "tenant", "create", "acme", "--template", str(STANDARD_CRM))
    invoke(
        runner,
        "user",
        "create",
        "acme",
        "boss@example.com",
        "--role",
        "admin",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    return invoke(runner, "token", "create", "acme", "boss@example.com").strip()


def test_validate_good_definition(runner: CliRunner) -> None:
    output = invoke(runner, "validate", str(TELCO))
    assert "valid, 11 entities" in output


def test_validate_bad_definition(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    (folder / "entities").mkdir(parents=True)
    (folder / "definition.json").write_text(
        '{"format": 1, "name": "bad", "label": "Bad", "version": "1",'
        ' "default_locale": "en", "locales": ["en"]}',
        encoding="utf-8",
    )
    (folder / "entities" / "thing.json").write_text("{not json", encoding="utf-8")
    result = runner.invoke(main, ["validate", str(folder)])
    assert result.exit_code == 1
    assert "entities/thing.json" in result.output


def test_token_printed_alone(runner: CliRunner) -> None:
    token = setup_tenant(runner)
    assert token.startswith("mcrm_")
    assert "\n" not in token
    assert len(token) > 40


def test_user_create_weak_password(runner: CliRunner) -> None:
    invoke(runner, "tenant", "create", "acme", "--template", str(STANDARD_CRM))
    result = runner.invoke(
        main,
        [
            "user",
            "create",
            "acme",
            "x@example.com",
            "--role",
            "admin",
            "--password-stdin",
        ],
        input="short\n",
    )
    assert result.exit_code == 1
    assert "password too short" in result.output


def test_tenant_create_duplicate(runner: CliRunner) -> None:
    invoke(runner, "tenant", "create", "acme", "--template", str(STANDARD_CRM))
    result = runner.invoke(
        main, ["tenant", "create", "acme", "--template", str(STANDARD_CRM)]
    )
    assert result.exit_code == 1
    assert "tenant 'acme' already exists" in result.output


def test_tenant_slug_rejected(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["tenant", "create", "Bad Slug!", "--template", str(STANDARD_CRM)]
    )
    assert result.exit_code == 1
    assert "invalid tenant slug 'Bad Slug!'" in result.output


def test_import_export_round_trip(runner: CliRunner, tmp_path: Path) -> None:
    setup_tenant(runner)
    source = tmp_path / "accounts.csv"
    source.write_text(
        "name,grade,annual_revenue\nAcme,a,100.5\nGlobex,b,\nBroken,z,1\n",
        encoding="utf-8",
    )
    rejects = tmp_path / "rejects.csv"
    result = runner.invoke(
        main, ["import", "acme", "account", str(source), "--rejects", str(rejects)]
    )
    assert result.exit_code == 0, result.output
    assert "created 2" in result.output
    assert "rejected 1" in result.output
    assert "line 4: grade" in result.output
    assert "'z' is not one of the options" in rejects.read_text(encoding="utf-8")

    out_csv = tmp_path / "out.csv"
    invoke(runner, "export", "acme", "account", "--output", str(out_csv))
    lines = out_csv.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert "100.50" in lines[1]

    out_json = tmp_path / "out.json"
    invoke(
        runner,
        "export",
        "acme",
        "account",
        "--format",
        "json",
        "--output",
        str(out_json),
    )
    exported = json.loads(out_json.read_text(encoding="utf-8"))
    assert [item["name"] for item in exported] == ["Acme", "Globex"]
    assert exported[0]["annual_revenue"] == "100.50"


def test_import_dry_run(runner: CliRunner, tmp_path: Path) -> None:
    setup_tenant(runner)
    source = tmp_path / "accounts.csv"
    source.write_text("name\nAcme\n", encoding="utf-8")
    output = invoke(runner, "import", "acme", "account", str(source), "--dry-run")
    assert "would create 1" in output
    exported = invoke(runner, "export", "acme", "account", "--format", "json")
    assert json.loads(exported) == []


def test_apply_refuses_dropping_field(runner: CliRunner, tmp_path: Path) -> None:
    setup_tenant(runner)
    changed = tmp_path / "changed"
    (changed / "entities").mkdir(parents=True)
    (changed / "definition.json").write_text(
        (STANDARD_CRM / "definition.json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    for entity_file in (STANDARD_CRM / "entities").glob("*.json"):
        document = json.loads(entity_file.read_text(encoding="utf-8"))
        if document["name"] == "product":
            document["fields"] = [
                f for f in document["fields"] if f["name"] != "family"
            ]
            document.pop("form", None)
            document.pop("list_views", None)
        (changed / "entities" / entity_file.name).write_text(
            json.dumps(document), encoding="utf-8"
        )
    result = runner.invoke(main, ["apply", "acme", str(changed)])
    assert result.exit_code == 1
    assert "field 'family' of entity 'product'" in result.output


def test_apply_adds_field(runner: CliRunner, tmp_path: Path) -> None:
    token = setup_tenant(runner)
    del token
    changed = tmp_path / "changed"
    (changed / "entities").mkdir(parents=True)
    (changed / "definition.json").write_text(
        (STANDARD_CRM / "definition.json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    for entity_file in (STANDARD_CRM / "entities").glob("*.json"):
        document = json.loads(entity_file.read_text(encoding="utf-8"))
        if document["name"] == "product":
            document["fields"].append(
                {
                    "name": "warranty_months",
                    "type": "integer",
                    "label": "Warranty",
                    "minimum": 0,
                }
            )
            document["fields"].append(
                {
                    "name": "supplier",
                    "type": "lookup",
                    "label": "Supplier",
                    "target": "account",
                    "on_delete": "set_null",
                }
            )
        (changed / "entities" / entity_file.name).write_text(
            json.dumps(document), encoding="utf-8"
        )
    output = invoke(runner, "apply", "acme", str(changed))
    assert "metadata version 2" in output
    source = tmp_path / "products.csv"
    source.write_text("name,warranty_months\nRouter,24\n", encoding="utf-8")
    assert "created 1" in invoke(runner, "import", "acme", "product", str(source))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def api_token(output: str) -> str:
    return next(
        line.split()[-1] for line in output.splitlines() if "API token:" in line
    )


def demo_service(data_dir: Path) -> Any:
    from crm_platform.config import load_settings
    from crm_platform.demo import DEMO_EMAIL
    from crm_platform.tenancy import Platform

    platform = Platform(load_settings(data_dir))
    tenant = platform.control.get_tenant("demo")
    user_id = platform.control.find_user_id(DEMO_EMAIL)
    assert user_id is not None
    actor = platform.control.actor(tenant, user_id)
    assert actor is not None
    return platform.records(platform.runtime("demo"), actor)


def edit_one_customer(data_dir: Path) -> str:
    """Change one customer's tenure, as a user would between two demo runs."""
    from crm_platform.querying import ListQuery

    service = demo_service(data_dir)
    (record,) = service.list("account", ListQuery(limit=1)).records
    service.update("account", record["id"], {"tenure": 99})
    return str(record["id"])


def tenure_of(data_dir: Path, record_id: str) -> int:
    tenure: int = demo_service(data_dir).get("account", record_id)["tenure"]
    return tenure


@pytest.mark.slow
def test_demo_twice_then_serve(tmp_path: Path) -> None:
    """The README's main job: demo sets up real data, reruns change nothing,
    and the server accepts the printed token."""
    data_dir = tmp_path / "demo-data"
    env = {**os.environ, "METACRM_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "crm_platform", "demo"]
    first = subprocess.run(
        [*command, "--no-serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "created 7043" in first.stdout
    first_token = api_token(first.stdout)

    edited = edit_one_customer(data_dir)
    second = subprocess.run(
        [*command, "--no-serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "created 0, updated 0, unchanged 7043, rejected 0" in second.stdout
    assert tenure_of(data_dir, edited) == 99
    token = first_token

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "crm_platform", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = (
            f"http://127.0.0.1:{port}/t/demo/api/v1/records/account?churn=true"
            "&count=true&limit=5"
        )
        request = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {token}"}
        )
        body = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    body = json.load(response)
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert body is not None, "server did not answer within 30 s"
        assert body["total"] == 1869
        assert len(body["data"]) == 5
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_import_names_ignored_columns(runner: CliRunner, tmp_path: Path) -> None:
    setup_tenant(runner)
    source = tmp_path / "accounts.csv"
    source.write_text("name,owner_id,bogus\nAcme,x,y\n", encoding="utf-8")
    result = runner.invoke(main, ["import", "acme", "account", str(source),
                                  "--dry-run"])
    assert result.exit_code == 0, result.output
    expected = "ignored columns (no field of account or of the mapping): owner_id"
    assert f"{expected}, bogus" in result.output
