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
