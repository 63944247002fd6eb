"""The ``metacrm`` command line.

Command and option names are a public contract: scripts and integrations
call them. The data directory comes from ``--data-dir`` or
``METACRM_DATA_DIR``.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from metadata_engine.errors import DefinitionError
from metadata_engine.loader import load_definition

from .billing import check_seat_available, has_feature, require_feature
from .config import Settings, load_settings
from .control import ROLES, Actor, Tenant
from .errors import PlatformError
from .permission_tests import check_permission_tests
from .rule_tests import check_rule_tests, count_rule_cases
from .tenancy import Platform

log = logging.getLogger(__name__)

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="METACRM_DATA_DIR",
    help="Directory for the secret key and, unless METACRM_DATABASE_URL is "
    "set, the SQLite databases [env: METACRM_DATA_DIR; default: ./metacrm-data].",
)


def open_platform(data_dir: Path | None) -> tuple[Settings, Platform]:
    """Read the settings and open the platform, turning configuration errors
    (a bad environment variable, unreadable keys) into CLI errors."""
    try:
        settings = load_settings(data_dir)
        return settings, Platform(settings)
    except (ValueError, PlatformError) as err:
        message = err.message if isinstance(err, PlatformError) else str(err)
        raise click.ClickException(message) from err


def fail(message: str) -> None:
    raise click.ClickException(message)


def run_safely(action: Callable[[], Any]) -> Any:
    """Run ``action`` and turn platform and metadata errors into CLI errors."""
    try:
        return action()
    except DefinitionError as err:
        raise click.ClickException(str(err)) from err
    except PlatformError as err:
        raise click.ClickException(err.message) from err


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level to stderr.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text or as one JSON object per line.",
)
def main(verbose: bool, log_format: str) -> None:
    """MetaCRM: a CRM whose entities, forms and views are tenant metadata."""
    from .observability import configure_logging

    configure_logging(
        logging.INFO if verbose else logging.WARNING, json_lines=log_format == "json"
    )


@main.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
def validate(path: Path) -> None:
    """Check the definition in PATH against the schema and its own references."""
    try:
        definition = load_definition(path)
        check_permission_tests(definition)
        check_rule_tests(definition)
    except DefinitionError as err:
        click.echo(str(err), err=True)
        sys.exit(1)
    entities = ", ".join(entity.name for entity in definition.entities)
    click.echo(f"{path}: valid, {len(definition.entities)} entities ({entities})")
    cases = sum(len(test.cases) for test in definition.permission_tests)
    if cases:
        click.echo(f"{cases} permission test cases passed")
    rule_cases = count_rule_cases(definition)
    if rule_cases:
        click.echo(f"{rule_cases} rule test cases passed")
    click.echo(f"content hash {definition.content_hash}")


@main.group()
def tenant() -> None:
    """Create, list, suspend, export and import tenants."""


@tenant.command("create")
@click.argument("slug")
@click.option(
    "--template",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Definition folder to create the tenant from.",
)
@click.option("--name", help="Display name of the tenant [default: the slug].")
@data_dir_option
def tenant_create(
    slug: str, template: Path, name: str | None, data_dir: Path | None
) -> None:
    """Create tenant SLUG and its tables from a definition."""
    _, platform = open_platform(data_dir)
    runtime = run_safely(lambda: platform.create_tenant(slug, template, name))
    click.echo(
        f"created tenant {slug} with {len(runtime.definition.entities)} entities"
    )


@tenant.command("list")
@data_dir_option
def tenant_list(data_dir: Path | None) -> None:
    """List tenants with their status and metadata version."""
    _, platform = open_platform(data_dir)
    for item in platform.control.list_tenants():
        click.echo(
            f"{item.slug}\t{item.status}\tv{item.metadata_version}\t"
            f"{(item.metadata_hash or '')[:12]}\t{item.name}"
        )


def _set_tenant_status(slug: str, status: str, data_dir: Path | None) -> None:
    _, platform = open_platform(data_dir)
    tenant_row = run_safely(lambda: platform.control.set_status(slug, status))
    click.echo(f"tenant {tenant_row.slug} is {tenant_row.status.replace('_', '-')}")


@tenant.command("suspend")
@click.argument("slug")
@data_dir_option
def tenant_suspend(slug: str, data_dir: Path | None) -> None:
    """Block every member of SLUG from the UI and API; data stays as it is."""
    _set_tenant_status(slug, "suspended", data_dir)


@tenant.command("read-only")
@click.argument("slug")
@data_dir_option
def tenant_read_only(slug: str, data_dir: Path | None) -> None:
    """Let members of SLUG read but not change records."""
    _set_tenant_status(slug, "read_only", data_dir)


@tenant.command("resume")
@click.argument("slug")
@data_dir_option
def tenant_resume(slug: str, data_dir: Path | None) -> None:
    """Make SLUG active again after suspend or read-only."""
    _set_tenant_status(slug, "active", data_dir)


@main.command()
@click.argument("slug")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@data_dir_option
def apply(slug: str, path: Path, data_dir: Path | None) -> None:
    """Create or update tenant SLUG's tables from the definition in PATH.

    Only additive changes are applied; a change that would drop or convert
    stored data is refused with the list of what would be lost.
    """
    _, platform = open_platform(data_dir)

    def action() -> Any:
        definition = load_definition(path)
        return platform.apply(slug, definition, applied_by="cli")

    runtime = run_safely(action)
    click.echo(
        f"tenant {slug} is at metadata version "
        f"{runtime.tenant.metadata_version} "
        f"({runtime.definition.content_hash[:12]})"
    )


def system_actor(platform: Platform, slug: str, email: str | None) -> Actor:
    """Return the member the CLI acts as: ``email``, else the first admin."""
    tenant_row = platform.control.get_tenant(slug)
    if email:
        user_id = platform.control.find_user_id(email)
        actor = platform.control.actor(tenant_row, user_id) if user_id else None
        if actor is None:
            fail(f"{email!r} is not a member of tenant {slug!r}")
        assert actor is not None
        return actor
    admin = platform.control.first_admin(tenant_row)
    if admin is None:
        fail(
            f"tenant {slug!r} has no admin; create one with "
            f"'metacrm user create {slug} EMAIL --role admin' or pass --as"
        )
    assert admin is not None
    return admin


@main.command("import")
@click.argument("slug")
@click.argument("entity")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--mapping",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON file mapping CSV columns to fields "
    "[default: headers matched to field names in snake case].",
)
@click.option(
    "--key",
    help="Field whose value matches rows to stored records, "
    "which are updated instead of duplicated [default: from the mapping].",
)
@click.option("--dry-run", is_flag=True, help="Validate and count; write nothing.")
@click.option(
    "--keep-existing",
    is_flag=True,
    help="With a key, leave records that already exist as they are instead of "
    "updating them from the file.",
)
@click.option(
    "--encoding", default="utf-8", show_default=True, help="Text encoding of FILE."
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write rejected rows with their reasons to this CSV file.",
)
@click.option(
    "--as",
    "as_email",
    help="E-mail of the member to import as [default: the tenant's first admin].",
)
@click.option(
    "--ignore-plan",
    is_flag=True,
    help="Run even if the tenant's plan does not include the import feature "
    "(an operator's override; it is logged).",
)
@data_dir_option
def import_command(
    slug: str,
    entity: str,
    file: Path,
    mapping: Path | None,
    key: str | None,
    dry_run: bool,
    keep_existing: bool,
    encoding: str,
    rejects: Path | None,
    as_email: str | None,
    ignore_plan: bool,
    data_dir: Path | None,
) -> None:
    """Import the CSV FILE into ENTITY of tenant SLUG."""
    from .importer import write_rejects

    _, platform = open_platform(data_dir)
    report = run_safely(
        lambda: _import(
            platform,
            slug,
            entity,
            file,
            mapping,
            key,
            dry_run,
            encoding,
            as_email,
            keep_existing,
            ignore_plan,
        )
    )
    click.echo(report.summary())
    if report.ignored_columns:
        click.echo(
            f"ignored columns (no field of {entity} or of the mapping): "
            + ", ".join(report.ignored_columns),
            err=True,
        )
    for rejected in report.rejected[:20]:
        reasons = "; ".join(
            f"{name}: {' '.join(messages)}"
            for name, messages in rejected.errors.items()
        )
        click.echo(f"  line {rejected.line}: {reasons}", err=True)
    if len(report.rejected) > 20:
        click.echo(f"  … and {len(report.rejected) - 20} more rejected rows", err=True)
    if rejects:
        write_rejects(report, rejects)
        click.echo(f"rejected rows written to {rejects}")


def _import(
    platform: Platform,
    slug: str,
    entity: str,
    file: Path,
    mapping_path: Path | None,
    key: str | None,
    dry_run: bool,
    encoding: str,
    as_email: str | None,
    keep_existing: bool,
    ignore_plan: bool = False,
) -> Any:
    from .importer import ColumnMapping, import_csv

    runtime = platform.runtime(slug)
    _log_plan_override(runtime.tenant, "import", ignore_plan)
    actor = system_actor(platform, slug, as_email)
    service = platform.records(runtime, actor, "en")
    mapping = ColumnMapping.from_file(mapping_path) if mapping_path else None
    total = sum(1 for _ in file.open("rb")) - 1
    with tqdm(
        total=max(total, 0),
        unit="rows",
        desc=f"import {entity}",
        file=sys.stderr,
        disable=None,
    ) as bar:

        def progress(done: int) -> None:
            bar.update(done - bar.n)

        report = import_csv(
            service,
            entity,
            file,
            mapping,
            dry_run=dry_run,
            encoding=encoding,
            progress=progress,
            keep_existing=keep_existing,
            key=key,
            check_plan=not ignore_plan,
        )
    return report


def _log_plan_override(tenant: Tenant, feature: str, ignore_plan: bool) -> None:
    """Log an operator's ``--ignore-plan`` on a plan without ``feature``, or
    raise ``LimitReached`` before any file is opened without it."""
    if has_feature(tenant, feature):
        return
    if not ignore_plan:
        require_feature(tenant, feature)
    log.warning("ran %s on tenant %s despite its plan %s: --ignore-plan",
                feature, tenant.slug, tenant.plan)


@main.command()
@click.argument("slug")
@click.argument("entity")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["csv", "json"]),
    default="csv",
    show_default=True,
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write [default: standard output].",
)
@click.option("--as", "as_email", help="E-mail of the member to export as.")
@click.option(
    "--ignore-plan",
    is_flag=True,
    help="Run even if the tenant's plan does not include the export feature "
    "(an operator's override; it is logged).",
)
@data_dir_option
def export(
    slug: str,
    entity: str,
    file_format: str,
    output: Path | None,
    as_email: str | None,
    ignore_plan: bool,
    data_dir: Path | None,
) -> None:
    """Export every record of ENTITY of tenant SLUG as CSV or JSON."""
    from .exporter import export as export_records

    _, platform = open_platform(data_dir)

    def action() -> int:
        runtime = platform.runtime(slug)
        _log_plan_override(runtime.tenant, "export", ignore_plan)
        service = platform.records(runtime, system_actor(platform, slug, as_email))
        handle = (
            output.open("w", newline="", encoding="utf-8") if output else sys.stdout
        )
        try:
            with tqdm(
                unit="rows",
                desc=f"export {entity}",
                file=sys.stderr,
                disable=None if output else True,
            ) as bar:
                return export_records(
                    service,
                    entity,
                    handle,
                    file_format,
                    progress=lambda n: bar.update(n - bar.n),
                    check_plan=not ignore_plan,
                )
        finally:
            if output:
                handle.close()

    count = run_safely(action)
    if output:
        click.echo(f"exported {count} {entity} records to {output}", err=True)


@main.group()
def user() -> None:
    """Manage users."""


@user.command("create")
@click.argument("slug")
@click.argument("email")
@click.option(
    "--role",
    required=True,
    help="Membership role: admin or a role of the tenant's definition "
    f"(the standard template has {', '.join(ROLES)}).",
)
@click.option("--name", help="Display name [default: the part before @].")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (first line).",
)
@click.option(
    "--locale", type=click.Choice(["en", "zh-CN"]), default="en", show_default=True
)
@click.option(
    "--operator",
    is_flag=True,
    help="Also let the user sign in at /operator/ to manage every tenant.",
)
@data_dir_option
def user_create(
    slug: str,
    email: str,
    role: str,
    name: str | None,
    password_stdin: bool,
    locale: str,
    operator: bool,
    data_dir: Path | None,
) -> None:
    """Create user EMAIL as a member of SLUG, or add an existing user of
    another tenant, who keeps their password."""
    _, platform = open_platform(data_dir)
    existing = platform.control.find_user_id(email)
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty() and existing is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if existing is not None and password:
        fail(
            f"user {email!r} already exists and signs in to other tenants with "
            "their own password; run the command again without --password-stdin "
            "to add them to this tenant"
        )

    def action() -> str:
        tenant_row = platform.control.get_tenant(slug)
        roles = platform.runtime_for(tenant_row).definition.role_names
        if role not in roles:
            raise PlatformError(
                f"unknown role {role!r} for tenant {slug!r}: use one of "
                f"{', '.join(roles)}"
            )
        if existing is None:
            # Check the seats first, so a full tenant leaves no user behind.
            with platform.control.engine.connect() as conn:
                check_seat_available(conn, tenant_row)
        user_id = existing or platform.control.create_user(
            email, password, name, locale
        )
        platform.control.add_member(tenant_row, user_id, role, roles)
        return user_id

    run_safely(action)
    click.echo(f"{email} is a member of {slug} with role {role}")
    if operator:
        from .operator import set_operator

        run_safely(lambda: set_operator(platform.control, email, grant=True))
        click.echo(f"{email} is an operator")


def member_id(platform: Platform, slug: str, email: str) -> str:
    """Return the id of member ``email`` of tenant ``slug`` or fail."""
    tenant_row = platform.control.get_tenant(slug)
    user_id = platform.control.find_user_id(email)
    if user_id is None or platform.control.actor(tenant_row, user_id) is None:
        fail(
            f"{email!r} is not a member of tenant {slug!r}; check the address "
            f"with the tenant's admin"
        )
    assert user_id is not None
    return user_id


@user.command("unlock")
@click.argument("slug")
@click.argument("email")
@data_dir_option
def user_unlock(slug: str, email: str, data_dir: Path | None) -> None:
    """Clear the failed sign-ins of member EMAIL of SLUG, which ends a lockout.

    Failures count per e-mail address over all tenants, so this unlocks
    EMAIL on every tenant.
    """
    _, platform = open_platform(data_dir)

    def action() -> int:
        member_id(platform, slug, email)
        return platform.control.clear_failed_logins(email)

    cleared = run_safely(action)
    log.warning("cleared %s failed sign-ins of a member of tenant %s", cleared, slug)
    click.echo(f"cleared {cleared} failed sign-ins of {email}; it can sign in again")


@user.command("logout-everywhere")
@click.argument("email")
@data_dir_option
def user_logout_everywhere(email: str, data_dir: Path | None) -> None:
    """End every browser session of user EMAIL, on every tenant.

    API tokens stay valid; revoke them separately.
    """
    _, platform = open_platform(data_dir)
    user_id = platform.control.find_user_id(email)
    if user_id is None:
        fail(f"user {email!r} not found; check the address")
    run_safely(lambda: platform.control.end_sessions(str(user_id)))
    click.echo(f"ended every browser session of {email}")


@user.command("reset-password")
@click.argument("slug")
@click.argument("email")
@data_dir_option
def user_reset_password(slug: str, email: str, data_dir: Path | None) -> None:
    """Put a password-reset e-mail for member EMAIL of SLUG in the outbox.

    The link in it works once, within 30 minutes. Read it with
    'metacrm outbox list'.
    """
    _, platform = open_platform(data_dir)

    def action() -> bool:
        member_id(platform, slug, email)
        tenant_row = platform.control.get_tenant(slug)
        return platform.control.request_password_reset(tenant_row, email)

    run_safely(action)
    click.echo(
        f"a password-reset e-mail for {email} is in the outbox; show it with "
        "'metacrm outbox list'"
    )


@user.command("remove")
@click.argument("slug")
@click.argument("email")
@data_dir_option
def user_remove(slug: str, email: str, data_dir: Path | None) -> None:
    """Remove member EMAIL from SLUG, which frees a seat.

    The user's browser sessions and API tokens on SLUG end; the user and
    their memberships of other tenants stay.
    """
    _, platform = open_platform(data_dir)

    def action() -> None:
        user_id = member_id(platform, slug, email)
        tenant_row = platform.control.get_tenant(slug)
        actor = system_actor(platform, slug, None)
        platform.control.remove_member(tenant_row, user_id)
        runtime = platform.runtime(slug)
        SharingService(platform, runtime, actor).forget_member(user_id)

    run_safely(action)
    click.echo(f"{email} is no longer a member of {slug}")

@main.group()
def outbox() -> None:
    """Read the e-mail the platform would send (no mail server is used)."""


@outbox.command("list")
@data_dir_option
def outbox_list(data_dir: Path | None) -> None:
    """Print every message in the outbox, oldest first.

    Password-reset messages contain working links, so treat the output as
    secret.
    """
    _, platform = open_platform(data_dir)
    messages = platform.control.outbox_messages()
    if not messages:
        click.echo("the outbox is empty")
    for message in messages:
        click.echo(f"Date: {message.created_at.isoformat(timespec='seconds')}Z")
        click.echo(f"To: {message.recipient}")
        click.echo(f"Subject: {message.subject}")
        click.echo("")
        click.echo(message.body)
        click.echo("-" * 72)


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command("create")
@click.argument("slug")
@click.argument("email")
@click.option("--name", default="api", show_default=True, help="Label of the token.")
@click.option(
    "--expires-days",
    type=click.IntRange(1, 3650),
    help="Days until the token expires [default: never].",
)
@data_dir_option
def token_create(
    slug: str, email: str, name: str, expires_days: int | None, data_dir: Path | None
) -> None:
    """Create an API token for EMAIL in SLUG and print it on a line of its own.

    The token is shown only this once; only its hash is stored.
    """
    _, platform = open_platform(data_dir)

    def action() -> str:
        tenant_row = platform.control.get_tenant(slug)
        user_id = platform.control.find_user_id(email)
        if user_id is None or platform.control.actor(tenant_row, user_id) is None:
            fail(
                f"{email!r} is not a member of tenant {slug!r}; add them with "
                f"'metacrm user create {slug} {email} --role ROLE'"
            )
        expires = dt.timedelta(days=expires_days) if expires_days else None
        return platform.control.create_token(tenant_row, str(user_id), name, expires)

    click.echo(run_safely(action))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--threads",
    default=8,
    show_default=True,
    type=int,
    help="Worker threads of the WSGI server.",
)
@click.option(
    "--with-worker",
    is_flag=True,
    help="Also run the background worker (time rules, webhook deliveries) in "
    "this process, instead of a separate `metacrm worker`.",
)
@data_dir_option
def serve(
    host: str, port: int, threads: int, with_worker: bool, data_dir: Path | None
) -> None:
    """Serve the web UI and API with the waitress WSGI server."""
    settings, platform = open_platform(data_dir)
    _serve(settings, platform, host, port, threads, with_worker)


#: Seconds between two runs of the worker that ``serve --with-worker`` and
#: ``demo`` start in the web server's process.
IN_PROCESS_WORKER_INTERVAL = 30.0


def _serve(
    settings: Settings,
    platform: Platform,
    host: str,
    port: int,
    threads: int,
    with_worker: bool = False,
) -> None:
    import threading

    import waitress

    from .app import create_app
    from .worker import run_forever

    app = create_app(settings, platform)
    try:
        server = waitress.create_server(
            app, host=host, port=port, threads=threads, ident="MetaCRM"
        )
    except (OSError, ValueError) as err:
        fail(
            f"cannot listen on {host}:{port}: {err}; stop the other server or "
            "pass another --port"
        )
    click.echo(f"serving on http://{host}:{port}/ (Ctrl+C to stop)")
    stop = threading.Event()
    if with_worker:
        # The worker's tables are its queue, so a second process running
        # `metacrm worker` at the same time is safe: it claims rows with a
        # lease and time rules once per record.
        threading.Thread(
            target=run_forever,
            args=(platform, IN_PROCESS_WORKER_INTERVAL, stop),
            name="metacrm-worker",
            daemon=True,
        ).start()
        click.echo(
            f"running the worker every {IN_PROCESS_WORKER_INTERVAL:g} s in this "
            "process"
        )
    try:
        server.run()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        stop.set()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--no-serve", is_flag=True, help="Set up the demo and exit.")
@data_dir_option
def demo(host: str, port: int, no_serve: bool, data_dir: Path | None) -> None:
    """Create the demo tenant from the telecom example with its 7,043 real
    customers, then serve it. Running it again keeps the tenant and its
    records as they are and prints a new API token."""
    from .demo import setup_demo

    settings, platform = open_platform(data_dir)
    info = run_safely(lambda: setup_demo(platform))
    click.echo("")
    click.echo(f"MetaCRM demo is ready in {settings.data_dir}")
    click.echo(f"  URL:       http://{host}:{port}/t/{info.slug}/")
    click.echo(f"  login:     {info.email}")
    click.echo(f"  password:  {info.password}")
    click.echo(f"  API token: {info.token}")
    click.echo(
        f"  try:       curl -H 'Authorization: Bearer {info.token}' "
        f"'http://{host}:{port}/t/{info.slug}/api/v1/records/account?"
        "churn=true&limit=5'"
    )
    if not no_serve:
        _serve(settings, platform, host, port, threads=8, with_worker=True)


# Archives: tenant export and import, backup and restore


def _archive_progress(bar: Any) -> Callable[[str, int], None]:
    def progress(entity: str, rows: int) -> None:
        bar.set_postfix_str(entity, refresh=False)
        bar.update(rows)

    return progress


def _write_archive(
    slug: str, output: Path, as_email: str | None, data_dir: Path | None, kind: str
) -> None:
    from .archive import write_archive

    _, platform = open_platform(data_dir)

    def action() -> Any:
        actor = system_actor(platform, slug, as_email)
        with tqdm(unit="rows", desc=kind, file=sys.stderr, disable=None) as bar:
            return write_archive(
                platform, slug, output, actor, kind, _archive_progress(bar)
            )

    manifest = run_safely(action)
    total = sum(manifest.counts.values())
    click.echo(
        f"wrote {total} records of {len(manifest.counts)} entities of tenant "
        f"{slug} to {output}"
    )


@tenant.command("export")
@click.argument("slug")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Zip file to write the definition, records and manifest to.",
)
@click.option("--as", "as_email", help="E-mail of the member to export as.")
@data_dir_option
def tenant_export(
    slug: str, output: Path, as_email: str | None, data_dir: Path | None
) -> None:
    """Write tenant SLUG's definition and every record to a zip archive."""
    _write_archive(slug, output, as_email, data_dir, "export")


