"""Scheduled jobs of the lifecycle (declared in :mod:`datapass.scheduler`)."""

from __future__ import annotations

from datapass.lifecycle import digest, sweep


def token_lifecycle() -> dict[str, int]:
    """Reminders, expiry, grace ends, unused-access steps and closings that fell due: only
    the due tokens are read (index on ``lifecycle_due_at``); commits chunk by chunk."""
    return sweep.sweep_tokens()


def instructor_digest() -> dict[str, int]:
    """The instructors' daily digest (once per Paris day, from ``LIFECYCLE_DIGEST_HOUR``)."""
    return digest.send_digests()
