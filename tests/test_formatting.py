"""French formatting with Babel (issue 11, point 7): numbers, percentages, dates, plurals,
on pages and in mails; no « l'API API Particulier »."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from datapass import clock, formatting
from datapass.actor import Actor
from datapass.consumption import store
from datapass.extensions import db
from datapass.lifecycle.days import day_start, paris_day
from datapass.lifecycle.sweep import sweep_tokens
from datapass.tokens import issuance as token_issuance
from tests import factories
from tests.lifecycle.conftest import expiring_token, mails
from tests.tokens.conftest import make_api, make_habilitation

NNBSP = "\u202f"  # CLDR's French group separator (narrow no-break space)
NBSP = "\u00a0"


def test_numbers_have_french_thousands_separators_and_decimal_comma():
    assert formatting.number(0) == "0"
    assert formatting.number(1234567) == f"1{NNBSP}234{NNBSP}567"
    assert formatting.number(1234.5, 1) == f"1{NNBSP}234,5"
    assert formatting.number(12.0, 1) == "12,0"
    assert formatting.number(2.4, 0) == "2"
    assert formatting.number(None) == "—"


def test_percentages_are_french():
    assert formatting.percent(0.0) == f"0,0{NBSP}%"
    assert formatting.percent(0.1234) == f"12,3{NBSP}%"
    assert formatting.percent(1) == f"100,0{NBSP}%"
    assert formatting.percent(0.5, 0) == f"50{NBSP}%"


def test_dates_are_shown_in_paris_time():
    moment = datetime(2026, 11, 28, 23, 30, tzinfo=UTC)  # already the 29th in Paris
    assert formatting.date(moment) == "29/11/2026"
    assert formatting.date(date(2026, 3, 1)) == "01/03/2026"
    assert formatting.date(moment, "d MMMM y") == "29 novembre 2026"
    assert formatting.datetime(moment) == "29/11/2026 à 00:30"
    assert formatting.datetime(moment, "%d/%m/%Y %H:%M:%S") == "29/11/2026 00:30:00"
    assert formatting.datetime(None) == "—"
    assert formatting.month("2026-02") == "février 2026"


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (0, "0 jour"),  # French (CLDR): 0 and 1 take the singular
        (1, "1 jour"),
        (2, "2 jours"),
        (1500, f"1{NNBSP}500 jours"),
    ],
)
def test_plurals_follow_french_rules(count, expected):
    assert formatting.plural(count, "jour", "jours") == expected


def test_zero_can_be_said_in_words():
    assert formatting.plural(0, "appel", "appels", zero="aucun appel") == "aucun appel"
    assert formatting.plural(3, "appel", "appels", zero="aucun appel") == "3 appels"
    assert formatting.words(1, "modifié", "modifiés") == "modifié"
    assert formatting.words(2, "modifié", "modifiés") == "modifiés"


def test_api_names_are_not_doubled():
    assert formatting.without_api_prefix("API Particulier — Statut étudiant") == (
        "Particulier — Statut étudiant"
    )
    assert formatting.without_api_prefix("API Entreprise") == "Entreprise"
    assert formatting.without_api_prefix("Quotient familial") == "Quotient familial"


def test_filters_are_registered_for_pages_and_mails(app):
    env = app.jinja_env
    rendered = env.from_string(
        "{{ 12345|number }}|{{ 0.0|percent }}|{{ d|date }}|{{ plural(2, 'appel', 'appels') }}"
    ).render(d=date(2026, 11, 28))
    assert rendered == f"12{NNBSP}345|0,0{NBSP}%|28/11/2026|2 appels"


def test_reminder_mail_speaks_french(app):
    """A reminder for « API Particulier — … », one day before expiry: « à l’API Particulier »,
    « dans 1 jour » (not « l’API API Particulier », not « 1 jours »)."""
    api = make_api(name="API Particulier — Quotient familial CAF & MSA")
    token = expiring_token(api, days_left=1)
    clock.set_frozen(day_start(paris_day(clock.now())))
    sweep_tokens()
    sent = [m for m in mails("reminder_expiry") if m.body_text]
    assert sent, "no reminder sent"
    mail = sent[-1]
    for text in (mail.body_text, mail.body_html, mail.subject):
        assert "API API" not in text
    assert "l’API Particulier — Quotient familial" in mail.body_text
    assert "dans 1 jour." in mail.body_text
    assert "1 jours" not in mail.body_text + mail.subject
    assert token.api_id == api.id


def test_consumption_page_formats_numbers_and_rates(app, client):
    """The token page's consumption: « Aucun appel », no « 0.0 % »; thousands separated."""
    api = make_api()
    token = expiring_token(api, days_left=200)
    member = factories.user(organisation=token.organisation)
    client.post("/connexion", data={"email": member.email, "password": factories.PASSWORD})
    page = client.get(f"/jetons/{token.id}").get_data(as_text=True)
    assert "Aucun appel" in page
    assert "0.0 %" not in page and "0 appels" not in page
    today = clock.today()
    db.session.execute(
        store.DAILY.insert().values(
            day=today - timedelta(days=1),
            token_id=token.id,
            api_id=token.api_id,
            organisation_id=token.organisation_id,
            endpoint="/v2/quotient",
            calls=12345,
            errors=1234,
            latency_ms_sum=12345 * 40,
        )
    )
    db.session.flush()
    page = client.get(f"/jetons/{token.id}").get_data(as_text=True)
    assert f">12{NNBSP}345</strong> appels" in page
    assert f"10,0{NBSP}%" in page  # 1 234 / 12 345
    assert "%.1f" not in page


def test_token_link_flash_gives_paris_time(app, client, login_as):
    """The flash after sending the single-use link: its expiry in Paris time (14:00 when the
    link is sent at 10:00 Paris for 4 hours), not a UTC date."""
    habilitation = make_habilitation()
    token, _raw = token_issuance.issue_for_habilitation(habilitation, Actor.system("test"))
    login_as(habilitation.requester)
    response = client.post(f"/jetons/{token.id}/envoi", follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "valable jusqu&#39;au 28/11/2026 à 14:00 (heure de Paris)" in page
