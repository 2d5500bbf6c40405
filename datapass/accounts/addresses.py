"""E-mail addresses: their canonical form, and the account that has one."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select

from datapass.accounts.errors import AccountError
from datapass.accounts.models import User
from datapass.extensions import db

INVALID_EMAIL = "Saisissez une adresse électronique valide, par exemple prenom.nom@exemple.fr."


def normalise_email(raw: str) -> str:
    """The canonical form of an address (validated, domain lower-cased; the whole address is
    lower-cased so that one person has one account). Raises :class:`AccountError`."""
    try:
        result = validate_email((raw or "").strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise AccountError(INVALID_EMAIL, "email") from exc
    return result.normalized.lower()


def find_user_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == email))
