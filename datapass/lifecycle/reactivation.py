"""Reactivation of a suspended token by its organisation: once per token, with a
justification; the instructors are told. After that, only an instructor reactivates it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from datapass import clock
from datapass.accounts import directory as accounts_directory
from datapass.actor import Actor
from datapass.extensions import db
from datapass.lifecycle.mails import mail_context, mail_now
from datapass.lifecycle.models import LifecycleAct
from datapass.lifecycle.states import LifecycleError
from datapass.tokens import mails as token_mails
from datapass.tokens import states as token_states
from datapass.tokens import transitions as token_transitions
from datapass.tokens.models import AccessToken

if TYPE_CHECKING:
    from datapass.accounts.models import User

SELF_REACTIVATION = "self_reactivation"  # its LifecycleAct key (and kind)


def has_self_reactivated(token: AccessToken) -> bool:
    return (
        db.session.scalar(
            select(LifecycleAct.id).where(
                LifecycleAct.token_id == token.id, LifecycleAct.key == SELF_REACTIVATION
            )
        )
        is not None
    )


def can_self_reactivate(token: AccessToken, user: User) -> bool:
    """A verified member may lift a suspension once per token, with a justification; after
    that (a second suspension) only an instructor can."""
    return (
        token_states.is_suspended(token.status)
        and "member" in token_states.roles_of(user, token)
        and clock.as_utc(token.expires_at) > clock.now()
        and not has_self_reactivated(token)
    )


def self_reactivate(token: AccessToken, actor: Actor, justification: str) -> None:
    """Reactivate a suspended token on the organisation's word (once); the instructors are
    told. Raises :class:`LifecycleError` (nothing changed) otherwise."""
    justification = (justification or "").strip()
    if len(justification) < 10:
        raise LifecycleError("Expliquez en quelques mots pourquoi ce jeton doit être réactivé.")
    if not token_states.is_suspended(token.status):
        raise LifecycleError("Ce jeton n'est pas suspendu.")
    if has_self_reactivated(token):
        raise LifecycleError(
            "Ce jeton a déjà été réactivé une fois par votre organisation : seul un "
            "instructeur de l'API peut désormais le réactiver."
        )
    if "member" not in token_states.roles_of(actor.user, token):
        raise LifecycleError("Seul un membre vérifié de l'organisation peut réactiver ce jeton.")
    now = clock.now()
    db.session.add(
        LifecycleAct(
            token_id=token.id,
            key=SELF_REACTIVATION,
            kind=SELF_REACTIVATION,
            outcome="done",
            due_at=now,
            at=now,
            detail={"by": actor.id, "justification": justification[:2000]},
        )
    )
    # The member is authorised here (once, with a justification): the transitions table
    # keeps reactivation for staff, so this trusted caller passes the role itself.
    token_transitions.apply(
        token,
        "reactivate",
        actor,
        reason=justification,
        role="system",
        payload={"self_service": True},
    )
    api = token.api
    mail_now(
        token_mails.holder_emails(token) + accounts_directory.instructor_emails(token.api_id),
        "lifecycle_reactivated",
        mail_context(token, api, justification=justification, by=actor.label),
    )
