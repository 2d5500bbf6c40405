"""One token, one string: every other encoding of a genuine token (padding, the `+/`
alphabet, whitespace, stray characters, unused bits set, the high-s twin of its ECDSA
signature) is refused by the offline verifier and by introspection alike; a header whose
`kid`, `alg` or `typ` is not a string is refused cleanly; a leak report is resolved by the
verified `jti`, whatever whitespace the copy picked up."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from datapass import clock
from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.keys import jws as keys_jws
from datapass.keys import service as keys_service
from datapass.tokens import issuance, revocation_list
from datapass.tokens import verify as dp_verify
from tests.tokens.test_machine_api import basic

ISSUER = "http://datapass.test"
URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture(autouse=True)
def _no_leak_rate_limit():
    from datapass.tokens import api

    api._LEAK_WINDOWS.clear()  # the window is per process: other tests' reports count
    yield
    api._LEAK_WINDOWS.clear()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def high_s_twin(raw: str) -> str:
    """The same token with (r, n - s): a valid ECDSA signature of the same bytes."""
    signing_input, _, signature = raw.rpartition(".")
    sig = unb64(signature)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    twin = r.to_bytes(32, "big") + (dp_verify.P256_ORDER - s).to_bytes(32, "big")
    return f"{signing_input}.{b64(twin)}"


def unused_bits_set(segment: str) -> str:
    """The segment with the unused low bits of its last character set: same bytes."""
    last = URL_ALPHABET.index(segment[-1])
    bump = {2: 0b1111, 3: 0b11}[len(segment) % 4]
    return segment[:-1] + URL_ALPHABET[last | bump]


def reencodings(raw: str) -> dict[str, str]:
    """Strings a lenient base64url decoder reads as the same token."""
    header, payload, signature = raw.split(".")
    standard = raw.replace("-", "+").replace("_", "/")
    variants = {
        "padded signature": f"{header}.{payload}.{signature}{'=' * (-len(signature) % 4)}",
        "padding everywhere": ".".join(
            s + "=" * (-len(s) % 4 or 4) for s in (header, payload, signature)
        ),
        "standard alphabet": standard,
        "line break in the payload": f"{header}.{payload[:40]}\n{payload[40:]}.{signature}",
        "CRLF in the signature": f"{header}.{payload}.{signature[:30]}\r\n{signature[30:]}",
        "space in the header": f"{header[:10]} {header[10:]}.{payload}.{signature}",
        "tab in the signature": f"{header}.{payload}.{signature[:5]}\t{signature[5:]}",
        "trailing newline": raw + "\n",
        "leading space": " " + raw,
        "stray character": f"{header}.{payload[:20]}!{payload[20:]}.{signature}",
        "stray dollar in signature": f"{header}.{payload}.{signature[:50]}${signature[50:]}",
        "non-ASCII": f"{header}.{payload[:7]}é{payload[7:]}.{signature}",
        "unused bits in the signature": f"{header}.{payload}.{unused_bits_set(signature)}",
        "high-s signature": high_s_twin(raw),
    }
    if len(payload) % 4 in (2, 3):
        variants["unused bits in the payload"] = f"{header}.{unused_bits_set(payload)}.{signature}"
    assert all(v != raw for v in variants.values())
    assert standard != raw  # 86 random signature characters: some `-` or `_` among them
    return variants


def check(raw: str, jwks, audience: str) -> dict:
    return dp_verify.verify(
        raw, jwks, issuer=ISSUER, audience=audience, now=clock.now().timestamp()
    )


def test_every_lenient_reencoding_is_refused_offline_and_by_introspection(client, world):
    token, raw = issuance.issue_for_habilitation(world.habilitation, Actor.system("test"))
    jwks = dp_verify.KeySet(keys_service.jwks())
    assert check(raw, jwks, world.api.audience)["jti"] == token.jti
    auth = basic(world.client.client_id, world.secret)
    for name, variant in reencodings(raw).items():
        with pytest.raises(dp_verify.InvalidToken):
            check(variant, jwks, world.api.audience)
            pytest.fail(f"verify accepted: {name}")
        with pytest.raises(dp_verify.InvalidToken):
            dp_verify.verify_signature(variant, jwks, usage="token")
            pytest.fail(f"verify_signature accepted: {name}")
        answer = client.post("/api/v1/introspect", data={"token": variant}, headers=auth)
        assert answer.status_code == 200, name
        assert answer.get_json() == {"active": False}, name
    # the genuine string is still fine after all that
    answer = client.post("/api/v1/introspect", data={"token": raw}, headers=auth)
    assert answer.get_json()["active"] is True


def test_signatures_are_low_s_and_high_s_twins_are_refused(world):
    actor = Actor.system("test")
    jwks = dp_verify.KeySet(keys_service.jwks())
    key = next(iter(jwks.keys.values())).key
    for _ in range(24):  # without normalisation, about half of them would be high-s
        _, raw = issuance.issue_for_habilitation(world.habilitation, actor)
        signing_input, _, signature = raw.rpartition(".")
        r, s = (
            int.from_bytes(unb64(signature)[:32], "big"),
            int.from_bytes(unb64(signature)[32:], "big"),
        )
        assert s <= dp_verify.P256_HALF_ORDER
        # the twin is a mathematically valid signature, which is why it must be refused
        twin = dp_verify.P256_ORDER - s
        key.verify(encode_dss_signature(r, twin), signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        with pytest.raises(dp_verify.InvalidToken, match="s haut"):
            check(high_s_twin(raw), jwks, world.api.audience)
    # the other documents signed by the same path (revocation list, audit checkpoints) too
    for _ in range(8):
        for jws in (
            revocation_list.revocation_list().jws,
            keys_jws.sign_jws({"iss": ISSUER, "n": 1}, usage="audit"),
        ):
            s = int.from_bytes(unb64(jws.rpartition(".")[2])[32:], "big")
            assert s <= dp_verify.P256_HALF_ORDER


def _signed_with_header(header: dict, claims: dict) -> str:
    """A JWS signed with Datapass's real current token key, with any header at all."""
    kid, private_key, _ = keys_jws.current_signer("token")
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    s = min(s, dp_verify.P256_ORDER - s)
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "ES256", "typ": "at+jwt", "kid": ["k"]},
        {"alg": "ES256", "typ": "at+jwt", "kid": {"k": 1}},
        {"alg": "ES256", "typ": "at+jwt", "kid": 7},
        {"alg": ["ES256"], "typ": "at+jwt", "kid": "k"},
        {"alg": "ES256", "typ": {"at": "jwt"}, "kid": "k"},
    ],
)
def test_non_string_header_members_are_refused_cleanly(client, world, header):
    token, _ = issuance.issue_for_habilitation(world.habilitation, Actor.system("test"))
    forged = _signed_with_header(header, dict(token.claims))
    jwks = keys_service.jwks()
    with pytest.raises(dp_verify.MalformedToken):
        check(forged, jwks, world.api.audience)
    with pytest.raises(dp_verify.MalformedToken):
        dp_verify.verify_signature(forged, jwks)
    # the unauthenticated leak endpoint answers a French 422, not a 500
    response = client.post("/api/v1/leaks", json={"token": forged})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert "jeton Datapass" in response.get_json()["detail"]
    assert token.status == "active"


