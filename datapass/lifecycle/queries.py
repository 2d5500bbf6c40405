"""Questions about a member's tokens that the lifecycle's pages and rules ask."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from datapass.extensions import db
from datapass.tokens import queries as token_queries
from datapass.tokens.models import AccessToken

if TYPE_CHECKING:
    from datapass.accounts.models import User


def get_member_token(user: User, token_id: int) -> AccessToken | None:
    """A token of one of ``user``'s organisations (verified member), else None (404)."""
    return db.session.scalar(
        token_queries.organisation_tokens_query(user).where(AccessToken.id == token_id)
    )


def has_successor(token: AccessToken) -> bool:
    """Another live token of the same habilitation, or a live token of the habilitation
    that replaced it (a renewal through an update)."""
    return (
        db.session.scalar(
            select(AccessToken.id)
            .where(
                AccessToken.habilitation_id == token.habilitation_id,
                AccessToken.id != token.id,
                token_queries.in_force(),
            )
            .limit(1)
        )
        is not None
        or not token.habilitation.is_active
    )
