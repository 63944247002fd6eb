"""The demo tenant: the telecom example with its real customer data."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from metadata_engine.loader import load_definition

from .importer import ColumnMapping, import_csv
from .tenancy import Platform

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TELCO = ROOT / "examples" / "telco"
DEMO_SLUG = "demo"
DEMO_EMAIL = "admin@demo.example.com"
CREDENTIALS_FILE = "demo-admin-password"


@dataclass(frozen=True)
class DemoInfo:
    slug: str
    email: str
    password: str
    token: str
    created: int
    updated: int
    rejected: int


def demo_password(data_dir: Path) -> tuple[str, bool]:
    """Return the demo admin's password and whether it was just made.

    It is made once and kept (mode 0600) in the data directory so that every
    run can print it.
    """
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        return path.read_text(encoding="ascii").strip(), False
    password = "demo-" + secrets.token_urlsafe(12)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(password)
    return password, True


def setup_demo(platform: Platform, example: Path = TELCO) -> DemoInfo:
    """Create or update the demo tenant, its admin and its customers.

    Safe to run again: the definition is applied only if it changed, only
    customers whose customer id is not stored yet are imported (so edits made
    in the meantime stay), the admin is reused, and earlier API tokens keep
    working.
    """
    definition = load_definition(example)
    if platform.control.find_tenant(DEMO_SLUG) is None:
        platform.create_tenant(DEMO_SLUG, example, name="Telco demo")
    else:
        platform.apply(DEMO_SLUG, definition, applied_by="demo")
    tenant = platform.control.get_tenant(DEMO_SLUG)
    password, new_password = demo_password(platform.settings.data_dir)
    user_id = platform.control.find_user_id(DEMO_EMAIL)
    if user_id is None:
        user_id = platform.control.create_user(DEMO_EMAIL, password, "Demo Admin")
    elif new_password:
        # The password file was deleted: make the printed password the real one.
        platform.control.set_password(user_id, password)
    platform.control.add_member(tenant, user_id, "admin")
    actor = platform.control.actor(tenant, user_id)
    assert actor is not None
    mapping = ColumnMapping.from_file(example / "import-accounts.json")
    service = platform.records(platform.runtime(DEMO_SLUG), actor, "en")
    csv_path = example / "data" / "Telco-Customer-Churn.csv"
    report = import_csv(
        service,
        mapping.entity,
        csv_path,
        mapping,
        progress=_print_progress,
        keep_existing=True,
    )
    print(f"\r{report.summary()}", flush=True)
    token = platform.control.create_token(tenant, user_id, "demo")
    return DemoInfo(
        DEMO_SLUG,
        DEMO_EMAIL,
        password,
        token,
        report.created,
        report.updated,
        len(report.rejected),
    )


def _print_progress(done: int) -> None:
    print(f"\rimporting customers: {done} rows", end="", flush=True)
