"""Rules of authorization requests and habilitations.

Plain functions: each takes the acting :class:`~datapass.actor.Actor` and the objects
it works on, changes state (through :func:`datapass.authorizations.transitions.fire` for the
lifecycle), records the audit event, queues the mails — and flushes, never commits.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Select, and_, delete, func, insert, or_, select, text
from sqlalchemy.orm import selectinload

from datapass import clock, signals, spreadsheet, vault
from datapass.accounts.models import Membership, Organisation, RoleGrant, User
from datapass.accounts.models import Role as AccountRole
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.authorizations import states, transitions
from datapass.authorizations.models import (
    CONTACT_ROLES,
    AuthorizationRequest,
    Document,
    Habilitation,
    MessageTemplate,
    RequestEvent,
)
from datapass.authorizations.states import Event, HabilitationStatus, RequestState, Role
from datapass.catalogue.models import Api
from datapass.extensions import db
from datapass.notify import outbox

PDF_MAGIC = b"%PDF-"
NEW_REQUEST_CATEGORY = "instruction_new_request"


class InvalidRequest(Exception):
    """Input that breaks a rule; ``errors`` maps each field to its French messages."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(m for ms in errors.values() for m in ms))
        self.errors = errors


# --- what someone may see ----------------------------------------------------------------


def _visible_clause(user: User, model) -> Any:
    """Rows of ``model`` (a request or a habilitation) that ``user`` may see: every one of
    an organisation where they are a verified member, their own where they are not, every
    one of an API they instruct; security officers see them all."""
    if user.has_role(AccountRole.SECURITY_OFFICER):
        return True
    verified = [m.organisation_id for m in user.memberships if m.verified]
    member = [m.organisation_id for m in user.memberships]
    clauses = [
        model.organisation_id.in_(verified),
        and_(model.organisation_id.in_(member), model.requester_id == user.id),
    ]
    instructed = user.instructed_api_ids()
    if instructed:
        clauses.append(model.api_id.in_(instructed))
    return or_(*clauses)


def visible_requests(user: User) -> Select:
    """A query of the requests ``user`` may see (add filters to it, never remove this one)."""
    return select(AuthorizationRequest).where(_visible_clause(user, AuthorizationRequest))


def visible_habilitations(user: User) -> Select:
    return select(Habilitation).where(_visible_clause(user, Habilitation))


def get_request(request_id: int, user: User) -> AuthorizationRequest | None:
    """The request, if ``user`` may see it; None otherwise (the view answers 404)."""
    return db.session.scalar(visible_requests(user).where(AuthorizationRequest.id == request_id))


def get_habilitation(habilitation_id: int, user: User) -> Habilitation | None:
    return db.session.scalar(visible_habilitations(user).where(Habilitation.id == habilitation_id))


def organisation_requests(user: User, organisation: Organisation) -> list[AuthorizationRequest]:
    """The applicant's page: the organisation's requests that ``user`` may see."""
    membership = user.membership(organisation.id)
    if membership is None:
        return []
    query = select(AuthorizationRequest).where(
        AuthorizationRequest.organisation_id == organisation.id
    )
    if not membership.verified:
        query = query.where(AuthorizationRequest.requester_id == user.id)
    query = query.options(selectinload(AuthorizationRequest.api)).order_by(
        AuthorizationRequest.updated_at.desc(), AuthorizationRequest.id.desc()
    )
    return list(db.session.scalars(query))


def organisation_habilitations(user: User, organisation: Organisation) -> list[Habilitation]:
    membership = user.membership(organisation.id)
    if membership is None:
        return []
    query = select(Habilitation).where(Habilitation.organisation_id == organisation.id)
    if not membership.verified:
        query = query.where(Habilitation.requester_id == user.id)
    return list(db.session.scalars(query.order_by(Habilitation.created_at.desc())))


def instructors_of(api_id: int) -> list[User]:
    """The active instructors of one API (recipients of its instruction mails)."""
    query = (
        select(User)
        .join(RoleGrant, RoleGrant.user_id == User.id)
        .where(
            RoleGrant.role == AccountRole.INSTRUCTOR,
            RoleGrant.api_id == api_id,
            User.is_active_account.is_(True),
        )
        .order_by(User.id)
    )
    return list(db.session.scalars(query).unique())


# --- the form ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    slug: str
    title: str
    fields: tuple[str, ...]


SECTIONS: tuple[Section, ...] = (
    Section("projet", "Le projet", ("title", "description", "purpose")),
    Section("donnees", "Les données demandées", ("scopes",)),
    Section(
        "cadre-juridique",
        "Le cadre juridique",
        ("legal_basis_name", "legal_basis_url", "legal_basis_document"),
    ),
    Section(
        "contacts",
        "Les contacts",
        tuple(f"{role}_{part}" for role in CONTACT_ROLES for part in ("name", "email", "phone")),
    ),
    Section("conservation", "Conservation et volumétrie", ("retention_months", "daily_volume")),
    Section(
        "homologation",
        "L'homologation de sécurité",
        ("homologation_date", "homologation_authority", "homologation_document"),
    ),
    Section("conditions", "Les conditions d'utilisation", ("terms",)),
)
SECTIONS_BY_SLUG = {s.slug: s for s in SECTIONS}

FIELD_LABELS: dict[str, str] = {
    "title": "Intitulé du projet",
    "description": "Description du projet",
    "purpose": "Finalité du traitement",
    "scopes": "Données demandées",
    "legal_basis_name": "Texte de référence",
    "legal_basis_url": "Adresse du texte",
    "legal_basis_document": "Texte joint (PDF)",
    "retention_months": "Durée de conservation (mois)",
    "daily_volume": "Volumétrie quotidienne attendue (appels par jour)",
    "homologation_date": "Date de la décision d'homologation",
    "homologation_authority": "Autorité d'homologation",
    "homologation_document": "Décision d'homologation (PDF)",
    "terms": "Acceptation des conditions d'utilisation",
}
for _role, _label in CONTACT_ROLES.items():
    FIELD_LABELS[f"{_role}_name"] = f"{_label} : nom et prénom"
    FIELD_LABELS[f"{_role}_email"] = f"{_label} : adresse électronique"
    FIELD_LABELS[f"{_role}_phone"] = f"{_label} : téléphone"

