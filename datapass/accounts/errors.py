"""Why an act on accounts was refused."""

from __future__ import annotations

from datapass.errors import DomainError


class AccountError(DomainError):
    """A rule of accounts refused the act; ``message`` is French and meant for the person;
    ``field`` names the form field it belongs to, if any. Nothing was changed."""
