"""The sign-in rate limit: failures counted per account and per client address in a
sliding window, and the account's row lock that makes check-and-count one step."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, select

from datapass import clock, vault
from datapass.accounts.models import LoginFailure, User
from datapass.extensions import db


def login_key(email: str) -> str:
    """The rate-limit key of an address: an HMAC, so the table never holds addresses."""
    return vault.keyed_digest(email.lower(), "login")


def login_window() -> timedelta:
    return timedelta(minutes=int(current_app.config["LOGIN_WINDOW_MINUTES"]))


def _retry_at(moments: list[datetime]) -> datetime | None:
    """When the count of failures in the sliding window falls below the maximum."""
    limit = int(current_app.config["LOGIN_MAX_FAILURES"])
    if len(moments) < limit:
        return None
    moments = sorted(clock.as_utc(m) for m in moments)
    return moments[len(moments) - limit] + login_window()


def throttled_until(email_key: str, ip: str | None) -> datetime | None:
    """If sign-in is blocked for this account or this address, until when."""
    since = clock.now() - login_window()
    by_account = db.session.scalars(
        select(LoginFailure.at).where(LoginFailure.email_key == email_key, LoginFailure.at > since)
    ).all()
    by_ip: list[datetime] = []
    if ip:
        by_ip = db.session.scalars(
            select(LoginFailure.at).where(LoginFailure.ip == ip, LoginFailure.at > since)
        ).all()
    candidates = [m for m in (_retry_at(list(by_account)), _retry_at(list(by_ip))) if m]
    return max(candidates) if candidates else None


def record_failure(email_key: str, ip: str | None) -> None:
    # Old rows of this key are useless once out of the window.
    db.session.execute(
        delete(LoginFailure).where(
            LoginFailure.email_key == email_key, LoginFailure.at < clock.now() - login_window() * 4
        )
    )
    db.session.add(LoginFailure(at=clock.now(), email_key=email_key, ip=ip))
    db.session.flush()


def throttle_message(until: datetime) -> str:
    local = clock.local(until)
    minutes = max(1, int((until - clock.now()).total_seconds() + 59) // 60)
    return (
        "Trop de tentatives de connexion échouées. Par sécurité, la connexion est bloquée : "
        f"réessayez dans {minutes} minute{'s' if minutes > 1 else ''} "
        f"(à partir de {local:%H:%M}), ou réinitialisez votre mot de passe."
    )


def lock_account(user: User) -> None:
    """Take the account's row lock (``SELECT … FOR UPDATE``) and reload it, before the rate
    limit is read; held until the caller commits the outcome. The check of the limit, the
    password or code check and the count of the failure are then one step per account:
    concurrent guesses queue, and once the limit is reached the next ones are refused
    unchecked (without the lock, 16 concurrent guesses all passed a check made before any
    was counted). SQLite needs no lock: every transaction holds the write lock from BEGIN.
    An address nobody has gets no lock: there is no password behind it to guess."""
    db.session.scalar(
        select(User)
        .where(User.id == user.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
