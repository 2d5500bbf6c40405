"""Datapass: access governance and token lifecycle for the State's data APIs."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, send_from_directory
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix

from datapass import access, web
from datapass import config as config_module
from datapass.config import ROOT
from datapass.extensions import csrf, db, login_manager, migrate

DSFR_DIST = ROOT / "node_modules" / "@gouvfr" / "dsfr" / "dist"


class DatapassFlask(Flask):
    """Flask, answering ``ensure_sync`` once per function. Datapass has no async view or
    hook, and Flask otherwise inspects the code flags of every hook on every request (the
    machine API's hot path pays for it). Its URL map bounds ``<int:…>`` ids (404 beyond)."""

    url_map_class = web.DatapassMap

    def ensure_sync(self, func):
        cache = self.__dict__.setdefault("_dp_sync", {})
        try:
            return cache[func]
        except KeyError:
            sync = cache[func] = super().ensure_sync(func)
            return sync
        except TypeError:  # an unhashable callable: not cached
            return super().ensure_sync(func)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the application. Only wires: no migration, seeding, network or scheduler here."""
    settings = config_module.load(config)
    app = DatapassFlask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
        instance_path=str(ROOT / "instance"),
    )
    app.config.update(settings)
    app.config.update(config_module.flask_settings(settings))
    if app.config["TRUSTED_PROXIES"]:
        n = app.config["TRUSTED_PROXIES"]
        proxied = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
        app.wsgi_app = proxied  # type: ignore[method-assign]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    db.init_app(app)
    migrate.init_app(
        app, db, directory=str(ROOT / "migrations"), compare_type=True, render_as_batch=True
    )
    csrf.init_app(app)
    login_manager.init_app(app)
    # Datapass never sets a remember-me cookie (sessions end after SESSION_HOURS whatever
    # happens), so Flask-Login's cookie refresh has nothing to do on any response.
    app.after_request_funcs[None].remove(login_manager._update_remember_cookie)
    _register_models()

    from datapass.accounts import mfa as accounts_mfa
    from datapass.accounts import sessions as accounts_sessions
    from datapass.catalogue import clients as catalogue_clients

    login_manager.user_loader(accounts_sessions.load_session_user)
    login_manager.login_view = "accounts.login"
    login_manager.login_message = "Connectez-vous pour accéder à cette page."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "basic"

    _register_blueprints(app)
    _connect_receivers()
    access.init_app(
        app,
        access.Checks(
            authenticate_client=catalogue_clients.authenticate_client,
            mfa_enrolment_pending=accounts_mfa.mfa_enrolment_pending,
            recently_authenticated=accounts_sessions.recently_authenticated,
        ),
    )
    web.init_app(app)

    from datapass.operations import requestlog

    requestlog.init_app(app)  # after web: its timing hook runs first

    @app.route("/dsfr/<path:filename>", endpoint="dsfr")
    @access.public
    def dsfr(filename: str):
        return send_from_directory(DSFR_DIST, filename, max_age=86400)

    access.public(app.view_functions["static"])

    from datapass import cli

    cli.init_app(app)
    return app


def _register_models() -> None:
    # Import every domain's tables so metadata (and Alembic) sees them all.
    from datapass.accounts import models as _accounts  # noqa: F401
    from datapass.audit import models as _audit  # noqa: F401
    from datapass.authorizations import models as _authorizations  # noqa: F401
    from datapass.catalogue import models as _catalogue  # noqa: F401
    from datapass.consumption import models as _consumption  # noqa: F401
    from datapass.keys import models as _keys  # noqa: F401
    from datapass.lifecycle import models as _lifecycle  # noqa: F401
    from datapass.notify import models as _notify  # noqa: F401
    from datapass.operations import models as _operations  # noqa: F401
    from datapass.tokens import models as _tokens  # noqa: F401


def _connect_receivers() -> None:
    # Every receiver of datapass.signals, in one list: a receiver connects when its module is
    # imported, so importing them here keeps the reactions of higher domains independent of
    # which pages happen to import them.
    from datapass.consumption import flusher as _flusher  # noqa: F401 - use_buffer_due
    from datapass.consumption import seal as _seal  # noqa: F401 - audit_verifying
    from datapass.lifecycle import updates as _updates  # noqa: F401 - habilitation_updated, update_closed
    from datapass.tokens import issuance as _issuance  # noqa: F401 - habilitation_approved
    from datapass.tokens import key_rotation as _key_rotation  # noqa: F401 - signing_key_created
    from datapass.tokens import transitions as _transitions  # noqa: F401 - habilitation_revoked


def _register_blueprints(app: Flask) -> None:
    from datapass.accounts import admin_views  # noqa: F401 - its routes join accounts_bp
    from datapass.accounts.views import bp as accounts_bp
    from datapass.audit.views import bp as audit_bp
    from datapass.authorizations.views import bp as authorizations_bp
    from datapass.catalogue.views import bp as catalogue_bp
    from datapass.consumption.api import bp as consumption_api_bp
    from datapass.consumption.views import bp as consumption_bp
    from datapass.lifecycle.views import bp as lifecycle_bp
    from datapass.notify.views import bp as notify_bp
    from datapass.operations.views import bp as operations_bp
    from datapass.tokens.api import bp as tokens_api_bp
    from datapass.tokens.views import bp as tokens_bp

    for blueprint in (
        accounts_bp,
        authorizations_bp,
        catalogue_bp,
        notify_bp,
        tokens_api_bp,
        consumption_api_bp,
        audit_bp,
        consumption_bp,
        tokens_bp,
        lifecycle_bp,
        operations_bp,
    ):
        app.register_blueprint(blueprint)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    """SQLite: enforce foreign keys, wait on locks, write-ahead log, and let SQLAlchemy own
    transactions (pysqlite's own handling breaks SAVEPOINT and delays BEGIN)."""
    module = type(dbapi_connection).__module__
    if "sqlite3" not in module:
        return
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# Transactions on SQLite begin in datapass.extensions (_sqlite_begin).
