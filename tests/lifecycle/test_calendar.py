"""A frozen clock walks the calendar day by day (twice a day: 06:00 and 23:59 in Paris) over
tokens issued on awkward dates; every reminder, expiry, grace end and unused-access step must
happen once, on its Paris day — never twice, never missed."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, time, timedelta

import pytest
from sqlalchemy import update

from datapass import clock
from datapass.actor import Actor
from datapass.extensions import db
from datapass.lifecycle import reactivation, renewal, states
from datapass.lifecycle.sweep import sweep_tokens
from datapass.tokens import mails as token_mails
from datapass.tokens.models import AccessToken
from tests.lifecycle.conftest import acts, issue, mails, make_listening_api, webhooks

PARIS = clock.PARIS


def paris(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=PARIS)


def pday(moment: datetime) -> date:
    return clock.local(moment).date()


def use(*tokens: AccessToken) -> None:
    """A use reported through any channel (as the usage buffer writes it: a bulk UPDATE)."""
    db.session.execute(
        update(AccessToken)
        .where(AccessToken.id.in_([t.id for t in tokens]))
        .values(last_used_at=clock.now(), last_used_ip="10.1.2.3")
    )


def sweep() -> None:
    sweep_tokens()


def first_days(token: AccessToken) -> dict[str, list[date]]:
    days: dict[str, list[date]] = defaultdict(list)
    for act in acts(token.id):
        key = ":".join(act.key.split(":")[:2]) if act.key.startswith("unused:") else act.key
        days[key].append((pday(act.at), act.outcome))
    return days


def test_two_years_day_by_day(app):
    api = make_listening_api()
    renew_answers = None
    start, end = date(2027, 1, 1), date(2029, 3, 5)
    plan = {
        # A: 31 January, used every day: 7 reminders, expiry, closing of the habilitation.
        "A": paris(date(2027, 1, 31), 10),
        # B: 29 February (leap day), never used: the four unused-access steps.
        "B": paris(date(2028, 2, 29), 9),
        # C: 30 August late in the evening (the UTC date is the same, the expiry falls back
        # to 28 February), used, renewed 45 days before expiry: grace end revokes the old one.
        "C": paris(date(2027, 8, 30), 23, 30),
        # D: last day of a month; used once, then idle; reactivated once, idle again.
        "D": paris(date(2027, 4, 30), 15),
    }
    tokens: dict[str, AccessToken] = {}
    renewed: dict[str, AccessToken] = {}
    d_last_use = date(2027, 6, 1)
    d_reactivate = date(2027, 10, 4)
    second_refusal: list[str] = []
    day = start
    while day <= end:
        # Issuance at its moment, before the day's sweeps that follow it.
        for name, moment in plan.items():
            if moment.date() == day and name not in tokens:
                clock.set_frozen(moment)
                tokens[name] = issue(api)
        clock.set_frozen(paris(day, 6))
        sweep()
        clock.set_frozen(paris(day, 12))
        live_users = [t for k, t in tokens.items() if k in ("A", "C")] + list(renewed.values())
        if live_users:
            use(*live_users)
        if "D" in tokens and day in (date(2027, 5, 2), d_last_use):
            use(tokens["D"])
        if "D" in tokens and day == d_reactivate:
            token = db.session.get(AccessToken, tokens["D"].id)
            assert reactivation.can_self_reactivate(token, token.habilitation.requester)
            reactivation.self_reactivate(
                token,
                Actor.for_user(token.habilitation.requester),
                "Le traitement reprend à la rentrée scolaire.",
            )
        if "C" in tokens and "C" not in renewed:
            token = db.session.get(AccessToken, tokens["C"].id)
            if pday(token.expires_at) - day == timedelta(days=45):
                requester = token.habilitation.requester
                renew_answers = renewal.RenewalAnswers(
                    True, True, True, renewal.current_contacts(token.habilitation), token.scopes
                )
                outcome = renewal.renew(token, Actor.for_user(requester), renew_answers)
                assert outcome.completed and outcome.raw
                renewed["C"] = outcome.new_token
        if "D" in tokens and day == date(2028, 2, 5):
            token = db.session.get(AccessToken, tokens["D"].id)
            requester = token.habilitation.requester
            assert not reactivation.can_self_reactivate(token, requester)
            with pytest.raises(states.LifecycleError):
                reactivation.self_reactivate(
                    token, Actor.for_user(requester), "Encore une fois svp."
                )
            second_refusal.append("refused")
        clock.set_frozen(paris(day, 23, 59))
        sweep()
        db.session.commit()
        day += timedelta(days=1)

    db.session.expire_all()
    a, b, c, d = (db.session.get(AccessToken, tokens[k].id) for k in "ABCD")

    # A: every reminder once, on its Paris day; expiry on its day; closing 90 days later.
    exp_day = pday(a.expires_at)
    assert exp_day == date(2028, 7, 31)
    got = first_days(a)
    for days_before in (90, 60, 30, 15, 7, 1, 0):
        assert got[f"reminder:{days_before}"] == [
            (exp_day - timedelta(days=days_before), "done")
        ], days_before
    assert got["expiry"] == [(exp_day, "done")]
    assert got["closure"] == [(exp_day + timedelta(days=90), "done")]
    assert a.status == "expired"
    assert a.habilitation.status == "revoked"
    holders = token_mails.holder_emails(a)
    reminder_mails = [m for m in mails("reminder_expiry") if m.recipient in holders]
    assert len(reminder_mails) == 7 * len(holders) == 21
    assert len([m for m in mails("expiry_notice") if m.recipient in holders]) == 3
    a_hooks = [w for w in webhooks() if f'"jti":"{a.jti}"' in w.body.replace(" ", "")]
    events = [w.event for w in a_hooks]
    assert events.count("token.expiring") == 2
    assert events.count("token.expired") == 1
    assert not [k for k in got if k.startswith("unused")]  # used daily: never idle

    # B: never used: warning at 60, warning with evidence at 90, suspended at 120,
    # revoked at 180 — each once, on its day; no reminder (revoked long before expiry).
    issued = pday(b.issued_at)
    got = first_days(b)
    assert got["unused:never_used"] == [(issued + timedelta(days=60), "done")]
    assert got["unused:warning"] == [(issued + timedelta(days=90), "done")]
    assert got["unused:suspend"] == [(issued + timedelta(days=120), "done")]
    assert got["unused:revoke"] == [(issued + timedelta(days=180), "done")]
    assert b.status == "revoked" and "180 jours" in b.revoked_reason
    assert not [k for k in got if k.startswith("reminder")]

    # C: the reminders before the renewal only; the old token revoked at its grace end.
    got = first_days(c)
    exp_day = pday(c.expires_at)
    assert exp_day == date(2029, 2, 28)  # 30 August + 18 months
    assert sorted(k for k in got if k.startswith("reminder")) == ["reminder:60", "reminder:90"]
    renewal_day = exp_day - timedelta(days=45)
    assert got["grace_end"] == [(renewal_day + timedelta(days=30), "done")]
    assert c.status == "revoked"
    new = db.session.get(AccessToken, renewed["C"].id)
    assert new.status == "active" and new.predecessor_id == c.id
    assert pday(new.expires_at) == date(2030, 7, 14)

    # D: idle from 1 June: warned and suspended; reactivated once; idle again: warned,
    # suspended (only an instructor may lift it now), revoked 180 days after reactivation.
    got = first_days(d)
    assert got["unused:warning"] == [
        (d_last_use + timedelta(days=90), "done"),
        (d_reactivate + timedelta(days=90), "done"),
    ]
    assert got["unused:suspend"] == [
        (d_last_use + timedelta(days=120), "done"),
        (d_reactivate + timedelta(days=120), "done"),
    ]
    assert got["unused:revoke"] == [(d_reactivate + timedelta(days=180), "done")]
    assert "unused:never_used" not in got
    assert second_refusal == ["refused"]
    assert d.status == "revoked"

    # Nothing anywhere twice.
    keys = [(act.token_id, act.key) for act in acts()]
    assert len(keys) == len(set(keys))
