"""The sweep: catch-up after downtime, a crash half-way, two schedulers at once, the CLI."""

from __future__ import annotations

import threading
from datetime import date, datetime, time, timedelta

import pytest
from sqlalchemy import select

from datapass import clock, scheduler
from datapass.extensions import db
from datapass.lifecycle import renewal, steps, sweep
from datapass.lifecycle.models import LifecycleAct
from datapass.tokens.models import AccessToken
from tests.lifecycle.conftest import acts, issue, mails, make_listening_api, webhooks


def at_paris(day: date, hour: int = 6) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=clock.PARIS)


def used_now(token: AccessToken) -> None:
    token.last_used_at = clock.now()
    db.session.flush()


def run_together(count: int, work) -> list[BaseException]:
    """``work`` in ``count`` threads released at the same moment; the errors they raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run():
        try:
            barrier.wait()
            work()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def test_downtime_sends_only_the_latest_reminder(app):
    api = make_listening_api(
        unused_warning_days=0,
        unused_suspend_days=0,
        unused_revoke_days=0,
        unused_never_used_warning_days=0,
    )
    token = issue(api)
    expiry_day = clock.local(token.expires_at).date()
    day = expiry_day - timedelta(days=100)
    while day <= expiry_day - timedelta(days=40):  # running normally
        clock.set_frozen(at_paris(day))
        sweep.sweep_tokens()
        day += timedelta(days=1)
    sent = {a.key for a in acts(token.id)}
    assert sent == {"reminder:90", "reminder:60"}
    # Stopped from D-40 to D-10; on restart only the D-15 reminder goes out.
    clock.set_frozen(at_paris(expiry_day - timedelta(days=10)))
    sweep.sweep_tokens()
    rows = {a.key: a.outcome for a in acts(token.id)}
    assert rows["reminder:30"] == "skipped"
    assert rows["reminder:15"] == "done"
    assert "reminder:7" not in rows
    subjects = [m.subject for m in mails("reminder_expiry")]
    assert sum("15 jours" in s for s in subjects) == 3
    assert not any("30 jours" in s for s in subjects)
    # The provider still learns the token is expiring (the D-30 webhook was crossed).
    assert len(webhooks("token.expiring")) == 1
    # A second run the same day does nothing more.
    sweep.sweep_tokens()
    assert len(mails("reminder_expiry")) == 3 * 3


class Crash(BaseException):
    """The process dies (not an ordinary error, which only sets one token aside)."""


def test_crash_half_way_then_rerun(app, monkeypatch):
    api = make_listening_api()
    tokens = [issue(api) for _ in range(6)]
    for token in tokens:
        sweep.sweep_tokens()  # first look: schedules them
    clock.set_frozen(at_paris(clock.local(tokens[0].expires_at).date() - timedelta(days=30)))
    for token in tokens:
        used_now(token)
    db.session.commit()
    app.config["LIFECYCLE_CHUNK"] = 2
    real = steps.HANDLERS["reminder"]
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # after half the rows
            raise Crash("panne simulée")
        return real(*args, **kwargs)

    monkeypatch.setitem(steps.HANDLERS, "reminder", flaky)
    try:
        with pytest.raises(Crash):
            sweep.sweep_tokens()
        db.session.rollback()
        done_before = {a.token_id for a in acts() if a.key == "reminder:30"}
        assert len(done_before) == 2  # the first chunk was committed, the second rolled back
        monkeypatch.setitem(steps.HANDLERS, "reminder", real)
        sweep.sweep_tokens()
        sweep.sweep_tokens()
    finally:
        app.config["LIFECYCLE_CHUNK"] = 500
    rows = [a for a in acts() if a.key.startswith("reminder:")]
    assert sorted(a.token_id for a in rows if a.key == "reminder:30") == sorted(
        t.id for t in tokens
    )
    assert all(a.outcome == "done" for a in rows if a.key == "reminder:30")
    assert len(mails("reminder_expiry")) == 6 * 3
    assert len(webhooks("token.expiring")) == 6


def test_two_sweeps_at_once_on_postgresql(committed_app, backend):
    if backend != "postgresql":
        pytest.skip("concurrence réelle : PostgreSQL uniquement (SQLite sérialise l'écriture)")
    app = committed_app
    api = make_listening_api(unused_never_used_warning_days=0)
    tokens = [issue(api) for _ in range(40)]
    db.session.commit()
    app.config["LIFECYCLE_CHUNK"] = 3
    # 30 days before expiry, every token never used for long: reminders + unused steps due.
    target = at_paris(clock.local(tokens[0].expires_at).date() - timedelta(days=30))
    clock.set_frozen(target)
    job = next(j for j in scheduler.JOBS if j.name == "token_lifecycle")
    try:
        errors = run_together(2, lambda: scheduler.run_job(app, job))
    finally:
        app.config["LIFECYCLE_CHUNK"] = 500
    assert not errors
    db.session.expire_all()
    rows = acts()
    keys = [(a.token_id, a.key) for a in rows]
    assert len(keys) == len(set(keys))
    revoked = db.session.scalars(select(AccessToken).where(AccessToken.status == "revoked")).all()
    assert len(revoked) == 40  # 530 days unused: revoked (the latest unused step) once each
    assert len(webhooks("token.revoked")) == 40
    assert len(mails("unused_revoked")) == 40 * 3
    assert len(mails("reminder_expiry")) == 0  # revoked before: no reminder for a dead token


def test_two_sweeps_reminders_on_postgresql(committed_app, backend):
    if backend != "postgresql":
        pytest.skip("concurrence réelle : PostgreSQL uniquement")
    app = committed_app
    api = make_listening_api()
    tokens = [issue(api) for _ in range(30)]
    db.session.commit()
    target = at_paris(clock.local(tokens[0].expires_at).date() - timedelta(days=7))
    clock.set_frozen(target)
    for token in tokens:
        token.last_used_at = target - timedelta(days=1)
    db.session.commit()
    app.config["LIFECYCLE_CHUNK"] = 2
    try:
        errors = run_together(3, lambda: scheduler.sweep(app))
    finally:
        app.config["LIFECYCLE_CHUNK"] = 500
    assert not errors
    db.session.expire_all()
    done = [a for a in acts() if a.outcome == "done"]
    assert sorted(a.token_id for a in done) == sorted(t.id for t in tokens)
    assert all(a.key == "reminder:7" for a in done)
    assert len(mails("reminder_expiry")) == 30 * 3
    assert len(webhooks("token.expiring")) == 30


def test_sweep_command_runs_as_if_at(app):
    if app.config["DATABASE_URL"].startswith("postgresql"):
        pass
    api = make_listening_api()
    token = issue(api)
    db.session.commit()
    moment = datetime.combine(
        clock.local(token.expires_at).date() - timedelta(days=60), time(9), tzinfo=clock.PARIS
    )
    results = scheduler.sweep(app, at=moment)
    assert "token_lifecycle" in results and not str(results["token_lifecycle"]).startswith("échec")
    assert clock.now() != moment  # the clock is given back


def test_cli_sweep_at(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["datapass", "sweep", "--at", "2028-05-01T09:00:00+00:00"])
    assert "token_lifecycle" in result.output
    result = runner.invoke(args=["datapass", "sweep", "--at", "2028-05-01T09:00:00"])
    assert result.exit_code != 0


def test_selection_follows_due_rows_only(app):
    """Tokens whose next moment is far away are not even read."""
    api = make_listening_api()
    tokens = [issue(api) for _ in range(5)]
    sweep.sweep_tokens()
    due = db.session.scalars(
        select(AccessToken.lifecycle_due_at).where(AccessToken.id.in_([t.id for t in tokens]))
    ).all()
    assert all(d is not None and d > clock.now() for d in due)
    assert sweep.claim_due(100) == []


def test_other_domains_changes_make_the_token_due(app):
    """A rotation by the tokens domain sets a grace end: the token is looked at again."""
    from datapass.actor import Actor
    from datapass.tokens import issuance as token_issuance

    api = make_listening_api()
    token = issue(api)
    sweep.sweep_tokens()
    assert token.lifecycle_due_at > clock.now()
    new, _ = token_issuance.rotate(token, Actor.for_user(token.habilitation.requester), 5)
    db.session.flush()
    assert token.lifecycle_due_at <= clock.now()
    sweep.sweep_tokens()
    assert token.lifecycle_due_at == token.grace_ends_at
    clock.advance(timedelta(days=5, minutes=1))
    sweep.sweep_tokens()
    assert token.status == "revoked"
    assert [a.key for a in acts(token.id)] == ["grace_end"]
    assert (
        db.session.scalar(select(LifecycleAct.outcome).where(LifecycleAct.token_id == token.id))
        == "done"
    )


def test_a_failing_token_does_not_block_the_others(app, monkeypatch):
    api = make_listening_api()
    tokens = [issue(api) for _ in range(3)]
    sweep.sweep_tokens()
    clock.set_frozen(at_paris(clock.local(tokens[0].expires_at).date() - timedelta(days=30)))
    for token in tokens:
        used_now(token)
    db.session.commit()
    real = steps.HANDLERS["reminder"]

    def broken_for_first(token, *args, **kwargs):
        if token.id == tokens[0].id:
            raise ValueError("données incohérentes")
        return real(token, *args, **kwargs)

    monkeypatch.setitem(steps.HANDLERS, "reminder", broken_for_first)
    result = sweep.sweep_tokens()
    assert result["failed"] == 1 and result["reminder"] == 2
    assert {a.token_id for a in acts() if a.key == "reminder:30"} == {tokens[1].id, tokens[2].id}
    assert len(mails("reminder_expiry")) == 2 * 3
    db.session.expire_all()
    assert tokens[0].lifecycle_due_at == clock.now() + timedelta(hours=1)
    monkeypatch.setitem(steps.HANDLERS, "reminder", real)
    clock.advance(timedelta(hours=1))
    sweep.sweep_tokens()
    assert {a.token_id for a in acts() if a.key == "reminder:30"} == {t.id for t in tokens}


def test_expired_unrenewed_habilitation_is_closed_as_a_system_event(app):
    from datapass.audit.models import AuditEvent
    from datapass.authorizations.models import RequestEvent
    from tests.lifecycle.conftest import expiring_token

    api = make_listening_api()
    token = expiring_token(api, days_left=3)
    renewed = expiring_token(api, days_left=3)
    from datapass.actor import Actor

    renewal.renew(
        renewed,
        Actor.for_user(renewed.habilitation.requester),
        renewal.RenewalAnswers(
            True, True, True, renewal.current_contacts(renewed.habilitation), renewed.scopes
        ),
    )
    clock.advance(timedelta(days=4))
    sweep.sweep_tokens()
    assert token.status == "expired" and token.habilitation.is_active
    clock.set_frozen(at_paris(clock.local(token.expires_at).date() + timedelta(days=90), hour=1))
    sweep.sweep_tokens()
    habilitation = token.habilitation
    assert habilitation.status == "revoked" and "90 jours" in habilitation.revocation_reason
    event = db.session.scalars(select(RequestEvent).where(RequestEvent.kind == "revoke")).one()
    assert event.actor_type == "system" and event.request_id == habilitation.request_id
    assert "lifecycle:habilitation:closed" in set(db.session.scalars(select(AuditEvent.tag)))
    assert {m.recipient for m in mails("request_revoked")} >= {
        habilitation.requester.email,
        habilitation.technical_contact_email,
    }
    # The renewed one stays: its old token was superseded, the new one is alive.
    assert renewed.habilitation.is_active
    sweep.sweep_tokens()
    assert (
        len(db.session.scalars(select(RequestEvent).where(RequestEvent.kind == "revoke")).all())
        == 1
    )
