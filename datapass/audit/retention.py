"""Retention: old consumption events, daily counts and audit events are purged on schedule.

The purge removes a prefix of the audit chain (every event older than the retention period,
up to the newest such one) and keeps its last hash as an *anchor*: the remaining chain starts
from it, so it still verifies. What went is recorded in an ``audit:retention:purged`` event
and in an :class:`~datapass.audit.models.AuditAnchor` row that repeats it.

The consumption tables are reached through the metadata by name: the audit domain sits below
consumption and imports none of its models.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, select

from datapass import clock
from datapass.audit import service as audit
from datapass.audit.models import (
    GENESIS_HASH,
    AuditAnchor,
    AuditCheckpoint,
    AuditEvent,
)
from datapass.audit.tags import EventTag
from datapass.extensions import db

PURGE_TAG = EventTag.Audit.RetentionPurged


def horizons(now: datetime | None = None) -> dict[str, Any]:
    """What is older than the retention periods, as of ``now``."""
    now = now or clock.now()
    config = current_app.config
    today = clock.local(now).date()
    return {
        "usage_events_before": clock.add_months(
            today, -config.get("RETENTION_USAGE_EVENTS_MONTHS", 12)
        ),
        "usage_daily_before": clock.add_months(
            today, -config.get("RETENTION_USAGE_DAILY_MONTHS", 60)
        ),
        "audit_before": clock.add_months(now, -config.get("RETENTION_AUDIT_MONTHS", 60)),
    }


def purge(actor: audit.Actor | None = None) -> dict[str, Any] | None:
    """Remove what is past retention (flushes). Returns the purge event's payload, or None
    when nothing was old enough."""
    actor = actor or audit.Actor.system("audit.retention")
    session = db.session
    session.flush()
    audit._lock_head(session)  # one purge at a time, and no append in between
    limits = horizons()
    tables = db.metadata.tables
    usage_events, usage_recent = tables["usage_events"], tables["usage_recent"]
    usage_daily = tables["usage_daily"]
    previous = audit.latest_anchor(session)
    anchor_seq = previous.anchor_seq if previous else 0
    anchor_hash = previous.anchor_hash if previous else GENESIS_HASH

    # The audit chain: a prefix only, so that what remains still links to the anchor.
    cutoff_seq = session.scalar(
        select(func.max(AuditEvent.seq)).where(AuditEvent.occurred_at < limits["audit_before"])
    )
    audit_removed = 0
    from_seq = None
    if cutoff_seq is not None and cutoff_seq > anchor_seq:
        from_seq = anchor_seq + 1
        new_hash = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == cutoff_seq))
        audit_removed = session.execute(
            delete(AuditEvent).where(AuditEvent.seq <= cutoff_seq)
        ).rowcount
        anchor_seq, anchor_hash = cutoff_seq, new_hash
    checkpoints_removed = session.execute(
        delete(AuditCheckpoint).where(AuditCheckpoint.seq < anchor_seq)
    ).rowcount
    events_removed = session.execute(
        delete(usage_events).where(usage_events.c.day < limits["usage_events_before"])
    ).rowcount
    # The last calls kept per token are copies of events: they go with them.
    session.execute(
        delete(usage_recent).where(
            usage_recent.c.occurred_at
            < datetime.combine(limits["usage_events_before"], time(), tzinfo=clock.PARIS)
        )
    )
    daily_removed = session.execute(
        delete(usage_daily).where(usage_daily.c.day < limits["usage_daily_before"])
    ).rowcount
    if not (audit_removed or events_removed or daily_removed):
        return None
    payload = {
        "audit_events": {
            "removed": audit_removed,
            "from_seq": from_seq,
            "to_seq": anchor_seq if audit_removed else None,
            "anchor_seq": anchor_seq,
            "anchor_hash": anchor_hash,
            "before": limits["audit_before"].isoformat(),
        },
        "usage_events": {
            "removed": events_removed,
            "before": limits["usage_events_before"].isoformat(),
        },
        "usage_daily": {
            "removed": daily_removed,
            "before": limits["usage_daily_before"].isoformat(),
        },
        "checkpoints_removed": checkpoints_removed,
    }
    event = audit.record(PURGE_TAG, actor, payload=payload)
    session.add(
        AuditAnchor(
            purged_at=clock.now(),
            purge_seq=event.seq,
            anchor_seq=anchor_seq,
            anchor_hash=anchor_hash,
            audit_events_removed=audit_removed,
            usage_events_before=limits["usage_events_before"],
            usage_events_removed=events_removed,
            usage_daily_before=limits["usage_daily_before"],
            usage_daily_removed=daily_removed,
        )
    )
    session.flush()
    return payload
