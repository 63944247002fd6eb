"""Permission metadata: roles, permission sets, sharing rules and permission tests."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from metadata_engine.errors import DefinitionError
from metadata_engine.loader import compile_documents, load_definition
from metadata_engine.model import ADMIN_ROLE, Definition, EntityGrant, Filter
from tests.definitions.builders import (
    MINIMAL,
    documents,
    entity,
    field,
    manifest,
    problems_of,
    write_folder,
)

ROOT = Path(__file__).resolve().parent.parent
STANDARD = ROOT / "tenant_definitions" / "standard_crm"
GRADES = [{"value": "a", "label": "A"}, {"value": "b", "label": "B"}]
Write = Callable[[Mapping[str, Any]], Path]


@pytest.fixture(scope="module")
def standard() -> Definition:
    return load_definition(STANDARD)


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Write files under tmp_path and return the path of its ``demo`` folder."""

    def write_files(files: Mapping[str, Any]) -> Path:
        write_folder(tmp_path, files)
        return tmp_path / "demo"

    return write_files


def base_documents(**extra: Any) -> dict[str, Any]:
    """Return documents of an account entity plus ``extra`` keyed documents."""
    account = entity(
        "account",
        field("grade", "picklist", options=GRADES),
        field("signed_on", "date"),
        field("revenue", "currency"),
        field("tax_id", sensitive=True),
    )
    return {**documents(account, entity("deal")), **extra}


def role(name: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"name": name, "label": name.title()}
    document.update(changes)
    return document


def rule(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "grade_a",
        "label": "Grade A accounts",
        "entity": "account",
        "where": [{"field": "grade", "op": "eq", "value": "a"}],
        "roles": ["rep"],
    }
    document.update(changes)
    return document


def case(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "description": "a rep reads an account",
        "role": "rep",
        "entity": "account",
        "action": "read",
        "allowed": True,
    }
    document.update(changes)
    return document


