"""Issuing access tokens: a habilitation's token (on approval, ``signals.habilitation_approved``,
and on renewal) and a token's rotation (its successor, the old one kept for a grace period).

Written for speed (DESIGN §6: issuance ≥ 2,000 tokens/s): the claims are signed with the
session's cached signer, the row is inserted with one Core statement and adopted without a
read back, and the first-token check is remembered per session.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import select

from datapass import clock, signals, vault
from datapass.actor import Actor
from datapass.audit.tags import EventTag
from datapass.extensions import adopt, db
from datapass.keys.jws import TOKEN_TYPE, current_signer, sign
from datapass.keys.models import KeyUsage
from datapass.notify import webhooks
from datapass.tokens import transitions
from datapass.tokens.models import SEAL_TOKEN, AccessToken
from datapass.tokens.states import TokenStatus
from datapass.tokens.transitions import TokenError

if TYPE_CHECKING:
    from datapass.authorizations.models import Habilitation


def issuer() -> str:
    """The ``iss`` of every token: the Datapass base URL."""
    return current_app.config["BASE_URL"].rstrip("/")


def mint(
    habilitation: Habilitation,
    *,
    issued_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> tuple[dict[str, Any], str, str]:
    """Sign the JWT of a habilitation: returns (claims, raw JWT, kid). Writes nothing."""
    now = (issued_at or clock.now()).replace(microsecond=0)
    exp = expires_at or clock.add_months(now, current_app.config["TOKEN_LIFETIME_MONTHS"])
    claims = {
        "iss": issuer(),
        "sub": str(habilitation.id),
        "client_id": str(habilitation.id),
        "aud": habilitation.api.audience,
        "siret": habilitation.organisation.siret,
        "scope": " ".join(habilitation.scopes or []),
        "jti": str(uuid.uuid4()),
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(exp.timestamp()),
    }
    kid, private_key, algorithm = current_signer(KeyUsage.TOKEN)
    return claims, sign(claims, kid, private_key, algorithm, TOKEN_TYPE), kid


_INSERT_TOKEN = AccessToken.__table__.insert()


def _store(
    habilitation: Habilitation,
    claims: dict[str, Any],
    raw: str,
    kid: str,
    actor: Actor,
    predecessor: AccessToken | None = None,
) -> AccessToken:
    """Insert the token row with one Core statement and hand the caller the persistent
    object without a read back: every column is set here, so nothing is left to load, and
    the ORM unit of work (the largest cost of issuing) stays off the issuance path."""
    now = clock.now()
    values = {
        "jti": claims["jti"],
        "digest": vault.sha256_hex(raw),
        "claims": claims,
        "habilitation_id": habilitation.id,
        "api_id": habilitation.api_id,
        "organisation_id": habilitation.organisation_id,
        "status": TokenStatus.ACTIVE.value,
        "signing_kid": kid,
        "issued_at": _ts(claims["iat"]),
        "not_before": _ts(claims["nbf"]),
        "expires_at": _ts(claims["exp"]),
        "grace_ends_at": None,
        "last_used_at": None,
        "last_used_ip": None,
        "revoked_at": None,
        "revoked_reason": None,
        "suspended_at": None,
        "suspended_reason": None,
        "predecessor_id": predecessor.id if predecessor is not None else None,
        "sealed_value": vault.seal(raw.encode(), SEAL_TOKEN),
        "revealed_at": None,
        "issued_by_id": int(actor.id) if actor.type == "user" and actor.id else None,
        "lifecycle_due_at": now,  # the next sweep schedules its reminders
        "reactivated_at": None,
    }
    result = db.session.connection().execute(_INSERT_TOKEN, values)
    return adopt(AccessToken(id=result.inserted_primary_key[0], **values))


def _ts(value: int) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


@signals.habilitation_approved.connect
def issue_for_habilitation(
    habilitation: Habilitation, actor: Actor, *, predecessor: AccessToken | None = None
) -> tuple[AccessToken, str]:
    """Issue a new access token for ``habilitation`` (approval, renewal): ``exp`` is
    exactly ``TOKEN_LIFETIME_MONTHS`` calendar months after ``iat``. Returns the token row
    and the raw JWT (kept sealed on the row until revealed once).

    The first token of a habilitation also fires the ``habilitation.approved`` webhook.
    A renewal passes ``predecessor`` to link the two tokens; superseding the old one (with
    its grace period) is the caller's act (``transitions.apply(old, "supersede", …)``).
    """
    known = db.session.info.setdefault("dp_habilitations_with_tokens", set())
    first = habilitation.id not in known and (
        db.session.scalar(
            select(AccessToken.id).where(AccessToken.habilitation_id == habilitation.id).limit(1)
        )
        is None
    )
    known.add(habilitation.id)
    claims, raw, kid = mint(habilitation)
    token = _store(habilitation, claims, raw, kid, actor, predecessor)
    if first:  # the provider learns of the habilitation before its first token
        webhooks.queue_webhook_for_api(
            token.api_id,
            "habilitation.approved",
            transitions.habilitation_webhook_data(habilitation),
            model_type="Habilitation",
            model_id=habilitation.id,
        )
    _announce_issued(token, actor, predecessor)
    return token, raw


def _announce_issued(token: AccessToken, actor: Actor, predecessor: AccessToken | None) -> None:
    """The audit event and the provider's ``token.issued`` webhook of a new token."""
    predecessor_jti = predecessor.jti if predecessor is not None else None
    transitions.record_act(
        token,
        EventTag.Tokens.TokenIssued,
        actor,
        {
            "jti": token.jti,
            "habilitation_id": token.habilitation_id,
            "kid": token.signing_kid,
            "exp": token.claims["exp"],
            "scope": token.claims["scope"],
            "predecessor_jti": predecessor_jti,
        },
    )
    webhooks.queue_webhook_for_api(
        token.api_id,
        "token.issued",
        transitions.token_webhook_data(token, predecessor_jti=predecessor_jti),
        model_type="AccessToken",
        model_id=token.id,
    )


def rotate(
    token: AccessToken, actor: Actor, grace_days: int, *, role: str | None = None
) -> tuple[AccessToken, str]:
    """Replace ``token`` by a new one; the old one stays valid ``grace_days`` (0–30) days,
    then the scheduled job revokes it. The new token keeps the old one's expiry: rotating
    never postpones the 18-month renewal."""
    # Refusals name the rotation form's field (``grace_days``): the page shows them beside it.
    max_grace = current_app.config["TOKEN_MAX_GRACE_DAYS"]
    if not 0 <= grace_days <= max_grace:
        raise TokenError(
            f"Le délai de grâce doit être compris entre 0 et {max_grace} jours.", "grace_days"
        )
    now = clock.now()
    if token.expires_at <= now:
        raise TokenError("Ce jeton a expiré : renouvelez l'habilitation.", "grace_days")
    habilitation = token.habilitation
    grace_end = min(now + timedelta(days=grace_days), token.expires_at)
    token.grace_ends_at = grace_end
    claims, raw, kid = mint(habilitation, expires_at=token.expires_at)
    new = _store(habilitation, claims, raw, kid, actor, predecessor=token)
    transitions.apply(
        token,
        "supersede",
        actor,
        role=role,
        payload={"successor_jti": new.jti, "grace_ends_at": grace_end.isoformat()},
    )
    _announce_issued(new, actor, token)
    if grace_days == 0:
        transitions.apply(
            token, "revoke", actor, role="system", reason="Rotation sans délai de grâce"
        )
    return new, raw
