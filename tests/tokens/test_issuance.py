"""Issuance: RFC 9068 header and claims, 18 calendar months, only the digest kept."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import jwt

from datapass import clock
from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.extensions import db
from datapass.keys import service as keys_service
from datapass.tokens import issuance, key_rotation, links, transitions
from datapass.tokens.models import AccessToken


def _issue(world):
    return issuance.issue_for_habilitation(world.habilitation, Actor.system("test"))


def test_header_and_claims_follow_rfc_9068(world):
    token, raw = _issue(world)
    header = jwt.get_unverified_header(raw)
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": token.signing_kid}
    claims = jwt.decode(raw, options={"verify_signature": False})
    h = world.habilitation
    assert claims["iss"] == "http://datapass.test"
    assert claims["sub"] == claims["client_id"] == str(h.id)
    assert claims["aud"] == world.api.audience
    assert claims["siret"] == world.organisation.siret
    assert claims["scope"] == "revenus"
    assert claims["iat"] == claims["nbf"] == int(clock.now().timestamp())
    # 2026-11-28 09:00 UTC + 18 calendar months
    assert claims["exp"] == int(datetime(2028, 5, 28, 9, 0, tzinfo=UTC).timestamp())
    assert token.expires_at == datetime(2028, 5, 28, 9, 0, tzinfo=UTC)
    assert len(claims["jti"]) == 36


def test_month_end_falls_back_to_last_day(world):
    clock.set_frozen(datetime(2027, 8, 31, 12, 0, tzinfo=UTC))
    token, _ = _issue(world)
    assert token.expires_at == datetime(2029, 2, 28, 12, 0, tzinfo=UTC)


def test_only_digest_and_sealed_copy_are_stored(world):
    token, raw = _issue(world)
    db.session.expire_all()
    row = db.session.get(AccessToken, token.id)
    assert row.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in (row.sealed_value or "")
    assert raw not in str(row.claims)
    events = db.session.query(AuditEvent).filter(AuditEvent.tag == "tokens:token:issued").all()
    assert events and events[-1].token_digest == row.digest
    assert all(raw not in e.payload for e in db.session.query(AuditEvent))


def test_reveal_once_then_erased(world):
    token, raw = _issue(world)
    actor = Actor.for_user(world.requester)
    assert links.reveal(token, actor) == raw
    assert token.sealed_value is None
    try:
        links.reveal(token, actor)
    except transitions.TokenError:
        pass
    else:
        raise AssertionError("a token is revealed once only")


def test_eddsa_option(world, app):
    app.config["TOKEN_ALGORITHM"] = "EdDSA"
    try:
        key_rotation.rotate_keys("token", Actor.system("test"), immediately=True)
        token, raw = _issue(world)
        assert jwt.get_unverified_header(raw)["alg"] == "EdDSA"
        jwks = keys_service.jwks()
        key = next(k for k in jwks["keys"] if k["kid"] == token.signing_kid)
        public = jwt.PyJWK(key)
        jwt.decode(
            raw,
            public.key,
            algorithms=["EdDSA"],
            audience=world.api.audience,
            issuer="http://datapass.test",
        )
    finally:
        app.config["TOKEN_ALGORITHM"] = "ES256"


def test_a_token_rolled_back_with_its_savepoint_leaves_no_trace(world):
    """A token issued inside a savepoint that rolls back (the sweep's careful mode) is gone,
    and the next token issued in the same session may reuse its id."""
    savepoint = db.session.begin_nested()
    lost, _ = _issue(world)
    lost_id = lost.id
    savepoint.rollback()
    assert lost not in db.session
    token, raw = _issue(world)
    assert db.session.get(AccessToken, token.id) is token
    assert token.digest == hashlib.sha256(raw.encode()).hexdigest()
    ids = db.session.scalars(
        db.select(AccessToken.id).where(AccessToken.habilitation_id == world.habilitation.id)
    ).all()
    assert ids == [token.id]
    assert lost_id == token.id or db.session.get(AccessToken, lost_id) is None
