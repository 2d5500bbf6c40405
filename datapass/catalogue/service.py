"""Catalogue rules: APIs, scopes, providers and their machine clients."""

from __future__ import annotations

import base64
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import select

from datapass import clock, vault
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.catalogue.models import Api, ApiStatus, MachineClient, Provider, Scope
from datapass.extensions import db

CLIENT_SECRET_PREFIX = "dps_"


def hash_client_secret(secret: str) -> str:
    # The secret carries 256 random bits: a fast hash is enough and keeps the machine API's
    # hot path cheap (a memory-hard hash protects guessable passwords, not random keys).
    return vault.sha256_hex(secret)


def create_client(provider: Provider, name: str) -> tuple[MachineClient, str]:
    """A new machine client; returns it with its secret, which is never shown again."""
    secret = CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)
    client_id = f"{provider.slug}-{secrets.token_hex(6)}"
    return _new_client(provider, client_id, secret, name), secret


def _new_client(provider: Provider, client_id: str, secret: str, name: str) -> MachineClient:
    client = MachineClient(
        provider=provider,
        client_id=client_id,
        secret_hash=hash_client_secret(secret),
        name=name,
        created_at=clock.now(),
    )
    db.session.add(client)
    db.session.flush()
    return client


@dataclass(frozen=True)
class AuthenticatedClient:
    """What the machine API needs of the caller: detached from any session, so it can be
    cached between requests."""

    id: int
    client_id: str
    name: str
    provider_id: int


# Successful authentications, by client id, for CLIENT_AUTH_CACHE_SECONDS: the machine API's
# hot path (introspection) then touches no database. Revoking a client drops its entry in
# this process at once; other processes forget it within that delay.
_AUTH_CACHE: dict[str, tuple[float, str, AuthenticatedClient]] = {}
_AUTH_CACHE_LOCK = threading.Lock()


def authenticate_client(client_id: str | None, secret: str | None) -> AuthenticatedClient | None:
    """The machine client with these credentials, or None (constant-time comparison)."""
    if not client_id or not secret or len(client_id) > 80 or len(secret) > 200:
        return None
    presented = hash_client_secret(secret)
    now = time.monotonic()
    cached = _AUTH_CACHE.get(client_id)
    if cached is not None and now < cached[0] and hmac.compare_digest(cached[1], presented):
        return cached[2]
    client = db.session.scalar(select(MachineClient).where(MachineClient.client_id == client_id))
    expected = client.secret_hash if client is not None else "0" * 64
    matches = hmac.compare_digest(expected, presented)
    if client is None or not matches or client.revoked_at is not None:
        return None
    found = AuthenticatedClient(client.id, client.client_id, client.name, client.provider_id)
    ttl = current_app.config["CLIENT_AUTH_CACHE_SECONDS"]
    if ttl > 0:
        with _AUTH_CACHE_LOCK:
            if len(_AUTH_CACHE) > 10_000:
                _AUTH_CACHE.clear()
            _AUTH_CACHE[client_id] = (now + ttl, client.secret_hash, found)
    return found


def forget_client(client_id: str) -> None:
    """Drop a client's cached authentication (revocation)."""
    with _AUTH_CACHE_LOCK:
        _AUTH_CACHE.pop(client_id, None)


# --- the catalogue ------------------------------------------------------------------------

LEGIFRANCE_CRPA = "https://www.legifrance.gouv.fr/codes/article_lc/LEGIARTI000031367412"

PROVIDERS: list[dict[str, str]] = [
    {
        "slug": "dinum",
        "name": "Direction interministérielle du numérique (Dinum) — API Particulier",
        "contact_email": "contact@particulier.api.gouv.fr",
    },
    {
        "slug": "cnaf",
        "name": "Caisse nationale des allocations familiales (CNAF)",
        "contact_email": "api-particulier@cnaf.fr",
    },
    {
        "slug": "msa",
        "name": "Mutualité sociale agricole (MSA)",
        "contact_email": "api-particulier@msa.fr",
    },
    {
        "slug": "men",
        "name": "Ministère de l'Éducation nationale",
        "contact_email": "api-statut-eleve@education.gouv.fr",
    },
    {
        "slug": "mesr",
        "name": "Ministère de l'Enseignement supérieur et de la Recherche",
        "contact_email": "api-statut-etudiant@enseignementsup.gouv.fr",
    },
    {
        "slug": "dss",
        "name": "Direction de la Sécurité sociale (DSS)",
        "contact_email": "api-statut-social@sante.gouv.fr",
    },
]

