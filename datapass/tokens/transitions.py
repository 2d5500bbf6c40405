"""The acts that change a token's state: one function (:func:`apply`) checks a transition of
``TRANSITIONS``, changes the token, records the audit event and queues the provider's
webhook; the acts of people (revoke, suspend, reactivate) also tell the holders by mail.
A habilitation's revocation (``signals.habilitation_revoked``) and a provider's RFC 7009
request revoke through it too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from datapass import clock, signals
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.errors import DomainError
from datapass.extensions import db
from datapass.notify import webhooks
from datapass.tokens import introspection, mails, queries
from datapass.tokens.models import AccessToken
from datapass.tokens.states import (
    FINAL,
    TRANSITIONS,
    TokenStatus,
    Transition,
    TransitionError,
    actor_roles,
    status_of,
)

if TYPE_CHECKING:
    from datapass.authorizations.models import Habilitation
    from datapass.catalogue.models import MachineClient


class TokenError(DomainError):
    """A token act that cannot be done (wrong state, missing reason, closed link…)."""


def apply(
    token: AccessToken,
    name: str,
    actor: Actor,
    *,
    reason: str | None = None,
    role: str | None = None,
    payload: dict[str, Any] | None = None,
) -> Transition:
    """Check and apply one transition, then write its audit event and queue its webhook.

    ``role`` is given by trusted callers that already authorised the act (a habilitation's
    revocation cascading to its tokens); otherwise the actor's roles are checked.
    """
    transition = TRANSITIONS[name]
    current = status_of(token)
    if current not in transition.sources:
        raise TransitionError(
            f"transition {name} impossible depuis l'état {current.value} du jeton {token.jti}"
        )
    roles = {role} if role is not None else actor_roles(actor, token)
    if not roles & transition.roles:
        raise TransitionError(f"{actor.type} {actor.id} ne peut pas {name} ce jeton")
    reason = (reason or "").strip() or None
    if transition.reason_required and not reason:
        raise TransitionError("un motif est obligatoire")
    now = clock.now()
    token.status = transition.target
    if transition.target == TokenStatus.REVOKED:
        token.revoked_at = now
        token.revoked_reason = reason
    elif transition.target == TokenStatus.SUSPENDED:
        token.suspended_at = now
        token.suspended_reason = reason
    elif transition.target == TokenStatus.ACTIVE:
        token.suspended_at = None
        token.suspended_reason = None
        token.reactivated_at = now  # lifecycle: the unused-access count restarts here
    if transition.target in FINAL:
        token.sealed_value = None  # a dead token is never revealed
    introspection.forget_introspection(token.digest)
    body = {"from": current.value, "to": transition.target.value, "jti": token.jti}
    if reason:
        body["reason"] = reason
    body.update(payload or {})
    record_act(token, transition.tag, actor, body)
    if transition.webhook:
        webhooks.queue_webhook_for_api(
            token.api_id,
            transition.webhook,
            token_webhook_data(token, reason=reason, **(payload or {})),
            model_type="AccessToken",
            model_id=token.id,
        )
    return transition


def record_act(
    token: AccessToken, tag: EventTag.Tokens, actor: Actor, payload: dict[str, Any]
) -> None:
    """The audit event of an act on ``token``, filed under its organisation, API and digest
    (never the token itself)."""
    audit.record(
        tag,
        actor,
        subject=token,
        organisation_id=token.organisation_id,
        api_id=token.api_id,
        token_digest=token.digest,
        payload=payload,
    )


def token_webhook_data(token: AccessToken, **extra: Any) -> dict[str, Any]:
    """What a provider learns about a token in a webhook (never the token itself)."""
    data = {
        "jti": token.jti,
        "status": token.status,
        "habilitation_id": token.habilitation_id,
        "client_id": str(token.habilitation_id),
        "siret": (token.claims or {}).get("siret"),
        "aud": (token.claims or {}).get("aud"),
        "scope": (token.claims or {}).get("scope"),
        "iat": (token.claims or {}).get("iat"),
        "exp": (token.claims or {}).get("exp"),
    }
    data.update({k: v for k, v in extra.items() if v is not None})
    return data


def habilitation_webhook_data(habilitation: Habilitation, **extra: Any) -> dict[str, Any]:
    data = {
        "id": habilitation.id,
        "client_id": str(habilitation.id),
        "siret": habilitation.organisation.siret,
        "organisation": habilitation.organisation.name,
        "aud": habilitation.api.audience,
        "scopes": list(habilitation.scopes or []),
        "status": habilitation.status,
    }
    data.update({k: v for k, v in extra.items() if v is not None})
    return data


def _transition(token: AccessToken, name: str, actor: Actor, reason: str | None) -> None:
    try:
        apply(token, name, actor, reason=reason)
    except TransitionError as exc:
        raise TokenError(str(exc), "reason") from exc


def revoke(token: AccessToken, actor: Actor, reason: str) -> None:
    """Revoke for good (final); the holders are told."""
    _transition(token, "revoke", actor, reason)
    mails.mail_holders(token, "token_revoked", reason=reason)


def suspend(token: AccessToken, actor: Actor, reason: str) -> None:
    """Suspend (reversible): the token stops opening the API until reactivated."""
    _transition(token, "suspend", actor, reason)
    mails.mail_holders(token, "token_suspended", reason=reason)


def reactivate(token: AccessToken, actor: Actor, reason: str) -> None:
    """Lift a suspension."""
    _transition(token, "reactivate", actor, reason)
    mails.mail_holders(token, "token_reactivated", reason=reason)


@signals.habilitation_revoked.connect
def revoke_for_habilitation(
    habilitation: Habilitation, actor: Actor, reason: str
) -> list[AccessToken]:
    """Revoking a habilitation revokes every token of it still alive (on
    ``signals.habilitation_revoked``: the authorizations domain has already checked that the
    actor may revoke)."""
    tokens = list(
        db.session.scalars(
            select(AccessToken).where(
                AccessToken.habilitation_id == habilitation.id,
                AccessToken.status.in_(sorted(TRANSITIONS["revoke"].sources)),
            )
        )
    )
    for token in tokens:
        apply(token, "revoke", actor, reason=reason, role="habilitation")
    webhooks.queue_webhook_for_api(
        habilitation.api_id,
        "habilitation.revoked",
        habilitation_webhook_data(habilitation, reason=reason),
        model_type="Habilitation",
        model_id=habilitation.id,
    )
    return tokens


def revoke_by_client(raw: str | None, client: MachineClient, actor: Actor) -> bool:
    """RFC 7009 for a provider's machine client: revokes a token of one of its APIs; any
    other token (unknown, foreign, already dead) is silently ignored."""
    token = queries.find_by_raw(raw)
    if token is None or token.api.provider_id != client.provider_id:
        return False
    if status_of(token) not in TRANSITIONS["revoke"].sources:
        return False
    apply(token, "revoke", actor, reason="Révoqué par le fournisseur de l'API (RFC 7009)")
    mails.mail_holders(token, "token_revoked", reason="Révoqué par le fournisseur de l'API")
    return True
