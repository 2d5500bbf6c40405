"""Calendar days of the lifecycle: a step "on day D" is due at 00:00 (Europe/Paris) on D."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from datapass import clock


@lru_cache(maxsize=8192)
def day_start(day: date) -> datetime:
    """00:00 in Paris on ``day``, as an aware UTC moment."""
    return datetime.combine(day, time(0), tzinfo=clock.PARIS).astimezone(UTC)


def paris_day(moment: datetime) -> date:
    return clock.local(moment).date()


def format_day(moment: datetime | date | None) -> str:
    """``31/07/2028`` (Paris day): what mails print, without strftime's cost in a sweep."""
    if moment is None:
        return "—"
    day = paris_day(moment) if isinstance(moment, datetime) else moment
    return f"{day.day:02d}/{day.month:02d}/{day.year}"


def days_after(moment: datetime, days: int) -> datetime:
    return day_start(paris_day(moment) + timedelta(days=days))