@tenant.command("import")
@click.argument("slug")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@data_dir_option
def tenant_import(slug: str, file: Path, data_dir: Path | None) -> None:
    """Create tenant SLUG from the archive FILE with every record in it.

    Ids, owners, timestamps and versions are kept as archived, including
    owner and creator ids of users this instance does not have.
    """
    from .archive import import_archive

    _, platform = open_platform(data_dir)

    def action() -> Any:
        with tqdm(unit="rows", desc="import", file=sys.stderr, disable=None) as bar:
            return import_archive(platform, slug, file, _archive_progress(bar))

    counts = run_safely(action)
    click.echo(
        f"created tenant {slug} with {sum(counts.values())} records of "
        f"{len(counts)} entities"
    )


@main.command()
@click.argument("slug")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Zip file to write the backup to.",
)
@click.option("--as", "as_email", help="E-mail of the member to read records as.")
@data_dir_option
def backup(
    slug: str, output: Path, as_email: str | None, data_dir: Path | None
) -> None:
    """Back up tenant SLUG's definition, records and auto-number sequences."""
    _write_archive(slug, output, as_email, data_dir, "backup")


@main.command()
@click.argument("slug")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--apply-definition",
    is_flag=True,
    help="Apply the archived definition first if it differs from the tenant's.",
)
@data_dir_option
def restore(
    slug: str, file: Path, apply_definition: bool, data_dir: Path | None
) -> None:
    """Replace every record of tenant SLUG with those in the archive FILE."""
    from .archive import restore_archive

    _, platform = open_platform(data_dir)

    def action() -> Any:
        with tqdm(unit="rows", desc="restore", file=sys.stderr, disable=None) as bar:
            return restore_archive(
                platform, slug, file, apply_definition, _archive_progress(bar)
            )

    counts = run_safely(action)
    click.echo(f"restored {sum(counts.values())} records of tenant {slug}")


