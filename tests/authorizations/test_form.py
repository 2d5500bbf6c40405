"""The request form: a draft saved section by section over several visits; bad input gets a
clear French error beside its field and nothing is saved; submitting checks everything."""

from __future__ import annotations

import io
from html import unescape

import pytest
from sqlalchemy import func, select

from datapass.actor import Actor
from datapass.authorizations import sections
from datapass.authorizations.errors import InvalidRequest
from datapass.authorizations.models import AuthorizationRequest, Document, RequestEvent
from datapass.extensions import db
from tests import factories
from tests.authorizations.conftest import commit

CONTACTS = {
    f"{role}_{part}": value
    for role in ("controller", "dpo", "technical", "business")
    for part, value in (
        ("name", f"{role} Martin"),
        ("email", f"{role}@villeneuve.fr"),
        ("phone", "01 23 45 67 89"),
    )
}


def html(response) -> str:
    """The page's text with HTML entities decoded (apostrophes are escaped)."""
    return unescape(response.get_data(as_text=True))


def _documents() -> int:
    return db.session.scalar(select(func.count()).select_from(Document))


def _reload(request_id: int) -> AuthorizationRequest:
    db.session.expire_all()
    return db.session.get(AuthorizationRequest, request_id)


@pytest.fixture
def draft(app, api, applicant, org):
    request = sections.create_request(applicant, org, api, Actor.for_user(applicant))
    commit()
    return request


def test_new_request_over_several_visits(app, client, sign_in, api, applicant):
    sign_in(applicant)
    page = html(client.get("/demandes/nouvelle"))
    assert "Quotient familial" in page
    response = client.post("/demandes/nouvelle", data={"api_id": api.id})
    assert response.status_code == 302
    request_id = int(response.headers["Location"].split("/")[2])
    assert response.headers["Location"].endswith("/etapes/projet")
    response = client.post(
        f"/demandes/{request_id}/etapes/projet",
        data={"title": "Cantine", "description": "Tarifs", "purpose": "Tarif social"},
    )
    assert response.headers["Location"].endswith("/etapes/donnees")
    # A later visit: the first section is kept, the page shows what was saved.
    page = html(client.get(f"/demandes/{request_id}/etapes/projet"))
    assert 'value="Cantine"' in page
    client.post(f"/demandes/{request_id}/etapes/donnees", data={"scopes": ["quotient_familial"]})
    request = _reload(request_id)
    assert (request.title, request.scopes, request.state) == (
        "Cantine",
        ["quotient_familial"],
        "draft",
    )
    summary = html(client.get(f"/demandes/{request_id}"))
    assert "Ce champ est obligatoire pour soumettre la demande." in summary


def test_missing_field_is_reported_beside_it_and_nothing_saved(app, client, sign_in, draft):
    sign_in(draft.requester)
    response = client.post(
        f"/demandes/{draft.id}/etapes/projet",
        data={"title": "", "description": "Une description", "purpose": "Une finalité"},
    )
    assert response.status_code == 422
    page = html(response)
    assert 'id="title-error" class="fr-error-text">Ce champ est obligatoire.' in page
    request = _reload(draft.id)
    assert (request.title, request.description) == ("", "")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("dpo_email", "pas-une-adresse", "Adresse électronique invalide"),
        ("technical_phone", "appelez-moi", "Numéro de téléphone invalide"),
        ("business_name", "", "Ce champ est obligatoire."),
    ],
)
def test_malformed_contact(app, client, sign_in, draft, field, value, message):
    sign_in(draft.requester)
    response = client.post(f"/demandes/{draft.id}/etapes/contacts", data={**CONTACTS, field: value})
    assert response.status_code == 422
    page = html(response)
    assert f'id="{field}-error" class="fr-error-text">{message}' in page
    request = _reload(draft.id)
    assert request.controller_email == "" and request.dpo_name == ""


def test_malformed_numbers_and_url(app, client, sign_in, draft):
    sign_in(draft.requester)
    response = client.post(
        f"/demandes/{draft.id}/etapes/conservation",
        data={"retention_months": "douze", "daily_volume": "0"},
    )
    assert response.status_code == 422
    page = html(response)
    assert "retention_months-error" in page and "Entre 1 et 100 000 000" in page
    response = client.post(
        f"/demandes/{draft.id}/etapes/cadre-juridique",
        data={"legal_basis_name": "Délibération", "legal_basis_url": "javascript:alert(1)"},
    )
    assert response.status_code == 422
    assert "Adresse invalide" in html(response)
    request = _reload(draft.id)
    assert request.retention_months is None and request.legal_basis_url == ""


