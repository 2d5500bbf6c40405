"""Who acts: the first argument of every service function that changes something, and what
the audit log records as the author of each act."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Actor:
    """Who acts: a person, a machine client, the system (a scheduled job) or nobody known."""

    type: str
    id: str | None = None
    label: str | None = None
    ip: str | None = None
    user: Any = None  # the User, when a person acts (not written to the log)

    @classmethod
    def for_user(cls, user, ip: str | None = None) -> Actor:
        return cls("user", str(user.id), user.email, ip, user)

    @classmethod
    def machine(cls, client, ip: str | None = None) -> Actor:
        return cls("machine", str(client.client_id), client.name, ip)

    @classmethod
    def system(cls, job: str) -> Actor:
        return cls("system", None, job)

    @classmethod
    def anonymous(cls, ip: str | None = None, label: str | None = None) -> Actor:
        return cls("anonymous", None, label, ip)
