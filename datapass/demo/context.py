"""What every demo step shares: the acting system, the seeded objects, the production guard."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app

from datapass.accounts.models import Organisation, User
from datapass.actor import Actor

ACTOR = Actor.system("demo")


class DemoRefused(RuntimeError):
    """The demo must not run here (production)."""


@dataclass
class DemoContext:
    """What the steps share: the seeded organisations and users, by key."""

    organisations: dict[str, Organisation] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    scale: int = 0
    seeded: bool = True  # False with --if-empty on a database that already had users


def ensure_allowed() -> None:
    if current_app.config["ENV"] == "production":
        raise DemoRefused(
            "Refusé : les données de démonstration n'existent pas en production "
            "(DATAPASS_ENV=production). Invitez les vrais comptes depuis l'administration."
        )
