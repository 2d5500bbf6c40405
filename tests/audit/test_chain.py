"""The audit chain: every act leaves one event; tampering is detected and named."""

import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from datapass.audit import service as audit
from datapass.audit.models import AuditEvent
from datapass.extensions import db


def _seed(n=5):
    actor = audit.Actor.system("test")
    for i in range(n):
        audit.record(
            "accounts:user:login", actor, subject_type="users", subject_id=i, payload={"i": i}
        )
    db.session.flush()


def test_a_clean_chain_verifies(app):
    _seed()
    result = audit.verify_chain()
    assert result.ok and result.checked == 5


def test_events_chain_by_hash(app):
    _seed(2)
    first, second = db.session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    assert first.prev_hash == "0" * 64
    assert second.prev_hash == first.hash
    assert second.hash == audit.chain_hash(
        {c: getattr(second, c) for c in audit.COLUMNS}, first.hash
    )


def test_tag_must_be_typed(app):
    with pytest.raises(ValueError):
        audit.record("login", audit.Actor.system("test"))


def test_secrets_are_hmaced_never_clear(app):
    wrapped = audit.secret("mot-de-passe-secret")
    assert "mot-de-passe-secret" not in wrapped
    assert wrapped == audit.secret("mot-de-passe-secret")
    assert wrapped != audit.secret("autre")


def test_changed_row_is_named(app):
    _seed()
    db.session.execute(
        text("UPDATE audit_events SET payload = :p WHERE seq = 3"), {"p": '{"i":99}'}
    )
    result = audit.verify_chain()
    assert not result.ok and result.bad_seq == 3
    assert "modifié" in result.problem


def test_changed_time_or_actor_is_named(app):
    _seed()
    db.session.execute(text("UPDATE audit_events SET actor_label = 'quelqu''un' WHERE seq = 2"))
    assert audit.verify_chain().bad_seq == 2


def test_deleted_row_is_named(app):
    _seed()
    db.session.execute(text("DELETE FROM audit_events WHERE seq = 2"))
    result = audit.verify_chain()
    assert not result.ok and result.bad_seq == 2
    assert "supprimé" in result.problem


def test_deleted_last_row_is_detected_by_the_head(app):
    _seed()
    db.session.execute(text("DELETE FROM audit_events WHERE seq = 5"))
    result = audit.verify_chain()
    assert not result.ok and result.bad_seq == 5


def test_inserted_row_is_named(app):
    _seed()
    # Make room at seq 3, then forge a well-formed event there chained to seq 2.
    for seq in (5, 4, 3):
        db.session.execute(text(f"UPDATE audit_events SET seq = {seq + 1} WHERE seq = {seq}"))
    prev = db.session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == 2))
    row = {c: None for c in audit.COLUMNS}
    row.update(
        seq=3,
        occurred_at=db.session.scalar(select(AuditEvent.occurred_at).where(AuditEvent.seq == 2)),
        tag="accounts:role:granted",
        actor_type="system",
        payload="{}",
    )
    forged = audit.chain_hash(row, prev)
    db.session.add(AuditEvent(**{**row, "prev_hash": prev, "hash": forged}))
    db.session.flush()
    result = audit.verify_chain()
    assert not result.ok and result.bad_seq == 4  # the original third event no longer fits


def test_swapped_rows_are_named(app):
    _seed()
    db.session.execute(text("UPDATE audit_events SET seq = 100 WHERE seq = 2"))
    db.session.execute(text("UPDATE audit_events SET seq = 2 WHERE seq = 3"))
    db.session.execute(text("UPDATE audit_events SET seq = 3 WHERE seq = 100"))
    result = audit.verify_chain()
    assert not result.ok and result.bad_seq == 2


def test_cli_verify_reports_and_fails(app):
    _seed()
    runner = CliRunner()
    from datapass.cli import audit_verify

    with app.test_request_context():
        ok = runner.invoke(audit_verify, [])
    assert ok.exit_code == 0 and "intègre" in ok.output
    db.session.execute(text("UPDATE audit_events SET tag = 'accounts:user:logout' WHERE seq = 4"))
    with app.test_request_context():
        broken = runner.invoke(audit_verify, [])
    assert broken.exit_code == 1
    assert "n° 4" in broken.output


def test_concurrent_appends_keep_one_chain(committed_app, backend):
    if backend == "sqlite":
        pytest.skip("concurrency between processes is PostgreSQL's job (SQLite serialises writers)")
    errors = []

    def worker(n):
        with committed_app.app_context():
            try:
                for i in range(15):
                    audit.record(
                        "accounts:user:login", audit.Actor.system(f"t{n}"), payload={"i": i}
                    )
                    db.session.commit()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == 120
    result = audit.verify_chain()
    assert result.ok and result.checked == 120


def test_concurrent_appends_on_sqlite_queue_up(committed_app, backend):
    if backend != "sqlite":
        pytest.skip("covered by the PostgreSQL test")
    errors = []

    def worker(n):
        with committed_app.app_context():
            try:
                for i in range(10):
                    audit.record(
                        "accounts:user:login", audit.Actor.system(f"t{n}"), payload={"i": i}
                    )
                    db.session.commit()
            except Exception as exc:  # pragma: no cover
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert audit.verify_chain().checked == 40
