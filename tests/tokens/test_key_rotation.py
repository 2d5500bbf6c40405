"""Signing keys: published before they sign, kept while a token they signed lives."""

from __future__ import annotations

from datetime import timedelta

import pytest

from datapass import clock
from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.extensions import db
from datapass.keys import jws as keys_jws
from datapass.keys import service as keys_service
from datapass.keys.models import KeyState, SigningKey
from datapass.tokens import issuance, key_rotation, tasks, transitions
from datapass.tokens import verify as dp_verify


def _jwks(client) -> dict:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    return response.get_json()


def test_private_keys_are_sealed(app):
    key = keys_service.current_key("token")
    assert "PRIVATE KEY" not in key.private_key_sealed
    assert key.public_jwk["kty"] == "EC" and "d" not in key.public_jwk


def test_walk_24_months_every_token_verifies_until_exp(world, client):
    """Walk two years week by week (the rotation job runs at each step) and issue a token
    each month: each token verifies with the JWKS of the day until its exp, the JWKS never
    drops a key a live token needs, and every key is published at least 7 days before it
    signs."""
    issued = []  # (raw, exp, kid)
    first_published: dict[str, object] = {}
    first_signed: dict[str, object] = {}
    start = clock.now()
    week = 0
    while clock.now() < clock.add_months(start, 24) + timedelta(days=14):
        tasks.rotate_keys_if_due()
        jwks = _jwks(client)
        published = {k["kid"] for k in jwks["keys"]}
        for kid in published:
            first_published.setdefault(kid, clock.now())
        if week % 4 == 0 and clock.now() < clock.add_months(start, 24):
            token, raw = issuance.issue_for_habilitation(world.habilitation, Actor.system("t"))
            first_signed.setdefault(token.signing_kid, clock.now())
            issued.append((raw, token.expires_at, token.signing_kid))
            jwks = _jwks(client)
            published = {k["kid"] for k in jwks["keys"]}
        now = clock.now()
        for raw, exp, kid in issued:
            if exp > now:
                assert kid in published, f"key {kid} dropped while a token it signed lives"
                dp_verify.verify(
                    raw,
                    jwks,
                    issuer="http://datapass.test",
                    audience=world.api.audience,
                    now=now.timestamp(),
                )
            else:
                with pytest.raises(dp_verify.InvalidToken):
                    dp_verify.verify(
                        raw,
                        jwks,
                        issuer="http://datapass.test",
                        audience=world.api.audience,
                        now=now.timestamp(),
                    )
        clock.advance(timedelta(days=7))
        week += 1
    kids = {kid for _, _, kid in issued}
    assert len(kids) >= 4, "a key every 6 months over 2 years"
    bootstrap = min(first_signed, key=first_signed.get)
    for kid, signed_at in first_signed.items():
        if kid != bootstrap:
            assert signed_at - first_published[kid] >= timedelta(days=7)
    # the first keys' tokens are all dead by now: their keys left the JWKS
    published = {k["kid"] for k in _jwks(client)["keys"]}
    assert bootstrap not in published
    tags = {e.tag for e in db.session.query(AuditEvent)}
    assert {"tokens:key:created", "tokens:key:activated", "tokens:key:retired"} <= tags
    assert "tokens:key:unpublished" in tags


def test_rotation_job_is_idempotent(app):
    first = tasks.rotate_keys_if_due()
    again = tasks.rotate_keys_if_due()
    assert again == {"created": [], "activated": [], "unpublished": []}
    assert len(first["created"]) == 2  # one token key, one audit key
    states = db.session.query(SigningKey.usage, SigningKey.state).all()
    assert sorted(states) == [("audit", "current"), ("token", "current")]


def test_manual_rotation_publishes_next_key_seven_days_ahead(app, client):
    keys_service.current_key("token")
    key = key_rotation.rotate_keys("token", Actor.system("cli"))
    assert key.state == KeyState.NEXT
    assert key.activates_at == clock.now() + timedelta(days=7)
    assert key.kid in {k["kid"] for k in _jwks(client)["keys"]}
    clock.advance(timedelta(days=7))
    tasks.rotate_keys_if_due()
    assert keys_service.current_key("token").kid == key.kid


def test_audit_key_is_separate_and_published(app, client):
    jws = keys_jws.sign_jws({"checkpoint": 42, "head": "ab" * 32}, usage="audit")
    jwks = _jwks(client)
    audit_keys = [k for k in jwks["keys"] if k["datapass_usage"] == "audit"]
    assert audit_keys and all(k["use"] == "sig" for k in audit_keys)
    assert keys_jws.verify_jws(jws, usage="audit")["checkpoint"] == 42
    assert keys_service.current_key("audit").kid != keys_service.current_key("token").kid
    # an audit signature is never an access token
    with pytest.raises(dp_verify.InvalidToken):
        dp_verify.verify(jws, jwks, issuer="http://datapass.test", audience="x")
    with pytest.raises(ValueError):
        keys_jws.sign_jws({"aud": "https://api.gouv.fr"}, usage="audit")


def test_emergency_rotation_keeps_old_key_for_its_live_tokens(world, client):
    token, raw = issuance.issue_for_habilitation(world.habilitation, Actor.system("t"))
    old_kid = token.signing_kid
    new = key_rotation.rotate_keys("token", Actor.system("cli"), immediately=True)
    assert keys_service.current_key("token").kid == new.kid != old_kid
    fresh, _ = issuance.issue_for_habilitation(world.habilitation, Actor.system("t"))
    assert fresh.signing_kid == new.kid
    clock.advance(timedelta(days=30))
    tasks.rotate_keys_if_due()
    jwks = _jwks(client)
    assert {old_kid, new.kid} <= {k["kid"] for k in jwks["keys"]}
    dp_verify.verify(
        raw,
        jwks,
        issuer="http://datapass.test",
        audience=world.api.audience,
        now=clock.now().timestamp(),
    )
    # once its last token is revoked the old key still stays until that token's exp:
    # revocation is not expiry (offline verifiers check the revocation list)
    transitions.revoke(token, Actor.system("t"), "Clé compromise")
    assert old_kid in {k["kid"] for k in _jwks(client)["keys"]}


def test_compromised_key_leaves_the_jwks_at_once(world, client):
    token, raw = issuance.issue_for_habilitation(world.habilitation, Actor.system("t"))
    key_rotation.rotate_keys("token", Actor.system("cli"), compromised=True)
    jwks = _jwks(client)
    assert token.signing_kid not in {k["kid"] for k in jwks["keys"]}
    with pytest.raises(dp_verify.InvalidToken):
        dp_verify.verify(raw, jwks, issuer="http://datapass.test", audience=world.api.audience)
    assert "tokens:key:compromised" in {e.tag for e in db.session.query(AuditEvent)}
