"""Counts per value under the list's filters, and their bar charts."""

from __future__ import annotations

import re

from flask.testing import FlaskClient

from crm_platform.control import Actor
from crm_platform.querying import Condition, ListQuery
from crm_platform.records import RecordService
from tests.test_web import sign_in


def add_cases(records: RecordService) -> None:
    for subject, priority in [("A", "high"), ("B", "high"), ("C", "low"),
                              ("D", "urgent"), ("E", "high")]:
        records.create("case", {"subject": subject, "priority": priority,
                                "status": "new", "type": "complaint"})


def test_group_counts_most_first(records: RecordService) -> None:
    add_cases(records)
    counts = records.group_counts("case", ListQuery(), "priority")
    assert counts == [("high", 3), ("low", 1), ("urgent", 1)]


def test_group_counts_follow_filters(records: RecordService) -> None:
    add_cases(records)
    query = ListQuery(conditions=[Condition("priority", "ne", "high")])
    counts = records.group_counts("case", query, "priority")
    assert counts == [("low", 1), ("urgent", 1)]


def test_list_page_draws_chart(
    client: FlaskClient, records: RecordService, admin: Actor
) -> None:
    add_cases(records)
    sign_in(client)
    page = client.get("/t/acme/case/")
    assert page.status_code == 200
    charts = re.findall(r'<svg class="breakdown-chart"', page.text)
    assert charts
    assert "3 · 60.0 %" in page.text
    widths = [int(w) for w in re.findall(r'<rect x="170" y="\d+" width="(\d+)"',
                                         page.text)]
    assert max(widths) == 240
    assert min(widths) == 80
