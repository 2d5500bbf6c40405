"""Every route declares who may call it; an undeclared one is refused."""

import pytest
from flask import Blueprint

from datapass import access, create_app
from tests.conftest import base_config


def test_every_route_declares_its_access(app):
    undeclared = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if access.policy_of(view) is None:
            undeclared.append(f"{rule.endpoint} ({rule.rule})")
    assert undeclared == [], "routes sans politique d'accès : " + ", ".join(undeclared)


def test_an_undeclared_route_is_refused(tmp_path):
    app = create_app(base_config(f"sqlite:///{tmp_path / 'x.db'}"))
    bp = Blueprint("forgotten", __name__)

    @bp.route("/oubli")
    def forgotten():
        return "secret"

    app.register_blueprint(bp)
    response = app.test_client().get("/oubli")
    assert response.status_code == 403
    assert b"secret" not in response.data


def test_declaring_twice_is_an_error():
    def view():
        return ""

    access.public(view)
    with pytest.raises(RuntimeError):
        access.signed_in(view)


def test_signed_in_pages_redirect_anonymous_visitors_to_login(client):
    response = client.get("/profil")
    assert response.status_code == 302
    assert "/connexion" in response.headers["Location"]


def test_development_pages_do_not_exist_in_production(tmp_path, monkeypatch):
    config = base_config(f"sqlite:///{tmp_path / 'x.db'}", ENV="production")
    app = create_app(config)
    assert app.test_client().get("/dev/courriels").status_code == 404
