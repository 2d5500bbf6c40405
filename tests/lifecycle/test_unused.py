"""Unused access: the graded steps per API, the evidence, the thresholds shown in advance,
the organisation's single reactivation; the instructors' digest."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from datapass import clock
from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.extensions import db
from datapass.lifecycle import plan, reactivation, states, sweep
from datapass.lifecycle.days import day_start
from datapass.lifecycle.digest import DIGEST_CATEGORY, send_digests
from datapass.tokens import transitions as token_transitions
from tests import factories
from tests.lifecycle.conftest import acts, expiring_token, issue, mails, make_listening_api


def test_thresholds_are_per_api_and_shown_before_they_are_reached(app):
    api = make_listening_api(
        unused_never_used_warning_days=10,
        unused_warning_days=20,
        unused_suspend_days=30,
        unused_revoke_days=40,
    )
    token = issue(api)
    issued = clock.local(token.issued_at).date()
    steps = dict((label, day) for day, label in plan.upcoming_steps(token))
    assert steps["Sera suspendu faute d'utilisation"] == issued + timedelta(days=30)
    assert steps["Sera révoqué faute d'utilisation"] == issued + timedelta(days=40)
    assert steps["Avertissement : jeton jamais utilisé"] == issued + timedelta(days=10)
    assert steps["Expirera"] == clock.local(token.expires_at).date()
    # A use moves every unused-access step.
    token.last_used_at = clock.now() + timedelta(days=5)
    clock.advance(timedelta(days=5))
    steps = dict((label, day) for day, label in plan.upcoming_steps(token))
    assert steps["Sera suspendu faute d'utilisation"] == issued + timedelta(days=35)
    assert "Avertissement : jeton jamais utilisé" not in steps


def test_a_step_set_to_zero_is_off(app):
    api = make_listening_api(unused_suspend_days=0, unused_revoke_days=0)
    token = issue(api)
    labels = [label for _day, label in plan.upcoming_steps(token)]
    assert "Sera suspendu faute d'utilisation" not in labels
    clock.advance(timedelta(days=400))
    sweep.sweep_tokens()
    assert token.status == "active"


def test_warning_carries_the_evidence_to_contacts_and_instructors(app):
    from datapass.consumption import flush

    api = make_listening_api()
    instructor = factories.user(roles=("instructor",), api=api)
    token = issue(api)
    used_at = clock.now() + timedelta(days=1)
    token.last_used_at, token.last_used_ip = used_at, "192.0.2.7"
    # The call as consumption records it (event, daily count, the token's last calls).
    stored = flush.record_introspection_uses(
        [
            {
                "token_id": token.id,
                "at": used_at,
                "ip": "192.0.2.7",
                "endpoint": "/v2/quotient-familial",
                "latency_ms": 12,
            }
        ]
    )
    assert stored == 1
    sweep.sweep_tokens()
    clock.set_frozen(day_start(clock.local(used_at).date() + timedelta(days=90)))
    sweep.sweep_tokens()
    warned = mails("unused_warning")
    assert instructor.email in {m.recipient for m in warned}
    assert len(warned) == 4  # requester, technical contact, controller, instructor
    body = warned[0].body_text
    assert "192.0.2.7" in body and "/v2/quotient-familial" in body
    assert "sera suspendu le" in body


def test_suspension_then_one_reactivation_by_the_organisation(app):
    api = make_listening_api()
    instructor = factories.user(roles=("instructor",), api=api)
    token = issue(api)
    requester = token.habilitation.requester
    clock.advance(timedelta(days=121))
    sweep.sweep_tokens()
    assert token.status == "suspended"
    assert "120 jours" in token.suspended_reason
    suspended = db.session.scalars(
        select(AuditEvent).where(AuditEvent.tag == "tokens:token:suspended")
    ).all()
    assert suspended[-1].payload and "unused" in suspended[-1].payload
    # A justification is required.
    with pytest.raises(states.LifecycleError):
        reactivation.self_reactivate(token, Actor.for_user(requester), "  ")
    assert token.status == "suspended"
    # Another organisation's member cannot.
    stranger = factories.user(organisation=factories.organisation())
    assert not reactivation.can_self_reactivate(token, stranger)
    reactivation.self_reactivate(token, Actor.for_user(requester), "Reprise du service en janvier.")
    assert token.status == "active" and token.reactivated_at == clock.now()
    assert instructor.email in {m.recipient for m in mails("lifecycle_reactivated")}
    # The count restarts at the reactivation: no immediate re-suspension.
    sweep.sweep_tokens()
    assert token.status == "active"
    clock.advance(timedelta(days=121))
    sweep.sweep_tokens()
    assert token.status == "suspended"
    # The second time, only an instructor may lift it.
    assert not reactivation.can_self_reactivate(token, requester)
    with pytest.raises(states.LifecycleError, match="instructeur"):
        reactivation.self_reactivate(token, Actor.for_user(requester), "Encore une fois, svp.")
    token_transitions.reactivate(token, Actor.for_user(instructor), "Vérifié avec la commune.")
    assert token.status == "active"


def test_revocation_after_180_days_says_why_in_the_audit(app):
    api = make_listening_api()
    token = issue(api)
    for days in (60, 90, 120, 180):
        clock.set_frozen(day_start(clock.local(token.issued_at).date() + timedelta(days=days)))
        sweep.sweep_tokens()
    assert token.status == "revoked"
    event = db.session.scalars(
        select(AuditEvent).where(AuditEvent.tag == "tokens:token:revoked")
    ).one()
    assert "jamais utilisé" in event.payload and '"cause":"unused"' in event.payload.replace(
        " ", ""
    )
    assert [a.outcome for a in acts(token.id)] == ["done"] * 4


def test_digest_once_a_day_to_instructors(app):
    api = make_listening_api()
    instructor = factories.user(roles=("instructor",), api=api)
    expiring_token(api, days_left=10)
    expiring_token(api, days_left=60)
    clock.set_frozen(day_start(date(2026, 11, 29)) + timedelta(hours=6))  # 06:00
    assert send_digests()["sent"] == 0  # before the digest hour
    clock.advance(timedelta(hours=2))
    assert send_digests()["sent"] == 1
    assert send_digests()["sent"] == 0  # once a day
    digest = mails("lifecycle_digest")
    assert [m.recipient for m in digest] == [instructor.email]
    assert digest[0].category == DIGEST_CATEGORY
    assert "1 jeton expirant, aucun renouvelé" in digest[0].subject
    clock.advance(timedelta(days=1))
    assert send_digests()["sent"] == 1
