import os
import stat

import pytest

from datapass import config as config_module
from datapass.config import ConfigError


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
    from pathlib import Path

    from datapass.config import ROOT, SETTINGS

    readme = (Path(ROOT) / "README.md").read_text()
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in readme]
    assert missing == [], f"README sans ces variables (flask datapass config) : {missing}"
