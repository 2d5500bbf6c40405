"""The plan of a token: every step of its life from its current state, past and future.

Reminders before expiry, the expiry, the end of a grace period, the unused-access steps and
the closing of the habilitation. Which steps are done is known from the token's
:class:`LifecycleAct` rows; the sweep (:mod:`datapass.lifecycle.sweep`) does the due ones.

Written for speed: the sweep plans every due token (DESIGN §6, a million tokens in < 5 s), so
a step is a tuple and the reminders of one expiry day are drawn once (``lru_cache``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from flask import current_app
from sqlalchemy import select

from datapass import clock
from datapass.extensions import db
from datapass.lifecycle.days import day_start, days_after, paris_day
from datapass.lifecycle.models import LifecycleAct
from datapass.tokens import states as token_states
from datapass.tokens.models import AccessToken

if TYPE_CHECKING:
    from datapass.catalogue.models import Api
    from datapass.lifecycle.sweep import TokenRow

REMINDER_DAYS = (90, 60, 30, 15, 7, 1, 0)


class Step(NamedTuple):  # a tuple: a sweep builds a dozen per token
    at: datetime
    chain: str  # steps of one chain catch up to the latest only
    key: str  # unique per token (LifecycleAct.key)
    kind: str
    label: str  # what the token page says ("Sera suspendu faute d'utilisation")
    days: int | None = None


StepOutcome = tuple[str, dict[str, Any] | None]  # what a step's handler did, and its detail


def unused_thresholds(api: Api) -> dict[str, int]:
    """The API's unused-access grading, in days (0 or less: that step is off)."""
    return {
        "never_used": int(api.unused_never_used_warning_days or 0),
        "warning": int(api.unused_warning_days or 0),
        "suspend": int(api.unused_suspend_days or 0),
        "revoke": int(api.unused_revoke_days or 0),
    }


def unused_since(token: AccessToken | TokenRow) -> datetime:
    """Where the unused-access count starts: the last use (any channel), else issuance; a
    lifted suspension restarts it."""
    moments = [m for m in (token.issued_at, token.last_used_at, token.reactivated_at) if m]
    return max(clock.as_utc(m) for m in moments)


def _stamp(moment: datetime) -> str:
    """The idle period a step belongs to (its start, in epoch seconds): a use or a
    reactivation starts a new period, whose steps are new acts."""
    return str(int(moment.timestamp()))


def plan(token: AccessToken | TokenRow, api: Api) -> list[Step]:
    """Every step of ``token``'s life from its current state, past and future, in time order.
    Which of them are done is known from its :class:`LifecycleAct` rows."""
    status = token.status
    expires_at = clock.as_utc(token.expires_at)
    steps: list[Step] = []
    if token_states.is_active(status):
        issued_at = clock.as_utc(token.issued_at)
        steps.extend(
            step for step in _reminders(paris_day(expires_at)) if issued_at < step.at < expires_at
        )
    if token_states.is_live(status):
        steps.append(Step(expires_at, "expiry", "expiry", "expire", "Expirera"))
    if token_states.is_expired(status):
        steps.append(Step(expires_at, "expiry", "expiry", "expire", "A expiré"))
        close_days = current_app.config["LIFECYCLE_CLOSE_AFTER_DAYS"]
        steps.append(
            Step(
                days_after(expires_at, close_days),
                "closure",
                "closure",
                "closure",
                "L'habilitation sera close faute de renouvellement",
            )
        )
    if token_states.is_superseded(status) and token.grace_ends_at is not None:
        grace_end = clock.as_utc(token.grace_ends_at)
        if grace_end < expires_at:
            steps.append(
                Step(
                    grace_end,
                    "grace",
                    "grace_end",
                    "grace_end",
                    "Sera révoqué (fin du délai de grâce)",
                )
            )
    if token_states.is_in_force(status):
        steps.extend(_unused_steps(token, api, status))
    steps.sort(key=lambda s: (s.at, s.key))
    return steps


@lru_cache(maxsize=4096)
def _reminders(expiry_day: date) -> tuple[Step, ...]:
    """The reminder steps of the tokens expiring on ``expiry_day`` (shared: a sweep plans
    thousands of tokens expiring on a handful of days)."""
    return tuple(
        Step(
            day_start(expiry_day - timedelta(days=days)),
            "expiry",
            f"reminder:{days}",
            "reminder",
            "Rappel de renouvellement (expire ce jour)"
            if days == 0
            else f"Rappel de renouvellement (J-{days})",
            days,
        )
        for days in REMINDER_DAYS
    )


# The idle-period steps: (threshold, kind, label, only while active).
_IDLE_STEPS = (
    (
        "warning",
        "unused_warning",
        "Avertissement aux contacts et à l'instruction : jeton inutilisé",
        True,
    ),
    ("suspend", "unused_suspend", "Sera suspendu faute d'utilisation", True),
    ("revoke", "unused_revoke", "Sera révoqué faute d'utilisation", False),
)


def _unused_steps(token: AccessToken | TokenRow, api: Api, status: str) -> list[Step]:
    limits = unused_thresholds(api)
    since = unused_since(token)
    stamp = _stamp(since)
    since_day = paris_day(since)  # once: three steps count from it

    def after(days: int) -> datetime:
        return day_start(since_day + timedelta(days=days))

    steps: list[Step] = []
    active = token_states.is_active(status)
    never_used = token.last_used_at is None and token.reactivated_at is None
    if active and never_used and limits["never_used"] > 0:
        steps.append(
            Step(
                days_after(token.issued_at, limits["never_used"]),
                "unused",
                "unused:never_used",
                "never_used",
                "Avertissement : jeton jamais utilisé",
                limits["never_used"],
            )
        )
    for name, kind, label, active_only in _IDLE_STEPS:
        days = limits[name]
        if days > 0 and (active or not active_only):
            steps.append(Step(after(days), "unused", f"unused:{name}:{stamp}", kind, label, days))
    return steps


def upcoming_steps(token: AccessToken) -> list[tuple[date, str]]:
    """The thresholds still ahead for ``token`` (Paris dates, French labels), for its page:
    expiry, end of grace, each unused-access step ("Sera suspendu faute d'utilisation le …")
    and the closing of the habilitation. Reminders are left out."""
    now = clock.now()
    done = done_keys([token.id]).get(token.id, set())
    expires_at = clock.as_utc(token.expires_at)
    return [
        (paris_day(step.at), step.label)
        for step in plan(token, token.api)
        if step.at > now
        and step.key not in done
        and step.kind != "reminder"
        and not (step.chain == "unused" and step.at >= expires_at)  # moot after expiry
    ]


def done_keys(token_ids: Iterable[int]) -> dict[int, set[str]]:
    ids = list(token_ids)
    found: dict[int, set[str]] = {}
    if not ids:
        return found
    rows = db.session.execute(
        select(LifecycleAct.token_id, LifecycleAct.key).where(LifecycleAct.token_id.in_(ids))
    )
    for token_id, key in rows:
        found.setdefault(token_id, set()).add(key)
    return found
