"""The only place that reads the clock.

Everything that needs "now" calls :func:`now`. Tests freeze it with :func:`freeze` and move it
with :func:`advance`, so lifecycle rules can walk months of calendar without sleeping.
"""

from __future__ import annotations

import calendar
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")

_frozen: datetime | None = None


def now() -> datetime:
    """The current time, UTC and timezone-aware (or the frozen time in tests)."""
    return _frozen if _frozen is not None else datetime.now(UTC)


def today() -> date:
    """Today's date in Europe/Paris, the calendar users live by."""
    return now().astimezone(PARIS).date()


def set_frozen(moment: datetime | None) -> None:
    """Freeze the clock at ``moment`` (aware), or unfreeze with ``None``."""
    global _frozen
    if moment is not None and moment.tzinfo is None:
        raise ValueError("the frozen moment must be timezone-aware")
    _frozen = moment.astimezone(UTC) if moment is not None else None


@contextmanager
def freeze(moment: datetime):
    previous = _frozen
    set_frozen(moment)
    try:
        yield
    finally:
        set_frozen(previous)


def advance(delta: timedelta) -> datetime:
    """Move a frozen clock forward."""
    if _frozen is None:
        raise RuntimeError("the clock is not frozen")
    set_frozen(_frozen + delta)
    return _frozen


def as_utc(moment: datetime | None) -> datetime | None:
    """Values read back from SQLite lose their tzinfo: they are stored in UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar months: 2026-11-28 + 18 → 2028-05-28; a missing day falls back to the
    month's last day (2027-08-31 + 18 → 2029-02-28)."""
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def local(moment: datetime | None) -> datetime | None:
    """A moment as shown to people: Europe/Paris."""
    moment = as_utc(moment)
    return moment.astimezone(PARIS) if moment is not None else None


def days_until(moment: datetime) -> int:
    """Whole calendar days (Paris) from today until ``moment``'s day; negative once past."""
    return (local(moment).date() - today()).days
