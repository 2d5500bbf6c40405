"""One root for the refusals of every domain's rules.

A service raises a :class:`DomainError` (or a domain's subclass of it) when a rule refuses an
act: the message is French and meant for the person, ``field`` names the form field it
belongs to, if any, and ``status`` is the HTTP status a JSON client gets. Nothing was changed
by the refused act; the caller rolls back. ``web.acting`` turns it into a form error or a
flash on pages, and the application's error handler into an RFC 9457 problem on the API.
"""

from __future__ import annotations


class DomainError(Exception):
    """A rule refused the act; nothing was changed."""

    status = 422

    def __init__(self, message: str, field: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message
