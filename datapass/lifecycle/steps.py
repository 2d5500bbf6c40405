"""The steps the sweep does when they fall due: reminders, expiry, end of grace, closing of
the habilitation (the unused-access steps are in :mod:`datapass.lifecycle.unused`).

Each handler takes the (locked) token, its API, the step, the earlier steps of its chain that
were skipped, the acting system, the chunk's :class:`~datapass.lifecycle.sweep.Effects` and the
keys already done; it returns the outcome (``done`` or ``void``) and the act's detail. Part of
the sweep's hot path: mails and webhooks are gathered in the effects, written in bulk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app
from sqlalchemy import select

from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.authorizations import decisions as authorization_decisions
from datapass.authorizations import transitions as authorization_transitions
from datapass.extensions import db
from datapass.formatting import plural
from datapass.lifecycle import states as renewal_states
from datapass.lifecycle.days import format_day
from datapass.lifecycle.mails import mail_context
from datapass.lifecycle.models import Renewal
from datapass.lifecycle.plan import Step, StepOutcome
from datapass.lifecycle.queries import has_successor
from datapass.lifecycle.renewal import apply_transition
from datapass.lifecycle.states import RenewalEvent
from datapass.lifecycle.unused import (
    do_never_used,
    do_unused_revoke,
    do_unused_suspend,
    do_unused_warning,
)
from datapass.tokens import mails as token_mails
from datapass.tokens import states as token_states
from datapass.tokens import transitions as token_transitions

if TYPE_CHECKING:
    from datapass.catalogue.models import Api
    from datapass.lifecycle.sweep import Effects, TokenRow
    from datapass.tokens.models import AccessToken

WEBHOOK_DAYS = frozenset({30, 7})  # token.expiring to the provider


def _do_reminder(
    token: AccessToken | TokenRow,
    api: Api,
    step: Step,
    skipped: list[Step],
    actor: Actor,
    fx: Effects,
    done: set[str],
) -> StepOutcome:
    days = step.days or 0
    sent = fx.mail(
        token_mails.holder_emails(token), "reminder_expiry", mail_context(token, api, days=days)
    )
    crossed = {s.days for s in skipped} | {days}
    if crossed & WEBHOOK_DAYS and days <= max(WEBHOOK_DAYS):
        fx.webhook(token, "token.expiring", days_left=days)
    return "done", {"days": days, "mails": sent}


def _do_expire(
    token: AccessToken,
    api: Api,
    step: Step,
    skipped: list[Step],
    actor: Actor,
    fx: Effects,
    done: set[str],
) -> StepOutcome:
    was = token.status
    if token_states.may_expire(was):
        token_transitions.apply(token, "expire", actor)
    if token_states.is_superseded(was) or has_successor(token):
        return "done", {"from": was, "mails": 0}
    sent = fx.mail(token_mails.holder_emails(token), "expiry_notice", mail_context(token, api))
    return "done", {"from": was, "mails": sent}


def _do_grace_end(
    token: AccessToken,
    api: Api,
    step: Step,
    skipped: list[Step],
    actor: Actor,
    fx: Effects,
    done: set[str],
) -> StepOutcome:
    if not token_states.is_superseded(token.status):
        return "void", None
    token_transitions.apply(
        token,
        "revoke",
        actor,
        reason="Fin du délai de grâce : le jeton a été remplacé.",
        payload={"cause": "grace_end"},
    )
    return "done", None


def _do_closure(
    token: AccessToken,
    api: Api,
    step: Step,
    skipped: list[Step],
    actor: Actor,
    fx: Effects,
    done: set[str],
) -> StepOutcome:
    """Close the habilitation whose token expired long ago without renewal."""
    habilitation = token.habilitation
    if not habilitation.is_active or has_successor(token):
        return "void", None
    request = habilitation.request
    days = current_app.config["LIFECYCLE_CLOSE_AFTER_DAYS"]
    reason = (
        f"Habilitation close automatiquement : son jeton a expiré le "
        f"{format_day(token.expires_at)} et n'a pas été renouvelé "
        f"dans {'le' if days == 1 else 'les'} {plural(days, 'jour', 'jours')}."
    )
    recipients = token_mails.holder_emails(token)
    context = mail_context(token, api, reason=reason)
    for renewal in db.session.scalars(
        select(Renewal).where(
            Renewal.habilitation_id == habilitation.id,
            Renewal.status.in_(list(renewal_states.OPEN)),
        )
    ):
        apply_transition(renewal, RenewalEvent.CANCEL, actor, cause="closure")
    closed_by_request = request is not None and request.active_habilitation is habilitation
    if closed_by_request:
        # The request's revocation mails the requester and the contacts with this reason.
        authorization_decisions.revoke(request, actor, reason)
    else:
        authorization_transitions.revoke_habilitation(habilitation, actor, reason)
    audit.record(
        EventTag.Lifecycle.HabilitationClosed,
        actor,
        subject=habilitation,
        organisation_id=habilitation.organisation_id,
        api_id=habilitation.api_id,
        token_digest=token.digest,
        payload={"jti": token.jti, "expired_at": token.expires_at.isoformat(), "days": days},
    )
    sent = 0 if closed_by_request else fx.mail(recipients, "lifecycle_closed", context)
    return "done", {"mails": sent, "by_request": closed_by_request}


HANDLERS = {
    "reminder": _do_reminder,
    "expire": _do_expire,
    "grace_end": _do_grace_end,
    "never_used": do_never_used,
    "unused_warning": do_unused_warning,
    "unused_suspend": do_unused_suspend,
    "unused_revoke": do_unused_revoke,
    "closure": _do_closure,
}
