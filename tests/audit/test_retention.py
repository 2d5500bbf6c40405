"""Retention: the purge removes what is past its period, records what went and the anchor,
and the remaining chain still verifies."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import func, select, text

from datapass import clock
from datapass.audit import checkpoints, retention, verification
from datapass.audit import service as audit
from datapass.audit.models import AuditAnchor, AuditEvent
from datapass.consumption import ingest, seal
from datapass.consumption.models import UsageDaily, UsageEvent, UsageRecent
from datapass.extensions import db


def _record(n):
    for i in range(n):
        audit.record("accounts:user:login", audit.Actor.system("test"), payload={"i": i})


def _count(model):
    return db.session.scalar(select(func.count()).select_from(model))


def test_nothing_to_purge_records_nothing(app):
    _record(3)
    assert retention.purge() is None
    assert _count(AuditAnchor) == 0


def test_after_a_purge_the_chain_still_verifies_and_names_what_went(app, frozen_clock):
    _record(5)
    checkpoints.create_checkpoint()
    old_last = db.session.scalar(select(func.max(AuditEvent.seq)))
    old_hash = db.session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == old_last))
    frozen_clock.advance(timedelta(days=5 * 366))
    _record(3)
    payload = retention.purge()
    assert payload["audit_events"]["removed"] == old_last
    assert payload["audit_events"]["from_seq"] == 1
    assert payload["audit_events"]["to_seq"] == old_last
    assert payload["audit_events"]["anchor_hash"] == old_hash
    purge_event = db.session.scalars(
        select(AuditEvent).where(AuditEvent.tag == "audit:retention:purged")
    ).one()
    assert json.loads(purge_event.payload)["audit_events"]["anchor_seq"] == old_last
    assert db.session.scalar(select(func.min(AuditEvent.seq))) == old_last + 1
    report = verification.verify_all()
    assert report.ok, report.lines()
    assert report.chain.checked == 3 + 1  # the three new events and the purge
    # a second purge later keeps chaining from the newest anchor
    frozen_clock.advance(timedelta(days=5 * 366))
    _record(1)
    assert retention.purge()["audit_events"]["from_seq"] == old_last + 1
    assert verification.verify_all().ok


def test_a_forged_anchor_is_detected(app, frozen_clock):
    _record(5)
    frozen_clock.advance(timedelta(days=5 * 366))
    _record(2)
    retention.purge()
    assert audit.verify_chain().ok
    # hide one more event: delete it and move the anchor row forward by hand
    first = db.session.scalar(select(func.min(AuditEvent.seq)))
    first_hash = db.session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == first))
    db.session.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": first})
    db.session.execute(
        text("UPDATE audit_anchors SET anchor_seq = :s, anchor_hash = :h"),
        {"s": first, "h": first_hash},
    )
    db.session.expire_all()
    result = audit.verify_chain()
    assert not result.ok and "ancre" in result.problem


def test_consumption_past_retention_is_purged_and_seals_still_verify(
    app, usage_world, frozen_clock
):
    moment = clock.now() - timedelta(days=1)
    ingest.ingest_usage(
        usage_world.provider.id,
        [
            {
                "id": f"old-{i}",
                "token": usage_world.token.jti,
                "time": moment.isoformat(),
                "endpoint": "/v2/x",
                "status": 200,
            }
            for i in range(4)
        ],
    )
    seal.seal_finished_days()
    assert _count(UsageRecent) == 4
    frozen_clock.advance(timedelta(days=400))
    payload = retention.purge()
    assert payload["usage_events"]["removed"] == 4
    assert payload["usage_daily"]["removed"] == 0
    assert _count(UsageEvent) == 0 and _count(UsageDaily) == 1
    assert _count(UsageRecent) == 0  # the last calls are copies of events: they go too
    report = verification.verify_all()
    assert report.ok, report.lines()
    # the daily counts are still covered by their seal
    db.session.execute(text("UPDATE usage_daily SET calls = 40"))
    assert not verification.verify_all().ok
