"""The record service: every read and write of tenant records goes here.

The API, the HTML views and the importer call ``RecordService`` and never
touch entity tables themselves, so validation, system columns, optimistic
locking, the record quota, the change journal and record permissions apply
on every path. Permissions come from ``access.Access``: each read adds the
user's read predicate to its WHERE clause and drops hidden fields, and each
write carries the edit or delete predicate in its UPDATE or DELETE, so no
row is loaded to be checked in Python and no check can race the write.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import decimal
import logging
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError
from uuid_utils import uuid7

from metadata_engine.messages import messages_for
from metadata_engine.model import ADMIN_ROLE, SYSTEM_COLUMNS, Definition, Entity, Field
from metadata_engine.record_rules import (
    apply_record_rules,
    field_expressions,
    fill_default_expressions,
    formula_fields,
    has_record_rules,
    read_only_errors,
)
from metadata_engine.tables import build_service_tables
from metadata_engine.validation import WRITABLE_SYSTEM_COLUMNS

from . import automation, journal
from .access import Access, Principal, access_for, load_principal
from .control import Actor
from .errors import (
    BadQuery,
    Conflict,
    Forbidden,
    LimitReached,
    NotFound,
    RecordInvalid,
    VersionConflict,
)
from .querying import (
    Condition,
    ListQuery,
    check_cursor_types,
    compile_condition,
    compile_search,
    decode_cursor,
    encode_cursor,
    keyset_after,
)
from .rollups import refresh_rollups
from .tenancy import TenantRuntime

log = logging.getLogger(__name__)

#: Largest text a single value may have, whatever its field allows, in
#: characters: a guard against oversized requests reaching the database.
MAX_VALUE_LENGTH = 100_000
#: Placeholder that a personal-data erasure writes into a required text field.
ERASED_TEXT = "[erased]"
#: Deepest chain of ON DELETE CASCADE lookups that one delete may follow.
MAX_CASCADE_DEPTH = 10
#: Loaded rows of an import batch, each with its index in the batch.
IndexedRows = list[tuple[int, dict[str, Any]]]
_UNIQUE_SQLITE = re.compile(r"UNIQUE constraint failed: ([\w.]+(?:, [\w.]+)*)")
#: The tenant's service tables as real ``Table`` objects: unlike ``sa.table()``
#: constructs, they follow the engine's schema_translate_map into the
#: tenant's PostgreSQL schema.
_SERVICE_TABLES = sa.MetaData()
build_service_tables(_SERVICE_TABLES)


@dataclass
class Page:
    """One page of a list: the records, a cursor to the next page, a total."""

    records: list[dict[str, Any]]
    next_cursor: str | None
    total: int | None = None


@dataclass
class BatchResult:
    """Counts and errors of one import batch; ``errors`` maps a row's index in
    the batch to its field errors."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: dict[int, dict[str, list[str]]] = dataclasses.field(default_factory=dict)


@dataclass
class RelatedList:
    """Records of ``entity`` whose lookup ``field`` points at one record."""

    entity: Entity
    field: Field
    page: Page


