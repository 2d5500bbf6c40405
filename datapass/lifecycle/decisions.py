"""The instructor's side of a renewal under the "instructor" policy: the renewals waiting
for a decision, and the decision (a new token, or a refusal with its reason)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from datapass.actor import Actor
from datapass.extensions import db
from datapass.lifecycle import states as renewal_states
from datapass.lifecycle.mails import mail_context, mail_now
from datapass.lifecycle.models import Renewal
from datapass.lifecycle.renewal import apply_transition, complete
from datapass.lifecycle.states import LifecycleError, RenewalEvent, RenewalStatus
from datapass.tokens import mails as token_mails
from datapass.tokens import states as token_states

if TYPE_CHECKING:
    from datapass.accounts.models import User


def can_decide(renewal: Renewal, user: User | None) -> bool:
    return (
        renewal_states.is_pending(renewal)
        and user is not None
        and renewal.api_id in user.instructed_api_ids()
    )


def decide(renewal: Renewal, actor: Actor, approve: bool, note: str | None = None) -> None:
    """An instructor confirms (a new token, revealed later by the organisation) or refuses
    (with a reason) a renewal under the "instructor" policy."""
    if not can_decide(renewal, actor.user):
        raise LifecycleError("Ce renouvellement n'attend pas votre décision.")
    note = (note or "").strip() or None
    recipients = [renewal.requested_by.email] if renewal.requested_by else []
    recipients += token_mails.holder_emails(renewal.token)
    if approve:
        blocker = renewal_blocker_for_decision(renewal)
        if blocker:
            raise LifecycleError(blocker)
        renewal.decision_note = note
        complete(renewal, actor)
        mail_now(
            recipients,
            "renewal_confirmed",
            mail_context(renewal.token, renewal.api, renewal=renewal),
        )
        return
    if not note:
        raise LifecycleError(
            "Indiquez le motif du refus : il est transmis à l'organisation.", field="note"
        )
    renewal.decided_by_id = actor.user.id if actor.user else None
    renewal.decision_note = note
    apply_transition(renewal, RenewalEvent.REFUSE, actor, reason=note)
    mail_now(
        recipients,
        "renewal_refused",
        mail_context(renewal.token, renewal.api, renewal=renewal, reason=note),
    )


def renewal_blocker_for_decision(renewal: Renewal) -> str | None:
    token = renewal.token
    if not token_states.may_renew(token.status):
        return "Le jeton n'est plus renouvelable (révoqué ou remplacé)."
    if not renewal.habilitation.is_active:
        return "L'habilitation n'est plus en vigueur."
    return None


def pending_renewals(user: User) -> list[Renewal]:
    ids = user.instructed_api_ids()
    if not ids:
        return []
    return list(
        db.session.scalars(
            select(Renewal)
            .where(Renewal.api_id.in_(ids), Renewal.status == RenewalStatus.PENDING)
            .order_by(Renewal.created_at)
        )
    )


def get_renewal_for_instructor(renewal_id: int, user: User) -> Renewal | None:
    ids = user.instructed_api_ids()
    if not ids:
        return None
    return db.session.scalar(
        select(Renewal).where(Renewal.id == renewal_id, Renewal.api_id.in_(ids))
    )
