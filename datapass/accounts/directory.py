"""The directory administrators keep: users and organisations found by search, accounts
created or invited, staff roles granted and withdrawn, accounts closed and reopened."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import func, or_, select

from datapass import clock
from datapass.accounts.addresses import find_user_by_email, normalise_email
from datapass.accounts.errors import AccountError
from datapass.accounts.links import make_password_link
from datapass.accounts.models import ROLE_LABELS, Membership, Organisation, Role, RoleGrant, User
from datapass.accounts.organisations import current_organisation
from datapass.accounts.passwords import hash_password, password_problem
from datapass.accounts.sessions import bump_epoch
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.catalogue.models import Api
from datapass.extensions import db
from datapass.notify import outbox


def _search_page(stmt, search: str, columns: list, page: int, per_page: int):
    """One page of ``stmt``, narrowed to the rows where one of ``columns`` (lower-cased
    already) contains ``search``."""
    search = (search or "").strip()
    if search:
        pattern = f"%{search.lower()}%"
        stmt = stmt.where(or_(*(column.like(pattern) for column in columns)))
    return db.paginate(stmt, page=page, per_page=per_page, error_out=False)


def organisations_page(search: str = "", page: int = 1, per_page: int = 25):
    """Organisations matching ``search`` (name or SIRET), by name, one page of them."""
    stmt = select(Organisation).order_by(Organisation.name)
    columns = [func.lower(Organisation.name), Organisation.siret]
    return _search_page(stmt, search, columns, page, per_page)


def users_page(search: str = "", page: int = 1, per_page: int = 25):
    """Users matching ``search`` (address or name), by address, one page of them."""
    stmt = select(User).order_by(User.email)
    columns = [func.lower(User.email), func.lower(User.full_name)]
    return _search_page(stmt, search, columns, page, per_page)


def _new_user(email: str, full_name: str, *, password: str | None, is_demo: bool) -> User:
    if find_user_by_email(email) is not None:
        raise AccountError("Un compte existe déjà pour cette adresse électronique.", "email")
    if password is not None:
        problem = password_problem(password)
        if problem:
            raise AccountError(problem, "password")
    user = User(
        email=email,
        full_name=(full_name or "").strip(),
        password_hash=hash_password(password) if password else None,
        created_at=clock.now(),
        password_changed_at=clock.now() if password else None,
        is_active_account=True,
        session_epoch=0,
        is_demo=is_demo,
    )
    db.session.add(user)
    db.session.flush()
    return user


def create_user(
    raw_email: str, full_name: str, password: str, actor: Actor, *, is_demo: bool = False
) -> User:
    """Create an account with a known password (demo data, operations)."""
    user = _new_user(normalise_email(raw_email), full_name, password=password, is_demo=is_demo)
    audit.record(EventTag.Accounts.UserCreated, actor, subject=user, payload={"is_demo": is_demo})
    return user


def _add_grant(user: User, role: Role, api_id: int | None, actor: Actor) -> RoleGrant:
    grant = RoleGrant(
        user=user,
        role=str(role),
        api_id=api_id,
        granted_at=clock.now(),
        granted_by_id=actor.user.id if actor.user is not None else None,
    )
    db.session.add(grant)
    return grant


def _check_role(role: str, api_id: int | None) -> tuple[Role, int | None]:
    try:
        role_ = Role(role)
    except ValueError as exc:
        raise AccountError("Ce rôle n'existe pas.", "role") from exc
    if role_ == Role.INSTRUCTOR:
        if api_id is None:
            raise AccountError("Un instructeur instruit une API : choisissez-la.", "api_id")
        if db.session.get(Api, api_id) is None:
            raise AccountError("Cette API n'existe pas dans le catalogue.", "api_id")
    else:
        api_id = None
    return role_, api_id


def invite_user(
    raw_email: str,
    full_name: str,
    actor: Actor,
    *,
    organisation: Organisation | None = None,
    verified: bool = True,
    roles: list[tuple[str, int | None]] | None = None,
) -> User:
    """Create an account without password and e-mail a link to set it (valid
    INVITE_LINK_HOURS, single use). Optional membership and roles come with it."""

    email = normalise_email(raw_email)
    checked = [_check_role(role, api_id) for role, api_id in roles or []]
    user = _new_user(email, full_name, password=None, is_demo=False)
    if organisation is not None:
        db.session.add(
            Membership(
                user=user, organisation=organisation, verified=verified, created_at=clock.now()
            )
        )
        user.current_organisation_id = organisation.id
    seen = set()
    for role, api_id in checked:
        if (role, api_id) in seen:
            continue
        seen.add((role, api_id))
        _add_grant(user, role, api_id, actor)
    db.session.flush()
    _mail_invitation(user, actor, organisation, [ROLE_LABELS[role] for role, _ in sorted(seen)])
    audit.record(
        EventTag.Accounts.UserInvited,
        actor,
        subject=user,
        organisation_id=organisation.id if organisation else None,
        payload={
            "email": audit.secret(email),
            "roles": sorted(f"{role}:{api_id}" if api_id else str(role) for role, api_id in seen),
            "organisation_id": organisation.id if organisation else None,
        },
    )
    return user


def active_admins() -> list[User]:
    """The active accounts that hold the administrator role, by address."""
    return list(
        db.session.scalars(
            select(User)
            .join(RoleGrant, RoleGrant.user_id == User.id)
            .where(RoleGrant.role == Role.ADMIN, User.is_active_account.is_(True))
            .distinct()
            .order_by(User.email)
        )
    )


@dataclass(frozen=True)
class OperatorAdmin:
    """An administrator created from the command line, and the link that sets its password."""

    user: User
    link: str


def create_admin_by_operator(
    raw_email: str, full_name: str, actor: Actor, *, force: bool = False, operator: str = ""
) -> OperatorAdmin:
    """The first administrator of a deployment (``flask datapass users create-admin``): an
    account without password holding the administrator role, so TOTP enrolment at its first
    sign-in, as for any staff account. The single-use invitation link is returned, for the
    operator to hand over, and mailed too. Refused while an active administrator exists,
    unless ``force`` (a lost administrator: the new one can then act on the old account).
    ``operator`` is who ran the command on the server (their system login), for the audit."""
    email = normalise_email(raw_email)
    existing = active_admins()
    if existing and not force:
        shown = ", ".join(admin.email for admin in existing[:3])
        more = f" et {len(existing) - 3} autre(s)" if len(existing) > 3 else ""
        raise AccountError(
            f"Un administrateur actif existe déjà ({shown}{more}) : invitez les autres "
            "personnes depuis l'administration de Datapass, ou relancez la commande avec "
            "--force pour créer malgré tout un administrateur supplémentaire."
        )
    user = _new_user(email, full_name, password=None, is_demo=False)
    _add_grant(user, Role.ADMIN, None, actor)
    db.session.flush()
    _mail_invitation(user, actor, None, [ROLE_LABELS[Role.ADMIN]])
    audit.record(
        EventTag.Accounts.AdminCreatedByOperator,
        actor,
        subject=user,
        payload={
            "email": audit.secret(email),
            "roles": [str(Role.ADMIN)],
            "forced": bool(force),
            "active_admins_before": len(existing),
            "operator": operator,
        },
    )
    return OperatorAdmin(user=user, link=make_password_link(user, "invite"))


def _mail_invitation(
    user: User, actor: Actor, organisation: Organisation | None, role_labels: list[str]
) -> None:
    outbox.queue_mail(
        user.email,
        "account_invitation",
        {
            "user": user,
            "link": make_password_link(user, "invite"),
            "hours": current_app.config["INVITE_LINK_HOURS"],
            "organisation": organisation,
            "inviter": actor.user,
            "role_labels": role_labels,
        },
    )


def resend_invitation(user: User, actor: Actor) -> None:
    """Send a new invitation link to someone who has not set their password yet."""

    if user.password_hash is not None:
        raise AccountError("Cette personne a déjà choisi son mot de passe.")
    if not user.is_active_account:
        raise AccountError("Ce compte est désactivé.")
    roles = [role_label(r) for r in sorted(user.roles)]
    _mail_invitation(user, actor, current_organisation(user), roles)
    audit.record(EventTag.Accounts.UserInvitationResent, actor, subject=user)


def grant_role(user: User, role: str, api_id: int | None, actor: Actor) -> RoleGrant:
    """Give ``user`` a staff role (an instructor's is scoped to one API)."""
    role_, api_id = _check_role(role, api_id)
    for grant in user.role_grants:
        if grant.role == role_ and grant.api_id == api_id:
            raise AccountError("Cette personne a déjà ce rôle.", "role")
    grant = _add_grant(user, role_, api_id, actor)
    db.session.flush()
    audit.record(
        EventTag.Accounts.RoleGranted,
        actor,
        subject=user,
        api_id=api_id,
        payload={"role": str(role_), "api_id": api_id},
    )
    return grant


def withdraw_role(grant: RoleGrant, actor: Actor) -> None:
    """Take a staff role back. An administrator cannot withdraw their own admin role."""
    user = grant.user
    if grant.role == Role.ADMIN and actor.user is not None and actor.user.id == user.id:
        raise AccountError(
            "Vous ne pouvez pas retirer votre propre rôle d'administrateur : "
            "demandez-le à un autre administrateur."
        )
    role, api_id = grant.role, grant.api_id
    user.role_grants.remove(grant)
    db.session.delete(grant)
    db.session.flush()
    audit.record(
        EventTag.Accounts.RoleWithdrawn,
        actor,
        subject=user,
        api_id=api_id,
        payload={"role": role, "api_id": api_id},
    )


def deactivate_user(user: User, actor: Actor) -> None:
    """Close an account: it cannot sign in, and every live session ends at its next request."""
    if actor.user is not None and actor.user.id == user.id:
        raise AccountError("Vous ne pouvez pas désactiver votre propre compte.")
    if not user.is_active_account:
        raise AccountError("Ce compte est déjà désactivé.")
    user.is_active_account = False
    user.deactivated_at = clock.now()
    bump_epoch(user)
    db.session.flush()
    audit.record(EventTag.Accounts.UserDeactivated, actor, subject=user)


def reactivate_user(user: User, actor: Actor) -> None:
    """Reopen a closed account (its old sessions stay dead)."""
    if user.is_active_account:
        raise AccountError("Ce compte est déjà actif.")
    user.is_active_account = True
    user.deactivated_at = None
    bump_epoch(user)
    db.session.flush()
    audit.record(EventTag.Accounts.UserReactivated, actor, subject=user)


def role_label(role: str) -> str:
    try:
        return ROLE_LABELS[Role(role)]
    except ValueError:
        return role


def instructor_emails(api_id: int) -> list[str]:
    """The e-mail addresses of the active instructors of one API."""
    return list(
        db.session.scalars(
            select(User.email)
            .join(RoleGrant, RoleGrant.user_id == User.id)
            .where(
                RoleGrant.role == Role.INSTRUCTOR,
                RoleGrant.api_id == api_id,
                User.is_active_account.is_(True),
            )
            .distinct()
        )
    )
