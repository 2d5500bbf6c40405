"""The catalogue's demo data: the providers, APIs and scopes the article names (the
demo's and the tests' catalogue, not production's: an administrator builds that one), and the
demo's machine client."""

from __future__ import annotations

import base64
import hmac

from flask import current_app
from sqlalchemy import select

from datapass import clock, vault
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.catalogue.clients import (
    CLIENT_SECRET_PREFIX,
    forget_client,
    hash_client_secret,
    new_client,
)
from datapass.catalogue.models import Api, ApiStatus, MachineClient, Provider, Scope
from datapass.extensions import db

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
        client = new_client(provider, client_id, secret, name)
        audit.record(
            EventTag.Catalogue.ClientCreated,
            actor,
            subject=client,
            payload={"client_id": client_id, "demo": True},
        )
    elif client.revoked_at is not None or client.secret_hash != hash_client_secret(secret):
        client.revoked_at = None
        client.secret_hash = hash_client_secret(secret)
        forget_client(client_id)
        db.session.flush()
    return client, secret
