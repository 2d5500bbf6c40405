"""People, organisations, memberships and roles."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from flask_login import UserMixin
from sqlalchemy import (
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


class Role(StrEnum):
    """Staff roles. Applicants hold no role: they act through their organisations."""

    INSTRUCTOR = "instructor"
    SECURITY_OFFICER = "security_officer"
    ADMIN = "admin"

    @property
    def label(self) -> str:
        return ROLE_LABELS[self]


ROLE_LABELS = {
    Role.INSTRUCTOR: "Instructeur",
    Role.SECURITY_OFFICER: "Officier de sécurité",
    Role.ADMIN: "Administrateur",
}


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalised, lower-case
    full_name: Mapped[str] = mapped_column(String(200), default="")
    phone: Mapped[str | None] = mapped_column(String(40))
    password_hash: Mapped[str | None] = mapped_column(String(255))  # None until set (invite)
    is_active_account: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped on password change and deactivation: every session carrying an older value
    # is signed out at its next request.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]
    password_changed_at: Mapped[datetime | None]
    deactivated_at: Mapped[datetime | None]
    totp_secret_sealed: Mapped[str | None] = mapped_column(Text)  # AES-GCM under master key
    mfa_enabled_at: Mapped[datetime | None]
    last_totp_step: Mapped[int | None] = mapped_column(Integer)  # refuses a replayed code
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    current_organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id", ondelete="SET NULL")
    )

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan", foreign_keys="Membership.user_id"
    )
    role_grants: Mapped[list[RoleGrant]] = relationship(
        back_populates="user", cascade="all, delete-orphan", foreign_keys="RoleGrant.user_id"
    )
    current_organisation: Mapped[Organisation | None] = relationship(
        foreign_keys=[current_organisation_id]
    )

    # Flask-Login
    @property
    def is_active(self) -> bool:  # type: ignore[override]
        return self.is_active_account

    def get_id(self) -> str:
        # The epoch travels in the session: bumping it invalidates every live session.
        return f"{self.id}:{self.session_epoch}"

    @property
    def mfa_enabled(self) -> bool:
        return self.mfa_enabled_at is not None

    def has_role(self, role: str) -> bool:
        return any(grant.role == role for grant in self.role_grants)

    @property
    def roles(self) -> set[str]:
        return {grant.role for grant in self.role_grants}

    @property
    def is_staff(self) -> bool:
        return bool(self.role_grants)

    def instructed_api_ids(self) -> set[int]:
        return {
            g.api_id for g in self.role_grants if g.role == Role.INSTRUCTOR and g.api_id is not None
        }

    @property
    def organisations(self) -> list[Organisation]:
        return [m.organisation for m in self.memberships]

    def membership(self, organisation_id: int) -> Membership | None:
        """This person's membership of one organisation, if any."""
        return next((m for m in self.memberships if m.organisation_id == organisation_id), None)

    @property
    def display_name(self) -> str:
        return self.full_name or self.email


class Organisation(db.Model):
    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    siret: Mapped[str] = mapped_column(String(14), unique=True)
    name: Mapped[str] = mapped_column(String(250))
    address: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime]

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="organisation", cascade="all, delete-orphan"
    )

    __table_args__ = (CheckConstraint("length(siret) = 14", name="siret_length"),)


class Membership(db.Model):
    __tablename__ = "memberships"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    # A verified member sees every request of the organisation; others only their own.
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]

    user: Mapped[User] = relationship(back_populates="memberships", foreign_keys=[user_id])
    organisation: Mapped[Organisation] = relationship(back_populates="memberships")

    __table_args__ = (UniqueConstraint("user_id", "organisation_id"),)


class RoleGrant(db.Model):
    """A staff role. An instructor's grant is scoped to one catalogue API (``api_id``)."""

    __tablename__ = "role_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(32))
    api_id: Mapped[int | None] = mapped_column(ForeignKey("apis.id", ondelete="CASCADE"))
    granted_at: Mapped[datetime]
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    user: Mapped[User] = relationship(back_populates="role_grants", foreign_keys=[user_id])
    api = relationship("Api")

    __table_args__ = (
        UniqueConstraint("user_id", "role", "api_id"),
        CheckConstraint("role IN ('instructor', 'security_officer', 'admin')", name="role_known"),
        CheckConstraint("(role = 'instructor') = (api_id IS NOT NULL)", name="instructor_scoped"),
    )


class RecoveryCode(db.Model):
    """One of ten single-use TOTP recovery codes, stored hashed."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None]


class LoginFailure(db.Model):
    """A failed sign-in, kept for the sliding-window rate limit (per account, per address)."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime]
    email_key: Mapped[str] = mapped_column(String(64))  # HMAC of the e-mail, never the e-mail
    ip: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_login_failures_email", "email_key", "at"),
        Index("ix_login_failures_ip", "ip", "at"),
    )
