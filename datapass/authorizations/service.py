"""Rules of authorization requests and habilitations.

Plain functions: each takes the acting :class:`~datapass.actor.Actor` and the objects
it works on, changes state (through :func:`datapass.authorizations.transitions.fire` for the
lifecycle), records the audit event, queues the mails — and flushes, never commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from datapass import clock, signals
from datapass.accounts.models import Membership, User
from datapass.audit import service as audit
from datapass.authorizations import states, transitions
from datapass.authorizations.documents import delete_unreferenced_documents, snapshot_documents
from datapass.authorizations.errors import InvalidRequest
from datapass.authorizations.mails import mail_context, mail_requester
from datapass.authorizations.models import (
    CONTACT_ROLES,
    Habilitation,
    MessageTemplate,
    RequestEvent,
)
from datapass.authorizations.sections import completion_errors
from datapass.authorizations.snapshots import diff, restore, snapshot
from datapass.authorizations.states import Event, HabilitationStatus, RequestState, Role
from datapass.authorizations.visibility import instructors_of
from datapass.extensions import db
from datapass.notify import service as notify

if TYPE_CHECKING:
    from datapass.actor import Actor
    from datapass.authorizations.models import AuthorizationRequest

NEW_REQUEST_CATEGORY = "instruction_new_request"


# --- the lifecycle -----------------------------------------------------------------------


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
        notify.queue_mail(
            instructor.email,
            "instruction_new_request",
            mail_context(
                request,
                instructor=instructor,
                changes=changes,
                unsubscribe_url=notify.unsubscribe_link(instructor.email, NEW_REQUEST_CATEGORY),
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
            notify.queue_mail(
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
    notify.queue_mails(
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


# --- messages, transfers -----------------------------------------------------------------


def post_message(request: AuthorizationRequest, actor: Actor, body: str) -> RequestEvent:
    """A message on the request, between the organisation and the API's instructors; the
    other side is e-mailed."""
    roles = states.roles_of(actor.user, request)
    if not states.can_message(request, actor.user):
        raise states.NotAllowed("Vous ne pouvez pas écrire sur cette demande.")
    body = (body or "").strip()
    if not body:
        raise InvalidRequest({"body": ["Écrivez un message."]})
    if len(body) > 5000:
        raise InvalidRequest({"body": ["Le message ne doit pas dépasser 5 000 caractères."]})
    # Someone both applicant and instructor writes as the applicant on their own request.
    side = "applicant" if Role.APPLICANT in roles else "instructor"
    entry = RequestEvent(
        request=request,
        kind="message",
        actor_type="user",
        actor_id=actor.user.id,
        actor_label=actor.label or "",
        side=side,
        text=body,
        created_at=clock.now(),
    )
    db.session.add(entry)
    db.session.flush()
    audit.record(
        "authorizations:request:message_posted",
        actor,
        subject=request,
        organisation_id=request.organisation_id,
        api_id=request.api_id,
        payload={"side": side, "event_id": entry.id, "length": len(body)},
    )
    if side == "instructor":
        mail_requester(request, "request_message", message=entry)
    else:
        for instructor in instructors_of(request.api_id):
            notify.queue_mail(
                instructor.email, "instruction_message", mail_context(request, message=entry)
            )
    return entry


def transfer_candidates(request: AuthorizationRequest) -> list[User]:
    """Members of the organisation who may take the request over."""
    query = (
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(
            Membership.organisation_id == request.organisation_id,
            User.id != request.requester_id,
            User.is_active_account.is_(True),
        )
        .order_by(User.full_name, User.email)
    )
    return list(db.session.scalars(query))


def transfer(request: AuthorizationRequest, new_requester: User, actor: Actor) -> RequestEvent:
    """Hand a request (and its habilitation in force) to another member of the organisation,
    e.g. when an agent leaves."""
    if not states.can_transfer(request, actor.user):
        raise states.NotAllowed("Vous ne pouvez pas transférer cette demande.")
    if new_requester.id == request.requester_id:
        raise InvalidRequest({"user_id": ["Cette personne est déjà en charge de la demande."]})
    if new_requester.membership(request.organisation_id) is None:
        raise InvalidRequest({"user_id": ["Cette personne n'est pas membre de l'organisation."]})
    previous = request.requester
    request.requester_id = new_requester.id
    request.updated_at = clock.now()
    habilitation = request.active_habilitation
    if habilitation is not None:
        habilitation.requester_id = new_requester.id
    entry = RequestEvent(
        request=request,
        kind="transfer",
        actor_type="user",
        actor_id=actor.user.id,
        actor_label=actor.label or "",
        text=f"Transférée de {previous.display_name} à {new_requester.display_name}",
        data={"from_user_id": previous.id, "to_user_id": new_requester.id},
        created_at=clock.now(),
    )
    db.session.add(entry)
    db.session.flush()
    db.session.refresh(request, ["requester"])
    for subject, tag in ((request, "request"), (habilitation, "habilitation")):
        if subject is None:
            continue
        audit.record(
            f"authorizations:{tag}:transferred",
            actor,
            subject=subject,
            organisation_id=request.organisation_id,
            api_id=request.api_id,
            payload={"from_user_id": previous.id, "to_user_id": new_requester.id},
        )
    notify.queue_mail(
        new_requester.email,
        "habilitation_transferred",
        mail_context(request, previous=previous, habilitation=habilitation),
    )
    return entry


# --- message templates -------------------------------------------------------------------


def templates_for(user: User, api_id: int | None = None) -> list[MessageTemplate]:
    """The message templates of the APIs ``user`` instructs."""
    ids = user.instructed_api_ids()
    if api_id is not None:
        ids = ids & {api_id}
    if not ids:
        return []
    query = select(MessageTemplate).where(MessageTemplate.api_id.in_(ids))
    return list(db.session.scalars(query.order_by(MessageTemplate.api_id, MessageTemplate.title)))


def get_template(template_id: int, user: User) -> MessageTemplate | None:
    ids = user.instructed_api_ids()
    return db.session.scalar(
        select(MessageTemplate).where(
            MessageTemplate.id == template_id, MessageTemplate.api_id.in_(ids or {-1})
        )
    )


def save_template(
    user: User,
    actor: Actor,
    api_id: int,
    title: str,
    body: str,
    template: MessageTemplate | None = None,
) -> MessageTemplate:
    """Create or change a message template of an API ``user`` instructs."""
    if api_id not in user.instructed_api_ids():
        raise InvalidRequest({"api_id": ["Vous n'instruisez pas cette API."]})
    now = clock.now()
    if template is None:
        template = MessageTemplate(api_id=api_id, created_by_id=user.id, created_at=now)
        db.session.add(template)
    template.api_id, template.title, template.body = api_id, title.strip(), body.strip()
    template.updated_at = now
    db.session.flush()
    audit.record(
        "authorizations:template:saved",
        actor,
        subject=template,
        api_id=api_id,
        payload={"title": template.title},
    )
    return template


def delete_template(template: MessageTemplate, actor: Actor) -> None:
    template_id, api_id = template.id, template.api_id
    db.session.delete(template)
    db.session.flush()
    audit.record(
        "authorizations:template:deleted",
        actor,
        subject_type="message_templates",
        subject_id=template_id,
        api_id=api_id,
    )


# --- the instructor's queue ----------------------------------------------------------------


@dataclass(frozen=True)
class InstructorAsks:
    """What the instructors asked that the organisation has not answered yet."""

    change_request: RequestEvent | None  # the latest, while the request waits for changes
    messages: list[RequestEvent]  # instructors' messages since the organisation last spoke

    def __bool__(self) -> bool:
        return self.change_request is not None or bool(self.messages)


def instructor_asks(request: AuthorizationRequest) -> InstructorAsks:
    """The top of the applicant's page: the latest change request (while the request is in
    changes_requested) and the instructors' messages written after the organisation's last
    message or submission, oldest first."""
    change_request = None
    if request.state == RequestState.CHANGES_REQUESTED:
        change_request = next(
            (e for e in reversed(request.events) if e.kind == Event.REQUEST_CHANGES), None
        )
    messages: list[RequestEvent] = []
    for entry in reversed(request.events):
        if entry.kind == Event.SUBMIT or (entry.kind == "message" and entry.side == "applicant"):
            break
        if entry.kind == "message" and entry.side == "instructor":
            messages.append(entry)
    return InstructorAsks(change_request, messages[::-1])
