"""The daily seal: each finished Paris day of consumption sealed into the audit chain (counts
and digests of its events and counts), so that consumption history cannot be rewritten
unnoticed, and its lock, which keeps every writer of consumption (the ingest, the
introspection flush, the demo) out of sealed days; late events for a sealed day are refused
and counted as refused (:data:`REFUSED_LATE`)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy
from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from datapass import clock, signals
from datapass.audit import service as audit
from datapass.audit.models import AuditAnchor, AuditEvent
from datapass.audit.tags import EventTag
from datapass.consumption.store import DAILY, EVENTS, paris_day
from datapass.extensions import db

SEAL_TAG = EventTag.Audit.ConsumptionSealed
SEAL_SUBJECT = "usage_day"

# PostgreSQL advisory lock that keeps consumption out of sealed days: every writer of
# consumption holds it shared for its transaction and reads the last sealed day under it;
# the seal holds it exclusive (after the chain's head), so it waits for writers in flight and
# they wait for it. On SQLite every transaction that may write holds the write lock
# from its start (``BEGIN IMMEDIATE``; read snapshots write nothing), which already
# serialises them.
SEAL_LOCK_ID = int.from_bytes(b"dp:usage", "big")

log = logging.getLogger("datapass.consumption")

# Events and introspection calls refused because their day was already sealed, since this
# process started, by source ("usage": a provider's report, "introspect": the use buffer).
# Counted when the transaction that refused them commits (a retried one counts once).
REFUSED_LATE: Counter[str] = Counter()
_REFUSED_LOCK = threading.Lock()
_PENDING_LATE = "datapass.usage_refused_late"


def last_sealed_day() -> date | None:
    """The latest Paris day already sealed into the chain (later events are refused).

    Only a hint outside the seal's lock: writers call :func:`lock_for_writing` instead."""
    events = AuditEvent.__table__
    value = db.session.connection().scalar(
        select(func.max(events.c.subject_id)).where(events.c.subject_type == SEAL_SUBJECT)
    )
    return date.fromisoformat(value) if value else None


def _seal_lock(*, exclusive: bool) -> None:
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        connection.exec_driver_sql(f"SELECT {function}({SEAL_LOCK_ID})")


def lock_for_writing() -> date | None:
    """Take the seal's lock as a writer of consumption (until the transaction ends) and
    return the last sealed day, read under it: nothing written in this transaction for a
    later day can be sealed before it commits, and no seal can come in between.

    Call it before writing any row (counts, events, last calls): the seal takes the chain's
    head then this lock, so a writer that held a row the seal reads would wait in a cycle."""
    _seal_lock(exclusive=False)
    return last_sealed_day()


def note_refused_late(source: str, count: int) -> None:
    if count:
        pending = db.session.info.setdefault(_PENDING_LATE, Counter())
        pending[source] += count


@sqlalchemy.event.listens_for(Session, "after_commit")
def _count_refused_late(session: Session) -> None:
    pending = session.info.pop(_PENDING_LATE, None)
    if pending:
        with _REFUSED_LOCK:
            REFUSED_LATE.update(pending)
        for source, count in pending.items():
            log.warning("%d %s event(s) refused: their day is already sealed", count, source)


@sqlalchemy.event.listens_for(Session, "after_rollback")
def _forget_refused_late(session: Session) -> None:
    session.info.pop(_PENDING_LATE, None)


def _event_lines(day: date) -> Iterator[str]:
    query = (
        select(
            EVENTS.c.provider_id,
            EVENTS.c.event_id,
            EVENTS.c.token_id,
            EVENTS.c.occurred_at,
            EVENTS.c.endpoint,
            EVENTS.c.status,
            EVENTS.c.latency_ms,
            EVENTS.c.caller_ip,
        )
        .where(EVENTS.c.day == day)
        .order_by(EVENTS.c.provider_id, EVENTS.c.event_id)
    )
    for provider_id, event_id, token_id, at, endpoint, status, latency, ip in db.session.execute(
        query.execution_options(yield_per=5000)
    ):
        yield json.dumps(
            [provider_id, event_id, token_id, audit._iso(at), endpoint, status, latency, ip],
            ensure_ascii=False,
            separators=(",", ":"),
        )


def _daily_lines(day: date) -> Iterator[tuple[str, tuple]]:
    query = (
        select(
            DAILY.c.token_id,
            DAILY.c.endpoint,
            DAILY.c.api_id,
            DAILY.c.organisation_id,
            DAILY.c.calls,
            DAILY.c.errors,
            DAILY.c.latency_ms_sum,
        )
        .where(DAILY.c.day == day)
        .order_by(DAILY.c.token_id, DAILY.c.endpoint)
    )
    for row in db.session.execute(query):
        yield json.dumps(list(row), ensure_ascii=False, separators=(",", ":")), tuple(row)


