"""Outboxes: what must leave Datapass is written in the same transaction as its cause."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datapass.extensions import db


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed by a worker until ``lease_until``, then claimable again
    SENT = "sent"
    FAILED = "failed"  # refused for good (or, for webhooks, too many attempts); replayable

    @property
    def label(self) -> str:
        return {
            "pending": "En attente",
            "sending": "En cours d'envoi",
            "sent": "Envoyé",
            "failed": "Abandonné",
        }[self.value]

    @property
    def badge(self) -> str:
        return {"pending": "info", "sending": "new", "sent": "success", "failed": "error"}[
            self.value
        ]


class MailBody(db.Model):
    """The text and HTML of one message, written once and shared by the outbox rows of its
    recipients (a reminder goes to three people: one body, three rows). Nothing personal to
    one recipient goes in it: the unsubscribe link is added per recipient when sending."""

    __tablename__ = "mail_bodies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)


class OutboxMail(db.Model):
    """One message to one recipient, in the outbox."""

    __tablename__ = "outbox_mails"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime]
    template: Mapped[str] = mapped_column(String(80))
    recipient: Mapped[str] = mapped_column(String(320), index=True)
    subject: Mapped[str] = mapped_column(String(300))
    body_id: Mapped[int] = mapped_column(ForeignKey("mail_bodies.id"))
    # Optional mails carry a one-click unsubscribe (RFC 8058) for this category.
    category: Mapped[str | None] = mapped_column(String(60))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    # While ``sending``: the claim of one worker; past it, the row may be claimed again.
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    message_id: Mapped[str] = mapped_column(String(200), unique=True)

    body: Mapped[MailBody] = relationship()

    __table_args__ = (Index("ix_outbox_mails_due", "status", "next_attempt_at"),)

    @property
    def body_text(self) -> str:
        return self.body.body_text

    @property
    def body_html(self) -> str:
        return self.body.body_html

    @property
    def status_enum(self) -> DeliveryStatus:
        return DeliveryStatus(self.status)

    @property
    def can_replay(self) -> bool:
        return self.status == DeliveryStatus.FAILED


class Unsubscription(db.Model):
    """A recipient who asked for no more optional mails of one category."""

    __tablename__ = "unsubscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(320))
    category: Mapped[str] = mapped_column(String(60))
    at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("recipient", "category"),)


# --- webhooks to API providers -------------------------------------------------------------

WEBHOOK_EVENTS = (
    "habilitation.approved",
    "habilitation.revoked",
    "token.issued",
    "token.rotated",
    "token.suspended",
    "token.reactivated",
    "token.revoked",
    "token.expired",
    "token.expiring",
)


class EndpointState(StrEnum):
    DRAFT = "draft"  # configured, its signed test ping has not succeeded yet
    ENABLED = "enabled"  # receives deliveries
    DISABLED = "disabled"  # by hand, or after N failures in a row; deliveries wait

    @property
    def label(self) -> str:
        return {"draft": "À tester", "enabled": "Actif", "disabled": "Désactivé"}[self.value]


class WebhookEndpoint(db.Model):
    """A provider's webhook receiver. The shared secret is sealed under the master key."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_id: Mapped[int] = mapped_column(
        ForeignKey("providers.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(500))
    secret_sealed: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every event
    state: Mapped[str] = mapped_column(String(16), default=EndpointState.DRAFT)
    # The ping proves the receiver checks this URL + secret; changing either resets it.
    verified_at: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    provider = relationship("Provider")

    __table_args__ = (
        CheckConstraint("state IN ('draft', 'enabled', 'disabled')", name="state_known"),
    )

    @property
    def state_label(self) -> str:
        return EndpointState(self.state).label

    @property
    def state_badge(self) -> str:
        return {"draft": "info", "enabled": "success", "disabled": "error"}[self.state]

    @property
    def is_enabled(self) -> bool:
        return self.state == EndpointState.ENABLED

    @property
    def can_enable(self) -> bool:
        """Its signed ping succeeded, after its disabling if it was disabled."""
        if self.state == EndpointState.ENABLED or self.verified_at is None:
            return False
        return self.disabled_at is None or self.verified_at > self.disabled_at

    @property
    def can_disable(self) -> bool:
        return self.state == EndpointState.ENABLED

    def wants(self, event: str) -> bool:
        return not self.events or event in self.events


class WebhookDelivery(db.Model):
    """One event for one endpoint, in the outbox. ``body`` is the exact JSON signed."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    delivery_id: Mapped[str] = mapped_column(String(36), unique=True)
    event: Mapped[str] = mapped_column(String(40))
    model_type: Mapped[str | None] = mapped_column(String(40))
    model_id: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]  # as OutboxMail.lease_until
    delivered_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)

    endpoint: Mapped[WebhookEndpoint] = relationship()
    attempt_log: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="delivery",
        order_by="WebhookAttempt.id.desc()",
        cascade="all, delete-orphan",
    )

    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    @property
    def status_label(self) -> str:
        return {
            "pending": "En attente",
            "sending": "En cours de livraison",
            "sent": "Livrée",
            "failed": "Abandonnée",
        }[self.status]

    @property
    def waits_for_retry(self) -> bool:
        return self.status == DeliveryStatus.PENDING and self.attempts > 0


class WebhookAttempt(db.Model):
    """Every attempt of a delivery, with what the receiver answered."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    # Nothing of the answer's body is kept: it may come from wherever a redirect pointed.
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    success: Mapped[bool] = mapped_column(Boolean, default=False)

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="attempt_log")
