"""Snapshots of a request (the plain JSON document a submission or a habilitation freezes), the
fields they show, the diff between two of them, and putting one back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from datapass.authorizations.documents import (
    current_documents,
    delete_unreferenced_documents,
    snapshot_documents,
)
from datapass.authorizations.models import CONTACT_ROLES
from datapass.authorizations.sections import FIELD_LABELS
from datapass.extensions import db

if TYPE_CHECKING:
    from datapass.actor import Actor
    from datapass.authorizations.models import AuthorizationRequest, Document


def _document_info(document: Document | None) -> dict[str, Any] | None:
    if document is None:
        return None
    return {
        "id": document.id,
        "filename": document.filename,
        "sha256": document.sha256,
        "size": document.size,
    }


def snapshot(request: AuthorizationRequest) -> dict[str, Any]:
    """The request as a plain JSON document (what a habilitation freezes)."""
    requester = request.requester
    return {
        "request_id": request.id,
        "reference": request.reference,
        "organisation": {
            "id": request.organisation.id,
            "siret": request.organisation.siret,
            "name": request.organisation.name,
        },
        "api": {
            "id": request.api.id,
            "slug": request.api.slug,
            "name": request.api.name,
            "audience": request.api.audience,
        },
        "title": request.title,
        "description": request.description,
        "purpose": request.purpose,
        "scopes": list(request.scopes or []),
        "legal_basis": {
            "name": request.legal_basis_name,
            "url": request.legal_basis_url,
            "document": _document_info(request.legal_basis_document),
        },
        "contacts": {
            **{role: request.contact(role) for role in CONTACT_ROLES},
            "requester": {"name": requester.display_name, "email": requester.email},
        },
        "retention_months": request.retention_months,
        "daily_volume": request.daily_volume,
        "homologation": {
            "date": request.homologation_date.isoformat() if request.homologation_date else None,
            "authority": request.homologation_authority,
            "document": _document_info(request.homologation_document),
        },
        "terms_accepted_at": (
            request.terms_accepted_at.isoformat() if request.terms_accepted_at else None
        ),
    }


def _french_date(value: str | None) -> str:
    return date.fromisoformat(value).strftime("%d/%m/%Y") if value else ""


def flat_fields(
    snap: dict[str, Any], scope_labels: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The form's fields, as shown, out of a snapshot (for diffs); scopes by their label
    when ``scope_labels`` (code → label, :meth:`Api.scope_labels`) is given."""
    labels = scope_labels or {}
    legal = snap.get("legal_basis") or {}
    homologation = snap.get("homologation") or {}
    contacts = snap.get("contacts") or {}
    flat = {
        "title": snap.get("title") or "",
        "description": snap.get("description") or "",
        "purpose": snap.get("purpose") or "",
        "scopes": ", ".join(labels.get(code, code) for code in snap.get("scopes") or []),
        "legal_basis_name": legal.get("name") or "",
        "legal_basis_url": legal.get("url") or "",
        "legal_basis_document": ((legal.get("document") or {}).get("filename") or ""),
        "retention_months": str(snap.get("retention_months") or ""),
        "daily_volume": str(snap.get("daily_volume") or ""),
        "homologation_date": _french_date(homologation.get("date")),
        "homologation_authority": homologation.get("authority") or "",
        "homologation_document": ((homologation.get("document") or {}).get("filename") or ""),
        "terms": "Acceptées" if snap.get("terms_accepted_at") else "",
    }
    # A new file with the same name is still a change: compare by content digest.
    for key, doc in (
        ("legal_basis_document", legal.get("document")),
        ("homologation_document", homologation.get("document")),
    ):
        if doc:
            flat[key] = f"{doc['filename']} (empreinte {doc['sha256'][:12]})"
    for role in CONTACT_ROLES:
        contact = contacts.get(role) or {}
        for part in ("name", "email", "phone"):
            flat[f"{role}_{part}"] = contact.get(part) or ""
    return flat


def document_ids(snap: dict[str, Any]) -> dict[str, int]:
    """Field name → document id, for the links of a summary."""
    ids = {}
    for field_name, key in (
        ("legal_basis_document", "legal_basis"),
        ("homologation_document", "homologation"),
    ):
        document = (snap.get(key) or {}).get("document")
        if document:
            ids[field_name] = document["id"]
    return ids


def diff(
    previous: dict[str, Any] | None,
    current: dict[str, Any],
    scope_labels: Mapping[str, str] | None = None,
) -> list[dict[str, str]]:
    """The fields that changed between two snapshots: field, French label, before, after."""
    if previous is None:
        return []
    before, after = flat_fields(previous, scope_labels), flat_fields(current, scope_labels)
    return [
        {"field": key, "label": FIELD_LABELS[key], "before": before[key], "after": after[key]}
        for key in after
        if before.get(key, "") != after[key]
    ]


def restore(request: AuthorizationRequest, snap: dict[str, Any], actor: Actor) -> None:
    """Put back the content of a habilitation (cancelling or refusing an update); the files
    uploaded for the abandoned update are deleted."""
    abandoned = {**snapshot_documents(request.submitted_snapshot), **current_documents(request)}
    legal, homologation = snap["legal_basis"], snap["homologation"]
    request.title, request.description = snap["title"], snap["description"]
    request.purpose, request.scopes = snap["purpose"], list(snap["scopes"])
    request.legal_basis_name, request.legal_basis_url = legal["name"], legal["url"]
    request.legal_basis_document_id = (legal["document"] or {}).get("id")
    for role in CONTACT_ROLES:
        for part in ("name", "email", "phone"):
            setattr(request, f"{role}_{part}", snap["contacts"][role][part])
    request.retention_months, request.daily_volume = snap["retention_months"], snap["daily_volume"]
    request.homologation_date = (
        date.fromisoformat(homologation["date"]) if homologation["date"] else None
    )
    request.homologation_authority = homologation["authority"]
    request.homologation_document_id = (homologation["document"] or {}).get("id")
    request.submitted_snapshot = snap
    db.session.flush()
    delete_unreferenced_documents(request, abandoned, actor, "update_abandoned")
