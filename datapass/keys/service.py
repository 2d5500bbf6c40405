"""The signing keys' rules: create a key pair (its private half sealed under the master key),
find the current and next keys of a usage, unseal a private key once per process, and publish
the public halves (the JWKS).

Rotation and its audit events belong to the tokens domain (``datapass.tokens.key_rotation``); a
key created here is announced with ``signals.signing_key_created``, which that domain records.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from flask import current_app
from sqlalchemy import exists, or_, select
from sqlalchemy.exc import IntegrityError

from datapass import clock, signals, vault
from datapass.actor import Actor
from datapass.extensions import db
from datapass.keys.models import KeyState, KeyUsage, SigningKey

SEAL_KEY = "signing-key"
ALGORITHMS = ("ES256", "EdDSA")
# A retired key that signed nothing (or whose tokens are all dead) stays one more day, so
# that a verifier holding a token signed in the last seconds before retirement is safe.
RETIRED_MIN_PUBLISHED = timedelta(days=1)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_int(value: int, size: int) -> str:
    return b64(value.to_bytes(size, "big"))


def _thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638: SHA-256 of the required members in lexicographic order."""
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return b64(hashlib.sha256(canonical.encode()).digest())


def _public_jwk(private_key, algorithm: str) -> dict[str, str]:
    if algorithm == "ES256":
        numbers = private_key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64_int(numbers.x, 32),
            "y": _b64_int(numbers.y, 32),
        }
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}


def _new_private_key(algorithm: str):
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"algorithme de signature inconnu : {algorithm!r} (ES256 ou EdDSA)")


def configured_algorithm() -> str:
    algorithm = current_app.config.get("TOKEN_ALGORITHM", "ES256")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"DATAPASS_TOKEN_ALGORITHM doit valoir ES256 ou EdDSA ({algorithm!r})")
    return algorithm


def create_key(
    usage: str,
    actor: Actor,
    *,
    state: str = KeyState.NEXT,
    activates_at: datetime | None = None,
    algorithm: str | None = None,
) -> SigningKey:
    """Generate a key pair; the private half is sealed under the master key. Sends
    ``signing_key_created`` (the tokens domain records the act)."""
    algorithm = algorithm or configured_algorithm()
    private_key = _new_private_key(algorithm)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    jwk = _public_jwk(private_key, algorithm)
    thumb = _thumbprint(jwk)
    kid = thumb if usage == KeyUsage.TOKEN else f"audit-{thumb}"
    jwk.update({"kid": kid, "use": "sig", "alg": algorithm, "datapass_usage": str(usage)})
    now = clock.now()
    key = SigningKey(
        kid=kid,
        usage=str(usage),
        algorithm=algorithm,
        state=str(state),
        private_key_sealed=vault.seal(pem, SEAL_KEY),
        public_jwk=jwk,
        created_at=now,
        activates_at=activates_at or now,
        activated_at=now if state == KeyState.CURRENT else None,
    )
    db.session.add(key)
    db.session.flush()
    _PRIVATE_KEYS[kid] = (private_key, algorithm)
    signals.signing_key_created.send(key, actor=actor)
    return key


def current_key(usage: str = KeyUsage.TOKEN, *, create: bool = True) -> SigningKey | None:
    """The key that signs for ``usage`` now; created on first use (bootstrap)."""
    key = db.session.scalar(
        select(SigningKey).where(
            SigningKey.usage == str(usage), SigningKey.state == KeyState.CURRENT
        )
    )
    if key is None and create:
        try:
            with db.session.begin_nested():
                key = create_key(usage, Actor.system("tokens.keys"), state=KeyState.CURRENT)
        except IntegrityError:  # another process bootstrapped it at the same moment
            key = current_key(usage, create=False)
    return key


def next_key(usage: str = KeyUsage.TOKEN) -> SigningKey | None:
    return db.session.scalar(
        select(SigningKey)
        .where(SigningKey.usage == str(usage), SigningKey.state == KeyState.NEXT)
        .order_by(SigningKey.activates_at)
    )


# The private keys loaded in this process, by kid: a key is unsealed once, not per token.
_PRIVATE_KEYS: dict[str, tuple[Any, str]] = {}
_KEYS_LOCK = threading.Lock()


def load_private_key(kid: str, sealed: str | None = None, algorithm: str | None = None):
    loaded = _PRIVATE_KEYS.get(kid)
    if loaded is not None:
        return loaded
    with _KEYS_LOCK:
        if sealed is None:
            row = db.session.execute(
                select(SigningKey.private_key_sealed, SigningKey.algorithm).where(
                    SigningKey.kid == kid
                )
            ).one()
            sealed, algorithm = row
        key = serialization.load_pem_private_key(vault.unseal(sealed, SEAL_KEY), password=None)
        _PRIVATE_KEYS[kid] = (key, algorithm)
        return _PRIVATE_KEYS[kid]


def published_keys() -> list[SigningKey]:
    """Keys in the JWKS: next and current keys; retired token keys while a token they signed
    is alive (and at least one day); audit keys always (old checkpoints must stay verifiable)."""
    now = clock.now()
    # The tokens domain's table, reached by name: keys sit below it and import none of it.
    tokens = db.metadata.tables["access_tokens"]
    live_token = exists().where(tokens.c.signing_kid == SigningKey.kid, tokens.c.expires_at > now)
    query = (
        select(SigningKey)
        .where(
            SigningKey.unpublished_at.is_(None),
            or_(
                SigningKey.state.in_([KeyState.NEXT, KeyState.CURRENT]),
                SigningKey.usage == KeyUsage.AUDIT,
                live_token,
                SigningKey.retired_at > now - RETIRED_MIN_PUBLISHED,
            ),
        )
        .order_by(SigningKey.usage.desc(), SigningKey.created_at.desc())
    )
    return list(db.session.scalars(query))


def jwks() -> dict[str, list[dict[str, str]]]:
    """The JSON Web Key Set (RFC 7517) of the published public keys."""
    current_key(KeyUsage.TOKEN)
    return {"keys": [dict(key.public_jwk) for key in published_keys()]}
