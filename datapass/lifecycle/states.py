"""The renewal's lifecycle: one enum and the questions pages ask.

``pending`` (an instructor must confirm) → ``completed`` | ``refused``;
``reopened`` (something changed: the request is being updated) → ``completed`` (the update is
approved) | ``cancelled``. A renewal with nothing changed under the automatic policy is
``completed`` at once. Status strings are compared here only.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


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


OPEN = frozenset({RenewalStatus.PENDING, RenewalStatus.REOPENED})


def is_open(renewal: Any) -> bool:
    return renewal.status in OPEN


def is_pending(renewal: Any) -> bool:
    return renewal.status == RenewalStatus.PENDING


def is_reopened(renewal: Any) -> bool:
    return renewal.status == RenewalStatus.REOPENED


def is_completed(renewal: Any) -> bool:
    return renewal.status == RenewalStatus.COMPLETED
