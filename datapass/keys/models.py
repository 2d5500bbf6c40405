"""The signing keys: their table (``signing_keys``) and the states and usages of a key."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, CheckConstraint, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from datapass.extensions import db


class KeyState(StrEnum):
    NEXT = "next"  # published in the JWKS, does not sign yet
    CURRENT = "current"  # signs
    RETIRED = "retired"  # published while tokens it signed are alive


class KeyUsage(StrEnum):
    TOKEN = "token"  # access tokens and the revocation list
    AUDIT = "audit"  # audit checkpoints and export manifests (one key, one usage)


class SigningKey(db.Model):
    """An asymmetric signing key. The private half is sealed (AES-GCM under the master key);
    ``kid`` is the RFC 7638 thumbprint of the public half."""

    __tablename__ = "signing_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    usage: Mapped[str] = mapped_column(String(8), default=KeyUsage.TOKEN)
    algorithm: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(8))
    private_key_sealed: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime]
    activates_at: Mapped[datetime]  # when a `next` key becomes `current`
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]
    unpublished_at: Mapped[datetime | None]  # left the JWKS (no live token left)

    __table_args__ = (
        CheckConstraint("state IN ('next', 'current', 'retired')", name="state_known"),
        CheckConstraint("usage IN ('token', 'audit')", name="usage_known"),
        CheckConstraint("algorithm IN ('ES256', 'EdDSA')", name="algorithm_known"),
        Index("ix_signing_keys_usage_state", "usage", "state"),
        # One current key per usage, even with two schedulers bootstrapping at once.
        Index(
            "uq_signing_keys_current",
            "usage",
            unique=True,
            sqlite_where=text("state = 'current'"),
            postgresql_where=text("state = 'current'"),
        ),
        # …and one next key per usage (two schedulers preparing the rotation at once).
        Index(
            "uq_signing_keys_next",
            "usage",
            unique=True,
            sqlite_where=text("state = 'next'"),
            postgresql_where=text("state = 'next'"),
        ),
    )

    @property
    def state_label(self) -> str:
        return {"next": "Suivante", "current": "Courante", "retired": "Retirée"}[self.state]
