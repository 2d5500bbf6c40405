"""A long chain is verified in parallel segments; any problem is then named exactly by the
sequential pass."""

from __future__ import annotations

from sqlalchemy import text

from datapass.audit import service as audit
from datapass.extensions import db


def test_parallel_segments_verify_and_tampering_is_named(committed_app, monkeypatch):
    monkeypatch.setattr(audit, "PARALLEL_MIN_EVENTS", 10)
    for i in range(41):
        audit.record("accounts:user:login", audit.Actor.system("t"), payload={"i": i})
    db.session.commit()
    parallel = audit._verify_parallel(db.session, 0, audit.GENESIS_HASH)
    assert parallel is not None and parallel.ok and parallel.checked == 41
    assert audit.verify_chain().ok
    db.session.execute(
        text("UPDATE audit_events SET payload = :p WHERE seq = 30"), {"p": '{"i":0}'}
    )
    db.session.commit()
    assert audit._verify_parallel(db.session, 0, audit.GENESIS_HASH) is None
    result = audit.verify_chain()
    assert not result.ok and result.bad_seq == 30
