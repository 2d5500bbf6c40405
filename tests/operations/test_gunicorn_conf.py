"""``gunicorn.conf.py``: what it reads from the environment and the worker class it chooses
(issue 13, point 2; the production smoke test starts gunicorn with it)."""

from __future__ import annotations

import runpy
import subprocess
import sys

import pytest

from tests.reliability.servers import ROOT

CONF = ROOT / "gunicorn.conf.py"


def load(monkeypatch, **environ: str) -> dict:
    for name in (
        "HOST",
        "PORT",
        "WEB_CONCURRENCY",
        "WEB_THREADS",
        "WEB_TIMEOUT",
        "DATAPASS_LOG_FORMAT",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONF))


def test_threaded_workers_so_that_a_long_stream_is_not_cut(monkeypatch):
    conf = load(monkeypatch)
    assert conf["worker_class"] == "gthread"
    assert conf["threads"] >= 2
    assert conf["wsgi_app"] == "app:app"
    assert conf["preload_app"] is False
    # A worker restarted after N requests would cut a stream after graceful_timeout.
    assert "max_requests" not in conf
    assert conf["bind"] == ["0.0.0.0:8000"]


def test_bind_and_workers_from_the_environment(monkeypatch):
    conf = load(monkeypatch, HOST="127.0.0.1", PORT="8123", WEB_CONCURRENCY="3", WEB_THREADS="8")
    assert conf["bind"] == ["127.0.0.1:8123"]
    assert conf["workers"] == 3
    assert conf["threads"] == 8
    assert load(monkeypatch, HOST="::1", PORT="9000")["bind"] == ["[::1]:9000"]


@pytest.mark.parametrize("value", ["zéro", "0", "-2"])
def test_a_bad_number_is_refused_in_one_french_line(monkeypatch, value):
    with pytest.raises(SystemExit) as stop:
        load(monkeypatch, WEB_CONCURRENCY=value)
    assert str(stop.value) == f"WEB_CONCURRENCY doit être un entier positif (reçu {value!r})."


def test_gunicorn_accepts_the_file():
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(CONF), "--check-config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_access_line_per_request_whatever_the_log_format(monkeypatch):
    assert load(monkeypatch)["accesslog"] == "-"
    # Datapass writes its own JSON line per request (request id, route, status, duration).
    assert load(monkeypatch, DATAPASS_LOG_FORMAT="json")["accesslog"] is None
