"""Verify a Datapass access token offline, for API providers written in Python.

    from datapass.tokens.verify import Verifier

    verifier = Verifier("https://datapass.gouv.fr", audience="https://api.example.gouv.fr")
    claims = verifier.verify(token)          # raises InvalidToken

It pins the algorithm (ES256 by default; never ``none``, never HMAC), checks the RFC 9068
``typ`` (``at+jwt``), the signature with the published key named by ``kid``, then ``iss``,
``aud``, ``exp`` and ``nbf``; with a revocation list (``GET /api/v1/revocations``) it also
refuses revoked and suspended tokens. Only the standard library and ``cryptography``: no
Flask, no database — a provider may copy this file.
"""

from __future__ import annotations

import binascii
import json
import threading
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
REVOCATIONS_TYPE = "datapass-revocations+jwt"
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class InvalidToken(ValueError):
    """The token must be refused; the message says why (for logs, not for the caller)."""


class MalformedToken(InvalidToken):
    """Not a compact JWS at all (segments that are not strict base64url, a header that is not
    a JSON object with string ``alg``, ``kid`` and ``typ``): garbage, not a forgery."""


# The order of P-256. A signature (r, s) also verifies as (r, n - s): only the low half of s
# is accepted, and Datapass signs with it, so a token has exactly one valid encoding.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_HALF_ORDER = P256_ORDER // 2

# base64url → base64 in one C pass: `-` and `_` become `+` and `/`, while `+`, `/` and `=`
# themselves become `!`, which the strict decoder refuses (as it refuses whitespace and any
# other character outside the alphabet).
_URL_TO_STANDARD = bytearray(range(256))
_URL_TO_STANDARD[ord("+")] = _URL_TO_STANDARD[ord("/")] = _URL_TO_STANDARD[ord("=")] = ord("!")
_URL_TO_STANDARD[ord("-")], _URL_TO_STANDARD[ord("_")] = ord("+"), ord("/")
_URL_TO_STANDARD = bytes(_URL_TO_STANDARD)
_PADDING = (b"", None, b"==", b"=")
# With 2 or 3 characters left over, the last one carries 4 or 2 unused bits, which must be
# zero (RFC 4648 §3.5): otherwise several strings decode to the same bytes.
_CANONICAL_LAST = (None, None, frozenset(b"AQgw"), frozenset(b"AEIMQUYcgkosw048"))


def _b64decode(segment: str | bytes) -> bytes:
    """Strict base64url (RFC 7515 §2): the URL alphabet only, no padding, no whitespace, no
    stray character, no unused bit set. Anything else is another string than the one that
    was signed, and introspection (which looks tokens up by digest) refuses it too."""
    try:
        data = segment.encode("ascii") if type(segment) is str else bytes(segment)
        rest = len(data) % 4
        padding = _PADDING[rest]
        if padding is None:
            raise MalformedToken("encodage base64url invalide")
        decoded = binascii.a2b_base64(data.translate(_URL_TO_STANDARD) + padding, strict_mode=True)
    except (binascii.Error, ValueError, TypeError) as exc:  # UnicodeError is a ValueError
        if isinstance(exc, MalformedToken):
            raise
        raise MalformedToken("encodage base64url invalide") from exc
    if rest and data[-1] not in _CANONICAL_LAST[rest]:
        raise MalformedToken("encodage base64url non canonique")
    return decoded


_SCAN = json.JSONDecoder().scan_once


def _json_object(data: bytes) -> dict[str, Any]:
    """A JSON object, strictly (nothing after it), with the C scanner directly: the claims
    are parsed on every verification."""
    try:
        text = data.decode("utf-8")
        value, end = _SCAN(text, 0)
    except (StopIteration, ValueError, UnicodeDecodeError) as exc:
        raise MalformedToken("charge utile illisible") from exc
    if end != len(text) or type(value) is not dict:
        raise MalformedToken("charge utile illisible")
    return value


def _b64int(value: str) -> int:
    return int.from_bytes(_b64decode(value), "big")