# The legal basis every API of the State shares (exchanges between administrations).
_CRPA = {
    "name": "Code des relations entre le public et l'administration, art. L. 114-8",
    "url": LEGIFRANCE_CRPA,
}
_IDENTITY = ("identite", "Identité de la personne (nom, prénoms, date de naissance, sexe)", False)

APIS: list[dict] = [
    {
        "slug": "quotient-familial",
        "provider": "cnaf",
        "name": "API Particulier — Quotient familial CAF & MSA",
        "description": (
            "Le quotient familial du mois et la composition du foyer, calculés par la CAF ou "
            "la MSA, pour appliquer une tarification sociale (cantine, crèche, transports) "
            "sans demander de justificatif."
        ),
        "audience": "https://particulier.api.gouv.fr/quotient-familial",
        "scopes": [
            ("quotient_familial", "Quotient familial du mois et du mois précédent", False),
            ("allocataires", "Identité des allocataires (noms, prénoms, date de naissance)", True),
            ("enfants", "Identité des enfants du foyer", True),
            ("adresse", "Adresse postale de l'allocataire", False),
            ("regime", "Régime d'affiliation (CAF ou MSA)", False),
        ],
        "legal_bases": [
            _CRPA,
            {
                "name": "Délibération fixant une tarification selon le quotient familial",
                "url": "",
            },
        ],
        "coverage_note": (
            "Couvre les allocataires de la CAF et de la MSA (la grande majorité des familles). "
            "Un foyer sans droit ouvert à une prestation familiale n'a pas de quotient familial."
        ),
        "fallback_procedure": (
            "Plan B : demander à l'usager son attestation de quotient familial (téléchargeable "
            "sur caf.fr ou msa.fr) ou son dernier avis d'imposition."
        ),
    },
    {
        "slug": "statut-etudiant",
        "provider": "mesr",
        "name": "API Particulier — Statut étudiant",
        "description": (
            "L'inscription d'un étudiant dans l'enseignement supérieur pour l'année en cours "
            "(formation initiale ou continue), pour accorder un tarif étudiant sans carte."
        ),
        "audience": "https://particulier.api.gouv.fr/statut-etudiant",
        "scopes": [
            _IDENTITY,
            ("inscription_formation_initiale", "Inscription en formation initiale", False),
            ("inscription_formation_continue", "Inscription en formation continue", False),
            ("admission", "Admission (inscription non encore finalisée)", False),
            ("etablissement", "Établissement et commune d'études", False),
        ],
        "legal_bases": [
            _CRPA,
            {"name": "Code de l'éducation, art. L. 612-1 et suivants", "url": ""},
        ],
        "coverage_note": (
            "Couvre environ 1,7 million d'étudiants, soit à peu près la moitié des inscrits : "
            "seuls les établissements raccordés transmettent leurs inscriptions (universités "
            "surtout ; BTS, classes préparatoires et écoles privées sont souvent absents)."
        ),
        "fallback_procedure": (
            "Plan B : accepter le certificat de scolarité ou la carte d'étudiant de l'année "
            "en cours. Une absence de réponse ne signifie pas que la personne n'est pas étudiante."
        ),
    },
    {
        "slug": "statut-etudiant-boursier",
        "provider": "mesr",
        "name": "API Particulier — Statut étudiant boursier",
        "description": (
            "Le statut de boursier sur critères sociaux d'un étudiant (CROUS), son échelon et la "
            "période de versement, pour les tarifs sociaux (restauration, transports, culture)."
        ),
        "audience": "https://particulier.api.gouv.fr/statut-etudiant-boursier",
        "scopes": [
            _IDENTITY,
            ("statut_boursier", "Statut de boursier (définitif ou conditionnel)", True),
            ("echelon_bourse", "Échelon de la bourse (0 bis à 7)", True),
            ("periode_versement", "Période de versement de la bourse", False),
            ("etablissement", "Établissement et ville d'études", False),
        ],
        "legal_bases": [
            _CRPA,
            {
                "name": "Code de l'éducation, art. L. 821-1 (bourses de l'enseignement supérieur)",
                "url": "",
            },
        ],
        "coverage_note": (
            "Couvre les étudiants boursiers gérés par les CROUS ; les bourses régionales "
            "(formations sanitaires et sociales) ne sont pas couvertes."
        ),
        "fallback_procedure": (
            "Plan B : demander l'attestation de bourse (notification définitive) téléchargeable "
            "sur messervices.etudiant.gouv.fr."
        ),
    },
    {
        "slug": "statut-eleve-scolarise",
        "provider": "men",
        "name": "API Particulier — Statut élève scolarisé et boursier",
        "description": (
            "La scolarité d'un élève (établissement, niveau) et son statut de boursier de "
            "collège ou de lycée, pour les aides à la restauration, au transport et aux activités."
        ),
        "audience": "https://particulier.api.gouv.fr/statut-eleve-scolarise",
        "scopes": [
            _IDENTITY,
            ("scolarite", "Établissement, niveau et statut (élève, apprenti) de l'année", False),
            ("statut_boursier", "Statut de boursier de collège ou de lycée", True),
            ("echelon_bourse", "Échelon de la bourse", True),
        ],
        "legal_bases": [
            _CRPA,
            {
                "name": "Code de l'éducation, art. L. 531-1 et R. 531-1 (bourses nationales)",
                "url": "",
            },
        ],
        "coverage_note": (
            "Élèves des établissements publics et privés sous contrat de l'Éducation nationale ; "
            "l'enseignement agricole et les établissements hors contrat ne sont pas couverts."
        ),
        "fallback_procedure": (
            "Plan B : accepter le certificat de scolarité et la notification d'attribution de "
            "bourse remis par l'établissement."
        ),
    },
    {
        "slug": "statut-complementaire-sante-solidaire",
        "provider": "dss",
        "name": "API Particulier — Statut social (complémentaire santé solidaire)",
        "description": (
            "Le droit ouvert à la complémentaire santé solidaire (avec ou sans participation "
            "financière), indicateur de faibles ressources pour les tarifs sociaux."
        ),
        "audience": "https://particulier.api.gouv.fr/complementaire-sante-solidaire",
        "scopes": [
            _IDENTITY,
            ("statut_css", "Bénéficiaire de la complémentaire santé solidaire", True),
            ("participation_financiere", "Avec ou sans participation financière", True),
            ("dates_droit", "Dates de début et de fin du droit", False),
        ],
        "legal_bases": [
            _CRPA,
            {"name": "Code de la sécurité sociale, art. L. 861-1", "url": ""},
        ],
        "coverage_note": (
            "Assurés du régime général et de la MSA ; les régimes spéciaux ne sont pas encore "
            "raccordés."
        ),
        "fallback_procedure": (
            "Plan B : demander l'attestation de droit à la complémentaire santé solidaire "
            "(compte ameli ou MSA)."
        ),
    },
    {
        "slug": "api-entreprise",
        "provider": "dinum",
        "name": "API Entreprise",
        "description": (
            "Les données et attestations des entreprises et associations (INSEE, DGFIP, URSSAF, "
            "Infogreffe…) pour les marchés publics et les aides, sans pièce justificative."
        ),
        "audience": "https://entreprise.api.gouv.fr",
        "scopes": [
            (
                "unites_legales_etablissements_insee",
                "Unités légales et établissements (INSEE)",
                False,
            ),
            ("extraits_rcs_infogreffe", "Extrait du registre du commerce (Infogreffe)", False),
            ("associations_djepva", "Données des associations (RNA, DJEPVA)", False),
            ("attestations_fiscales_dgfip", "Attestation de régularité fiscale (DGFIP)", True),
            ("attestations_sociales_urssaf", "Attestation de vigilance (URSSAF)", True),
            ("liasses_fiscales_dgfip", "Liasses fiscales (DGFIP)", True),
            ("certificats_qualibat", "Certificats Qualibat", False),
        ],
        "legal_bases": [
            _CRPA,
            {"name": "Code de la commande publique, art. R. 2143-13", "url": ""},
        ],
        "coverage_note": (
            "Toutes les entreprises et associations immatriculées ; les attestations fiscales "
            "et sociales ne sont délivrées qu'aux administrations qui instruisent un marché "
            "ou une aide."
        ),
        "fallback_procedure": (
            "Plan B : demander la pièce à l'entreprise (attestation URSSAF, attestation fiscale "
            "sur impots.gouv.fr, Kbis) ; un appel en échec ne doit jamais bloquer la procédure."
        ),
    },
]


