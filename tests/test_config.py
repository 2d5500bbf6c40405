import os
import stat
from pathlib import Path

import jwt
import pytest
from flask import render_template_string

from datapass import config as config_module
from datapass import create_app
from datapass.accounts import links
from datapass.actor import Actor
from datapass.config import ROOT, SETTINGS, ConfigError
from datapass.extensions import db
from datapass.lifecycle import mails as lifecycle_mails
from datapass.tokens import issuance as token_issuance
from tests.conftest import base_config
from tests.tokens.conftest import make_habilitation


def test_production_refuses_to_start_without_secret_key():
    with pytest.raises(ConfigError) as error:
        config_module.load(environ={"DATAPASS_ENV": "production"})
    assert "DATAPASS_SECRET_KEY" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value", ["changeme", "dev", "secret", ""])
def test_production_refuses_known_default_secrets(value):
    environ = {
        "DATAPASS_ENV": "production",
        "DATAPASS_SECRET_KEY": value,
        "DATAPASS_MASTER_KEY": config_module.new_master_key(),
    }
    with pytest.raises(ConfigError):
        config_module.load(environ=environ)


def test_production_refuses_missing_master_key():
    environ = {"DATAPASS_ENV": "production", "DATAPASS_SECRET_KEY": "x" * 48}
    with pytest.raises(ConfigError) as error:
        config_module.load(environ=environ)
    assert "DATAPASS_MASTER_KEY" in str(error.value)


def test_production_refuses_malformed_master_key():
    environ = {
        "DATAPASS_ENV": "production",
        "DATAPASS_SECRET_KEY": "x" * 48,
        "DATAPASS_MASTER_KEY": "pas-du-base64!",
    }
    with pytest.raises(ConfigError):
        config_module.load(environ=environ)


def test_production_starts_with_proper_secrets():
    environ = {
        "DATAPASS_ENV": "production",
        "DATAPASS_SECRET_KEY": "k" * 48,
        "DATAPASS_MASTER_KEY": config_module.new_master_key(),
        "DATAPASS_BASE_URL": "https://datapass.gouv.fr",
    }
    config = config_module.load(environ=environ)
    assert len(config["MASTER_KEY_BYTES"]) == 32


def test_development_generates_secrets_once_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "INSTANCE", tmp_path)
    first = config_module.load(environ={})
    second = config_module.load(environ={})
    assert first["SECRET_KEY"] == second["SECRET_KEY"]
    assert first["MASTER_KEY"] == second["MASTER_KEY"]
    for name in ("secret_key", "master_key"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode == 0o600


def test_environment_overrides_and_validation():
    config = config_module.load(
        environ={"DATAPASS_SESSION_HOURS": "8"}, overrides={"ENV": "testing"}
    )
    assert config["SESSION_HOURS"] == 8
    with pytest.raises(ConfigError):
        config_module.load(environ={"DATAPASS_SESSION_HOURS": "huit"})
    with pytest.raises(ConfigError):
        config_module.load(environ={"DATAPASS_ENV": "staging"})


def test_readme_documents_every_setting():
    readme = (Path(ROOT) / "README.md").read_text()
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in readme]
    assert missing == [], f"README sans ces variables (flask datapass config) : {missing}"


# --- the base URL (issue 11, point 8) ---------------------------------------------------------

DEV_SECRETS = {
    "SECRET_KEY": "tests-secret-key-that-is-long-enough-0123456789",
    "MASTER_KEY": "dGVzdHMtbWFzdGVyLWtleS0wMTIzNDU2Nzg5YWJjZGU=",
}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "http://127.0.0.1:5000"),
        ({"PORT": "8080"}, "http://127.0.0.1:8080"),
        ({"PORT": "8080", "HOST": "0.0.0.0"}, "http://127.0.0.1:8080"),
        ({"PORT": "8081", "HOST": "localhost"}, "http://localhost:8081"),
        ({"PORT": "8080", "DATAPASS_BASE_URL": "https://dp.example.fr"}, "https://dp.example.fr"),
    ],
)
def test_development_base_url_follows_the_port_served(environ, expected):
    config = config_module.load(environ=environ, overrides=dict(DEV_SECRETS))
    assert config["BASE_URL"] == expected


