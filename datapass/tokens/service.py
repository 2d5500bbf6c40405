"""Token rules: issuance, links, introspection, leaks.

Services flush, never commit; every act writes its audit event (with the token's digest, never
the token) and queues its mails and webhooks in the same transaction.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from datapass import clock, vault
from datapass.actor import Actor
from datapass.extensions import db
from datapass.keys.jws import TOKEN_TYPE
from datapass.keys.models import KeyUsage
from datapass.keys.service import jwks
from datapass.tokens import mails, states, transitions
from datapass.tokens.issuance import issuer
from datapass.tokens.models import MAX_TOKEN_LENGTH, SEAL_TOKEN, AccessToken, TokenLink


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
            "url": f"{issuer()}/jetons/lien/{secret}",
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