class RecordService:
    """Reads and writes records of one tenant on behalf of one user."""

    def __init__(
        self,
        runtime: TenantRuntime,
        actor: Actor,
        locale: str = "en",
        is_member: Callable[[str], bool] | None = None,
        request_id: str | None = None,
        role_members: Callable[[Collection[str]], builtins.list[str]] | None = None,
    ) -> None:
        """``is_member`` checks whether a user id belongs to a member of the
        tenant; without it, records can only be owned by ``actor``.
        ``role_members`` lists the members holding some roles, for workflow
        approvers and notifications. ``request_id`` goes into the journal
        entries of this service's writes."""
        self.runtime = runtime
        self.actor = actor
        self.locale = locale
        self.messages = messages_for(locale)
        self.is_member = is_member
        self.role_members = role_members
        self.request_id = request_id
        self._principal: Principal | None = None
        self._access: dict[str, Access] = {}

    # Permissions

    @property
    def principal(self) -> Principal:
        """The actor with their permission sets and teams, read once."""
        if self._principal is None:
            if self.actor.role == "admin":
                self._principal = Principal(self.actor.user_id, self.actor.role)
            else:
                with self.runtime.engine.connect() as conn:
                    self._principal = load_principal(
                        conn, self.actor.user_id, self.actor.role
                    )
        return self._principal

    def access(self, entity_name: str) -> Access:
        """Return the actor's rights on ``entity_name`` (``NotFound`` for an
        unknown entity)."""
        cached = self._access.get(entity_name)
        if cached is None:
            entity = self.runtime.entity(entity_name)
            cached = access_for(self.runtime.definition, entity, self.principal)
            self._access[entity_name] = cached
        return cached

    def require(self, entity_name: str, right: str) -> Access:
        """Return the actor's access to ``entity_name``, or raise
        ``Forbidden`` if no grant gives them ``right`` on any record."""
        access = self.access(entity_name)
        if not access.allows(right):
            label = access.entity.plural_label.get(self.locale)
            raise Forbidden(
                f"role {self.actor.role!r} may not {right.replace('_', ' ')} "
                f"{label}: no grant of the role or the user's permission sets "
                "gives this right; ask an admin of the tenant",
                details={"entity": entity_name, "right": right},
            )
        return access

    def readable(self, entity_name: str, record_id: str) -> bool:
        """Return True if the record exists and the actor may read it."""
        access = self.access(entity_name)
        with self.runtime.engine.connect() as conn:
            return self._passes(conn, access, "read", str(record_id))

    # Reads

    def list(self, entity_name: str, query: ListQuery) -> Page:
        """Return one page of records matching ``query``, in its sort order
        with ``id`` as the last tie-breaker, so cursors are stable."""
        access = self.require(entity_name, "read")
        table = self.runtime.tables[entity_name]
        where = self._where(access, table, query)
        for key in query.sort:
            self._check_visible(access, key.removeprefix("-"), "sort by")

        sort = [*query.sort]
        if not any(key.removeprefix("-") == "id" for key in sort):
            first_descending = sort[0].startswith("-") if sort else True
            sort.append("-id" if first_descending else "id")

        statement = sa.select(table).where(*where)
        if query.cursor:
            values = decode_cursor(query.cursor, len(sort))
            check_cursor_types(table, sort, values)
            nulls_high = self.runtime.engine.dialect.name == "postgresql"
            statement = statement.where(keyset_after(table, sort, values, nulls_high))
        order = [
            table.c[key[1:]].desc() if key.startswith("-") else table.c[key].asc()
            for key in sort
        ]
        statement = statement.order_by(*order).limit(query.limit + 1)
        if query.offset and not query.cursor:
            statement = statement.offset(query.offset)

        with self.runtime.engine.connect() as conn:
            rows = [
                access.strip(dict(row)) for row in conn.execute(statement).mappings()
            ]
            total = None
            if query.count:
                counter = sa.select(sa.func.count()).select_from(table).where(*where)
                total = conn.execute(counter).scalar_one()

        next_cursor = None
        if len(rows) > query.limit:
            rows = rows[: query.limit]
            last = rows[-1]
            next_cursor = encode_cursor([last[key.removeprefix("-")] for key in sort])
        return Page(records=rows, next_cursor=next_cursor, total=total)

    def _where(
        self, access: Access, table: sa.Table, query: ListQuery
    ) -> builtins.list[sa.ColumnElement[bool]]:
        """Return the WHERE clauses of a list query: the user's filters and
        search, and the read predicate of their rights."""
        for condition in query.conditions:
            self._check_visible(access, condition.field, "filter on")
        where = [compile_condition(table, condition) for condition in query.conditions]
        if query.search:
            where.append(
                compile_search(access.entity, table, query.search, access.hidden)
            )
        predicate = access.predicate("read", table)
        if predicate is not None:
            where.append(predicate)
        return where

    def _check_visible(self, access: Access, name: str, action: str) -> None:
        """Refuse a filter or sort key on a hidden field with the error an
        unknown field gets, so that ordering cannot probe its values."""
        if access.visible(name):
            return
        entity = access.entity
        visible = [n for n in entity.field_names if access.visible(n)]
        raise BadQuery(
            f"unknown field {name!r} for entity {entity.name!r}",
            details={"field": name, "fields": visible, "action": action},
        )

    def get(self, entity_name: str, record_id: str) -> dict[str, Any]:
        """Return one record or raise ``NotFound``; a record the actor may
        not read is not found either."""
        access = self.require(entity_name, "read")
        table = self.runtime.tables[entity_name]
        statement = sa.select(table).where(table.c.id == str(record_id))
        predicate = access.predicate("read", table)
        if predicate is not None:
            statement = statement.where(predicate)
        with self.runtime.engine.connect() as conn:
            row = conn.execute(statement).mappings().first()
        if row is None:
            raise NotFound(f"{entity_name} record {record_id!r} not found")
        return access.strip(dict(row))

    def titles(self, entity_name: str, ids: Iterable[str]) -> dict[str, str]:
        """Return the title of each record in ``ids`` that exists and that
        the actor may read."""
        requested_ids = {str(record_id) for record_id in ids if record_id}
        if not requested_ids:
            return {}
        access = self.access(entity_name)
        if not access.allows("read"):
            return {}
        table = self.runtime.tables[entity_name]
        title = _title_column(access, table)
        statement = sa.select(table.c.id, title).where(table.c.id.in_(requested_ids))
        predicate = access.predicate("read", table)
        if predicate is not None:
            statement = statement.where(predicate)
        with self.runtime.engine.connect() as conn:
            rows = conn.execute(statement)
            return {
                row[0]: str(row[1] if row[1] is not None else row[0]) for row in rows
            }

    def lookup_titles(
        self, entity_name: str, records: Iterable[Mapping[str, Any]]
    ) -> dict[str, dict[str, str]]:
        """Return, per lookup field, the titles of the records it points at."""
        entity = self.runtime.entity(entity_name)
        records = list(records)
        result: dict[str, dict[str, str]] = {}
        for field in entity.lookups:
            ids = {record.get(field.name) for record in records}
            result[field.name] = self.titles(
                field.target or "", {str(i) for i in ids if i is not None}
            )
        return result

    def search_titles(
        self, entity_name: str, text: str, limit: int = 20
    ) -> builtins.list[tuple[str, str]]:
        """Return (id, title) pairs for a lookup picker: only records the
        actor may read."""
        access = self.access(entity_name)
        if not access.allows("read"):
            return []
        table = self.runtime.tables[entity_name]
        title = _title_column(access, table)
        statement = sa.select(table.c.id, title).order_by(title).limit(limit)
        if text:
            statement = statement.where(
                compile_search(access.entity, table, text, access.hidden)
            )
        predicate = access.predicate("read", table)
        if predicate is not None:
            statement = statement.where(predicate)
        with self.runtime.engine.connect() as conn:
            return [(row[0], str(row[1] or row[0])) for row in conn.execute(statement)]

    def group_counts(
        self, entity_name: str, query: ListQuery, field_name: str, limit: int = 12
    ) -> builtins.list[tuple[Any, int]]:
        """Count the records matching ``query`` per value of one field, most
        frequent first: one GROUP BY in the database, whatever the row count."""
        access = self.require(entity_name, "read")
        self._check_visible(access, field_name, "count by")
        table = self.runtime.tables[entity_name]
        column = table.c[field_name]
        count = sa.func.count().label("count")
        statement = (
            sa.select(column, count)
            .where(*self._where(access, table, query))
            .group_by(column)
            .order_by(count.desc(), column)
            .limit(limit)
        )
        with self.runtime.engine.connect() as conn:
            return [(row[0], int(row[1])) for row in conn.execute(statement)]

    def related(
        self, entity_name: str, record_id: str, limit: int = 10
    ) -> builtins.list[RelatedList]:
        """Return the records of other entities whose lookups point here."""
        self.get(entity_name, record_id)
        lists = []
        for entity, field in self.runtime.definition.referencing(entity_name):
            access = self.access(entity.name)
            if not access.allows("read") or not access.visible(field.name):
                continue
            query = ListQuery(limit=limit, count=True)
            query.conditions.append(Condition(field.name, "eq", record_id))
            lists.append(RelatedList(entity, field, self.list(entity.name, query)))
        return lists

    # Writes

    def create(self, entity_name: str, data: Mapping[str, Any]) -> dict[str, Any]:
        self.check_writable()
        access = self.require(entity_name, "create")
        entity = access.entity
        values = self._load(entity, data, partial=False, access=access)
        entries = self._journal()
        with self.runtime.engine.begin() as conn:
            entries.start(conn, expected=1)
            self._check_quota(conn, 1)
            self._check_lookup_access(conn, entity, values)
            run = automation.Run(self, conn, entries, dt.datetime.now(dt.UTC))
            record = self._insert(run, entity, values)
        log.info(
            "created %s %s in tenant %s", entity_name, values["id"], self.runtime.slug
        )
        return access.strip(record)

    def create_in_run(
        self,
        run: automation.Run,
        entity: Entity,
        data: Mapping[str, Any],
        owner: str,
    ) -> dict[str, Any]:
        """Create a record for an automation action or a workflow transition,
        in ``run``'s transaction and in system context; ``owner`` names the
        rule in errors."""
        access = self.system_access(entity.name)
        try:
            values = self._load(entity, data, partial=False, access=access)
        except RecordInvalid as err:
            raise RecordInvalid(
                f"{owner} creates an invalid {entity.name}: {err.message}; correct "
                "the rule's values",
                details=err.details,
            ) from err
        self._check_quota(run.conn, 1)
        return self._insert(run, entity, values)

    def _insert(
        self, run: automation.Run, entity: Entity, values: dict[str, Any]
    ) -> dict[str, Any]:
        """Complete, check and insert a new record, journal it and run the
        automation it triggers."""
        conn = run.conn
        self.check_read_only(entity, None, values)
        self._fill_new(entity, values, run.now)
        self._fill_default_expressions(entity, values, run.now)
        if self.actor.role != ADMIN_ROLE:
            # Admins may create records in any state, to load history.
            self._check_initial_states(entity, values)
        else:
            self._fill_initial_states(entity, values)
        rules = automation.before_save(run, entity, values, None, "create")
        self._apply_rules(entity, values)
        for field in entity.fields:
            if field.type == "auto_number":
                values[field.name] = _next_number(conn, entity, field)
        table = self.runtime.tables[entity.name]
        # Values as parameters, not .values(): the compiled INSERT is then
        # cached per set of columns instead of built for every record.
        self._execute_write(conn, entity, table.insert(), values, values)
        self._refresh_rollups(conn, entity.name, [values])
        record = _as_stored(table, entity, values)
        run.entries.created(entity, record)
        run.entries.write(conn)
        automation.after_save(run, entity, record, None, rules, "create")
        return record

    def update(
        self,
        entity_name: str,
        record_id: str,
        data: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Change the given fields; with ``expected_version``, only if the
        record is still at that version (else ``VersionConflict``)."""
        self.check_writable()
        access = self.require(entity_name, "edit")
        values = self._load(access.entity, data, partial=True, access=access)
        entries = self._journal()
        with self.runtime.engine.begin() as conn:
            entries.start(conn, expected=1)
            run = automation.Run(self, conn, entries, dt.datetime.now(dt.UTC))
            after = self.update_in_run(run, access, record_id, values, expected_version)
        return access.strip(after)

    def update_in_run(
        self,
        run: automation.Run,
        access: Access,
        record_id: str,
        values: dict[str, Any],
        expected_version: int | None = None,
        transition: str | None = None,
        system: bool = False,
    ) -> dict[str, Any]:
        """Write loaded ``values`` to a record in ``run``'s transaction, as
        ``access`` allows. Only ``transition`` (the name of a workflow
        transition being performed) may change a workflow's state field.
        ``system`` writes (automation, approved transitions) are not held to
        the fields' ``read_only_when`` conditions, which concern users."""
        entity = access.entity
        table = self.runtime.tables[entity.name]
        conn = run.conn
        if "id" in values and values["id"] != record_id:
            raise RecordInvalid(
                "the id of a record cannot be changed",
                details={"id": [self.messages["read_only"]]},
            )
        values.pop("id", None)
        before = _read_row(conn, table, record_id)
        rules: builtins.list[Any] = []
        # Only changed lookups: one that still points where it did may point
        # at a record the actor cannot read, set by someone else.
        changed_lookups = {
            k: v for k, v in values.items() if before is None or before.get(k) != v
        }
        if before is not None and self._reads_whole_record(entity, transition):
            # Rules, formulas and automation read the stored record, so they
            # run only once the actor may change it. They see the input on
            # top of the stored values.
            if not self._passes(conn, access, "edit", record_id):
                self._raise_write_rejected(
                    conn, access, "edit", record_id, expected_version
                )
            if not system:
                self.check_read_only(entity, before, values)
            self._check_state_change(entity, before, values, transition)
            merged = {**before, **values}
            rules = automation.before_save(run, entity, merged, before, "update")
            self._apply_rules(entity, merged)
            values.update(
                (name, value)
                for name, value in merged.items()
                if name in values or value != before.get(name)
            )
        values.update(
            updated_at=run.now,
            updated_by=self.actor.user_id,
            version=table.c.version + 1,
        )
        statement = table.update().where(table.c.id == record_id).values(**values)
        if expected_version is not None:
            statement = statement.where(table.c.version == expected_version)
        predicate = access.predicate("edit", table)
        if predicate is not None:
            statement = statement.where(predicate)
        result = self._execute_write(conn, entity, statement, values)
        if before is None or result.rowcount == 0:
            self._raise_write_rejected(
                conn, access, "edit", record_id, expected_version
            )
        assert before is not None
        self._check_lookup_access(conn, entity, changed_lookups)
        self._check_owner_change(access, before, values)
        after = _read_row(conn, table, record_id)
        assert after is not None
        self._refresh_rollups(conn, entity.name, [before, after])
        automation.rearm(conn, self.runtime.definition, entity, before, after)
        run.entries.updated(entity, before, after)
        run.entries.write(conn)
        automation.after_save(run, entity, after, before, rules, "update")
        return after

    def _reads_whole_record(self, entity: Entity, transition: str | None) -> bool:
        definition = self.runtime.definition
        return (
            transition is not None
            or has_record_rules(entity)
            or bool(field_expressions(entity).read_only)
            or bool(definition.workflows_for(entity.name))
            or bool(definition.automations_for(entity.name, "update"))
        )

    def delete(
        self, entity_name: str, record_id: str, expected_version: int | None = None
    ) -> None:
        """Delete a record unless others still refer to it with ``restrict``."""
        self.check_writable()
        access = self.require(entity_name, "delete")
        entity = access.entity
        table = self.runtime.tables[entity_name]
        predicate = access.predicate("delete", table)
        entries = self._journal()
        with self.runtime.engine.begin() as conn:
            entries.start(conn, expected=1)
            # Refuse before saying anything about the records that refer to
            # this one, which the actor may not be allowed to know about.
            permitted = sa.select(table.c.id).where(table.c.id == record_id)
            if predicate is not None:
                permitted = permitted.where(predicate)
            if conn.execute(permitted).first() is None:
                self._raise_write_rejected(conn, access, "delete", record_id, None)
            self._check_not_referenced(conn, entity_name, record_id)
            before = _read_row(conn, table, record_id)
            cascaded: builtins.list[tuple[str, dict[str, Any]]] = []
            if before is not None:
                self._journal_cascade(
                    conn, entries, entity_name, [record_id], cascaded=cascaded
                )
            statement = table.delete().where(table.c.id == record_id)
            if expected_version is not None:
                statement = statement.where(table.c.version == expected_version)
            if predicate is not None:
                statement = statement.where(predicate)
            result = conn.execute(statement)
            if before is None or result.rowcount == 0:
                self._raise_write_rejected(
                    conn, access, "delete", record_id, expected_version
                )
            assert before is not None
            self._refresh_rollups(conn, entity_name, [before])
            for other, row in cascaded:
                self._refresh_rollups(conn, other, [row])
            entries.deleted(entity, before)
            entries.write(conn)
            _cancel_requests(conn, self.runtime.definition,
                             [(entity_name, before), *cascaded])
            run = automation.Run(self, conn, entries, dt.datetime.now(dt.UTC))
            rules = automation.before_save(run, entity, before, before, "delete")
            automation.after_save(run, entity, before, before, rules, "delete")
            entries.write(conn)
        log.info(
            "deleted %s %s in tenant %s", entity_name, record_id, self.runtime.slug
        )

    def erase(
        self, targets: Sequence[tuple[str, str, Sequence[str]]]
    ) -> builtins.list[dict[str, Any]]:
        """Blank fields of records for a personal-data erasure, all in one
        transaction; each target is (entity name, record id, field names).
        Returns the records as stored afterwards; see ``erase_fields``."""
        self.check_writable()
        entries = self._journal()
        with self.runtime.engine.begin() as conn:
            entries.start(conn, expected=len(targets))
            erased = erase_fields(conn, self.runtime, targets, entries)
            entries.write(conn)
        log.warning(
            "erased personal fields of %d records in tenant %s",
            len(erased), self.runtime.slug,
        )
        return erased

    def import_batch(
        self,
        entity_name: str,
        rows: Sequence[Mapping[str, Any]],
        key: str | None = None,
        dry_run: bool = False,
        keep_existing: bool = False,
    ) -> BatchResult:
        """Validate and write many records in one transaction.

        With ``keep_existing``, rows whose key matches a stored record leave
        that record as it is, so edits made since an earlier import survive.

        Rows that fail validation are reported by their index in ``rows`` and
        skipped; the others are written. With ``key``, a row whose key value
        matches a stored record updates it (unchanged records are left
        alone), so importing the same file twice creates nothing new.
        """
        self.check_writable()
        access = self.require(entity_name, "import")
        entity = access.entity
        table = self.runtime.tables[entity_name]
        if key:
            self._check_visible(access, key, "import by")
        if key and entity.has_field(key) and entity.field(key).sensitive:
            raise RecordInvalid(
                f"invalid import key {key!r}: {entity_name}.{key} is encrypted, "
                "so stored values cannot be matched; use an unencrypted unique "
                "field as the key",
                details={key: ["an encrypted field cannot be an import key"]},
            )
        result = BatchResult()
        loaded: IndexedRows = []
        schema = self.runtime.schema(entity.name, self.locale)
        read_only = _read_only_names(entity) | access.hidden | access.read_only
        for index, row in enumerate(rows):
            try:
                if schema.is_typed(row) and _passes_guards(read_only, row):
                    problems = schema.validate_typed(row)
                    if problems:
                        raise RecordInvalid("invalid row", problems)
                    loaded.append((index, dict(row)))
                else:
                    loaded.append(
                        (index, self._load(entity, row, partial=False, access=access))
                    )
            except RecordInvalid as err:
                result.errors[index] = err.details or {"_schema": [err.message]}
        entries = self._journal()
        with self.runtime.engine.begin() as conn:
            journal.lock(conn)
            run = automation.Run(self, conn, entries, dt.datetime.now(dt.UTC))
            loaded = self._drop_missing_lookups(conn, entity, loaded, result)
            existing = self._existing_by_key(conn, access, table, key, loaded)
            if keep_existing:
                result.unchanged += sum(
                    1 for _, row in loaded if key and row.get(key) in existing
                )
                loaded = [
                    (index, row)
                    for index, row in loaded
                    if not key or row.get(key) not in existing
                ]
            matched: dict[int, builtins.list[Any]] = {}
            inserts, updates = self._split_writes(
                run, entity, key, loaded, existing, result, matched
            )
            inserts, updates = self._permitted_writes(
                conn, access, inserts, updates, result
            )
            if dry_run:
                result.created = len(inserts)
                result.updated = len(updates)
                return result
            self._check_quota(conn, len(inserts))
            written = self._write_batch(conn, entity, table, inserts, updates, result)
            befores = {
                stored["id"]: stored for stored in existing.values()
            }
            after_save: builtins.list[tuple[int, dict[str, Any], Any]] = []
            for index, values in inserts:
                if index in written:
                    entries.created(entity, values)
                    after_save.append((index, values, None))
            touched: builtins.list[dict[str, Any]] = []
            for index, values in updates:
                if index in written:
                    before = befores[values["_id"]]
                    after = _updated_row(before, values)
                    entries.updated(entity, before, after)
                    automation.rearm(conn, self.runtime.definition, entity, before,
                                     after)
                    touched += [before, after]
                    after_save.append((index, after, before))
            touched += [values for index, values in inserts if index in written]
            self._refresh_rollups(conn, entity_name, touched)
            entries.write(conn)
            for index, record, before in after_save:
                if matched.get(index):
                    on = "create" if before is None else "update"
                    automation.after_save(
                        run, entity, record, before, matched[index], on
                    )
            entries.write(conn)
        return result

    def _drop_missing_lookups(
        self,
        conn: sa.Connection,
        entity: Entity,
        loaded: IndexedRows,
        result: BatchResult,
    ) -> IndexedRows:
        for field in entity.lookups:
            target_ids = {
                values[field.name] for _, values in loaded if values.get(field.name)
            }
            if not target_ids or not field.target:
                continue
            target = self.runtime.tables[field.target]
            statement = sa.select(target.c.id).where(target.c.id.in_(target_ids))
            found = set(conn.execute(self._readable_only(field.target, statement))
                        .scalars())
            valid_rows = []
            for index, values in loaded:
                target_id = values.get(field.name)
                if target_id and target_id not in found:
                    label = self.runtime.entity(field.target).label.get(self.locale)
                    message = self.messages["lookup_missing"].format(
                        entity=label, input=target_id
                    )
                    result.errors.setdefault(index, {})[field.name] = [message]
                else:
                    valid_rows.append((index, values))
            loaded = valid_rows
        return loaded

    def _existing_by_key(
        self,
        conn: sa.Connection,
        access: Access,
        table: sa.Table,
        key: str | None,
        loaded: IndexedRows,
    ) -> dict[Any, dict[str, Any]]:
        """Return the stored records whose ``key`` matches a row, among the
        records the actor may read: a key matching only records they cannot
        read must look like no match, or an import would reveal values."""
        if key is None:
            return {}
        values = [row[key] for _, row in loaded if row.get(key) is not None]
        existing: dict[Any, dict[str, Any]] = {}
        readable = access.predicate("read", table)
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            statement = sa.select(table).where(table.c[key].in_(chunk))
            if readable is not None:
                statement = statement.where(readable)
            rows = conn.execute(statement)
            for row in rows.mappings():
                existing[row[key]] = dict(row)
        return existing

    def _split_writes(
        self,
        run: automation.Run,
        entity: Entity,
        key: str | None,
        loaded: IndexedRows,
        existing: Mapping[Any, Mapping[str, Any]],
        result: BatchResult,
        matched: dict[int, builtins.list[Any]],
    ) -> tuple[IndexedRows, IndexedRows]:
        """Sort rows into inserts and updates of changed fields, applying
        rules, formulas and the before-save automation to each. ``matched``
        receives the automation rules that each row triggered."""
        now = run.now
        inserts = []
        updates = []
        seen: set[Any] = set()
        for index, values in loaded:
            key_value = values.get(key) if key else None
            if key and key_value is not None:
                if key_value in seen:
                    result.errors[index] = {
                        key: [f"duplicate {key} {key_value!r} in this file"]
                    }
                    continue
                seen.add(key_value)
            stored = existing.get(key_value) if key_value is not None else None
            if stored is not None:
                merged = {**stored, **values}
                try:
                    self.check_read_only(entity, stored, values)
                    self._check_state_change(entity, stored, values, None)
                    matched[index] = automation.before_save(
                        run, entity, merged, stored, "update"
                    )
                except RecordInvalid as err:
                    result.errors[index] = err.details or {"_schema": [err.message]}
                    continue
                values = {
                    **values,
                    **{
                        name: value
                        for name, value in merged.items()
                        if value != stored.get(name)
                    },
                }
                errors = self._rule_errors(entity, merged)
                if errors:
                    result.errors[index] = errors
                    continue
                computed = {name: merged[name] for name in formula_fields(entity)}
                values = {**values, **computed}
                changed = {
                    name: value
                    for name, value in values.items()
                    if name != "id" and stored.get(name) != value
                }
                if not changed:
                    result.unchanged += 1
                    continue
                changed.update(
                    updated_at=now,
                    updated_by=self.actor.user_id,
                    _id=stored["id"],
                    _version=stored["version"] + 1,
                )
                updates.append((index, changed))
                continue
            try:
                self.check_read_only(entity, None, values)
            except RecordInvalid as err:
                result.errors[index] = err.details or {"_schema": [err.message]}
                continue
            self._fill_new(entity, values, now)
            try:
                self._fill_default_expressions(entity, values, now)
                if self.actor.role != ADMIN_ROLE:
                    self._check_initial_states(entity, values)
                else:
                    self._fill_initial_states(entity, values)
                matched[index] = automation.before_save(
                    run, entity, values, None, "create"
                )
            except RecordInvalid as err:
                result.errors[index] = err.details or {"_schema": [err.message]}
                continue
            errors = self._rule_errors(entity, values)
            if errors:
                result.errors[index] = errors
                continue
            inserts.append((index, values))
        return inserts, updates

    def _write_batch(
        self,
        conn: sa.Connection,
        entity: Entity,
        table: sa.Table,
        inserts: IndexedRows,
        updates: IndexedRows,
        result: BatchResult,
    ) -> set[int]:
        """Write with executemany; on a constraint error, retry row by row so
        that one bad row does not cost the others. Returns the indexes of the
        rows written."""
        for field in entity.fields:
            if field.type == "auto_number" and inserts:
                numbers = _reserve_numbers(conn, entity, field, len(inserts))
                for (_, values), number in zip(inserts, numbers, strict=True):
                    values[field.name] = number
        columns = [column.name for column in table.columns]
        insert_rows = [
            {name: values.get(name) for name in columns} for _, values in inserts
        ]
        try:
            with conn.begin_nested():
                if insert_rows:
                    conn.execute(table.insert(), insert_rows)
                for group in _group_by_columns(updates):
                    conn.execute(
                        _update_statement(table, group[0][1]),
                        [_update_parameters(values) for _, values in group],
                    )
            result.created += len(inserts)
            result.updated += len(updates)
            return {index for index, _ in inserts} | {index for index, _ in updates}
        except sa.exc.IntegrityError:
            log.info("batch of %s hit a constraint; retrying row by row", entity.name)
        written = set()
        for (index, _), row in zip(inserts, insert_rows, strict=True):
            if self._write_one(
                conn, entity, table.insert().values(**row), index, result, created=True
            ):
                written.add(index)
        for index, values in updates:
            statement = _update_statement(table, values)
            if self._write_one(
                conn,
                entity,
                statement,
                index,
                result,
                created=False,
                parameters=_update_parameters(values),
            ):
                written.add(index)
        return written

    def _write_one(
        self,
        conn: sa.Connection,
        entity: Entity,
        statement: Any,
        index: int,
        result: BatchResult,
        created: bool,
        parameters: Mapping[str, Any] | None = None,
    ) -> bool:
        try:
            with conn.begin_nested():
                if parameters is None:
                    conn.execute(statement)
                else:
                    conn.execute(statement, dict(parameters))
        except sa.exc.IntegrityError as err:
            fields = _unique_fields(self.runtime.tables[entity.name], err) or [
                "_schema"
            ]
            message = (
                self.messages["unique"] if fields != ["_schema"] else str(err.orig)
            )
            result.errors[index] = {name: [message] for name in fields}
            return False
        if created:
            result.created += 1
        else:
            result.updated += 1
        return True

    # Helpers

    def _load(
        self, entity: Entity, data: Mapping[str, Any], partial: bool, access: Access
    ) -> dict[str, Any]:
        """Validate input through the entity's schema and the actor's field
        rights, collecting every error."""
        if not isinstance(data, Mapping):
            raise RecordInvalid(
                f"a record must be a JSON object, not {type(data).__name__}"
            )
        errors: dict[str, builtins.list[str]] = {}
        clean: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, str) and len(value) > MAX_VALUE_LENGTH:
                errors[key] = [self.messages["max_length"].format(max=MAX_VALUE_LENGTH)]
            elif _is_read_only(entity, key):
                errors[key] = [self.messages["read_only"]]
            elif access.level(key) != "editable" and entity.has_field(key):
                errors[key] = [self.messages["field_not_editable"]]
            elif isinstance(value, str) and not storable(value):
                errors[key] = [self.messages["invalid_text"]]
            elif key == "owner_id" and value and not self._may_own(str(value)):
                errors[key] = [self.messages["owner_not_member"].format(input=value)]
            elif (
                key == "owner_id"
                and not partial
                and value not in (None, "", self.actor.user_id)
                and not access.allows("change_owner")
            ):
                errors[key] = [self.messages["owner_not_changeable"]]
            else:
                clean[key] = value
        try:
            loaded = self.runtime.schema(entity.name, self.locale).load(
                clean, partial=partial
            )
        except ValidationError as err:
            for key, messages in _flatten(err.messages).items():
                errors.setdefault(key, []).extend(messages)
            loaded = {}
        if errors:
            names = ", ".join(sorted(errors))
            raise RecordInvalid(f"invalid {entity.name}: check {names}", errors)
        return dict(loaded)

    def _rule_errors(
        self, entity: Entity, record: dict[str, Any]
    ) -> dict[str, builtins.list[str]]:
        """Fill in the formula fields of ``record`` and return the messages
        of its failed validation rules."""
        user = {"id": self.actor.user_id, "role": self.actor.role}
        return apply_record_rules(entity, record, user, self.locale)

    def check_read_only(
        self,
        entity: Entity,
        stored: Mapping[str, Any] | None,
        values: Mapping[str, Any],
    ) -> None:
        """Raise ``RecordInvalid`` for a value of ``values`` that a field's
        ``read_only_when`` forbids; ``stored`` is None on create."""
        user = {"id": self.actor.user_id, "role": self.actor.role}
        errors = read_only_errors(entity, stored, values, user, self.locale)
        if errors:
            names = ", ".join(sorted(errors))
            raise RecordInvalid(f"invalid {entity.name}: check {names}", errors)

    def _fill_default_expressions(
        self, entity: Entity, values: dict[str, Any], now: dt.datetime
    ) -> None:
        """Fill in the ``default_expr`` of each field a new record leaves
        empty; raise ``RecordInvalid`` for one that fails."""
        user = {"id": self.actor.user_id, "role": self.actor.role}
        errors = fill_default_expressions(entity, values, user, now, self.locale)
        if errors:
            names = ", ".join(sorted(errors))
            raise RecordInvalid(f"invalid {entity.name}: check {names}", errors)

    def _apply_rules(self, entity: Entity, record: dict[str, Any]) -> None:
        errors = self._rule_errors(entity, record)
        if errors:
            names = ", ".join(sorted(errors))
            raise RecordInvalid(f"invalid {entity.name}: check {names}", errors)

    def _fill_new(
        self, entity: Entity, values: dict[str, Any], now: dt.datetime
    ) -> None:
        """Add defaults, a new id and the system columns of a new record."""
        for field in entity.fields:
            if field.name not in values and field.default is not None:
                values[field.name] = _default_value(field)
        values.setdefault("id", str(uuid7()))
        values["owner_id"] = values.get("owner_id") or self.actor.user_id
        values.update(
            created_at=now,
            updated_at=now,
            created_by=self.actor.user_id,
            updated_by=self.actor.user_id,
            version=1,
        )

    def _check_initial_states(self, entity: Entity, values: dict[str, Any]) -> None:
        """Start a new record in the initial state of each workflow of its
        entity; another state is refused."""
        for workflow in self.runtime.definition.workflows_for(entity.name):
            state = values.get(workflow.field)
            if state in (None, ""):
                values[workflow.field] = workflow.initial
            elif state != workflow.initial:
                label = workflow.label.get(self.locale)
                raise RecordInvalid(
                    f"invalid {entity.name}: a new record starts in state "
                    f"{workflow.initial!r} of workflow {label!r}, not {state!r}; "
                    "leave the field empty and move the record with a transition",
                    {workflow.field: [self.messages["state_initial"].format(
                        state=workflow.initial
                    )]},
                )

    def _fill_initial_states(self, entity: Entity, values: dict[str, Any]) -> None:
        """Start a new record without a state in each workflow's initial one."""
        for workflow in self.runtime.definition.workflows_for(entity.name):
            if values.get(workflow.field) in (None, ""):
                values[workflow.field] = workflow.initial

    def _check_state_change(
        self,
        entity: Entity,
        before: Mapping[str, Any],
        values: Mapping[str, Any],
        transition: str | None,
    ) -> None:
        """Refuse a change of a workflow's state field unless ``transition``
        is the transition being performed."""
        for workflow in self.runtime.definition.workflows_for(entity.name):
            name = workflow.field
            if name not in values or values[name] == before.get(name):
                continue
            if transition is not None and workflow.transition(transition):
                continue
            ways = workflow.leading_to(values[name], before.get(name))
            hint = (
                "use the transition " + ", ".join(repr(t.name) for t in ways)
                if ways
                else f"no transition of the workflow leads from "
                f"{before.get(name)!r} to {values[name]!r}"
            )
            raise RecordInvalid(
                f"invalid {entity.name}: field {name!r} changes only through "
                f"workflow transitions; {hint}",
                {name: [self.messages["state_by_transition"]]},
            )

    def system_access(self, entity_name: str) -> Access:
        """Return every right on ``entity_name``, because automation runs in
        system context."""
        entity = self.runtime.entity(entity_name)
        principal = Principal(self.actor.user_id, ADMIN_ROLE)
        return access_for(self.runtime.definition, entity, principal)

    def is_tenant_member(self, user_id: str) -> bool:
        """Return True for the actor and members of the tenant."""
        return user_id == self.actor.user_id or (
            self.is_member is not None and self.is_member(user_id)
        )

    def members_in_roles(self, roles: Collection[str]) -> builtins.list[str]:
        """Return the ids of the tenant's members holding one of ``roles``."""
        if self.role_members is None:
            return [self.actor.user_id] if self.actor.role in roles else []
        return self.role_members(roles)

    def _journal(self) -> journal.Journal:
        return journal.Journal(self.actor.user_id, self.request_id)

    def _check_quota(self, conn: sa.Connection, adding: int) -> None:
        """Raise ``LimitReached`` if ``adding`` new records would take the
        tenant past its plan's record quota.

        Counts every entity table inside the write's transaction, after the
        journal lock, so concurrent writers cannot both pass. Tenants without
        a quota pay nothing; the count is bounded by the quota itself.
        """
        quota = getattr(self.runtime.tenant, "record_quota", None)
        if quota is None or adding == 0:
            return
        stored = 0
        for table in self.runtime.tables.values():
            counter = sa.select(sa.func.count()).select_from(table)
            stored += int(conn.execute(counter).scalar_one())
        if stored + adding <= quota:
            return
        raise LimitReached(
            f"record quota reached: tenant {self.runtime.slug!r} stores {stored:,} "
            f"of the {quota:,} records its plan allows, so {adding:,} more do not "
            "fit; delete records or move the tenant to a plan with a larger quota",
            details={"record_quota": quota, "records": stored, "adding": adding},
        )

    def _journal_cascade(
        self,
        conn: sa.Connection,
        entries: journal.Journal,
        entity_name: str,
        record_ids: builtins.list[str],
        depth: int = 0,
        cascaded: builtins.list[tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        """Journal what the database's ON DELETE rules will do to records
        that point at the records being deleted: cascaded deletes and lookups
        set to null."""
        if depth > MAX_CASCADE_DEPTH:
            raise Conflict(
                f"cannot delete {entity_name} records: deleting them cascades "
                f"through more than {MAX_CASCADE_DEPTH} levels of lookups"
            )
        for other, field in self.runtime.definition.referencing(entity_name):
            if field.on_delete not in {"cascade", "set_null"}:
                continue
            table = self.runtime.tables[other.name]
            for start in range(0, len(record_ids), 500):
                chunk = record_ids[start : start + 500]
                rows = [
                    dict(row)
                    for row in conn.execute(
                        sa.select(table).where(table.c[field.name].in_(chunk))
                    ).mappings()
                ]
                if field.on_delete == "cascade":
                    child_ids = [row["id"] for row in rows]
                    if child_ids:
                        self._journal_cascade(
                            conn, entries, other.name, child_ids, depth + 1,
                            cascaded,
                        )
                    for row in rows:
                        entries.deleted(other, row)
                else:
                    for row in rows:
                        entries.updated(other, row, {**row, field.name: None})
                if cascaded is not None:
                    cascaded.extend((other.name, row) for row in rows)

    def permits(self, entity_name: str, right: str, record_id: str) -> bool:
        """Return True if the record exists and the actor may ``right`` it
        (read, edit or delete)."""
        access = self.access(entity_name)
        with self.runtime.engine.connect() as conn:
            return self._passes(conn, access, right, str(record_id))

    def _passes(
        self, conn: sa.Connection, access: Access, right: str, record_id: str
    ) -> bool:
        if not access.allows(right):
            return False
        table = self.runtime.tables[access.entity.name]
        statement = sa.select(table.c.id).where(table.c.id == record_id)
        predicate = access.predicate(right, table)
        if predicate is not None:
            statement = statement.where(predicate)
        return conn.execute(statement).first() is not None

    def check_writable(self) -> None:
        status = self.runtime.tenant.status
        if status != "active":
            raise Forbidden(
                f"tenant {self.runtime.slug!r} is {status.replace('_', '-')}: "
                "records can be read but not changed until an operator makes it "
                "active again",
                details={"tenant_status": status},
            )

    def _may_own(self, user_id: str) -> bool:
        if user_id == self.actor.user_id:
            return True
        return self.is_member is not None and self.is_member(user_id)

    def _refresh_rollups(
        self,
        conn: sa.Connection,
        entity_name: str,
        rows: Iterable[Mapping[str, Any] | None],
    ) -> None:
        """Compute again the roll-ups that summarise these records of
        ``entity_name`` (before or after a write), in the write's transaction."""
        refresh_rollups(
            conn, self.runtime.definition, self.runtime.tables, entity_name, rows
        )

    def _check_lookup_access(
        self, conn: sa.Connection, entity: Entity, values: Mapping[str, Any]
    ) -> None:
        """Reject lookups to records the actor may not read, as if they did
        not exist. Admins read everything, so the foreign keys suffice."""
        if self.principal.is_admin:
            return
        if any(values.get(field.name) for field in entity.lookups):
            self._check_lookups(conn, entity, values)

    def _readable_only(self, entity_name: str, statement: Any) -> Any:
        """Add the actor's read predicate on ``entity_name`` to ``statement``,
        or match nothing if they may not read that entity at all."""
        access = self.access(entity_name)
        if not access.allows("read"):
            return statement.where(sa.false())
        predicate = access.predicate("read", self.runtime.tables[entity_name])
        return statement if predicate is None else statement.where(predicate)

    def _check_lookups(
        self, conn: sa.Connection, entity: Entity, values: Mapping[str, Any]
    ) -> None:
        """Raise ``RecordInvalid`` for each lookup in ``values`` whose target
        does not exist or that the actor may not read: both get the same
        message, so that a lookup cannot probe for records."""
        errors: dict[str, builtins.list[str]] = {}
        for field in entity.lookups:
            target_id = values.get(field.name)
            if not target_id or not field.target:
                continue
            target = self.runtime.tables[field.target]
            statement = sa.select(target.c.id).where(target.c.id == target_id)
            found = conn.execute(self._readable_only(field.target, statement)).first()
            if found is None:
                label = self.runtime.entity(field.target).label.get(self.locale)
                errors[field.name] = [
                    self.messages["lookup_missing"].format(
                        entity=label, input=target_id
                    )
                ]
        if errors:
            raise RecordInvalid(
                f"invalid {entity.name}: check {', '.join(sorted(errors))}", errors
            )

    def _check_not_referenced(
        self, conn: sa.Connection, entity_name: str, record_id: str
    ) -> None:
        for other, field in self.runtime.definition.referencing(entity_name):
            if field.on_delete != "restrict":
                continue
            table = self.runtime.tables[other.name]
            count = conn.execute(
                sa.select(sa.func.count())
                .select_from(table)
                .where(table.c[field.name] == record_id)
            ).scalar_one()
            if count:
                label = other.plural_label.get(self.locale)
                raise Conflict(
                    f"cannot delete {entity_name} {record_id!r}: {count} {label} "
                    f"refer to it through {field.name!r}; delete them or point "
                    "them at another record first",
                    details={"entity": other.name, "field": field.name, "count": count},
                )

    def _execute_write(
        self,
        conn: sa.Connection,
        entity: Entity,
        statement: Any,
        values: Mapping[str, Any],
        parameters: Mapping[str, Any] | None = None,
    ) -> sa.CursorResult[Any]:
        """Run one write, turning constraint errors into field errors.

        Lookups are enforced by foreign keys. Only when one fails are the
        targets looked up, to name the field that points nowhere. That query
        uses a fresh connection, because PostgreSQL aborts the failed
        transaction. No savepoint is taken, since the error ends the whole
        transaction anyway.
        """
        try:
            if parameters is None:
                return conn.execute(statement)
            return conn.execute(statement, dict(parameters))
        except sa.exc.IntegrityError as err:
            fields = _unique_fields(self.runtime.tables[entity.name], err)
            if fields:
                message = self.messages["unique"]
                raise Conflict(
                    f"another {entity.name} already has this {', '.join(fields)}",
                    details={name: [message] for name in fields},
                ) from err
            with self.runtime.engine.connect() as check:
                self._check_lookups(check, entity, values)
            raise Conflict(
                f"the {entity.name} record conflicts with stored data: {err.orig}"
            ) from err

    def _check_owner_change(
        self, access: Access, before: Mapping[str, Any], values: Mapping[str, Any]
    ) -> None:
        if "owner_id" not in values or values["owner_id"] == before["owner_id"]:
            return
        if access.allows("change_owner"):
            return
        raise RecordInvalid(
            f"invalid {access.entity.name}: check owner_id",
            {"owner_id": [self.messages["owner_not_changeable"]]},
        )

    def _permitted_writes(
        self,
        conn: sa.Connection,
        access: Access,
        inserts: IndexedRows,
        updates: IndexedRows,
        result: BatchResult,
    ) -> tuple[IndexedRows, IndexedRows]:
        """Keep the import rows the actor may write. New records need the
        create right, and matched records must pass the edit predicate. A
        changed owner needs the change_owner right."""
        denied: dict[int, dict[str, builtins.list[str]]] = {}
        if inserts and not access.allows("create"):
            message = f"role {self.actor.role!r} may not create {access.entity.name}"
            denied.update({index: {"_schema": [message]} for index, _ in inserts})
        if updates:
            table = self.runtime.tables[access.entity.name]
            editable = self._editable_ids(
                conn, access, table, [values["_id"] for _, values in updates]
            )
            for index, values in updates:
                if values["_id"] not in editable:
                    denied[index] = {"_schema": [self.messages["record_not_editable"]]}
                elif "owner_id" in values and not access.allows("change_owner"):
                    denied[index] = {
                        "owner_id": [self.messages["owner_not_changeable"]]
                    }
        result.errors.update(denied)
        return (
            [(index, values) for index, values in inserts if index not in denied],
            [(index, values) for index, values in updates if index not in denied],
        )

    def _editable_ids(
        self,
        conn: sa.Connection,
        access: Access,
        table: sa.Table,
        record_ids: builtins.list[str],
    ) -> set[str]:
        predicate = access.predicate("edit", table)
        if predicate is None:
            return set(record_ids)
        found: set[str] = set()
        for start in range(0, len(record_ids), 500):
            chunk = record_ids[start : start + 500]
            statement = sa.select(table.c.id).where(table.c.id.in_(chunk), predicate)
            found.update(conn.execute(statement).scalars())
        return found

    def _raise_write_rejected(
        self,
        conn: sa.Connection,
        access: Access,
        right: str,
        record_id: str,
        expected_version: int | None,
    ) -> None:
        """Raise the error for a write that changed no row: ``NotFound`` if
        the actor cannot read the record, ``Forbidden`` if they may read it
        but not ``right`` it, else ``VersionConflict``."""
        entity_name = access.entity.name
        table = self.runtime.tables[entity_name]
        current = conn.execute(
            sa.select(table.c.version).where(table.c.id == record_id)
        ).scalar()
        if current is None or not self._passes(conn, access, "read", record_id):
            raise NotFound(f"{entity_name} record {record_id!r} not found")
        if not self._passes(conn, access, right, record_id):
            raise Forbidden(
                f"role {self.actor.role!r} may read {entity_name} {record_id!r} "
                f"but not {right} it: no grant or sharing covers this record "
                f"for {right}; ask its owner or an admin",
                details={"entity": entity_name, "right": right},
            )
        raise VersionConflict(
            f"{entity_name} {record_id!r} is at version {current}, not "
            f"{expected_version}: reload it and apply your change again",
            details={"current_version": current},
        )


def _cancel_requests(
    conn: sa.Connection,
    definition: Definition,
    deleted: Iterable[tuple[str, Mapping[str, Any]]],
) -> None:
    """Cancel the pending approval requests of deleted records, which no
    approval can complete any more."""
    requests = _SERVICE_TABLES.tables["_approval_requests"]
    now = dt.datetime.now(dt.UTC)
    for entity_name, row in deleted:
        if not any(
            transition.approval
            for workflow in definition.workflows_for(entity_name)
            for transition in workflow.transitions
        ):
            continue
        conn.execute(
            requests.update()
            .where(
                requests.c.entity == entity_name,
                requests.c.record_id == str(row["id"]),
                requests.c.status == "pending",
            )
            .values(status="cancelled", decided_at=now)
        )


def _as_stored(
    table: sa.Table, entity: Entity, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the record as reading it back would, without the extra query:
    every column present, decimals at their scale, multi-picklists sorted."""
    record = {column.name: values.get(column.name) for column in table.columns}
    for field in entity.fields:
        value = record[field.name]
        if value is None:
            continue
        if field.type in {"decimal", "currency", "percent"}:
            scale = field.scale if field.scale is not None else 2
            record[field.name] = decimal.Decimal(value).quantize(
                decimal.Decimal(1).scaleb(-scale)
            )
        elif field.type == "multi_picklist":
            record[field.name] = sorted(set(value))
    return record


def _title_column(access: Access, table: sa.Table) -> sa.ColumnElement[Any]:
    """Return the title column, or the id when the title field is hidden."""
    title_field = access.entity.title_field
    return table.c[title_field] if access.visible(title_field) else table.c.id


def _read_row(
    conn: sa.Connection, table: sa.Table, record_id: str
) -> dict[str, Any] | None:
    row = (
        conn.execute(sa.select(table).where(table.c.id == str(record_id)))
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def _updated_row(
    before: Mapping[str, Any], changed: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the stored row ``before`` with an import batch's update applied."""
    after = dict(before)
    for name, value in changed.items():
        if not name.startswith("_"):
            after[name] = value
    after["version"] = changed["_version"]
    return after


def storable(text: str) -> bool:
    """Return False for text no database should store: NUL characters
    (PostgreSQL rejects them) and lone surrogates (not valid UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_only_names(entity: Entity) -> frozenset[str]:
    system = {name for name in SYSTEM_COLUMNS if name not in WRITABLE_SYSTEM_COLUMNS}
    fields = {field.name for field in entity.fields if not field.writable}
    return frozenset(system | fields | {"owner_id"})


def _passes_guards(read_only: frozenset[str], row: Mapping[str, Any]) -> bool:
    """Return True if none of ``_load``'s checks before the schema would
    reject ``row``; otherwise ``_load`` runs and reports them. Rows naming an
    owner always take the full path, which checks membership."""
    if not read_only.isdisjoint(row):
        return False
    for value in row.values():
        if isinstance(value, str) and (
            len(value) > MAX_VALUE_LENGTH or not storable(value)
        ):
            return False
    return True


def _is_read_only(entity: Entity, key: str) -> bool:
    if key in SYSTEM_COLUMNS:
        return key not in WRITABLE_SYSTEM_COLUMNS
    return entity.has_field(key) and not entity.field(key).writable


def erase_fields(
    conn: sa.Connection,
    runtime: TenantRuntime,
    targets: Sequence[tuple[str, str, Sequence[str]]],
    entries: journal.Journal,
    missing_ok: bool = False,
) -> list[dict[str, Any]]:
    """Blank the named fields of each (entity, record id, field names) target
    in ``conn``'s transaction, bypassing validation: a required text field
    gets ``ERASED_TEXT``, every other field becomes empty.

    Each record gets an ``erase`` entry in ``entries`` without the old
    values, and its earlier journal entries lose them too. A missing record
    raises ``NotFound`` unless ``missing_ok``.
    """
    erased = []
    for entity_name, record_id, names in targets:
        entity = runtime.entity(entity_name)
        table = runtime.tables[entity_name]
        known = [name for name in names if entity.has_field(name)]
        values: dict[str, Any] = {
            name: _erased_value(entity.field(name)) for name in known
        }
        values.update(
            updated_at=entries.now,
            updated_by=entries.actor_id,
            version=table.c.version + 1,
        )
        result = conn.execute(
            table.update().where(table.c.id == record_id).values(**values)
        )
        if result.rowcount == 0:
            if missing_ok:
                continue
            raise NotFound(f"{entity_name} record {record_id!r} not found")
        after = _read_row(conn, table, record_id)
        assert after is not None
        journal.redact(conn, entity_name, record_id, known)
        entries.erased(entity, after, known)
        erased.append(after)
    return erased


def _erased_value(field: Field) -> Any:
    if field.required and field.type in {"text", "long_text"}:
        return ERASED_TEXT
    return [] if field.type == "multi_picklist" else None


def _default_value(field: Field) -> Any:
    if field.type in {"decimal", "currency", "percent"}:
        return decimal.Decimal(str(field.default))
    if field.type == "date" and isinstance(field.default, str):
        return dt.date.fromisoformat(field.default)
    if field.type == "multi_picklist":
        return list(field.default)
    return field.default


def _next_number(conn: sa.Connection, entity: Entity, field: Field) -> str:
    """Take the next value of an auto-number field inside the write's
    transaction, so that numbers are never handed out twice."""
    number = journal.advance_counter(conn, f"{entity.name}.{field.name}", 1)
    return f"{field.prefix or ''}{number:0{field.digits or 5}d}"


def _reserve_numbers(
    conn: sa.Connection, entity: Entity, field: Field, count: int
) -> list[str]:
    """Take ``count`` consecutive auto numbers in one statement."""
    last = journal.advance_counter(conn, f"{entity.name}.{field.name}", count)
    digits = field.digits or 5
    return [
        f"{field.prefix or ''}{number:0{digits}d}"
        for number in range(last - count + 1, last + 1)
    ]


def _group_by_columns(
    updates: list[tuple[int, dict[str, Any]]],
) -> list[list[tuple[int, dict[str, Any]]]]:
    """Group updates that change the same columns, for executemany."""
    groups: dict[tuple[str, ...], list[tuple[int, dict[str, Any]]]] = {}
    for index, values in updates:
        groups.setdefault(tuple(sorted(values)), []).append((index, values))
    return list(groups.values())


def _update_statement(table: sa.Table, values: Mapping[str, Any]) -> Any:
    columns: dict[str, Any] = {
        name: sa.bindparam(f"v_{name}") for name in values if not name.startswith("_")
    }
    columns["version"] = sa.bindparam("_version")
    return table.update().where(table.c.id == sa.bindparam("_id")).values(columns)


def _update_parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Rename update values to the bind parameters of ``_update_statement``."""
    return {
        name if name.startswith("_") else f"v_{name}": value
        for name, value in values.items()
    }


def _flatten(messages: Any) -> dict[str, list[str]]:
    if isinstance(messages, dict):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            if isinstance(value, dict):
                for inner in value.values():
                    flat.setdefault(str(key), []).extend(_as_list(inner))
            else:
                flat[str(key)] = _as_list(value)
        return flat
    return {"_schema": _as_list(messages)}


def _as_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(item) for item in value]
    return [str(value)]


def _unique_fields(table: sa.Table, err: sa.exc.IntegrityError) -> list[str]:
    """Return the columns of the unique constraint a write violated.

    SQLite names the columns in its message; PostgreSQL names the
    constraint, which is looked up among the table's constraints and indexes.
    """
    match = _UNIQUE_SQLITE.search(str(err.orig))
    if match:
        return [part.split(".")[-1] for part in match.group(1).split(", ")]
    diag = getattr(err.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if not name:
        return []
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint) and constraint.name == name:
            return [column.name for column in constraint.columns]
    for index in table.indexes:
        if index.name == name:
            return [column.name for column in index.columns]
    return []