MISSING = "Ce champ est obligatoire pour soumettre la demande."


def completion_errors(request: AuthorizationRequest) -> dict[str, list[str]]:
    """What still prevents submitting ``request``, field by field (empty when complete)."""
    errors: dict[str, list[str]] = {}

    def need(name: str, value: Any, message: str = MISSING) -> None:
        if value in (None, "", [], {}):
            errors.setdefault(name, []).append(message)

    need("title", request.title)
    need("description", request.description)
    need("purpose", request.purpose)
    need("scopes", request.scopes, "Choisissez au moins une donnée.")
    unknown = sorted(set(request.scopes or []) - set(request.api.scope_codes()))
    if unknown:
        errors.setdefault("scopes", []).append(
            f"Données inconnues pour cette API : {', '.join(unknown)}."
        )
    need("legal_basis_name", request.legal_basis_name)
    if not request.legal_basis_url and request.legal_basis_document_id is None:
        errors.setdefault("legal_basis_url", []).append(
            "Indiquez l'adresse du texte ou joignez-le en PDF."
        )
    for role in CONTACT_ROLES:
        for part in ("name", "email", "phone"):
            need(f"{role}_{part}", getattr(request, f"{role}_{part}"))
    need("retention_months", request.retention_months)
    need("daily_volume", request.daily_volume)
    need("homologation_date", request.homologation_date)
    need("homologation_authority", request.homologation_authority)
    need(
        "homologation_document",
        request.homologation_document_id,
        "Joignez la décision d'homologation (PDF).",
    )
    need("terms", request.terms_accepted_at, "Acceptez les conditions d'utilisation.")
    return errors


def section_status(request: AuthorizationRequest) -> dict[str, bool]:
    """Section slug → complete?"""
    errors = completion_errors(request)
    return {s.slug: not any(f in errors for f in s.fields) for s in SECTIONS}


def check_scopes(api: Api, codes: Iterable[str]) -> list[str]:
    """The codes, if every one is a scope of ``api``; else :class:`InvalidRequest`."""
    codes = list(dict.fromkeys(codes))
    known = set(api.scope_codes())
    unknown = [code for code in codes if code not in known]
    if unknown:
        raise InvalidRequest(
            {
                "scopes": [
                    f"Donnée inconnue pour l'API « {api.name} » : {', '.join(unknown)}. "
                    "Choisissez parmi les données proposées."
                ]
            }
        )
    return codes


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


def create_request(
    user: User, organisation: Organisation, api: Api, actor: Actor
) -> AuthorizationRequest:
    """A new draft for ``organisation`` (the user's current one) asking for ``api``."""
    if user.membership(organisation.id) is None:
        raise InvalidRequest({"organisation": ["Vous n'êtes pas membre de cette organisation."]})
    if not api.is_active:
        raise InvalidRequest({"api": ["Cette API n'accepte plus de demande."]})
    now = clock.now()
    request = AuthorizationRequest(
        organisation_id=organisation.id,
        api_id=api.id,
        requester_id=user.id,
        state=RequestState.DRAFT,
        version=1,
        created_at=now,
        updated_at=now,
        state_changed_at=now,
        scopes=[],
        controller_name="",
    )
    db.session.add(request)
    db.session.flush()
    db.session.add(
        RequestEvent(
            request=request,
            kind="created",
            actor_type="user",
            actor_id=user.id,
            actor_label=actor.label or user.email,
            to_state=RequestState.DRAFT.value,
            created_at=now,
        )
    )
    audit.record(
        "authorizations:request:created",
        actor,
        subject=request,
        organisation_id=organisation.id,
        api_id=api.id,
        payload={"api": api.slug},
    )
    return request


def check_editable(request: AuthorizationRequest, user: User | None) -> None:
    """:class:`~datapass.authorizations.states.Conflict` unless ``user`` may edit ``request``
    now (an applicant, on a draft or a request sent back for changes)."""
    if not states.can_edit(request, user):
        raise states.Conflict(
            "Cette demande n'est plus modifiable : seule une demande en brouillon ou à "
            "modifier peut l'être."
        )


def save_section(
    request: AuthorizationRequest,
    section: str,
    values: dict[str, Any],
    actor: Actor,
) -> None:
    """Save one section of a draft (the form has checked the formats). Uploads come as
    ``(filename, content)`` for ``legal_basis_document`` / ``homologation_document`` and are
    stored in the database. Only an applicant, only while the request is editable; on
    :class:`InvalidRequest` nothing is saved."""
    check_editable(request, actor.user)
    spec = SECTIONS_BY_SLUG[section]
    replaced_documents: dict[int, str] = {}
    if "scopes" in values:
        values["scopes"] = check_scopes(request.api, values["scopes"] or [])
    for name, value in values.items():
        if name not in spec.fields:
            continue
        if name in ("legal_basis_document", "homologation_document"):
            if value is not None:
                filename, content = value
                try:
                    document = store_document(request.organisation, actor.user, filename, content)
                except InvalidRequest as exc:
                    raise InvalidRequest({name: exc.errors["document"]}) from exc
                replaced = getattr(request, f"{name}_id")
                setattr(request, f"{name}_id", document.id)
                if replaced is not None:
                    replaced_documents[replaced] = name
        elif name == "terms":
            request.terms_accepted_at = clock.now() if value else None
        elif value is None and isinstance(getattr(request, name), str):
            setattr(request, name, "")  # an optional text left out of the form
        else:
            setattr(request, name, value.strip() if isinstance(value, str) else value)
    request.updated_at = clock.now()
    request.draft_reminder_sent_at = None
    db.session.flush()
    if any(name in spec.fields for _, name in DOCUMENT_FIELDS):
        # The ids were set directly: the relationships must show the new files.
        db.session.expire(request, [name for _, name in DOCUMENT_FIELDS])
    if replaced_documents:
        _delete_unreferenced_documents(request, replaced_documents, actor, "replaced")


