"""Loading tokens for pages and machines: scoped to what the user may see (an object is never
loaded unscoped, so no page can forget the filter), or by the exact string issued. And the
SQL criteria on a token's status that other domains filter with (dashboard, digest, trends):
the SQL side of the guards of :mod:`datapass.tokens.states`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, and_, or_, select

from datapass import vault
from datapass.accounts.models import Membership
from datapass.accounts.models import Role as AccountRole
from datapass.extensions import db
from datapass.tokens.models import MAX_TOKEN_LENGTH, AccessToken
from datapass.tokens.states import LIVE, TokenStatus

if TYPE_CHECKING:
    from sqlalchemy import Select

    from datapass.accounts.models import User


def visible_tokens_query(user: User) -> Select:
    """Tokens ``user`` may see: their organisations' (verified membership), the APIs they
    instruct, every token for a security officer."""
    if user.has_role(AccountRole.SECURITY_OFFICER):
        return select(AccessToken)
    org_ids = select(Membership.organisation_id).where(
        Membership.user_id == user.id, Membership.verified.is_(True)
    )
    conditions = [AccessToken.organisation_id.in_(org_ids)]
    api_ids = user.instructed_api_ids()
    if api_ids:
        conditions.append(AccessToken.api_id.in_(api_ids))
    return select(AccessToken).where(or_(*conditions))


def organisation_tokens_query(user: User) -> Select:
    """Tokens of the organisations ``user`` is a verified member of (the applicant list)."""
    org_ids = select(Membership.organisation_id).where(
        Membership.user_id == user.id, Membership.verified.is_(True)
    )
    return select(AccessToken).where(AccessToken.organisation_id.in_(org_ids))


def get_visible(user: User, token_id: int) -> AccessToken | None:
    """The token ``token_id`` if ``user`` may see it, else None (a 404 for the page)."""
    return db.session.scalar(visible_tokens_query(user).where(AccessToken.id == token_id))


def find_by_raw(raw: str | None) -> AccessToken | None:
    """The token issued as exactly ``raw`` (found by its digest), or None."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return None
    return db.session.scalar(select(AccessToken).where(AccessToken.digest == vault.sha256_hex(raw)))


# SQL criteria on the status (``select(AccessToken).where(queries.active())``): other domains
# filter with these, as they ask the guards of :mod:`datapass.tokens.states` in Python.


def active() -> ColumnElement[bool]:
    return AccessToken.status == TokenStatus.ACTIVE


def suspended() -> ColumnElement[bool]:
    return AccessToken.status == TokenStatus.SUSPENDED


def superseded() -> ColumnElement[bool]:
    return AccessToken.status == TokenStatus.SUPERSEDED


def revoked() -> ColumnElement[bool]:
    return AccessToken.status == TokenStatus.REVOKED


def in_grace(now: datetime) -> ColumnElement[bool]:
    """Replaced, and still valid until its grace end (after ``now``)."""
    return and_(AccessToken.status == TokenStatus.SUPERSEDED, AccessToken.grace_ends_at > now)


def live() -> ColumnElement[bool]:
    """Not ended (:func:`states.is_live`)."""
    return AccessToken.status.in_(list(LIVE))


def in_force() -> ColumnElement[bool]:
    """Active or suspended (:func:`states.is_in_force`)."""
    return AccessToken.status.in_([TokenStatus.ACTIVE, TokenStatus.SUSPENDED])
