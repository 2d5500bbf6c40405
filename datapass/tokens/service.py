"""Token rules: signing keys, issuance, the token's acts, introspection, revocation, leaks.

Services flush, never commit; every act writes its audit event (with the token's digest, never
the token) and queues its mails and webhooks in the same transaction.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from flask import current_app
from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.exc import IntegrityError

from datapass import clock, vault
from datapass.accounts.models import Role as AccountRole
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.extensions import adopt, db, sqlite_read_snapshot
from datapass.tokens import states, uses
from datapass.tokens.models import AccessToken, KeyState, KeyUsage, SigningKey, TokenLink
from datapass.tokens.states import TokenStatus, TransitionError
from datapass.tokens.verify import P256_HALF_ORDER, P256_ORDER

TOKEN_TYPE = "at+jwt"
REVOCATIONS_TYPE = "datapass-revocations+jwt"
AUDIT_TYPE = "datapass-audit+jwt"
SEAL_KEY = "signing-key"
SEAL_TOKEN = "access-token"
ALGORITHMS = ("ES256", "EdDSA")
MAX_TOKEN_LENGTH = 4096
# A retired key that signed nothing (or whose tokens are all dead) stays one more day, so
# that a verifier holding a token signed in the last seconds before retirement is safe.
RETIRED_MIN_PUBLISHED = timedelta(days=1)


class TokenError(Exception):
    """A token act that cannot be done (wrong state, missing reason, closed link…)."""


# --- keys --------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_int(value: int, size: int) -> str:
    return _b64(value.to_bytes(size, "big"))


def _thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638: SHA-256 of the required members in lexicographic order."""
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


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
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}


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
    """Generate a key pair; the private half is sealed under the master key."""
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
    audit.record(
        "tokens:key:created",
        actor,
        subject=key,
        payload={
            "kid": kid,
            "usage": str(usage),
            "algorithm": algorithm,
            "state": str(state),
            "activates_at": key.activates_at.isoformat(),
        },
    )
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


def _private_key(kid: str, sealed: str | None = None, algorithm: str | None = None):
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


def _current_signer(usage: str) -> tuple[str, Any, str]:
    """(kid, private key, algorithm) of the current key: one small query per session (a
    request, a job), no unsealing (private keys are cached in-process by kid)."""
    cache = db.session.info.setdefault("dp_signers", {})
    signer = cache.get(str(usage))
    if signer is None:
        signer = cache[str(usage)] = _load_signer(usage)
    return signer


def _forget_signers() -> None:
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
    private_key, _ = _private_key(kid)
    return kid, private_key, algorithm


_HEADERS: dict[tuple[str, str, str], bytes] = {}


