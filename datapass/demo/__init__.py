"""Demonstration data: organisations with valid SIRETs and one account per role.

``flask --app app datapass demo [--json] [--if-empty] [--scale N]`` calls :func:`run_demo`.
Running it again adds nothing and prints the same accounts. It refuses to run in production.

Demo accounts (passwords fixed on purpose, documented here and in the README):

======================  ======================================  ==========================
role                    e-mail                                  password
======================  ======================================  ==========================
applicant               demandeur@demo.datapass.gouv.fr         Demandeur-Demo-2026
instructor              instructeur@demo.datapass.gouv.fr       Instructeur-Demo-2026
security_officer        securite@demo.datapass.gouv.fr          Securite-Demo-2026
admin                   admin@demo.datapass.gouv.fr             Administrateur-Demo-2026
======================  ======================================  ==========================

The applicant is a verified member of two organisations (to show the switch). Staff demo
accounts are marked ``is_demo``: in development they may skip TOTP enrolment
(``DATAPASS_DEMO_SKIP_MFA``), never in production.

Other domains extend the demo by appending a step to :data:`STEPS`: a function
``step(context: DemoContext, result: dict) -> None`` that seeds its data idempotently and adds
its keys to ``result`` (the JSON printed by ``--json``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import func, insert, select

from datapass import clock
from datapass.accounts import service as accounts
from datapass.accounts.models import Membership, Organisation, Role, User
from datapass.actor import Actor
from datapass.demo.consumption import seed_demo_consumption
from datapass.extensions import db

ACTOR = Actor.system("demo")


class DemoRefused(RuntimeError):
    """The demo must not run here (production)."""


@dataclass(frozen=True)
class DemoOrganisation:
    key: str
    siret: str
    name: str
    address: str


@dataclass(frozen=True)
class DemoAccount:
    key: str  # the key in the JSON output ("applicant", "instructor"…)
    email: str
    password: str
    full_name: str
    roles: tuple[str, ...] = ()
    organisations: tuple[str, ...] = ()  # DemoOrganisation keys, verified memberships


ORGANISATIONS = (
    # SIRETs valid for python-stdnum (SIREN and SIRET Luhn checksums).
    DemoOrganisation(
        "dunkerque",
        "21590183600019",
        "Commune de Dunkerque",
        "Place Charles Valentin, 59140 Dunkerque",
    ),
    DemoOrganisation(
        "idfm",
        "28750007800020",
        "Île-de-France Mobilités",
        "39 bis-41 rue de Châteaudun, 75009 Paris",
    ),
    DemoOrganisation(
        "editeur",
        "81234567600017",
        "Logiciels Territoriaux SAS (éditeur)",
        "12 rue des Éditeurs, 69002 Lyon",
    ),
)

ACCOUNTS = (
    DemoAccount(
        "applicant",
        "demandeur@demo.datapass.gouv.fr",
        "Demandeur-Demo-2026",
        "Camille Demandeur",
        organisations=("dunkerque", "idfm"),
    ),
    DemoAccount(
        "instructor",
        "instructeur@demo.datapass.gouv.fr",
        "Instructeur-Demo-2026",
        "Dominique Instructeur",
        roles=(Role.INSTRUCTOR,),
    ),
    DemoAccount(
        "security_officer",
        "securite@demo.datapass.gouv.fr",
        "Securite-Demo-2026",
        "Sacha Sécurité",
        roles=(Role.SECURITY_OFFICER,),
    ),
    DemoAccount(
        "admin",
        "admin@demo.datapass.gouv.fr",
        "Administrateur-Demo-2026",
        "Alex Administrateur",
        roles=(Role.ADMIN,),
    ),
)

ROLE_NAMES = {
    "applicant": "Demandeur",
    "instructor": "Instructeur",
    "security_officer": "Officier de sécurité",
    "admin": "Administrateur",
}


@dataclass
class DemoContext:
    """What the steps share: the seeded organisations and users, by key."""

    organisations: dict[str, Organisation] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    scale: int = 0
    seeded: bool = True  # False with --if-empty on a database that already had users


def ensure_allowed() -> None:
    if current_app.config["ENV"] == "production":
        raise DemoRefused(
            "Refusé : les données de démonstration n'existent pas en production "
            "(DATAPASS_ENV=production). Invitez les vrais comptes depuis l'administration."
        )


def seed_organisations() -> dict[str, Organisation]:
    """The demo organisations, created if missing (matched by SIRET)."""
    found: dict[str, Organisation] = {}
    for spec in ORGANISATIONS:
        organisation = db.session.scalar(
            select(Organisation).where(Organisation.siret == spec.siret)
        )
        if organisation is None:
            organisation = accounts.create_organisation(spec.siret, spec.name, spec.address, ACTOR)
        found[spec.key] = organisation
    return found


def seed_accounts(organisations: dict[str, Organisation] | None = None) -> dict[str, User]:
    """One account per role, created if missing (matched by e-mail); returns them by key
    (``applicant``, ``instructor``, ``security_officer``, ``admin``)."""
    organisations = organisations if organisations is not None else seed_organisations()
    users: dict[str, User] = {}
    for spec in ACCOUNTS:
        user = accounts.find_user_by_email(spec.email)
        if user is None:
            user = accounts.create_user(
                spec.email, spec.full_name, spec.password, ACTOR, is_demo=True
            )
        for key in spec.organisations:
            organisation = organisations[key]
            if not any(m.organisation_id == organisation.id for m in user.memberships):
                accounts.add_membership(organisation, user, True, ACTOR)
        for role in spec.roles:
            if role == Role.INSTRUCTOR:
                continue  # scoped to APIs: see grant_demo_instructor
            if not user.has_role(role):
                accounts.grant_role(user, role, None, ACTOR)
        users[spec.key] = user
    grant_demo_instructor(users["instructor"])
    return users


def grant_demo_instructor(instructor: User, api_ids: list[int] | None = None) -> None:
    """Make the demo instructor instruct ``api_ids`` (default: every API of the catalogue),
    skipping those already granted. Called again by the catalogue's demo step once its APIs
    exist."""
    from datapass.catalogue.models import Api

    if api_ids is None:
        api_ids = list(db.session.scalars(select(Api.id).order_by(Api.id)))
    granted = instructor.instructed_api_ids()
    for api_id in api_ids:
        if api_id not in granted:
            accounts.grant_role(instructor, Role.INSTRUCTOR, api_id, ACTOR)


def accounts_json() -> dict[str, dict[str, str]]:
    return {spec.key: {"email": spec.email, "password": spec.password} for spec in ACCOUNTS}


def _ids_by(key_column, id_column, keys: list[str], chunk: int = 5000) -> dict[str, int]:
    """Ids of freshly bulk-inserted rows by their natural key, in chunks (PostgreSQL takes at
    most 65,535 parameters in one statement)."""
    found: dict[str, int] = {}
    for start in range(0, len(keys), chunk):
        part = keys[start : start + chunk]
        found.update(
            db.session.execute(select(key_column, id_column).where(key_column.in_(part))).all()
        )
    return found


def _scale_accounts(context: DemoContext, result: dict[str, Any]) -> None:
    """``--scale N``: N more organisations, each with one applicant, by bulk insert (the
    benchmarks' data sets). Idempotent: rows already there are not inserted again."""
    n = context.scale
    if n <= 0:
        return
    prefix = "scale-"
    existing = db.session.scalar(
        select(func.count(User.id)).where(User.email.like(f"{prefix}%@demo.datapass.gouv.fr"))
    )
    if existing >= n:
        result.setdefault("scale", {})["organisations"] = n
        return
    from stdnum import luhn

    now = clock.now()
    password_hash = accounts.hash_password("Echelle-Demo-2026")
    org_rows, siret_list = [], []
    for i in range(existing, n):
        siren_body = f"{30000000 + i:08d}"
        siren = siren_body + luhn.calc_check_digit(siren_body)
        body = siren + "0001"
        siret = body + luhn.calc_check_digit(body)
        siret_list.append(siret)
        org_rows.append(
            {
                "siret": siret,
                "name": f"Collectivité de démonstration n° {i + 1}",
                "address": "",
                "created_at": now,
            }
        )
    for start in range(0, len(org_rows), 5000):
        db.session.execute(insert(Organisation), org_rows[start : start + 5000])
    ids = _ids_by(Organisation.siret, Organisation.id, siret_list)
    user_rows = [
        {
            "email": f"{prefix}{i + 1}@demo.datapass.gouv.fr",
            "full_name": f"Agent de démonstration {i + 1}",
            "password_hash": password_hash,
            "is_active_account": True,
            "session_epoch": 0,
            "created_at": now,
            "is_demo": True,
            "current_organisation_id": ids[siret_list[i - existing]],
        }
        for i in range(existing, n)
    ]
    for start in range(0, len(user_rows), 5000):
        db.session.execute(insert(User), user_rows[start : start + 5000])
    user_ids = _ids_by(User.email, User.id, [r["email"] for r in user_rows])
    membership_rows = [
        {
            "user_id": user_ids[row["email"]],
            "organisation_id": row["current_organisation_id"],
            "verified": True,
            "created_at": now,
        }
        for row in user_rows
    ]
    for start in range(0, len(membership_rows), 5000):
        db.session.execute(insert(Membership), membership_rows[start : start + 5000])
    result.setdefault("scale", {})["organisations"] = n


def _authorizations_step(context: DemoContext, result: dict[str, Any]) -> None:
    """The catalogue, requests in every state with the demo habilitation, a provider's
    machine client (``"provider_client"`` in the JSON); with ``--scale N``, N requests."""
    from datapass.authorizations import service as authorizations
    from datapass.catalogue import service as catalogue

    apis = catalogue.seed_catalogue()
    instructor = context.users["instructor"]
    del apis  # created; the demo instructor instructs every API of the catalogue
    grant_demo_instructor(instructor)
    result.update(
        authorizations.seed_demo(
            context.organisations["dunkerque"], context.users["applicant"], instructor
        )
    )
    if context.scale > 0:
        owners = db.session.execute(
            select(User.id, User.current_organisation_id)
            .where(User.email.like("scale-%@demo.datapass.gouv.fr"))
            .order_by(User.id)
        ).all()
        authorizations.seed_scale(context.scale, [o for _, o in owners], [u for u, _ in owners])
        result.setdefault("scale", {})["requests"] = context.scale


def _consumption_step(context: DemoContext, result: dict[str, Any]) -> None:
    """API consumption over the last 90 days for every token without any (the demo's and
    ``--scale``'s), so that the charts show something. Runs after the tokens exist."""
    seeded = seed_demo_consumption(max_tokens=max(5000, context.scale))
    # Days the scheduler already sealed keep their counts: the new tokens get none there.
    result["consumption"] = {
        "tokens": seeded["tokens"],
        "sealed_days_skipped": seeded["sealed_days_skipped"],
    }
    if context.scale > 0:
        result.setdefault("scale", {})["consumption_tokens"] = seeded["tokens"]


# Steps run in order after the accounts; other domains append theirs.
STEPS: list[Callable[[DemoContext, dict[str, Any]], None]] = [
    _scale_accounts,
    _authorizations_step,
]


def run_demo(*, if_empty: bool = False, scale: int = 0) -> dict[str, Any]:
    """Seed the demo data (idempotent) and return the JSON object describing it:
    ``{"accounts": {"applicant": {"email", "password"}, …}, …}``. With ``if_empty``,
    a database that already has users is left alone (the accounts are still returned).
    Flushes; the caller commits."""
    ensure_allowed()
    context = DemoContext(scale=scale)
    result: dict[str, Any] = {"accounts": accounts_json()}
    has_users = db.session.scalar(select(func.count(User.id))) > 0
    if if_empty and has_users:
        context.seeded = False
        return result
    context.organisations = seed_organisations()
    context.users = seed_accounts(context.organisations)
    for step in STEPS:
        step(context, result)
    db.session.flush()
    return result


def summary(result: dict[str, Any]) -> str:
    """A readable French summary of the demo accounts."""
    lines = ["Comptes de démonstration (développement uniquement) :", ""]
    for key, account in result["accounts"].items():
        name = ROLE_NAMES.get(key, key)
        lines.append(f"  {name:<22} {account['email']:<38} mot de passe : {account['password']}")
    lines += [
        "",
        "Le demandeur est membre de la Commune de Dunkerque et d'Île-de-France Mobilités.",
        "Les comptes d'équipe de démonstration peuvent se passer de double authentification "
        "en développement (jamais en production).",
    ]
    skipped = (result.get("consumption") or {}).get("sealed_days_skipped")
    if skipped:
        lines += [
            "",
            f"Consommation de démonstration : {skipped} journée(s) déjà scellée(s) laissée(s) "
            "telle(s) quelle(s).",
        ]
    return "\n".join(lines)


def _token_step(context: DemoContext, result: dict[str, Any]) -> None:
    """A token freshly issued at each run for the demo habilitation (tokens domain), so that
    ``--json`` hands scripts and browser tests a working token: ``"token": {"value", "jti"}``.
    Runs after the authorizations step that creates the demo habilitation."""
    from datapass.authorizations.models import Habilitation
    from datapass.authorizations.states import HabilitationStatus
    from datapass.tokens import service as tokens_service

    habilitation_id = (result.get("habilitation") or {}).get("id")
    if habilitation_id is None:
        org_ids = [o.id for o in context.organisations.values()]
        habilitation_id = db.session.scalar(
            select(Habilitation.id)
            .where(
                Habilitation.organisation_id.in_(org_ids),
                Habilitation.status == HabilitationStatus.ACTIVE,
            )
            .order_by(Habilitation.id)
            .limit(1)
        )
    if habilitation_id is None:
        return
    habilitation = db.session.get(Habilitation, habilitation_id)
    token, raw = tokens_service.issue_for_habilitation(habilitation, ACTOR)
    result["token"] = {"value": raw, "jti": token.jti}


STEPS.append(_token_step)  # keep last: it needs the demo habilitation
STEPS.append(_consumption_step)  # after the tokens: it counts the tokens they issued