def with_test(*cases: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Return documents with role ``rep`` and one permission test of ``cases``."""
    test = {"name": "basics", "cases": list(cases)}
    return base_documents(
        **{"roles/rep.json": role("rep"), "permission_tests/basics.json": test},
        **extra,
    )


def fails_with(docs: dict[str, Any], text: str) -> None:
    """Assert that compiling ``docs`` reports a problem starting with ``text``."""
    with pytest.raises(DefinitionError, match="(?m)^  " + re.escape(text)):
        compile_documents(docs)


def grant_of(definition: Definition, grantee: str, entity_name: str) -> EntityGrant:
    found = definition.role(grantee) or definition.permission_set(grantee)
    assert found is not None
    (grant,) = [g for g in found.grants if g.entity == entity_name]
    return grant


# The standard template


def test_standard_role_names(standard: Definition) -> None:
    assert standard.role_names == (
        "admin",
        "read_only",
        "sales_manager",
        "sales_rep",
        "service_agent",
    )


def test_standard_labels_translated(standard: Definition) -> None:
    sales_rep = standard.role("sales_rep")
    assert sales_rep is not None
    assert sales_rep.label.get("zh-CN") == "销售代表"
    assert sales_rep.kind == "role"


def test_standard_admin_has_no_grants(standard: Definition) -> None:
    admin = standard.role(ADMIN_ROLE)
    assert admin is not None
    assert admin.grants == ()
    assert admin.label.get("zh-CN") == "管理员"


def test_standard_sales_rep_opportunity(standard: Definition) -> None:
    grant = grant_of(standard, "sales_rep", "opportunity")
    assert grant.read == ("own",)
    assert grant.edit == ("own",)
    assert grant.delete == ("own",)
    assert grant.create is True
    assert grant.export is False
    assert grant.change_owner is False
    assert dict(grant.fields) == {"probability": "read_only"}


def test_standard_sales_rep_contract(standard: Definition) -> None:
    grant = grant_of(standard, "sales_rep", "contract")
    assert grant.read == ("own",)
    assert grant.create is False
    assert dict(grant.fields) == {"value": "hidden"}


def test_standard_sales_manager_rights(standard: Definition) -> None:
    grant = grant_of(standard, "sales_manager", "lead")
    assert grant.read == ("all",)
    assert grant.delete == ("subordinates",)
    assert grant.import_records is True
    assert grant.change_owner is True
    assert grant_of(standard, "sales_manager", "case").read == ("all",)
    assert grant_of(standard, "sales_manager", "product").edit == ()


def test_standard_service_agent_cases(standard: Definition) -> None:
    grant = grant_of(standard, "service_agent", "case")
    assert grant.read == ("team",)
    assert grant.edit == ("team",)
    assert grant.create is True
    contract = grant_of(standard, "service_agent", "contract")
    assert dict(contract.fields) == {"value": "hidden"}


def test_standard_read_only_reads_everything(standard: Definition) -> None:
    read_only = standard.role("read_only")
    assert read_only is not None
    (grant,) = read_only.grants_for("survey_response")
    assert grant.entity == "*"
    assert grant.read == ("all",)
    assert grant.edit == ()
    assert grant.create is False


def test_standard_permission_sets(standard: Definition) -> None:
    names = [item.name for item in standard.permission_sets]
    assert names == ["contract_approver", "data_export"]
    assert all(item.kind == "permission_set" for item in standard.permission_sets)
    assert grant_of(standard, "data_export", "*").export is True
    approver = grant_of(standard, "contract_approver", "contract")
    assert approver.fields["value"] == "editable"


def test_standard_sharing_rules(standard: Definition) -> None:
    (cases_rule,) = standard.sharing_rules_for("case")
    assert cases_rule.name == "high_priority_cases"
    assert cases_rule.conditions == (Filter("priority", "in", ("high", "urgent")),)
    assert cases_rule.access == "read"
    assert cases_rule.roles == ("service_agent",)
    (won,) = standard.sharing_rules_for("opportunity")
    assert won.teams == ("support",)


def test_standard_permission_test(standard: Definition) -> None:
    (test,) = standard.permission_tests
    assert test.name == "standard"
    assert 6 <= len(test.cases) <= 12
    hidden = [c for c in test.cases if c.action == "see"]
    assert [(c.role, c.field_name, c.allowed) for c in hidden] == [
        ("service_agent", "value", False)
    ]
    shared = [c for c in test.cases if c.values]
    assert dict(shared[0].values) == {"priority": "high"}
    exporting = [c for c in test.cases if c.permission_sets]
    assert exporting[0].permission_sets == ("data_export",)


def test_standard_round_trips(standard: Definition) -> None:
    stored = json.loads(json.dumps(dict(standard.documents)))
    reloaded = compile_documents(stored)
    assert reloaded.content_hash == standard.content_hash
    assert reloaded == standard


def test_standard_documents_keyed_by_folder(standard: Definition) -> None:
    keys = set(standard.documents)
    assert "roles/sales_rep.json" in keys
    assert "permission_sets/data_export.json" in keys
    assert "sharing_rules/high_priority_cases.json" in keys
    assert "permission_tests/standard.json" in keys


# Compiling


def test_no_permissions_only_admin() -> None:
    definition = load_definition(MINIMAL)
    assert [item.name for item in definition.roles] == [ADMIN_ROLE]
    assert definition.roles[0].label.get() == "Administrator"
    assert definition.roles[0].label.get("zh-CN") == "管理员"
    assert definition.permission_sets == ()
    assert definition.sharing_rules == ()
    assert definition.permission_tests == ()


def test_no_permissions_keeps_documents() -> None:
    definition = load_definition(MINIMAL)
    assert sorted(definition.documents) == [
        "definition.json",
        "entities/company.json",
        "entities/person.json",
    ]


def test_admin_file_sets_label() -> None:
    docs = base_documents(**{"roles/admin.json": role("admin", label="Owner")})
    definition = compile_documents(docs)
    assert definition.roles[0].name == ADMIN_ROLE
    assert definition.roles[0].label.get() == "Owner"


def test_admin_listed_first() -> None:
    docs = base_documents(
        **{"roles/aaa.json": role("aaa"), "roles/admin.json": role("admin")}
    )
    assert compile_documents(docs).role_names == ("admin", "aaa")


@pytest.mark.parametrize(
    ("written", "compiled"),
    [
        ("team", ("team",)),
        (["all", "own", "team"], ("own", "team", "all")),
        (True, ("all",)),
        (False, ()),
    ],
)
def test_scopes_compiled_in_order(written: Any, compiled: tuple[str, ...]) -> None:
    grants = {"account": {"read": written, "edit": written, "delete": written}}
    docs = base_documents(**{"roles/rep.json": role("rep", entities=grants)})
    grant = grant_of(compile_documents(docs), "rep", "account")
    assert grant.read == compiled
    assert grant.edit == compiled
    assert grant.delete == compiled


def test_absent_rights_not_granted() -> None:
    docs = base_documents(**{"roles/rep.json": role("rep", entities={"account": {}})})
    grant = grant_of(compile_documents(docs), "rep", "account")
    assert grant == EntityGrant("account")


def test_import_key_compiles_to_import_records() -> None:
    grants = {"account": {"import": True}}
    docs = base_documents(**{"roles/rep.json": role("rep", entities=grants)})
    grant = grant_of(compile_documents(docs), "rep", "account")
    assert grant.import_records is True
    assert grant.scopes("import") == ("all",)


def test_owner_id_may_be_hidden() -> None:
    grants = {"account": {"fields": {"owner_id": "hidden"}}}
    docs = base_documents(**{"roles/rep.json": role("rep", entities=grants)})
    grant = grant_of(compile_documents(docs), "rep", "account")
    assert dict(grant.fields) == {"owner_id": "hidden"}


def test_grants_sorted_by_entity() -> None:
    grants = {"deal": {"read": "own"}, "*": {"read": "all"}, "account": {}}
    docs = base_documents(**{"roles/rep.json": role("rep", entities=grants)})
    rep = compile_documents(docs).role("rep")
    assert rep is not None
    assert [grant.entity for grant in rep.grants] == ["*", "account", "deal"]


def test_sharing_rule_defaults() -> None:
    docs = base_documents(
        **{"roles/rep.json": role("rep"), "sharing_rules/grade_a.json": rule()}
    )
    (compiled,) = compile_documents(docs).sharing_rules
    assert compiled.access == "read"
    assert compiled.teams == ()
    assert compiled.conditions == (Filter("grade", "eq", "a"),)


def test_sharing_rule_for_teams_only() -> None:
    document = rule(roles=[], teams=["support", "north_1"], access="edit")
    docs = base_documents(**{"sharing_rules/grade_a.json": document})
    (compiled,) = compile_documents(docs).sharing_rules
    assert compiled.teams == ("support", "north_1")
    assert compiled.access == "edit"


def test_case_defaults_filled() -> None:
    (compiled,) = compile_documents(with_test(case())).permission_tests[0].cases
    assert compiled.owner == "other"
    assert compiled.permission_sets == ()
    assert compiled.field_name is None
    assert dict(compiled.values) == {}


def test_case_values_converted() -> None:
    values = {"signed_on": "2024-05-01", "revenue": 12.5, "grade": None}
    docs = with_test(case(values=values))
    (compiled,) = compile_documents(docs).permission_tests[0].cases
    assert compiled.values["signed_on"] == date(2024, 5, 1)
    assert compiled.values["revenue"] == Decimal("12.5")
    assert compiled.values["grade"] is None


def test_case_field_compiled() -> None:
    docs = with_test(case(action="change", field="grade", owner="manager"))
    (compiled,) = compile_documents(docs).permission_tests[0].cases
    assert compiled.field_name == "grade"
    assert compiled.owner == "manager"


def test_hash_covers_roles() -> None:
    docs = base_documents(**{"roles/rep.json": role("rep")})
    changed = copy.deepcopy(docs)
    changed["roles/rep.json"]["label"] = "Representative"
    first = compile_documents(docs).content_hash
    assert compile_documents(changed).content_hash != first


def test_hash_changes_with_added_role() -> None:
    docs = base_documents()
    with_role = base_documents(**{"roles/rep.json": role("rep")})
    assert compile_documents(docs).content_hash != (
        compile_documents(with_role).content_hash
    )


def test_stored_nested_key_rejected() -> None:
    docs = base_documents(**{"roles/sub/rep.json": role("rep")})
    fails_with(
        docs,
        "roles/sub/rep.json: unexpected document key 'roles/sub/rep.json' (use "
        "'definition.json', 'entities/NAME.json', 'roles/NAME.json', "
        "'permission_sets/NAME.json', 'sharing_rules/NAME.json', "
        "'permission_tests/NAME.json', 'rule_tests/NAME.json', "
        "'workflows/NAME.json' or 'automations/NAME.json')",
    )


# Problems in roles and permission sets


def test_grant_unknown_entity() -> None:
    grants = {"acount": {"read": "own"}}
    fails_with(
        base_documents(**{"roles/rep.json": role("rep", entities=grants)}),
        "roles/rep.json#/entities/acount: role 'rep' grants rights on entity "
        "'acount', which does not exist (did you mean 'account'? use one of the "
        "entities: account, deal, or '*' for every entity)",
    )


def test_grant_unknown_scope() -> None:
    grants = {"account": {"read": "owner"}}
    fails_with(
        base_documents(**{"roles/rep.json": role("rep", entities=grants)}),
        "roles/rep.json#/entities/account/read: invalid value 'owner' for 'read' "
        "(did you mean 'own'? use one of: own, team, subordinates, all)",
    )


def test_grant_unknown_scope_in_list() -> None:
    grants = {"account": {"edit": ["own", "al"]}}
    fails_with(
        base_documents(**{"roles/rep.json": role("rep", entities=grants)}),
        "roles/rep.json#/entities/account/edit/1: invalid value 'al' for scope 1 "
        "(did you mean 'all'?",
    )


def test_grant_empty_scope_list() -> None:
    grants = {"account": {"delete": []}}
    fails_with(
        base_documents(**{"roles/rep.json": role("rep", entities=grants)}),
        "roles/rep.json#/entities/account/delete: 'delete' must not be empty (add "
        "at least one scope, or use false to grant none)",
    )


def test_grant_unknown_right() -> None:
    grants = {"account": {"reed": "own"}}
    fails_with(
        base_documents(**{"roles/rep.json": role("rep", entities=grants)}),
        "roles/rep.json#/entities/account/reed: unknown property 'reed' in "
        "'account' (did you mean 'read'?",
    )


def test_grant_unknown_field() -> None:
    grants = {"account": {"fields": {"grdae": "hidden"}}}
    fails_with(
        base_documents(**{"roles/rep.json": role("rep", entities=grants)}),
        "roles/rep.json#/entities/account/fields/grdae: field 'grdae' is not a "
        "field of entity 'account' (did you mean 'grade'?",
    )


def test_grant_system_column_field() -> None:
    grants = {"account": {"fields": {"created_at": "read_only"}}}
    fails_with(
        base_documents(**{"roles/rep.json": role("rep", entities=grants)}),
        "roles/rep.json#/entities/account/fields/created_at: system column "
        "'created_at' of entity 'account' cannot have a field access level",
    )


def test_grant_unknown_access_level() -> None:
    grants = {"account": {"fields": {"grade": "secret"}}}
    fails_with(
        base_documents(**{"roles/rep.json": role("rep", entities=grants)}),
        "roles/rep.json#/entities/account/fields/grade: invalid value 'secret' "
        "for 'grade' (use one of: hidden, read_only, editable)",
    )


def test_fields_under_star_rejected() -> None:
    grants = {"*": {"read": "all", "fields": {"name": "hidden"}}}
    fails_with(
        base_documents(**{"roles/rep.json": role("rep", entities=grants)}),
        "roles/rep.json#/entities/*/fields: role 'rep' sets field access under "
        "'*', but field names differ between entities",
    )


def test_admin_entities_rejected() -> None:
    grants = {"account": {"read": "own"}}
    fails_with(
        base_documents(**{"roles/admin.json": role("admin", entities=grants)}),
        "roles/admin.json#/entities: role 'admin' lists entities, but it always "
        "holds every right on every entity",
    )


def test_role_without_label() -> None:
    fails_with(
        base_documents(**{"roles/rep.json": {"name": "rep"}}),
        "roles/rep.json: the role is missing required property 'label'",
    )


def test_role_name_too_long() -> None:
    name = "r" * 41
    fails_with(
        base_documents(**{f"roles/{name}.json": role(name)}),
        f"roles/{name}.json#/name: role name {name!r} is 41 characters long, more "
        "than the maximum of 40",
    )


def test_role_file_named_differently() -> None:
    fails_with(
        base_documents(**{"roles/seller.json": role("rep")}),
        "roles/seller.json#/name: role 'rep' is in file 'seller.json' (rename the "
        "file to 'rep.json' or change the role name)",
    )


def test_duplicate_role_name() -> None:
    docs = base_documents(
        **{"roles/rep.json": role("rep"), "roles/seller.json": role("rep")}
    )
    fails_with(
        docs,
        "roles/seller.json#/name: role name 'rep' is already used by "
        "roles/rep.json (give every role a unique name)",
    )


def test_set_named_like_role() -> None:
    docs = base_documents(
        **{"roles/rep.json": role("rep"), "permission_sets/rep.json": role("rep")}
    )
    fails_with(
        docs,
        "permission_sets/rep.json#/name: permission set name 'rep' is already "
        "used by role 'rep' (roles/rep.json)",
    )


def test_set_named_admin() -> None:
    docs = base_documents(**{"permission_sets/admin.json": role("admin")})
    fails_with(
        docs,
        "permission_sets/admin.json#/name: permission set name 'admin' is already "
        "used by role 'admin' (the built-in role)",
    )


def test_set_unknown_entity() -> None:
    grants = {"contract": {"read": "all"}}
    docs = base_documents(
        **{"permission_sets/legal.json": role("legal", entities=grants)}
    )
    fails_with(
        docs,
        "permission_sets/legal.json#/entities/contract: permission set 'legal' "
        "grants rights on entity 'contract', which does not exist",
    )


# Problems in sharing rules


def rule_documents(document: dict[str, Any]) -> dict[str, Any]:
    return base_documents(
        **{"roles/rep.json": role("rep"), "sharing_rules/grade_a.json": document}
    )


def test_rule_unknown_role() -> None:
    fails_with(
        rule_documents(rule(roles=["reps"])),
        "sharing_rules/grade_a.json#/roles/0: sharing rule 'grade_a' shares with "
        "role 'reps', which is not declared (did you mean 'rep'? declared roles: "
        "admin, rep; or add roles/reps.json)",
    )


def test_rule_admin_role_allowed() -> None:
    definition = compile_documents(rule_documents(rule(roles=["admin"])))
    assert definition.sharing_rules[0].roles == ("admin",)


def test_rule_unknown_entity() -> None:
    fails_with(
        rule_documents(rule(entity="acount")),
        "sharing_rules/grade_a.json#/entity: sharing rule 'grade_a' applies to "
        "entity 'acount', which does not exist (did you mean 'account'?",
    )


def test_rule_shares_with_nobody() -> None:
    fails_with(
        rule_documents(rule(roles=[], teams=[])),
        "sharing_rules/grade_a.json: sharing rule 'grade_a' shares records with no "
        'role and no team (add "roles", "teams" or both',
    )


def test_rule_without_conditions() -> None:
    fails_with(
        rule_documents(rule(where=[])),
        "sharing_rules/grade_a.json#/where: 'where' must not be empty (add at "
        "least one condition)",
    )


def test_rule_invalid_team_name() -> None:
    fails_with(
        rule_documents(rule(teams=["North team"])),
        "sharing_rules/grade_a.json#/teams/0: invalid value 'North team' for "
        "team 0 (expected a team name: a lower-case letter",
    )


def test_rule_invalid_access() -> None:
    fails_with(
        rule_documents(rule(access="write")),
        "sharing_rules/grade_a.json#/access: invalid value 'write' for 'access' "
        "(use one of: read, edit)",
    )


def test_rule_unknown_field() -> None:
    where = [{"field": "grdae", "op": "eq", "value": "a"}]
    fails_with(
        rule_documents(rule(where=where)),
        "sharing_rules/grade_a.json#/where/0/field: filter refers to 'grdae', "
        "which does not exist (did you mean 'grade'?",
    )


def test_rule_operator_wrong_for_type() -> None:
    where = [{"field": "grade", "op": "gt", "value": "a"}]
    fails_with(
        rule_documents(rule(where=where)),
        "sharing_rules/grade_a.json#/where/0/op: operator 'gt' does not apply to "
        "'grade' of type 'picklist' (use one of: eq, ne, in, isnull)",
    )


def test_rule_value_not_an_option() -> None:
    where = [{"field": "grade", "op": "eq", "value": "z"}]
    fails_with(
        rule_documents(rule(where=where)),
        "sharing_rules/grade_a.json#/where/0/value: value 'z' of filter 'grade eq' "
        "is invalid: expected one of the option values: a, b",
    )


def test_rule_sensitive_field_rejected() -> None:
    where = [{"field": "tax_id", "op": "eq", "value": "x"}]
    fails_with(
        rule_documents(rule(where=where)),
        "sharing_rules/grade_a.json#/where/0/field: sharing rule 'grade_a' filters "
        "on sensitive field 'account.tax_id', whose stored values are encrypted",
    )


def test_rule_system_column_allowed() -> None:
    where = [{"field": "created_at", "op": "gte", "value": "2024-01-01T00:00:00Z"}]
    definition = compile_documents(rule_documents(rule(where=where)))
    assert definition.sharing_rules[0].conditions[0].field == "created_at"


# Problems in permission tests


def test_case_unknown_role() -> None:
    fails_with(
        with_test(case(role="manager")),
        "permission_tests/basics.json#/cases/0/role: permission case 0 uses role "
        "'manager', which is not declared (declared roles: admin, rep; or add "
        "roles/manager.json)",
    )


def test_case_unknown_permission_set() -> None:
    docs = with_test(
        case(permission_sets=["exporter"]),
        **{"permission_sets/export.json": role("export")},
    )
    fails_with(
        docs,
        "permission_tests/basics.json#/cases/0/permission_sets/0: permission case "
        "0 uses permission set 'exporter', which is not declared (did you mean "
        "'export'? declared permission sets: export;",
    )


def test_case_unknown_entity() -> None:
    fails_with(
        with_test(case(), case(entity="acount")),
        "permission_tests/basics.json#/cases/1/entity: permission case 1 uses "
        "entity 'acount', which does not exist (did you mean 'account'?",
    )


def test_case_see_without_field() -> None:
    fails_with(
        with_test(case(action="see")),
        "permission_tests/basics.json#/cases/0: permission case 0 checks action "
        "'see' without a field",
    )


def test_case_field_with_record_action() -> None:
    fails_with(
        with_test(case(field="grade")),
        "permission_tests/basics.json#/cases/0/field: permission case 0 names "
        "field 'grade', but action 'read' applies to a whole record",
    )


def test_case_unknown_field() -> None:
    fails_with(
        with_test(case(action="change", field="grdae")),
        "permission_tests/basics.json#/cases/0/field: field 'grdae' is not a field "
        "of entity 'account' (did you mean 'grade'?",
    )


def test_case_unknown_value_field() -> None:
    fails_with(
        with_test(case(values={"owner_id": "u1"})),
        "permission_tests/basics.json#/cases/0/values/owner_id: field 'owner_id' "
        "is not a field of entity 'account'",
    )


def test_case_invalid_value() -> None:
    fails_with(
        with_test(case(values={"grade": "z"})),
        "permission_tests/basics.json#/cases/0/values/grade: value 'z' of field "
        "'grade' is invalid: expected one of the option values: a, b",
    )


def test_case_unknown_action() -> None:
    fails_with(
        with_test(case(action="view")),
        "permission_tests/basics.json#/cases/0/action: invalid value 'view' for "
        "'action' (use one of: read, create, edit, delete, export, import, "
        "change_owner, see, change)",
    )


def test_case_unknown_owner() -> None:
    fails_with(
        with_test(case(owner="boss")),
        "permission_tests/basics.json#/cases/0/owner: invalid value 'boss' for "
        "'owner' (use one of: self, other, team, subordinate, manager)",
    )


def test_permission_test_without_cases() -> None:
    docs = base_documents(
        **{"permission_tests/empty.json": {"name": "empty", "cases": []}}
    )
    fails_with(
        docs,
        "permission_tests/empty.json#/cases: 'cases' must not be empty (add at "
        "least one case)",
    )


# Folders and extends


def folder(name: str, *entities: dict[str, Any], **files: Any) -> dict[str, Any]:
    """Return the files of a definition folder ``name`` with extra ``files``
    given as FOLDER__NAME=document (``roles__rep`` for roles/rep.json)."""
    result: dict[str, Any] = {f"{name}/definition.json": manifest(name=name)}
    for document in entities:
        result[f"{name}/entities/{document['name']}.json"] = document
    for key, document in files.items():
        subfolder, stem = key.split("__")
        result[f"{name}/{subfolder}/{stem}.json"] = document
    return result


def extension_folder(**files: Any) -> dict[str, Any]:
    """Return a ``demo`` folder extending ``base`` with extra ``files``."""
    result = folder("demo", **files)
    result["demo/definition.json"] = manifest(name="demo", extends="../base")
    return result


def base_folder() -> dict[str, Any]:
    return folder(
        "base",
        entity("account", field("grade", "picklist", options=GRADES)),
        roles__rep=role("rep", entities={"account": {"read": "own"}}),
        roles__viewer=role("viewer", entities={"*": {"read": "all"}}),
        sharing_rules__grade_a=rule(),
    )


def test_folder_reads_permission_files(write: Write) -> None:
    write(base_folder())
    definition = load_definition(write({}).parent / "base")
    assert definition.role_names == ("admin", "rep", "viewer")
    assert [item.name for item in definition.sharing_rules] == ["grade_a"]


def test_extension_replaces_role(write: Write) -> None:
    write(base_folder())
    replaced = role("rep", label="Seller", entities={"account": {"read": "all"}})
    definition = load_definition(write(extension_folder(roles__rep=replaced)))
    rep = definition.role("rep")
    assert rep is not None
    assert rep.label.get() == "Seller"
    assert rep.grants[0].read == ("all",)


def test_extension_keeps_and_adds_roles(write: Write) -> None:
    write(base_folder())
    files = extension_folder(roles__auditor=role("auditor"))
    definition = load_definition(write(files))
    assert definition.role_names == ("admin", "auditor", "rep", "viewer")


def test_extension_rule_uses_base_role(write: Write) -> None:
    write(base_folder())
    files = extension_folder(
        sharing_rules__viewers=rule(name="viewers", roles=["viewer"])
    )
    definition = load_definition(write(files))
    assert [item.name for item in definition.sharing_rules] == ["grade_a", "viewers"]


def test_extension_problem_names_extension_file(write: Write) -> None:
    write(base_folder())
    broken = role("rep", entities={"acount": {"read": "own"}})
    problems = problems_of(
        lambda: load_definition(write(extension_folder(roles__rep=broken)))
    )
    assert [(p.file, p.pointer) for p in problems] == [
        ("roles/rep.json", "/entities/acount")
    ]


def test_base_problem_names_base_file(write: Write) -> None:
    files = base_folder()
    files["base/roles/rep.json"] = role("rep", entities={"acount": {}})
    write(files)
    problems = problems_of(lambda: load_definition(write(extension_folder())))
    assert [(p.file, p.pointer) for p in problems] == [
        ("../base/roles/rep.json", "/entities/acount")
    ]


def test_extension_documents_are_merged(write: Write) -> None:
    write(base_folder())
    files = extension_folder(roles__rep=role("rep", label="Seller"))
    definition = load_definition(write(files))
    assert definition.documents["roles/rep.json"]["label"] == "Seller"
    stored = json.loads(json.dumps(dict(definition.documents)))
    assert compile_documents(stored) == definition


def test_malformed_role_reported_once(write: Write) -> None:
    files = base_folder()
    files["base/roles/rep.json"] = '{"name": "rep",'
    write(files)
    problems = problems_of(lambda: load_definition(write({}).parent / "base"))
    assert [p.file for p in problems] == ["roles/rep.json"]
    assert problems[0].message.startswith("invalid JSON at line 1")


def test_invalid_role_not_reported_again(write: Write) -> None:
    files = base_folder()
    files["base/roles/rep.json"] = {"name": "rep", "label": "Rep", "extra": 1}
    write(files)
    problems = problems_of(lambda: load_definition(write({}).parent / "base"))
    assert [(p.file, p.pointer) for p in problems] == [("roles/rep.json", "/extra")]
