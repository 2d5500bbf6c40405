"""Renewal: the wizard's rules (window, who may renew, what changed), the renewal itself (a
new token at once, an instructor's confirmation, or the request reopened for an update), its
completion (the old token superseded, valid for the grace period), and the one function that
applies a renewal's transition and records its audit event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import select

from datapass import clock
from datapass.accounts import directory as accounts_directory
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.authorizations import decisions as authorization_decisions
from datapass.authorizations import sections as authorization_sections
from datapass.authorizations import states as authorization_states
from datapass.catalogue.models import RenewalPolicy
from datapass.extensions import db
from datapass.formatting import plural
from datapass.lifecycle import states as renewal_states
from datapass.lifecycle.days import format_day
from datapass.lifecycle.mails import mail_context, mail_now
from datapass.lifecycle.models import Renewal
from datapass.lifecycle.queries import has_successor
from datapass.lifecycle.states import LifecycleError, RenewalEvent
from datapass.tokens import issuance as token_issuance
from datapass.tokens import links as token_links
from datapass.tokens import states as token_states
from datapass.tokens import transitions as token_transitions
from datapass.tokens.models import AccessToken

if TYPE_CHECKING:
    from datapass.accounts.models import User
    from datapass.authorizations.models import Habilitation

MAX_GRACE_DAYS = 90


def apply_transition(renewal: Renewal, event: RenewalEvent, actor: Actor, **payload: Any) -> None:
    """Move ``renewal`` along ``event`` (:data:`~datapass.lifecycle.states.TRANSITIONS`) and
    record its audit event (``payload`` joins it). A final transition dates the decision; the
    caller sets the other columns first. :class:`LifecycleError` if the status forbids it."""
    transition = renewal_states.check(renewal, event)
    renewal.status = transition.target
    if transition.final:
        renewal.decided_at = clock.now()
    db.session.flush()
    token = renewal.token
    audit.record(
        transition.tag,
        actor,
        subject=renewal,
        organisation_id=renewal.organisation_id,
        api_id=renewal.api_id,
        token_digest=token.digest if token is not None else None,
        payload={"renewal_id": renewal.id, "jti": token.jti if token else None, **payload},
    )


def grace_days() -> int:
    return max(0, min(int(current_app.config["LIFECYCLE_RENEWAL_GRACE_DAYS"]), MAX_GRACE_DAYS))


def renewal_window(token: AccessToken) -> tuple[datetime, datetime]:
    days = timedelta(days=current_app.config["RENEWAL_WINDOW_DAYS"])
    expires_at = clock.as_utc(token.expires_at)
    return expires_at - days, expires_at + days


def open_renewal(token: AccessToken) -> Renewal | None:
    """The renewal in progress: waiting for an instructor, or waiting on a reopened request
    that is still being updated (a cancelled or refused update ends it)."""
    renewal = db.session.scalar(
        select(Renewal)
        .where(Renewal.token_id == token.id, Renewal.status.in_(list(renewal_states.OPEN)))
        .order_by(Renewal.id.desc())
    )
    if renewal is not None and renewal_states.is_reopened(renewal):
        request = renewal.habilitation.request
        if not authorization_states.is_reopening(request):
            return None
    return renewal


def shown_renewal(token: AccessToken) -> Renewal | None:
    """The renewal the token's page shows: the one in progress, else the latest."""
    return open_renewal(token) or db.session.scalar(
        select(Renewal).where(Renewal.token_id == token.id).order_by(Renewal.id.desc())
    )


def renewal_blocker(token: AccessToken) -> str | None:
    """Why ``token`` cannot be renewed now (French), or None."""
    now = clock.now()
    opens, closes = renewal_window(token)
    if not token_states.may_renew(token.status):
        return "Seul un jeton actif ou expiré se renouvelle."
    if not token.habilitation.is_active:
        return "L'habilitation de ce jeton n'est plus en vigueur."
    if now < opens:
        days = current_app.config["RENEWAL_WINDOW_DAYS"]
        return (
            f"Le renouvellement ouvrira le {format_day(opens)}, "
            f"{plural(days, 'jour', 'jours')} avant l'expiration."
        )
    if now > closes:
        return "Le délai de renouvellement est dépassé : déposez une nouvelle demande."
    if has_successor(token):
        return "Ce jeton a déjà un successeur."
    if open_renewal(token) is not None:
        return "Un renouvellement est déjà en cours pour ce jeton."
    return None


