"""Heartbeats: each scheduled job records its last start, end, outcome and duration (one row
per job), and the scheduler process its own sign of life.

Called by :mod:`datapass.scheduler` around each run, in transactions of their own: a job's
failure (rolled back) is still recorded, and a heartbeat that cannot be written (the
database is down) never hides the job's own outcome (logged, not raised).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from datapass import clock
from datapass.errors import DomainError
from datapass.extensions import db
from datapass.operations.models import SCHEDULER, JobHeartbeat, Outcome

log = logging.getLogger("datapass.operations")

MESSAGE_MAX = 300


def _row(name: str) -> JobHeartbeat:
    row = db.session.get(JobHeartbeat, name)
    if row is not None:
        return row
    try:
        with db.session.begin_nested():
            row = JobHeartbeat(name=name, outcome=Outcome.RUNNING)
            db.session.add(row)
    except IntegrityError:  # another scheduler created it at the same moment
        row = db.session.get(JobHeartbeat, name)
        if row is None:
            raise
    return row


def _write(change) -> None:
    try:
        change()
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        log.warning("heartbeat not recorded", exc_info=True)


def job_started(name: str) -> datetime:
    """Record that ``name`` starts now (commits); returns that moment."""
    now = clock.now()

    def change() -> None:
        row = _row(name)
        row.started_at = now
        row.outcome = Outcome.RUNNING

    _write(change)
    return now


def short_message(error: BaseException) -> str:
    """What the admin page shows of a failure: a refusal's own (French) message; otherwise
    only the kind of error, never its text (it may quote SQL parameters, a URL with its
    password, a secret): the details are in the scheduler's log."""
    if isinstance(error, DomainError):
        return str(error)[:MESSAGE_MAX]
    return f"{type(error).__name__} (détails dans le journal du planificateur)"[:MESSAGE_MAX]


def job_ended(name: str, duration_seconds: float, error: BaseException | None = None) -> None:
    """Record the end of ``name``'s run (commits): its outcome and duration."""
    now = clock.now()

    def change() -> None:
        row = _row(name)
        row.ended_at = now
        row.duration_ms = max(0, round(duration_seconds * 1000))
        if error is None:
            row.outcome, row.message = Outcome.OK, None
        else:
            row.outcome, row.message = Outcome.ERROR, short_message(error)

    _write(change)


def scheduler_alive(starting: bool = False) -> None:
    """The scheduler process's sign of life (commits): ``starting`` when it starts."""
    now = clock.now()

    def change() -> None:
        row = _row(SCHEDULER)
        if starting or row.started_at is None:
            row.started_at = now
        row.ended_at = now
        row.outcome, row.message, row.duration_ms = Outcome.OK, None, None

    _write(change)


def all_heartbeats() -> dict[str, JobHeartbeat]:
    return {row.name: row for row in db.session.scalars(select(JobHeartbeat))}
