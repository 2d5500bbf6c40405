"""The access token's lifecycle: one enum, one transitions table, the guards.

``active`` → ``suspended`` (reversible) → ``active``; ``active|suspended|superseded`` →
``revoked`` (final); ``active|suspended|superseded`` → ``expired`` (final, at ``exp``);
``active`` → ``superseded`` when a rotation or a renewal issues its successor: the old token
stays valid until its grace end, then a job revokes it. Nothing extends a token.

Templates and views ask ``can(...)``-style questions; status strings are compared here only.
Applying a transition (and recording it) is ``datapass.tokens.transitions.apply``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from datapass import clock
from datapass.accounts.models import Role as AccountRole
from datapass.audit.tags import EventTag
from datapass.errors import DomainError

if TYPE_CHECKING:
    from datapass.actor import Actor
    from datapass.tokens.models import AccessToken


class TokenStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"

    @property
    def label(self) -> str:
        return STATUS_LABELS[self]

    @property
    def badge(self) -> str:
        return STATUS_BADGES[self]


STATUS_LABELS = {
    TokenStatus.ACTIVE: "Actif",
    TokenStatus.SUSPENDED: "Suspendu",
    TokenStatus.REVOKED: "Révoqué",
    TokenStatus.EXPIRED: "Expiré",
    TokenStatus.SUPERSEDED: "Remplacé",
}
STATUS_BADGES = {
    TokenStatus.ACTIVE: "success",
    TokenStatus.SUSPENDED: "warning",
    TokenStatus.REVOKED: "error",
    TokenStatus.EXPIRED: "info",
    TokenStatus.SUPERSEDED: "new",
}

FINAL = frozenset({TokenStatus.REVOKED, TokenStatus.EXPIRED})
# Every other status: the token may still open the API, or open it again.
LIVE = frozenset(TokenStatus) - FINAL
# The token that stands for its habilitation: neither replaced nor ended.
IN_FORCE = frozenset({TokenStatus.ACTIVE, TokenStatus.SUSPENDED})
# A renewal starts from the token in use, or from one that has just run out.
RENEWABLE = frozenset({TokenStatus.ACTIVE, TokenStatus.EXPIRED})

# Roles an actor may hold with respect to one token (computed by :func:`roles_of`):
#   member            verified member of the token's organisation (the administration)
#   instructor        instructor of the token's API
#   security_officer  Datapass security officer (every token)
#   system            a scheduled job
#   machine           the API provider's machine client (RFC 7009 revocation)
#   reporter          anyone reporting the token found in the wild (leak)
#   habilitation      cascade from the habilitation's own revocation (already authorised)


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[TokenStatus]
    target: TokenStatus
    roles: frozenset[str]
    tag: EventTag.Tokens  # the audit event written when the transition happens
    webhook: str | None  # the provider webhook it fires
    reason_required: bool = False


def _t(name, sources, target, roles, tag, webhook, reason_required=False) -> Transition:
    return Transition(
        name, frozenset(sources), target, frozenset(roles), tag, webhook, reason_required
    )


S = TokenStatus
TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        _t(
            "suspend",
            {S.ACTIVE},
            S.SUSPENDED,
            {"instructor", "security_officer", "system"},
            EventTag.Tokens.TokenSuspended,
            "token.suspended",
            reason_required=True,
        ),
        _t(
            "reactivate",
            {S.SUSPENDED},
            S.ACTIVE,
            {"instructor", "security_officer", "system"},
            EventTag.Tokens.TokenReactivated,
            "token.reactivated",
            reason_required=True,
        ),
        _t(
            "revoke",
            {S.ACTIVE, S.SUSPENDED, S.SUPERSEDED},
            S.REVOKED,
            {
                "member",
                "instructor",
                "security_officer",
                "system",
                "machine",
                "reporter",
                "habilitation",
            },
            EventTag.Tokens.TokenRevoked,
            "token.revoked",
            reason_required=True,
        ),
        _t(
            "supersede",
            {S.ACTIVE},
            S.SUPERSEDED,
            {"member", "system", "habilitation"},
            EventTag.Tokens.TokenRotated,
            "token.rotated",
        ),
        _t(
            "expire",
            {S.ACTIVE, S.SUSPENDED, S.SUPERSEDED},
            S.EXPIRED,
            {"system"},
            EventTag.Tokens.TokenExpired,
            "token.expired",
        ),
    )
}

# Acts on a token that do not change its state, with who may do them.
ACTS: dict[str, frozenset[str]] = {
    "view": frozenset({"member", "instructor", "security_officer"}),
    "reveal": frozenset({"member"}),
    "send": frozenset({"member"}),
}


# Guards on a bare status, for the domains above (lifecycle's plan and sweep call them per
# token on the hot path: one comparison each, no query). Other domains ask these; they do not
# compare token statuses themselves.


def is_active(status: str) -> bool:
    """In use: it opens the API (between ``nbf`` and ``exp``) and is its habilitation's."""
    return status == TokenStatus.ACTIVE


