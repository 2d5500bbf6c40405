"""A provider's view: fetch the JWKS over HTTP and verify a token with PyJWT alone; forged,
altered or misdirected tokens are refused (RFC 8725: pinned algorithm, checked `typ`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.request

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from datapass import clock
from datapass.actor import Actor
from datapass.extensions import db
from datapass.keys import jws as keys_jws
from datapass.tokens import issuance
from datapass.tokens import verify as dp_verify
from tests.tokens.conftest import make_api, make_habilitation, make_provider


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def provider_verify(token: str, jwks: dict, audience: str, issuer: str) -> dict:
    """What an API provider writes with PyJWT and nothing else."""
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt":
        raise jwt.InvalidTokenError("typ")
    keys = {k["kid"]: k for k in jwks["keys"] if k.get("datapass_usage", "token") == "token"}
    if header.get("kid") not in keys:
        raise jwt.InvalidTokenError("unknown kid")
    key = jwt.PyJWK(keys[header["kid"]])
    return jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "jti", "sub"]},
    )


@pytest.fixture
def served(live_server, committed_app):
    """A token issued and committed, and the JWKS fetched over real HTTP."""
    with committed_app.app_context():
        api = make_api(make_provider())
        habilitation = make_habilitation(api)
        token, raw = issuance.issue_for_habilitation(habilitation, Actor.system("test"))
        db.session.commit()
        audience, kid = api.audience, token.signing_kid
        claims = dict(token.claims)
    with urllib.request.urlopen(f"{live_server}/.well-known/jwks.json") as response:
        assert "max-age" in response.headers["Cache-Control"]
        jwks = json.load(response)
    return {
        "raw": raw,
        "jwks": jwks,
        "aud": audience,
        "iss": live_server,
        "kid": kid,
        "claims": claims,
        "app": committed_app,
    }


def _resign(served, *, header=None, claims=None) -> str:
    """A token signed with Datapass's real current key, with changed header or claims."""
    app = served["app"]
    with app.app_context():
        kid, key, algorithm = keys_jws.current_signer("token")
        payload = {**served["claims"], **(claims or {})}
        return keys_jws.sign(payload, kid, key, algorithm, (header or {}).get("typ", "at+jwt"))


def test_pyjwt_alone_verifies_a_token(served):
    claims = provider_verify(served["raw"], served["jwks"], served["aud"], served["iss"])
    assert claims["jti"] == served["claims"]["jti"]
    assert claims["scope"] == "revenus"
    # and the helper for Python providers agrees
    assert (
        dp_verify.verify(
            served["raw"], served["jwks"], issuer=served["iss"], audience=served["aud"]
        )
        == claims
    )


def _refused(served, token):
    with pytest.raises(jwt.InvalidTokenError):
        provider_verify(token, served["jwks"], served["aud"], served["iss"])
    with pytest.raises(dp_verify.InvalidToken):
        dp_verify.verify(token, served["jwks"], issuer=served["iss"], audience=served["aud"])


def test_alg_none_is_refused(served):
    header = b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": served["kid"]}).encode())
    body = served["raw"].split(".")[1]
    _refused(served, f"{header}.{body}.")


def test_hs256_signed_with_the_public_key_is_refused(served):
    jwk = next(k for k in served["jwks"]["keys"] if k["kid"] == served["kid"])
    public_pem = jwt.PyJWK(jwk).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": served["kid"]}).encode())
    body = served["raw"].split(".")[1]
    mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    _refused(served, f"{header}.{body}.{b64(mac)}")


def test_wrong_typ_is_refused(served):
    _refused(served, _resign(served, header={"typ": "JWT"}))


def test_wrong_audience_is_refused(served):
    _refused(served, _resign(served, claims={"aud": "https://autre-api.gouv.fr"}))


def test_wrong_issuer_is_refused(served):
    _refused(served, _resign(served, claims={"iss": "https://faux-datapass.example"}))


def test_expired_is_refused(served):
    past = int(clock.now().timestamp()) - 10 * 365 * 86400
    _refused(served, _resign(served, claims={"iat": past, "nbf": past, "exp": past + 3600}))


def test_tampered_payload_is_refused(served):
    header, body, signature = served["raw"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["scope"] = "revenus situation_familiale"
    forged = b64(json.dumps(claims, separators=(",", ":")).encode())
    _refused(served, f"{header}.{forged}.{signature}")


def test_unknown_kid_is_refused(served):
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(
        served["claims"],
        stranger,
        algorithm="ES256",
        headers={"typ": "at+jwt", "kid": "cle-inconnue"},
    )
    _refused(served, token)
    # the same key announcing a published kid: the signature does not match
    token = jwt.encode(
        served["claims"],
        stranger,
        algorithm="ES256",
        headers={"typ": "at+jwt", "kid": served["kid"]},
    )
    _refused(served, token)


def test_readme_snippet_with_pyjwkclient(served):
    """The few lines the README gives providers."""
    jwks_client = jwt.PyJWKClient(f"{served['iss']}/.well-known/jwks.json")

    def verify(token: str) -> dict:
        if jwt.get_unverified_header(token).get("typ") != "at+jwt":
            raise jwt.InvalidTokenError("typ")
        key = jwks_client.get_signing_key_from_jwt(token).key
        return jwt.decode(
            token,
            key,
            algorithms=["ES256"],
            audience=served["aud"],
            issuer=served["iss"],
            options={"require": ["exp", "iat", "nbf", "jti"]},
        )

    assert verify(served["raw"])["jti"] == served["claims"]["jti"]
    with pytest.raises(jwt.InvalidTokenError):
        verify(_resign(served, claims={"aud": "https://autre-api.gouv.fr"}))