# Plans, subscriptions and billing


@main.group()
def plan() -> None:
    """Create and list subscription plans."""


@plan.command("create")
@click.argument("code")
@click.option("--name", required=True, help="Display name of the plan.")
@click.option(
    "--seats",
    required=True,
    type=int,
    help="Seats a subscription to the plan pays for unless it sets its own.",
)
@click.option(
    "--record-quota", type=int, help="Records a tenant may store [default: no limit]."
)
@click.option(
    "--feature",
    "features",
    multiple=True,
    help="Name of a feature the plan includes; repeat for more.",
)
@data_dir_option
def plan_create(
    code: str,
    name: str,
    seats: int,
    record_quota: int | None,
    features: tuple[str, ...],
    data_dir: Path | None,
) -> None:
    """Create plan CODE."""
    from .billing import create_plan

    _, platform = open_platform(data_dir)
    created = run_safely(
        lambda: create_plan(
            platform.control, code, name, seats, record_quota, features
        )
    )
    click.echo(f"created plan {created.code} with {created.seats} seats")


@plan.command("list")
@data_dir_option
def plan_list(data_dir: Path | None) -> None:
    """List plans: code, seats, record quota, features and name."""
    from .billing import list_plans

    _, platform = open_platform(data_dir)
    for item in list_plans(platform.control):
        quota = "-" if item.record_quota is None else str(item.record_quota)
        features = ",".join(item.features) or "-"
        click.echo(f"{item.code}\t{item.seats}\t{quota}\t{features}\t{item.name}")


