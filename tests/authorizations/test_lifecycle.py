"""The lifecycle's effects: habilitations (frozen, obsolete, restored, revoked), the field
diff of each submission, the mails, messages, transfers and message templates."""

from __future__ import annotations

from contextlib import contextmanager
from html import unescape

import pytest
from sqlalchemy import select

from datapass import signals
from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.authorizations import decisions, sections, states, templates
from datapass.notify.models import OutboxMail
from tests import factories
from tests.authorizations.conftest import commit


def mails(template: str | None = None, to: str | None = None) -> list[OutboxMail]:
    query = select(OutboxMail).order_by(OutboxMail.id)
    if template:
        query = query.where(OutboxMail.template == template)
    if to:
        query = query.where(OutboxMail.recipient == to)
    from datapass.extensions import db

    return list(db.session.scalars(query))


@contextmanager
def heard_instead(signal, receiver, fake):
    """``fake`` hears ``signal`` instead of the other domain's ``receiver`` (whose own tests
    cover it)."""
    signal.disconnect(receiver)
    signal.connect(fake, weak=False)
    try:
        yield
    finally:
        signal.disconnect(fake)
        signal.connect(receiver)


@pytest.fixture
def tokens_calls():
    """Record what the tokens domain is asked to do (its own tests cover the tokens)."""
    from datapass.tokens import issuance as token_issuance
    from datapass.tokens import transitions as token_transitions

    calls = []
    with (
        heard_instead(
            signals.habilitation_approved,
            token_issuance.issue_for_habilitation,
            lambda habilitation, actor, **kw: calls.append(("issue", habilitation.id)),
        ),
        heard_instead(
            signals.habilitation_revoked,
            token_transitions.revoke_for_habilitation,
            lambda habilitation, actor, reason: calls.append(("revoke", habilitation.id, reason)),
        ),
    ):
        yield calls


def test_submission_mails(app, api, instructor, applicant):
    request = factories.filled_request(api, requester=applicant)
    decisions.submit(request, Actor.for_user(applicant))
    (ack,) = mails("request_submitted")
    assert ack.recipient == applicant.email
    assert "deux mois" in ack.body_text and "décision implicite de rejet" in ack.body_text
    (new,) = mails("instruction_new_request")
    assert new.recipient == instructor.email
    assert new.category == decisions.NEW_REQUEST_CATEGORY  # optional: one-click unsubscribe
    assert "/notifications/desabonnement/" in new.body_text
    designated = {m.recipient for m in mails("request_designated")}
    assert designated == {request.controller_email, request.dpo_email}


def test_unsubscribed_instructor_gets_no_new_request_mail(app, api, instructor, applicant):
    from datapass.notify import outbox

    outbox.unsubscribe(instructor.email, decisions.NEW_REQUEST_CATEGORY)
    request = factories.filled_request(api, requester=applicant)
    decisions.submit(request, Actor.for_user(applicant))
    assert mails("instruction_new_request") == []
    assert len(mails("request_submitted")) == 1  # the acknowledgement is not optional


def test_changes_then_resubmission_records_the_diff(app, api, instructor, applicant):
    request = factories.filled_request(api, requester=applicant)
    actor = Actor.for_user(applicant)
    decisions.submit(request, actor)
    decisions.request_changes(request, Actor.for_user(instructor), "Le DPO doit être nommé.")
    (changes,) = mails("request_changes_requested")
    assert "Le DPO doit être nommé." in changes.body_text
    old_dpo = request.dpo_email
    sections.save_section(
        request,
        "contacts",
        {
            **{f: getattr(request, f) for f in sections.SECTIONS_BY_SLUG["contacts"].fields},
            "dpo_email": "dpo@agglo.fr",
        },
        actor,
    )
    entry = decisions.submit(request, actor)
    assert entry.diff == [
        {
            "field": "dpo_email",
            "label": "Délégué à la protection des données (DPO) : adresse électronique",
            "before": old_dpo,
            "after": "dpo@agglo.fr",
        }
    ]
    assert states.timeline_label(entry) == "Demande soumise à nouveau"
    from datapass.extensions import db

    payload = db.session.scalars(
        select(AuditEvent.payload)
        .where(AuditEvent.tag == "authorizations:request:submit")
        .order_by(AuditEvent.seq.desc())
    ).first()
    assert '"changed_fields":["dpo_email"]' in payload
    # Only the newly named DPO is told (the controller already was).
    assert [m.recipient for m in mails("request_designated")][-1] == "dpo@agglo.fr"
    assert len(mails("request_designated")) == 3


