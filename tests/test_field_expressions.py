"""Field expression options: ``default_expr``, ``read_only_when`` and
``visible_when``, from loading through the record service to the web UI."""

from __future__ import annotations

import datetime as dt
import decimal
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm_platform.errors import RecordInvalid
from crm_platform.records import RecordService
from crm_platform.tenancy import Platform
from metadata_engine.loader import compile_documents
from metadata_engine.model import Entity
from metadata_engine.record_rules import (
    field_expressions,
    fill_default_expressions,
    read_only_errors,
    same_value,
    visibility,
)
from tests.conftest import make_member
from tests.definitions.builders import (
    documents,
    entity,
    field,
    problems_of,
    write_folder,
)
from tests.test_web import csrf_token, post_form, sign_in

ADMIN = {"id": "u-1", "role": "admin"}
NOW = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
STATUSES = [{"value": v, "label": v.title()} for v in ("open", "on_hold", "closed")]
TAGS = [{"value": v, "label": v.upper()} for v in ("a", "b")]


def task(*extra: dict[str, Any]) -> dict[str, Any]:
    """Return a task entity that uses every field expression option."""
    return entity(
        "task",
        field("status", "picklist", options=STATUSES, default="open"),
        field("priority", "integer",
              default_expr='status == "on_hold" ? 1 : 3'),
        field("due", "date", default_expr='today + duration("168h")'),
        field("budget", "currency", default_expr="1234.5"),
        field("tags", "multi_picklist", options=TAGS, default_expr='["a"]'),
        field("owner_note", default_expr='"by " + user.role'),
        field("resolution", read_only_when='status == "closed"',
              visible_when='status != "open"'),
        *extra,
    )


def compiled(document: dict[str, Any]) -> Entity:
    return compile_documents(documents(document)).entity(document["name"])


def problems(document: dict[str, Any]) -> list[tuple[str, str]]:
    found = problems_of(lambda: compile_documents(documents(document)))
    return [(problem.pointer, problem.message) for problem in found]


# Loading ----------------------------------------------------------------------


def test_options_compile_into_field() -> None:
    resolution = compiled(task()).field("resolution")
    assert resolution.read_only_when == 'status == "closed"'
    assert resolution.visible_when == 'status != "open"'
    assert resolution.default_expr is None


def test_default_expr_type_checked() -> None:
    ((pointer, message),) = problems(task(field("size", "integer",
                                                default_expr='"big"')))
    assert pointer == "/fields/8/default_expr"
    assert "default_expr of field 'size' returns a string" in message


def test_default_expr_accepts_int_for_decimal() -> None:
    size = compiled(task(field("size", "decimal", default_expr="2"))).field("size")
    assert size.default_expr == "2"


def test_default_and_default_expr_conflict() -> None:
    ((pointer, message),) = problems(task(field("size", default="s",
                                                default_expr='"m"')))
    assert pointer == "/fields/8/default_expr"
    assert "has both default and default_expr" in message


def test_default_expr_on_formula_rejected() -> None:
    ((pointer, message),) = problems(task(field(
        "size", "integer", formula="priority * 2", default_expr="1")))
    assert pointer == "/fields/8/default_expr"
    assert "has a formula and default_expr" in message


def test_default_expr_on_lookup_rejected() -> None:
    found = problems(task(field("parent", "lookup", target="task",
                                default_expr='"x"')))
    assert found == [(
        "/fields/8/default_expr",
        "field 'parent' of type 'lookup' cannot have default_expr",
    )]


def test_unknown_name_suggested_with_position() -> None:
    ((pointer, message),) = problems(task(field(
        "size", visible_when='stauts == "open"')))
    assert pointer == "/fields/8/visible_when"
    assert "unknown name 'stauts'" in message
    assert "did you mean 'status'?" in message
    assert "at line 1, column 1" in message


def test_syntax_error_has_position() -> None:
    ((pointer, message),) = problems(task(field(
        "size", read_only_when="status ==\n  ==")))
    assert pointer == "/fields/8/read_only_when"
    assert "invalid CEL syntax" in message
    assert "at line 2, column 3" in message