@main.group()
def subscription() -> None:
    """Set and show the subscriptions of tenants."""


@subscription.command("set")
@click.argument("slug")
@click.argument("plan_code", metavar="PLAN")
@click.option("--seats", type=int, help="Seats paid for [default: the plan's].")
@click.option(
    "--until", "until", required=True, help="Last paid day, as YYYY-MM-DD."
)
@click.option(
    "--grace-days",
    type=int,
    default=14,
    show_default=True,
    help="Days after --until before the billing run makes the tenant read-only.",
)
@data_dir_option
def subscription_set(
    slug: str,
    plan_code: str,
    seats: int | None,
    until: str,
    grace_days: int,
    data_dir: Path | None,
) -> None:
    """Subscribe SLUG to PLAN, or renew its subscription.

    A tenant that a lapsed subscription made read-only becomes active again.
    """
    from .billing import parse_day, set_subscription

    _, platform = open_platform(data_dir)

    def action() -> Any:
        period_end = parse_day(until, "--until")
        return set_subscription(
            platform.control, slug, plan_code, period_end, seats, grace_days
        )

    result = run_safely(action)
    status = platform.control.get_tenant(slug).status.replace("_", "-")
    click.echo(
        f"tenant {slug} subscribes to {result.plan_code} with {result.seats} "
        f"seats until {result.period_end.isoformat()}; the tenant is {status}"
    )


