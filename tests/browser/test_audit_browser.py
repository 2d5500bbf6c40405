"""The token page's consumption charts, in a real browser, match the counts in the database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from datapass import clock
from datapass.actor import Actor
from datapass.consumption import ingest
from datapass.consumption.models import UsageDaily
from datapass.extensions import db
from tests.browser.steps import sign_in
from tests.tokens.conftest import make_api, make_habilitation, make_provider

pytestmark = pytest.mark.browser


def test_token_page_charts_match_the_database(page, committed_app):
    from datapass.tokens import issuance as token_issuance

    with committed_app.app_context():
        provider = make_provider()
        api = make_api(provider)
        habilitation = make_habilitation(api)
        token, _raw = token_issuance.issue_for_habilitation(habilitation, Actor.system("test"))
        events = []
        for days_ago, calls, errors in [(0, 3, 1), (1, 7, 0), (2, 1, 1), (5, 12, 4), (20, 2, 0)]:
            moment = clock.now() - timedelta(days=days_ago, hours=1)
            for i in range(calls):
                events.append(
                    {
                        "id": f"{days_ago}-{i}",
                        "token": token.jti,
                        "time": moment.isoformat(),
                        "endpoint": "/v2/quotient" if i % 2 else "/v2/statut",
                        "status": 500 if i < errors else 200,
                        "latency_ms": 30,
                    }
                )
        ingest.ingest_usage(provider.id, events)
        db.session.commit()
        token_id, email = token.id, habilitation.requester.email
        expected = {
            day.isoformat(): (int(calls), int(errors))
            for day, calls, errors in db.session.execute(
                select(UsageDaily.day, func.sum(UsageDaily.calls), func.sum(UsageDaily.errors))
                .where(UsageDaily.token_id == token_id)
                .group_by(UsageDaily.day)
            )
        }

    sign_in(page, email)
    page.goto(f"/jetons/{token_id}?jours=30")
    bars = page.eval_on_selector_all(
        "#graphique-consommation g.dp-chart__bar",
        """els => els.map(g => ({day: g.dataset.day, calls: +g.dataset.calls,
            errors: +g.dataset.errors, height: g.querySelector('rect.dp-chart__calls')
            .getBBox().height}))""",
    )
    assert len(bars) == 30
    for bar in bars:
        assert (bar["calls"], bar["errors"]) == expected.get(bar["day"], (0, 0)), bar["day"]
    assert sum(b["calls"] for b in bars) == 25
    # the drawn heights are proportional to the counts
    tallest = max(bars, key=lambda b: b["calls"])
    for bar in bars:
        assert bar["height"] == pytest.approx(tallest["height"] * bar["calls"] / 12, abs=0.1)
    # the accessible table says the same
    rows = page.eval_on_selector_all(
        "#tableau-consommation tbody tr",
        "els => els.map(r => [r.dataset.day, +r.cells[1].textContent, +r.cells[2].textContent])",
    )
    assert {day: (calls, errors) for day, calls, errors in rows if calls} == {
        d: v for d, v in expected.items()
    }
    assert page.locator("[data-total-calls]").inner_text() == "25"
    # seven days: the 20-day-old calls leave the chart
    page.get_by_role("link", name="7 jours").click()
    page.wait_for_url("**jours=7**")
    seven = page.eval_on_selector_all(
        "#graphique-consommation g.dp-chart__bar", "els => els.map(g => +g.dataset.calls)"
    )
    assert len(seven) == 7 and sum(seven) == 23