DOCUMENT_FIELDS = (
    ("legal_basis", "legal_basis_document"),
    ("homologation", "homologation_document"),
)


def _current_documents(request: AuthorizationRequest) -> dict[int, str]:
    """Document id → field, of the request as it is being edited."""
    found = {}
    for _, name in DOCUMENT_FIELDS:
        document_id = getattr(request, f"{name}_id")
        if document_id is not None:
            found[document_id] = name
    return found


def _snapshot_documents(snap: dict[str, Any] | None) -> dict[int, str]:
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
    ids = set(_current_documents(request))
    for snap in [request.submitted_snapshot] + [h.snapshot for h in request.habilitations]:
        ids.update(_snapshot_documents(snap))
    return ids


def _delete_unreferenced_documents(
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
            "authorizations:document:deleted",
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


# --- snapshots and diffs -----------------------------------------------------------------


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


def _restore(request: AuthorizationRequest, snap: dict[str, Any], actor: Actor) -> None:
    """Put back the content of a habilitation (cancelling or refusing an update); the files
    uploaded for the abandoned update are deleted."""
    abandoned = {**_snapshot_documents(request.submitted_snapshot), **_current_documents(request)}
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
    _delete_unreferenced_documents(request, abandoned, actor, "update_abandoned")


# --- the lifecycle -----------------------------------------------------------------------


def _context(request: AuthorizationRequest, **extra: Any) -> dict[str, Any]:
    return {"request": request, "api": request.api, "organisation": request.organisation, **extra}


def mail_requester(request: AuthorizationRequest, template: str, **extra: Any) -> None:
    """Mail ``template`` to the requester, with the request, its API and organisation."""
    outbox.queue_mail(request.requester.email, template, _context(request, **extra))


def submit(request: AuthorizationRequest, actor: Actor) -> RequestEvent:
    """Send the request to the API's instructors. Every field is checked
    (:class:`InvalidRequest` with the errors by field, nothing changed); the timeline
    records what changed since the previous submission."""
    states.check(Event.SUBMIT, request, states.roles_of(actor.user, request))
    errors = completion_errors(request)
    if errors:
        raise InvalidRequest(errors)
    current = snapshot(request)
    previous = request.submitted_snapshot
    changes = diff(previous, current, request.api.scope_labels())
    now = clock.now()
    values: dict[str, Any] = {"submitted_at": now}
    if request.first_submitted_at is None:
        values["first_submitted_at"] = now
    entry = transitions.fire(
        Event.SUBMIT,
        request,
        actor,
        diff=changes or None,
        values=values,
        data={"resubmission": previous is not None},
    )
    request.submitted_snapshot = current
    request.changes_warning_sent_at = None
    db.session.flush()
    # The files of the version sent back for changes, replaced in this one.
    _delete_unreferenced_documents(request, _snapshot_documents(previous), actor, "replaced")
    mail_requester(request, "request_submitted", resubmission=previous is not None)
    for instructor in instructors_of(request.api_id):
        outbox.queue_mail(
            instructor.email,
            "instruction_new_request",
            _context(
                request,
                instructor=instructor,
                changes=changes,
                unsubscribe_url=outbox.unsubscribe_link(instructor.email, NEW_REQUEST_CATEGORY),
            ),
            category=NEW_REQUEST_CATEGORY,
        )
    _mail_designated(request, previous, current)
    return entry


def _mail_designated(
    request: AuthorizationRequest, previous: dict[str, Any] | None, current: dict[str, Any]
) -> None:
    """Tell the responsable de traitement and the DPO they were named (once per address)."""
    for role in ("controller", "dpo"):
        email = current["contacts"][role]["email"]
        before = ((previous or {}).get("contacts", {}).get(role) or {}).get("email")
        if email and email.lower() != (before or "").lower():
            outbox.queue_mail(
                email,
                "request_designated",
                _context(
                    request, role_label=CONTACT_ROLES[role], contact=current["contacts"][role]
                ),
            )


def request_changes(request: AuthorizationRequest, actor: Actor, reason: str) -> RequestEvent:
    """Send the request back to the applicant with the instructor's reason."""
    entry = transitions.fire(Event.REQUEST_CHANGES, request, actor, reason=reason)
    mail_requester(request, "request_changes_requested", reason=entry.text)
    return entry


def approve(request: AuthorizationRequest, actor: Actor, note: str | None = None) -> Habilitation:
    """Validate the request: a habilitation freezes it (and the previous one, for an update,
    becomes obsolete); its token is issued."""
    previous = request.active_habilitation
    note = (note or "").strip() or None
    entry = transitions.fire(
        Event.APPROVE, request, actor, reason=note, values={"decided_at": clock.now()}
    )
    habilitation = Habilitation(
        request=request,
        organisation_id=request.organisation_id,
        api_id=request.api_id,
        requester_id=request.requester_id,
        scopes=list(request.scopes),
        status=HabilitationStatus.ACTIVE,
        snapshot=request.submitted_snapshot or snapshot(request),
        created_at=clock.now(),
        approved_by_id=actor.user.id if actor.user is not None else None,
        approval_note=note,
    )
    db.session.add(habilitation)
    db.session.flush()
    entry.data = {**(entry.data or {}), "habilitation_id": habilitation.id}
    audit.record(
        "authorizations:habilitation:created",
        actor,
        subject=habilitation,
        organisation_id=habilitation.organisation_id,
        api_id=habilitation.api_id,
        payload={"request_id": request.id, "scopes": habilitation.scopes},
    )
    if previous is not None:
        transitions.make_obsolete(previous, habilitation, actor)
    signals.habilitation_approved.send(habilitation, actor=actor)
    if previous is not None:
        # The replaced habilitation's live tokens give way to the new one's, with a grace
        # period (and a renewal waiting on this update completes): the lifecycle's rules.
        signals.habilitation_updated.send(previous, habilitation=habilitation, actor=actor)
    mail_requester(request, "request_approved", habilitation=habilitation, note=note)
    return habilitation


def refuse(request: AuthorizationRequest, actor: Actor, reason: str) -> RequestEvent:
    """Refuse the request (final), or refuse an update: the habilitation in force stays and
    the request returns to its validated content."""
    reopening = states.is_reopening(request)
    entry = transitions.fire(
        Event.REFUSE, request, actor, reason=reason, values={"decided_at": clock.now()}
    )
    if reopening:
        _restore(request, request.active_habilitation.snapshot, actor)
        signals.update_closed.send(request, actor=actor)
    mail_requester(request, "request_refused", reason=entry.text, reopening=reopening)
    return entry


def archive(request: AuthorizationRequest, actor: Actor, reason: str | None = None) -> RequestEvent:
    """Archive a draft or a refused request."""
    return transitions.fire(Event.ARCHIVE, request, actor, reason=reason)


def reopen(request: AuthorizationRequest, actor: Actor) -> RequestEvent:
    """Open an update of a validated request; its habilitation stays active meanwhile."""
    return transitions.fire(Event.REOPEN, request, actor)


def cancel_reopening(request: AuthorizationRequest, actor: Actor) -> RequestEvent:
    """Abandon an update: the request returns to the content of its habilitation."""
    habilitation = request.active_habilitation
    entry = transitions.fire(Event.CANCEL_REOPENING, request, actor)
    _restore(request, habilitation.snapshot, actor)
    signals.update_closed.send(request, actor=actor)
    return entry


def revoke(request: AuthorizationRequest, actor: Actor, reason: str) -> RequestEvent:
    """Revoke the request's habilitation and its tokens, with the reason given to the
    organisation."""
    habilitation = request.active_habilitation
    entry = transitions.fire(Event.REVOKE, request, actor, reason=reason)
    if habilitation is not None:
        transitions.revoke_habilitation(habilitation, actor, entry.text)
        signals.habilitation_revoked.send(habilitation, actor=actor, reason=entry.text)
    recipients = {request.requester.email}
    if habilitation is not None:
        recipients |= {
            e for e in (habilitation.technical_contact_email, habilitation.controller_email) if e
        }
    # One message to each recipient, rendered once (the lifecycle closes hundreds a day).
    outbox.queue_mails(
        [
            (
                sorted(recipients),
                "request_revoked",
                _context(request, reason=entry.text, habilitation=habilitation),
            )
        ]
    )
    return entry


TRANSITION_FUNCTIONS = {
    Event.SUBMIT: lambda r, a, text: submit(r, a),
    Event.REQUEST_CHANGES: lambda r, a, text: request_changes(r, a, text),
    Event.APPROVE: lambda r, a, text: approve(r, a, text),
    Event.REFUSE: lambda r, a, text: refuse(r, a, text),
    Event.ARCHIVE: lambda r, a, text: archive(r, a, text),
    Event.REOPEN: lambda r, a, text: reopen(r, a),
    Event.CANCEL_REOPENING: lambda r, a, text: cancel_reopening(r, a),
    Event.REVOKE: lambda r, a, text: revoke(r, a, text),
}


def transition(
    request: AuthorizationRequest, event: Event | str, actor: Actor, text: str | None = None
) -> Any:
    """Fire ``event`` with its effects (one entry point for the views and the tests)."""
    return TRANSITION_FUNCTIONS[Event(event)](request, actor, text)


# --- messages, transfers -----------------------------------------------------------------


def post_message(request: AuthorizationRequest, actor: Actor, body: str) -> RequestEvent:
    """A message on the request, between the organisation and the API's instructors; the
    other side is e-mailed."""
    roles = states.roles_of(actor.user, request)
    if not states.can_message(request, actor.user):
        raise states.NotAllowed("Vous ne pouvez pas écrire sur cette demande.")
    body = (body or "").strip()
    if not body:
        raise InvalidRequest({"body": ["Écrivez un message."]})
    if len(body) > 5000:
        raise InvalidRequest({"body": ["Le message ne doit pas dépasser 5 000 caractères."]})
    # Someone both applicant and instructor writes as the applicant on their own request.
    side = "applicant" if Role.APPLICANT in roles else "instructor"
    entry = RequestEvent(
        request=request,
        kind="message",
        actor_type="user",
        actor_id=actor.user.id,
        actor_label=actor.label or "",
        side=side,
        text=body,
        created_at=clock.now(),
    )
    db.session.add(entry)
    db.session.flush()
    audit.record(
        "authorizations:request:message_posted",
        actor,
        subject=request,
        organisation_id=request.organisation_id,
        api_id=request.api_id,
        payload={"side": side, "event_id": entry.id, "length": len(body)},
    )
    if side == "instructor":
        mail_requester(request, "request_message", message=entry)
    else:
        for instructor in instructors_of(request.api_id):
            outbox.queue_mail(
                instructor.email, "instruction_message", _context(request, message=entry)
            )
    return entry


def transfer_candidates(request: AuthorizationRequest) -> list[User]:
    """Members of the organisation who may take the request over."""
    query = (
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(
            Membership.organisation_id == request.organisation_id,
            User.id != request.requester_id,
            User.is_active_account.is_(True),
        )
        .order_by(User.full_name, User.email)
    )
    return list(db.session.scalars(query))


def transfer(request: AuthorizationRequest, new_requester: User, actor: Actor) -> RequestEvent:
    """Hand a request (and its habilitation in force) to another member of the organisation,
    e.g. when an agent leaves."""
    if not states.can_transfer(request, actor.user):
        raise states.NotAllowed("Vous ne pouvez pas transférer cette demande.")
    if new_requester.id == request.requester_id:
        raise InvalidRequest({"user_id": ["Cette personne est déjà en charge de la demande."]})
    if new_requester.membership(request.organisation_id) is None:
        raise InvalidRequest({"user_id": ["Cette personne n'est pas membre de l'organisation."]})
    previous = request.requester
    request.requester_id = new_requester.id
    request.updated_at = clock.now()
    habilitation = request.active_habilitation
    if habilitation is not None:
        habilitation.requester_id = new_requester.id
    entry = RequestEvent(
        request=request,
        kind="transfer",
        actor_type="user",
        actor_id=actor.user.id,
        actor_label=actor.label or "",
        text=f"Transférée de {previous.display_name} à {new_requester.display_name}",
        data={"from_user_id": previous.id, "to_user_id": new_requester.id},
        created_at=clock.now(),
    )
    db.session.add(entry)
    db.session.flush()
    db.session.refresh(request, ["requester"])
    for subject, tag in ((request, "request"), (habilitation, "habilitation")):
        if subject is None:
            continue
        audit.record(
            f"authorizations:{tag}:transferred",
            actor,
            subject=subject,
            organisation_id=request.organisation_id,
            api_id=request.api_id,
            payload={"from_user_id": previous.id, "to_user_id": new_requester.id},
        )
    outbox.queue_mail(
        new_requester.email,
        "habilitation_transferred",
        _context(request, previous=previous, habilitation=habilitation),
    )
    return entry


# --- message templates -------------------------------------------------------------------


def templates_for(user: User, api_id: int | None = None) -> list[MessageTemplate]:
    """The message templates of the APIs ``user`` instructs."""
    ids = user.instructed_api_ids()
    if api_id is not None:
        ids = ids & {api_id}
    if not ids:
        return []
    query = select(MessageTemplate).where(MessageTemplate.api_id.in_(ids))
    return list(db.session.scalars(query.order_by(MessageTemplate.api_id, MessageTemplate.title)))


def get_template(template_id: int, user: User) -> MessageTemplate | None:
    ids = user.instructed_api_ids()
    return db.session.scalar(
        select(MessageTemplate).where(
            MessageTemplate.id == template_id, MessageTemplate.api_id.in_(ids or {-1})
        )
    )


def save_template(
    user: User,
    actor: Actor,
    api_id: int,
    title: str,
    body: str,
    template: MessageTemplate | None = None,
) -> MessageTemplate:
    """Create or change a message template of an API ``user`` instructs."""
    if api_id not in user.instructed_api_ids():
        raise InvalidRequest({"api_id": ["Vous n'instruisez pas cette API."]})
    now = clock.now()
    if template is None:
        template = MessageTemplate(api_id=api_id, created_by_id=user.id, created_at=now)
        db.session.add(template)
    template.api_id, template.title, template.body = api_id, title.strip(), body.strip()
    template.updated_at = now
    db.session.flush()
    audit.record(
        "authorizations:template:saved",
        actor,
        subject=template,
        api_id=api_id,
        payload={"title": template.title},
    )
    return template


def delete_template(template: MessageTemplate, actor: Actor) -> None:
    template_id, api_id = template.id, template.api_id
    db.session.delete(template)
    db.session.flush()
    audit.record(
        "authorizations:template:deleted",
        actor,
        subject_type="message_templates",
        subject_id=template_id,
        api_id=api_id,
    )


# --- the instructor's queue ----------------------------------------------------------------


@dataclass
class QueueFilters:
    state: str = RequestState.SUBMITTED.value  # "" = every state
    api_id: int | None = None
    organisation: str = ""  # SIRET or part of the name
    text: str = ""  # part of the title or the reference
    page: int = 1
    organisation_ids: list[int] | None = None  # resolved from ``organisation`` once


@dataclass
class QueuePage:
    items: list[AuthorizationRequest]
    total: int
    page: int
    per_page: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _contains(column, needle: str):
    """Case-insensitive substring match. SQLite's LIKE already ignores ASCII case (and its
    lower() folds nothing else), so it skips a lower() call per row there."""
    if db.session.get_bind().dialect.name == "sqlite":
        return column.contains(needle, autoescape=True)
    return column.icontains(needle, autoescape=True)


ORGANISATION_MATCHES = 1000


def _matching_organisations(filters: QueueFilters) -> list[int]:
    """Organisations whose SIRET is, or whose name contains, the filter (looked up once per
    page, not once per query)."""
    if filters.organisation_ids is None:
        needle = filters.organisation.strip()
        filters.organisation_ids = list(
            db.session.scalars(
                select(Organisation.id)
                .where(
                    or_(
                        Organisation.siret == needle.replace(" ", ""),
                        _contains(Organisation.name, needle),
                    )
                )
                .limit(ORGANISATION_MATCHES)
            )
        )
    return filters.organisation_ids


def _queue_query(user: User, filters: QueueFilters, *, with_state: bool = True) -> Select:
    api_ids = user.instructed_api_ids()
    if filters.api_id is not None:
        api_ids &= {filters.api_id}
    text_search, by_reference = filters.text.strip(), None
    reference = text_search.upper().removeprefix("DP-").lstrip("0")
    # A reference is an id: ASCII digits that fit the column (else it names no request).
    as_id = int(reference) if reference.isascii() and reference.isdigit() else None
    if as_id is not None and as_id > 2**31 - 1:
        as_id = -1
    if text_search.upper().startswith("DP-") and as_id is not None:
        by_reference = as_id
    api_column = AuthorizationRequest.api_id
    if text_search and by_reference is None:
        # A substring search reads every row anyway: one sequential scan beats tens of
        # thousands of index-then-row lookups ("+ 0" keeps the planner off the index).
        api_column = AuthorizationRequest.api_id + 0
    query = select(AuthorizationRequest).where(api_column.in_(api_ids or {-1}))
    if with_state and filters.state:
        query = query.where(AuthorizationRequest.state == filters.state)
    if filters.organisation:
        query = query.where(
            AuthorizationRequest.organisation_id.in_(_matching_organisations(filters) or [-1])
        )
    if by_reference is not None:
        query = query.where(AuthorizationRequest.id == by_reference)
    elif text_search:
        clauses = [_contains(AuthorizationRequest.title, text_search)]
        if as_id is not None:
            clauses.append(AuthorizationRequest.id == as_id)
        query = query.where(or_(*clauses))
    return query


def instructor_queue(user: User, filters: QueueFilters, per_page: int | None = None) -> QueuePage:
    """The requests of the APIs ``user`` instructs, filtered, oldest waiting first, one page,
    with the number of requests in each state (under the other filters)."""
    per_page = per_page or current_app.config["QUEUE_PAGE_SIZE"]
    # One grouped count serves both the counts per state and the total of the page's state.
    # Grouped by (api, state), the order of the queue index: no sort, then summed here. A
    # title search scans the waiting index instead, where that grouping would not help.
    base = _queue_query(user, filters, with_state=False).subquery()
    groups = [base.c.state] if filters.text.strip() else [base.c.api_id, base.c.state]
    counts = {s.value: 0 for s in RequestState}
    for state, count in db.session.execute(select(base.c.state, func.count()).group_by(*groups)):
        counts[state] += count
    total = counts.get(filters.state, 0) if filters.state else sum(counts.values())
    page = max(1, min(filters.page, max(1, -(-total // per_page))))
    # Deferred join: sort and skip over the (covering) index, then load only the page's rows.
    ids = list(
        db.session.scalars(
            _queue_query(user, filters)
            .with_only_columns(AuthorizationRequest.id)
            .order_by(AuthorizationRequest.state_changed_at, AuthorizationRequest.id)
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
    )
    rows = {
        r.id: r
        for r in db.session.scalars(
            select(AuthorizationRequest)
            .where(AuthorizationRequest.id.in_(ids or [-1]))
            .options(
                selectinload(AuthorizationRequest.organisation),
                selectinload(AuthorizationRequest.api),
            )
        )
    }
    return QueuePage([rows[i] for i in ids], total, page, per_page, counts)


def queue_rows(user: User, filters: QueueFilters) -> Iterator[list[Any]]:
    """Every request of the filtered queue as export rows (no pagination), header first."""
    yield [
        "Référence",
        "Intitulé",
        "Organisation",
        "SIRET",
        "API",
        "État",
        "Première soumission",
        "Dernier changement d'état",
        "Jours d'attente",
        "Demandeur",
    ]
    query = (
        _queue_query(user, filters)
        .options(
            selectinload(AuthorizationRequest.organisation),
            selectinload(AuthorizationRequest.api),
            selectinload(AuthorizationRequest.requester),
        )
        .order_by(AuthorizationRequest.state_changed_at, AuthorizationRequest.id)
    )
    now = clock.now()
    for request in db.session.scalars(query.execution_options(yield_per=1000)):
        yield [
            request.reference,
            request.title,
            request.organisation.name,
            request.organisation.siret,
            request.api.name,
            RequestState(request.state).label,
            _iso_local(request.first_submitted_at),
            _iso_local(request.state_changed_at),
            (now - clock.as_utc(request.state_changed_at)).days,
            request.requester.email,
        ]


def _iso_local(moment: datetime | None) -> str:
    local = clock.local(moment)
    return local.strftime("%Y-%m-%d %H:%M") if local is not None else ""


@dataclass(frozen=True)
class InstructorAsks:
    """What the instructors asked that the organisation has not answered yet."""

    change_request: RequestEvent | None  # the latest, while the request waits for changes
    messages: list[RequestEvent]  # instructors' messages since the organisation last spoke

    def __bool__(self) -> bool:
        return self.change_request is not None or bool(self.messages)


def instructor_asks(request: AuthorizationRequest) -> InstructorAsks:
    """The top of the applicant's page: the latest change request (while the request is in
    changes_requested) and the instructors' messages written after the organisation's last
    message or submission, oldest first."""
    change_request = None
    if request.state == RequestState.CHANGES_REQUESTED:
        change_request = next(
            (e for e in reversed(request.events) if e.kind == Event.REQUEST_CHANGES), None
        )
    messages: list[RequestEvent] = []
    for entry in reversed(request.events):
        if entry.kind == Event.SUBMIT or (entry.kind == "message" and entry.side == "applicant"):
            break
        if entry.kind == "message" and entry.side == "instructor":
            messages.append(entry)
    return InstructorAsks(change_request, messages[::-1])


def waiting_days(request: AuthorizationRequest) -> int:
    return (clock.now() - clock.as_utc(request.state_changed_at)).days


# --- statistics --------------------------------------------------------------------------


# Time to decision, in days: the distribution's buckets (upper bound included; None: above).
DECISION_BUCKETS = (
    (7, "t1", "en 7 jours au plus"),
    (30, "t2", "en 8 à 30 jours"),
    (60, "t3", "en 31 à 60 jours"),
    (None, "t4", "en plus de 60 jours"),
)


def decision_bucket(days: float) -> int:
    """The index in :data:`DECISION_BUCKETS` of a decision taken after ``days`` days (a
    decision after 7 days and 2 hours is "in 8 to 30 days")."""
    for index, (limit, _tone, _label) in enumerate(DECISION_BUCKETS):
        if limit is not None and days <= limit:
            return index
    return len(DECISION_BUCKETS) - 1


@dataclass
class DecisionStats:
    api_name: str
    month: str  # YYYY-MM (Paris)
    decisions: int
    median_days: float
    p90_days: float
    buckets: tuple[int, ...] = ()  # decisions per DECISION_BUCKETS


def decision_statistics(user: User) -> list[DecisionStats]:
    """Per API and per month of decision: the median and 90th percentile time (in days)
    from first submission to approval or refusal, and how many decisions fell in each of
    :data:`DECISION_BUCKETS`, for the APIs ``user`` instructs."""
    api_ids = user.instructed_api_ids() or {-1}
    rows = db.session.execute(
        select(Api.name, AuthorizationRequest.first_submitted_at, RequestEvent.created_at)
        .join(AuthorizationRequest, RequestEvent.request_id == AuthorizationRequest.id)
        .join(Api, Api.id == AuthorizationRequest.api_id)
        .where(
            AuthorizationRequest.api_id.in_(api_ids),
            RequestEvent.kind.in_([Event.APPROVE.value, Event.REFUSE.value]),
            AuthorizationRequest.first_submitted_at.is_not(None),
        )
    ).all()
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for api_name, submitted, decided in rows:
        days = (clock.as_utc(decided) - clock.as_utc(submitted)).total_seconds() / 86400
        groups[(api_name, clock.local(decided).strftime("%Y-%m"))].append(days)
    stats = []
    for (api_name, month), values in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        buckets = [0] * len(DECISION_BUCKETS)
        for value in values:
            buckets[decision_bucket(value)] += 1
        stats.append(
            DecisionStats(
                api_name,
                month,
                len(values),
                round(statistics.median(values), 1),
                round(_p90(values), 1),
                tuple(buckets),
            )
        )
    return stats


def _months_back(months: int) -> list[str]:
    """``YYYY-MM`` of this month (Paris) and the ``months - 1`` before, oldest first."""
    today = clock.today()
    year, month = today.year, today.month
    found = []
    for _ in range(months):
        found.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return found[::-1]


def decision_charts(stats: list[DecisionStats], months: int = 12) -> list[dict[str, Any]]:
    """Per API with decisions: the distribution of decision times per month over the last
    ``months`` months (a stacked bar chart, :mod:`datapass.charts`) and every month's
    figures (the table)."""
    from datapass import charts, formatting

    series = [
        charts.Series(f"b{i}", "décision", "décisions", tone, label)
        for i, (_limit, tone, label) in enumerate(DECISION_BUCKETS)
    ]
    window = _months_back(months)
    by_api: dict[str, dict[str, DecisionStats]] = defaultdict(dict)
    for stat in stats:
        by_api[stat.api_name][stat.month] = stat
    result = []
    for api_name in sorted(by_api):
        per_month = by_api[api_name]
        points = []
        for month in window:
            stat = per_month.get(month)
            values = {f"b{i}": (stat.buckets[i] if stat else 0) for i in range(len(series))}
            points.append(
                charts.Point(
                    label=formatting.month_short(month),
                    title=formatting.month(month),
                    values=values,
                    attrs={"month": month, "decisions": stat.decisions if stat else 0},
                )
            )
        result.append(
            {
                "api": api_name,
                "chart": charts.bar_chart(points, series, label_every=1),
                "rows": [per_month[m] for m in sorted(per_month, reverse=True)],
                "series": series,
            }
        )
    return result


def _p90(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


# --- exports -----------------------------------------------------------------------------


def export_csv(user: User, filters: QueueFilters) -> Iterator[str]:
    """The filtered queue as CSV text chunks (streamed; `;`-separated, UTF-8 with BOM for
    spreadsheet software)."""
    return spreadsheet.csv_stream(None, queue_rows(user, filters))


def export_xlsx(user: User, filters: QueueFilters) -> bytes:
    """The filtered queue as an XLSX workbook (openpyxl, write-only mode)."""
    import io

    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Demandes")
    for row in queue_rows(user, filters):
        sheet.append([spreadsheet.safe_cell(v) for v in row])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


# --- demonstration data ------------------------------------------------------------------

DEMO_CLIENT_NAME = "Client machine de démonstration"
DEMO_REQUESTS = (
    # (API slug, state, title)
    ("statut-etudiant", RequestState.DRAFT, "Portail famille : tarif étudiant des piscines"),
    (
        "quotient-familial",
        RequestState.SUBMITTED,
        "Tarification sociale de la restauration scolaire",
    ),
    (
        "statut-etudiant-boursier",
        RequestState.CHANGES_REQUESTED,
        "Gratuité des musées pour les boursiers",
    ),
    ("quotient-familial", RequestState.VALIDATED, "Tarification solidaire des transports"),
    ("statut-complementaire-sante-solidaire", RequestState.REFUSED, "Chèque énergie municipal"),
    ("statut-eleve-scolarise", RequestState.ARCHIVED, "Aide aux fournitures scolaires"),
    ("statut-eleve-scolarise", RequestState.REVOKED, "Cartes de cantine des collégiens"),
)
API_PARTICULIER = (
    "quotient-familial",
    "statut-etudiant",
    "statut-etudiant-boursier",
    "statut-eleve-scolarise",
    "statut-complementaire-sante-solidaire",
)


def _fill_demo(request: AuthorizationRequest, actor: Actor, title: str) -> None:
    contacts = {}
    for role, (name, email) in {
        "controller": ("Claire Responsable", "responsable.traitement@demo.datapass.gouv.fr"),
        "dpo": ("Denis Protection", "dpo@demo.datapass.gouv.fr"),
        "technical": ("Théo Technique", "contact.technique@demo.datapass.gouv.fr"),
        "business": ("Mathilde Métier", "contact.metier@demo.datapass.gouv.fr"),
    }.items():
        contacts |= {
            f"{role}_name": name,
            f"{role}_email": email,
            f"{role}_phone": "03 28 26 26 26",
        }
    demo_pdf = b"%PDF-1.4\n% Document de demonstration Datapass\n%%EOF\n"
    sections = {
        "projet": {
            "title": title,
            "description": "Service en ligne de la collectivité ; démonstration de Datapass.",
            "purpose": "Appliquer le bon tarif sans demander de justificatif papier.",
        },
        "donnees": {"scopes": request.api.scope_codes()[:2]},
        "cadre-juridique": {
            "legal_basis_name": "Délibération du conseil municipal du 12 mars 2026",
            "legal_basis_url": "https://www.ville-dunkerque.fr/deliberations",
            "legal_basis_document": None,
        },
        "contacts": contacts,
        "conservation": {"retention_months": 12, "daily_volume": 500},
        "homologation": {
            "homologation_date": date(2026, 1, 15),
            "homologation_authority": "Le maire, autorité d'homologation",
            "homologation_document": ("homologation-demo.pdf", demo_pdf),
        },
        "conditions": {"terms": True},
    }
    for section, values in sections.items():
        save_section(request, section, values, actor)


def seed_demo(organisation: Organisation, applicant: User, instructor: User) -> dict[str, Any]:
    """Demo data of this domain (idempotent): the catalogue, requests of ``organisation`` in
    every state (one validated, with its habilitation), and a machine client of the
    habilitation's provider (the same at each run: its secret derives from the master key).

    Returns ``{"provider_client": {"client_id", "client_secret", "api"}, "habilitation":
    {"id", "api"}}``. ``instructor`` must already instruct the API Particulier APIs."""
    from datapass.catalogue import service as catalogue_service

    apis = catalogue_service.seed_catalogue()
    system = Actor.system("demo")
    applicant_actor, instructor_actor = Actor.for_user(applicant), Actor.for_user(instructor)
    existing = {
        r.title: r
        for r in db.session.scalars(
            select(AuthorizationRequest).where(
                AuthorizationRequest.organisation_id == organisation.id
            )
        )
    }
    for slug, state, title in DEMO_REQUESTS:
        if title in existing:
            continue
        request = create_request(applicant, organisation, apis[slug], applicant_actor)
        _fill_demo(request, applicant_actor, title)
        if state == RequestState.DRAFT:
            continue
        if state == RequestState.ARCHIVED:
            archive(request, applicant_actor)
            continue
        submit(request, applicant_actor)
        if state == RequestState.CHANGES_REQUESTED:
            request_changes(request, instructor_actor, "Précisez la durée de conservation.")
        elif state == RequestState.REFUSED:
            refuse(request, instructor_actor, "La finalité ne justifie pas ces données.")
        elif state in (RequestState.VALIDATED, RequestState.REVOKED):
            approve(request, instructor_actor, "Projet conforme.")
            if state == RequestState.REVOKED:
                revoke(request, instructor_actor, "Projet abandonné par la collectivité.")
        existing[title] = request
    validated = existing["Tarification solidaire des transports"]
    habilitation = validated.active_habilitation
    api = habilitation.api
    provider = api.provider
    client, secret = catalogue_service.demo_client(provider, system, DEMO_CLIENT_NAME)
    return {
        "provider_client": {
            "client_id": client.client_id,
            "client_secret": secret,
            "api": api.slug,
            "audience": api.audience,
        },
        "habilitation": {"id": habilitation.id, "api": api.slug},
    }


def seed_scale(n: int, organisation_ids: list[int], requester_ids: list[int]) -> int:
    """``demo --scale N``: N requests spread over the API Particulier APIs and every state,
    by bulk inserts (with their habilitations and decision events), for the benchmarks.
    ``organisation_ids[i]`` goes with ``requester_ids[i]``. Idempotent: only the missing
    ones are added. Returns the number inserted."""
    prefix = "Demande d'échelle n° "
    existing = db.session.scalar(
        select(func.count())
        .select_from(AuthorizationRequest)
        .where(AuthorizationRequest.title.like(f"{prefix}%"))
    )
    if existing >= n or not organisation_ids:
        return 0
    api_ids = list(db.session.scalars(select(Api.id).where(Api.slug.in_(API_PARTICULIER))))
    cycle = [
        RequestState.SUBMITTED,
        RequestState.SUBMITTED,
        RequestState.SUBMITTED,
        RequestState.DRAFT,
        RequestState.DRAFT,
        RequestState.CHANGES_REQUESTED,
        RequestState.VALIDATED,
        RequestState.VALIDATED,
        RequestState.REFUSED,
        RequestState.ARCHIVED,
    ]
    now = clock.now()
    rows = []
    for i in range(existing, n):
        state = cycle[i % len(cycle)]
        owner = i % len(organisation_ids)
        changed = now - timedelta(minutes=(i * 7919) % 525_600)  # spread over a year
        submitted = None if state == RequestState.DRAFT else changed - timedelta(days=i % 40)
        rows.append(
            {
                "organisation_id": organisation_ids[owner],
                "api_id": api_ids[i % len(api_ids)],
                "requester_id": requester_ids[owner],
                "state": state.value,
                "version": 1,
                "created_at": changed - timedelta(days=60),
                "updated_at": changed,
                "state_changed_at": changed,
                "first_submitted_at": submitted,
                "submitted_at": submitted,
                "decided_at": changed
                if state in (RequestState.VALIDATED, RequestState.REFUSED)
                else None,
                "title": f"{prefix}{i + 1}",
                "description": "Données de volume pour les mesures de performance.",
                "purpose": "Mesure de performance.",
                "scopes": ["identite"],
                "retention_months": 12,
                "daily_volume": 100,
            }
        )
    batch = 5000
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        # Core inserts: one executemany per batch (the ORM's bulk path falls back to a
        # statement per row for columns with Python-side defaults).
        db.session.execute(insert(AuthorizationRequest.__table__), chunk)
    decided = db.session.execute(
        select(
            AuthorizationRequest.id,
            AuthorizationRequest.state,
            AuthorizationRequest.organisation_id,
            AuthorizationRequest.api_id,
            AuthorizationRequest.requester_id,
            AuthorizationRequest.decided_at,
        ).where(
            AuthorizationRequest.title.like(f"{prefix}%"),
            AuthorizationRequest.decided_at.is_not(None),
            AuthorizationRequest.id
            > (
                select(func.coalesce(func.max(RequestEvent.request_id), 0))
                .where(RequestEvent.kind.in_([Event.APPROVE.value, Event.REFUSE.value]))
                .scalar_subquery()
            ),
        )
    ).all()
    events, habilitations = [], []
    for request_id, state, organisation_id, api_id, requester_id, decided_at in decided:
        kind = Event.APPROVE if state == RequestState.VALIDATED else Event.REFUSE
        events.append(
            {
                "request_id": request_id,
                "kind": kind.value,
                "actor_type": "system",
                "actor_label": "Données d'échelle",
                "from_state": RequestState.SUBMITTED.value,
                "to_state": state,
                "text": None if kind == Event.APPROVE else "Refus de démonstration.",
                "created_at": decided_at,
            }
        )
        if kind == Event.APPROVE:
            habilitations.append(
                {
                    "request_id": request_id,
                    "organisation_id": organisation_id,
                    "api_id": api_id,
                    "requester_id": requester_id,
                    "scopes": ["identite"],
                    "status": HabilitationStatus.ACTIVE.value,
                    "snapshot": {"title": "Données d'échelle", "contacts": {}},
                    "created_at": decided_at,
                }
            )
    for start in range(0, len(events), batch):
        db.session.execute(insert(RequestEvent.__table__), events[start : start + batch])
    for start in range(0, len(habilitations), batch):
        db.session.execute(insert(Habilitation.__table__), habilitations[start : start + batch])
    # Fresh planner statistics after a bulk load (SQLite has none until ANALYZE).
    db.session.execute(text("ANALYZE"))
    return len(rows)
