"""``/healthz`` and ``/readyz``: each readiness check, passing and failing, on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from datapass import create_app
from datapass.actor import Actor
from datapass.audit import checkpoints
from datapass.audit import service as audit
from datapass.extensions import db
from datapass.operations import heartbeats
from tests.conftest import PG_URL, base_config
from tests.operations.conftest import make_ready

CHECKS = ["database", "migrations", "signing_key", "scheduler", "audit_checkpoint"]


def _states(response) -> dict[str, str]:
    body = response.get_json()
    assert [c["name"] for c in body["checks"]] == CHECKS
    assert all(c["message"] for c in body["checks"])
    return {c["name"]: c["state"] for c in body["checks"]}


def _failing(response) -> list[str]:
    return [name for name, state in _states(response).items() if state != "ok"]


def _message(response, name: str) -> str:
    return next(c["message"] for c in response.get_json()["checks"] if c["name"] == name)


def test_healthz_answers_without_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_ready_when_every_check_passes(ready, client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()
    assert set(_states(response).values()) == {"ok"}
    assert response.get_json()["status"] == "ok"
    assert response.headers["Cache-Control"] == "no-store"


def test_migrations_behind_head(alembic_table, app, client):
    make_ready(revision="c3d4e5f6a7b8")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert _failing(response) == ["migrations"]
    assert "flask --app app db upgrade" in _message(response, "migrations")


def test_never_migrated(alembic_table, app, client):
    make_ready()
    db.session.execute(text("DELETE FROM alembic_version"))
    db.session.commit()
    response = client.get("/readyz")
    assert _failing(response) == ["migrations"]
    assert "révision aucune" in _message(response, "migrations")


def test_no_current_signing_key(alembic_table, app, client):
    make_ready(key=False)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert _failing(response) == ["signing_key"]


def test_stale_scheduler_heartbeat(ready, client, frozen_clock):
    limit = ready.config["READY_SCHEDULER_MAX_AGE_SECONDS"]
    frozen_clock.advance(timedelta(seconds=limit))
    assert client.get("/readyz").status_code == 200
    frozen_clock.advance(timedelta(seconds=1))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert _failing(response) == ["scheduler"]
    assert "planificateur" in _message(response, "scheduler")


def test_stale_checkpoint(ready, client, frozen_clock):
    # Nothing happened since the last checkpoint: however old, it covers the whole chain.
    frozen_clock.advance(timedelta(days=2))
    heartbeats.scheduler_alive()
    assert client.get("/readyz").status_code == 200
    # An event no checkpoint covers yet may wait READY_CHECKPOINT_PERIODS intervals…
    audit.record("accounts:user:created", Actor.system("test"), subject_type="user", subject_id=1)
    db.session.commit()
    limit = ready.config["AUDIT_CHECKPOINT_MINUTES"] * ready.config["READY_CHECKPOINT_PERIODS"]
    frozen_clock.advance(timedelta(minutes=limit))
    heartbeats.scheduler_alive()
    assert client.get("/readyz").status_code == 200
    # …not longer.
    frozen_clock.advance(timedelta(seconds=1))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert _failing(response) == ["audit_checkpoint"]
    assert "1 événement(s) d'audit attendent" in _message(response, "audit_checkpoint")
    # The checkpoint job signs them: ready again.
    checkpoints.create_checkpoint()
    db.session.commit()
    assert client.get("/readyz").status_code == 200


def test_database_down(backend):
    if backend == "postgresql":
        base = PG_URL or "postgresql+psycopg://postgres@127.0.0.1:5432/x"
        url = base.replace("127.0.0.1:5432", "127.0.0.1:1")
    else:
        url = "sqlite:////nonexistent-datapass-directory/datapass.db"
    down = create_app(base_config(url))
    client = down.test_client()
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 503
    states = _states(response)
    assert states["database"] == "failed"
    assert {states[name] for name in CHECKS[1:]} == {"skipped"}
    assert "injoignable" in _message(response, "database")
