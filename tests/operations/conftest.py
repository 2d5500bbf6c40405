"""Operations' fixtures: a database stamped at the migrations' head (the tests build their
schema with ``create_all``, which writes no ``alembic_version``), and a Datapass ready in
every respect (``make_ready``)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from datapass.audit import checkpoints
from datapass.extensions import db
from datapass.keys import service as keys_service
from datapass.keys.models import KeyUsage
from datapass.operations import health, heartbeats


@pytest.fixture
def alembic_table(backend, app_for_backend):
    """An ``alembic_version`` table for the test (its rows roll back with the test's
    transaction); dropped afterwards."""
    app = app_for_backend(backend)
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE IF NOT EXISTS alembic_version "
                "(version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
            )
        )
    yield
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))


def stamp(revision: str) -> None:
    db.session.execute(text("DELETE FROM alembic_version"))
    db.session.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": revision})
    db.session.commit()


def make_ready(*, key: bool = True, revision: str | None = None) -> None:
    """Every readiness check passes: schema at head, a current key, a signed chain, the
    scheduler alive (at the frozen clock's moment)."""
    stamp(revision or health.script_heads()[0])
    if key:
        keys_service.current_key(KeyUsage.TOKEN)
    checkpoints.create_checkpoint()
    db.session.commit()
    heartbeats.scheduler_alive(starting=True)


@pytest.fixture
def ready(alembic_table, app):
    make_ready()
    return app