def test_a_bad_port_is_refused_in_one_french_line():
    with pytest.raises(ConfigError) as error:
        config_module.load(environ={"PORT": "huit"}, overrides=dict(DEV_SECRETS))
    assert "PORT invalide" in str(error.value)


def test_production_requires_base_url():
    environ = {
        "DATAPASS_ENV": "production",
        "DATAPASS_SECRET_KEY": "k" * 48,
        "DATAPASS_MASTER_KEY": config_module.new_master_key(),
        "PORT": "8080",
    }
    with pytest.raises(ConfigError) as error:
        config_module.load(environ=environ)
    assert "DATAPASS_BASE_URL" in str(error.value)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError):
        config_module.load(environ={**environ, "DATAPASS_BASE_URL": "datapass.gouv.fr"})
    config = config_module.load(environ={**environ, "DATAPASS_BASE_URL": "https://dp.gouv.fr"})
    assert config["BASE_URL"] == "https://dp.gouv.fr"


def test_port_8080_reaches_mail_links_token_issuer_and_export_recipe(tmp_path, monkeypatch):
    """`PORT=8080 make run`: an app built with no BASE_URL signs tokens for, and writes links
    to, port 8080 (not 5000)."""
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("DATAPASS_BASE_URL", raising=False)
    config = base_config(f"sqlite:///{tmp_path / 'port.db'}", ENV="development")
    del config["BASE_URL"]
    app = create_app(config)
    assert app.config["BASE_URL"] == "http://127.0.0.1:8080"
    with app.app_context():
        db.create_all()
        habilitation = make_habilitation()
        token, raw = token_issuance.issue_for_habilitation(habilitation, Actor.system("test"))
        claims = jwt.decode(raw, options={"verify_signature": False})
        assert claims["iss"] == "http://127.0.0.1:8080"
        assert lifecycle_mails.renewal_url(token).startswith("http://127.0.0.1:8080/jetons/")
        link = links.make_password_link(habilitation.requester, "reset")
        assert link.startswith("http://127.0.0.1:8080/mot-de-passe/")
        with app.test_request_context("/audit/exports/1"):
            assert render_template_string("{{ audit_base_url }}") == "http://127.0.0.1:8080"
        db.session.rollback()


# --- secrets from files, DATABASE_URL (issue 13) -------------------------------------------


def _production(**extra: str) -> dict[str, str]:
    environ = {
        "DATAPASS_ENV": "production",
        "DATAPASS_BASE_URL": "https://datapass.gouv.fr",
    }
    environ.update(extra)
    return environ


def test_every_setting_may_come_from_a_file_stripped(tmp_path):
    secret = "f" * 48
    master = config_module.new_master_key()
    (tmp_path / "secret_key").write_text(f"  {secret}\n")
    (tmp_path / "master_key").write_text(f"{master}\n")
    (tmp_path / "smtp").write_text("mot de passe SMTP\n")
    (tmp_path / "port").write_text("2525\n")
    config = config_module.load(
        environ=_production(
            DATAPASS_SECRET_KEY_FILE=str(tmp_path / "secret_key"),
            DATAPASS_MASTER_KEY_FILE=str(tmp_path / "master_key"),
            DATAPASS_SMTP_PASSWORD_FILE=str(tmp_path / "smtp"),
            DATAPASS_SMTP_PORT_FILE=str(tmp_path / "port"),
        )
    )
    assert config["SECRET_KEY"] == secret
    assert config["MASTER_KEY"] == master
    assert config["SMTP_PASSWORD"] == "mot de passe SMTP"
    assert config["SMTP_PORT"] == 2525  # parsed like the variable itself


