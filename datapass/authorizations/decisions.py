"""What happens on each transition of a request: submitting, asking for changes, approving
(a habilitation is frozen, its token issued), refusing, archiving, reopening for an update,
cancelling it, revoking. Each fires its transition (:mod:`datapass.authorizations.transitions`),
then queues its mails and tells the other domains (:mod:`datapass.signals`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datapass import clock, signals
from datapass.audit import service as audit
from datapass.authorizations import states, transitions
from datapass.authorizations.documents import delete_unreferenced_documents, snapshot_documents
from datapass.authorizations.errors import InvalidRequest
from datapass.authorizations.mails import mail_context, mail_requester
from datapass.authorizations.models import CONTACT_ROLES, Habilitation
from datapass.authorizations.sections import completion_errors
from datapass.authorizations.snapshots import diff, restore, snapshot
from datapass.authorizations.states import Event, HabilitationStatus
from datapass.authorizations.visibility import instructors_of
from datapass.extensions import db
from datapass.notify import outbox

if TYPE_CHECKING:
    from datapass.actor import Actor
    from datapass.authorizations.models import AuthorizationRequest, RequestEvent


NEW_REQUEST_CATEGORY = "instruction_new_request"


def submit(request: AuthorizationRequest, actor: Actor) -> RequestEvent:
    """Send the request to the API's instructors. Every field is checked
    (:class:`InvalidRequest` with the errors by field, nothing changed); the timeline
    records what changed since the previous submission."""
    states.check(Event.SUBMIT, request, states.roles_of(actor.user, request))
    errors = completion_errors(request)
    if errors:
        raise InvalidRequest(errors)
    current = snapshot(request)
    previous = request.submitted_snapshot
    changes = diff(previous, current, request.api.scope_labels())
    now = clock.now()
    values: dict[str, Any] = {"submitted_at": now}
    if request.first_submitted_at is None:
        values["first_submitted_at"] = now
    entry = transitions.fire(
        Event.SUBMIT,
        request,
        actor,
        diff=changes or None,
        values=values,
        data={"resubmission": previous is not None},
    )
    request.submitted_snapshot = current
    request.changes_warning_sent_at = None
    db.session.flush()
    # The files of the version sent back for changes, replaced in this one.
    delete_unreferenced_documents(request, snapshot_documents(previous), actor, "replaced")
    mail_requester(request, "request_submitted", resubmission=previous is not None)
    for instructor in instructors_of(request.api_id):
        outbox.queue_mail(
            instructor.email,
            "instruction_new_request",
            mail_context(
                request,
                instructor=instructor,
                changes=changes,
                unsubscribe_url=outbox.unsubscribe_link(instructor.email, NEW_REQUEST_CATEGORY),
            ),
            category=NEW_REQUEST_CATEGORY,
        )
    _mail_designated(request, previous, current)
    return entry


def _mail_designated(
    request: AuthorizationRequest, previous: dict[str, Any] | None, current: dict[str, Any]
) -> None:
    """Tell the responsable de traitement and the DPO they were named (once per address)."""
    for role in ("controller", "dpo"):
        email = current["contacts"][role]["email"]
        before = ((previous or {}).get("contacts", {}).get(role) or {}).get("email")
        if email and email.lower() != (before or "").lower():
            outbox.queue_mail(
                email,
                "request_designated",
                mail_context(
                    request, role_label=CONTACT_ROLES[role], contact=current["contacts"][role]
                ),
            )


def request_changes(request: AuthorizationRequest, actor: Actor, reason: str) -> RequestEvent:
    """Send the request back to the applicant with the instructor's reason."""
    entry = transitions.fire(Event.REQUEST_CHANGES, request, actor, reason=reason)
    mail_requester(request, "request_changes_requested", reason=entry.text)
    return entry


