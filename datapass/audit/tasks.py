"""Scheduled jobs of the audit domain (declared in ``datapass.scheduler.JOBS``).

Each is idempotent: running it twice, or from two schedulers, does each act once.
"""

from __future__ import annotations

from typing import Any

from datapass.audit import checkpoints, retention


def sign_checkpoint() -> str:
    """Sign the chain's head when the last checkpoint is older than the configured interval
    (and the head has moved)."""
    if not checkpoints.is_due():
        return "pas encore dû"
    checkpoint = checkpoints.create_checkpoint()
    return f"point de contrôle à l'événement n° {checkpoint.seq}"


def purge_expired() -> dict[str, Any] | str:
    """Remove consumption and audit events past their retention period."""
    payload = retention.purge()
    return payload if payload is not None else "rien à purger"