def is_suspended(status: str) -> bool:
    return status == TokenStatus.SUSPENDED


def is_superseded(status: str) -> bool:
    """Replaced by a successor; still valid until its grace end, if it has one."""
    return status == TokenStatus.SUPERSEDED


def is_expired(status: str) -> bool:
    return status == TokenStatus.EXPIRED


def is_revoked(status: str) -> bool:
    return status == TokenStatus.REVOKED


def is_live(status: str) -> bool:
    """Not ended (revoked or expired): it may still open the API, or open it again."""
    return status in LIVE


def is_in_force(status: str) -> bool:
    """Active or suspended: the token standing for its habilitation (not replaced, not
    ended)."""
    return status in IN_FORCE


def may_renew(status: str) -> bool:
    """A renewal may start from this status (active, or expired)."""
    return status in RENEWABLE


def may_suspend(status: str) -> bool:
    return status in TRANSITIONS["suspend"].sources


def may_supersede(status: str) -> bool:
    """A successor may replace it (with a grace period)."""
    return status in TRANSITIONS["supersede"].sources


def may_expire(status: str) -> bool:
    return status in TRANSITIONS["expire"].sources


class TransitionError(DomainError):
    """The transition is not allowed from this state or for this actor (a conflict with the
    token's current state: 409 if it ever reaches a page or the API uncaught)."""

    status = 409


def roles_of(user: Any, token: AccessToken) -> set[str]:
    """The roles ``user`` (a User, or None) holds with respect to ``token``."""
    if user is None or not getattr(user, "is_authenticated", False):
        return set()
    roles: set[str] = set()
    if any(m.verified and m.organisation_id == token.organisation_id for m in user.memberships):
        roles.add("member")
    if token.api_id in user.instructed_api_ids():
        roles.add("instructor")
    if user.has_role(AccountRole.SECURITY_OFFICER):
        roles.add("security_officer")
    return roles


def actor_roles(actor: Actor, token: AccessToken) -> set[str]:
    """The roles of an audit actor: a person's roles, or the role of what it is."""
    if actor.type == "user":
        return roles_of(actor.user, token)
    if actor.type == "system":
        return {"system"}
    if actor.type == "machine":
        return {"machine"}
    return {"reporter"}


def status_of(token: AccessToken) -> TokenStatus:
    return TokenStatus(token.status)


def can(name: str, user: Any, token: AccessToken) -> bool:
    """May ``user`` do ``name`` (a transition or an act) on ``token`` now?"""
    roles = roles_of(user, token)
    if name in ACTS:
        if not roles & ACTS[name]:
            return False
        if name in {"reveal", "send"}:
            return token.sealed_value is not None and is_usable(token)
        return True
    transition = TRANSITIONS[name]
    if name == "supersede" and token.expires_at <= clock.now():
        return False
    return status_of(token) in transition.sources and bool(roles & transition.roles)


def usable_window(
    status: str, not_before: datetime | None, expires_at: datetime | None, grace_ends_at
) -> tuple[datetime | None, datetime] | None:
    """When a token opens the API: ``(from, until)`` (``from`` inclusive, ``until``
    exclusive), or None if never again. Active: between ``nbf`` and ``exp``; superseded:
    until the end of its grace too. The introspection hot path keeps it with its cache."""
    if expires_at is None:
        return None
    if status == TokenStatus.ACTIVE:
        return not_before, expires_at
    if status == TokenStatus.SUPERSEDED and grace_ends_at is not None:
        return not_before, min(expires_at, grace_ends_at)
    return None


def is_usable(token: AccessToken, at: datetime | None = None) -> bool:
    """Does the token open the API now? (:func:`usable_window`)."""
    window = usable_window(token.status, token.not_before, token.expires_at, token.grace_ends_at)
    if window is None:
        return False
    at = at or clock.now()
    return (window[0] is None or window[0] <= at) and at < window[1]
