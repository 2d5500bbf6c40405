"""The heartbeats of the scheduled jobs and of the scheduler itself (``job_heartbeats``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from datapass.extensions import db

# The row of the scheduler process itself (no job of ``JOBS`` bears this name): its start in
# ``started_at``, its last sign of life in ``ended_at``.
SCHEDULER = "_scheduler"


class Outcome(StrEnum):
    RUNNING = "running"
    OK = "ok"
    ERROR = "error"

    @property
    def label(self) -> str:
        return {"running": "En cours", "ok": "Réussie", "error": "En échec"}[self.value]

    @property
    def badge(self) -> str:
        return {"running": "info", "ok": "success", "error": "error"}[self.value]


class JobHeartbeat(db.Model):
    """One row per scheduled job: its last run (start, end, outcome, duration)."""

    __tablename__ = "job_heartbeats"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(8), default=Outcome.RUNNING)
    message: Mapped[str | None] = mapped_column(String(300))  # short, never a secret
    duration_ms: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint("outcome IN ('running', 'ok', 'error')", name="outcome_known"),
    )

    @property
    def outcome_enum(self) -> Outcome:
        return Outcome(self.outcome)
