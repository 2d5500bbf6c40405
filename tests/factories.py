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
    from datapass.accounts import service as accounts_service

    n = next(_counter)
    person = User(
        email=email or f"agent{n}@example.fr",
        full_name=fields.pop("full_name", f"Agent {n}"),
        password_hash=accounts_service.hash_password(password) if password else None,
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
