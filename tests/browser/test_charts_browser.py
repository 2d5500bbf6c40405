"""The charts and the accessibility statement in a real browser (issue 11): each page is
audited by axe-core and must fit 320 and 1,280 px (tests/browser/conftest.py); the bars drawn
are as tall as their numbers say, and the table beside them says the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from datapass import clock
from datapass.actor import Actor
from datapass.authorizations import decisions as authorization_decisions
from datapass.extensions import db
from tests import factories
from tests.browser.steps import sign_in
from tests.lifecycle.conftest import expiring_token, issue, make_listening_api

pytestmark = pytest.mark.browser


def test_dashboard_statistics_and_statement(page, new_page, committed_app):
    with committed_app.app_context():
        api = factories.catalogue()["quotient-familial"]
        now = clock.now()
        for days in (3, 17, 17, 17, 40):
            expiring_token(api, days_left=days)  # used just now: the sweep leaves them be
        idle_api = make_listening_api(unused_never_used_warning_days=10)
        issue(idle_api, now - timedelta(days=12))  # never used: warned by the sweep
        from datapass.lifecycle import sweep

        sweep.sweep_tokens()
        # demo staff skip TOTP outside production (DEMO_SKIP_MFA): the sign-in form suffices
        instructor = factories.user(roles=("instructor",), api=api, is_demo=True)
        actor = Actor.for_user(instructor)
        clock.set_frozen(datetime(2026, 10, 5, 9, 0, tzinfo=UTC))
        requests = [factories.request_in("submitted", api, instructor=instructor) for _ in range(3)]
        start = clock.now()
        for days, request in zip((2, 12, 40), requests, strict=True):
            clock.set_frozen(start + timedelta(days=days))
            authorization_decisions.approve(request, actor)
        clock.set_frozen(now)
        officer = factories.user(roles=("security_officer",), is_demo=True)
        db.session.commit()
        officer_email, instructor_email = officer.email, instructor.email

    sign_in(page, officer_email)
    page.goto("/securite/tableau-de-bord")
    bars = page.eval_on_selector_all(
        "#graphique-echeances g.dp-chart__bar",
        """els => els.map(g => ({week: g.dataset.week, count: +g.dataset.count,
            height: g.querySelector('rect') ? g.querySelector('rect').getBBox().height : 0}))""",
    )
    assert len(bars) == 26
    counted = {b["week"]: b["count"] for b in bars if b["count"]}
    assert sum(counted.values()) == 5 and max(counted.values()) == 3
    tallest = max(bars, key=lambda b: b["count"])
    for bar in bars:
        assert bar["height"] == pytest.approx(tallest["height"] * bar["count"] / 3, abs=0.1)
    page.locator("#echeances summary").click()
    rows = page.eval_on_selector_all(
        "#tableau-echeances tbody tr",
        "els => els.map(r => [r.dataset.week, +r.cells[1].textContent])",
    )
    assert {w: n for w, n in rows if n} == counted
    stage = page.locator('#tableau-inutilises tr[data-stage="never_used"] td').inner_text()
    assert stage == "1"

    other = new_page()
    sign_in(other, instructor_email)
    other.goto("/instruction/statistiques")
    october = other.locator('#graphique-delais-1 g.dp-chart__bar[data-month="2026-10"]')
    assert october.get_attribute("data-decisions") == "2"
    assert october.locator("rect").count() == 2  # within 7 days, and 8 to 30 days
    assert "octobre 2026" in other.locator("#tableau-delais-1").inner_text()

    anonymous = new_page()
    anonymous.goto("/")
    anonymous.locator("#pied-de-page").get_by_role(
        "link", name="Accessibilité : non conforme"
    ).click()
    anonymous.wait_for_url("**/accessibilite")
    assert anonymous.get_by_role("heading", level=1).inner_text() == "Déclaration d'accessibilité"