def test_a_setting_and_its_file_both_set_is_a_config_error(tmp_path):
    (tmp_path / "secret_key").write_text("f" * 48)
    environ = _production(
        DATAPASS_SECRET_KEY="k" * 48,
        DATAPASS_SECRET_KEY_FILE=str(tmp_path / "secret_key"),
        DATAPASS_MASTER_KEY=config_module.new_master_key(),
    )
    with pytest.raises(ConfigError) as error:
        config_module.load(environ=environ)
    message = str(error.value)
    assert "DATAPASS_SECRET_KEY et DATAPASS_SECRET_KEY_FILE" in message
    assert "\n" not in message


def test_an_unreadable_file_is_named_in_one_french_line(tmp_path):
    missing_file = tmp_path / "absent"
    environ = _production(DATAPASS_SECRET_KEY="k" * 48, DATAPASS_MASTER_KEY_FILE=str(missing_file))
    with pytest.raises(ConfigError) as error:
        config_module.load(environ=environ)
    message = str(error.value)
    assert message.startswith("DATAPASS_MASTER_KEY_FILE : impossible de lire")
    assert str(missing_file) in message
    assert "\n" not in message


def test_an_empty_secret_file_is_refused_in_production(tmp_path):
    (tmp_path / "secret_key").write_text("\n")
    environ = _production(
        DATAPASS_SECRET_KEY_FILE=str(tmp_path / "secret_key"),
        DATAPASS_MASTER_KEY=config_module.new_master_key(),
    )
    with pytest.raises(ConfigError) as error:
        config_module.load(environ=environ)
    assert "DATAPASS_SECRET_KEY" in str(error.value)


def test_a_file_value_that_does_not_parse_names_the_setting(tmp_path):
    (tmp_path / "port").write_text("vingt-cinq")
    with pytest.raises(ConfigError) as error:
        config_module.load(
            environ={"DATAPASS_SMTP_PORT_FILE": str(tmp_path / "port")},
            overrides={"ENV": "testing", "SECRET_KEY": "k" * 48, "MASTER_KEY": "x"},
        )
    assert "DATAPASS_SMTP_PORT invalide" in str(error.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db:5432/datapass", "postgresql+psycopg://u:p@db:5432/datapass"),
        (
            "postgresql://u@db/datapass?sslmode=require",
            "postgresql+psycopg://u@db/datapass?sslmode=require",
        ),
        ("postgresql+psycopg://u@db/datapass", "postgresql+psycopg://u@db/datapass"),
        ("sqlite:////var/lib/datapass.db", "sqlite:////var/lib/datapass.db"),
    ],
)
def test_database_url_is_read_and_given_psycopg3(url, expected):
    config = config_module.load(environ={"DATABASE_URL": url}, overrides={"ENV": "testing"})
    assert config["DATABASE_URL"] == expected


def test_datapass_database_url_wins_over_database_url():
    config = config_module.load(
        environ={
            "DATABASE_URL": "postgres://platform@db/other",
            "DATAPASS_DATABASE_URL": "postgresql://datapass@db/datapass",
        },
        overrides={"ENV": "testing"},
    )
    assert config["DATABASE_URL"] == "postgresql+psycopg://datapass@db/datapass"


def test_database_url_from_a_file(tmp_path):
    (tmp_path / "url").write_text("postgres://datapass:mot-de-passe@db/datapass\n")
    config = config_module.load(
        environ={"DATAPASS_DATABASE_URL_FILE": str(tmp_path / "url")},
        overrides={"ENV": "testing"},
    )
    assert config["DATABASE_URL"] == "postgresql+psycopg://datapass:mot-de-passe@db/datapass"


def test_the_app_connects_with_a_normalised_database_url(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://datapass@db.invalid/datapass")
    monkeypatch.delenv("DATAPASS_DATABASE_URL", raising=False)
    config = base_config("sqlite://")
    config.pop("DATABASE_URL")
    app = create_app(config)
    assert (
        app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://datapass@db.invalid/datapass"
    )
    with app.app_context():
        assert db.engine.dialect.driver == "psycopg"
