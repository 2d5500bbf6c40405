"""Compact JWS (RFC 7515) with the signing keys: sign with the current key of a usage, verify
against the published keys.

:func:`sign` is on the issuance path (every access token goes through it): headers are
encoded once per key and type, and the signer of a usage is looked up once per session.
Verifying uses the offline verifier that providers use (``datapass.tokens.verify``, a
self-contained module of the standard library and ``cryptography`` only).
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from sqlalchemy import select

from datapass.extensions import db
from datapass.keys.models import KeyState, KeyUsage, SigningKey
from datapass.keys.service import b64, current_key, jwks, load_private_key
from datapass.tokens import verify as verifier
from datapass.tokens.verify import P256_HALF_ORDER, P256_ORDER

TOKEN_TYPE = "at+jwt"
AUDIT_TYPE = "datapass-audit+jwt"


def current_signer(usage: str) -> tuple[str, Any, str]:
    """(kid, private key, algorithm) of the current key: one small query per session (a
    request, a job), no unsealing (private keys are cached in-process by kid)."""
    cache = db.session.info.setdefault("dp_signers", {})
    signer = cache.get(str(usage))
    if signer is None:
        signer = cache[str(usage)] = _load_signer(usage)
    return signer


def forget_signers() -> None:
    db.session.info.pop("dp_signers", None)


def _load_signer(usage: str) -> tuple[str, Any, str]:
    row = db.session.execute(
        select(SigningKey.kid, SigningKey.algorithm).where(
            SigningKey.usage == str(usage), SigningKey.state == KeyState.CURRENT
        )
    ).first()
    if row is None:
        key = current_key(usage)
        row = (key.kid, key.algorithm)
    kid, algorithm = row
    private_key, _ = load_private_key(kid)
    return kid, private_key, algorithm


_HEADERS: dict[tuple[str, str, str], bytes] = {}


def sign(payload: dict[str, Any], kid: str, private_key, algorithm: str, typ: str) -> str:
    header = _HEADERS.get((kid, algorithm, typ))
    if header is None:
        header = b64(
            json.dumps({"alg": algorithm, "typ": typ, "kid": kid}, separators=(",", ":")).encode()
        ).encode()
        _HEADERS[(kid, algorithm, typ)] = header
    body = b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()).encode()
    signing_input = header + b"." + body
    if algorithm == "ES256":
        r, s = decode_dss_signature(private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        if s > P256_HALF_ORDER:  # (r, n - s) verifies too: sign with the one verifiers accept
            s = P256_ORDER - s
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = private_key.sign(signing_input)
    return (signing_input + b"." + b64(signature).encode()).decode()


def sign_jws(payload: dict[str, Any], usage: str = KeyUsage.AUDIT, typ: str | None = None) -> str:
    """A compact JWS of ``payload`` signed with the current key of ``usage``.

    The audit domain signs checkpoints and export manifests with ``usage="audit"`` (its own
    key, published in the JWKS with its own ``kid``). An audit signature never looks like an
    access token: its ``typ`` is fixed and payloads carrying ``aud`` or ``scope`` are refused.
    """
    if usage == KeyUsage.AUDIT:
        if "aud" in payload or "scope" in payload:
            raise ValueError("une signature d'audit ne porte ni `aud` ni `scope`")
        typ = AUDIT_TYPE
    elif typ is None or typ == TOKEN_TYPE:
        raise ValueError("les jetons d'accès sont émis par issue_for_habilitation uniquement")
    kid, private_key, algorithm = current_signer(usage)
    return sign(payload, kid, private_key, algorithm, typ)


def verify_jws(
    compact: str,
    usage: str | None = None,
    *,
    keys: dict[str, Any] | None = None,
    types: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Verify a JWS made by :func:`sign_jws` against the published keys (of ``usage`` if
    given), or against ``keys`` (a JWKS) only, which reads and creates nothing; ``types``
    pins the header's ``typ``. Returns its payload or raises ``ValueError``."""
    return verifier.verify_signature(
        compact, jwks() if keys is None else keys, usage=usage, types=types
    )


def kid_of(compact: str) -> str:
    """The ``kid`` named in a compact JWS's header (strict base64url; not verified)."""
    return json.loads(verifier._b64decode(compact.split(".", 1)[0])).get("kid", "")