def test_conditions_must_return_bool() -> None:
    found = problems(task(
        field("size", read_only_when="priority + 1"),
        field("colour", visible_when="status"),
    ))
    assert found == [
        ("/fields/8/read_only_when",
         "read_only_when of 'size' returns an int, not a bool"),
        ("/fields/9/visible_when",
         "visible_when of 'colour' returns a string, not a bool"),
    ]


def test_type_mismatch_reported() -> None:
    ((pointer, message),) = problems(task(field(
        "size", visible_when="budget > 100")))
    assert pointer == "/fields/8/visible_when"
    assert "compares a double and an int" in message
    assert "at line 1, column 1" in message


def test_read_only_when_on_read_only_field() -> None:
    ((pointer, message),) = problems(task(field(
        "size", read_only=True, default="s", read_only_when="true")))
    assert pointer == "/fields/8/read_only_when"
    assert "always read-only because of 'read_only'" in message


def test_problem_names_entity_file() -> None:
    found = problems_of(lambda: compile_documents(documents(task(field(
        "size", visible_when="nope")))))
    assert found[0].file == "entities/task.json"


def test_schema_rejects_empty_expression() -> None:
    found = problems(task(field("size", visible_when="")))
    assert found[0][0] == "/fields/8/visible_when"


def test_compiled_once_per_entity() -> None:
    task_entity = compiled(task())
    assert field_expressions(task_entity) is field_expressions(task_entity)


# Defaults ---------------------------------------------------------------------


def test_defaults_fill_absent_fields() -> None:
    record: dict[str, Any] = {"name": "A", "status": "on_hold"}
    errors = fill_default_expressions(compiled(task()), record, ADMIN, NOW)
    assert errors == {}
    assert record["priority"] == 1
    assert record["due"] == dt.date(2026, 3, 9)
    assert record["budget"] == decimal.Decimal("1234.50")
    assert record["tags"] == ["a"]
    assert record["owner_note"] == "by admin"


def test_given_value_wins() -> None:
    record: dict[str, Any] = {"name": "A", "status": "open", "priority": 7,
                              "owner_note": "mine"}
    fill_default_expressions(compiled(task()), record, ADMIN, NOW)
    assert record["priority"] == 7
    assert record["owner_note"] == "mine"


def test_blank_text_gets_default() -> None:
    record: dict[str, Any] = {"name": "A", "owner_note": "  "}
    fill_default_expressions(compiled(task()), record, ADMIN, NOW)
    assert record["owner_note"] == "by admin"


def test_default_sees_static_default() -> None:
    record: dict[str, Any] = {"name": "A", "status": "open"}
    fill_default_expressions(compiled(task()), record, ADMIN, NOW)
    assert record["priority"] == 3


def test_default_outside_options_reported() -> None:
    task_entity = compiled(task(field("colour", "picklist", options=TAGS,
                                      default_expr='"c"')))
    record: dict[str, Any] = {"name": "A"}
    errors = fill_default_expressions(task_entity, record, ADMIN, NOW)
    assert "colour" not in record
    (message,) = errors["colour"]
    assert message.startswith("The default value could not be computed")


def test_default_below_minimum_reported() -> None:
    task_entity = compiled(task(field("size", "integer", minimum=1,
                                      default_expr="priority - 10")))
    errors = fill_default_expressions(task_entity, {"status": "open"}, ADMIN, NOW)
    assert list(errors) == ["size"]


def test_failed_default_message_chinese() -> None:
    task_entity = compiled(task(field("size", "integer",
                                      default_expr="10 / (priority - 3)")))
    record: dict[str, Any] = {"priority": 3}
    errors = fill_default_expressions(task_entity, record, ADMIN, NOW, "zh-CN")
    assert errors["size"] == [
        "无法计算默认值：表达式除以零。请管理员修正该字段的 default_expr。"
    ]


# Read-only conditions ---------------------------------------------------------


def closed_task() -> dict[str, Any]:
    return {"name": "A", "status": "closed", "resolution": "fixed"}


