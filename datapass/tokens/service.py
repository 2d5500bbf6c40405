"""Token rules: issuance, links, introspection, leaks.

Services flush, never commit; every act writes its audit event (with the token's digest, never
the token) and queues its mails and webhooks in the same transaction.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from datapass import clock, signals, vault
from datapass.actor import Actor
from datapass.extensions import adopt, db
from datapass.keys.jws import TOKEN_TYPE, current_signer, sign
from datapass.keys.models import KeyUsage
from datapass.keys.service import jwks
from datapass.tokens import mails, states, transitions
from datapass.tokens.models import MAX_TOKEN_LENGTH, AccessToken, TokenLink
from datapass.tokens.states import TokenStatus

SEAL_TOKEN = "access-token"


# --- issuance ----------------------------------------------------------------------------


def _issuer() -> str:
    return current_app.config["BASE_URL"].rstrip("/")


def mint(
    habilitation,
    *,
    issued_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> tuple[dict[str, Any], str, str]:
    """Sign the JWT of a habilitation: returns (claims, raw JWT, kid). Writes nothing."""
    now = (issued_at or clock.now()).replace(microsecond=0)
    exp = expires_at or clock.add_months(now, current_app.config["TOKEN_LIFETIME_MONTHS"])
    claims = {
        "iss": _issuer(),
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
    habilitation, claims: dict[str, Any], raw: str, kid: str, actor: Actor, predecessor=None
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
    habilitation, actor: Actor, *, predecessor: AccessToken | None = None
) -> tuple[AccessToken, str]:
    """Issue a new access token for ``habilitation`` (approval, renewal): ``exp`` is
    exactly ``TOKEN_LIFETIME_MONTHS`` calendar months after ``iat``. Returns the token row
    and the raw JWT (kept sealed on the row until revealed once).

    The first token of a habilitation also fires the ``habilitation.approved`` webhook.
    A renewal passes ``predecessor`` to link the two tokens; superseding the old one (with
    its grace period) is the caller's act (``transitions.apply(old, "supersede", …)``).
    """
    from datapass.notify import service as notify_service

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
        notify_service.queue_webhook_for_api(
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
    from datapass.notify import service as notify_service

    predecessor_jti = predecessor.jti if predecessor is not None else None
    transitions.record_act(
        token,
        "tokens:token:issued",
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
    notify_service.queue_webhook_for_api(
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
    max_grace = current_app.config["TOKEN_MAX_GRACE_DAYS"]
    if not 0 <= grace_days <= max_grace:
        raise transitions.TokenError(
            f"Le délai de grâce doit être compris entre 0 et {max_grace} jours."
        )
    now = clock.now()
    if token.expires_at <= now:
        raise transitions.TokenError("Ce jeton a expiré : renouvelez l'habilitation.")
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


def reveal(token: AccessToken, actor: Actor) -> str:
    """Show the token once: unseal it, erase the sealed copy, audit the act."""
    if token.sealed_value is None:
        raise transitions.TokenError(
            "Ce jeton a déjà été affiché : effectuez une rotation pour en obtenir un."
        )
    if not states.is_usable(token):
        raise transitions.TokenError("Ce jeton n'est plus utilisable.")
    raw = vault.unseal(token.sealed_value, SEAL_TOKEN).decode()
    token.sealed_value = None
    token.revealed_at = clock.now()
    transitions.record_act(
        token,
        "tokens:token:revealed",
        actor,
        {"jti": token.jti},
    )
    return raw


def send_to_technical_contact(token: AccessToken, actor: Actor) -> TokenLink:
    """E-mail the technical contact a single-use link (``TOKEN_LINK_HOURS``) that reveals
    the token once. Earlier open links of the token are closed."""
    from datapass.notify import service as notify_service

    recipient = token.habilitation.technical_contact_email
    if not recipient:
        raise transitions.TokenError("L'habilitation ne désigne pas de contact technique.")
    if token.sealed_value is None or not states.is_usable(token):
        raise transitions.TokenError(
            "Ce jeton a déjà été affiché : effectuez une rotation pour en obtenir un."
        )
    now = clock.now()
    db.session.execute(
        update(TokenLink)
        .where(TokenLink.token_id == token.id, TokenLink.used_at.is_(None))
        .values(expires_at=now)
    )
    secret = secrets.token_urlsafe(32)
    link = TokenLink(
        token_id=token.id,
        link_digest=vault.sha256_hex(secret),
        recipient=recipient,
        created_at=now,
        expires_at=now + timedelta(hours=current_app.config["TOKEN_LINK_HOURS"]),
        created_by_id=int(actor.id) if actor.type == "user" and actor.id else None,
    )
    db.session.add(link)
    db.session.flush()
    transitions.record_act(
        token,
        "tokens:token:sent",
        actor,
        {"jti": token.jti, "recipient": recipient, "link_id": link.id},
    )
    notify_service.queue_mail(
        recipient,
        "token_link",
        {
            "token": token,
            "habilitation": token.habilitation,
            "url": f"{_issuer()}/jetons/lien/{secret}",
            "expires_at": link.expires_at,
            "sender": actor.label,
        },
    )
    return link


def find_link(secret: str) -> TokenLink | None:
    """The open link for this secret, or None (unknown, used or expired)."""
    if not secret or len(secret) > 100:
        return None
    link = db.session.scalar(
        select(TokenLink).where(TokenLink.link_digest == vault.sha256_hex(secret))
    )
    return link if link is not None and link.is_open else None


def consume_link(link: TokenLink, actor: Actor) -> str:
    """Use a link once: it closes, and the token is revealed (then erased)."""
    if not link.is_open:
        raise transitions.TokenError("Ce lien a déjà servi ou a expiré.")
    link.used_at = clock.now()
    link.used_ip = actor.ip
    return reveal(link.token, actor)


# --- leaks --------------------------------------------------------------------------------


def report_leak(raw: str | None, actor: Actor, source: str | None = None) -> None:
    """A token found in the wild: if it is one of ours (its signature verifies), revoke it at
    once, tell its holders and the API's instructors, and audit. Returns nothing, so the
    caller cannot tell whether the token existed.

    Whitespace a copy added (a line break in a mail or a terminal) is removed first; the
    signature check is then strict, and the token is found by the ``jti`` of its verified
    claims, not by the digest of the string received: any copy of a genuine token resolves
    to it. Raises :class:`~datapass.tokens.verify.MalformedToken` when ``raw`` is not a
    compact JWS at all (the caller answers 422); a well-formed JWS that is not ours is
    silently ignored."""
    from datapass.tokens import verify as verifier

    cleaned = "".join((raw or "").split())
    if not cleaned or len(cleaned) > MAX_TOKEN_LENGTH:
        raise verifier.MalformedToken("jeton vide ou trop long")
    try:
        # Any s is fine here (the token is found by its jti): a token signed before
        # signatures were normalised to low s can still be reported.
        claims = verifier.verify_signature(
            cleaned, jwks(), usage=KeyUsage.TOKEN, types=(TOKEN_TYPE,), low_s=False
        )
    except verifier.MalformedToken:
        raise
    except verifier.InvalidToken:
        return
    jti = claims.get("jti")
    if type(jti) is not str:
        return
    token = db.session.scalar(select(AccessToken).where(AccessToken.jti == jti))
    if token is None:
        return
    transitions.record_act(
        token,
        "tokens:token:leaked",
        actor,
        {"jti": token.jti, "source": (source or "")[:500], "status": token.status},
    )
    if states.status_of(token) in states.TRANSITIONS["revoke"].sources:
        transitions.apply(
            token, "revoke", actor, role="reporter", reason="Jeton signalé comme divulgué"
        )
    mails.mail_holders(token, "token_leaked", source=(source or "")[:500], instructors=True)
