"""The master key: secrets at rest are sealed with AES-GCM under keys derived from it.

One derived key per usage (HKDF with a distinct ``info``), so a key never serves two purposes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

_VERSION = b"v1"


def derive(purpose: str, master: bytes | None = None) -> bytes:
    """A 32-byte key for one ``purpose`` (e.g. ``"audit-hmac"``), derived from the master key."""
    master = master if master is not None else current_app.config["MASTER_KEY_BYTES"]
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"datapass", info=purpose.encode()
    ).derive(master)


def seal(plaintext: bytes, purpose: str) -> str:
    """Encrypt ``plaintext`` for ``purpose``; the purpose is bound as associated data."""
    nonce = os.urandom(12)
    box = AESGCM(derive(f"seal:{purpose}")).encrypt(nonce, plaintext, purpose.encode())
    return (_VERSION + b"." + base64.urlsafe_b64encode(nonce + box)).decode()


def unseal(sealed: str, purpose: str) -> bytes:
    version, _, body = sealed.encode().partition(b".")
    if version != _VERSION:
        raise ValueError("unknown sealed format")
    raw = base64.urlsafe_b64decode(body)
    return AESGCM(derive(f"seal:{purpose}")).decrypt(raw[:12], raw[12:], purpose.encode())


def keyed_digest(value: str, purpose: str) -> str:
    """HMAC-SHA256 of ``value`` under a key derived for ``purpose``: lets equal secrets be
    matched without ever storing them (audit payloads, lookups)."""
    return hmac.new(derive(f"hmac:{purpose}"), value.encode(), hashlib.sha256).hexdigest()


def sha256_hex(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()
