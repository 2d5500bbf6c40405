"""Browser sessions: what the session keeps, when it is still valid, where to go next."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, session

from datapass import clock
from datapass.accounts.models import User
from datapass.extensions import db

SESSION_AUTH_AT = "auth_at"
SESSION_REAUTH_AT = "reauth_at"
SESSION_PENDING_LOGIN = "pending_login"  # password checked, second factor awaited
SESSION_TOTP_ENROLMENT = "totp_enrolment"  # sealed secret shown on the enrolment page


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


def recently_authenticated(sess: Mapping[str, Any], window: timedelta) -> bool:
    stamp = sess.get(SESSION_REAUTH_AT) or sess.get(SESSION_AUTH_AT)
    if stamp is None:
        return False
    return clock.now() - datetime.fromisoformat(stamp) <= window


def safe_next(target: str | None, host: str | None = None) -> str | None:
    """``target`` if it is a path on this site, else None (no open redirect: other hosts,
    scheme-relative ``//host`` and backslash tricks are refused). An absolute URL on ``host``
    itself (a Referer) is reduced to its path."""
    if not target:
        return None
    target = target.strip()
    if host and "\\" not in target:
        parts = urlsplit(target)
        if parts.scheme in {"http", "https"} and parts.netloc == host:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(char) < 32 for char in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def bump_epoch(user: User) -> None:
    user.session_epoch = (user.session_epoch or 0) + 1
