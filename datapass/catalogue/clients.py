"""Machine clients' credentials: issued, checked, forgotten.

:func:`authenticate_client` is on the machine API's hot path (every introspection calls it):
it is written for speed (a fast hash of a random secret, an in-process cache) and keeps its
code as it is."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select

from datapass import clock, vault
from datapass.catalogue.models import MachineClient, Provider
from datapass.extensions import db

CLIENT_SECRET_PREFIX = "dps_"


def hash_client_secret(secret: str) -> str:
    # The secret carries 256 random bits: a fast hash is enough and keeps the machine API's
    # hot path cheap (a memory-hard hash protects guessable passwords, not random keys).
    return vault.sha256_hex(secret)


def create_client(provider: Provider, name: str) -> tuple[MachineClient, str]:
    """A new machine client; returns it with its secret, which is never shown again."""
    secret = CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)
    client_id = f"{provider.slug}-{secrets.token_hex(6)}"
    return new_client(provider, client_id, secret, name), secret


def new_client(provider: Provider, client_id: str, secret: str, name: str) -> MachineClient:
    client = MachineClient(
        provider=provider,
        client_id=client_id,
        secret_hash=hash_client_secret(secret),
        name=name,
        created_at=clock.now(),
    )
    db.session.add(client)
    db.session.flush()
    return client


@dataclass(frozen=True)
class AuthenticatedClient:
    """What the machine API needs of the caller: detached from any session, so it can be
    cached between requests."""

    id: int
    client_id: str
    name: str
    provider_id: int


# Successful authentications, by client id, for CLIENT_AUTH_CACHE_SECONDS: the machine API's
# hot path (introspection) then touches no database. Revoking a client drops its entry in
# this process at once; other processes forget it within that delay.
_AUTH_CACHE: dict[str, tuple[float, str, AuthenticatedClient]] = {}
_AUTH_CACHE_LOCK = threading.Lock()


def authenticate_client(client_id: str | None, secret: str | None) -> AuthenticatedClient | None:
    """The machine client with these credentials, or None (constant-time comparison)."""
    if not client_id or not secret or len(client_id) > 80 or len(secret) > 200:
        return None
    presented = hash_client_secret(secret)
    now = time.monotonic()
    cached = _AUTH_CACHE.get(client_id)
    if cached is not None and now < cached[0] and hmac.compare_digest(cached[1], presented):
        return cached[2]
    client = db.session.scalar(select(MachineClient).where(MachineClient.client_id == client_id))
    expected = client.secret_hash if client is not None else "0" * 64
    matches = hmac.compare_digest(expected, presented)
    if client is None or not matches or client.revoked_at is not None:
        return None
    found = AuthenticatedClient(client.id, client.client_id, client.name, client.provider_id)
    ttl = current_app.config["CLIENT_AUTH_CACHE_SECONDS"]
    if ttl > 0:
        with _AUTH_CACHE_LOCK:
            if len(_AUTH_CACHE) > 10_000:
                _AUTH_CACHE.clear()
            _AUTH_CACHE[client_id] = (now + ttl, client.secret_hash, found)
    return found


def forget_client(client_id: str) -> None:
    """Drop a client's cached authentication (revocation)."""
    with _AUTH_CACHE_LOCK:
        _AUTH_CACHE.pop(client_id, None)