def approve(request: AuthorizationRequest, actor: Actor, note: str | None = None) -> Habilitation:
    """Validate the request: a habilitation freezes it (and the previous one, for an update,
    becomes obsolete); its token is issued."""
    previous = request.active_habilitation
    note = (note or "").strip() or None
    entry = transitions.fire(
        Event.APPROVE, request, actor, reason=note, values={"decided_at": clock.now()}
    )
    habilitation = Habilitation(
        request=request,
        organisation_id=request.organisation_id,
        api_id=request.api_id,
        requester_id=request.requester_id,
        scopes=list(request.scopes),
        status=HabilitationStatus.ACTIVE,
        snapshot=request.submitted_snapshot or snapshot(request),
        created_at=clock.now(),
        approved_by_id=actor.user.id if actor.user is not None else None,
        approval_note=note,
    )
    db.session.add(habilitation)
    db.session.flush()
    entry.data = {**(entry.data or {}), "habilitation_id": habilitation.id}
    audit.record(
        "authorizations:habilitation:created",
        actor,
        subject=habilitation,
        organisation_id=habilitation.organisation_id,
        api_id=habilitation.api_id,
        payload={"request_id": request.id, "scopes": habilitation.scopes},
    )
    if previous is not None:
        transitions.make_obsolete(previous, habilitation, actor)
    signals.habilitation_approved.send(habilitation, actor=actor)
    if previous is not None:
        # The replaced habilitation's live tokens give way to the new one's, with a grace
        # period (and a renewal waiting on this update completes): the lifecycle's rules.
        signals.habilitation_updated.send(previous, habilitation=habilitation, actor=actor)
    mail_requester(request, "request_approved", habilitation=habilitation, note=note)
    return habilitation


def refuse(request: AuthorizationRequest, actor: Actor, reason: str) -> RequestEvent:
    """Refuse the request (final), or refuse an update: the habilitation in force stays and
    the request returns to its validated content."""
    reopening = states.is_reopening(request)
    entry = transitions.fire(
        Event.REFUSE, request, actor, reason=reason, values={"decided_at": clock.now()}
    )
    if reopening:
        restore(request, request.active_habilitation.snapshot, actor)
        signals.update_closed.send(request, actor=actor)
    mail_requester(request, "request_refused", reason=entry.text, reopening=reopening)
    return entry


def archive(request: AuthorizationRequest, actor: Actor, reason: str | None = None) -> RequestEvent:
    """Archive a draft or a refused request."""
    return transitions.fire(Event.ARCHIVE, request, actor, reason=reason)


def reopen(request: AuthorizationRequest, actor: Actor) -> RequestEvent:
    """Open an update of a validated request; its habilitation stays active meanwhile."""
    return transitions.fire(Event.REOPEN, request, actor)


def cancel_reopening(request: AuthorizationRequest, actor: Actor) -> RequestEvent:
    """Abandon an update: the request returns to the content of its habilitation."""
    habilitation = request.active_habilitation
    entry = transitions.fire(Event.CANCEL_REOPENING, request, actor)
    restore(request, habilitation.snapshot, actor)
    signals.update_closed.send(request, actor=actor)
    return entry


def revoke(request: AuthorizationRequest, actor: Actor, reason: str) -> RequestEvent:
    """Revoke the request's habilitation and its tokens, with the reason given to the
    organisation."""
    habilitation = request.active_habilitation
    entry = transitions.fire(Event.REVOKE, request, actor, reason=reason)
    if habilitation is not None:
        transitions.revoke_habilitation(habilitation, actor, entry.text)
        signals.habilitation_revoked.send(habilitation, actor=actor, reason=entry.text)
    recipients = {request.requester.email}
    if habilitation is not None:
        recipients |= {
            e for e in (habilitation.technical_contact_email, habilitation.controller_email) if e
        }
    # One message to each recipient, rendered once (the lifecycle closes hundreds a day).
    outbox.queue_mails(
        [
            (
                sorted(recipients),
                "request_revoked",
                mail_context(request, reason=entry.text, habilitation=habilitation),
            )
        ]
    )
    return entry


TRANSITION_FUNCTIONS = {
    Event.SUBMIT: lambda r, a, text: submit(r, a),
    Event.REQUEST_CHANGES: lambda r, a, text: request_changes(r, a, text),
    Event.APPROVE: lambda r, a, text: approve(r, a, text),
    Event.REFUSE: lambda r, a, text: refuse(r, a, text),
    Event.ARCHIVE: lambda r, a, text: archive(r, a, text),
    Event.REOPEN: lambda r, a, text: reopen(r, a),
    Event.CANCEL_REOPENING: lambda r, a, text: cancel_reopening(r, a),
    Event.REVOKE: lambda r, a, text: revoke(r, a, text),
}


def transition(
    request: AuthorizationRequest, event: Event | str, actor: Actor, text: str | None = None
) -> Any:
    """Fire ``event`` with its effects (one entry point for the views and the tests)."""
    return TRANSITION_FUNCTIONS[Event(event)](request, actor, text)
