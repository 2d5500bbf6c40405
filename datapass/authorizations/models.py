"""Authorization requests, their timeline, their documents and the habilitations they become.

A request (*demande d'habilitation*) is filled in by an organisation, instructed by the
instructors of one catalogue API and, once approved, frozen into a :class:`Habilitation`.
The state of both lives in :mod:`datapass.authorizations.states`; nothing else compares status
strings.
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
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, deferred, mapped_column, relationship

from datapass.authorizations.states import HabilitationStatus, RequestState
from datapass.extensions import db

CONTACT_ROLES: dict[str, str] = {
    "controller": "Responsable de traitement",
    "dpo": "Délégué à la protection des données (DPO)",
    "technical": "Contact technique",
    "business": "Contact métier",
}


def _in(values) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Document(db.Model):
    """An uploaded file (legal basis, homologation decision), kept in the database so that a
    deployment with several web servers needs no shared disk."""

    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(String(255))
    mime: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    # Deferred: listing documents never drags megabytes of PDF out of the database.
    content: Mapped[bytes] = deferred(mapped_column(LargeBinary))
    created_at: Mapped[datetime]


class AuthorizationRequest(db.Model):
    """A *demande d'habilitation*: one organisation asking for scopes of one API."""

    __tablename__ = "authorization_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    api_id: Mapped[int] = mapped_column(ForeignKey("apis.id"))
    # The agent in charge on the organisation's side (transferable when they leave).
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[str] = mapped_column(String(24), default=RequestState.DRAFT)
    # Bumped by every transition: decisions are conditional UPDATEs on (id, state, version),
    # so two instructors deciding at once cannot both win.
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    state_changed_at: Mapped[datetime]  # the queue sorts by waiting time since this moment
    first_submitted_at: Mapped[datetime | None]
    submitted_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    # Reminders (authorizations.tasks): each is sent once, and the archive waits for the warning.
    draft_reminder_sent_at: Mapped[datetime | None]
    changes_warning_sent_at: Mapped[datetime | None]

    # --- the form ---------------------------------------------------------------------------
    title: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    purpose: Mapped[str] = mapped_column(Text, default="")
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    legal_basis_name: Mapped[str] = mapped_column(String(500), default="")
    legal_basis_url: Mapped[str] = mapped_column(String(500), default="")
    legal_basis_document_id: Mapped[int | None] = mapped_column(
        ForeignKey("documents.id", ondelete="SET NULL")
    )
    controller_name: Mapped[str] = mapped_column(String(200), default="")
    controller_email: Mapped[str] = mapped_column(String(320), default="")
    controller_phone: Mapped[str] = mapped_column(String(40), default="")
    dpo_name: Mapped[str] = mapped_column(String(200), default="")
    dpo_email: Mapped[str] = mapped_column(String(320), default="")
    dpo_phone: Mapped[str] = mapped_column(String(40), default="")
    technical_name: Mapped[str] = mapped_column(String(200), default="")
    technical_email: Mapped[str] = mapped_column(String(320), default="")
    technical_phone: Mapped[str] = mapped_column(String(40), default="")
    business_name: Mapped[str] = mapped_column(String(200), default="")
    business_email: Mapped[str] = mapped_column(String(320), default="")
    business_phone: Mapped[str] = mapped_column(String(40), default="")
    retention_months: Mapped[int | None] = mapped_column(Integer)
    daily_volume: Mapped[int | None] = mapped_column(Integer)
    homologation_date: Mapped[date | None] = mapped_column(Date)
    homologation_authority: Mapped[str] = mapped_column(String(300), default="")
    homologation_document_id: Mapped[int | None] = mapped_column(
        ForeignKey("documents.id", ondelete="SET NULL")
    )
    terms_accepted_at: Mapped[datetime | None]
    # What was submitted last time: the next submission records its diff against it.
    submitted_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    organisation = relationship("Organisation")
    api = relationship("Api")
    requester = relationship("User", foreign_keys=[requester_id])
    legal_basis_document: Mapped[Document | None] = relationship(
        foreign_keys=[legal_basis_document_id]
    )
    homologation_document: Mapped[Document | None] = relationship(
        foreign_keys=[homologation_document_id]
    )
    events: Mapped[list[RequestEvent]] = relationship(
        back_populates="request", order_by="RequestEvent.id", cascade="all, delete-orphan"
    )
    habilitations: Mapped[list[Habilitation]] = relationship(
        back_populates="request",
        foreign_keys="Habilitation.request_id",
        order_by="Habilitation.id",
    )

    __table_args__ = (
        CheckConstraint(f"state IN ({_in(RequestState)})", name="state_known"),
        # The instructor queue: by API and state, oldest waiting first.
        Index("ix_authorization_requests_queue", "api_id", "state", "state_changed_at"),
        # …and the order of waiting: a page is read off this index without sorting, and a
        # search in titles scans it instead of the whole table.
        Index(
            "ix_authorization_requests_waiting",
            "state_changed_at",
            "id",
            "api_id",
            "state",
            "title",
        ),
        Index("ix_authorization_requests_org_state", "organisation_id", "state"),
    )

    @property
    def reference(self) -> str:
        return f"DP-{self.id:06d}"

    @property
    def display_title(self) -> str:
        return self.title or "Demande sans titre"

    def contact(self, role: str) -> dict[str, str]:
        return {
            "name": getattr(self, f"{role}_name"),
            "email": getattr(self, f"{role}_email"),
            "phone": getattr(self, f"{role}_phone"),
        }

    @property
    def active_habilitation(self) -> Habilitation | None:
        """The habilitation in force. While a validated request is reopened for an update it
        stays active, until the update is approved (it becomes obsolete) or cancelled."""
        return next(
            (h for h in reversed(self.habilitations) if h.status == HabilitationStatus.ACTIVE),
            None,
        )


