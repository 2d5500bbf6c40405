"""Access tokens and the single-use links that hand a token over."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datapass import clock
from datapass.extensions import db
from datapass.tokens import states
from datapass.tokens.states import TokenStatus

# Longer than any token Datapass issues: a longer string is refused before any lookup.
MAX_TOKEN_LENGTH = 4096
# The vault purpose under which a token waits, sealed, to be revealed once.
SEAL_TOKEN = "access-token"


class AccessToken(db.Model):
    """An access token (RFC 9068 JWT). Only its SHA-256 digest and its claims are kept; the
    JWT itself is sealed until it is revealed once, then erased."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    jti: Mapped[str] = mapped_column(String(36), unique=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the JWT
    claims: Mapped[dict] = mapped_column(JSON)
    habilitation_id: Mapped[int] = mapped_column(
        ForeignKey("habilitations.id", ondelete="CASCADE"), index=True
    )
    api_id: Mapped[int] = mapped_column(ForeignKey("apis.id"), index=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=TokenStatus.ACTIVE)
    signing_kid: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime]
    not_before: Mapped[datetime]
    expires_at: Mapped[datetime]
    grace_ends_at: Mapped[datetime | None]  # superseded: valid until then
    last_used_at: Mapped[datetime | None]
    last_used_ip: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(Text)
    suspended_at: Mapped[datetime | None]
    suspended_reason: Mapped[str | None] = mapped_column(Text)
    predecessor_id: Mapped[int | None] = mapped_column(
        ForeignKey("access_tokens.id", ondelete="SET NULL")
    )
    # The JWT sealed under the master key until it is revealed once (then NULL).
    sealed_value: Mapped[str | None] = mapped_column(Text)
    revealed_at: Mapped[datetime | None]
    issued_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Lifecycle (datapass.lifecycle): the next moment anything is due for this token
    # (reminder, expiry, grace end, unused-access step); NULL once nothing is left. The
    # scheduler selects due tokens through its index, never by scanning the table.
    # Bulk inserts (demo data sets) get "due now" too: the next sweep schedules them.
    lifecycle_due_at: Mapped[datetime | None] = mapped_column(index=True, default=clock.now)
    reactivated_at: Mapped[datetime | None]  # last lift of a suspension (unused count restarts)

    habilitation = relationship("Habilitation", foreign_keys=[habilitation_id])
    api = relationship("Api", foreign_keys=[api_id])
    organisation = relationship("Organisation", foreign_keys=[organisation_id])
    predecessor: Mapped[AccessToken | None] = relationship(
        remote_side=[id], foreign_keys=[predecessor_id]
    )

    __table_args__ = (
        CheckConstraint(
            "status IN ('active', 'suspended', 'revoked', 'expired', 'superseded')",
            name="status_known",
        ),
        Index("ix_access_tokens_status_expires", "status", "expires_at"),
        Index("ix_access_tokens_kid_expires", "signing_kid", "expires_at"),
        Index("ix_access_tokens_status_grace", "status", "grace_ends_at"),
    )

    # Questions templates ask (the rules live in states.py).
    @property
    def status_enum(self) -> TokenStatus:
        return TokenStatus(self.status)

    @property
    def scopes(self) -> list[str]:
        return (self.claims or {}).get("scope", "").split()

    @property
    def days_left(self) -> int:
        return clock.days_until(self.expires_at)

    @property
    def is_usable(self) -> bool:
        return states.is_usable(self)

    @property
    def in_grace(self) -> bool:
        return self.status == TokenStatus.SUPERSEDED and states.is_usable(self)

    def can(self, name: str, user) -> bool:
        return states.can(name, user, self)

    def can_rotate(self, user) -> bool:
        return states.can("supersede", user, self)

    def can_revoke(self, user) -> bool:
        return states.can("revoke", user, self)

    def can_suspend(self, user) -> bool:
        return states.can("suspend", user, self)

    def can_reactivate(self, user) -> bool:
        return states.can("reactivate", user, self)

    def can_reveal(self, user) -> bool:
        return states.can("reveal", user, self)

    def can_send(self, user) -> bool:
        return states.can("send", user, self)


class TokenLink(db.Model):
    """A single-use link (4 hours) that reveals a token to the technical contact once.
    Only the link secret's digest is stored."""

    __tablename__ = "token_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[int] = mapped_column(
        ForeignKey("access_tokens.id", ondelete="CASCADE"), index=True
    )
    link_digest: Mapped[str] = mapped_column(String(64), unique=True)
    recipient: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_ip: Mapped[str | None] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    token: Mapped[AccessToken] = relationship(foreign_keys=[token_id])

    @property
    def is_open(self) -> bool:
        return self.used_at is None and self.expires_at > clock.now()
