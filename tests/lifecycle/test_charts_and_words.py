"""Charts where people look (issue 11): the security dashboard's expiries per week for six
months and unused access by stage, the instructor's decision times per month and API, all
drawn by the same server-side SVG charts as consumption, each with its table."""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from datapass import charts, clock
from datapass.actor import Actor
from datapass.authorizations import decisions as authorization_decisions
from datapass.authorizations import statistics as authorization_statistics
from datapass.extensions import db
from datapass.lifecycle import sweep, trends
from datapass.lifecycle.dashboard import DashboardFilters
from tests import factories
from tests.lifecycle.conftest import issue, make_listening_api


@contextmanager
def count_queries():
    statements: list[str] = []

    def note(conn, cursor, statement, *args):
        statements.append(statement)

    engine = db.session.get_bind()
    engine = getattr(engine, "engine", engine)
    event.listen(engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", note)


# --- the chart geometry ------------------------------------------------------------------


def test_stacked_bars_pile_up_and_scale_to_a_round_ceiling():
    series = [charts.Series("a", "x", "xs", "t1"), charts.Series("b", "x", "xs", "t2")]
    points = [
        charts.Point("1", "un", {"a": 3, "b": 4}),
        charts.Point("2", "deux", {"a": 0, "b": 0}),
    ]
    chart = charts.bar_chart(points, series)
    assert chart["peak"] == 7 and [t["value"] for t in chart["ticks"]] == [0, 5, 10]
    first = chart["bars"][0]
    low, high = first["segments"]
    plot_h = chart["base"] - 10
    assert low["h"] == pytest.approx(plot_h * 3 / 10, abs=0.01)
    assert high["y"] + high["h"] == pytest.approx(low["y"], abs=0.01)  # b sits on a
    assert first["tooltip"] == "un : 3 xs, 4 xs"
    assert chart["bars"][1]["segments"] == []  # nothing to draw
    assert charts.nice_ceiling(0) == 1 and charts.nice_ceiling(101) == 200


def test_overlay_bars_start_from_the_axis():
    series = [charts.Series("calls", "appel", "appels", "calls")]
    series.append(charts.Series("errors", "erreur", "erreurs", "errors"))
    chart = charts.bar_chart(
        [charts.Point("1", "t", {"calls": 10, "errors": 5})],
        series,
        mode="overlay",
        scale_to_peak=True,
    )
    calls, errors = chart["bars"][0]["segments"]
    assert calls["y"] + calls["h"] == errors["y"] + errors["h"] == chart["base"]
    assert errors["h"] == pytest.approx(calls["h"] / 2, abs=0.01)
    assert chart["ticks"][-1]["value"] == 10


# --- the security dashboard ----------------------------------------------------------------


def _expiring_at(api, moment, **kwargs):
    return issue(api, clock.add_months(moment, -18), **kwargs)


def test_expiries_per_week_over_six_months(app, login_as):
    api = make_listening_api()
    now = clock.now()  # Saturday 28/11/2026, 10:00 in Paris
    mondays = trends.week_starts()
    assert len(mondays) == 26 and mondays[0].isoformat() == "2026-11-23"
    _expiring_at(api, now + timedelta(days=1))  # Sunday: this week
    for _ in range(2):
        _expiring_at(api, now + timedelta(days=16))  # the week of 14/12
    _expiring_at(api, now + timedelta(days=16)).status = "suspended"  # not active
    _expiring_at(api, now + timedelta(days=200))  # beyond six months
    db.session.flush()
    with count_queries() as statements:
        weeks = trends.expiries_per_week(DashboardFilters())
    assert len(statements) == 1
    counts = {w["week"].isoformat(): w["count"] for w in weeks if w["count"]}
    assert counts == {"2026-11-23": 1, "2026-12-14": 2}
    other = make_listening_api()
    assert sum(w["count"] for w in trends.expiries_per_week(DashboardFilters(api_id=other.id))) == 0

    officer = factories.user(roles=("security_officer",), mfa_enabled_at=clock.now())
    page = login_as(officer).get("/securite/tableau-de-bord").get_data(as_text=True)
    assert 'id="graphique-echeances"' in page and 'data-bars="26"' in page
    assert re.search(r'<g class="dp-chart__bar" data-week="2026-12-14" data-count="2"', page)
    assert "Semaine du 14/12/2026 au 20/12/2026 : 2 jetons" in page  # the bar's tooltip
    row = re.search(
        r'<tr data-week="2026-12-14"[^>]*><th scope="row">([^<]*)</th><td>(\d+)</td>', page
    )
    assert row and row.groups() == ("Semaine du 14/12/2026 au 20/12/2026", "2")
    assert "3 jetons actifs expirent d'ici le" in page


def test_unused_access_by_stage(app, login_as):
    api = make_listening_api(
        unused_never_used_warning_days=10,
        unused_warning_days=20,
        unused_suspend_days=30,
        unused_revoke_days=40,
    )
    now = clock.now()
    issue(api, now - timedelta(days=12))  # never used, past the first warning
    idle = issue(api, now - timedelta(days=100))
    idle.last_used_at = now - timedelta(days=25)  # idle past the warning
    suspended = issue(api, now - timedelta(days=100))
    suspended.last_used_at = now - timedelta(days=35)
    revoked = issue(api, now - timedelta(days=100))
    revoked.last_used_at = now - timedelta(days=45)
    used_again = issue(api, now - timedelta(days=100))
    used_again.last_used_at = now - timedelta(days=25)  # warned, then used again below
    fresh = issue(api, now - timedelta(days=3))  # nothing yet
    manual = issue(api, now - timedelta(days=3))
    db.session.flush()
    sweep.sweep_tokens()
    assert (suspended.status, revoked.status) == ("suspended", "revoked")
    from datapass.tokens import transitions as token_transitions

    token_transitions.suspend(manual, Actor.system("tests"), "Enquête en cours.")  # not the policy
    used_again.last_used_at = clock.now() + timedelta(minutes=5)
    clock.advance(timedelta(minutes=10))
    db.session.flush()
    with count_queries() as statements:
        stages = trends.unused_by_stage(DashboardFilters())
    assert len(statements) == 1
    assert {s["stage"]: s["count"] for s in stages} == {
        "never_used": 1,
        "warned": 1,
        "suspended": 1,
        "revoked": 1,
    }
    assert fresh.status == "active"
    officer = factories.user(roles=("security_officer",), mfa_enabled_at=clock.now())
    page = login_as(officer).get("/securite/tableau-de-bord").get_data(as_text=True)
    assert 'id="graphique-inutilises"' in page
    assert '<tr data-stage="suspended" data-count="1"><th scope="row">Suspendus faute ' in page


# --- decision times ------------------------------------------------------------------------


def test_decision_times_per_month_and_api(app, client, login_as):
    api = factories.catalogue()["quotient-familial"]
    instructor = factories.staff("instructor", api=api)
    actor = Actor.for_user(instructor)
    clock.set_frozen(datetime(2026, 8, 3, 9, 0, tzinfo=UTC))
    waits = (1, 2, 10, 40, 70)
    requests = [factories.request_in("submitted", api, instructor=instructor) for _ in waits]
    start = clock.now()
    for days, request in zip(waits, requests, strict=True):
        clock.set_frozen(start + timedelta(days=days))
        authorization_decisions.approve(request, actor)
    clock.set_frozen(datetime(2026, 11, 28, 9, 0, tzinfo=UTC))
    stats = authorization_statistics.decision_statistics(instructor)
    by_month = {s.month: s.buckets for s in stats}
    assert by_month == {"2026-08": (2, 1, 0, 0), "2026-09": (0, 0, 1, 0), "2026-10": (0, 0, 0, 1)}
    assert authorization_statistics.decision_bucket(7.0) == 0
    assert authorization_statistics.decision_bucket(7.1) == 1

    page = login_as(instructor).get("/instruction/statistiques").get_data(as_text=True)
    assert 'id="graphique-delais-1"' in page and 'data-bars="12"' in page
    august = re.search(r'<g class="dp-chart__bar" data-month="2026-08"[^>]*>(.*?)</g>', page, re.S)
    assert august and "août 2026 : 2 décisions, 1 décision, 0 décision, 0 décision" in august[1]
    assert august[1].count("<rect") == 2  # the two buckets that have decisions
    assert ">août 26</text>" in page  # the axis
    assert '<th scope="row">août 2026</th><td>3</td><td>2</td><td>1</td><td>0</td><td>0</td>' in (
        page
    )
    assert "<td>2,0</td>" in page  # the median of 1, 2 and 10 days
