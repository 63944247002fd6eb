"""Personal data on request: export everything about one person, or erase it.

A person is found by e-mail address (every entity's personal e-mail fields
are searched) or named by one record. Their records are the matching person
records (a contact, a lead) plus every record whose lookups point at one of
them (activities, cases, survey responses). Fields that metadata marks
``personal`` hold the personal data.

- Export writes one JSON document with all those records in full and their
  change journal, for the person who asked.
- Erasure blanks the personal fields of all those records and removes their
  old values from the journal. Records are kept, so lookups, counts and
  amounts (an opportunity's value, a case's status) stay as they were. The
  journal gets an ``erase`` entry per record, naming the fields and the
  actor, and the platform log gets a line per erasure.

Sensitive fields are encrypted with a random nonce, so an e-mail field that
is also sensitive cannot be searched and is skipped when finding a person.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from metadata_engine.model import Entity

from . import journal
from .errors import BadQuery, Forbidden
from .querying import Condition, ListQuery
from .records import RecordService
from .serialize import record_to_json

log = logging.getLogger(__name__)

FORMAT = "metacrm-personal-data"
FORMAT_VERSION = 1
#: Maximum number of person records one e-mail address may match before the
#: request is rejected as too broad.
MAX_PEOPLE = 50
#: Maximum number of related records one export or erasure covers.
MAX_RELATED = 10_000
PAGE_SIZE = 200


@dataclass
class Found:
    """The records of one person: the person records, then related ones."""

    people: list[tuple[Entity, dict[str, Any]]] = field(default_factory=list)
    related: list[tuple[Entity, dict[str, Any]]] = field(default_factory=list)

    def all(self) -> Iterator[tuple[Entity, dict[str, Any]]]:
        yield from self.people
        yield from self.related

    def related_counts(self) -> dict[str, int]:
        """Return the number of related records per entity name."""
        result: dict[str, int] = {}
        for entity, _ in self.related:
            result[entity.name] = result.get(entity.name, 0) + 1
        return result


@dataclass
class ErasureReport:
    """The changes of one erasure: records and fields per entity."""

    records: dict[str, int] = field(default_factory=dict)
    fields: dict[str, list[str]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"records": self.records, "fields": self.fields}


def personal_fields(entity: Entity) -> list[str]:
    return [item.name for item in entity.fields if item.personal]


def require_admin(service: RecordService) -> None:
    if not service.actor.is_admin:
        raise Forbidden(
            "only tenant admins can export or erase a person's data: ask an "
            f"admin of tenant {service.runtime.slug!r}"
        )


def find(
    service: RecordService,
    email: str | None = None,
    entity_name: str | None = None,
    record_id: str | None = None,
) -> Found:
    """Return the records of the person with ``email``, or of the person
    whose record is ``entity_name``/``record_id``."""
    found = Found()
    if email and (entity_name or record_id):
        raise BadQuery(
            "name the person once: give an e-mail address, or an entity and a "
            "record id, not both",
            details={"email": ["give either email or entity and record_id"]},
        )
    if email:
        found.people = _people_by_email(service, email.strip())
    elif entity_name and record_id:
        entity = service.runtime.entity(entity_name)
        if not personal_fields(entity):
            raise BadQuery(
                f"entity {entity_name!r} has no personal fields, so its records "
                "are not people: name a contact or a lead, or search by e-mail",
                details={"entity": [f"{entity_name!r} has no personal fields"]},
            )
        found.people = [(entity, service.get(entity_name, record_id))]
    else:
        raise BadQuery(
            "name the person: give an e-mail address, or an entity and a record id",
            details={"email": ["missing"]},
        )
    found.related = _related(service, found.people)
    return found


def _people_by_email(
    service: RecordService, email: str
) -> list[tuple[Entity, dict[str, Any]]]:
    if "@" not in email or len(email) > 254:
        raise BadQuery(
            f"invalid e-mail address {email!r}: give the whole address, such as "
            "name@example.com",
            details={"email": [f"invalid e-mail address {email!r}"]},
        )
    expected = email.casefold()
    people: list[tuple[Entity, dict[str, Any]]] = []
    for entity in service.runtime.definition.entities:
        names = [
            item.name
            for item in entity.fields
            if item.personal and item.type == "email" and not item.sensitive
        ]
        for name in names:
            query = ListQuery(limit=MAX_PEOPLE)
            query.conditions.append(Condition(name, "icontains", email))
            page = service.list(entity.name, query)
            for record in page.records:
                value = record.get(name)
                known = {str(item["id"]) for _, item in people}
                matches = isinstance(value, str) and value.casefold() == expected
                if matches and str(record["id"]) not in known:
                    people.append((entity, record))
    if len(people) > MAX_PEOPLE:
        raise BadQuery(
            f"{len(people)} records match {email!r}, more than {MAX_PEOPLE}: "
            "name one record instead",
        )
    return people


def _related(
    service: RecordService, people: list[tuple[Entity, dict[str, Any]]]
) -> list[tuple[Entity, dict[str, Any]]]:
    related: list[tuple[Entity, dict[str, Any]]] = []
    seen = {str(record["id"]) for _, record in people}
    for entity, record in people:
        for other, lookup in service.runtime.definition.referencing(entity.name):
            query = ListQuery(sort=["created_at"], limit=PAGE_SIZE)
            query.conditions.append(Condition(lookup.name, "eq", record["id"]))
            while True:
                page = service.list(other.name, query)
                for item in page.records:
                    if str(item["id"]) not in seen:
                        seen.add(str(item["id"]))
                        related.append((other, item))
                if len(related) > MAX_RELATED:
                    raise BadQuery(
                        f"more than {MAX_RELATED} records refer to this person: "
                        "export them with 'metacrm export' instead"
                    )
                if page.next_cursor is None:
                    break
                query.cursor = page.next_cursor
    return related


def export_document(service: RecordService, found: Found) -> dict[str, Any]:
    """Return the person's records in full, with their journal, as JSON."""
    require_admin(service)
    records = []
    history: list[dict[str, Any]] = []
    with service.runtime.engine.connect() as conn:
        for entity, record in found.all():
            records.append(
                {
                    "entity": entity.name,
                    "label": entity.label.get(service.locale),
                    "person": any(record is item for _, item in found.people),
                    "record": record_to_json(entity, record, service.actor.role),
                }
            )
            entries = journal.history(conn, entity.name, str(record["id"]))
            history.extend(entry.as_json() for entry in entries)
    log.warning(
        "exported personal data of %d records in tenant %s for user %s",
        len(records), service.runtime.slug, service.actor.user_id,
    )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tenant": service.runtime.slug,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(),
        "exported_by": service.actor.email,
        "records": records,
        "history": sorted(history, key=lambda item: item["seq"]),
    }


def erase(service: RecordService, found: Found) -> ErasureReport:
    """Blank the personal fields of every record of the person."""
    require_admin(service)
    report = ErasureReport()
    targets = []
    for entity, record in found.all():
        names = [
            name for name in personal_fields(entity)
            if record.get(name) not in (None, "", [])
        ]
        if not names:
            continue
        targets.append((entity.name, str(record["id"]), names))
        report.records[entity.name] = report.records.get(entity.name, 0) + 1
        known = report.fields.setdefault(entity.name, [])
        known.extend(name for name in names if name not in known)
    if targets:
        service.erase(targets)
    log.warning(
        "erased personal data in tenant %s for user %s: %s",
        service.runtime.slug, service.actor.user_id, report.records,
    )
    return report
