"""The refusals of the rules of authorization requests (those of a transition are
:class:`datapass.authorizations.states.TransitionError`)."""

from __future__ import annotations

from datapass.errors import DomainError


class InvalidRequest(DomainError):
    """Input that breaks a rule; ``errors`` maps each field to its French messages (``field``
    names it when there is only one)."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(
            "; ".join(m for ms in errors.values() for m in ms),
            field=next(iter(errors)) if len(errors) == 1 else None,
        )
        self.errors = errors
