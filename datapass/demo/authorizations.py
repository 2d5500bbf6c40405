"""Demonstration data of authorization requests: requests of the demo organisation in every
state (one validated, with its habilitation and a provider's machine client), and
``--scale N`` requests by bulk insert for the benchmarks."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text

from datapass import clock
from datapass.accounts.models import Organisation, User
from datapass.actor import Actor
from datapass.authorizations import decisions
from datapass.authorizations import sections as authorization_sections
from datapass.authorizations.models import AuthorizationRequest, Habilitation, RequestEvent
from datapass.authorizations.states import Event, HabilitationStatus, RequestState
from datapass.catalogue.models import Api
from datapass.demo.accounts import grant_demo_instructor
from datapass.demo.catalogue import demo_client, seed_catalogue
from datapass.demo.context import DemoContext
from datapass.extensions import db

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
        authorization_sections.save_section(request, section, values, actor)


def seed_demo(organisation: Organisation, applicant: User, instructor: User) -> dict[str, Any]:
    """Demo data of this domain (idempotent): the catalogue, requests of ``organisation`` in
    every state (one validated, with its habilitation), and a machine client of the
    habilitation's provider (the same at each run: its secret derives from the master key).

    Returns ``{"provider_client": {"client_id", "client_secret", "api"}, "habilitation":
    {"id", "api"}}``. ``instructor`` must already instruct the API Particulier APIs."""
    apis = seed_catalogue()
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
        request = authorization_sections.create_request(
            applicant, organisation, apis[slug], applicant_actor
        )
        _fill_demo(request, applicant_actor, title)
        if state == RequestState.DRAFT:
            continue
        if state == RequestState.ARCHIVED:
            decisions.archive(request, applicant_actor)
            continue
        decisions.submit(request, applicant_actor)
        if state == RequestState.CHANGES_REQUESTED:
            decisions.request_changes(
                request, instructor_actor, "Précisez la durée de conservation."
            )
        elif state == RequestState.REFUSED:
            decisions.refuse(request, instructor_actor, "La finalité ne justifie pas ces données.")
        elif state in (RequestState.VALIDATED, RequestState.REVOKED):
            decisions.approve(request, instructor_actor, "Projet conforme.")
            if state == RequestState.REVOKED:
                decisions.revoke(request, instructor_actor, "Projet abandonné par la collectivité.")
        existing[title] = request
    validated = existing["Tarification solidaire des transports"]
    habilitation = validated.active_habilitation
    api = habilitation.api
    provider = api.provider
    client, secret = demo_client(provider, system, DEMO_CLIENT_NAME)
    return {
        "provider_client": {
            "client_id": client.client_id,
            "client_secret": secret,
            "api": api.slug,
            "audience": api.audience,
        },
        "habilitation": {"id": habilitation.id, "api": api.slug},
    }


# Written for speed: it loads up to hundreds of thousands of rows for the benchmarks, by Core
# executemany in batches (no ORM unit of work, no audit event per row).
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


def seed_authorizations(context: DemoContext, result: dict[str, Any]) -> None:
    """The catalogue, requests in every state with the demo habilitation, a provider's
    machine client (``"provider_client"`` in the JSON); with ``--scale N``, N requests."""
    apis = seed_catalogue()
    instructor = context.users["instructor"]
    del apis  # created; the demo instructor instructs every API of the catalogue
    grant_demo_instructor(instructor)
    result.update(
        seed_demo(context.organisations["dunkerque"], context.users["applicant"], instructor)
    )
    if context.scale > 0:
        owners = db.session.execute(
            select(User.id, User.current_organisation_id)
            .where(User.email.like("scale-%@demo.datapass.gouv.fr"))
            .order_by(User.id)
        ).all()
        seed_scale(context.scale, [o for _, o in owners], [u for u, _ in owners])
        result.setdefault("scale", {})["requests"] = context.scale
