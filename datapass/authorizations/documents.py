"""Uploaded documents (PDF, kept in the database): storing one, finding those a request still
refers to, deleting the ones nobody can download any more."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import delete, select

from datapass import clock, vault
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.authorizations.errors import InvalidRequest
from datapass.authorizations.models import Document
from datapass.extensions import db

if TYPE_CHECKING:
    from datapass.accounts.models import Organisation, User
    from datapass.actor import Actor
    from datapass.authorizations.models import AuthorizationRequest

PDF_MAGIC = b"%PDF-"


def store_document(
    organisation: Organisation, user: User | None, filename: str, content: bytes
) -> Document:
    """Keep an uploaded PDF in the database; its type is checked on its first bytes, never
    on its name or on what the browser claims."""
    limit = current_app.config["UPLOAD_MAX_MB"] * 1024 * 1024
    if len(content) > limit:
        raise InvalidRequest(
            {"document": [f"Le fichier dépasse {current_app.config['UPLOAD_MAX_MB']} Mo."]}
        )
    if not content.startswith(PDF_MAGIC):
        raise InvalidRequest({"document": ["Le fichier doit être un document PDF."]})
    name = (filename or "document.pdf").replace("\\", "/").rsplit("/", 1)[-1][:200]
    document = Document(
        organisation_id=organisation.id,
        uploaded_by_id=user.id if user is not None else None,
        filename=name or "document.pdf",
        mime="application/pdf",
        size=len(content),
        sha256=vault.sha256_hex(content),
        content=content,
        created_at=clock.now(),
    )
    db.session.add(document)
    db.session.flush()
    return document


DOCUMENT_FIELDS = (
    ("legal_basis", "legal_basis_document"),
    ("homologation", "homologation_document"),
)


def current_documents(request: AuthorizationRequest) -> dict[int, str]:
    """Document id → field, of the request as it is being edited."""
    found = {}
    for _, name in DOCUMENT_FIELDS:
        document_id = getattr(request, f"{name}_id")
        if document_id is not None:
            found[document_id] = name
    return found


def snapshot_documents(snap: dict[str, Any] | None) -> dict[int, str]:
    """Document id → field, of a frozen version of a request."""
    found = {}
    for key, name in DOCUMENT_FIELDS:
        document = ((snap or {}).get(key) or {}).get("document")
        if document:
            found[document["id"]] = name
    return found


def _referenced_document_ids(request: AuthorizationRequest) -> set[int]:
    """Documents ``request`` still shows: its current ones, those of the version under
    instruction and those frozen in its habilitations (the only ones it may serve)."""
    ids = set(current_documents(request))
    for snap in [request.submitted_snapshot] + [h.snapshot for h in request.habilitations]:
        ids.update(snapshot_documents(snap))
    return ids


def delete_unreferenced_documents(
    request: AuthorizationRequest, candidates: dict[int, str], actor: Actor, reason: str
) -> None:
    """Delete the ``candidates`` (document id → field) that ``request`` no longer refers
    to: a replaced upload nobody can download any more is personal data kept for nothing
    (a version that was submitted or approved keeps its files). Each deletion is audited
    with what identifies the file (name, size, SHA-256), not its content."""
    # The ids were set directly: the relationships must not show the old files any more.
    db.session.expire(request, [name for _, name in DOCUMENT_FIELDS])
    gone = set(candidates) - _referenced_document_ids(request)
    if not gone:
        return
    documents = db.session.execute(
        select(Document.id, Document.filename, Document.size, Document.sha256).where(
            Document.id.in_(gone), Document.organisation_id == request.organisation_id
        )
    ).all()
    for document in documents:
        audit.record(
            EventTag.Authorizations.DocumentDeleted,
            actor,
            subject=request,
            organisation_id=request.organisation_id,
            api_id=request.api_id,
            payload={
                "document_id": document.id,
                "field": candidates[document.id],
                "reason": reason,
                "filename": document.filename,
                "size": document.size,
                "sha256": document.sha256,
            },
        )
    db.session.execute(
        delete(Document).where(Document.id.in_([document.id for document in documents]))
    )


def request_document(request: AuthorizationRequest, document_id: int) -> Document | None:
    """A document of ``request`` (current, submitted or frozen in a habilitation), or None."""
    if document_id not in _referenced_document_ids(request):
        return None
    return db.session.scalar(
        select(Document).where(
            Document.id == document_id, Document.organisation_id == request.organisation_id
        )
    )