def test_a_jwks_key_with_a_non_string_kid_is_ignored(world):
    issuance.issue_for_habilitation(world.habilitation, Actor.system("test"))
    jwks = keys_service.jwks()
    good = jwks["keys"][0]
    keyset = dp_verify.KeySet({"keys": [{**good, "kid": ["x"]}, good]})
    assert list(keyset.keys) == [good["kid"]]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda raw: f"{raw[:70]}\n{raw[70:140]}\r\n{raw[140:]}",  # wrapped by a mail client
        lambda raw: f"  {raw}\n",
        lambda raw: raw.replace(".", ".\n"),
    ],
)
def test_a_leaked_token_pasted_with_line_breaks_is_revoked(client, world, mangle):
    token, raw = issuance.issue_for_habilitation(world.habilitation, Actor.system("test"))
    response = client.post(
        "/api/v1/leaks", json={"token": mangle(raw), "source": "https://pastebin.example/1"}
    )
    assert response.status_code == 202
    assert token.status == "revoked"
    event = AuditEvent.query.filter_by(tag="tokens:token:leaked").one()
    assert event.token_digest == token.digest
    auth = basic(world.client.client_id, world.secret)
    answer = client.post("/api/v1/introspect", data={"token": raw}, headers=auth)
    assert answer.get_json() == {"active": False}


def test_a_leaked_high_s_twin_is_resolved_by_its_jti(client, world):
    """Another encoding of a genuine token carries the same verified jti: it names the same
    token, so the report revokes it (a digest lookup would have missed it)."""
    token, raw = issuance.issue_for_habilitation(world.habilitation, Actor.system("test"))
    response = client.post("/api/v1/leaks", data={"token": high_s_twin(raw)})
    assert response.status_code == 202
    assert token.status == "revoked"


@pytest.mark.parametrize(
    "garbage", ["nimporte.quoi.ici", "abc", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30", "é.é.é", "...."]
)
def test_garbage_leak_reports_get_a_422(client, garbage):
    response = client.post("/api/v1/leaks", json={"token": garbage})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["errors"]["token"]


def test_a_forged_but_well_formed_token_gets_the_same_202(client, world):
    token, raw = issuance.issue_for_habilitation(world.habilitation, Actor.system("test"))
    header, payload, signature = raw.split(".")
    forged = f"{header}.{payload}.{'A' * len(signature)}"
    response = client.post("/api/v1/leaks", json={"token": forged})
    assert response.status_code == 202
    assert token.status == "active"