@subscription.command("show")
@click.argument("slug")
@data_dir_option
def subscription_show(slug: str, data_dir: Path | None) -> None:
    """Print the subscription of SLUG and its seats in use."""
    from .billing import get_subscription

    _, platform = open_platform(data_dir)
    result = run_safely(lambda: get_subscription(platform.control, slug))
    click.echo(f"tenant:      {slug}")
    click.echo(f"plan:        {result.plan_code}")
    click.echo(f"status:      {result.status}")
    click.echo(f"seats:       {result.seats_used} of {result.seats} in use")
    click.echo(f"paid until:  {result.period_end.isoformat()}")
    click.echo(
        f"grace:       {result.grace_days} days, until "
        f"{result.lapses_after.isoformat()}"
    )


@main.group()
def billing() -> None:
    """Record seat-days and lapse unpaid subscriptions."""


@billing.command("run")
@click.option(
    "--date", "day", help="Billing day, as YYYY-MM-DD [default: today in UTC]."
)
@data_dir_option
def billing_run(day: str | None, data_dir: Path | None) -> None:
    """Record the day's seats of every subscribed tenant, and make tenants
    whose grace period is over read-only.

    Running it again for the same day replaces that day's counts.
    """
    from .billing import parse_day, run_billing

    _, platform = open_platform(data_dir)

    def action() -> Any:
        today = dt.datetime.now(dt.UTC).date()
        billing_day = parse_day(day, "--date") if day else today
        return billing_day, run_billing(platform.control, billing_day)

    billing_day, results = run_safely(action)
    for result in results:
        lapsed = "\tlapsed, now read-only" if result.lapsed else ""
        click.echo(
            f"{result.tenant_slug}\t{result.seats_used} of {result.seats_paid} "
            f"seats{lapsed}"
        )
    click.echo(f"recorded {billing_day.isoformat()} for {len(results)} subscriptions")


