"""The scheduler: every periodic job of every domain in one ``JOBS`` table, and the process
that runs them.

Started by ``python app.py`` (development, in-process) or ``flask --app app datapass
scheduler`` (production: one dedicated process); never from ``create_app``.
``flask --app app datapass sweep`` runs every job once and exits. Each job is idempotent and
claims its rows, so two schedulers running at once on PostgreSQL do every act exactly once.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from flask import Flask

from datapass import clock
from datapass.extensions import db
from datapass.operations import heartbeats

log = logging.getLogger("datapass.scheduler")


@dataclass(frozen=True)
class Job:
    name: str
    target: str  # "package.module:function", resolved when the job runs
    trigger: str  # "interval" or "cron"
    schedule: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def function(self) -> Callable[[], Any]:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


JOBS: list[Job] = [
    Job(
        "token_lifecycle",
        "datapass.lifecycle.tasks:token_lifecycle",
        "interval",
        {"minutes": 10},
        "Cycle de vie des jetons : rappels, expirations, fins de grâce, accès inutilisés.",
    ),
    Job(
        "instructor_digest",
        "datapass.lifecycle.tasks:instructor_digest",
        "interval",
        {"minutes": 30},
        "Récapitulatif quotidien des instructeurs (une fois par jour, dès l'heure configurée).",
    ),
    Job(
        "audit_seal_consumption",
        "datapass.consumption.tasks:seal_consumption",
        "interval",
        {"hours": 1},
        "Sceau quotidien de la consommation des API dans la chaîne d'audit.",
    ),
    Job(
        "audit_retention",
        "datapass.audit.tasks:purge_expired",
        "cron",
        {"hour": 3, "minute": 30},
        "Purge des événements de consommation et d'audit au-delà de leur durée de conservation.",
    ),
    Job(
        "audit_checkpoint",
        "datapass.audit.tasks:sign_checkpoint",
        "interval",
        {"minutes": 1},
        "Point de contrôle signé de la chaîne d'audit (selon DATAPASS_AUDIT_CHECKPOINT_MINUTES).",
    ),
    Job(
        "rotate_signing_keys",
        "datapass.tokens.tasks:rotate_keys_if_due",
        "interval",
        {"hours": 1},
        "Clés de signature : publication 7 jours avant usage, rotation, retrait des clés mortes.",
    ),
    Job(
        "remind_idle_drafts",
        "datapass.authorizations.tasks:remind_idle_drafts",
        "interval",
        {"hours": 1},
        "Relance des brouillons inactifs depuis 15 jours.",
    ),
    Job(
        "warn_stale_changes_requested",
        "datapass.authorizations.tasks:warn_stale_changes_requested",
        "interval",
        {"hours": 1},
        "Avertissement des demandes en attente de modifications depuis 6 mois.",
    ),
    Job(
        "archive_stale_changes_requested",
        "datapass.authorizations.tasks:archive_stale_changes_requested",
        "interval",
        {"hours": 1},
        "Archivage des demandes averties 15 jours plus tôt et toujours sans réponse.",
    ),
    # Last: what the jobs above queued leaves in the same sweep.
    Job(
        "deliver_webhooks",
        "datapass.tokens.tasks:deliver_webhooks",
        "interval",
        {"minutes": 1},
        "Livraison des webhooks aux fournisseurs (avec reprises).",
    ),
    Job(
        "deliver_mails",
        "datapass.notify.tasks:deliver_mails",
        "interval",
        {"minutes": 1},
        "Envoi des courriels en attente (avec reprises).",
    ),
]


# The scheduler process records its own sign of life this often (``/readyz`` reads it).
HEARTBEAT_SECONDS = 30


def run_job(app: Flask, job: Job) -> Any:
    """Run one job in its own app context; its work commits, a failure rolls back. Its
    heartbeat (start, end, outcome, duration) is recorded in transactions of its own."""
    with app.app_context():
        heartbeats.job_started(job.name)
        began = time.perf_counter()
        try:
            result = job.function()()
            db.session.commit()
        except Exception as exc:
            db.session.rollback()
            log.exception("job %s failed", job.name)
            heartbeats.job_ended(job.name, time.perf_counter() - began, exc)
            raise
        else:
            heartbeats.job_ended(job.name, time.perf_counter() - began)
            return result
        finally:
            db.session.remove()


def beat(app: Flask, starting: bool = False) -> None:
    """The scheduler's own heartbeat, in its own app context."""
    with app.app_context():
        try:
            heartbeats.scheduler_alive(starting)
        finally:
            db.session.remove()


def sweep(app: Flask, at: datetime | None = None) -> dict[str, Any]:
    """Run every job once, in declaration order (``at``: as if it were that moment)."""
    results: dict[str, Any] = {}
    with clock.freeze(at) if at is not None else contextlib.nullcontext():
        for job in JOBS:
            try:
                results[job.name] = run_job(app, job)
            except Exception as exc:  # one failing job must not stop the others
                results[job.name] = f"échec : {exc}"
    return results


def _configure(scheduler, app: Flask) -> None:
    # APScheduler logs every run at INFO; failures are logged by run_job anyway.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    for job in JOBS:
        scheduler.add_job(
            run_job,
            job.trigger,
            args=[app, job],
            id=job.name,
            name=job.description or job.name,
            coalesce=True,  # after downtime, one catch-up run, not a flood
            max_instances=1,
            misfire_grace_time=3600,
            replace_existing=True,
            **job.schedule,
        )
    scheduler.add_job(
        beat,
        "interval",
        args=[app],
        id="_heartbeat",
        name="Signe de vie du planificateur",
        seconds=HEARTBEAT_SECONDS,
        coalesce=True,
        max_instances=1,
        replace_existing=True,
    )
    beat(app, starting=True)


def start_background(app: Flask) -> BackgroundScheduler:
    """Development: the scheduler runs in threads beside the dev server."""
    scheduler = BackgroundScheduler(timezone=app.config["SCHEDULER_TIMEZONE"])
    _configure(scheduler, app)
    scheduler.start()
    log.info("scheduler started with %d jobs", len(JOBS))
    return scheduler


def run_forever(app: Flask) -> None:
    """Production: a dedicated process (``flask --app app datapass scheduler``). SIGTERM
    (``systemctl stop``, ``docker stop``) and SIGINT stop it cleanly: no job starts any more,
    a job in progress finishes (its thread is joined at exit), and the process exits 0."""
    scheduler = BlockingScheduler(timezone=app.config["SCHEDULER_TIMEZONE"])
    _configure(scheduler, app)

    def stop(signum: int, _frame: Any) -> None:
        log.info("scheduler stopping (%s)", signal.Signals(signum).name)
        if scheduler.running:
            scheduler.shutdown(wait=False)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    log.info("scheduler started with %d jobs", len(JOBS))
    scheduler.start()  # returns once stopped
