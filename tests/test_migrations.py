"""The migrations and the models agree: upgrading an empty database to head gives exactly
the schema the models describe (and downgrading to base empties it)."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text

from datapass import create_app
from datapass.extensions import db
from tests.conftest import PG_URL, base_config, missing


def _schema_diff(url: str):
    app = create_app(base_config(url))
    with app.app_context():
        upgrade()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, db.metadata)
        downgrade(revision="base")
        remaining = set(inspect(db.engine).get_table_names()) - {"alembic_version"}
        db.engine.dispose()
    return diff, remaining


def test_migrations_match_models_on_sqlite(tmp_path):
    diff, remaining = _schema_diff(f"sqlite:///{tmp_path / 'migrations.db'}")
    assert diff == [], f"models and migrations disagree: {diff}"
    assert remaining == set()


def test_migrations_match_models_on_postgresql():
    if not PG_URL:
        missing("PostgreSQL indisponible : DATAPASS_TEST_DATABASE_URL n'est pas défini")
    base, _, _ = PG_URL.rpartition("/")
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE IF EXISTS datapass_migrations"))
        connection.execute(text("CREATE DATABASE datapass_migrations"))
    try:
        diff, remaining = _schema_diff(f"{base}/datapass_migrations")
    finally:
        with admin.connect() as connection:
            connection.execute(text("DROP DATABASE IF EXISTS datapass_migrations"))
        admin.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"
    assert remaining == set()


@pytest.mark.parametrize("flag", ["--help"])
def test_flask_db_commands_are_wired(flag):
    app = create_app(base_config("sqlite://"))
    result = app.test_cli_runner().invoke(args=["db", flag])
    assert result.exit_code == 0


def test_usage_recent_is_filled_from_the_events_it_replaces_the_index_for(tmp_path):
    """The revision that drops the (token_id, occurred_at) index first copies each token's
    ten newest events into usage_recent (the last calls and the unused-access evidence)."""
    app = create_app(base_config(f"sqlite:///{tmp_path / 'recent.db'}"))
    with app.app_context():
        upgrade(revision="a006d689e439")
        insert = text(
            "INSERT INTO usage_events (provider_id, event_id, token_id, api_id, "
            "organisation_id, occurred_at, day, endpoint, status, latency_ms, caller_ip) "
            "VALUES (1, :id, :token, 1, 1, :at, '2026-11-28', '/v2/x', 200, 5, NULL)"
        )
        with db.engine.begin() as connection:
            for i in range(12):
                connection.execute(
                    insert, {"id": f"a{i}", "token": 1, "at": f"2026-11-28 08:{i:02d}:00.000000"}
                )
            connection.execute(insert, {"id": "b0", "token": 2, "at": "2026-11-28 07:00:00.000000"})
        upgrade()
        with db.engine.connect() as connection:
            kept = connection.execute(
                text("SELECT token_id, event_id FROM usage_recent ORDER BY token_id, event_id")
            ).all()
        db.engine.dispose()
    assert kept == [(1, f"a{i:d}") for i in sorted(range(2, 12), key=str)] + [(2, "b0")]
