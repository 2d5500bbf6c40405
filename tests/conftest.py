"""Test wiring: every database test runs on SQLite and, when DATAPASS_TEST_DATABASE_URL is
set, on PostgreSQL too; through the app factory, with a frozen clock and one rolled-back
transaction per test."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import g, request_started
from flask_sqlalchemy.session import Session as FlaskSession
from sqlalchemy import text

from datapass import clock, create_app
from datapass.extensions import db

PG_URL = os.environ.get("DATAPASS_TEST_DATABASE_URL")
REQUIRE_ALL = os.environ.get("DATAPASS_REQUIRE_ALL_TESTS") == "1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FROZEN_AT = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

_TMP = Path(tempfile.mkdtemp(prefix="datapass-tests-"))


def missing(reason: str):
    """Skip for a missing service, except in CI where every test must run."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (DATAPASS_REQUIRE_ALL_TESTS=1 : aucun test ne peut être sauté)")
    pytest.skip(reason)


def base_config(url: str, **extra) -> dict:
    config = {
        "ENV": "testing",
        "DATABASE_URL": url,
        "SECRET_KEY": "tests-secret-key-that-is-long-enough-0123456789",
        "MASTER_KEY": "dGVzdHMtbWFzdGVyLWtleS0wMTIzNDU2Nzg5YWJjZGU=",
        "BASE_URL": "http://datapass.test",
        "MAIL_BACKEND": "file",
        "MAIL_DIR": str(_TMP / "mail"),
        "ARGON2_TIME_COST": 1,
        "ARGON2_MEMORY_KIB": 1024,
        "DEMO_SKIP_MFA": True,
        # No background flusher: the request that finds the use buffer due writes it, so
        # tests see the counts at once (the reliability suite runs the real thread).
        "USAGE_FLUSH_SECONDS": 0,
    }
    config.update(extra)
    return config


def _make_app(backend: str):
    if backend == "postgresql":
        if not PG_URL:
            missing("PostgreSQL indisponible : DATAPASS_TEST_DATABASE_URL n'est pas défini")
        url = PG_URL
    else:
        url = f"sqlite:///{_TMP / 'tests.db'}"
    app = create_app(base_config(url))
    app.config["WTF_CSRF_ENABLED"] = False
    with app.app_context():
        db.drop_all()
        db.create_all()
    return app


_APPS: dict[str, object] = {}


class _ConnectionSession(FlaskSession):
    """Flask-SQLAlchemy's session picks its engine itself; here it must use the test's
    connection, so that everything happens inside the outer transaction."""

    def get_bind(self, *args, **kwargs):
        return self.bind


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def app_for_backend():
    def get(backend: str):
        if backend not in _APPS:
            _APPS[backend] = _make_app(backend)
        return _APPS[backend]

    return get


@pytest.fixture(autouse=True)
def frozen_clock():
    clock.set_frozen(FROZEN_AT)
    yield clock
    clock.set_frozen(None)


@pytest.fixture
def app(backend, app_for_backend):
    """The app inside one outer transaction, rolled back after the test; services' commits
    become savepoints."""
    app = app_for_backend(backend)
    with app.app_context():
        connection = db.engine.connect()
        outer = connection.begin()
        original = db.session
        db.session = db._make_scoped_session(
            {
                "class_": _ConnectionSession,
                "bind": connection,
                "join_transaction_mode": "create_savepoint",
            }
        )
        # The test's app context is shared by every test-client request, and with it `g`,
        # where Flask-Login caches the signed-in user: forget it at each request, as a real
        # server does, so that each request (and each client) loads its own session.
        request_started.connect(_forget_cached_user, app)
        try:
            yield app
        finally:
            request_started.disconnect(_forget_cached_user, app)
            db.session.remove()
            db.session = original
            outer.rollback()
            connection.close()


def _forget_cached_user(sender, **extra):
    g.pop("_login_user", None)


@pytest.fixture
def committed_app(backend, app_for_backend):
    """The app with real commits (threads, several connections, a live server); every
    table is emptied afterwards."""
    app = app_for_backend(backend)
    with app.app_context():
        _empty_tables()
        try:
            yield app
        finally:
            db.session.remove()
            _empty_tables()


def _empty_tables():
    db.session.rollback()
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    else:
        for name in tables:
            db.session.execute(text(f"DELETE FROM {name}"))
    db.session.commit()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def csrf_app(app):
    """The same app with CSRF protection on, as in production."""
    app.config["WTF_CSRF_ENABLED"] = True
    yield app
    app.config["WTF_CSRF_ENABLED"] = False


@pytest.fixture
def mail_dir(app):
    folder = Path(app.config["MAIL_DIR"])
    shutil.rmtree(folder, ignore_errors=True)
    return folder


# --- browser ------------------------------------------------------------------------------


@pytest.fixture
def live_server(committed_app):
    """The app served over HTTP in a thread (the browser needs a real server)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, committed_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    committed_app.config["BASE_URL"] = f"http://127.0.0.1:{server.server_port}"
    committed_app.config["WTF_CSRF_ENABLED"] = True
    try:
        yield committed_app.config["BASE_URL"]
    finally:
        server.shutdown()
        thread.join(timeout=5)
        committed_app.config["BASE_URL"] = "http://datapass.test"
        committed_app.config["WTF_CSRF_ENABLED"] = False


@pytest.fixture(scope="session")
def chromium():
    if not os.path.exists(CHROMIUM):
        missing("Chromium indisponible (/usr/bin/chromium) : paquet Debian « chromium » absent")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, live_server):
    context = chromium.new_context(base_url=live_server, locale="fr-FR")
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def login(client, user, *, reauth: bool = True) -> None:
    """Open a session for ``user`` without going through the form (the form has its own
    tests): the same keys the login service writes."""
    now = clock.now().isoformat()
    with client.session_transaction() as sess:
        sess["_user_id"] = user.get_id()
        sess["_fresh"] = True
        sess["auth_at"] = now
        if reauth:
            sess["reauth_at"] = now


@pytest.fixture
def login_as(client):
    def do(user, **kwargs):
        login(client, user, **kwargs)
        return client

    return do


@pytest.fixture(autouse=True)
def log_formatters_restored():
    """An app built with DATAPASS_LOG_FORMAT=json formats the root logger's handlers for the
    whole process, pytest's capture included: later tests get theirs back as they were."""
    root = logging.getLogger()
    saved = [(handler, handler.formatter) for handler in root.handlers]
    yield
    for handler, formatter in saved:
        handler.setFormatter(formatter)
