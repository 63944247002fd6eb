"""``metacrm audit`` and ``metacrm personal-data``: the change journal and
people's requests for their data, from the command line.

Importing this module adds the commands to ``crm_platform.cli.main``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import audit, personal_data
from .cli import (
    check_new_file,
    data_dir_option,
    fail,
    main,
    open_platform,
    run_safely,
    system_actor,
)
from .records import RecordService
from .tenancy import Platform


@main.command("audit")
@click.argument("slug")
@click.option("--entity", help="Only changes of this entity (its API name).")
@click.option("--record", "record_id", help="Only changes of this record id.")
@click.option("--actor", help="Only changes made by this user (e-mail address).")
@click.option(
    "--action", type=click.Choice(["create", "update", "delete", "erase"]),
    help="Only this kind of change.",
)
@click.option("--field", help="Only changes that touched this field.")
@click.option("--since", help="First day included, YYYY-MM-DD (UTC).")
@click.option("--until", help="Last day included, YYYY-MM-DD (UTC).")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True,
              help="Maximum number of entries to print, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@data_dir_option
def audit_command(
    slug: str,
    entity: str | None,
    record_id: str | None,
    actor: str | None,
    action: str | None,
    field: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """Print tenant SLUG's change journal, newest first."""
    _, platform = open_platform(data_dir)
    runtime = run_safely(lambda: platform.runtime(slug))
    arguments = {
        "entity": entity or "", "record_id": record_id or "", "action": action or "",
        "field": field or "", "since": since or "", "until": until or "",
        "limit": str(limit),
    }
    if actor:
        arguments["actor"] = actor
    query = run_safely(lambda: audit.parse_query(
        arguments, runtime.definition, platform.control.find_user_id
    ))
    entries = run_safely(lambda: audit.search(runtime, query))
    names = audit.actor_names(platform, entries)
    for entry in entries:
        if as_json:
            click.echo(json.dumps(entry.as_json(), ensure_ascii=False))
            continue
        user = names.get(entry.actor_id or "", entry.actor_id or "-")
        fields = ", ".join(sorted(entry.changes)) or "-"
        click.echo(
            f"{entry.seq}\t{entry.at.isoformat(timespec='seconds')}\t{user}\t"
            f"{entry.action}\t{entry.entity}\t{entry.record_id}\t{fields}"
        )


@main.group("personal-data")
def personal_data_group() -> None:
    """Export or erase everything stored about one person."""


person_options = [
    click.argument("slug"),
    click.option("--email", help="E-mail address of the person."),
    click.option(
        "--record", "record", metavar="ENTITY:ID",
        help="A record of the person, such as contact:0190a8e2-…",
    ),
    click.option(
        "--as", "as_email",
        help="E-mail of the admin acting [default: the tenant's first admin].",
    ),
    data_dir_option,
]


def _with_person_options(function: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(person_options):
        function = option(function)
    return function


def _find(
    platform: Platform, slug: str, email: str | None, record: str | None,
    as_email: str | None,
) -> tuple[RecordService, personal_data.Found]:
    if bool(email) == bool(record):
        fail("name the person with either --email or --record ENTITY:ID")
    entity_name, record_id = None, None
    if record:
        entity_name, _, record_id = record.partition(":")
        if not entity_name or not record_id:
            fail(f"invalid --record {record!r}: use ENTITY:ID, such as contact:ID")
    runtime = run_safely(lambda: platform.runtime(slug))
    actor = system_actor(platform, slug, as_email)
    service = platform.records(runtime, actor)
    found = run_safely(
        lambda: personal_data.find(service, email, entity_name, record_id)
    )
    return service, found


@personal_data_group.command("export")
@_with_person_options
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
    help="JSON file to write; must not exist yet.",
)
def personal_data_export(
    slug: str, email: str | None, record: str | None, as_email: str | None,
    data_dir: Path | None, output: Path,
) -> None:
    """Write every record of one person in tenant SLUG, with its history."""
    check_new_file(output)
    _, platform = open_platform(data_dir)
    service, found = _find(platform, slug, email, record, as_email)
    document = run_safely(lambda: personal_data.export_document(service, found))
    output.write_text(json.dumps(document, ensure_ascii=False, indent=2),
                      encoding="utf-8")
    click.echo(f"wrote {len(document['records'])} records and "
               f"{len(document['history'])} history entries to {output}")


@personal_data_group.command("erase")
@_with_person_options
@click.option("--yes", is_flag=True, help="Erase without asking for confirmation.")
def personal_data_erase(
    slug: str, email: str | None, record: str | None, as_email: str | None,
    data_dir: Path | None, yes: bool,
) -> None:
    """Blank the personal fields of every record of one person in tenant SLUG."""
    _, platform = open_platform(data_dir)
    service, found = _find(platform, slug, email, record, as_email)
    total = len(found.people) + len(found.related)
    if not found.people:
        fail("no record matches this person; nothing was erased")
    if not yes:
        click.confirm(
            f"erase the personal fields of {total} records in tenant {slug}? "
            "This cannot be undone", abort=True,
        )
    report = run_safely(lambda: personal_data.erase(service, found))
    for name, count in sorted(report.records.items()):
        click.echo(f"{name}: {count} records ({', '.join(report.fields[name])})")