def _may_renew(token: AccessToken, user: User | None) -> bool:
    """The requester or a verified member of the organisation."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    return (
        "member" in token_states.roles_of(user, token) or token.habilitation.requester_id == user.id
    )


def can_renew(token: AccessToken, user: User | None) -> bool:
    """The requester or a verified member of the organisation, inside the window."""
    return _may_renew(token, user) and renewal_blocker(token) is None


def renewal_refusal(token: AccessToken, user: User | None) -> str | None:
    """Why ``user`` cannot renew ``token`` now (French), or None (the wizard's page)."""
    blocker = renewal_blocker(token)
    if blocker is None and not _may_renew(token, user):
        return "Seuls le demandeur et les membres vérifiés de l'organisation renouvellent."
    return blocker


CONTACTS = {
    "controller": "Responsable de traitement",
    "technical": "Contact technique",
    "dpo": "Délégué à la protection des données",
    "business": "Contact métier",
}


def current_contacts(habilitation: Habilitation) -> dict[str, dict[str, str]]:
    contacts = (habilitation.snapshot or {}).get("contacts") or {}
    return {
        role: {
            part: (contacts.get(role) or {}).get(part) or "" for part in ("name", "email", "phone")
        }
        for role in CONTACTS
    }


@dataclass
class RenewalAnswers:
    same_person: bool
    purpose_unchanged: bool
    legal_basis_holds: bool
    contacts: dict[str, dict[str, str]] = field(default_factory=dict)
    scopes: list[str] = field(default_factory=list)


@dataclass
class RenewalOutcome:
    renewal: Renewal
    new_token: AccessToken | None = None
    raw: str | None = None  # shown once, never stored

    @property
    def completed(self) -> bool:
        return renewal_states.is_completed(self.renewal)

    @property
    def reopened(self) -> bool:
        return renewal_states.is_reopened(self.renewal)

    @property
    def pending(self) -> bool:
        return renewal_states.is_pending(self.renewal)


def changes_of(habilitation: Habilitation, answers: RenewalAnswers) -> list[dict[str, str]]:
    """What the wizard's answers change (empty: nothing changed)."""
    changes: list[dict[str, str]] = []
    for flag, label in (
        ("same_person", "La personne en charge a changé"),
        ("purpose_unchanged", "La finalité a changé"),
        ("legal_basis_holds", "Le cadre juridique a changé"),
    ):
        if not getattr(answers, flag):
            changes.append({"field": flag, "label": label, "before": "oui", "after": "non"})
    before = current_contacts(habilitation)
    for role, parts in answers.contacts.items():
        for part, value in parts.items():
            old = before.get(role, {}).get(part, "")
            if (value or "").strip() != old:
                changes.append(
                    {
                        "field": f"{role}_{part}",
                        "label": f"{CONTACTS.get(role, role)} ({part})",
                        "before": old,
                        "after": (value or "").strip(),
                    }
                )
    kept = [s for s in habilitation.scopes if s in set(answers.scopes)]
    if kept != list(habilitation.scopes):
        changes.append(
            {
                "field": "scopes",
                "label": "Données demandées",
                "before": ", ".join(habilitation.scopes),
                "after": ", ".join(kept),
            }
        )
    return changes


def renew(token: AccessToken, actor: Actor, answers: RenewalAnswers) -> RenewalOutcome:
    """The renewal wizard's answers. Nothing changed: the API's policy decides (a new token
    at once, shown once; or an instructor confirms first). Anything changed: the request is
    reopened pre-filled and the renewal completes when the update is approved."""
    blocker = renewal_blocker(token)
    if blocker:
        raise LifecycleError(blocker)
    habilitation = token.habilitation
    if not set(answers.scopes) <= set(habilitation.scopes):
        raise LifecycleError(
            "Les données demandées ne peuvent que diminuer lors d'un renouvellement.",
            field="scopes",
        )
    if not answers.scopes:
        raise LifecycleError(
            "Gardez au moins une donnée, ou laissez l'habilitation expirer.", field="scopes"
        )
    changes = changes_of(habilitation, answers)
    now = clock.now()
    renewal = Renewal(
        token_id=token.id,
        habilitation_id=habilitation.id,
        organisation_id=token.organisation_id,
        api_id=token.api_id,
        requested_by_id=actor.user.id if actor.user is not None else None,
        attestations={
            "same_person": answers.same_person,
            "purpose_unchanged": answers.purpose_unchanged,
            "legal_basis_holds": answers.legal_basis_holds,
        },
        changes=changes,
        scopes=[s for s in habilitation.scopes if s in set(answers.scopes)],
        created_at=now,
    )
    db.session.add(renewal)
    apply_transition(renewal, RenewalEvent.REQUEST, actor, changes=[c["field"] for c in changes])
    if changes:
        _reopen(renewal, actor, answers)
        return RenewalOutcome(renewal)
    if token.api.renewal_policy == RenewalPolicy.INSTRUCTOR:
        mail_now(
            accounts_directory.instructor_emails(token.api_id),
            "renewal_to_confirm",
            mail_context(token, token.api, renewal=renewal),
        )
        return RenewalOutcome(renewal)
    new, raw = complete(renewal, actor, reveal=True)
    # The technical contact installs tokens: tell them a new one exists and when the old
    # one stops (the token itself is never mailed).
    mail_now(
        [habilitation.technical_contact_email or habilitation.requester.email],
        "renewal_completed",
        mail_context(
            token,
            token.api,
            renewal=renewal,
            new_token=new,
            requester_name=actor.user.display_name if actor.user is not None else "Datapass",
        ),
    )
    return RenewalOutcome(renewal, new, raw)


def _reopen(renewal: Renewal, actor: Actor, answers: RenewalAnswers) -> None:
    """Reopen the habilitation's request for an update, pre-filled with the new contacts and
    the remaining scopes (authorizations' own rules apply)."""
    request = renewal.habilitation.request
    if authorization_states.is_validated(request):
        authorization_decisions.reopen(request, actor)
    values = {
        f"{role}_{part}": (value or "").strip()
        for role, parts in answers.contacts.items()
        for part, value in parts.items()
    }
    if values and authorization_states.can_edit(request, actor.user):
        authorization_sections.save_section(request, "contacts", values, actor)
    if renewal.scopes != list(request.scopes or []) and authorization_states.can_edit(
        request, actor.user
    ):
        authorization_sections.save_section(
            request, "donnees", {"scopes": list(renewal.scopes)}, actor
        )
    renewal.request_id = request.id
    apply_transition(renewal, RenewalEvent.REOPEN, actor, request_id=request.id)


def complete(
    renewal: Renewal, actor: Actor, *, reveal: bool = False, new_token: AccessToken | None = None
) -> tuple[AccessToken, str | None]:
    """Finish a renewal: a new token (18 months from now) unless the approval of an update
    already issued it; the old token is superseded and stays valid for the grace period."""
    old = renewal.token
    raw = None
    if new_token is None:
        new_token, _ = token_issuance.issue_for_habilitation(
            renewal.habilitation, actor, predecessor=old
        )
        if reveal:
            raw = token_links.reveal(new_token, actor)
    grace_end = supersede_with_grace(old, new_token, actor, renewal=renewal)
    renewal.new_token_id = new_token.id
    renewal.grace_ends_at = grace_end
    if actor.user is not None and actor.user.id != renewal.requested_by_id:
        renewal.decided_by_id = actor.user.id
    apply_transition(
        renewal,
        RenewalEvent.COMPLETE,
        actor,
        new_jti=new_token.jti,
        grace_ends_at=grace_end.isoformat() if grace_end else None,
    )
    return new_token, raw


def supersede_with_grace(
    old: AccessToken, new: AccessToken, actor: Actor, *, renewal: Renewal | None = None
) -> datetime | None:
    """The old token stays valid ``LIFECYCLE_RENEWAL_GRACE_DAYS`` (never past its own
    expiry), then the scheduler revokes it. An already dead token is left alone."""
    if not token_states.may_supersede(old.status) or clock.as_utc(old.expires_at) <= clock.now():
        return None
    grace_end = min(clock.now() + timedelta(days=grace_days()), clock.as_utc(old.expires_at))
    old.grace_ends_at = grace_end
    token_transitions.apply(
        old,
        "supersede",
        actor,
        role="system",  # authorised by the renewal (requester, instructor or approval)
        payload={
            "successor_jti": new.jti,
            "grace_ends_at": grace_end.isoformat(),
            "cause": "renewal",
            "renewal_id": renewal.id if renewal is not None else None,
        },
    )
    return grace_end
