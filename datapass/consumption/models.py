"""The consumption tables: providers' reported calls, each token's last calls, daily counts.

No foreign keys to tokens or providers on purpose: consumption is evidence and must outlive
the rows it talks about; only the retention purge removes it.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from datapass.extensions import db


class UsageEvent(db.Model):
    """One API call reported by a provider (``POST /api/v1/usage``) or an introspection.

    Keyed — and made idempotent — by ``(provider_id, event_id)``; ``day`` is the Paris
    calendar day of the call, the unit of the daily counts and of the daily seal (its index
    serves the seal and the retention purge; rows are appended in arrival order, so it grows
    at its end). No index by token: a token's last calls are kept in :class:`UsageRecent`,
    which spares the ingest a B-tree insert per event."""

    __tablename__ = "usage_events"

    provider_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    token_id: Mapped[int] = mapped_column(Integer)
    api_id: Mapped[int] = mapped_column(Integer)
    organisation_id: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime]
    day: Mapped[date] = mapped_column(Date)
    endpoint: Mapped[str] = mapped_column(String(200))
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    caller_ip: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_usage_events_day", "day"),)


class UsageRecent(db.Model):
    """The last calls of each token (:data:`~datapass.consumption.store.RECENT_CALLS` at
    most: copies of its newest :class:`UsageEvent` rows, and its introspections, which are
    counted but not kept as events): "the last 10 calls" of the token page and the last use
    shown as unused-access evidence. Maintained by each ingest from the batch's newest calls
    of each token, then trimmed; purged with the events at retention."""

    __tablename__ = "usage_recent"

    token_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(200))
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    caller_ip: Mapped[str | None] = mapped_column(String(64))


class UsageDaily(db.Model):
    """Calls, errors (HTTP status ≥ 400) and latency per token, Paris day and endpoint."""

    __tablename__ = "usage_daily"

    token_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(200), primary_key=True)
    api_id: Mapped[int] = mapped_column(Integer)
    organisation_id: Mapped[int] = mapped_column(Integer)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms_sum: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        Index("ix_usage_daily_api_day", "api_id", "day"),
        Index("ix_usage_daily_day", "day"),
    )
