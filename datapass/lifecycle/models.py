"""What the lifecycle remembers: every act done (or skipped) on a token, renewals, digests.

Exactly-once comes from unique constraints: an act is a ``(token_id, key)`` row inserted in
the same transaction as the mail, webhook or state change it stands for, so a second
scheduler, a re-run after a crash or a catch-up after downtime can never do it twice.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    inspect,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datapass import clock
from datapass.extensions import db
from datapass.lifecycle import states
from datapass.lifecycle.states import RenewalStatus
from datapass.tokens import states as token_states
from datapass.tokens.models import AccessToken


class LifecycleAct(db.Model):
    """One scheduled act on one token: a reminder stage, the expiry, the end of a grace
    period, an unused-access step, the closing of the habilitation, a self-reactivation.

    ``outcome``: ``done`` (it happened), ``skipped`` (it fell due during downtime and a
    later stage replaced it) or ``void`` (no longer applicable when it fell due)."""

    __tablename__ = "lifecycle_acts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("access_tokens.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(80))  # e.g. "reminder:30", "unused:suspend:…"
    kind: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime]  # when it was due
    at: Mapped[datetime]  # when the scheduler (or a person) did it
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        UniqueConstraint("token_id", "key", name="uq_lifecycle_acts_token_key"),
        CheckConstraint("outcome IN ('done', 'skipped', 'void')", name="outcome_known"),
        Index("ix_lifecycle_acts_kind_at", "kind", "at"),
    )


class Renewal(db.Model):
    """A renewal asked through the wizard: the attestations, what changed, and how it ended
    (a new token, an instructor's confirmation, or a reopened request)."""

    __tablename__ = "renewals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("access_tokens.id", ondelete="CASCADE"))
    habilitation_id: Mapped[int] = mapped_column(
        ForeignKey("habilitations.id", ondelete="CASCADE"), index=True
    )
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    api_id: Mapped[int] = mapped_column(ForeignKey("apis.id"), index=True)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default=RenewalStatus.PENDING)
    attestations: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("authorization_requests.id", ondelete="SET NULL")
    )
    new_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("access_tokens.id", ondelete="SET NULL")
    )
    grace_ends_at: Mapped[datetime | None]  # of the old token
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decision_note: Mapped[str | None] = mapped_column(Text)

    token: Mapped[AccessToken] = relationship(foreign_keys=[token_id])
    new_token: Mapped[AccessToken | None] = relationship(foreign_keys=[new_token_id])
    habilitation = relationship("Habilitation", foreign_keys=[habilitation_id])
    api = relationship("Api", foreign_keys=[api_id])
    organisation = relationship("Organisation", foreign_keys=[organisation_id])
    requested_by = relationship("User", foreign_keys=[requested_by_id])

    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'reopened', 'completed', 'refused', 'cancelled')",
            name="status_known",
        ),
        Index("ix_renewals_status_decided", "status", "decided_at"),
    )

    @property
    def status_enum(self) -> RenewalStatus:
        return RenewalStatus(self.status)

    @property
    def is_open(self) -> bool:
        return states.is_open(self)


class DigestSent(db.Model):
    """The instructors' daily digest: one row per instructor and Paris day (sent once)."""

    __tablename__ = "lifecycle_digests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    at: Mapped[datetime]
    items: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (UniqueConstraint("user_id", "day", name="uq_lifecycle_digests_user_day"),)


# --- keeping ``AccessToken.lifecycle_due_at`` honest ------------------------------------------
# Other domains change tokens (issuance, rotation, suspension, revocation…). Whatever they do,
# the token is looked at by the next sweep: a new token, or one whose status or grace end
# changed, becomes due now unless the lifecycle itself has just set its next moment. Being
# due too early only costs a recomputation; being due too late would miss an act.

_WATCHED = ("status", "grace_ends_at", "expires_at", "reactivated_at")


@event.listens_for(AccessToken, "before_insert")
def _due_on_insert(_mapper, _connection, token: AccessToken) -> None:
    if token.lifecycle_due_at is None and not token_states.is_revoked(token.status):
        token.lifecycle_due_at = clock.now()


@event.listens_for(AccessToken, "before_update")
def _due_on_update(_mapper, _connection, token: AccessToken) -> None:
    state = inspect(token)
    if state.attrs.lifecycle_due_at.history.has_changes():
        return
    if any(state.attrs[name].history.has_changes() for name in _WATCHED):
        now = clock.now()
        current = token.lifecycle_due_at
        if current is None or current > now:
            token.lifecycle_due_at = now
