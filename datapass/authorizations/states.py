"""The lifecycle of an authorization request, after the real DataPass (DESIGN §3).

One enum (:class:`RequestState`) and one transitions table (:data:`TRANSITIONS`: event, from
which states, to which state, by which roles), the habilitation's statuses, and the guards
(``check``, ``can_*``, ``is_*``) that answer who may do what now. Nothing here writes:
:func:`datapass.authorizations.transitions.fire` is the only code that changes a request's
state. Status strings are compared here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from datapass.accounts.models import Role as AccountRole
from datapass.errors import DomainError

if TYPE_CHECKING:
    from datapass.accounts.models import User
    from datapass.authorizations.models import AuthorizationRequest, RequestEvent


class RequestState(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    CHANGES_REQUESTED = "changes_requested"
    VALIDATED = "validated"
    REFUSED = "refused"
    ARCHIVED = "archived"
    REVOKED = "revoked"

    @property
    def label(self) -> str:
        return STATE_LABELS[self]

    @property
    def badge(self) -> str:
        """The DSFR badge variant that shows this state."""
        return STATE_BADGES[self]


STATE_LABELS = {
    RequestState.DRAFT: "Brouillon",
    RequestState.SUBMITTED: "En cours d'instruction",
    RequestState.CHANGES_REQUESTED: "Modifications demandées",
    RequestState.VALIDATED: "Validée",
    RequestState.REFUSED: "Refusée",
    RequestState.ARCHIVED: "Archivée",
    RequestState.REVOKED: "Révoquée",
}

STATE_BADGES = {
    RequestState.DRAFT: "info",
    RequestState.SUBMITTED: "new",
    RequestState.CHANGES_REQUESTED: "warning",
    RequestState.VALIDATED: "success",
    RequestState.REFUSED: "error",
    RequestState.ARCHIVED: "",
    RequestState.REVOKED: "error",
}


class HabilitationStatus(StrEnum):
    ACTIVE = "active"
    OBSOLETE = "obsolete"  # replaced by the approval of an update
    REVOKED = "revoked"

    @property
    def label(self) -> str:
        return {"active": "Active", "obsolete": "Remplacée", "revoked": "Révoquée"}[self.value]


class Role(StrEnum):
    """Who someone is *for one request* (not a global role)."""

    APPLICANT = "applicant"  # a member of the organisation who may see the request
    INSTRUCTOR = "instructor"  # an instructor of the request's API
    SECURITY_OFFICER = "security_officer"
    SYSTEM = "system"  # a scheduled job


class Event(StrEnum):
    SUBMIT = "submit"
    REQUEST_CHANGES = "request_changes"
    APPROVE = "approve"
    REFUSE = "refuse"
    ARCHIVE = "archive"
    REOPEN = "reopen"
    CANCEL_REOPENING = "cancel_reopening"
    REVOKE = "revoke"

    @property
    def label(self) -> str:
        return TRANSITIONS[self].label


@dataclass(frozen=True)
class Transition:
    event: Event
    sources: frozenset[RequestState]
    target: RequestState
    roles: frozenset[Role]
    label: str  # what the timeline says happened
    reason_required: bool = False
    # None: any request; True: only an update of a validated request (a reopening);
    # False: never a reopening.
    reopening: bool | None = None
    # Where a reopening goes instead of ``target`` (refusing an update keeps the
    # habilitation in force: the request returns to validated).
    reopening_target: RequestState | None = None


S = RequestState
_A, _I, _SO, _SYS = Role.APPLICANT, Role.INSTRUCTOR, Role.SECURITY_OFFICER, Role.SYSTEM


def _t(event, sources, target, roles, label, **options) -> Transition:
    return Transition(event, frozenset(sources), target, frozenset(roles), label, **options)


TRANSITIONS: dict[Event, Transition] = {
    t.event: t
    for t in (
        _t(Event.SUBMIT, {S.DRAFT, S.CHANGES_REQUESTED}, S.SUBMITTED, {_A}, "Demande soumise"),
        _t(
            Event.REQUEST_CHANGES,
            {S.SUBMITTED},
            S.CHANGES_REQUESTED,
            {_I},
            "Modifications demandées",
            reason_required=True,
        ),
        _t(Event.APPROVE, {S.SUBMITTED}, S.VALIDATED, {_I}, "Demande validée"),
        _t(
            Event.REFUSE,
            {S.SUBMITTED},
            S.REFUSED,
            {_I},
            "Demande refusée",
            reason_required=True,
            reopening_target=S.VALIDATED,
        ),
        # A reopening is never archived (it is cancelled): its habilitation is in force.
        # Also from changes_requested: a request sent back and abandoned (the applicant, or
        # the system after six months and a warning).
        _t(
            Event.ARCHIVE,
            {S.DRAFT, S.CHANGES_REQUESTED, S.REFUSED},
            S.ARCHIVED,
            {_A, _I, _SYS},
            "Demande archivée",
            reopening=False,
        ),
        _t(Event.REOPEN, {S.VALIDATED}, S.DRAFT, {_A}, "Mise à jour ouverte"),
        _t(
            Event.CANCEL_REOPENING,
            {S.DRAFT, S.CHANGES_REQUESTED, S.SUBMITTED},
            S.VALIDATED,
            {_A, _I},
            "Mise à jour annulée",
            reopening=True,
        ),
        # Revocation must stay possible while an update is being prepared or instructed.
        # System: the lifecycle closes a habilitation whose token expired unrenewed.
        _t(
            Event.REVOKE,
            {S.VALIDATED, S.DRAFT, S.CHANGES_REQUESTED, S.SUBMITTED},
            S.REVOKED,
            {_I, _SO, _SYS},
            "Habilitation révoquée",
            reason_required=True,
            reopening=None,
        ),
    )
}

# A draft, or a request sent back for changes, is what the applicant may edit.
EDITABLE_STATES = frozenset({S.DRAFT, S.CHANGES_REQUESTED})
FINAL_STATES = frozenset({S.ARCHIVED, S.REVOKED})


class TransitionError(DomainError):
    """A transition that may not happen; nothing was changed."""

    status = 400


class NotAllowed(TransitionError):
    status = 403


class Conflict(TransitionError):
    status = 409


class ReasonRequired(TransitionError):
    status = 422


# --- questions ---------------------------------------------------------------------------


def state_of(request: AuthorizationRequest) -> RequestState:
    return RequestState(request.state)


def is_reopening(request: AuthorizationRequest) -> bool:
    """An update of a validated request is being prepared or instructed."""
    return request.state != S.VALIDATED and request.active_habilitation is not None


def roles_of(user: User | None, request: AuthorizationRequest) -> set[Role]:
    """What ``user`` is for ``request``: applicant (a member of its organisation who may see
    it), instructor of its API, security officer."""
    if user is None or not getattr(user, "is_authenticated", False):
        return set()
    roles: set[Role] = set()
    membership = user.membership(request.organisation_id)
    if membership is not None and (membership.verified or request.requester_id == user.id):
        roles.add(Role.APPLICANT)
    if request.api_id in user.instructed_api_ids():
        roles.add(Role.INSTRUCTOR)
    if user.has_role(AccountRole.SECURITY_OFFICER):
        roles.add(Role.SECURITY_OFFICER)
    return roles


def _state_allows(transition: Transition, request: AuthorizationRequest) -> bool:
    if request.state not in transition.sources:
        return False
    if transition.event == Event.REVOKE and request.state != S.VALIDATED:
        return is_reopening(request)
    if transition.reopening is None:
        return True
    return is_reopening(request) == transition.reopening


def target_of(transition: Transition, request: AuthorizationRequest) -> RequestState:
    if transition.reopening_target is not None and is_reopening(request):
        return transition.reopening_target
    return transition.target


def check(event: Event | str, request: AuthorizationRequest, roles: set[Role]) -> Transition:
    """The transition, if ``roles`` may fire it now; else :class:`NotAllowed` (wrong role)
    or :class:`Conflict` (wrong state)."""
    transition = TRANSITIONS[Event(event)]
    if not roles & transition.roles:
        raise NotAllowed(
            f"Vous n'avez pas le droit d'effectuer cette action (« {transition.label} ») "
            "sur cette demande."
        )
    if not _state_allows(transition, request):
        raise Conflict(
            f"Action impossible : la demande est « {state_of(request).label} »"
            f"{' (mise à jour en cours)' if is_reopening(request) else ''}. "
            "Elle a peut-être été traitée entre-temps : rechargez la page."
        )
    return transition


def can(event: Event | str, request: AuthorizationRequest, user: User | None) -> bool:
    """May ``user`` fire ``event`` on ``request`` now? (templates and views ask this)."""
    try:
        check(event, request, roles_of(user, request))
    except TransitionError:
        return False
    return True


def can_edit(request: AuthorizationRequest, user: User | None) -> bool:
    return request.state in EDITABLE_STATES and Role.APPLICANT in roles_of(user, request)


def can_message(request: AuthorizationRequest, user: User | None) -> bool:
    """The organisation and the API's instructors write to each other on the request."""
    return bool(roles_of(user, request) & {Role.APPLICANT, Role.INSTRUCTOR})


