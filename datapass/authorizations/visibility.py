"""What someone may see: every query of requests and habilitations starts from these scoped
queries (a view that loads an object by id goes through them, so no filter is forgotten), and
who instructs an API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import selectinload

from datapass.accounts.models import Role as AccountRole
from datapass.accounts.models import RoleGrant, User
from datapass.authorizations.models import AuthorizationRequest, Habilitation
from datapass.extensions import db

if TYPE_CHECKING:
    from datapass.accounts.models import Organisation


def _visible_clause(user: User, model: type[AuthorizationRequest | Habilitation]) -> Any:
    """Rows of ``model`` (a request or a habilitation) that ``user`` may see: every one of
    an organisation where they are a verified member, their own where they are not, every
    one of an API they instruct; security officers see them all."""
    if user.has_role(AccountRole.SECURITY_OFFICER):
        return True
    verified = [m.organisation_id for m in user.memberships if m.verified]
    member = [m.organisation_id for m in user.memberships]
    clauses = [
        model.organisation_id.in_(verified),
        and_(model.organisation_id.in_(member), model.requester_id == user.id),
    ]
    instructed = user.instructed_api_ids()
    if instructed:
        clauses.append(model.api_id.in_(instructed))
    return or_(*clauses)


def visible_requests(user: User) -> Select:
    """A query of the requests ``user`` may see (add filters to it, never remove this one)."""
    return select(AuthorizationRequest).where(_visible_clause(user, AuthorizationRequest))


def visible_habilitations(user: User) -> Select:
    return select(Habilitation).where(_visible_clause(user, Habilitation))


def get_request(request_id: int, user: User) -> AuthorizationRequest | None:
    """The request, if ``user`` may see it; None otherwise (the view answers 404)."""
    return db.session.scalar(visible_requests(user).where(AuthorizationRequest.id == request_id))


def get_habilitation(habilitation_id: int, user: User) -> Habilitation | None:
    return db.session.scalar(visible_habilitations(user).where(Habilitation.id == habilitation_id))


def organisation_requests(user: User, organisation: Organisation) -> list[AuthorizationRequest]:
    """The applicant's page: the organisation's requests that ``user`` may see."""
    membership = user.membership(organisation.id)
    if membership is None:
        return []
    query = select(AuthorizationRequest).where(
        AuthorizationRequest.organisation_id == organisation.id
    )
    if not membership.verified:
        query = query.where(AuthorizationRequest.requester_id == user.id)
    query = query.options(selectinload(AuthorizationRequest.api)).order_by(
        AuthorizationRequest.updated_at.desc(), AuthorizationRequest.id.desc()
    )
    return list(db.session.scalars(query))


def organisation_habilitations(user: User, organisation: Organisation) -> list[Habilitation]:
    membership = user.membership(organisation.id)
    if membership is None:
        return []
    query = select(Habilitation).where(Habilitation.organisation_id == organisation.id)
    if not membership.verified:
        query = query.where(Habilitation.requester_id == user.id)
    return list(db.session.scalars(query.order_by(Habilitation.created_at.desc())))


def instructors_of(api_id: int) -> list[User]:
    """The active instructors of one API (recipients of its instruction mails)."""
    query = (
        select(User)
        .join(RoleGrant, RoleGrant.user_id == User.id)
        .where(
            RoleGrant.role == AccountRole.INSTRUCTOR,
            RoleGrant.api_id == api_id,
            User.is_active_account.is_(True),
        )
        .order_by(User.id)
    )
    return list(db.session.scalars(query).unique())
