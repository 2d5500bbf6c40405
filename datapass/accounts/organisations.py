"""Organisations (SIRET), their members, and the one a person currently acts for."""

from __future__ import annotations

from sqlalchemy import select
from stdnum.exceptions import ValidationError as StdnumValidationError
from stdnum.fr import siret as siret_module

from datapass import clock
from datapass.accounts.addresses import find_user_by_email
from datapass.accounts.errors import AccountError
from datapass.accounts.models import Membership, Organisation, User
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.extensions import db

INVALID_SIRET = "Le SIRET doit comporter 14 chiffres et être valide."


def normalise_siret(raw: str) -> str:
    """The 14 digits of a valid SIRET (spaces allowed in input); :class:`AccountError`."""
    try:
        return siret_module.validate(raw or "")
    except StdnumValidationError as exc:
        raise AccountError(INVALID_SIRET, "siret") from exc


def create_organisation(siret: str, name: str, address: str, actor: Actor) -> Organisation:
    """Register an organisation (SIRET unique)."""
    siret = normalise_siret(siret)
    name = (name or "").strip()
    if not name:
        raise AccountError("Indiquez le nom de l'organisation.", "name")
    if db.session.scalar(select(Organisation.id).where(Organisation.siret == siret)):
        raise AccountError("Une organisation porte déjà ce SIRET.", "siret")
    organisation = Organisation(
        siret=siret, name=name, address=(address or "").strip(), created_at=clock.now()
    )
    db.session.add(organisation)
    db.session.flush()
    audit.record(
        EventTag.Accounts.OrganisationCreated,
        actor,
        subject=organisation,
        organisation_id=organisation.id,
        payload={"siret": siret, "name": name},
    )
    return organisation


def add_membership(
    organisation: Organisation, user: User, verified: bool, actor: Actor
) -> Membership:
    """Make ``user`` a member of ``organisation`` (verified members see all its requests)."""
    exists = db.session.scalar(
        select(Membership).where(
            Membership.user_id == user.id, Membership.organisation_id == organisation.id
        )
    )
    if exists is not None:
        raise AccountError(f"{user.email} est déjà membre de {organisation.name}.", "email")
    membership = Membership(
        user=user, organisation=organisation, verified=verified, created_at=clock.now()
    )
    db.session.add(membership)
    if user.current_organisation_id is None:
        user.current_organisation_id = organisation.id
    db.session.flush()
    audit.record(
        EventTag.Accounts.MembershipAdded,
        actor,
        subject=membership,
        organisation_id=organisation.id,
        payload={"user_id": user.id, "verified": verified},
    )
    return membership


def add_member(organisation: Organisation, email: str, verified: bool, actor: Actor) -> Membership:
    """Make the account of ``email`` a member of ``organisation`` (the person must have an
    account: invite them first)."""
    user = find_user_by_email(email)
    if user is None:
        raise AccountError(
            "Aucun compte n'existe pour cette adresse : invitez d'abord la personne.", "email"
        )
    return add_membership(organisation, user, verified, actor)


def current_organisation(user: User) -> Organisation | None:
    """The organisation ``user`` currently acts for: the one they chose if they still belong
    to it, else their first one; None for someone with no membership."""
    memberships = sorted(user.memberships, key=lambda m: m.id)
    for membership in memberships:
        if membership.organisation_id == user.current_organisation_id:
            return membership.organisation
    return memberships[0].organisation if memberships else None


def switch_organisation(user: User, organisation_id: int, actor: Actor) -> Organisation:
    """Make one of ``user``'s own organisations the current one."""
    membership = user.membership(organisation_id)
    if membership is None:
        raise AccountError("Choisissez l'une de vos organisations.", "organisation_id")
    previous = user.current_organisation_id
    if previous == organisation_id:
        return membership.organisation  # nothing changes, nothing to record
    user.current_organisation_id = organisation_id
    db.session.flush()
    audit.record(
        EventTag.Accounts.OrganisationSwitched,
        actor,
        subject=user,
        organisation_id=organisation_id,
        payload={"from": previous, "to": organisation_id},
    )
    return membership.organisation
