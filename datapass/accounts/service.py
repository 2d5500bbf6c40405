"""Account rules: sessions, passwords, TOTP, organisations, roles."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app, session

from datapass import clock
from datapass.accounts.models import User
from datapass.extensions import db

SESSION_AUTH_AT = "auth_at"
SESSION_REAUTH_AT = "reauth_at"


def load_session_user(identity: str) -> User | None:
    """Flask-Login's loader, run on every request: the session is valid only while the
    user is active, its epoch is current and it is younger than the absolute lifetime."""
    user_id, _, epoch = identity.partition(":")
    if not user_id.isdigit() or not epoch.isdigit():
        return None
    user = db.session.get(User, int(user_id))
    if user is None or not user.is_active_account or user.session_epoch != int(epoch):
        return None
    started = session.get(SESSION_AUTH_AT)
    if started is None:
        return None
    lifetime = timedelta(hours=current_app.config["SESSION_HOURS"])
    if clock.now() - datetime.fromisoformat(started) > lifetime:
        return None
    return user


def mfa_required(user: User) -> bool:
    """TOTP is mandatory for staff (instructors, security officers, administrators)."""
    if not user.is_staff:
        return False
    if user.is_demo and current_app.config["ENV"] != "production":
        return not current_app.config["DEMO_SKIP_MFA"]
    return True


def mfa_enrolment_pending(user: User) -> bool:
    return mfa_required(user) and not user.mfa_enabled


def recently_authenticated(sess, window: timedelta) -> bool:
    stamp = sess.get(SESSION_REAUTH_AT) or sess.get(SESSION_AUTH_AT)
    if stamp is None:
        return False
    return clock.now() - datetime.fromisoformat(stamp) <= window
