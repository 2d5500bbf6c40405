"""Replaced documents are deleted (issue 10, point 8): a PDF replaced in a draft, the files
of a version sent back for changes once the new one is submitted, the files of an update
that is abandoned or refused. A file a submitted or approved version shows is kept. Each
deletion is audited by name, size and SHA-256."""

from __future__ import annotations

import io
import json

from sqlalchemy import select

from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.authorizations import decisions, documents, sections
from datapass.authorizations.models import AuthorizationRequest, Document
from datapass.extensions import db
from tests import factories
from tests.authorizations.conftest import commit

PDF_A = b"%PDF-1.4\n% premiere version\n%%EOF\n"
PDF_B = b"%PDF-1.4\n% deuxieme version\n%%EOF\n"
PDF_C = b"%PDF-1.4\n% troisieme version\n%%EOF\n"


def _ids() -> set[int]:
    return set(db.session.scalars(select(Document.id)))


def _deleted_events() -> list[dict]:
    events = db.session.scalars(
        select(AuditEvent)
        .where(AuditEvent.tag == "authorizations:document:deleted")
        .order_by(AuditEvent.seq)
    )
    return [json.loads(event.payload) for event in events]


def _upload(client, request_id: int, content: bytes, name: str):
    return client.post(
        f"/demandes/{request_id}/etapes/cadre-juridique",
        data={
            "legal_basis_name": "Délibération du 12 mars",
            "legal_basis_document": (io.BytesIO(content), name),
        },
        content_type="multipart/form-data",
    )


def test_a_document_replaced_in_a_draft_is_deleted_and_audited(app, client, sign_in, api):
    request = factories.filled_request(api)
    commit()
    sign_in(request.requester)
    before = _ids()
    assert _upload(client, request.id, PDF_A, "deliberation-v1.pdf").status_code == 302
    db.session.expire_all()
    first = db.session.get(AuthorizationRequest, request.id).legal_basis_document_id
    assert _ids() == before | {first}

    assert _upload(client, request.id, PDF_B, "deliberation-v2.pdf").status_code == 302
    db.session.expire_all()
    second = db.session.get(AuthorizationRequest, request.id).legal_basis_document_id
    assert _ids() == before | {second}  # the first one is gone from storage
    assert client.get(f"/demandes/{request.id}/documents/{first}").status_code == 404
    assert client.get(f"/demandes/{request.id}/documents/{second}").data == PDF_B
    (event,) = _deleted_events()
    assert event["document_id"] == first
    assert event["field"] == "legal_basis_document"
    assert event["filename"] == "deliberation-v1.pdf"
    assert event["size"] == len(PDF_A) and len(event["sha256"]) == 64
    assert event["reason"] == "replaced"
    # a section saved without a new upload keeps the file
    client.post(
        f"/demandes/{request.id}/etapes/cadre-juridique",
        data={"legal_basis_name": "Délibération du 13 mars"},
        content_type="multipart/form-data",
    )
    assert second in _ids()


def test_the_submitted_version_keeps_its_file_until_a_new_one_is_submitted(app, api, instructor):
    request = factories.filled_request(api)
    applicant = Actor.for_user(request.requester)
    homologation_v1 = request.homologation_document_id
    decisions.submit(request, applicant)
    decisions.request_changes(request, Actor.for_user(instructor), "Décision illisible")
    sections.save_section(
        request, "homologation", {"homologation_document": ("v2.pdf", PDF_B)}, applicant
    )
    # the instructor may still open the version they sent back
    assert homologation_v1 in _ids()
    assert documents.request_document(request, homologation_v1) is not None
    homologation_v2 = request.homologation_document_id
    sections.save_section(
        request, "homologation", {"homologation_document": ("v3.pdf", PDF_C)}, applicant
    )
    assert homologation_v2 not in _ids()  # never submitted: replaced, deleted
    assert homologation_v1 in _ids()
    decisions.submit(request, applicant)
    assert homologation_v1 not in _ids()  # its version is no longer shown anywhere
    assert request.homologation_document_id in _ids()
    assert [e["document_id"] for e in _deleted_events()] == [homologation_v2, homologation_v1]


def test_an_abandoned_update_deletes_its_files_and_keeps_the_habilitation_s(app, api, instructor):
    request = factories.filled_request(api)
    applicant = Actor.for_user(request.requester)
    staff = Actor.for_user(instructor)
    decisions.submit(request, applicant)
    decisions.approve(request, staff)
    approved = request.homologation_document_id
    for ending in ("cancel", "refuse"):
        decisions.reopen(request, applicant)
        sections.save_section(
            request, "homologation", {"homologation_document": ("maj.pdf", PDF_B)}, applicant
        )
        update = request.homologation_document_id
        assert approved in _ids()  # frozen in the habilitation in force
        if ending == "cancel":
            decisions.cancel_reopening(request, applicant)
        else:
            decisions.submit(request, applicant)
            decisions.refuse(request, staff, "Homologation non signée")
        assert request.homologation_document_id == approved
        assert update not in _ids()
        assert approved in _ids()
        assert documents.request_document(request, approved).content == factories.PDF
        assert _deleted_events()[-1]["reason"] == "update_abandoned"
