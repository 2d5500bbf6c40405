"""`audit verify`: signed checkpoints and daily consumption seals, and what tampering by
direct SQL leaves behind."""

from __future__ import annotations

import json
from datetime import date, timedelta

from click.testing import CliRunner
from sqlalchemy import select, text

from datapass import clock
from datapass.audit import checkpoints, tasks, verification
from datapass.audit import service as audit
from datapass.audit.models import AuditEvent
from datapass.consumption import ingest
from datapass.consumption import seal as sealing
from datapass.extensions import db


def _record(n=3):
    for i in range(n):
        audit.record("accounts:user:login", audit.Actor.system("test"), payload={"i": i})


def _usage(world, days_ago, count, status=200, prefix="e"):
    moment = clock.now() - timedelta(days=days_ago)
    ingest.ingest_usage(
        world.provider.id,
        [
            {
                "id": f"{prefix}-{days_ago}-{i}",
                "token": world.token.jti,
                "time": moment.isoformat(),
                "endpoint": "/v2/quotient",
                "status": status,
                "latency_ms": 10,
            }
            for i in range(count)
        ],
    )


def _cli(app):
    from datapass.cli import audit_verify

    with app.test_request_context():
        return CliRunner().invoke(audit_verify, [])


def test_checkpoints_are_signed_and_verified(app):
    _record()
    first = checkpoints.create_checkpoint()
    assert checkpoints.create_checkpoint() is first  # the head did not move
    _record(2)
    second = checkpoints.create_checkpoint()
    assert second.seq > first.seq
    payload = checkpoints.check_jws(second.jws, checkpoints.public_jwks())
    assert payload["seq"] == second.seq and payload["hash"] == second.hash
    report = verification.verify_all()
    assert report.ok and report.checkpoints.checked == 2


def test_checkpoint_job_respects_the_interval(app, frozen_clock):
    _record()
    assert "point de contrôle" in tasks.sign_checkpoint()
    _record()
    assert tasks.sign_checkpoint() == "pas encore dû"
    frozen_clock.advance(timedelta(minutes=15))
    assert "point de contrôle" in tasks.sign_checkpoint()


def test_a_forged_or_stale_checkpoint_is_reported(app):
    _record()
    checkpoint = checkpoints.create_checkpoint()
    db.session.execute(
        text("UPDATE audit_checkpoints SET hash = :h WHERE id = :id"),
        {"h": "f" * 64, "id": checkpoint.id},
    )
    db.session.expire_all()
    problems = verification.verify_all().checkpoints.problems
    assert problems and "diffère" in problems[0]


def test_rewriting_the_whole_chain_after_a_checkpoint_is_detected(app):
    """Someone rewrites an event AND recomputes every later hash: the chain verifies on its
    own, but no longer matches the signed checkpoint."""
    _record(4)
    checkpoints.create_checkpoint()
    rows = db.session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
    prev = "0" * 64
    for event in rows:
        values = {c: getattr(event, c) for c in audit.COLUMNS}
        if event.seq == 2:
            values["payload"] = '{"i":42}'
        digest = audit.chain_hash(values, prev)
        db.session.execute(
            text("UPDATE audit_events SET payload=:p, prev_hash=:ph, hash=:h WHERE seq=:s"),
            {"p": values["payload"], "ph": prev, "h": digest, "s": event.seq},
        )
        prev = digest
    db.session.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})
    db.session.expire_all()
    report = verification.verify_all()
    assert report.chain.ok  # consistent on its own…
    assert not report.ok  # …but not what was signed
    assert "ne correspond plus" in report.checkpoints.problems[0]


def test_days_are_sealed_once_and_seals_verify(app, usage_world):
    _usage(usage_world, 2, 5)
    _usage(usage_world, 1, 3, status=500)
    sealed = sealing.seal_finished_days()
    assert sealed == [date(2026, 11, 26), date(2026, 11, 27)]
    assert sealing.seal_finished_days() == []  # idempotent
    seal = db.session.scalars(
        select(AuditEvent)
        .where(AuditEvent.tag == "audit:consumption:sealed")
        .order_by(AuditEvent.seq)
    ).all()
    payload = json.loads(seal[1].payload)
    assert payload["day"] == "2026-11-27"
    assert payload["counts"]["events"] == 3 and payload["counts"]["errors"] == 3
    assert len(payload["digest"]) == 64
    report = verification.verify_all()
    assert report.ok and report.seals.checked == 2


def test_tampering_with_a_consumption_row_is_detected(app, usage_world):
    _usage(usage_world, 1, 3)
    sealing.seal_finished_days()
    db.session.execute(
        text(
            "UPDATE usage_events SET status = 200 "
            "WHERE event_id = (SELECT MIN(event_id) FROM usage_events)"
        )
    )
    db.session.execute(
        text(
            "UPDATE usage_events SET endpoint = '/autre' "
            "WHERE event_id = (SELECT MIN(event_id) FROM usage_events)"
        )
    )
    result = _cli(app)
    assert result.exit_code == 1
    assert "27/11/2026" in result.output and "modifiés" in result.output


def test_tampering_with_a_daily_count_is_detected(app, usage_world):
    _usage(usage_world, 1, 3)
    sealing.seal_finished_days()
    db.session.execute(text("UPDATE usage_daily SET calls = 1"))
    problems = verification.verify_all().seals.problems
    assert problems and "compteurs quotidiens" in problems[0]


def test_tampering_with_a_seal_is_detected(app, usage_world):
    _usage(usage_world, 1, 3)
    sealing.seal_finished_days()
    seq = db.session.scalar(
        select(AuditEvent.seq).where(AuditEvent.tag == "audit:consumption:sealed")
    )
    payload = db.session.scalar(select(AuditEvent.payload).where(AuditEvent.seq == seq))
    db.session.execute(
        text("UPDATE audit_events SET payload = :p WHERE seq = :s"),
        {"p": payload.replace('"events":3', '"events":2'), "s": seq},
    )
    result = _cli(app)
    assert result.exit_code == 1 and f"n° {seq}" in result.output
