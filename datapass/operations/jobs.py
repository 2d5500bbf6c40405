"""The scheduled jobs as the admin page and the metrics show them: each job of
:data:`datapass.scheduler.JOBS` with its period, its last run (heartbeat) and whether it is
late."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from datapass import clock, scheduler
from datapass.operations import heartbeats
from datapass.operations.models import SCHEDULER, JobHeartbeat

# A job is late when its last start (or, never run, the scheduler's start) is older than
# this many periods.
LATE_AFTER_PERIODS = 2


def period(job: scheduler.Job) -> timedelta:
    """How often ``job`` runs: its interval, or a day (a daily cron), or an hour."""
    if job.trigger == "interval":
        return timedelta(**job.schedule)
    return timedelta(days=1) if "hour" in job.schedule else timedelta(hours=1)


def _every(count: int, one: str, many: str) -> str:
    return f"toutes les {one}" if count == 1 else f"toutes les {count} {many}"


def period_label(job: scheduler.Job) -> str:
    """The period in French: « toutes les 10 minutes », « chaque jour à 03 h 30 »."""
    if job.trigger == "interval":
        schedule = job.schedule
        if "hours" in schedule:
            return _every(schedule["hours"], "heures", "heures")
        if "minutes" in schedule:
            return _every(schedule["minutes"], "minutes", "minutes")
        return _every(schedule.get("seconds", 0), "secondes", "secondes")
    hour, minute = job.schedule.get("hour"), job.schedule.get("minute", 0)
    if hour is None:
        return f"chaque heure à la minute {int(minute):02d}"
    return f"chaque jour à {int(hour):02d} h {int(minute):02d}"


@dataclass(frozen=True)
class JobStatus:
    job: scheduler.Job
    period: timedelta
    period_label: str
    heartbeat: JobHeartbeat | None
    late: bool

    @property
    def running(self) -> bool:
        return self.heartbeat is not None and self.heartbeat.outcome == "running"

    @property
    def last_start_age(self) -> timedelta | None:
        if self.heartbeat is None or self.heartbeat.started_at is None:
            return None
        return clock.now() - clock.as_utc(self.heartbeat.started_at)


def scheduler_heartbeat(beats: dict[str, JobHeartbeat]) -> JobHeartbeat | None:
    return beats.get(SCHEDULER)


def _late(reference: datetime | None, every: timedelta, now: datetime) -> bool:
    return reference is not None and now - clock.as_utc(reference) > LATE_AFTER_PERIODS * every


def statuses(beats: dict[str, JobHeartbeat] | None = None) -> list[JobStatus]:
    """Every job of ``JOBS``, in declaration order, with its last run."""
    beats = heartbeats.all_heartbeats() if beats is None else beats
    alive = beats.get(SCHEDULER)
    since = alive.started_at if alive is not None else None
    now = clock.now()
    found = []
    for job in scheduler.JOBS:
        beat = beats.get(job.name)
        every = period(job)
        reference = beat.started_at if beat is not None and beat.started_at else since
        found.append(JobStatus(job, every, period_label(job), beat, _late(reference, every, now)))
    return found