def can_transfer(request: AuthorizationRequest, user: User | None) -> bool:
    return request.state not in FINAL_STATES and Role.APPLICANT in roles_of(user, request)


def is_editable(request: AuthorizationRequest) -> bool:
    return request.state in EDITABLE_STATES


def is_validated(request: AuthorizationRequest) -> bool:
    return request.state == S.VALIDATED


# --- the timeline ------------------------------------------------------------------------


TIMELINE_LABELS = {
    "created": "Demande créée",
    "message": "Message",
    "transfer": "Demande transférée",
    "draft_reminder": "Relance : brouillon sans modification",
    "changes_warning": "Avertissement : archivage prochain sans réponse",
}


def timeline_label(entry: RequestEvent) -> str:
    """What the timeline says of one entry."""
    if entry.kind in TIMELINE_LABELS:
        return TIMELINE_LABELS[entry.kind]
    event = Event(entry.kind)
    if event == Event.REFUSE and entry.to_state == S.VALIDATED:
        return "Mise à jour refusée (l'habilitation en vigueur est maintenue)"
    if event == Event.SUBMIT and (entry.data or {}).get("resubmission"):
        return "Demande soumise à nouveau"
    if event == Event.ARCHIVE and entry.actor_type == "system":
        return "Demande archivée automatiquement"
    return TRANSITIONS[event].label
