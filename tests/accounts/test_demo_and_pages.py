"""Demo data (idempotent, refused in production) and the public and home pages."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from stdnum.fr import siret

from datapass import create_app, demo
from datapass.accounts.models import Membership, Organisation, RoleGrant, User
from datapass.audit.models import AuditEvent
from datapass.catalogue.models import Api
from datapass.demo.accounts import ACCOUNTS
from datapass.extensions import db
from tests import factories
from tests.accounts.conftest import post_login, signed_in, text
from tests.conftest import base_config
from tests.tokens.conftest import make_api

TABLES = (User, Organisation, Membership, RoleGrant, AuditEvent)


def _counts() -> dict[str, int]:
    return {m.__name__: db.session.scalar(select(func.count()).select_from(m)) for m in TABLES}


def _run(app, *args):
    result = app.test_cli_runner().invoke(args=["datapass", "demo", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_is_idempotent(app):
    first = json.loads(_run(app, "--json"))
    counts = _counts()
    assert counts["User"] == 4 and counts["Organisation"] == 3
    second = json.loads(_run(app, "--json"))
    # The same accounts and machine client; only the demo token is issued afresh (issue 4).
    assert second["accounts"] == first["accounts"]
    assert second["provider_client"] == first["provider_client"]
    assert second["token"]["jti"] != first["token"]["jti"]
    assert {k: v for k, v in _counts().items() if k != "AuditEvent"} == {
        k: v for k, v in counts.items() if k != "AuditEvent"
    }
    assert set(first["accounts"]) == {"applicant", "instructor", "security_officer", "admin"}
    for account in first["accounts"].values():
        assert set(account) == {"email", "password"}
        assert len(account["password"]) >= 12


def test_demo_data_is_what_the_demo_needs(app):
    demo.run_demo()
    for organisation in db.session.scalars(select(Organisation)):
        assert siret.is_valid(organisation.siret)
    applicant = db.session.scalar(select(User).where(User.email == ACCOUNTS[0].email))
    assert len(applicant.memberships) == 2 and all(m.verified for m in applicant.memberships)
    for spec in ACCOUNTS:
        user = db.session.scalar(select(User).where(User.email == spec.email))
        assert user.is_demo
        for role in spec.roles:
            if role != "instructor":
                assert user.has_role(role)
    names = {o.name for o in db.session.scalars(select(Organisation))}
    assert {"Commune de Dunkerque", "Île-de-France Mobilités"} <= names


def test_demo_instructor_gets_the_catalogue_apis(app):
    api = make_api()
    demo.run_demo()
    instructor = db.session.scalar(select(User).where(User.email == ACCOUNTS[1].email))
    every_api = set(db.session.scalars(select(Api.id)))
    assert api.id in every_api and instructor.instructed_api_ids() == every_api
    other = make_api(slug="api-nouvelle")
    demo.run_demo()
    assert instructor.instructed_api_ids() == every_api | {other.id}


def test_demo_if_empty_leaves_a_used_database_alone(app):
    factories.user()
    before = _counts()
    output = _run(app, "--if-empty")
    assert _counts() == before
    assert "admin@demo.datapass.gouv.fr" in output  # the accounts are printed all the same


def test_demo_summary_is_readable_french(app):
    output = _run(app)
    assert "Comptes de démonstration" in output
    assert "Officier de sécurité" in output
    assert "Administrateur-Demo-2026" in output


def test_demo_scale_bulk_inserts_idempotently(app):
    _run(app, "--scale", "50")
    assert db.session.scalar(select(func.count(User.id))) == 54
    _run(app, "--scale", "50")
    assert db.session.scalar(select(func.count(User.id))) == 54
    for organisation in db.session.scalars(select(Organisation)):
        assert siret.is_valid(organisation.siret)


def test_demo_refuses_to_run_in_production(tmp_path):
    app = create_app(base_config(f"sqlite:///{tmp_path / 'prod.db'}", ENV="production"))
    result = app.test_cli_runner().invoke(args=["datapass", "demo"])
    assert result.exit_code == 1
    assert "production" in result.output


@pytest.mark.parametrize("key", ["applicant", "instructor", "security_officer", "admin"])
def test_each_demo_account_signs_in(app, client, key):
    accounts = demo.run_demo()["accounts"]
    response = post_login(client, accounts[key]["email"], accounts[key]["password"])
    assert response.headers["Location"] == "/"
    assert signed_in(client)


# --- pages ------------------------------------------------------------------------------


def test_anonymous_home_presents_datapass(client):
    page = text(client.get("/"))
    assert "Se connecter" in page
    assert "18 mois" in page


def test_home_cards_follow_the_roles(client, login_as):
    admin = factories.user(roles=("admin",), is_demo=True)
    login_as(admin)
    page = text(client.get("/"))
    assert 'href="/admin/utilisateurs"' in page
    assert 'href="/admin/organisations"' in page
    assert 'href="/profil"' in page


def test_applicant_home_shows_the_current_organisation(client, login_as):
    organisation = factories.organisation("Commune de Dunkerque")
    login_as(factories.user(organisation=organisation))
    page = text(client.get("/"))
    assert "Vous agissez pour <strong>Commune de Dunkerque</strong>" in page
    assert 'href="/admin/utilisateurs"' not in page


def test_legal_page(client):
    page = text(client.get("/mentions-legales"))
    assert "Données personnelles" in page and "Accessibilité" in page


def test_profile_page(client, login_as):
    organisation = factories.organisation("Commune de Dunkerque")
    login_as(factories.user(organisation=organisation, roles=("security_officer",), is_demo=True))
    page = text(client.get("/profil"))
    assert "Commune de Dunkerque" in page
    assert "Officier de sécurité" in page
    assert "Activer la double authentification" in page