class PublicKey:
    __slots__ = ("kid", "alg", "usage", "key")

    def __init__(self, jwk: dict[str, Any]):
        self.kid = jwk["kid"]
        if type(self.kid) is not str:
            raise InvalidToken("kid de la clé : une chaîne est attendue")
        self.usage = jwk.get("datapass_usage", "token")
        kty, crv = jwk.get("kty"), jwk.get("crv")
        if kty == "EC" and crv == "P-256":
            self.alg = "ES256"
            numbers = ec.EllipticCurvePublicNumbers(
                _b64int(jwk["x"]), _b64int(jwk["y"]), ec.SECP256R1()
            )
            self.key = numbers.public_key()
        elif kty == "OKP" and crv == "Ed25519":
            self.alg = "EdDSA"
            self.key = ed25519.Ed25519PublicKey.from_public_bytes(_b64decode(jwk["x"]))
        else:
            raise InvalidToken(f"clé de type non pris en charge : {kty}/{crv}")
        if jwk.get("alg") not in (None, self.alg):
            raise InvalidToken("l'algorithme annoncé par la clé ne correspond pas à son type")

    def check(self, signing_input: bytes, signature: bytes, low_s: bool = True) -> None:
        try:
            if self.alg == "ES256":
                if len(signature) != 64:
                    raise InvalidToken("signature ES256 de longueur invalide")
                r = int.from_bytes(signature[:32], "big")
                s = int.from_bytes(signature[32:], "big")
                if s > P256_HALF_ORDER and low_s:
                    raise InvalidToken("signature ES256 non normalisée (s haut)")
                self.key.verify(encode_dss_signature(r, s), signing_input, _ECDSA_SHA256)
            else:
                self.key.verify(signature, signing_input)
        except InvalidSignature as exc:
            raise InvalidToken("signature invalide") from exc


class KeySet:
    """A JWKS parsed once: public keys by ``kid``."""

    def __init__(self, jwks: dict[str, Any] | Iterable[dict[str, Any]]):
        keys = jwks.get("keys", []) if isinstance(jwks, dict) else jwks
        self.keys: dict[str, PublicKey] = {}
        for jwk in keys:
            try:
                self.keys[jwk["kid"]] = PublicKey(jwk)
            except (InvalidToken, KeyError, TypeError, ValueError):
                continue  # a key we cannot use is simply not trusted

    def get(self, kid: str | None) -> PublicKey | None:
        return self.keys.get(kid) if type(kid) is str else None


def _as_keyset(keys) -> KeySet:
    return keys if isinstance(keys, KeySet) else KeySet(keys)


# Parsed headers by their encoded segment: every token signed by one key shares its header.
_HEADERS: dict[str, dict[str, Any]] = {}


def _header(segment: str) -> dict[str, Any]:
    """The JOSE header, a JSON object whose ``alg``, ``kid`` and ``typ`` (when present) are
    strings; checked once per distinct segment, then cached."""
    header = _HEADERS.get(segment)
    if header is None:
        try:
            header = json.loads(_b64decode(segment))
        except (ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, MalformedToken):
                raise
            raise MalformedToken("en-tête illisible") from exc
        if type(header) is not dict:
            raise MalformedToken("en-tête illisible")
        for name in ("alg", "kid", "typ"):
            if name in header and type(header[name]) is not str:
                raise MalformedToken(f"en-tête : {name} doit être une chaîne")
        if len(_HEADERS) < 1024:
            _HEADERS[segment] = header
    return header


def _split(token: str) -> tuple[str, str, str]:
    if type(token) is not str or len(token) > 8192:
        raise InvalidToken("jeton absent ou trop long")
    if not token.isascii():
        raise MalformedToken("un JWS compact n'a que des caractères ASCII")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken("un JWS compact a trois parties")
    return parts[0], parts[1], parts[2]


def verify_signature(
    token: str,
    keys,
    *,
    usage: str | None = None,
    algorithms: Iterable[str] = ("ES256", "EdDSA"),
    types: Iterable[str] | None = None,
    low_s: bool = True,
) -> dict[str, Any]:
    """Check the signature only (pinned algorithms, known ``kid``); returns the payload.
    ``low_s=False`` also accepts the high-s twin of an ES256 signature (only for a caller
    that identifies the document by its content, never by its bytes).

    The three segments are decoded (strictly) before anything else, so that garbage raises
    :class:`MalformedToken` whatever the key set; a well-formed JWS that is not ours raises
    :class:`InvalidToken`."""
    header_segment, payload_segment, signature_segment = _split(token)
    header = _header(header_segment)
    payload = _json_object(_b64decode(payload_segment))
    signature = _b64decode(signature_segment)
    alg = header.get("alg")
    if alg not in tuple(algorithms):
        raise InvalidToken(f"algorithme refusé : {alg!r}")
    if types is not None and header.get("typ") not in tuple(types):
        raise InvalidToken(f"type refusé : {header.get('typ')!r}")
    key = _as_keyset(keys).get(header.get("kid"))
    if key is None:
        raise InvalidToken("clé inconnue (kid)")
    if key.alg != alg:
        raise InvalidToken("l'algorithme du jeton ne correspond pas à sa clé")
    if usage is not None and key.usage != usage:
        raise InvalidToken("cette clé ne signe pas ce type de document")
    key.check(f"{header_segment}.{payload_segment}".encode("ascii"), signature, low_s)
    return payload