@billing.command("seat-days")
@click.argument("slug")
@click.option("--from", "first", required=True, help="First day, as YYYY-MM-DD.")
@click.option("--to", "last", required=True, help="Last day, as YYYY-MM-DD.")
@data_dir_option
def billing_seat_days(
    slug: str, first: str, last: str, data_dir: Path | None
) -> None:
    """Print the recorded seat-days of SLUG from --from to --to, both
    included, and their totals."""
    from .billing import list_seat_days, parse_day

    _, platform = open_platform(data_dir)

    def action() -> Any:
        return list_seat_days(
            platform.control,
            slug,
            parse_day(first, "--from"),
            parse_day(last, "--to"),
        )

    rows = run_safely(action)
    click.echo("day\tused\tpaid")
    for row in rows:
        click.echo(f"{row.day.isoformat()}\t{row.seats_used}\t{row.seats_paid}")
    used = sum(row.seats_used for row in rows)
    paid = sum(row.seats_paid for row in rows)
    click.echo(
        f"total: {paid} paid seat-days, {used} used, over {len(rows)} recorded days"
    )


@main.group()
def keys() -> None:
    """Generate field encryption keys, count and rotate encrypted values."""


@keys.command("generate")
@click.option(
    "--id", "key_id", help="Id of the new key [default: k + the UTC time]."
)
def keys_generate(key_id: str | None) -> None:
    """Print a new 'id:base64key' entry for METACRM_ENCRYPTION_KEYS."""
    from .crypto import new_key_line

    click.echo(run_safely(lambda: new_key_line(key_id)))


@keys.command("status")
@click.option("--tenant", "slug", help="Only this tenant [default: every tenant].")
@data_dir_option
def keys_status(slug: str | None, data_dir: Path | None) -> None:
    """Count each tenant's encrypted values per key id."""
    from functools import partial

    from .crypto import count_key_ids

    _, platform = open_platform(data_dir)
    click.echo(f"active key: {platform.key_ring.active_id}")
    known = set(platform.key_ring.keys) | {"plaintext"}
    unreadable = 0
    for runtime in run_safely(lambda: _key_tenants(platform, slug)):
        counts = run_safely(partial(count_key_ids, runtime))
        parts = []
        for key_id, count in sorted(counts.items()):
            missing = key_id not in known
            unreadable += count if missing else 0
            parts.append(f"{key_id}={count}" + (" (key missing)" if missing else ""))
        click.echo(f"{runtime.slug}\t{' '.join(parts) or 'no values'}")
    if unreadable:
        fail(
            f"{unreadable} values are encrypted with keys that are not configured "
            "and cannot be read: add those keys back to METACRM_ENCRYPTION_KEYS"
        )


@keys.command("rotate")
@click.option("--tenant", "slug", help="Only this tenant [default: every tenant].")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=500,
    show_default=True,
    help="Rows re-encrypted per transaction.",
)
@data_dir_option
def keys_rotate(slug: str | None, batch_size: int, data_dir: Path | None) -> None:
    """Re-encrypt every sensitive value not under the active key (the first
    of METACRM_ENCRYPTION_KEYS). Safe to interrupt and run again."""
    from functools import partial

    from . import webhooks
    from .crypto import count_pending, rotate_tenant

    _, platform = open_platform(data_dir)
    ring = platform.key_ring
    for runtime in run_safely(lambda: _key_tenants(platform, slug)):
        pending = run_safely(partial(count_pending, runtime, ring))
        with tqdm(
            total=pending,
            unit="rows",
            desc=f"rotate {runtime.slug}",
            file=sys.stderr,
            disable=None,
        ) as bar:
            rotated = run_safely(
                partial(rotate_tenant, runtime, ring, bar.update, batch_size)
            )
        secrets = run_safely(
            partial(webhooks.reencrypt_secrets, runtime.engine, ring)
        )
        click.echo(f"{runtime.slug}: re-encrypted {rotated} rows and {secrets} "
                   f"webhook secrets with key {ring.active_id}")


def _key_tenants(platform: Platform, slug: str | None) -> list[Any]:
    """Return the runtimes of tenant ``slug``, or of every tenant with tables."""
    if slug is not None:
        return [platform.runtime(slug)]
    return [
        platform.runtime_for(tenant)
        for tenant in platform.control.list_tenants()
        if tenant.metadata_hash is not None
    ]


# Tenant lifecycle and operators


def _utc(moment: dt.datetime | None) -> str:
    return moment.isoformat(sep=" ", timespec="seconds") + " UTC" if moment else "-"


def _check_new_file(path: Path) -> None:
    check_new_file(path)


def check_new_file(path: Path) -> None:
    """Fail unless ``path`` names a file that does not exist yet, in a folder
    that does."""
    if path.exists():
        fail(f"{str(path)!r} already exists: choose a file name that is not taken")
    if not path.parent.is_dir():
        fail(
            f"folder {str(path.parent)!r} of {str(path)!r} does not exist: "
            "create it or choose another place"
        )


@tenant.command("close")
@click.argument("slug")
@data_dir_option
def tenant_close(slug: str, data_dir: Path | None) -> None:
    """Reject every member of SLUG and keep its data for METACRM_RETENTION_DAYS
    days (default 30), after which 'tenant purge-due' deletes it."""
    from .lifecycle import close_tenant

    _, platform = open_platform(data_dir)
    closed = run_safely(lambda: close_tenant(platform, slug))
    click.echo(
        f"tenant {slug} is closed; its data is kept until {_utc(closed.purge_after)}"
    )


@tenant.command("reopen")
@click.argument("slug")
@data_dir_option
def tenant_reopen(slug: str, data_dir: Path | None) -> None:
    """Give closed tenant SLUG back the status it had before it was closed."""
    from .lifecycle import reopen_tenant

    _, platform = open_platform(data_dir)
    reopened = run_safely(lambda: reopen_tenant(platform, slug))
    click.echo(f"tenant {slug} is {reopened.status.replace('_', '-')} again")


