"""The API catalogue: its seed, its public pages, and its administration (APIs, scopes,
status and maintenance, providers, machine clients shown once and stored hashed)."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import func, select

from datapass import clock, vault
from datapass.audit.models import AuditEvent
from datapass.catalogue import clients
from datapass.catalogue.models import Api, MachineClient, Provider, Scope
from datapass.demo.catalogue import seed_catalogue
from datapass.extensions import db
from tests import factories


def html(response) -> str:
    return unescape(response.get_data(as_text=True))


@pytest.fixture
def apis(app):
    return factories.catalogue()


@pytest.fixture
def admin(app):
    person = factories.staff("admin")
    db.session.commit()
    return person


@pytest.fixture
def signed_admin(client, login_as, admin):
    login_as(admin)
    return client


def test_seed_is_complete_and_idempotent(app):
    apis = seed_catalogue()
    again = seed_catalogue()
    assert {a.id for a in apis.values()} == {a.id for a in again.values()}
    assert db.session.scalar(select(func.count()).select_from(Api)) == 6
    assert {p.slug for p in db.session.scalars(select(Provider))} == {
        "dinum",
        "cnaf",
        "msa",
        "men",
        "mesr",
        "dss",
    }
    etudiant = apis["statut-etudiant"]
    assert etudiant.audience == "https://particulier.api.gouv.fr/statut-etudiant"
    assert "1,7 million" in etudiant.coverage_note and "moitié" in etudiant.coverage_note
    assert etudiant.fallback_procedure.startswith("Plan B")
    eleve = apis["statut-eleve-scolarise"]
    assert {s.code: s.sensitive for s in eleve.scopes}["statut_boursier"] is True
    assert apis["api-entreprise"].provider.slug == "dinum"
    assert all(api.scopes and api.legal_bases for api in apis.values())


def test_public_catalogue(app, client, apis):
    page = html(client.get("/catalogue"))
    assert "Statut étudiant" in page and "Quotient familial CAF & MSA" in page
    detail = html(client.get("/catalogue/statut-etudiant"))
    assert "inscription_formation_initiale" in detail and "1,7 million" in detail


def test_only_administrators(app, client, login_as, apis):
    login_as(factories.staff("instructor", api=apis["statut-etudiant"]))
    assert client.get("/admin/catalogue").status_code == 403
    assert client.post(f"/admin/catalogue/apis/{apis['statut-etudiant'].id}").status_code == 403


def test_sensitive_changes_ask_for_a_recent_authentication(app, client, login_as, admin, apis):
    login_as(admin, reauth=False)
    clock.advance(timedelta(minutes=30))
    response = client.post(
        f"/admin/catalogue/fournisseurs/{apis['api-entreprise'].provider_id}/clients",
        data={"name": "x"},
    )
    assert response.status_code == 302 and "reauthentification" in response.headers["Location"]
    assert db.session.scalar(select(func.count()).select_from(MachineClient)) == 0


def test_edit_an_api(app, signed_admin, apis):
    api = apis["statut-etudiant"]
    response = signed_admin.post(
        f"/admin/catalogue/apis/{api.id}",
        data={
            "name": api.name,
            "description": api.description,
            "audience": api.audience,
            "legal_bases": "Code de l'éducation | https://www.legifrance.gouv.fr/x\nCRPA",
            "coverage_note": "Couvre désormais 2 millions d'étudiants.",
            "fallback_procedure": api.fallback_procedure,
            "renewal_policy": "instructor",
            "is_active": "y",
        },
    )
    assert response.status_code == 302
    db.session.expire_all()
    assert api.coverage_note == "Couvre désormais 2 millions d'étudiants."
    assert api.legal_bases == [
        {"name": "Code de l'éducation", "url": "https://www.legifrance.gouv.fr/x"},
        {"name": "CRPA", "url": ""},
    ]
    assert api.renewal_policy == "instructor"
    tags = db.session.scalars(select(AuditEvent.tag)).all()
    assert "catalogue:api:updated" in tags


def test_duplicate_audience_is_refused(app, signed_admin, apis):
    api = apis["statut-etudiant"]
    response = signed_admin.post(
        f"/admin/catalogue/apis/{api.id}",
        data={
            "name": api.name,
            "audience": apis["api-entreprise"].audience,
            "renewal_policy": "automatic",
        },
    )
    assert response.status_code == 422
    assert "Cette valeur est déjà utilisée" in html(response)
    db.session.expire_all()
    assert api.audience == "https://particulier.api.gouv.fr/statut-etudiant"


def test_maintenance_window(app, signed_admin, client, apis):
    api = apis["quotient-familial"]
    response = signed_admin.post(
        f"/admin/catalogue/apis/{api.id}/statut", data={"status": "maintenance", "message": ""}
    )
    assert response.status_code == 422
    assert "Expliquez la maintenance" in html(response)
    response = signed_admin.post(
        f"/admin/catalogue/apis/{api.id}/statut",
        data={
            "status": "maintenance",
            "message": "Bascule du centre de données de la CNAF.",
            "start": "2026-12-01T20:00",
            "end": "2026-12-02T06:00",
        },
    )
    assert response.status_code == 302
    db.session.expire_all()
    assert api.maintenance_start.isoformat().startswith("2026-12-01T19:00")  # Paris → UTC
    page = html(client.get("/catalogue/quotient-familial"))
    assert "Maintenance prévue (du 01/12/2026 à 20:00 au 02/12/2026 à 06:00" in page
    signed_admin.post(f"/admin/catalogue/apis/{api.id}/statut", data={"status": "available"})
    db.session.expire_all()
    assert api.maintenance_notice is None


def test_scopes(app, signed_admin, apis):
    api = apis["statut-etudiant"]
    response = signed_admin.post(
        f"/admin/catalogue/apis/{api.id}/donnees",
        data={"code": "regime_inscription", "label": "Régime d'inscription", "sensitive": "y"},
    )
    assert response.status_code == 302
    response = signed_admin.post(
        f"/admin/catalogue/apis/{api.id}/donnees",
        data={"code": "regime_inscription", "label": "Doublon"},
    )
    assert response.status_code == 422 and "déjà une donnée avec ce code" in html(response)
    scope = db.session.scalar(select(Scope).where(Scope.code == "regime_inscription"))
    assert scope.sensitive is True and scope.api_id == api.id
    signed_admin.post(f"/admin/catalogue/donnees/{scope.id}", data={"label": "Régime"})
    db.session.expire_all()
    assert (scope.label, scope.sensitive) == ("Régime", False)
    signed_admin.post(f"/admin/catalogue/donnees/{scope.id}/suppression")
    assert db.session.scalar(select(Scope).where(Scope.code == "regime_inscription")) is None


def test_machine_client_secret_shown_once_and_stored_hashed(app, signed_admin, apis):
    provider = apis["statut-etudiant"].provider
    response = signed_admin.post(
        f"/admin/catalogue/fournisseurs/{provider.id}/clients", data={"name": "Passerelle MESR"}
    )
    assert response.status_code == 200
    page = html(response)
    secret = re.search(r'id="client-secret">([^<]+)<', page).group(1)
    client_id = re.search(r'id="client-id">([^<]+)<', page).group(1)
    client = db.session.scalar(select(MachineClient).where(MachineClient.client_id == client_id))
    assert client.secret_hash == vault.sha256_hex(secret) and secret not in client.secret_hash
    assert clients.authenticate_client(client_id, secret).id == client.id
    payload = db.session.scalar(
        select(AuditEvent.payload).where(AuditEvent.tag == "catalogue:client:created")
    )
    assert secret not in payload and "hmac-sha256:" in payload
    assert secret not in html(signed_admin.get(f"/admin/catalogue/fournisseurs/{provider.id}"))
    signed_admin.post(f"/admin/catalogue/clients/{client.id}/revocation")
    db.session.expire_all()
    assert client.revoked_at is not None
    assert clients.authenticate_client(client_id, secret) is None


def test_new_provider_and_api(app, signed_admin):
    response = signed_admin.post(
        "/admin/catalogue/fournisseurs/nouveau",
        data={"slug": "cnam", "name": "Assurance maladie", "contact_email": "api@cnam.fr"},
    )
    assert response.status_code == 302
    provider = db.session.scalar(select(Provider).where(Provider.slug == "cnam"))
    response = signed_admin.post(
        "/admin/catalogue/apis/nouvelle",
        data={
            "provider_id": provider.id,
            "slug": "droits-assurance-maladie",
            "name": "Droits à l'assurance maladie",
            "audience": "pas-une-url",
            "renewal_policy": "automatic",
        },
    )
    assert response.status_code == 422 and "une URL en https://" in html(response)
    response = signed_admin.post(
        "/admin/catalogue/apis/nouvelle",
        data={
            "provider_id": provider.id,
            "slug": "droits-assurance-maladie",
            "name": "Droits à l'assurance maladie",
            "audience": "https://particulier.api.gouv.fr/droits-assurance-maladie",
            "renewal_policy": "automatic",
            "is_active": "y",
        },
    )
    assert response.status_code == 302
    assert db.session.scalar(select(Api).where(Api.slug == "droits-assurance-maladie"))


def test_the_catalogue_is_linked_and_an_api_page_preselects_its_api(client, login_as, apis):
    api = apis["quotient-familial"]
    # Signed out: the menu and the footer lead to the catalogue.
    home = html(client.get("/"))
    assert home.count('href="/catalogue"') >= 2
    detail = html(client.get(f"/catalogue/{api.slug}"))
    assert f'href="/demandes/nouvelle?api={api.id}"' in detail
    assert 'class="fr-breadcrumb"' in detail and f'aria-current="page">{api.name}<' in detail
    applicant = factories.user(organisation=factories.organisation())
    login_as(applicant)
    assert 'href="/catalogue"' in html(client.get("/"))  # the home cards too
    page = html(client.get(f"/demandes/nouvelle?api={api.id}"))
    assert re.search(rf'id="api-{api.id}"[^>]*checked', page)
    assert len(re.findall(r'name="api_id"[^>]*checked', page)) == 1
    assert 'href="/catalogue"' in page
    # An unknown or inactive API preselects nothing and shows no error.
    page = html(client.get("/demandes/nouvelle?api=999999"))
    assert "checked" not in page and "fr-error-text" not in page