def test_change_rejected_while_condition_true() -> None:
    errors = read_only_errors(compiled(task()), closed_task(),
                              {"resolution": "other"}, ADMIN)
    assert errors == {
        "resolution": ['This field is read-only while status == "closed" is true.']
    }


def test_unchanged_value_accepted() -> None:
    errors = read_only_errors(compiled(task()), closed_task(),
                              {"resolution": "fixed", "name": "B"}, ADMIN)
    assert errors == {}


def test_condition_reads_stored_record() -> None:
    # Reopening and changing the field in one update is still rejected,
    # because the condition holds on the stored record.
    errors = read_only_errors(compiled(task()), closed_task(),
                              {"status": "open", "resolution": "other"}, ADMIN)
    assert list(errors) == ["resolution"]


def test_change_accepted_while_condition_false() -> None:
    stored = {**closed_task(), "status": "open"}
    errors = read_only_errors(compiled(task()), stored, {"resolution": ""}, ADMIN)
    assert errors == {}


def test_clearing_counts_as_change() -> None:
    errors = read_only_errors(compiled(task()), closed_task(),
                              {"resolution": None}, ADMIN)
    assert list(errors) == ["resolution"]


def test_create_checks_input() -> None:
    task_entity = compiled(task())
    given = read_only_errors(task_entity, None,
                             {"status": "closed", "resolution": "x"}, ADMIN)
    empty = read_only_errors(task_entity, None,
                             {"status": "closed", "resolution": " "}, ADMIN)
    assert list(given) == ["resolution"]
    assert empty == {}


def test_read_only_message_chinese() -> None:
    errors = read_only_errors(compiled(task()), closed_task(),
                              {"resolution": "other"}, ADMIN, "zh-CN")
    assert errors["resolution"] == ['当 status == "closed" 为真时，此字段为只读。']


def test_failing_condition_rejects_change() -> None:
    task_entity = compiled(task(field("size", "integer",
                                      read_only_when="priority > 2")))
    errors = read_only_errors(task_entity, {"priority": None}, {"size": 4}, ADMIN)
    (message,) = errors["size"]
    assert message.startswith("Whether this field is read-only could not be")


def test_same_value_normalises_types() -> None:
    task_entity = compiled(task())
    naive = dt.datetime(2026, 1, 1, 12, 0)
    aware = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    budget = task_entity.field("budget")
    assert same_value(budget, decimal.Decimal("5.00"), 5)
    assert same_value(task_entity.field("due"), naive, aware)
    assert same_value(task_entity.field("tags"), ["b", "a"], ["a", "b"])
    assert not same_value(budget, None, 0)


# Visibility -------------------------------------------------------------------


def test_visibility_follows_condition() -> None:
    task_entity = compiled(task())
    assert visibility(task_entity, {"status": "open"}, ADMIN) == {"resolution": False}
    assert visibility(task_entity, {"status": "closed"}, ADMIN) == {"resolution": True}


def test_null_result_hides_field() -> None:
    task_entity = compiled(task(field("size", visible_when="flag"),
                                field("flag", "boolean")))
    assert visibility(task_entity, {}, ADMIN)["size"] is False


def test_failing_condition_shows_field() -> None:
    task_entity = compiled(task(field("size", visible_when="priority > 2")))
    assert visibility(task_entity, {"priority": None}, ADMIN)["size"] is True


def test_visibility_sees_user_role() -> None:
    task_entity = compiled(task(field("size", visible_when='user.role == "admin"')))
    rep = {"id": "u-2", "role": "sales_rep"}
    assert visibility(task_entity, {}, ADMIN)["size"] is True
    assert visibility(task_entity, {}, rep)["size"] is False


# Through the record service ---------------------------------------------------
#
# These tests need crm_platform/records.py to call fill_default_expressions
# and read_only_errors on create, update and import.


def task_with_roles() -> dict[str, Any]:
    docs = documents(task(
        field("secret", sensitive=True),
        field("internal", visible_when='secret == "x"'),
    ))
    docs["roles/sales_rep.json"] = {
        "name": "sales_rep", "label": "Sales rep",
        "entities": {"task": {"read": "all", "edit": "all", "create": True,
                              "fields": {"budget": "hidden"}}},
    }
    docs["roles/read_only.json"] = {
        "name": "read_only", "label": "Read only", "entities": {},
    }
    return docs


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "work", task_with_roles())


