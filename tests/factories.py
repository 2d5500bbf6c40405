"""Builders for test data, through the real models (and services where rules apply)."""

from __future__ import annotations

import itertools

from stdnum import luhn

from datapass import clock
from datapass.accounts.models import Membership, Organisation, RoleGrant, User
from datapass.extensions import db

_counter = itertools.count(1)

PASSWORD = "Correct-horse-battery-9"


def siret(seed: int | None = None) -> str:
    """A valid SIRET (14 digits, Luhn checksum)."""
    seed = next(_counter) if seed is None else seed
    body = f"{21000000 + seed:08d}{seed % 100000:05d}"
    return body + luhn.calc_check_digit(body)


def organisation(name: str | None = None, **fields) -> Organisation:
    n = next(_counter)
    org = Organisation(
        siret=fields.pop("siret", None) or siret(n),
        name=name or f"Commune de Test {n}",
        address=fields.pop("address", f"{n} place de la Mairie, 75000 Paris"),
        created_at=clock.now(),
        **fields,
    )
    db.session.add(org)
    db.session.flush()
    return org


def user(
    email: str | None = None,
    *,
    password: str | None = PASSWORD,
    organisation: Organisation | None = None,
    verified: bool = True,
    roles: tuple[str, ...] = (),
    api=None,
    **fields,
) -> User:
    from datapass.accounts import passwords

    n = next(_counter)
    person = User(
        email=email or f"agent{n}@example.fr",
        full_name=fields.pop("full_name", f"Agent {n}"),
        password_hash=passwords.hash_password(password) if password else None,
        created_at=clock.now(),
        is_active_account=True,
        session_epoch=0,
        **fields,
    )
    db.session.add(person)
    db.session.flush()
    if organisation is not None:
        db.session.add(
            Membership(
                user=person, organisation=organisation, verified=verified, created_at=clock.now()
            )
        )
        person.current_organisation_id = organisation.id
    for role in roles:
        db.session.add(
            RoleGrant(
                user=person,
                role=role,
                api_id=api.id if (api is not None and role == "instructor") else None,
                granted_at=clock.now(),
            )
        )
    db.session.flush()
    db.session.refresh(person)
    return person


def enable_totp(person: User) -> str:
    """Turn TOTP on for ``person`` (as a confirmed enrolment would) and return the secret,
    so a test can compute codes with ``pyotp.TOTP(secret).at(clock.now())``."""
    import pyotp

    from datapass import vault

    secret = pyotp.random_base32()
    person.totp_secret_sealed = vault.seal(secret.encode(), "totp")
    person.mfa_enabled_at = clock.now()
    person.last_totp_step = None
    db.session.flush()
    return secret


def totp_code(secret: str, offset_steps: int = 0) -> str:
    """The TOTP code of ``secret`` at the (frozen) clock, ``offset_steps`` × 30 s away."""
    import pyotp

    return pyotp.TOTP(secret).at(clock.now(), counter_offset=offset_steps)


# --- catalogue and authorization requests (authorizations domain) -------------------------

PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def catalogue() -> dict:
    """The seeded catalogue (providers, the article's APIs and their scopes), by API slug."""
    from datapass.demo.catalogue import seed_catalogue

    return seed_catalogue()


def staff(role: str = "instructor", api=None, organisation=None, **fields) -> User:
    """A staff member with TOTP on (staff without it are sent to enrolment)."""
    fields.setdefault("mfa_enabled_at", clock.now())
    return user(roles=(role,), api=api, organisation=organisation, **fields)


def filled_request(api, organisation=None, requester=None, *, scopes=None, **overrides):
    """A complete draft: every section filled through the service, PDFs included."""
    from datetime import date

    from datapass.actor import Actor
    from datapass.authorizations import sections

    if organisation is None and requester is not None:
        organisation = requester.current_organisation
    organisation = organisation or globals()["organisation"]()
    requester = requester or user(organisation=organisation)
    actor = Actor.for_user(requester)
    request = sections.create_request(requester, organisation, api, actor)
    n = request.id
    values = {
        "projet": {
            "title": overrides.pop("title", f"Tarification sociale de la cantine {n}"),
            "description": "Calcul du tarif de la restauration scolaire sans justificatif.",
            "purpose": "Appliquer le tarif selon le quotient familial.",
        },
        "donnees": {"scopes": list(scopes or api.scope_codes()[:2])},
        "cadre-juridique": {
            "legal_basis_name": "Délibération du conseil municipal du 12 mars 2026",
            "legal_basis_url": "https://mairie.example.fr/deliberation.pdf",
            "legal_basis_document": None,
        },
        "contacts": {
            f"{role}_{part}": value
            for role in ("controller", "dpo", "technical", "business")
            for part, value in (
                ("name", f"{role.title()} Dupont"),
                ("email", f"{role}.{n}@mairie.example.fr"),
                ("phone", "01 23 45 67 89"),
            )
        },
        "conservation": {"retention_months": 12, "daily_volume": 300},
        "homologation": {
            "homologation_date": date(2026, 1, 15),
            "homologation_authority": "Le maire, autorité d'homologation",
            "homologation_document": ("homologation.pdf", PDF),
        },
        "conditions": {"terms": True},
    }
    for section, section_values in values.items():
        for key in list(overrides):
            if key in section_values:
                section_values[key] = overrides.pop(key)
        sections.save_section(request, section, section_values, actor)
    db.session.flush()
    return request


def request_in(
    state: str,
    api,
    *,
    reopening: bool = False,
    instructor: User | None = None,
    organisation=None,
    requester: User | None = None,
):
    """A complete request brought to ``state`` through the real lifecycle; ``reopening``:
    an update of a validated request (its habilitation stays active)."""
    from datapass.actor import Actor
    from datapass.authorizations import decisions

    request = filled_request(api, organisation, requester)
    applicant = Actor.for_user(request.requester)
    instructor = instructor or staff("instructor", api=api)
    staff_actor = Actor.for_user(instructor)
    if reopening:
        decisions.submit(request, applicant)
        decisions.approve(request, staff_actor)
        decisions.reopen(request, applicant)
        if state == "draft":
            return request
        decisions.submit(request, applicant)
        if state == "changes_requested":
            decisions.request_changes(request, staff_actor, "Précisez la finalité.")
        return request
    if state == "draft":
        return request
    if state == "archived":
        decisions.archive(request, applicant)
        return request
    decisions.submit(request, applicant)
    if state == "submitted":
        return request
    if state == "changes_requested":
        decisions.request_changes(request, staff_actor, "Précisez la finalité.")
    elif state == "refused":
        decisions.refuse(request, staff_actor, "Base légale insuffisante.")
    elif state in ("validated", "revoked"):
        decisions.approve(request, staff_actor)
        if state == "revoked":
            decisions.revoke(request, staff_actor, "Fin du projet.")
    return request
