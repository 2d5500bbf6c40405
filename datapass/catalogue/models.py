"""The API catalogue: providers, their APIs and scopes, and their machine clients."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datapass import clock
from datapass.extensions import db


class ApiStatus(StrEnum):
    AVAILABLE = "available"
    MAINTENANCE = "maintenance"

    @property
    def label(self) -> str:
        return {"available": "Disponible", "maintenance": "En maintenance"}[self.value]


class RenewalPolicy(StrEnum):
    """What a renewal with nothing changed needs."""

    AUTOMATIC = "automatic"  # renewed at once
    INSTRUCTOR = "instructor"  # confirmed by an instructor first

    @property
    def label(self) -> str:
        return {"automatic": "Automatique", "instructor": "Soumis à un instructeur"}[self.value]


class Provider(db.Model):
    """An API provider (a ministry, an agency): owns APIs, machine clients and webhooks."""

    __tablename__ = "providers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(60), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    contact_email: Mapped[str] = mapped_column(String(320), default="")
    # Developers told when a webhook endpoint is disabled (comma-separated e-mails).
    developer_emails: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]

    apis: Mapped[list[Api]] = relationship(back_populates="provider", order_by="Api.name")
    clients: Mapped[list[MachineClient]] = relationship(back_populates="provider")


class Api(db.Model):
    __tablename__ = "apis"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    slug: Mapped[str] = mapped_column(String(60), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    audience: Mapped[str] = mapped_column(String(300), unique=True)  # the `aud` of its tokens
    legal_bases: Mapped[list] = mapped_column(JSON, default=list)  # [{"name", "url"}]
    coverage_note: Mapped[str] = mapped_column(Text, default="")
    fallback_procedure: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=ApiStatus.AVAILABLE)
    maintenance_message: Mapped[str | None] = mapped_column(Text)
    maintenance_start: Mapped[datetime | None]
    maintenance_end: Mapped[datetime | None]
    renewal_policy: Mapped[str] = mapped_column(String(16), default=RenewalPolicy.AUTOMATIC)
    # Unused-access grading, in days (see lifecycle): configurable per API.
    unused_never_used_warning_days: Mapped[int] = mapped_column(Integer, default=60)
    unused_warning_days: Mapped[int] = mapped_column(Integer, default=90)
    unused_suspend_days: Mapped[int] = mapped_column(Integer, default=120)
    unused_revoke_days: Mapped[int] = mapped_column(Integer, default=180)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]

    provider: Mapped[Provider] = relationship(back_populates="apis")
    scopes: Mapped[list[Scope]] = relationship(
        back_populates="api", order_by="Scope.position", cascade="all, delete-orphan"
    )

    @property
    def status_label(self) -> str:
        return ApiStatus(self.status).label

    @property
    def in_maintenance(self) -> bool:
        """Maintenance now (inside its window, or with no window)."""
        if self.status != ApiStatus.MAINTENANCE:
            return False
        now = clock.now()
        start, end = clock.as_utc(self.maintenance_start), clock.as_utc(self.maintenance_end)
        return (start is None or start <= now) and (end is None or now < end)

    @property
    def maintenance_notice(self) -> str | None:
        """What the request form and token holders are told, or None: a maintenance in
        progress or announced (its window not yet over)."""
        if self.status != ApiStatus.MAINTENANCE:
            return None
        end = clock.as_utc(self.maintenance_end)
        if end is not None and end <= clock.now():
            return None
        window = ""
        if self.maintenance_start or self.maintenance_end:
            fmt = "%d/%m/%Y à %H:%M"
            start_text = (
                clock.local(self.maintenance_start).strftime(fmt)
                if self.maintenance_start
                else "maintenant"
            )
            end_text = (
                clock.local(self.maintenance_end).strftime(fmt)
                if self.maintenance_end
                else "une date à préciser"
            )
            window = f" (du {start_text} au {end_text}, heure de Paris)"
        state = "Maintenance en cours" if self.in_maintenance else "Maintenance prévue"
        return f"{state}{window} : {self.maintenance_message or 'service perturbé.'}"

    def scope_codes(self) -> list[str]:
        return [scope.code for scope in self.scopes]

    def scope_labels(self) -> dict[str, str]:
        return {scope.code: scope.label for scope in self.scopes}

    def labels_of(self, codes) -> list[str]:
        """The labels people ticked, for scope codes (a code no longer in the catalogue is
        shown as it is)."""
        labels = self.scope_labels()
        return [labels.get(code, code) for code in codes or ()]


class Scope(db.Model):
    __tablename__ = "scopes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    api_id: Mapped[int] = mapped_column(ForeignKey("apis.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(300))
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer, default=0)

    api: Mapped[Api] = relationship(back_populates="scopes")

    __table_args__ = (UniqueConstraint("api_id", "code"),)


class MachineClient(db.Model):
    """A provider's system calling the machine API (HTTP Basic: client id + secret).

    The secret is shown once at creation and stored as a hash only.
    """

    __tablename__ = "machine_clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    client_id: Mapped[str] = mapped_column(String(80), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    provider: Mapped[Provider] = relationship(back_populates="clients")

    @property
    def api_ids(self) -> set[int]:
        return {api.id for api in self.provider.apis}