def seed_catalogue() -> dict[str, Api]:
    """Create (or complete) the providers, APIs and scopes the article names; idempotent.

    Returns the APIs by slug. Used by the demo data and by tests.
    """
    now = clock.now()
    providers: dict[str, Provider] = {}
    for spec in PROVIDERS:
        provider = db.session.scalar(select(Provider).where(Provider.slug == spec["slug"]))
        if provider is None:
            provider = Provider(created_at=now, developer_emails="", **spec)
            db.session.add(provider)
        providers[spec["slug"]] = provider
    db.session.flush()
    apis: dict[str, Api] = {}
    for spec in APIS:
        api = db.session.scalar(select(Api).where(Api.slug == spec["slug"]))
        if api is None:
            api = Api(
                slug=spec["slug"],
                provider=providers[spec["provider"]],
                name=spec["name"],
                description=spec["description"],
                audience=spec["audience"],
                legal_bases=spec["legal_bases"],
                coverage_note=spec["coverage_note"],
                fallback_procedure=spec["fallback_procedure"],
                status=ApiStatus.AVAILABLE,
                created_at=now,
            )
            db.session.add(api)
            for position, (code, label, sensitive) in enumerate(spec["scopes"]):
                api.scopes.append(
                    Scope(code=code, label=label, sensitive=sensitive, position=position)
                )
        apis[spec["slug"]] = api
    db.session.flush()
    return apis