export_file_option = click.option(
    "--export",
    "export_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Zip file to write the tenant's export archive to, and check, before "
    "anything is deleted. The file must not exist yet.",
)


@tenant.command("purge")
@click.argument("slug")
@click.option(
    "--now",
    "before_due",
    is_flag=True,
    help="Purge before the retention period ends, in any status; needs --export.",
)
@export_file_option
@data_dir_option
def tenant_purge(
    slug: str, before_due: bool, export_path: Path | None, data_dir: Path | None
) -> None:
    """Delete closed tenant SLUG's data once its retention period has passed.

    The tenant row stays as a tombstone with status purged, so the slug is
    not reused.
    """
    from .lifecycle import check_due, export_tenant, purge_tenant

    if before_due and export_path is None:
        fail(
            "--now deletes the data before the retention period ends, so it needs "
            "--export FILE: the export is written and checked first"
        )
    if export_path is not None:
        _check_new_file(export_path)
    _, platform = open_platform(data_dir)

    def action() -> Any:
        tenant_row = platform.control.get_tenant(slug)
        if not before_due and tenant_row.status != "purged":
            check_due(tenant_row, dt.datetime.now(dt.UTC).replace(tzinfo=None))
        if export_path is not None and tenant_row.status != "purged":
            export_tenant(platform, slug, export_path)
            click.echo(f"wrote and checked the export of {slug} to {export_path}")
        return purge_tenant(platform, slug, before_due=before_due)

    purged = run_safely(action)
    click.echo(f"tenant {slug} is purged ({_utc(purged.purged_at)})")


@tenant.command("purge-due")
@data_dir_option
def tenant_purge_due(data_dir: Path | None) -> None:
    """Purge every closed tenant whose retention period has passed; for cron.

    Prints each purged tenant. Exits with status 1 if any purge failed.
    """
    from .lifecycle import purge_due

    _, platform = open_platform(data_dir)
    purged, failures = purge_due(platform)
    for item in purged:
        click.echo(f"purged tenant {item.slug} (closed {_utc(item.closed_at)})")
    for failure in failures:
        click.echo(f"purging tenant {failure.slug} failed: {failure.message}", err=True)
    if not purged and not failures:
        click.echo("no closed tenant is due for purging")
    if failures:
        sys.exit(1)


@tenant.command("delete")
@click.argument("slug")
@export_file_option
@click.option(
    "--without-export",
    is_flag=True,
    help="Delete without writing an export first: the records are lost for good.",
)
@data_dir_option
def tenant_delete(
    slug: str, export_path: Path | None, without_export: bool, data_dir: Path | None
) -> None:
    """Export tenant SLUG, check the archive, and purge the tenant at once,
    in any status. The tenant row stays as a tombstone."""
    from .lifecycle import delete_tenant

    if export_path is not None and without_export:
        fail("pass either --export FILE or --without-export, not both")
    if export_path is None and not without_export:
        fail(
            f"tenant {slug!r} was not deleted because no export was requested: "
            "pass --export FILE to write and check one first, or --without-export "
            "to delete its records for good"
        )
    if export_path is not None:
        _check_new_file(export_path)
    _, platform = open_platform(data_dir)
    purged = run_safely(lambda: delete_tenant(platform, slug, export_path))
    if export_path is not None:
        click.echo(f"wrote and checked the export of tenant {slug} to {export_path}")
    click.echo(f"tenant {slug} is purged ({_utc(purged.purged_at)})")


@user.command("operator")
@click.argument("email")
@click.option(
    "--grant/--revoke",
    default=None,
    help="Grant or revoke the right to sign in at /operator/ and manage every "
    "tenant.",
)
@data_dir_option
def user_operator(email: str, grant: bool | None, data_dir: Path | None) -> None:
    """Make user EMAIL an operator (--grant) or no longer one (--revoke)."""
    from .operator import set_operator

    if grant is None:
        fail("pass --grant or --revoke")
    _, platform = open_platform(data_dir)
    run_safely(lambda: set_operator(platform.control, email, grant=bool(grant)))
    click.echo(f"{email} is {'now' if grant else 'no longer'} an operator")


# Teams, reporting lines, permission set assignments and manual shares. The
# commands act as the tenant's first admin, or as the member named by --as.

from .sharing import SharingService  # noqa: E402

as_option = click.option(
    "--as", "as_email", metavar="EMAIL",
    help="Act as this member of the tenant [default: its first admin].",
)


def sharing_for(
    data_dir: Path | None, slug: str, as_email: str | None = None
) -> SharingService:
    """Return the sharing service of tenant ``slug`` acting as ``as_email``,
    else the tenant's first admin."""
    _, platform = open_platform(data_dir)
    runtime = run_safely(lambda: platform.runtime(slug))
    actor = run_safely(lambda: system_actor(platform, slug, as_email))
    return SharingService(platform, runtime, actor)


@main.group()
def team() -> None:
    """Create teams and change their members."""


@team.command("create")
@click.argument("slug")
@click.argument("name")
@click.option("--label", help="Display name of the team [default: NAME].")
@data_dir_option
def team_create(slug: str, name: str, label: str | None, data_dir: Path | None) -> None:
    """Create team NAME (lower-case letters, digits and _) in tenant SLUG."""
    service = sharing_for(data_dir, slug)
    created = run_safely(lambda: service.create_team(name, label))
    click.echo(f"created team {created.name} ({created.label}) in tenant {slug}")


@team.command("add")
@click.argument("slug")
@click.argument("name")
@click.argument("email")
@data_dir_option
def team_add(slug: str, name: str, email: str, data_dir: Path | None) -> None:
    """Add member EMAIL of tenant SLUG to team NAME."""
    service = sharing_for(data_dir, slug)
    user_id = member_id(service.platform, slug, email)
    run_safely(lambda: service.add_team_member(name, user_id))
    click.echo(f"{email} is in team {name}")


