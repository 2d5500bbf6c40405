"""Passwords: the rules, the Argon2id hashes, and changing one's own.

The hashing cost and the throw-away verification of an unknown address are tuned for
security (the time a sign-in takes must not tell whether an address has an account): keep
them as they are."""

from __future__ import annotations

import contextlib
import hmac
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app
from flask_login import login_user

from datapass import clock
from datapass.accounts.errors import AccountError
from datapass.accounts.models import User
from datapass.accounts.sessions import bump_epoch
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.notify import outbox

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256


@lru_cache(maxsize=4)
def _hasher_for(time_cost: int, memory_kib: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)


def _hasher() -> PasswordHasher:
    config = current_app.config
    return _hasher_for(int(config["ARGON2_TIME_COST"]), int(config["ARGON2_MEMORY_KIB"]))


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be used, in French, or None."""
    if len(password or "") < MIN_PASSWORD_LENGTH:
        return f"Le mot de passe doit comporter au moins {MIN_PASSWORD_LENGTH} caractères."
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"Le mot de passe ne peut dépasser {MAX_PASSWORD_LENGTH} caractères."
    if not password.strip():
        return "Le mot de passe ne peut pas être composé uniquement d'espaces."
    return None


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` with the configured cost."""
    return _hasher().hash(password)


def check_password(user: User, password: str) -> bool:
    """Whether ``password`` is ``user``'s; upgrades the stored hash when the configured cost
    changed (flushed with the caller's transaction)."""
    if not user.password_hash or not password:
        return False
    hasher = _hasher()
    try:
        hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    return True


@lru_cache(maxsize=4)
def _dummy_hash(time_cost: int, memory_kib: int) -> str:
    return _hasher_for(time_cost, memory_kib).hash(secrets.token_hex(16))


def spend_password_time(password: str) -> None:
    """Verify against a throw-away hash, so an unknown address takes as long as a known one."""
    config = current_app.config
    dummy = _dummy_hash(int(config["ARGON2_TIME_COST"]), int(config["ARGON2_MEMORY_KIB"]))
    with contextlib.suppress(VerificationError):
        _hasher().verify(dummy, password or "-")


def set_password(user: User, new_password: str) -> None:
    problem = password_problem(new_password)
    if problem:
        raise AccountError(problem, "password")
    user.password_hash = hash_password(new_password)
    user.password_changed_at = clock.now()
    bump_epoch(user)


def change_password(user: User, current: str, new: str, actor: Actor) -> None:
    """Change the password of the signed-in ``user`` (the current password is required).
    Every other session of the user is signed out; the current one is kept."""
    if not check_password(user, current):
        raise AccountError("Le mot de passe actuel est incorrect.", "current_password")
    if hmac.compare_digest(current.encode(), new.encode()):
        raise AccountError("Le nouveau mot de passe doit être différent de l'actuel.", "password")
    set_password(user, new)
    audit.record(EventTag.Accounts.PasswordChanged, actor, subject=user)
    queue_password_changed_mail(user)
    # The bumped epoch signed out every session, this one included: reopen this one.
    login_user(user)


def queue_password_changed_mail(user: User) -> None:
    outbox.queue_mail(
        user.email, "account_password_changed", {"user": user, "changed_at": clock.now()}
    )