def test_approval_freezes_a_habilitation(app, api, instructor, applicant, tokens_calls):
    request = factories.request_in("submitted", api, instructor=instructor, requester=applicant)
    habilitation = decisions.approve(request, Actor.for_user(instructor), "Bon projet.")
    assert habilitation.status == "active" and habilitation.scopes == request.scopes
    assert habilitation.snapshot["title"] == request.title
    assert habilitation.technical_contact_email == request.technical_email
    assert habilitation.controller_email == request.controller_email
    assert habilitation.requester_email == applicant.email
    assert habilitation.organisation.siret == request.organisation.siret
    assert habilitation.api.audience == "https://particulier.api.gouv.fr/quotient-familial"
    assert tokens_calls == [("issue", habilitation.id)]
    (approved,) = mails("request_approved")
    assert "homologuée" in approved.body_text and "MonServiceSécurisé" in approved.body_text
    assert "Bon projet." in approved.body_text
    # Reopening for an update: the habilitation stays active and frozen.
    actor = Actor.for_user(applicant)
    decisions.reopen(request, actor)
    sections.save_section(
        request, "projet", {"title": "Cantine et crèche", "description": "d", "purpose": "p"}, actor
    )
    assert habilitation.status == "active" and habilitation.snapshot["title"] != "Cantine et crèche"
    assert states.is_reopening(request)
    decisions.submit(request, actor)
    replacement = decisions.approve(request, Actor.for_user(instructor))
    assert habilitation.status == "obsolete" and habilitation.replaced_by_id == replacement.id
    assert replacement.status == "active" and replacement.snapshot["title"] == "Cantine et crèche"
    assert request.active_habilitation is replacement


@pytest.mark.parametrize("how", ["cancel", "refuse"])
def test_an_update_abandoned_restores_the_validated_content(app, api, instructor, applicant, how):
    request = factories.request_in(
        "submitted", api, reopening=True, instructor=instructor, requester=applicant
    )
    habilitation = request.active_habilitation
    validated_title = habilitation.snapshot["title"]
    actor = Actor.for_user(applicant)
    if how == "refuse":
        decisions.refuse(request, Actor.for_user(instructor), "Mise à jour non justifiée.")
        assert "inchangée" in mails("request_refused")[-1].body_text
    else:
        decisions.request_changes(request, Actor.for_user(instructor), "Précisez.")
        sections.save_section(
            request, "projet", {"title": "Autre titre", "description": "d", "purpose": "p"}, actor
        )
        decisions.cancel_reopening(request, actor)
    assert request.state == "validated"
    assert request.title == validated_title
    assert habilitation.status == "active" and request.active_habilitation is habilitation


def test_revocation(app, api, instructor, applicant, tokens_calls):
    request = factories.request_in("validated", api, instructor=instructor, requester=applicant)
    habilitation = request.active_habilitation
    officer = factories.staff("security_officer")
    decisions.revoke(request, Actor.for_user(officer), "Fuite de jeton signalée.")
    assert habilitation.status == "revoked"
    assert habilitation.revocation_reason == "Fuite de jeton signalée."
    assert ("revoke", habilitation.id, "Fuite de jeton signalée.") in tokens_calls
    recipients = {m.recipient for m in mails("request_revoked")}
    assert recipients == {applicant.email, request.technical_email, request.controller_email}
    assert all("Fuite de jeton signalée." in m.body_text for m in mails("request_revoked"))


def test_a_reason_is_required(app, client, sign_in, api, instructor, applicant):
    request = factories.request_in("submitted", api, instructor=instructor, requester=applicant)
    commit()
    sign_in(instructor)
    for event in ("refuse", "request_changes"):
        response = client.post(f"/demandes/{request.id}/actions/{event}", data={"text": "  "})
        assert response.status_code == 422
        assert "Indiquez un motif" in unescape(response.get_data(as_text=True))
    with pytest.raises(states.ReasonRequired):
        decisions.refuse(request, Actor.for_user(instructor), "")
    assert request.state == "submitted"