@pytest.fixture
def service(platform: Platform, folder: Path) -> RecordService:
    runtime = platform.create_tenant("work", folder)
    admin = make_member(platform, "work", "admin@work.example", "admin")
    return platform.records(runtime, admin)


@pytest.mark.both_backends
def test_create_fills_defaults(service: RecordService) -> None:
    created = service.create("task", {"name": "A", "status": "on_hold"})
    assert created["priority"] == 1
    assert created["owner_note"] == "by admin"


@pytest.mark.both_backends
def test_create_rejects_value_while_read_only(service: RecordService) -> None:
    with pytest.raises(RecordInvalid) as raised:
        service.create("task", {"name": "A", "status": "closed", "resolution": "x"})
    assert list(raised.value.details) == ["resolution"]


@pytest.mark.both_backends
def test_update_rejects_read_only_change(service: RecordService) -> None:
    created = service.create("task", {"name": "A", "status": "on_hold",
                                      "resolution": "fixed"})
    service.update("task", created["id"], {"status": "closed"})
    with pytest.raises(RecordInvalid) as raised:
        service.update("task", created["id"], {"resolution": "other"})
    assert raised.value.details["resolution"] == [
        'This field is read-only while status == "closed" is true.'
    ]


@pytest.mark.both_backends
def test_import_applies_both(service: RecordService) -> None:
    result = service.import_batch("task", [
        {"name": "A", "status": "on_hold"},
        {"name": "B", "status": "closed", "resolution": "x"},
    ])
    assert list(result.errors) == [1]
    assert result.created == 1


def test_import_update_rejects_read_only(service: RecordService) -> None:
    service.create("task", {"name": "A", "status": "closed", "resolution": None})
    result = service.import_batch("task", [
        {"name": "A", "resolution": "late"},
    ], key="name")
    assert list(result.errors[0]) == ["resolution"]
    assert result.updated == 0


def test_required_field_takes_default(
    platform: Platform, tmp_path: Path
) -> None:
    # Needs metadata_engine/validation.py to let a required field with
    # default_expr be left out, as a field with a static default may.
    folder = write_folder(tmp_path / "work", documents(task(
        field("code", required=True, default_expr='"T-" + status'),
    )))
    runtime = platform.create_tenant("work", folder)
    admin = make_member(platform, "work", "admin@work.example", "admin")
    created = platform.records(runtime, admin).create("task", {"name": "A"})
    assert created["code"] == "T-open"


@pytest.fixture
def api_headers(platform: Platform, service: RecordService) -> dict[str, str]:
    tenant = platform.control.get_tenant("work")
    token = platform.control.create_token(tenant, service.actor.user_id)
    return {"Authorization": f"Bearer {token}"}


def test_api_create_fills_default(
    client: FlaskClient, api_headers: dict[str, str]
) -> None:
    response = client.post("/t/work/api/v1/records/task",
                           json={"name": "A", "status": "on_hold"},
                           headers=api_headers)
    body: Any = response.json
    assert response.status_code == 201
    assert body["data"]["priority"] == 1


def test_api_patch_rejects_read_only(
    client: FlaskClient, api_headers: dict[str, str], service: RecordService
) -> None:
    created = service.create("task", {"name": "A", "status": "closed"})
    response = client.patch(f"/t/work/api/v1/records/task/{created['id']}",
                            json={"resolution": "late"}, headers=api_headers)
    body: Any = response.json
    assert response.status_code == 422
    assert body["error"]["details"] == {
        "resolution": ['This field is read-only while status == "closed" is true.']
    }


# Web UI (Flask test client) ---------------------------------------------------


def signed_in(app: Flask, email: str) -> FlaskClient:
    client = app.test_client()
    response = sign_in(client, "work", email)
    assert response.status_code == 302
    return client


@pytest.fixture
def admin_client(app: Flask, service: RecordService) -> FlaskClient:
    return signed_in(app, "admin@work.example")


