"""Catalogue rules: APIs, scopes, providers and their machine clients."""

from __future__ import annotations

import hmac
import secrets

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
    client = MachineClient(
        provider=provider,
        client_id=f"{provider.slug}-{secrets.token_hex(6)}",
        secret_hash=hash_client_secret(secret),
        name=name,
        created_at=clock.now(),
    )
    db.session.add(client)
    db.session.flush()
    return client, secret


def authenticate_client(client_id: str | None, secret: str | None) -> MachineClient | None:
    """The machine client with these credentials, or None (constant-time comparison)."""
    if not client_id or not secret or len(client_id) > 80 or len(secret) > 200:
        return None
    client = db.session.scalar(select(MachineClient).where(MachineClient.client_id == client_id))
    expected = client.secret_hash if client is not None else "0" * 64
    matches = hmac.compare_digest(expected, hash_client_secret(secret))
    if client is None or not matches or client.revoked_at is not None:
        return None
    return client
