"""Renewal: nothing changed (automatic or instructor policy), something changed (the request
is reopened and the renewal completes at its approval); the window; the grace period."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from datapass import clock
from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.extensions import db
from datapass.lifecycle import decisions, states, sweep
from datapass.lifecycle import renewal as renewals
from datapass.lifecycle.models import Renewal
from datapass.tokens.models import AccessToken
from tests import factories
from tests.lifecycle.conftest import (
    add_scopes,
    expiring_token,
    mails,
    make_listening_api,
    webhooks,
)


def answers_for(token, **changes):
    answers = renewals.RenewalAnswers(
        same_person=True,
        purpose_unchanged=True,
        legal_basis_holds=True,
        contacts=renewals.current_contacts(token.habilitation),
        scopes=list(token.habilitation.scopes),
    )
    for key, value in changes.items():
        setattr(answers, key, value)
    return answers


def tags() -> list[str]:
    return list(db.session.scalars(select(AuditEvent.tag).order_by(AuditEvent.seq)))


def test_nothing_changed_renews_at_once_with_a_new_token_and_a_grace_period(app):
    api = make_listening_api()
    token = expiring_token(api, days_left=60)
    requester = token.habilitation.requester
    assert renewals.can_renew(token, requester)
    outcome = renewals.renew(token, Actor.for_user(requester), answers_for(token))
    assert outcome.completed
    new = outcome.new_token
    assert outcome.raw and outcome.raw.count(".") == 2
    assert new.sealed_value is None  # shown once: not kept
    assert new.expires_at == clock.add_months(new.issued_at, 18)
    assert token.status == "superseded"
    assert token.grace_ends_at == clock.now() + timedelta(days=30)
    assert outcome.renewal.grace_ends_at == token.grace_ends_at
    assert new.predecessor_id == token.id
    assert {"lifecycle:renewal:requested", "lifecycle:renewal:completed"} <= set(tags())
    events = [w.event for w in webhooks()]
    assert "token.rotated" in events and events.count("token.issued") == 2
    # A second renewal of the same token is refused.
    assert not renewals.can_renew(token, requester)
    with pytest.raises(states.LifecycleError):
        renewals.renew(token, Actor.for_user(requester), answers_for(token))
    # The grace end revokes the old token; the new one lives on.
    sweep.sweep_tokens()
    clock.advance(timedelta(days=30, minutes=1))
    sweep.sweep_tokens()
    assert token.status == "revoked" and new.status == "active"


def test_an_automatic_renewal_tells_the_technical_contact_when_the_old_token_stops(app):
    api = make_listening_api()
    token = expiring_token(api, days_left=60)
    requester = token.habilitation.requester
    technical = token.habilitation.technical_contact_email
    assert technical and technical != requester.email
    outcome = renewals.renew(token, Actor.for_user(requester), answers_for(token))
    (mail,) = mails("renewal_completed")
    assert mail.recipient == technical
    grace_day = clock.local(outcome.renewal.grace_ends_at).strftime("%d/%m/%Y")
    assert grace_day in mail.subject
    body = mail.body_text
    assert f"L’ancien jeton reste valable jusqu’au {grace_day}" in body
    assert f"/jetons/{outcome.new_token.id}" in body
    assert outcome.raw not in body  # the token itself is never mailed


def test_grace_is_configurable_and_capped_at_90_days(app):
    api = make_listening_api()
    token = expiring_token(api, days_left=80)
    app.config["LIFECYCLE_RENEWAL_GRACE_DAYS"] = 400
    try:
        outcome = renewals.renew(
            token, Actor.for_user(token.habilitation.requester), answers_for(token)
        )
    finally:
        app.config["LIFECYCLE_RENEWAL_GRACE_DAYS"] = 30
    # 90 days at most, never past the old token's own expiry (80 days away).
    assert outcome.renewal.grace_ends_at == token.expires_at


def test_window_opens_90_days_before_and_closes_90_days_after(app):
    api = make_listening_api()
    token = expiring_token(api, days_left=120)
    requester = token.habilitation.requester
    assert "ouvrira" in renewals.renewal_blocker(token)
    assert not renewals.can_renew(token, requester)
    clock.advance(timedelta(days=31))
    assert renewals.can_renew(token, requester)
    clock.advance(timedelta(days=89))
    sweep.sweep_tokens()
    assert token.status == "expired"
    assert renewals.can_renew(token, requester)  # still open after expiry…
    clock.advance(timedelta(days=91))
    assert "dépassé" in renewals.renewal_blocker(token)  # …for 90 days


def test_renewal_after_expiry_issues_a_token_without_grace(app):
    api = make_listening_api()
    token = expiring_token(api, days_left=5)
    clock.advance(timedelta(days=10))
    sweep.sweep_tokens()
    assert token.status == "expired"
    assert len(mails("expiry_notice")) == 3
    assert len(webhooks("token.expired")) == 1
    outcome = renewals.renew(
        token, Actor.for_user(token.habilitation.requester), answers_for(token)
    )
    assert outcome.completed and outcome.renewal.grace_ends_at is None
    assert outcome.new_token.status == "active"


def test_instructor_policy_waits_for_a_confirmation(app):
    api = make_listening_api(renewal_policy="instructor")
    instructor = factories.user(roles=("instructor",), api=api)
    token = expiring_token(api, days_left=30)
    outcome = renewals.renew(
        token, Actor.for_user(token.habilitation.requester), answers_for(token)
    )
    assert outcome.pending and outcome.new_token is None
    assert [m.recipient for m in mails("renewal_to_confirm")] == [instructor.email]
    assert token.status == "active"
    assert decisions.pending_renewals(instructor) == [outcome.renewal]
    outsider = factories.user(roles=("instructor",), api=make_listening_api())
    assert decisions.get_renewal_for_instructor(outcome.renewal.id, outsider) is None
    with pytest.raises(states.LifecycleError):
        decisions.decide(outcome.renewal, Actor.for_user(instructor), False, "")
    decisions.decide(outcome.renewal, Actor.for_user(instructor), True)
    renewal = outcome.renewal
    assert renewal.status == "completed" and renewal.new_token.sealed_value is not None
    assert token.status == "superseded"
    assert mails("renewal_confirmed")


def test_instructor_may_refuse_with_a_reason(app):
    api = make_listening_api(renewal_policy="instructor")
    instructor = factories.user(roles=("instructor",), api=api)
    token = expiring_token(api, days_left=30)
    outcome = renewals.renew(
        token, Actor.for_user(token.habilitation.requester), answers_for(token)
    )
    decisions.decide(outcome.renewal, Actor.for_user(instructor), False, "Cadre juridique abrogé.")
    assert outcome.renewal.status == "refused" and token.status == "active"
    assert "lifecycle:renewal:refused" in tags()


def test_a_changed_contact_reopens_the_request_then_approval_completes(app):
    from datapass.authorizations import decisions as authorization_decisions

    api = make_listening_api()
    add_scopes(api, "revenus", "adresse")
    token = expiring_token(api, days_left=40, scopes=("revenus", "adresse"))
    requester = token.habilitation.requester
    answers = answers_for(token)
    answers.contacts["technical"]["email"] = "nouveau.tech@mairie.fr"
    answers.scopes = ["revenus"]
    outcome = renewals.renew(token, Actor.for_user(requester), answers)
    assert outcome.reopened and outcome.new_token is None
    request = token.habilitation.request
    assert request.state == "draft"
    assert request.technical_email == "nouveau.tech@mairie.fr"
    assert request.scopes == ["revenus"]
    assert token.status == "active"  # the habilitation stays in force meanwhile
    changed = {c["field"] for c in outcome.renewal.changes}
    assert {"technical_email", "scopes"} <= changed
    assert not renewals.can_renew(token, requester)  # one renewal at a time
    # The instructor approves the update: the renewal completes with the new token.
    instructor = factories.user(roles=("instructor",), api=api)
    request.state = "submitted"
    db.session.flush()
    new_habilitation = authorization_decisions.approve(request, Actor.for_user(instructor))
    renewal = db.session.get(Renewal, outcome.renewal.id)
    assert renewal.status == "completed"
    new = db.session.get(AccessToken, renewal.new_token_id)
    assert new.habilitation_id == new_habilitation.id
    assert new.scopes == ["revenus"]
    assert token.status == "superseded" and token.grace_ends_at is not None


def test_a_cancelled_update_frees_the_renewal(app):
    from datapass.authorizations import decisions as authorization_decisions
    from datapass.authorizations import snapshots as authorization_snapshots

    api = make_listening_api()
    token = expiring_token(api, days_left=40)
    requester = token.habilitation.requester
    token.habilitation.snapshot = authorization_snapshots.snapshot(token.habilitation.request)
    outcome = renewals.renew(
        token, Actor.for_user(requester), answers_for(token, purpose_unchanged=False)
    )
    assert outcome.reopened
    authorization_decisions.cancel_reopening(token.habilitation.request, Actor.for_user(requester))
    assert renewals.open_renewal(token) is None
    assert renewals.can_renew(token, requester)


def test_scopes_may_only_shrink(app):
    api = make_listening_api()
    token = expiring_token(api, days_left=40)
    with pytest.raises(states.LifecycleError):
        renewals.renew(
            token,
            Actor.for_user(token.habilitation.requester),
            answers_for(token, scopes=["revenus", "casier"]),
        )


def test_only_members_renew(app):
    api = make_listening_api()
    token = expiring_token(api, days_left=40)
    stranger = factories.user(organisation=factories.organisation())
    assert not renewals.can_renew(token, stranger)


def test_a_renewal_moves_only_along_its_transitions_table(app):
    api = make_listening_api(renewal_policy="instructor")
    instructor = factories.user(roles=("instructor",), api=api)
    token = expiring_token(api, days_left=30)
    outcome = renewals.renew(
        token, Actor.for_user(token.habilitation.requester), answers_for(token)
    )
    renewal = outcome.renewal
    assert states.can(renewal, states.RenewalEvent.REFUSE)
    assert not states.can(renewal, states.RenewalEvent.REQUEST)
    decisions.decide(renewal, Actor.for_user(instructor), False, "Cadre juridique abrogé.")
    assert renewal.status == "refused" and renewal.decided_at is not None
    for event in states.RenewalEvent:
        assert not states.can(renewal, event)  # refused is final
    with pytest.raises(states.LifecycleError):
        renewals.apply_transition(renewal, states.RenewalEvent.COMPLETE, Actor.system("test"))
    assert renewal.status == "refused"


def test_closing_a_habilitation_cancels_its_open_renewal_with_an_audit_event(app):
    api = make_listening_api(renewal_policy="instructor")
    token = expiring_token(api, days_left=3)
    outcome = renewals.renew(
        token, Actor.for_user(token.habilitation.requester), answers_for(token)
    )
    assert outcome.pending
    clock.advance(timedelta(days=4))
    sweep.sweep_tokens()
    clock.advance(timedelta(days=91))
    sweep.sweep_tokens()
    assert not token.habilitation.is_active
    assert outcome.renewal.status == "cancelled" and outcome.renewal.decided_at is not None
    event = db.session.scalars(
        select(AuditEvent).where(AuditEvent.tag == "lifecycle:renewal:cancelled")
    ).one()
    assert event.actor_type == "system" and json.loads(event.payload)["cause"] == "closure"
    assert tags().index("lifecycle:renewal:cancelled") < tags().index(
        "lifecycle:habilitation:closed"
    )
