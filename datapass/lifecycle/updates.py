"""What the end of an update of a request does to renewals and tokens: authorizations sends
its signals (``habilitation_updated``, ``update_closed``) and these receivers, connected when
this module is imported (by the lifecycle's views, so by ``create_app``), apply the
lifecycle's rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from datapass import signals
from datapass.actor import Actor
from datapass.extensions import db
from datapass.lifecycle import states as renewal_states
from datapass.lifecycle.models import Renewal
from datapass.lifecycle.renewal import apply_transition, complete, supersede_with_grace
from datapass.lifecycle.states import RenewalEvent, RenewalStatus
from datapass.tokens import queries as token_queries
from datapass.tokens.models import AccessToken

if TYPE_CHECKING:
    from datapass.authorizations.models import AuthorizationRequest, Habilitation


@signals.habilitation_updated.connect
def on_update_approved(previous: Habilitation, habilitation: Habilitation, actor: Actor) -> None:
    """Called when the update of a validated request is approved:
    the new habilitation's token replaces the old habilitation's live tokens (superseded,
    valid for the grace period), and a renewal waiting on that update is completed."""
    new_token = db.session.scalar(
        select(AccessToken)
        .where(AccessToken.habilitation_id == habilitation.id)
        .order_by(AccessToken.id.desc())
    )
    if new_token is None:
        return
    renewals = list(
        db.session.scalars(
            select(Renewal).where(
                Renewal.habilitation_id == previous.id,
                Renewal.status.in_(list(renewal_states.OPEN)),
            )
        )
    )
    for renewal in renewals:
        complete(renewal, actor, new_token=new_token)
    for old in db.session.scalars(
        select(AccessToken).where(
            AccessToken.habilitation_id == previous.id,
            token_queries.active(),
        )
    ):
        supersede_with_grace(old, new_token, actor)


@signals.update_closed.connect
def on_update_closed(request: AuthorizationRequest, actor: Actor) -> None:
    """A reopening was cancelled or refused: a renewal waiting on it is cancelled."""
    for renewal in db.session.scalars(
        select(Renewal).where(
            Renewal.request_id == request.id, Renewal.status == RenewalStatus.REOPENED
        )
    ):
        apply_transition(renewal, RenewalEvent.CANCEL, actor, request_id=request.id)