def list_apis(*, active_only: bool = False) -> list[Api]:
    query = select(Api).order_by(Api.name)
    if active_only:
        query = query.where(Api.is_active.is_(True))
    return list(db.session.scalars(query))


def list_providers() -> list[Provider]:
    return list(db.session.scalars(select(Provider).order_by(Provider.name)))


def _record(tag: str, actor: Actor, subject, api_id: int | None = None, **payload) -> None:
    audit.record(tag, actor, subject=subject, api_id=api_id, payload=payload)


def update_api(api: Api, actor: Actor, values: dict[str, Any]) -> None:
    """Change an API's description, audience, legal bases, coverage note or fallback."""
    allowed = {
        "name",
        "description",
        "audience",
        "legal_bases",
        "coverage_note",
        "fallback_procedure",
        "renewal_policy",
        "is_active",
    }
    if "audience" in values:
        check_unique(Api, "audience", values["audience"], exclude_id=api.id)
    changed = {}
    for key, value in values.items():
        if key in allowed and getattr(api, key) != value:
            setattr(api, key, value)
            changed[key] = value if key != "legal_bases" else len(value)
    db.session.flush()
    if changed:
        _record("catalogue:api:updated", actor, api, api.id, fields=sorted(changed))


def create_api(provider: Provider, actor: Actor, values: dict[str, Any]) -> Api:
    """A new API in the catalogue (no scope yet); slug and audience are unique."""
    check_unique(Api, "slug", values["slug"])
    check_unique(Api, "audience", values["audience"])
    api = Api(
        provider=provider,
        slug=values["slug"],
        name=values["name"],
        description=values.get("description", ""),
        audience=values["audience"],
        legal_bases=values.get("legal_bases", []),
        coverage_note=values.get("coverage_note", ""),
        fallback_procedure=values.get("fallback_procedure", ""),
        status=ApiStatus.AVAILABLE,
        created_at=clock.now(),
    )
    db.session.add(api)
    db.session.flush()
    _record("catalogue:api:created", actor, api, api.id, slug=api.slug)
    return api


