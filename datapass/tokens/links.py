"""Handing a token over, once: revealing it to a member (then its sealed copy is erased), or
e-mailing the technical contact a single-use link (``TOKEN_LINK_HOURS``) that reveals it."""

from __future__ import annotations

import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from datapass import clock, vault
from datapass.actor import Actor
from datapass.audit.tags import EventTag
from datapass.extensions import db
from datapass.notify import outbox
from datapass.tokens import states
from datapass.tokens.issuance import issuer
from datapass.tokens.models import SEAL_TOKEN, AccessToken, TokenLink
from datapass.tokens.transitions import TokenError, record_act


def reveal(token: AccessToken, actor: Actor) -> str:
    """Show the token once: unseal it, erase the sealed copy, audit the act."""
    if token.sealed_value is None:
        raise TokenError("Ce jeton a déjà été affiché : effectuez une rotation pour en obtenir un.")
    if not states.is_usable(token):
        raise TokenError("Ce jeton n'est plus utilisable.")
    raw = vault.unseal(token.sealed_value, SEAL_TOKEN).decode()
    token.sealed_value = None
    token.revealed_at = clock.now()
    record_act(
        token,
        EventTag.Tokens.TokenRevealed,
        actor,
        {"jti": token.jti},
    )
    return raw


def send_to_technical_contact(token: AccessToken, actor: Actor) -> TokenLink:
    """E-mail the technical contact a single-use link (``TOKEN_LINK_HOURS``) that reveals
    the token once. Earlier open links of the token are closed."""
    recipient = token.habilitation.technical_contact_email
    if not recipient:
        raise TokenError("L'habilitation ne désigne pas de contact technique.")
    if token.sealed_value is None or not states.is_usable(token):
        raise TokenError("Ce jeton a déjà été affiché : effectuez une rotation pour en obtenir un.")
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
    record_act(
        token,
        EventTag.Tokens.TokenSent,
        actor,
        {"jti": token.jti, "recipient": recipient, "link_id": link.id},
    )
    outbox.queue_mail(
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
        raise TokenError("Ce lien a déjà servi ou a expiré.")
    link.used_at = clock.now()
    link.used_ip = actor.ip
    return reveal(link.token, actor)
