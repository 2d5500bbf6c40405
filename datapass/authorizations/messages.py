"""The conversation on a request: messages between the organisation and the API's instructors,
what the instructors asked that is still unanswered, and handing a request over to another
member of the organisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from datapass import clock
from datapass.accounts.models import Membership, User
from datapass.audit import service as audit
from datapass.authorizations import states
from datapass.authorizations.errors import InvalidRequest
from datapass.authorizations.mails import mail_context, mail_requester
from datapass.authorizations.models import RequestEvent
from datapass.authorizations.states import Event, RequestState, Role
from datapass.authorizations.visibility import instructors_of
from datapass.extensions import db
from datapass.notify import outbox

if TYPE_CHECKING:
    from datapass.actor import Actor
    from datapass.authorizations.models import AuthorizationRequest


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
            outbox.queue_mail(
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
    outbox.queue_mail(
        new_requester.email,
        "habilitation_transferred",
        mail_context(request, previous=previous, habilitation=habilitation),
    )
    return entry


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