def set_status(
    api: Api,
    actor: Actor,
    status: str,
    message: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> None:
    """Available, or maintenance with a message and a time window (shown on the request form
    and to token holders)."""
    status = ApiStatus(status)
    api.status = status
    if status == ApiStatus.MAINTENANCE:
        api.maintenance_message, api.maintenance_start, api.maintenance_end = message, start, end
    else:
        api.maintenance_message = api.maintenance_start = api.maintenance_end = None
    db.session.flush()
    _record(
        "catalogue:api:status_changed",
        actor,
        api,
        api.id,
        status=status.value,
        start=start.isoformat() if start else None,
        end=end.isoformat() if end else None,
    )


def add_scope(api: Api, actor: Actor, code: str, label: str, sensitive: bool) -> Scope:
    """A new scope for ``api``; its code is unique within the API."""
    if code in api.scope_codes():
        raise CatalogueError("code", "Cette API a déjà une donnée avec ce code.")
    position = max((s.position for s in api.scopes), default=-1) + 1
    scope = Scope(api=api, code=code, label=label, sensitive=sensitive, position=position)
    db.session.add(scope)
    db.session.flush()
    _record("catalogue:scope:created", actor, scope, api.id, code=code, sensitive=sensitive)
    return scope


def update_scope(scope: Scope, actor: Actor, label: str, sensitive: bool) -> None:
    scope.label, scope.sensitive = label, sensitive
    db.session.flush()
    _record("catalogue:scope:updated", actor, scope, scope.api_id, code=scope.code)


def remove_scope(scope: Scope, actor: Actor) -> None:
    """Remove a scope from the catalogue (habilitations keep their frozen copy)."""
    api_id, code = scope.api_id, scope.code
    db.session.delete(scope)
    db.session.flush()
    audit.record(
        "catalogue:scope:deleted",
        actor,
        subject_type="scopes",
        subject_id=scope.id,
        api_id=api_id,
        payload={"code": code},
    )


def create_provider(actor: Actor, slug: str, name: str, contact_email: str) -> Provider:
    """A new API provider (ministry, agency)."""
    check_unique(Provider, "slug", slug)
    provider = Provider(
        slug=slug,
        name=name,
        contact_email=contact_email,
        developer_emails="",
        created_at=clock.now(),
    )
    db.session.add(provider)
    db.session.flush()
    _record("catalogue:provider:created", actor, provider, slug=slug)
    return provider


def update_provider(provider: Provider, actor: Actor, values: dict[str, Any]) -> None:
    for key in ("name", "contact_email", "developer_emails"):
        if key in values:
            setattr(provider, key, values[key])
    db.session.flush()
    _record("catalogue:provider:updated", actor, provider)


def register_client(provider: Provider, actor: Actor, name: str) -> tuple[MachineClient, str]:
    """A new machine client for ``provider`` (administrators); the secret is returned once."""
    client, secret = create_client(provider, name)
    _record(
        "catalogue:client:created",
        actor,
        client,
        client_id=client.client_id,
        provider=provider.slug,
        secret=audit.secret(secret),
    )
    return client, secret


def demo_client(provider: Provider, actor: Actor, name: str) -> tuple[MachineClient, str]:
    """Outside production only: the demo's machine client of ``provider``, the same at every
    run (its secret is derived from this instance's master key, so the demo can print it again
    without storing it)."""
    if current_app.config["ENV"] == "production":
        raise RuntimeError("no demo client in production")
    client_id = f"{provider.slug}-demo"
    digest = hmac.new(vault.derive("demo-client"), client_id.encode(), "sha256").digest()
    secret = CLIENT_SECRET_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")
    client = db.session.scalar(select(MachineClient).where(MachineClient.client_id == client_id))
    if client is None:
        client = _new_client(provider, client_id, secret, name)
        _record("catalogue:client:created", actor, client, client_id=client_id, demo=True)
    elif client.revoked_at is not None or client.secret_hash != hash_client_secret(secret):
        client.revoked_at = None
        client.secret_hash = hash_client_secret(secret)
        forget_client(client_id)
        db.session.flush()
    return client, secret


def revoke_client(client: MachineClient, actor: Actor) -> bool:
    """Revoke a machine client at once; False if it already was."""
    if client.revoked_at is not None:
        return False
    client.revoked_at = clock.now()
    forget_client(client.client_id)
    db.session.flush()
    _record("catalogue:client:revoked", actor, client, client_id=client.client_id)
    return True


class CatalogueError(Exception):
    """A catalogue change that breaks a rule; ``field`` names the form field concerned."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def check_unique(model, column: str, value: str, exclude_id: int | None = None) -> None:
    """:class:`CatalogueError` if another row of ``model`` already has ``value``."""
    query = select(model.id).where(getattr(model, column) == value)
    if exclude_id is not None:
        query = query.where(model.id != exclude_id)
    if db.session.scalar(query) is not None:
        raise CatalogueError(column, "Cette valeur est déjà utilisée dans le catalogue.")
