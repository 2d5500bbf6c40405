"""The form of a request, section by section: what each asks, what still prevents submitting,
creating a draft and saving a section."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datapass import clock
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.authorizations import states
from datapass.authorizations.documents import (
    DOCUMENT_FIELDS,
    delete_unreferenced_documents,
    store_document,
)
from datapass.authorizations.errors import InvalidRequest
from datapass.authorizations.models import CONTACT_ROLES, AuthorizationRequest, RequestEvent
from datapass.authorizations.states import RequestState
from datapass.extensions import db

if TYPE_CHECKING:
    from datapass.accounts.models import Organisation, User
    from datapass.actor import Actor
    from datapass.catalogue.models import Api


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


def create_request(
    user: User, organisation: Organisation, api: Api, actor: Actor
) -> AuthorizationRequest:
    """A new draft for ``organisation`` (the user's current one) asking for ``api``."""
    if user.membership(organisation.id) is None:
        raise InvalidRequest({"api_id": ["Vous n'êtes pas membre de cette organisation."]})
    if not api.is_active:
        raise InvalidRequest({"api_id": ["Cette API n'accepte plus de demande."]})
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
        EventTag.Authorizations.RequestCreated,
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
        delete_unreferenced_documents(request, replaced_documents, actor, "replaced")
