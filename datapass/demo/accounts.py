"""Demo organisations with valid SIRETs and one account per role.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select
from stdnum import luhn

from datapass import clock
from datapass.accounts.addresses import find_user_by_email
from datapass.accounts.directory import create_user, grant_role
from datapass.accounts.models import Membership, Organisation, Role, User
from datapass.accounts.organisations import add_membership, create_organisation
from datapass.accounts.passwords import hash_password
from datapass.catalogue.models import Api
from datapass.demo.context import ACTOR, DemoContext
from datapass.extensions import db


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


def seed_organisations() -> dict[str, Organisation]:
    """The demo organisations, created if missing (matched by SIRET)."""
    found: dict[str, Organisation] = {}
    for spec in ORGANISATIONS:
        organisation = db.session.scalar(
            select(Organisation).where(Organisation.siret == spec.siret)
        )
        if organisation is None:
            organisation = create_organisation(spec.siret, spec.name, spec.address, ACTOR)
        found[spec.key] = organisation
    return found


def seed_accounts(organisations: dict[str, Organisation] | None = None) -> dict[str, User]:
    """One account per role, created if missing (matched by e-mail); returns them by key
    (``applicant``, ``instructor``, ``security_officer``, ``admin``)."""
    organisations = organisations if organisations is not None else seed_organisations()
    users: dict[str, User] = {}
    for spec in ACCOUNTS:
        user = find_user_by_email(spec.email)
        if user is None:
            user = create_user(spec.email, spec.full_name, spec.password, ACTOR, is_demo=True)
        for key in spec.organisations:
            organisation = organisations[key]
            if not any(m.organisation_id == organisation.id for m in user.memberships):
                add_membership(organisation, user, True, ACTOR)
        for role in spec.roles:
            if role == Role.INSTRUCTOR:
                continue  # scoped to APIs: see grant_demo_instructor
            if not user.has_role(role):
                grant_role(user, role, None, ACTOR)
        users[spec.key] = user
    grant_demo_instructor(users["instructor"])
    return users


def grant_demo_instructor(instructor: User, api_ids: list[int] | None = None) -> None:
    """Make the demo instructor instruct ``api_ids`` (default: every API of the catalogue),
    skipping those already granted. Called again by the catalogue's demo step once its APIs
    exist."""
    if api_ids is None:
        api_ids = list(db.session.scalars(select(Api.id).order_by(Api.id)))
    granted = instructor.instructed_api_ids()
    for api_id in api_ids:
        if api_id not in granted:
            grant_role(instructor, Role.INSTRUCTOR, api_id, ACTOR)


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


def scale_accounts(context: DemoContext, result: dict[str, Any]) -> None:
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
    now = clock.now()
    password_hash = hash_password("Echelle-Demo-2026")
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