class RequestEvent(db.Model):
    """One entry of a request's timeline, typed by ``kind``: a transition (its reason, note or
    field diff), a message, a transfer or a reminder. ``actor_id`` is empty only for system
    events (scheduled jobs)."""

    __tablename__ = "request_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("authorization_requests.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    actor_type: Mapped[str] = mapped_column(String(16))  # user | system
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor_label: Mapped[str] = mapped_column(String(320), default="")
    # For messages: "applicant" or "instructor", the side that wrote it.
    side: Mapped[str | None] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(24))
    to_state: Mapped[str | None] = mapped_column(String(24))
    text: Mapped[str | None] = mapped_column(Text)  # reason, note or message
    diff: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]

    request: Mapped[AuthorizationRequest] = relationship(back_populates="events")
    actor = relationship("User", foreign_keys=[actor_id])


class Habilitation(db.Model):
    """A validated request, frozen: what the organisation may access and why. Tokens are
    issued for a habilitation (``datapass.tokens``)."""

    __tablename__ = "habilitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("authorization_requests.id"), index=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    api_id: Mapped[int] = mapped_column(ForeignKey("apis.id"), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default=HabilitationStatus.ACTIVE)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)  # the request as approved
    created_at: Mapped[datetime]
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    approval_note: Mapped[str | None] = mapped_column(Text)
    obsoleted_at: Mapped[datetime | None]
    replaced_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("habilitations.id", ondelete="SET NULL")
    )
    revoked_at: Mapped[datetime | None]
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    revocation_reason: Mapped[str | None] = mapped_column(Text)

    request: Mapped[AuthorizationRequest] = relationship(
        back_populates="habilitations", foreign_keys=[request_id]
    )
    organisation = relationship("Organisation")
    api = relationship("Api")
    requester = relationship("User", foreign_keys=[requester_id])
    approved_by = relationship("User", foreign_keys=[approved_by_id])

    __table_args__ = (
        CheckConstraint(f"status IN ({_in(HabilitationStatus)})", name="status_known"),
        Index("ix_habilitations_org_status", "organisation_id", "status"),
    )

    @property
    def reference(self) -> str:
        return f"HAB-{self.id:06d}"

    @property
    def title(self) -> str:
        return self.snapshot.get("title") or "Habilitation"

    def _contact_email(self, role: str) -> str | None:
        return (self.snapshot.get("contacts", {}).get(role) or {}).get("email") or None

    @property
    def technical_contact_email(self) -> str | None:
        return self._contact_email("technical")

    @property
    def controller_email(self) -> str | None:
        """The *responsable de traitement*'s e-mail."""
        return self._contact_email("controller")

    @property
    def dpo_email(self) -> str | None:
        return self._contact_email("dpo")

    @property
    def business_contact_email(self) -> str | None:
        return self._contact_email("business")

    @property
    def requester_email(self) -> str | None:
        return self.requester.email if self.requester is not None else None

    @property
    def is_active(self) -> bool:
        return self.status == HabilitationStatus.ACTIVE

    @property
    def status_label(self) -> str:
        return HabilitationStatus(self.status).label


class MessageTemplate(db.Model):
    """A reusable text for the instructors of one API (change requests, refusals, messages)."""

    __tablename__ = "message_templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    api_id: Mapped[int] = mapped_column(ForeignKey("apis.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    api = relationship("Api")