def post_visibility(
    client: FlaskClient, url: str, inputs: dict[str, Any], token: str | None = None
) -> Any:
    if token is None:
        token = csrf_token(client.get("/t/work/task/new").text)
    return client.post(url, json=inputs, headers={"X-CSRFToken": token})


def test_endpoint_returns_visibility(admin_client: FlaskClient) -> None:
    url = "/t/work/task/field-visibility"
    closed = post_visibility(admin_client, url, {"f_status": ["closed"]})
    opened = post_visibility(admin_client, url, {"f_status": ["open"]})
    assert closed.status_code == 200
    assert closed.json == {"resolution": True, "internal": False}
    assert opened.json["resolution"] is False


def test_endpoint_requires_csrf(admin_client: FlaskClient) -> None:
    response = post_visibility(admin_client, "/t/work/task/field-visibility",
                               {"f_status": ["closed"]}, token="bad")
    assert response.status_code == 422
    assert "invalid CSRF token" in response.json["error"]["message"]


def test_endpoint_reads_stored_record(
    admin_client: FlaskClient, service: RecordService
) -> None:
    created = service.create("task", {"name": "A", "status": "closed"})
    url = f"/t/work/task/{created['id']}/field-visibility"
    response = post_visibility(admin_client, url, {})
    assert response.json["resolution"] is True


def test_endpoint_needs_read_right(
    app: Flask, platform: Platform, service: RecordService
) -> None:
    make_member(platform, "work", "viewer@work.example", "read_only")
    client = signed_in(app, "viewer@work.example")
    token = csrf_token(client.get("/t/work/").text)
    response = post_visibility(client, "/t/work/task/field-visibility",
                               {"f_status": ["closed"]}, token=token)
    assert response.status_code == 403


def test_endpoint_treats_masked_as_null(
    app: Flask, platform: Platform, service: RecordService
) -> None:
    created = service.create("task", {"name": "A", "secret": "x"})
    make_member(platform, "work", "rep@work.example", "sales_rep")
    rep = signed_in(app, "rep@work.example")
    url = f"/t/work/task/{created['id']}/field-visibility"
    admin = signed_in(app, "admin@work.example")
    assert post_visibility(admin, url, {}).json["internal"] is True
    assert post_visibility(rep, url, {}).json["internal"] is False


def test_detail_page_hides_field(
    admin_client: FlaskClient, service: RecordService
) -> None:
    opened = service.create("task", {"name": "A", "status": "open"})
    closed = service.create("task", {"name": "B", "status": "on_hold"})
    hidden_page = admin_client.get(f"/t/work/task/{opened['id']}").text
    shown_page = admin_client.get(f"/t/work/task/{closed['id']}").text
    assert 'data-field="resolution"' not in hidden_page
    assert 'data-field="resolution"' in shown_page


def test_form_marks_hidden_column(admin_client: FlaskClient) -> None:
    page = admin_client.get("/t/work/task/new").text
    assert 'data-visibility-url="/t/work/task/field-visibility"' in page
    assert re.search(r'data-visibility-field="resolution"\s+hidden', page)


def test_edit_form_shows_read_only(
    admin_client: FlaskClient, service: RecordService
) -> None:
    created = service.create("task", {"name": "A", "status": "on_hold",
                                      "resolution": "fixed"})
    service.update("task", created["id"], {"status": "closed"})
    page = admin_client.get(f"/t/work/task/{created['id']}/edit").text
    assert 'data-read-only-when="true"' in page
    assert '<input type="hidden" name="f_resolution" value="fixed">' in page
    assert 'name="f_resolution" type="text"' not in page


def test_edit_with_read_only_field_saves(
    admin_client: FlaskClient, service: RecordService
) -> None:
    created = service.create("task", {"name": "A", "status": "on_hold",
                                      "resolution": "fixed"})
    service.update("task", created["id"], {"status": "closed"})
    url = f"/t/work/task/{created['id']}/edit"
    response = post_form(admin_client, url, {"f_name": "Renamed"})
    assert response.status_code == 302, response.text
    assert service.get("task", created["id"])["resolution"] == "fixed"
    assert service.get("task", created["id"])["name"] == "Renamed"
