"""Signing in and out: the password step, the second factor, re-authentication before a
sensitive act.

These functions also write the session keys, because those keys are part of the rule
(:func:`datapass.accounts.sessions.load_session_user` reads them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import session
from flask_login import login_user, logout_user
from sqlalchemy import delete, select

from datapass import clock
from datapass.accounts.addresses import normalise_email
from datapass.accounts.errors import AccountError
from datapass.accounts.mfa import use_recovery_code, verify_totp
from datapass.accounts.models import LoginFailure, User
from datapass.accounts.passwords import check_password, spend_password_time
from datapass.accounts.sessions import (
    SESSION_AUTH_AT,
    SESSION_PENDING_LOGIN,
    SESSION_REAUTH_AT,
    bump_epoch,
    safe_next,
)
from datapass.accounts.throttle import (
    lock_account,
    login_key,
    record_failure,
    throttle_message,
    throttled_until,
)
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.extensions import db

PENDING_LOGIN_MINUTES = 5
INVALID_CREDENTIALS = "Adresse électronique ou mot de passe incorrect."
INVALID_SECOND_FACTOR = "Code de vérification incorrect ou déjà utilisé."


@dataclass
class LoginOutcome:
    """What a sign-in attempt led to: ``signed_in``, ``second_factor`` (a TOTP or recovery
    code is awaited), ``invalid``, ``throttled`` or ``inactive``."""

    status: str
    user: User | None = None
    message: str | None = None


def authenticate(raw_email: str, password: str, ip: str | None) -> LoginOutcome:
    """First step of sign-in: the address and password. An unknown address and a wrong
    password get the same answer; failures count per account and per address; once the
    password is right, a user with TOTP is asked for a code before anything is opened."""
    try:
        email = normalise_email(raw_email)
    except AccountError:
        email = (raw_email or "").strip().lower()
    key = login_key(email)
    actor = Actor.anonymous(ip)
    # Locked before the rate limit is read, until the caller commits the outcome.
    user = db.session.scalar(
        select(User)
        .where(User.email == email)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    refused = _throttled(key, ip, actor, None, {"email": audit.secret(email)})
    if refused is not None:
        return refused
    if user is None:
        spend_password_time(password)
        _fail(key, ip, actor, None, email, "unknown_email")
        return LoginOutcome("invalid", message=INVALID_CREDENTIALS)
    if not check_password(user, password):
        _fail(key, ip, actor, user, email, "wrong_password")
        return LoginOutcome("invalid", message=INVALID_CREDENTIALS)
    if not user.is_active_account:
        # Only someone who knows the password learns that the account is closed.
        _fail(key, ip, actor, user, email, "deactivated")
        return LoginOutcome(
            "inactive",
            message="Ce compte est désactivé. Contactez l'administrateur de Datapass.",
        )
    if user.mfa_enabled:
        return LoginOutcome("second_factor", user=user)
    sign_in(user, ip, method="password")
    return LoginOutcome("signed_in", user=user)


def _throttled(
    key: str, ip: str | None, actor: Actor, subject: User | None, payload: dict[str, Any]
) -> LoginOutcome | None:
    """The refusal of a sign-in step while this account or address is blocked (recorded
    with ``payload``), or None."""
    until = throttled_until(key, ip)
    if until is None:
        return None
    audit.record(
        EventTag.Accounts.UserLoginThrottled,
        actor,
        subject=subject,
        payload={**payload, "retry_at": until.isoformat()},
    )
    return LoginOutcome("throttled", message=throttle_message(until))


def _fail(
    key: str, ip: str | None, actor: Actor, user: User | None, email: str, reason: str
) -> None:
    """Count a failed sign-in step towards the rate limit and record it."""
    record_failure(key, ip)
    audit.record(
        EventTag.Accounts.UserLoginFailed,
        actor,
        subject=user,
        payload={"email": audit.secret(email), "reason": reason},
    )


def begin_second_factor(user: User, next_url: str | None) -> None:
    """Remember, in the session, that ``user`` passed the password step (nobody is signed
    in yet)."""
    session.pop(SESSION_PENDING_LOGIN, None)
    session[SESSION_PENDING_LOGIN] = {
        "user_id": user.id,
        "epoch": user.session_epoch,
        "at": clock.now().isoformat(),
        "next": safe_next(next_url),
    }


def pending_second_factor() -> tuple[User | None, str | None]:
    """The user awaiting their second factor in this session, and where to go next."""
    pending = session.get(SESSION_PENDING_LOGIN)
    if not isinstance(pending, dict):
        return None, None
    started = datetime.fromisoformat(pending["at"])
    if clock.now() - started > timedelta(minutes=PENDING_LOGIN_MINUTES):
        session.pop(SESSION_PENDING_LOGIN, None)
        return None, None
    user = db.session.get(User, int(pending["user_id"]))
    if user is None or not user.is_active_account or user.session_epoch != pending["epoch"]:
        session.pop(SESSION_PENDING_LOGIN, None)
        return None, None
    return user, pending.get("next")


def complete_second_factor(user: User, code: str, ip: str | None) -> LoginOutcome:
    """Second step of sign-in: a TOTP code, or one of the recovery codes (used once)."""
    lock_account(user)
    key = login_key(user.email)
    actor = Actor.anonymous(ip)
    refused = _throttled(key, ip, actor, user, {"email": audit.secret(user.email)})
    if refused is not None:
        return refused
    method = None
    if verify_totp(user, code):
        method = "totp"
    elif use_recovery_code(user, code, Actor.for_user(user, ip)):
        method = "recovery_code"
    if method is None:
        _fail(key, ip, actor, user, user.email, "wrong_second_factor")
        return LoginOutcome("invalid", user=user, message=INVALID_SECOND_FACTOR)
    session.pop(SESSION_PENDING_LOGIN, None)
    sign_in(user, ip, method=method)
    return LoginOutcome("signed_in", user=user)


def sign_in(user: User, ip: str | None, *, method: str) -> None:
    """Open the session of ``user`` (fresh session data, absolute lifetime from now)."""
    session.clear()
    login_user(user)
    now = clock.now()
    session[SESSION_AUTH_AT] = now.isoformat()
    session.permanent = True
    user.last_login_at = now
    db.session.execute(delete(LoginFailure).where(LoginFailure.email_key == login_key(user.email)))
    if user.current_organisation_id is None and user.memberships:
        user.current_organisation_id = user.memberships[0].organisation_id
    audit.record(
        EventTag.Accounts.UserLogin,
        Actor.for_user(user, ip),
        subject=user,
        payload={"method": method},
    )


def sign_out(user: User, ip: str | None) -> None:
    """Close the sessions of ``user``: the session epoch is bumped, so that no copy of a
    session cookie of theirs opens anything any more (the cookie is signed, not stored: a
    copy taken before sign-out would otherwise outlive it). A copy cannot be told from the
    user's other browsers, so those are signed out too, and the page says so."""
    bump_epoch(user)
    audit.record(
        EventTag.Accounts.UserLogout,
        Actor.for_user(user, ip),
        subject=user,
        payload={"all_sessions": True},
    )
    logout_user()
    session.clear()


def reauthenticate(user: User, password: str, code: str | None, ip: str | None) -> LoginOutcome:
    """Confirm the identity of the signed-in ``user`` before a sensitive act: the password,
    and a TOTP (or recovery) code when TOTP is enabled. Failures count towards the sign-in
    rate limit."""
    lock_account(user)
    key = login_key(user.email)
    actor = Actor.for_user(user, ip)
    refused = _throttled(key, ip, actor, user, {"stage": "reauthentication"})
    if refused is not None:
        return refused
    ok = check_password(user, password)
    if ok and user.mfa_enabled:
        ok = verify_totp(user, code or "") or use_recovery_code(user, code or "", actor)
    if not ok:
        _fail(key, ip, actor, user, user.email, "reauthentication")
        message = (
            "Mot de passe ou code de vérification incorrect."
            if user.mfa_enabled
            else "Mot de passe incorrect."
        )
        return LoginOutcome("invalid", user=user, message=message)
    session[SESSION_REAUTH_AT] = clock.now().isoformat()
    audit.record(EventTag.Accounts.UserReauthenticated, actor, subject=user)
    return LoginOutcome("signed_in", user=user)