def day_summary(day: date) -> dict[str, Any]:
    """What the seal of ``day`` records: counts and SHA-256 digests, in a canonical order, of
    the day's events (by provider and event id) and of its daily counts (by token, endpoint)."""
    events_hash = hashlib.sha256()
    events = 0
    for line in _event_lines(day):
        events_hash.update(line.encode() + b"\n")
        events += 1
    daily_hash = hashlib.sha256()
    calls = errors = latency = 0
    tokens: set[int] = set()
    for line, row in _daily_lines(day):
        daily_hash.update(line.encode() + b"\n")
        tokens.add(row[0])
        calls += row[4]
        errors += row[5]
        latency += row[6]
    return {
        "day": day.isoformat(),
        "counts": {
            "events": events,
            "calls": calls,
            "errors": errors,
            "latency_ms_sum": latency,
            "tokens": len(tokens),
        },
        "digest": events_hash.hexdigest(),
        "daily_digest": daily_hash.hexdigest(),
    }


def _first_usage_day() -> date | None:
    first_event = db.session.scalar(select(func.min(EVENTS.c.day)))
    first_daily = db.session.scalar(select(func.min(DAILY.c.day)))
    days = [d for d in (first_event, first_daily) if d is not None]
    return min(days) if days else None


def sealable_until(now: datetime | None = None) -> date:
    """The last Paris day that is over (plus the lateness allowed to providers)."""
    now = now or clock.now()
    delay = timedelta(hours=current_app.config.get("USAGE_SEAL_DELAY_HOURS", 2))
    return paris_day(now - delay) - timedelta(days=1)


def seal_finished_days(limit: int = 400) -> list[date]:
    """Seal every finished, not yet sealed day as an ``audit:consumption:sealed`` event (one
    per day, empty days included so that deleting a whole day is detected too). Safe to re-run
    and to run from two schedulers: the chain's lock is taken before looking."""
    session = db.session
    session.flush()
    audit._lock_head(session)
    # Then the writers' lock, exclusive: the writers in flight commit first (their counts
    # are in the seal), the later ones wait and then see the new seal.
    _seal_lock(exclusive=True)
    last = last_sealed_day()
    start = last + timedelta(days=1) if last is not None else _first_usage_day()
    until = sealable_until()
    sealed: list[date] = []
    if start is None:
        return sealed
    actor = audit.Actor.system("audit.seal_consumption")
    day = start
    while day <= until and len(sealed) < limit:
        audit.record(
            SEAL_TAG,
            actor,
            subject_type=SEAL_SUBJECT,
            subject_id=day.isoformat(),
            payload=day_summary(day),
        )
        sealed.append(day)
        day += timedelta(days=1)
    return sealed


@dataclass
class SealReport:
    checked: int = 0
    problems: list[str] = field(default_factory=list)


def verify_seals() -> SealReport:
    """Recompute each seal from the consumption still retained: a changed, added or deleted
    event or daily count of a sealed day is reported (with the day)."""
    anchor = latest_anchor_any()
    events_from = anchor.usage_events_before if anchor and anchor.usage_events_before else None
    daily_from = anchor.usage_daily_before if anchor and anchor.usage_daily_before else None
    report = SealReport()
    seals = db.session.execute(
        select(AuditEvent.seq, AuditEvent.payload)
        .where(AuditEvent.tag == SEAL_TAG)
        .order_by(AuditEvent.seq)
    )
    sealed_days: set[date] = set()
    for seq, payload_text in seals:
        payload = json.loads(payload_text)
        day = date.fromisoformat(payload["day"])
        sealed_days.add(day)
        current = day_summary(day)
        where = f"sceau de la consommation du {day.strftime('%d/%m/%Y')} (événement n° {seq})"
        events_kept = events_from is None or day >= events_from
        daily_kept = daily_from is None or day >= daily_from
        if events_kept and (
            current["digest"] != payload["digest"]
            or current["counts"]["events"] != payload["counts"]["events"]
        ):
            report.problems.append(
                f"{where} : les événements de consommation de ce jour ont été modifiés "
                f"({current['counts']['events']} aujourd'hui, {payload['counts']['events']} "
                "scellés)"
            )
        elif daily_kept and current["daily_digest"] != payload["daily_digest"]:
            report.problems.append(
                f"{where} : les compteurs quotidiens de ce jour ont été modifiés "
                f"({current['counts']['calls']} appels aujourd'hui, "
                f"{payload['counts']['calls']} scellés)"
            )
        else:
            report.checked += 1
    if sealed_days:
        # Seals start at the first day with consumption: earlier counts were added afterwards.
        query = select(func.count()).select_from(DAILY).where(DAILY.c.day < min(sealed_days))
        if daily_from is not None:
            query = query.where(DAILY.c.day >= daily_from)
        stray = db.session.scalar(query)
        if stray:
            report.problems.append(
                f"{stray} compteur(s) quotidien(s) antérieurs au premier sceau (ajout après coup)"
            )
    return report


def latest_anchor_any() -> AuditAnchor | None:
    """The latest retention purge record (usage horizons included), or None."""
    return db.session.scalars(select(AuditAnchor).order_by(AuditAnchor.id.desc())).first()


@signals.audit_verifying.connect
def _verify_seals_with_the_chain(_sender: Any, **_extra: Any) -> SealReport:
    return verify_seals()