@team.command("remove")
@click.argument("slug")
@click.argument("name")
@click.argument("email")
@data_dir_option
def team_remove(slug: str, name: str, email: str, data_dir: Path | None) -> None:
    """Remove member EMAIL of tenant SLUG from team NAME."""
    service = sharing_for(data_dir, slug)
    user_id = service.platform.control.find_user_id(email) or email
    run_safely(lambda: service.remove_team_member(name, user_id))
    click.echo(f"{email} is no longer in team {name}")


@team.command("delete")
@click.argument("slug")
@click.argument("name")
@data_dir_option
def team_delete(slug: str, name: str, data_dir: Path | None) -> None:
    """Delete team NAME of tenant SLUG with its memberships and its shares."""
    service = sharing_for(data_dir, slug)
    run_safely(lambda: service.delete_team(name))
    click.echo(f"deleted team {name} of tenant {slug}")


@team.command("list")
@click.argument("slug")
@data_dir_option
def team_list(slug: str, data_dir: Path | None) -> None:
    """Print the teams of tenant SLUG with their members' e-mail addresses."""
    service = sharing_for(data_dir, slug)
    for item in run_safely(service.list_teams):
        emails = []
        for user_id in item.members:
            actor = service.platform.control.actor(service.runtime.tenant, user_id)
            emails.append(actor.email if actor else f"{user_id} (not a member)")
        click.echo(f"{item.name}\t{item.label}\t{', '.join(emails) or '-'}")


@main.group()
def member() -> None:
    """Change tenant members' reporting lines."""


@member.command("manager")
@click.argument("slug")
@click.argument("email")
@click.argument("manager_email", required=False)
@click.option("--none", "no_manager", is_flag=True,
              help="Remove EMAIL's manager instead of setting one.")
@data_dir_option
def member_manager(
    slug: str, email: str, manager_email: str | None, no_manager: bool,
    data_dir: Path | None,
) -> None:
    """Make member EMAIL of tenant SLUG report to MANAGER_EMAIL, or to no
    one with --none."""
    if no_manager == (manager_email is not None):
        fail("pass either MANAGER_EMAIL or --none")
    service = sharing_for(data_dir, slug)
    user_id = member_id(service.platform, slug, email)
    if manager_email is None:
        run_safely(lambda: service.clear_manager(user_id))
        click.echo(f"{email} reports to no one")
        return
    manager_id = member_id(service.platform, slug, manager_email)
    run_safely(lambda: service.set_manager(user_id, manager_id))
    click.echo(f"{email} reports to {manager_email}")


@main.group("permission-set")
def permission_set() -> None:
    """Assign the permission sets that a tenant's definition declares."""


@permission_set.command("assign")
@click.argument("slug")
@click.argument("email")
@click.argument("name")
@data_dir_option
def permission_set_assign(
    slug: str, email: str, name: str, data_dir: Path | None
) -> None:
    """Give member EMAIL of tenant SLUG the permission set NAME."""
    service = sharing_for(data_dir, slug)
    user_id = member_id(service.platform, slug, email)
    assigned = run_safely(lambda: service.assign_permission_set(user_id, name))
    click.echo(f"{email} has the permission sets: {', '.join(assigned)}")


@permission_set.command("unassign")
@click.argument("slug")
@click.argument("email")
@click.argument("name")
@data_dir_option
def permission_set_unassign(
    slug: str, email: str, name: str, data_dir: Path | None
) -> None:
    """Take the permission set NAME from member EMAIL of tenant SLUG."""
    service = sharing_for(data_dir, slug)
    user_id = service.platform.control.find_user_id(email) or email
    assigned = run_safely(lambda: service.unassign_permission_set(user_id, name))
    click.echo(f"{email} has the permission sets: {', '.join(assigned) or 'none'}")


@main.command("share")
@click.argument("slug")
@click.argument("entity")
@click.argument("record_id")
@click.option("--user", "user_email", metavar="EMAIL",
              help="Share with this member of the tenant.")
@click.option("--team", "team_name", metavar="NAME", help="Share with this team.")
@click.option("--access", type=click.Choice(["read", "edit"]), default="read",
              show_default=True, help="What the share allows.")
@click.option("--remove", "remove_id", metavar="SHARE_ID",
              help="Remove this share of the record instead of adding one.")
@click.option("--list", "list_only", is_flag=True,
              help="Print the record's shares instead of adding one.")
@as_option
@data_dir_option
def share_command(
    slug: str, entity: str, record_id: str, user_email: str | None,
    team_name: str | None, access: str, remove_id: str | None, list_only: bool,
    as_email: str | None, data_dir: Path | None,
) -> None:
    """Share record RECORD_ID of ENTITY in tenant SLUG with a member (--user)
    or a team (--team); --list prints its shares and --remove takes one away."""
    service = sharing_for(data_dir, slug, as_email)
    if list_only or remove_id:
        if remove_id:
            run_safely(lambda: service.unshare(entity, record_id, remove_id))
            click.echo(f"removed share {remove_id}")
        for item in run_safely(lambda: service.shares(entity, record_id)):
            target = f"team {item.team}" if item.team else f"user {item.user_id}"
            click.echo(f"{item.id}\t{target}\t{item.access}")
        return
    if (user_email is None) == (team_name is None):
        fail("pass exactly one of --user EMAIL and --team NAME")
    user_id = None
    if user_email is not None:
        user_id = member_id(service.platform, slug, user_email)
    created, _ = run_safely(lambda: service.share(
        entity, record_id, access, user_id=user_id, team=team_name
    ))
    target = user_email if user_email is not None else f"team {team_name}"
    click.echo(f"shared {entity} {record_id} with {target} at {access} "
               f"(share {created.id})")


# Registers ``metacrm audit`` and ``metacrm personal-data`` on ``main``.
from . import cli_audit as _cli_audit  # noqa: E402,F401

# Registers ``metacrm worker`` and ``metacrm webhook`` on ``main``.
from . import cli_webhooks as _cli_webhooks  # noqa: E402,F401
