"""Each scheduled job records its heartbeat (start, end, outcome, duration) around its run,
success or failure, and the scheduler its own sign of life; the admin page shows them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select

from datapass import scheduler
from datapass.errors import DomainError
from datapass.extensions import db
from datapass.operations import heartbeats, jobs
from datapass.operations.models import SCHEDULER, JobHeartbeat
from tests import factories
from tests.conftest import FROZEN_AT

SECRET = "postgresql://datapass:s3cr3t-password@db.internal/datapass"


def fails_with_a_secret():
    raise RuntimeError(f"connexion impossible à {SECRET}")


def refuses():
    raise DomainError("Aucune clé de signature n'est prête.")


def _beat(name: str) -> JobHeartbeat:
    db.session.expire_all()
    return db.session.get(JobHeartbeat, name)


def test_a_successful_run_records_its_heartbeat(app, frozen_clock):
    job = next(j for j in scheduler.JOBS if j.name == "audit_checkpoint")
    result = scheduler.run_job(app, job)
    beat = _beat("audit_checkpoint")
    assert beat.outcome == "ok" and beat.message is None
    assert beat.started_at == FROZEN_AT and beat.ended_at == FROZEN_AT
    assert beat.duration_ms is not None and beat.duration_ms >= 0
    assert result  # the job's own result is still returned


def test_a_failed_run_records_its_error_without_the_secret(app):
    job = scheduler.Job(
        "test_failing", "tests.operations.test_heartbeats:fails_with_a_secret", "interval"
    )
    with pytest.raises(RuntimeError):
        scheduler.run_job(app, job)
    beat = _beat("test_failing")
    assert beat.outcome == "error"
    assert beat.started_at == FROZEN_AT and beat.ended_at == FROZEN_AT
    assert "RuntimeError" in beat.message
    assert "s3cr3t" not in beat.message and "postgresql" not in beat.message


def test_a_refusal_keeps_its_french_message(app):
    job = scheduler.Job("test_refusing", "tests.operations.test_heartbeats:refuses", "interval")
    with pytest.raises(DomainError):
        scheduler.run_job(app, job)
    assert _beat("test_refusing").message == "Aucune clé de signature n'est prête."


def test_a_later_success_replaces_the_error(app, frozen_clock):
    failing = scheduler.Job("test_flaky", "tests.operations.test_heartbeats:refuses", "interval")
    with pytest.raises(DomainError):
        scheduler.run_job(app, failing)
    frozen_clock.advance(timedelta(minutes=5))
    fixed = scheduler.Job("test_flaky", "datapass.audit.tasks:sign_checkpoint", "interval")
    scheduler.run_job(app, fixed)
    beat = _beat("test_flaky")
    assert (beat.outcome, beat.message) == ("ok", None)
    assert beat.started_at == FROZEN_AT + timedelta(minutes=5)


def test_a_sweep_records_every_job_once(app):
    scheduler.sweep(app)
    names = set(db.session.scalars(select(JobHeartbeat.name)))
    assert names == {job.name for job in scheduler.JOBS}
    assert all(_beat(job.name).outcome in ("ok", "error") for job in scheduler.JOBS)


def test_the_scheduler_beats(app, frozen_clock):
    scheduler.beat(app, starting=True)
    frozen_clock.advance(timedelta(seconds=scheduler.HEARTBEAT_SECONDS))
    scheduler.beat(app)
    beat = _beat(SCHEDULER)
    assert beat.started_at == FROZEN_AT
    assert beat.ended_at == FROZEN_AT + timedelta(seconds=scheduler.HEARTBEAT_SECONDS)
    assert SCHEDULER not in {job.name for job in scheduler.JOBS}


def test_lateness_and_periods(app, frozen_clock):
    by_name = {s.job.name: s for s in jobs.statuses()}
    assert by_name["token_lifecycle"].period_label == "toutes les 10 minutes"
    assert by_name["deliver_mails"].period_label == "toutes les minutes"
    assert by_name["remind_idle_drafts"].period_label == "toutes les heures"
    assert by_name["audit_retention"].period_label == "chaque jour à 03 h 30"
    assert not any(s.late for s in by_name.values())  # never run, no scheduler yet
    heartbeats.scheduler_alive(starting=True)
    heartbeats.job_started("deliver_mails")
    heartbeats.job_ended("deliver_mails", 0.2)
    frozen_clock.advance(timedelta(minutes=2))
    by_name = {s.job.name: s for s in jobs.statuses()}
    assert not by_name["deliver_mails"].late  # two periods: not yet
    frozen_clock.advance(timedelta(seconds=1))
    by_name = {s.job.name: s for s in jobs.statuses()}
    assert by_name["deliver_mails"].late
    assert by_name["deliver_webhooks"].late  # never run since the scheduler started
    assert not by_name["token_lifecycle"].late


def test_admin_page_lists_the_jobs(app, client, login_as, frozen_clock):
    admin = factories.user(roles=("admin",))
    factories.enable_totp(admin)
    heartbeats.scheduler_alive(starting=True)
    with pytest.raises(DomainError):
        scheduler.run_job(
            app, scheduler.Job("deliver_mails", "tests.operations.test_heartbeats:refuses", "x")
        )
    frozen_clock.advance(timedelta(minutes=3))
    heartbeats.scheduler_alive()
    login_as(admin)
    page = client.get("/admin/taches")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Tâches planifiées" in html
    for job in scheduler.JOBS:
        assert f'id="tache-{job.name}"' in html
    row = html.split('id="tache-deliver_mails"')[1].split("</tr>")[0]
    assert "En échec" in row and "Aucune clé de signature" in row and "En retard" in row
    assert "toutes les minutes" in row
    assert "Planificateur en vie" in html
    assert 'href="/admin/taches"' in html  # in the admin menu


def test_admin_page_is_for_administrators(app, client, login_as):
    officer = factories.staff("security_officer")
    factories.enable_totp(officer)
    login_as(officer)
    assert client.get("/admin/taches").status_code == 403


def test_the_scheduler_process_beats_from_its_start(app):
    """The scheduler (dev thread or dedicated process) beats when configured, then every
    HEARTBEAT_SECONDS through a job of its own, beside the JOBS."""
    background = BackgroundScheduler(timezone=app.config["SCHEDULER_TIMEZONE"])
    scheduler._configure(background, app)
    beat = background.get_job("_heartbeat")
    assert beat is not None and beat.trigger.interval == timedelta(
        seconds=scheduler.HEARTBEAT_SECONDS
    )
    assert {job.id for job in background.get_jobs()} == {j.name for j in scheduler.JOBS} | {
        "_heartbeat"
    }
    assert _beat(SCHEDULER).started_at == FROZEN_AT