def verify(
    token: str,
    keys,
    *,
    issuer: str,
    audience: str | Iterable[str],
    algorithms: Iterable[str] = ("ES256",),
    leeway: int = 0,
    now: float | None = None,
    revocations: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Verify a Datapass access token with the JWKS ``keys`` (a dict or a :class:`KeySet`);
    returns its claims or raises :class:`InvalidToken`.

    Written as one straight path (the header of each key is parsed once and cached), so that
    it costs little more than the signature check itself."""
    if type(token) is not str or len(token) > 8192:
        raise InvalidToken("jeton absent ou trop long")
    if not token.isascii():
        raise MalformedToken("un JWS compact n'a que des caractères ASCII")
    signing_input, _, signature_segment = token.rpartition(".")
    header_segment, _, payload_segment = signing_input.partition(".")
    if not header_segment or not payload_segment or "." in payload_segment:
        raise MalformedToken("un JWS compact a trois parties")
    header = _header(header_segment)
    alg = header.get("alg")
    if alg not in algorithms:
        raise InvalidToken(f"algorithme refusé : {alg!r}")
    if header.get("typ") not in ACCESS_TOKEN_TYPES:
        raise InvalidToken("typ doit valoir at+jwt (RFC 9068)")
    keyset = keys if type(keys) is KeySet else KeySet(keys)
    key = keyset.keys.get(header.get("kid"))
    if key is None:
        raise InvalidToken("clé inconnue (kid)")
    if key.alg != alg or key.usage != "token":
        raise InvalidToken("cette clé ne signe pas de jetons avec cet algorithme")
    key.check(signing_input.encode("ascii"), _b64decode(signature_segment))
    claims = _json_object(_b64decode(payload_segment))
    if claims.get("iss") != issuer:
        raise InvalidToken("émetteur (iss) inattendu")
    aud = claims.get("aud")
    if type(audience) is str:
        matches = aud == audience or (type(aud) is list and audience in aud)
    else:
        wanted = set(audience)
        matches = (
            (aud in wanted)
            if type(aud) is str
            else type(aud) is list and any(type(item) is str and item in wanted for item in aud)
        )
    if not matches:
        raise InvalidToken("audience (aud) inattendue")
    now = time.time() if now is None else now
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if type(exp) not in (int, float) or exp <= now - leeway:
        raise InvalidToken("jeton expiré (exp)")
    if nbf is not None and (type(nbf) not in (int, float) or nbf > now + leeway):
        raise InvalidToken("jeton pas encore valide (nbf)")
    for name in ("jti", "sub", "client_id", "scope"):
        if type(claims.get(name)) is not str:
            raise InvalidToken(f"revendication {name} absente")
    if revocations is not None:
        jti = claims["jti"]
        dead = {item["jti"] for item in revocations.get("revoked", [])}
        dead |= {item["jti"] for item in revocations.get("suspended", [])}
        if jti in dead:
            raise InvalidToken("jeton révoqué ou suspendu")
    return claims


class Verifier:
    """Fetches and caches the JWKS (and optionally the revocation list) of a Datapass
    instance; keeps using the last good copies when Datapass is unreachable."""

    def __init__(
        self,
        issuer: str,
        audience: str | Iterable[str],
        *,
        jwks_url: str | None = None,
        revocations_url: str | None = None,
        refresh_seconds: int = 300,
        timeout: float = 5.0,
        algorithms: Iterable[str] = ("ES256",),
    ):
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.jwks_url = jwks_url or f"{self.issuer}/.well-known/jwks.json"
        self.revocations_url = revocations_url
        self.refresh_seconds = refresh_seconds
        self.timeout = timeout
        self.algorithms = tuple(algorithms)
        self.keys: KeySet | None = None
        self.revocations: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def _get(self, url: str) -> bytes:
        if not url.startswith(("https://", "http://")):
            raise InvalidToken("URL non HTTP")
        with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310
            return response.read(1_000_000)

    def refresh(self) -> None:
        with self._lock:
            try:
                self.keys = KeySet(json.loads(self._get(self.jwks_url)))
                if self.revocations_url:
                    jws = self._get(self.revocations_url).decode()
                    payload = verify_signature(
                        jws, self.keys, usage="token", types=(REVOCATIONS_TYPE,)
                    )
                    if payload.get("iss") == self.issuer:
                        self.revocations = payload
                self._fetched_at = time.monotonic()
            except (OSError, ValueError):
                if self.keys is None:
                    raise
                # Datapass unreachable: keep the last good copies (the "plan B").

    def verify(self, token: str) -> dict[str, Any]:
        stale = time.monotonic() - self._fetched_at > self.refresh_seconds
        if self.keys is None or stale:
            self.refresh()
        try:
            return self._verify(token)
        except InvalidToken as exc:
            # An unknown kid may be a key published after our last fetch: fetch once more.
            unknown_kid = not isinstance(exc, MalformedToken) and "kid" in str(exc)
            if unknown_kid and time.monotonic() - self._fetched_at > 30:
                self.refresh()
                return self._verify(token)
            raise

    def _verify(self, token: str) -> dict[str, Any]:
        return verify(
            token,
            self.keys,
            issuer=self.issuer,
            audience=self.audience,
            algorithms=self.algorithms,
            revocations=self.revocations,
        )
