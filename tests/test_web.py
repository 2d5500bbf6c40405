"""Security headers, error pages and problem documents."""

import pytest
from flask_login import current_user  # noqa: F401

from datapass import create_app
from tests import factories
from tests.conftest import base_config


def test_security_headers_on_every_page(client):
    response = client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response.headers  # only in production


def test_hsts_in_production(tmp_path):
    app = create_app(base_config(f"sqlite:///{tmp_path / 'x.db'}", ENV="production"))
    response = app.test_client().get("/mentions-legales")
    assert "max-age" in response.headers["Strict-Transport-Security"]
    assert response.headers["Content-Security-Policy"]


def test_404_page_in_the_site_style(client):
    response = client.get("/nulle-part")
    assert response.status_code == 404
    assert "Page introuvable" in response.get_data(as_text=True)
    assert "fr-header" in response.get_data(as_text=True)


def test_api_errors_are_problem_documents(client):
    response = client.get("/api/v1/nulle-part")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == 404 and body["title"] and body["detail"] and body["type"]


def test_missing_csrf_token_is_refused_in_french(csrf_app):
    client = csrf_app.test_client()
    response = client.post("/connexion", data={"email": "a@b.fr", "password": "x"})
    assert response.status_code == 400
    assert "jeton de sécurité" in response.get_data(as_text=True)


def test_the_machine_api_needs_no_csrf_token(csrf_app):
    """Machine clients send no cookie, hence no CSRF token: the API answers on its own
    terms (a leak report is accepted, a missing client authentication is a 401)."""
    client = csrf_app.test_client()
    foreign = "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"  # a well-formed JWS that is not ours
    assert client.post("/api/v1/leaks", data={"token": foreign}).status_code == 202
    response = client.post("/api/v1/introspect", data={"token": "a.b.c"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("get", "/api/v1/introspect", {"POST", "OPTIONS"}),
        ("delete", "/api/v1/revocations", {"GET", "HEAD", "OPTIONS"}),
        ("put", "/.well-known/oauth-authorization-server", {"GET", "HEAD", "OPTIONS"}),
        ("post", "/mentions-legales", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_405_says_which_methods_are_allowed(client, method, path, allowed):
    """RFC 9110 §15.5.6: a 405 carries `Allow`, on the machine API and on pages alike."""
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed
    if path.startswith(("/api/", "/.well-known/")):
        assert response.mimetype == "application/problem+json"
    else:
        assert "fr-header" in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/dsfr/dsfr.min.css", "/static/app.css"])
def test_assets_are_served_from_the_installed_packages(client, path):
    response = client.get(path)
    assert response.status_code == 200


def test_pages_are_not_cached(client, app):
    factories.organisation()
    assert client.get("/").headers["Cache-Control"] == "no-store"