@pytest.mark.parametrize(
    "content,message",
    [
        (b"GIF89a not a pdf at all", "n'est pas un document PDF valide"),
        (b"MZ\x90\x00 a renamed executable", "n'est pas un document PDF valide"),
        (b"%PDF-1.7\n" + b"0" * (10 * 1024 * 1024), "dépasse la taille maximale de 10 Mo"),
        (b"", "Le fichier est vide."),
    ],
    ids=["gif", "exe", "oversized", "empty"],
)
def test_bad_upload(app, client, sign_in, draft, content, message):
    sign_in(draft.requester)
    documents = _documents()
    response = client.post(
        f"/demandes/{draft.id}/etapes/cadre-juridique",
        data={
            "legal_basis_name": "Délibération du 12 mars",
            "legal_basis_document": (io.BytesIO(content), "deliberation.pdf"),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert message in html(response)
    assert _documents() == documents
    request = _reload(draft.id)
    assert request.legal_basis_name == "" and request.legal_basis_document_id is None


def test_pdf_upload_is_stored_in_the_database(app, client, sign_in, draft):
    sign_in(draft.requester)
    client.post(
        f"/demandes/{draft.id}/etapes/cadre-juridique",
        data={
            "legal_basis_name": "Délibération du 12 mars",
            "legal_basis_document": (io.BytesIO(factories.PDF), "../../etc/délibération.pdf"),
        },
        content_type="multipart/form-data",
    )
    request = _reload(draft.id)
    document = request.legal_basis_document
    assert document.content == factories.PDF and document.size == len(factories.PDF)
    assert document.mime == "application/pdf" and len(document.sha256) == 64
    assert document.filename == "délibération.pdf"
    download = client.get(f"/demandes/{draft.id}/documents/{document.id}")
    assert download.data == factories.PDF
    assert download.headers["Content-Type"] == "application/pdf"


@pytest.mark.parametrize(
    "scopes,message",
    [
        (["quotient_familial", "inexistant"], "Donnée inconnue pour cette API : inexistant"),
        (["attestations_fiscales_dgfip"], "Donnée inconnue pour cette API : attestations"),
        ([], "Choisissez au moins une donnée."),
    ],
    ids=["unknown", "other-api", "none"],
)
def test_bad_scopes(app, client, sign_in, draft, scopes, message):
    sign_in(draft.requester)
    response = client.post(f"/demandes/{draft.id}/etapes/donnees", data={"scopes": scopes})
    assert response.status_code == 422
    assert message in html(response)
    assert _reload(draft.id).scopes == []


def test_service_refuses_a_scope_of_another_api(app, draft, apis):
    with pytest.raises(InvalidRequest) as error:
        sections.save_section(
            draft,
            "donnees",
            {"scopes": ["attestations_sociales_urssaf"]},
            Actor.for_user(draft.requester),
        )
    assert "Donnée inconnue" in error.value.errors["scopes"][0]


def test_incomplete_submission_lists_errors_beside_fields(app, client, sign_in, api, applicant):
    request = factories.filled_request(api, requester=applicant, organisation=None)
    request.dpo_email = ""
    request.homologation_document_id = None
    commit()
    sign_in(request.requester)
    response = client.post(f"/demandes/{request.id}/actions/submit")
    assert response.status_code == 422
    page = html(response)
    assert "La demande n'a pas été soumise" in page
    assert 'id="erreur-dpo_email">Ce champ est obligatoire pour soumettre' in page
    assert 'id="erreur-homologation_document">Joignez la décision' in page
    request = _reload(request.id)
    assert request.state == "draft"
    kinds = db.session.scalars(
        select(RequestEvent.kind).where(RequestEvent.request_id == request.id)
    ).all()
    assert kinds == ["created"]


def test_a_submitted_request_cannot_be_edited(app, client, sign_in, api, applicant, org):
    request = factories.request_in("submitted", api, organisation=org, requester=applicant)
    commit()
    sign_in(applicant)
    response = client.post(
        f"/demandes/{request.id}/etapes/projet",
        data={"title": "Autre", "description": "x", "purpose": "y"},
    )
    assert response.status_code == 409
    assert "n'est plus modifiable" in html(response)
    assert _reload(request.id).title != "Autre"


def test_maintenance_is_shown_on_the_form(app, client, sign_in, draft, api):
    from datetime import timedelta

    from datapass import clock
    from datapass.catalogue import apis as catalogue_apis

    catalogue_apis.set_status(
        api,
        Actor.system("test"),
        "maintenance",
        "Migration des serveurs de la CNAF.",
        clock.now(),
        clock.now() + timedelta(hours=4),
    )
    commit()
    sign_in(draft.requester)
    page = html(client.get(f"/demandes/{draft.id}/etapes/projet"))
    assert "Maintenance en cours (du 28/11/2026 à 10:00 au 28/11/2026 à 14:00" in page
    assert "Migration des serveurs de la CNAF." in page
