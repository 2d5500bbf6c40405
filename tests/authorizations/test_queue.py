"""The instructor's workspace: the queue (filters, waiting order, pagination, counts), its
exports (CSV safe from formula injection, XLSX) and the time-to-decision statistics."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from html import unescape

import pytest
from openpyxl import load_workbook

from datapass.actor import Actor
from datapass.authorizations import decisions, statistics
from tests import factories
from tests.authorizations.conftest import commit


@pytest.fixture
def queue(app, frozen_clock, apis, instructor):
    """Three submitted requests of the instructed API (oldest first), one in each other
    state, and one of another API."""
    api = apis["quotient-familial"]
    built = {}
    for name in ("ancienne", "moyenne", "récente"):
        built[name] = factories.request_in("submitted", api, instructor=instructor)
        built[name].title = f"Demande {name}"
        frozen_clock.advance(timedelta(days=3))
    built["mairie"] = factories.request_in(
        "changes_requested",
        api,
        instructor=instructor,
        organisation=factories.organisation("Mairie de Saint-Ouen", siret=factories.siret(777)),
    )
    built["validée"] = factories.request_in("validated", api, instructor=instructor)
    built["autre"] = factories.request_in("submitted", apis["api-entreprise"])
    commit()
    return built


def test_queue_sorted_by_waiting_time_with_counts(app, client, sign_in, instructor, queue):
    sign_in(instructor)
    page = unescape(client.get("/instruction").get_data(as_text=True))
    positions = [page.index(f"Demande {n}") for n in ("ancienne", "moyenne", "récente")]
    assert positions == sorted(positions)
    assert "En cours d'instruction (3)" in page
    assert "Modifications demandées (1)" in page and "Validée (1)" in page
    assert queue["autre"].reference not in page
    assert "9 jours" in page  # the oldest has waited since three advances of 3 days


@pytest.mark.parametrize(
    "query,expected",
    [
        ({"etat": "changes_requested"}, ["mairie"]),
        ({"etat": "", "organisation": "saint-ouen"}, ["mairie"]),
        ({"etat": "", "organisation": factories.siret(777)}, ["mairie"]),
        ({"q": "moyenne"}, ["moyenne"]),
        ({"etat": ""}, ["ancienne", "moyenne", "récente", "mairie", "validée"]),
    ],
)
def test_filters(app, client, sign_in, instructor, queue, query, expected):
    sign_in(instructor)
    page = client.get("/instruction", query_string=query).get_data(as_text=True)
    shown = [name for name, r in queue.items() if r.reference in page]
    assert shown == expected


def test_reference_search_and_api_filter(app, client, sign_in, instructor, queue, apis):
    sign_in(instructor)
    reference = queue["récente"].reference
    page = client.get("/instruction", query_string={"q": reference}).get_data(as_text=True)
    assert reference in page and queue["ancienne"].reference not in page
    other = apis["api-entreprise"].id  # not instructed: the filter cannot widen the queue
    page = client.get("/instruction", query_string={"api": other}).get_data(as_text=True)
    assert "Aucune demande ne correspond." in unescape(page)


def test_pagination(app, client, sign_in, instructor, queue):
    app.config["QUEUE_PAGE_SIZE"] = 2
    try:
        sign_in(instructor)
        first = client.get("/instruction").get_data(as_text=True)
        second = client.get("/instruction?page=2").get_data(as_text=True)
    finally:
        app.config["QUEUE_PAGE_SIZE"] = 50
    assert queue["ancienne"].reference in first and queue["récente"].reference not in first
    assert queue["récente"].reference in second and "Page 2 sur 2" in second


DANGEROUS = ['=HYPERLINK("http://evil")', "+33 1 23", "-2+3", "@SUM(A1)"]


def test_exports_are_safe_from_formula_injection(app, client, sign_in, instructor, queue):
    for request, title in zip(queue.values(), DANGEROUS, strict=False):
        request.title = title
    commit()
    sign_in(instructor)
    response = client.get("/instruction/export.csv?etat=")
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(
        csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff")), delimiter=";")
    )
    assert rows[0][0] == "Référence" and len(rows) == 6
    titles = {row[1] for row in rows[1:]}
    assert {"'" + t for t in DANGEROUS} <= titles
    workbook = load_workbook(io.BytesIO(client.get("/instruction/export.xlsx?etat=").data))
    values = [row[1] for row in workbook.active.iter_rows(min_row=2, values_only=True)]
    assert {"'" + t for t in DANGEROUS} <= set(values)
    assert all(
        not str(v).startswith(("=", "+", "-", "@"))
        for row in workbook.active.values
        for v in row
        if v is not None
    )


def test_time_to_decision_statistics(app, client, sign_in, frozen_clock, api, instructor):
    from datetime import UTC, datetime

    frozen_clock.set_frozen(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    submitted = [factories.request_in("submitted", api, instructor=instructor) for _ in range(3)]
    actor = Actor.for_user(instructor)
    for days, request in zip((1, 1, 8), submitted, strict=True):
        frozen_clock.advance(timedelta(days=days))
        if days == 8:
            decisions.refuse(request, actor, "Non.")
        else:
            decisions.approve(request, actor)
    commit()
    (stats,) = statistics.decision_statistics(instructor)
    # decided after 1, 2 and 10 days: median 2, 90th percentile 8.4 (linear interpolation)
    assert (stats.month, stats.decisions, stats.median_days, stats.p90_days) == (
        "2026-11",
        3,
        2.0,
        8.4,
    )
    sign_in(instructor)
    page = client.get("/instruction/statistiques").get_data(as_text=True)
    assert "<td>2,0</td><td>8,4</td>" in page  # French decimal comma (issue 11, point 7)