def _sign(payload: dict[str, Any], kid: str, private_key, algorithm: str, typ: str) -> str:
    header = _HEADERS.get((kid, algorithm, typ))
    if header is None:
        header = _b64(
            json.dumps({"alg": algorithm, "typ": typ, "kid": kid}, separators=(",", ":")).encode()
        ).encode()
        _HEADERS[(kid, algorithm, typ)] = header
    body = _b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()).encode()
    signing_input = header + b"." + body
    if algorithm == "ES256":
        r, s = decode_dss_signature(private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        if s > P256_HALF_ORDER:  # (r, n - s) verifies too: sign with the one verifiers accept
            s = P256_ORDER - s
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = private_key.sign(signing_input)
    return (signing_input + b"." + _b64(signature).encode()).decode()


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
    kid, private_key, algorithm = _current_signer(usage)
    return _sign(payload, kid, private_key, algorithm, typ)


def verify_jws(compact: str, usage: str | None = None) -> dict[str, Any]:
    """Verify a JWS made by :func:`sign_jws` against the published keys (of ``usage`` if
    given); returns its payload or raises ``ValueError``."""
    from datapass.tokens import verify as verifier

    return verifier.verify_signature(compact, jwks(), usage=usage)


def rotate_keys(
    usage: str, actor: Actor, *, immediately: bool = False, compromised: bool = False
) -> SigningKey:
    """Prepare the next key (published now, signs after ``KEY_PUBLISH_DAYS``), or, with
    ``immediately``, make a new key current at once. ``compromised`` also takes the old key
    out of the JWKS at once: tokens it signed no longer verify offline (forgeries neither)
    and must be rotated by their holders; introspection still knows them."""
    now = clock.now()
    if compromised:
        old = current_key(usage, create=False)
        new = rotate_keys(usage, actor, immediately=True)
        if old is not None:
            old.unpublished_at = now
            db.session.flush()
            audit.record("tokens:key:compromised", actor, subject=old, payload={"kid": old.kid})
        return new
    if immediately:
        # The prepared next key never signed and its private half never left the vault:
        # it can take over at once; otherwise a fresh one does.
        new = next_key(usage) or create_key(usage, actor, state=KeyState.NEXT, activates_at=now)
        new.activates_at = now
        _promote(new, actor)
        return new
    existing = next_key(usage)
    if existing is not None:
        return existing
    days = current_app.config["KEY_PUBLISH_DAYS"]
    return create_key(usage, actor, activates_at=now + timedelta(days=days))


def _promote(new: SigningKey, actor: Actor) -> None:
    now = clock.now()
    old = current_key(new.usage, create=False)
    if old is not None:
        old.state = KeyState.RETIRED
        old.retired_at = now
        db.session.flush()
        audit.record("tokens:key:retired", actor, subject=old, payload={"kid": old.kid})
    new.state = KeyState.CURRENT
    new.activated_at = now
    db.session.flush()
    _forget_signers()
    audit.record("tokens:key:activated", actor, subject=new, payload={"kid": new.kid})


def rotate_keys_if_due(actor: Actor | None = None) -> dict[str, list[str]]:
    """The scheduled rotation (idempotent): bootstrap a missing key, publish the next key
    ``KEY_PUBLISH_DAYS`` before the current one is ``KEY_ROTATION_MONTHS`` old, promote it
    when its time comes, and take out of the JWKS the retired keys nothing needs any more."""
    actor = actor or Actor.system("tokens.rotate_keys_if_due")
    config = current_app.config
    now = clock.now()
    done: dict[str, list[str]] = {"created": [], "activated": [], "unpublished": []}
    for usage in KeyUsage:
        current = current_key(usage, create=False)
        upcoming = next_key(usage)
        if current is None:
            if upcoming is not None:
                _promote(upcoming, actor)
                done["activated"].append(upcoming.kid)
            else:
                key = current_key(usage)
                done["created"].append(key.kid)
            continue
        due_at = clock.add_months(current.activated_at, config["KEY_ROTATION_MONTHS"])
        publish = timedelta(days=config["KEY_PUBLISH_DAYS"])
        if upcoming is None and now >= due_at - publish:
            try:
                with db.session.begin_nested():
                    upcoming = create_key(usage, actor, activates_at=max(due_at, now + publish))
            except IntegrityError:  # another scheduler prepared it at the same moment
                continue
            done["created"].append(upcoming.kid)
        if upcoming is not None and upcoming.activates_at <= now:
            _promote(upcoming, actor)
            done["activated"].append(upcoming.kid)
    live = set(_retired_keys_with_live_tokens())
    for key in db.session.scalars(
        select(SigningKey).where(
            SigningKey.state == KeyState.RETIRED,
            SigningKey.usage == KeyUsage.TOKEN,
            SigningKey.unpublished_at.is_(None),
        )
    ):
        if key.kid not in live and key.retired_at + RETIRED_MIN_PUBLISHED <= now:
            key.unpublished_at = now
            db.session.flush()
            audit.record("tokens:key:unpublished", actor, subject=key, payload={"kid": key.kid})
            done["unpublished"].append(key.kid)
    return done


def _retired_keys_with_live_tokens() -> list[str]:
    retired = select(SigningKey.kid).where(
        SigningKey.state == KeyState.RETIRED, SigningKey.usage == KeyUsage.TOKEN
    )
    return list(
        db.session.scalars(
            select(AccessToken.signing_kid)
            .where(AccessToken.signing_kid.in_(retired), AccessToken.expires_at > clock.now())
            .distinct()
        )
    )


def published_keys() -> list[SigningKey]:
    """Keys in the JWKS: next and current keys; retired token keys while a token they signed
    is alive (and at least one day); audit keys always (old checkpoints must stay verifiable)."""
    now = clock.now()
    live_token = exists().where(
        AccessToken.signing_kid == SigningKey.kid, AccessToken.expires_at > now
    )
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


# --- issuance ----------------------------------------------------------------------------


def _issuer() -> str:
    return current_app.config["BASE_URL"].rstrip("/")


def mint(
    habilitation,
    *,
    issued_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> tuple[dict[str, Any], str, str]:
    """Sign the JWT of a habilitation: returns (claims, raw JWT, kid). Writes nothing."""
    now = (issued_at or clock.now()).replace(microsecond=0)
    exp = expires_at or clock.add_months(now, current_app.config["TOKEN_LIFETIME_MONTHS"])
    claims = {
        "iss": _issuer(),
        "sub": str(habilitation.id),
        "client_id": str(habilitation.id),
        "aud": habilitation.api.audience,
        "siret": habilitation.organisation.siret,
        "scope": " ".join(habilitation.scopes or []),
        "jti": str(uuid.uuid4()),
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(exp.timestamp()),
    }
    kid, private_key, algorithm = _current_signer(KeyUsage.TOKEN)
    return claims, _sign(claims, kid, private_key, algorithm, TOKEN_TYPE), kid


_INSERT_TOKEN = AccessToken.__table__.insert()


def _store(
    habilitation, claims: dict[str, Any], raw: str, kid: str, actor: Actor, predecessor=None
) -> AccessToken:
    """Insert the token row with one Core statement and hand the caller the persistent
    object without a read back: every column is set here, so nothing is left to load, and
    the ORM unit of work (the largest cost of issuing) stays off the issuance path."""
    now = clock.now()
    values = {
        "jti": claims["jti"],
        "digest": vault.sha256_hex(raw),
        "claims": claims,
        "habilitation_id": habilitation.id,
        "api_id": habilitation.api_id,
        "organisation_id": habilitation.organisation_id,
        "status": TokenStatus.ACTIVE.value,
        "signing_kid": kid,
        "issued_at": _ts(claims["iat"]),
        "not_before": _ts(claims["nbf"]),
        "expires_at": _ts(claims["exp"]),
        "grace_ends_at": None,
        "last_used_at": None,
        "last_used_ip": None,
        "revoked_at": None,
        "revoked_reason": None,
        "suspended_at": None,
        "suspended_reason": None,
        "predecessor_id": predecessor.id if predecessor is not None else None,
        "sealed_value": vault.seal(raw.encode(), SEAL_TOKEN),
        "revealed_at": None,
        "issued_by_id": int(actor.id) if actor.type == "user" and actor.id else None,
        "lifecycle_due_at": now,  # the next sweep schedules its reminders
        "reactivated_at": None,
    }
    result = db.session.connection().execute(_INSERT_TOKEN, values)
    return adopt(AccessToken(id=result.inserted_primary_key[0], **values))


def _ts(value: int) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def issue_for_habilitation(
    habilitation, actor: Actor, *, predecessor: AccessToken | None = None
) -> tuple[AccessToken, str]:
    """Issue a new access token for ``habilitation`` (approval, renewal): ``exp`` is
    exactly ``TOKEN_LIFETIME_MONTHS`` calendar months after ``iat``. Returns the token row
    and the raw JWT (kept sealed on the row until revealed once).

    The first token of a habilitation also fires the ``habilitation.approved`` webhook.
    A renewal passes ``predecessor`` to link the two tokens; superseding the old one (with
    its grace period) is the caller's act (``states.apply(old, "supersede", …)``).
    """
    from datapass.notify import service as notify_service

    known = db.session.info.setdefault("dp_habilitations_with_tokens", set())
    first = habilitation.id not in known and (
        db.session.scalar(
            select(AccessToken.id).where(AccessToken.habilitation_id == habilitation.id).limit(1)
        )
        is None
    )
    known.add(habilitation.id)
    claims, raw, kid = mint(habilitation)
    token = _store(habilitation, claims, raw, kid, actor, predecessor)
    if first:  # the provider learns of the habilitation before its first token
        notify_service.queue_webhook_for_api(
            token.api_id,
            "habilitation.approved",
            habilitation_webhook_data(habilitation),
            model_type="Habilitation",
            model_id=habilitation.id,
        )
    _announce_issued(token, actor, predecessor)
    return token, raw


def _announce_issued(token: AccessToken, actor: Actor, predecessor: AccessToken | None) -> None:
    """The audit event and the provider's ``token.issued`` webhook of a new token."""
    from datapass.notify import service as notify_service

    predecessor_jti = predecessor.jti if predecessor is not None else None
    states.record_act(
        token,
        "tokens:token:issued",
        actor,
        {
            "jti": token.jti,
            "habilitation_id": token.habilitation_id,
            "kid": token.signing_kid,
            "exp": token.claims["exp"],
            "scope": token.claims["scope"],
            "predecessor_jti": predecessor_jti,
        },
    )
    notify_service.queue_webhook_for_api(
        token.api_id,
        "token.issued",
        states.token_webhook_data(token, predecessor_jti=predecessor_jti),
        model_type="AccessToken",
        model_id=token.id,
    )


def habilitation_webhook_data(habilitation, **extra: Any) -> dict[str, Any]:
    data = {
        "id": habilitation.id,
        "client_id": str(habilitation.id),
        "siret": habilitation.organisation.siret,
        "organisation": habilitation.organisation.name,
        "aud": habilitation.api.audience,
        "scopes": list(habilitation.scopes or []),
        "status": habilitation.status,
    }
    data.update({k: v for k, v in extra.items() if v is not None})
    return data


def rotate(
    token: AccessToken, actor: Actor, grace_days: int, *, role: str | None = None
) -> tuple[AccessToken, str]:
    """Replace ``token`` by a new one; the old one stays valid ``grace_days`` (0–30) days,
    then the scheduled job revokes it. The new token keeps the old one's expiry: rotating
    never postpones the 18-month renewal."""
    max_grace = current_app.config["TOKEN_MAX_GRACE_DAYS"]
    if not 0 <= grace_days <= max_grace:
        raise TokenError(f"Le délai de grâce doit être compris entre 0 et {max_grace} jours.")
    now = clock.now()
    if token.expires_at <= now:
        raise TokenError("Ce jeton a expiré : renouvelez l'habilitation.")
    habilitation = token.habilitation
    grace_end = min(now + timedelta(days=grace_days), token.expires_at)
    token.grace_ends_at = grace_end
    claims, raw, kid = mint(habilitation, expires_at=token.expires_at)
    new = _store(habilitation, claims, raw, kid, actor, predecessor=token)
    states.apply(
        token,
        "supersede",
        actor,
        role=role,
        payload={"successor_jti": new.jti, "grace_ends_at": grace_end.isoformat()},
    )
    _announce_issued(new, actor, token)
    if grace_days == 0:
        states.apply(token, "revoke", actor, role="system", reason="Rotation sans délai de grâce")
    return new, raw


def _transition(token: AccessToken, name: str, actor: Actor, reason: str | None) -> None:
    try:
        states.apply(token, name, actor, reason=reason)
    except TransitionError as exc:
        raise TokenError(str(exc)) from exc


def revoke(token: AccessToken, actor: Actor, reason: str) -> None:
    """Revoke for good (final); the holders are told."""
    _transition(token, "revoke", actor, reason)
    _mail_holders(token, "token_revoked", reason=reason)


def suspend(token: AccessToken, actor: Actor, reason: str) -> None:
    """Suspend (reversible): the token stops opening the API until reactivated."""
    _transition(token, "suspend", actor, reason)
    _mail_holders(token, "token_suspended", reason=reason)


def reactivate(token: AccessToken, actor: Actor, reason: str) -> None:
    """Lift a suspension."""
    _transition(token, "reactivate", actor, reason)
    _mail_holders(token, "token_reactivated", reason=reason)


def revoke_for_habilitation(habilitation, actor: Actor, reason: str) -> list[AccessToken]:
    """Revoking a habilitation revokes every token of it still alive (called by the
    authorizations domain, which has already checked the actor may revoke)."""
    from datapass.notify import service as notify_service

    tokens = list(
        db.session.scalars(
            select(AccessToken).where(
                AccessToken.habilitation_id == habilitation.id,
                AccessToken.status.in_(sorted(states.TRANSITIONS["revoke"].sources)),
            )
        )
    )
    for token in tokens:
        states.apply(token, "revoke", actor, reason=reason, role="habilitation")
    notify_service.queue_webhook_for_api(
        habilitation.api_id,
        "habilitation.revoked",
        habilitation_webhook_data(habilitation, reason=reason),
        model_type="Habilitation",
        model_id=habilitation.id,
    )
    return tokens


def reveal(token: AccessToken, actor: Actor) -> str:
    """Show the token once: unseal it, erase the sealed copy, audit the act."""
    if token.sealed_value is None:
        raise TokenError("Ce jeton a déjà été affiché : effectuez une rotation pour en obtenir un.")
    if not states.is_usable(token):
        raise TokenError("Ce jeton n'est plus utilisable.")
    raw = vault.unseal(token.sealed_value, SEAL_TOKEN).decode()
    token.sealed_value = None
    token.revealed_at = clock.now()
    states.record_act(
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
    states.record_act(
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
            "url": f"{_issuer()}/jetons/lien/{secret}",
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


# --- introspection (the hot path) ---------------------------------------------------------

_INTROSPECT_COLUMNS = None


def _introspect_query():
    from datapass.catalogue.models import Api

    global _INTROSPECT_COLUMNS
    if _INTROSPECT_COLUMNS is None:
        _INTROSPECT_COLUMNS = select(
            AccessToken.status,
            AccessToken.not_before,
            AccessToken.expires_at,
            AccessToken.grace_ends_at,
            AccessToken.last_used_at,
            AccessToken.claims,
            Api.provider_id,
        ).join(Api, Api.id == AccessToken.api_id)
    return _INTROSPECT_COLUMNS


# Recently read token rows, by digest, for ``INTROSPECTION_CACHE_SECONDS`` (1 s by default):
# a provider calling in a loop does not hit the database each time. Any change of a token
# made in this process drops its entry at once; a change made by another process bites
# within that delay (API Entreprise's cache: one hour).
_INTROSPECT_CACHE: dict[str, tuple[float, Any]] = {}


def forget_introspection(digest: str) -> None:
    _INTROSPECT_CACHE.pop(digest, None)


INACTIVE_BODY = '{"active":false}'
# RFC 7662 members answered for an active token, in this order, from its claims.
_INTROSPECTED_CLAIMS = (
    "scope",
    "client_id",
    "sub",
    "aud",
    "iss",
    "exp",
    "iat",
    "nbf",
    "jti",
    "siret",
)


def _active_body(claims: dict[str, Any]) -> str:
    answer: dict[str, Any] = {"active": True}
    answer.update((name, claims[name]) for name in _INTROSPECTED_CLAIMS)
    answer["token_type"] = "Bearer"
    return json.dumps(answer, separators=(",", ":"), ensure_ascii=False)


def _introspect_row(digest: str, ttl: float) -> tuple[Any, str, Any] | None:
    """The token's row, its active answer (JSON) and when it is usable
    (:func:`states.usable_window`), from the cache when fresh."""
    now = time.monotonic()
    cached = _INTROSPECT_CACHE.get(digest)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    row = db.session.execute(_introspect_query().where(AccessToken.digest == digest)).first()
    if row is None:
        return None
    window = states.usable_window(row.status, row.not_before, row.expires_at, row.grace_ends_at)
    found = (row, _active_body(row.claims), window)
    if ttl > 0:
        if len(_INTROSPECT_CACHE) > 100_000:
            _INTROSPECT_CACHE.clear()
        _INTROSPECT_CACHE[digest] = (now, found)
    return found


def introspect(raw: str | None, provider_id: int, ip: str | None = None) -> tuple[str, bool]:
    """RFC 7662 for the provider's machine client: returns the answer as JSON text and
    whether the usage buffer was written (the caller commits). Anything but a usable token
    of one of the provider's APIs answers exactly ``{"active": false}``. A hit counts as a
    use. The row, its answer and its usable window are cached together (this is the machine
    API's hot path).

    The token is found by the SHA-256 of the exact string Datapass issued, so a forged or
    altered token cannot match; no signature check is needed on this path."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH or raw.count(".") != 2:
        return INACTIVE_BODY, False
    digest = hashlib.sha256(raw.encode()).hexdigest()
    config = current_app.config
    with sqlite_read_snapshot():  # SQLite: no write lock to wait for (a sweep, a mail job)
        found = _introspect_row(digest, config.get("INTROSPECTION_CACHE_SECONDS", 1.0))
    if found is None:
        return INACTIVE_BODY, False
    row, body, window = found
    if row.provider_id != provider_id or window is None:
        return INACTIVE_BODY, False
    now = clock.now()
    if (window[0] is not None and window[0] > now) or now >= window[1]:
        return INACTIVE_BODY, False
    interval = timedelta(seconds=config["TOKEN_USE_FLUSH_SECONDS"])
    return body, uses.record_use(digest, now, ip, row.last_used_at, interval)


def find_by_raw(raw: str | None) -> AccessToken | None:
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return None
    return db.session.scalar(select(AccessToken).where(AccessToken.digest == vault.sha256_hex(raw)))


def revoke_by_client(raw: str | None, client, actor: Actor) -> bool:
    """RFC 7009 for a provider's machine client: revokes a token of one of its APIs; any
    other token (unknown, foreign, already dead) is silently ignored."""
    token = find_by_raw(raw)
    if token is None or token.api.provider_id != client.provider_id:
        return False
    if states.status_of(token) not in states.TRANSITIONS["revoke"].sources:
        return False
    states.apply(token, "revoke", actor, reason="Révoqué par le fournisseur de l'API (RFC 7009)")
    _mail_holders(token, "token_revoked", reason="Révoqué par le fournisseur de l'API")
    return True


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
    states.record_act(
        token,
        "tokens:token:leaked",
        actor,
        {"jti": token.jti, "source": (source or "")[:500], "status": token.status},
    )
    if states.status_of(token) in states.TRANSITIONS["revoke"].sources:
        states.apply(token, "revoke", actor, role="reporter", reason="Jeton signalé comme divulgué")
    _mail_holders(token, "token_leaked", source=(source or "")[:500], instructors=True)


# --- mails --------------------------------------------------------------------------------


def holder_emails(token: AccessToken) -> list[str]:
    habilitation = token.habilitation
    emails = [
        habilitation.requester_email,
        habilitation.technical_contact_email,
        habilitation.controller_email,
    ]
    return list(dict.fromkeys(e.lower() for e in emails if e))


def _mail_holders(token: AccessToken, template: str, *, instructors: bool = False, **ctx) -> None:
    from datapass.notify import service as notify_service

    recipients = holder_emails(token)
    if instructors:
        from datapass.accounts import service as accounts_service

        recipients += [
            e for e in accounts_service.instructor_emails(token.api_id) if e not in recipients
        ]
    context = {"token": token, "habilitation": token.habilitation, "api": token.api, **ctx}
    for recipient in recipients:
        notify_service.queue_mail(recipient, template, context)


# --- revocation list ----------------------------------------------------------------------


@dataclass(frozen=True)
class RevocationList:
    jws: str
    etag: str
    max_age: int


def revocation_list() -> RevocationList:
    """The signed list of revoked, unexpired tokens (and, separately, the suspended ones), so
    that a provider verifying offline keeps working from its last copy."""
    now = clock.now()
    max_age = current_app.config["REVOCATIONS_MAX_AGE"]
    rows = db.session.execute(
        select(
            AccessToken.jti,
            AccessToken.status,
            AccessToken.revoked_at,
            AccessToken.grace_ends_at,
            AccessToken.expires_at,
        )
        .where(
            AccessToken.expires_at > now,
            or_(
                AccessToken.status.in_([TokenStatus.REVOKED, TokenStatus.SUSPENDED]),
                and_(
                    AccessToken.status == TokenStatus.SUPERSEDED,
                    AccessToken.grace_ends_at <= now,
                ),
            ),
        )
        .order_by(AccessToken.jti)
    ).all()
    revoked, suspended = [], []
    for row in rows:
        if row.status == TokenStatus.SUSPENDED:
            suspended.append({"jti": row.jti, "exp": int(row.expires_at.timestamp())})
            continue
        at = row.revoked_at or row.grace_ends_at
        revoked.append(
            {
                "jti": row.jti,
                "revoked_at": int(at.timestamp()),
                "exp": int(row.expires_at.timestamp()),
            }
        )
    content = json.dumps([revoked, suspended], separators=(",", ":"), sort_keys=True)
    etag = hashlib.sha256(content.encode()).hexdigest()[:32]
    iat = int(now.timestamp())
    payload = {
        "iss": _issuer(),
        "iat": iat,
        "next_update": iat + max_age,
        "revoked": revoked,
        "suspended": suspended,
    }
    return RevocationList(sign_jws(payload, KeyUsage.TOKEN, REVOCATIONS_TYPE), etag, max_age)


# --- scoped loading for pages --------------------------------------------------------------


def visible_tokens_query(user):
    """Tokens ``user`` may see: their organisations' (verified membership), the APIs they
    instruct, every token for a security officer."""
    from datapass.accounts.models import Membership

    if user.has_role(AccountRole.SECURITY_OFFICER):
        return select(AccessToken)
    org_ids = select(Membership.organisation_id).where(
        Membership.user_id == user.id, Membership.verified.is_(True)
    )
    conditions = [AccessToken.organisation_id.in_(org_ids)]
    api_ids = user.instructed_api_ids()
    if api_ids:
        conditions.append(AccessToken.api_id.in_(api_ids))
    return select(AccessToken).where(or_(*conditions))


def organisation_tokens_query(user):
    """Tokens of the organisations ``user`` is a verified member of (the applicant list)."""
    from datapass.accounts.models import Membership

    org_ids = select(Membership.organisation_id).where(
        Membership.user_id == user.id, Membership.verified.is_(True)
    )
    return select(AccessToken).where(AccessToken.organisation_id.in_(org_ids))


def get_visible(user, token_id: int) -> AccessToken | None:
    return db.session.scalar(visible_tokens_query(user).where(AccessToken.id == token_id))
