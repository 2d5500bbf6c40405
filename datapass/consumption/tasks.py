"""Scheduled jobs of the consumption domain (declared in ``datapass.scheduler.JOBS``).

Each is idempotent: running it twice, or from two schedulers, does each act once.
"""

from __future__ import annotations

from datapass.consumption import seal


def seal_consumption() -> str:
    """Seal every finished day of consumption into the audit chain (one seal per day)."""
    days = seal.seal_finished_days()
    if not days:
        return "rien à sceller"
    return f"{len(days)} journée(s) scellée(s), jusqu'au {days[-1].isoformat()}"
