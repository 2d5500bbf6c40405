"""Why a change to the catalogue was refused, and the uniqueness rule that refuses it."""

from __future__ import annotations

from sqlalchemy import select

from datapass.errors import DomainError
from datapass.extensions import db


class CatalogueError(DomainError):
    """A catalogue change that breaks a rule; ``field`` names the form field concerned."""


def check_unique(model, column: str, value: str, exclude_id: int | None = None) -> None:
    """:class:`CatalogueError` if another row of ``model`` already has ``value``."""
    query = select(model.id).where(getattr(model, column) == value)
    if exclude_id is not None:
        query = query.where(model.id != exclude_id)
    if db.session.scalar(query) is not None:
        raise CatalogueError("Cette valeur est déjà utilisée dans le catalogue.", column)
