"""Leak reports (``POST /api/v1/leaks``): a token found in the wild is revoked at once if it
is one of ours, and its holders and the API's instructors are told."""

from __future__ import annotations

from sqlalchemy import select

from datapass.actor import Actor
from datapass.audit.tags import EventTag
from datapass.extensions import db
from datapass.keys.jws import TOKEN_TYPE
from datapass.keys.models import KeyUsage
from datapass.keys.service import jwks
from datapass.tokens import mails, states, transitions
from datapass.tokens import verify as verifier
from datapass.tokens.models import MAX_TOKEN_LENGTH, AccessToken


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
        EventTag.Tokens.TokenLeaked,
        actor,
        {"jti": token.jti, "source": (source or "")[:500], "status": token.status},
    )
    if states.status_of(token) in states.TRANSITIONS["revoke"].sources:
        transitions.apply(
            token, "revoke", actor, role="reporter", reason="Jeton signalé comme divulgué"
        )
    mails.mail_holders(token, "token_leaked", source=(source or "")[:500], instructors=True)
