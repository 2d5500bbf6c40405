"""The renewal's lifecycle: one enum, one transitions table and the questions pages ask.

A renewal is requested ``pending`` (an instructor must confirm) → ``completed`` | ``refused``;
or ``reopened`` (something changed: the request is being updated) → ``completed`` (the update
is approved) | ``cancelled``. A renewal with nothing changed under the automatic policy is
``completed`` at once. Status strings are compared here only; the one function that applies
a transition (and records its audit event) is :func:`datapass.lifecycle.renewal.apply_transition`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from datapass.audit.tags import EventTag
from datapass.errors import DomainError


class LifecycleError(DomainError):
    """A lifecycle rule refused the act (French message for the page); nothing changed."""

    status = 409


class RenewalStatus(StrEnum):
    PENDING = "pending"
    REOPENED = "reopened"
    COMPLETED = "completed"
    REFUSED = "refused"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return {
            "pending": "En attente de confirmation par l'instruction",
            "reopened": "Mise à jour de la demande en cours",
            "completed": "Renouvelé",
            "refused": "Refusé",
            "cancelled": "Annulé",
        }[self.value]

    @property
    def badge(self) -> str:
        return {
            "pending": "new",
            "reopened": "info",
            "completed": "success",
            "refused": "error",
            "cancelled": "",
        }[self.value]


class RenewalEvent(StrEnum):
    REQUEST = "request"  # the wizard's answers: a new renewal
    REOPEN = "reopen"  # something changed: it waits on the update of the request
    COMPLETE = "complete"  # a new token (at once, confirmed, or the update approved)
    REFUSE = "refuse"  # the instructor refuses (with a reason)
    CANCEL = "cancel"  # the update was abandoned or refused; or the habilitation closed


@dataclass(frozen=True)
class Transition:
    sources: frozenset[RenewalStatus | None]  # None: the renewal is being created
    target: RenewalStatus
    tag: EventTag.Lifecycle
    final: bool = False  # the renewal is decided (``decided_at``)


TRANSITIONS: dict[RenewalEvent, Transition] = {
    RenewalEvent.REQUEST: Transition(
        frozenset({None}), RenewalStatus.PENDING, EventTag.Lifecycle.RenewalRequested
    ),
    RenewalEvent.REOPEN: Transition(
        frozenset({RenewalStatus.PENDING}),
        RenewalStatus.REOPENED,
        EventTag.Lifecycle.RenewalReopened,
    ),
    RenewalEvent.COMPLETE: Transition(
        frozenset({RenewalStatus.PENDING, RenewalStatus.REOPENED}),
        RenewalStatus.COMPLETED,
        EventTag.Lifecycle.RenewalCompleted,
        final=True,
    ),
    RenewalEvent.REFUSE: Transition(
        frozenset({RenewalStatus.PENDING}),
        RenewalStatus.REFUSED,
        EventTag.Lifecycle.RenewalRefused,
        final=True,
    ),
    RenewalEvent.CANCEL: Transition(
        frozenset({RenewalStatus.PENDING, RenewalStatus.REOPENED}),
        RenewalStatus.CANCELLED,
        EventTag.Lifecycle.RenewalCancelled,
        final=True,
    ),
}

OPEN = frozenset({RenewalStatus.PENDING, RenewalStatus.REOPENED})


def can(renewal: Any, event: RenewalEvent) -> bool:
    """Whether ``event`` may happen to ``renewal`` in its current status."""
    return renewal.status in TRANSITIONS[event].sources


def check(renewal: Any, event: RenewalEvent) -> Transition:
    """The transition of ``event``, or :class:`LifecycleError` if the status forbids it."""
    if not can(renewal, event):
        raise LifecycleError("Ce renouvellement n'est plus dans un état qui le permet.")
    return TRANSITIONS[event]


def is_open(renewal: Any) -> bool:
    return renewal.status in OPEN


def is_pending(renewal: Any) -> bool:
    return renewal.status == RenewalStatus.PENDING


def is_reopened(renewal: Any) -> bool:
    return renewal.status == RenewalStatus.REOPENED


def is_completed(renewal: Any) -> bool:
    return renewal.status == RenewalStatus.COMPLETED