def test_messages_between_organisation_and_instructors(
    app, client, sign_in, api, instructor, applicant
):
    request = factories.request_in("submitted", api, instructor=instructor, requester=applicant)
    commit()
    sign_in(applicant)
    client.post(f"/demandes/{request.id}/messages", data={"body": "Faut-il la délibération ?"})
    (to_instructor,) = mails("instruction_message")
    assert to_instructor.recipient == instructor.email
    assert "Faut-il la délibération ?" in to_instructor.body_text
    sign_in(instructor)
    client.post(f"/demandes/{request.id}/messages", data={"body": "Oui, signée."})
    (to_applicant,) = mails("request_message")
    assert to_applicant.recipient == applicant.email
    page = unescape(client.get(f"/demandes/{request.id}").get_data(as_text=True))
    assert "Faut-il la délibération ?" in page and "Oui, signée." in page
    response = client.post(f"/demandes/{request.id}/messages", data={"body": ""})
    assert response.status_code == 422


def test_transfer_to_another_member(app, client, sign_in, api, instructor, applicant, org):
    request = factories.request_in(
        "validated", api, instructor=instructor, requester=applicant, organisation=org
    )
    colleague = factories.user(organisation=org, full_name="Bruno Successeur")
    outsider = factories.user(organisation=factories.organisation())
    commit()
    sign_in(applicant)
    page = client.get(f"/demandes/{request.id}/transfert").get_data(as_text=True)
    assert "Bruno Successeur" in page and outsider.email not in page
    response = client.post(f"/demandes/{request.id}/transfert", data={"user_id": outsider.id})
    assert response.status_code == 422
    habilitation = request.active_habilitation
    response = client.post(
        f"/habilitations/{habilitation.id}/transfert", data={"user_id": colleague.id}
    )
    assert response.status_code == 302
    from datapass.extensions import db

    db.session.expire_all()
    assert request.requester_id == colleague.id
    assert request.active_habilitation.requester_id == colleague.id
    assert mails("habilitation_transferred")[0].recipient == colleague.email
    assert request.events[-1].kind == "transfer"


def test_message_templates(app, client, sign_in, api, instructor, applicant):
    request = factories.request_in("submitted", api, instructor=instructor, requester=applicant)
    commit()
    sign_in(instructor)
    response = client.post(
        "/instruction/modeles",
        data={"api_id": api.id, "title": "Délibération", "body": "Joignez la délibération."},
    )
    assert response.status_code == 302
    (template,) = templates.templates_for(instructor)
    page = unescape(
        client.get(f"/demandes/{request.id}?modele={template.id}").get_data(as_text=True)
    )
    assert ">Joignez la délibération.</textarea>" in page
    response = client.post(
        f"/instruction/modeles/{template.id}",
        data={"api_id": api.id, "title": "Délibération signée", "body": "Signée, svp."},
    )
    assert response.status_code == 302 and template.title == "Délibération signée"
    client.post(f"/instruction/modeles/{template.id}/suppression")
    assert templates.templates_for(instructor) == []


def test_the_system_may_revoke_but_not_approve(app, api, instructor, applicant, tokens_calls):
    """The lifecycle closes an access left unrenewed (a system revocation); a scheduled job
    can never decide a request."""
    validated = factories.request_in("validated", api, instructor=instructor, requester=applicant)
    decisions.revoke(validated, Actor.system("lifecycle"), "Jeton expiré sans renouvellement.")
    assert validated.state == "revoked" and validated.events[-1].actor_type == "system"
    submitted = factories.request_in("submitted", api, instructor=instructor)
    with pytest.raises(states.NotAllowed):
        decisions.approve(submitted, Actor.system("job"))
    assert submitted.state == "submitted"


def test_the_lifecycle_hears_when_an_update_ends(app, api, instructor, applicant):
    from datapass.lifecycle import updates as lifecycle_service

    heard = []
    with (
        heard_instead(
            signals.habilitation_updated,
            lifecycle_service.on_update_approved,
            lambda previous, habilitation, actor: heard.append(
                ("approved", previous.id, habilitation.id)
            ),
        ),
        heard_instead(
            signals.update_closed,
            lifecycle_service.on_update_closed,
            lambda request, actor: heard.append(("closed", request.id)),
        ),
    ):
        request = factories.request_in(
            "submitted", api, reopening=True, instructor=instructor, requester=applicant
        )
        previous = request.active_habilitation
        new = decisions.approve(request, Actor.for_user(instructor))
        decisions.reopen(request, Actor.for_user(applicant))
        decisions.cancel_reopening(request, Actor.for_user(applicant))
    assert heard == [("approved", previous.id, new.id), ("closed", request.id)]
