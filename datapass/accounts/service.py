"""Account rules: sessions, passwords, sign-in and its rate limit, password reset and
invitation links, TOTP and recovery codes, organisations, roles, administration.

Services flush, never commit; each state change records exactly one audit event. Functions
that open or close a browser session (sign-in, sign-out, re-authentication) also write the
session keys, because those keys are part of the rule (``load_session_user`` reads them).
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.exceptions import InvalidTag
from email_validator import EmailNotValidError, validate_email
from flask import current_app, session
from flask_login import login_user, logout_user
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import delete, func, or_, select
from stdnum.exceptions import ValidationError as StdnumValidationError
from stdnum.fr import siret as siret_module

from datapass import clock, vault
from datapass.accounts.models import (
    ROLE_LABELS,
    LoginFailure,
    Membership,
    Organisation,
    RecoveryCode,
    Role,
    RoleGrant,
    User,
)
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.extensions import db

SESSION_AUTH_AT = "auth_at"
SESSION_REAUTH_AT = "reauth_at"
SESSION_PENDING_LOGIN = "pending_login"  # password checked, second factor awaited
SESSION_TOTP_ENROLMENT = "totp_enrolment"  # sealed secret shown on the enrolment page

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256
RECOVERY_CODE_COUNT = 10
PENDING_LOGIN_MINUTES = 5
TOTP_ISSUER = "Datapass"
RESET_MAILS_PER_WINDOW = 3  # reset mails sent to one address per login window

INVALID_CREDENTIALS = "Adresse électronique ou mot de passe incorrect."
INVALID_SECOND_FACTOR = "Code de vérification incorrect ou déjà utilisé."
INVALID_EMAIL = "Saisissez une adresse électronique valide, par exemple prenom.nom@exemple.fr."
INVALID_SIRET = "Le SIRET doit comporter 14 chiffres et être valide."


class AccountError(ValueError):
    """A rule refused the act; ``message`` is French and meant for the person; ``field``
    names the form field it belongs to, if any. Nothing was changed."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


# --- sessions ---------------------------------------------------------------------------


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


def _bump_epoch(user: User) -> None:
    user.session_epoch = (user.session_epoch or 0) + 1


# --- e-mail addresses -------------------------------------------------------------------


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


# --- passwords --------------------------------------------------------------------------


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


def _spend_password_time(password: str) -> None:
    """Verify against a throw-away hash, so an unknown address takes as long as a known one."""
    config = current_app.config
    dummy = _dummy_hash(int(config["ARGON2_TIME_COST"]), int(config["ARGON2_MEMORY_KIB"]))
    with contextlib.suppress(VerificationError):
        _hasher().verify(dummy, password or "-")


def _set_password(user: User, new_password: str) -> None:
    problem = password_problem(new_password)
    if problem:
        raise AccountError(problem, "password")
    user.password_hash = hash_password(new_password)
    user.password_changed_at = clock.now()
    _bump_epoch(user)


def change_password(user: User, current: str, new: str, actor: Actor) -> None:
    """Change the password of the signed-in ``user`` (the current password is required).
    Every other session of the user is signed out; the current one is kept."""
    if not check_password(user, current):
        raise AccountError("Le mot de passe actuel est incorrect.", "current_password")
    if hmac.compare_digest(current.encode(), new.encode()):
        raise AccountError("Le nouveau mot de passe doit être différent de l'actuel.", "password")
    _set_password(user, new)
    audit.record("accounts:password:changed", actor, subject=user)
    _queue_password_changed_mail(user)
    # The bumped epoch signed out every session, this one included: reopen this one.
    login_user(user)


def _queue_password_changed_mail(user: User) -> None:
    from datapass.notify import service as notify

    notify.queue_mail(
        user.email, "account_password_changed", {"user": user, "changed_at": clock.now()}
    )


# --- sign-in rate limit -----------------------------------------------------------------


def login_key(email: str) -> str:
    """The rate-limit key of an address: an HMAC, so the table never holds addresses."""
    return vault.keyed_digest(email.lower(), "login")


def _window() -> timedelta:
    return timedelta(minutes=int(current_app.config["LOGIN_WINDOW_MINUTES"]))


def _retry_at(moments: list[datetime]) -> datetime | None:
    """When the count of failures in the sliding window falls below the maximum."""
    limit = int(current_app.config["LOGIN_MAX_FAILURES"])
    if len(moments) < limit:
        return None
    moments = sorted(clock.as_utc(m) for m in moments)
    return moments[len(moments) - limit] + _window()


def throttled_until(email_key: str, ip: str | None) -> datetime | None:
    """If sign-in is blocked for this account or this address, until when."""
    since = clock.now() - _window()
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


def _record_failure(email_key: str, ip: str | None) -> None:
    # Old rows of this key are useless once out of the window.
    db.session.execute(
        delete(LoginFailure).where(
            LoginFailure.email_key == email_key, LoginFailure.at < clock.now() - _window() * 4
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


# --- sign-in ----------------------------------------------------------------------------


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
        _spend_password_time(password)
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


def _lock_account(user: User) -> None:
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


def _throttled(
    key: str, ip: str | None, actor: Actor, subject: User | None, payload: dict[str, Any]
) -> LoginOutcome | None:
    """The refusal of a sign-in step while this account or address is blocked (recorded
    with ``payload``), or None."""
    until = throttled_until(key, ip)
    if until is None:
        return None
    audit.record(
        "accounts:user:login_throttled",
        actor,
        subject=subject,
        payload={**payload, "retry_at": until.isoformat()},
    )
    return LoginOutcome("throttled", message=throttle_message(until))


def _fail(
    key: str, ip: str | None, actor: Actor, user: User | None, email: str, reason: str
) -> None:
    """Count a failed sign-in step towards the rate limit and record it."""
    _record_failure(key, ip)
    audit.record(
        "accounts:user:login_failed",
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
    _lock_account(user)
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
        "accounts:user:login", Actor.for_user(user, ip), subject=user, payload={"method": method}
    )


def sign_out(user: User, ip: str | None) -> None:
    """Close the sessions of ``user``: the session epoch is bumped, so that no copy of a
    session cookie of theirs opens anything any more (the cookie is signed, not stored: a
    copy taken before sign-out would otherwise outlive it). A copy cannot be told from the
    user's other browsers, so those are signed out too, and the page says so."""
    _bump_epoch(user)
    audit.record(
        "accounts:user:logout",
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
    _lock_account(user)
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
    audit.record("accounts:user:reauthenticated", actor, subject=user)
    return LoginOutcome("signed_in", user=user)


# --- signed links: password reset and invitation ------------------------------------------


class _ClockSigner(TimestampSigner):
    """Timestamps from :mod:`datapass.clock`, so frozen-clock tests can expire links."""

    def get_timestamp(self) -> int:
        return int(clock.now().timestamp())


class ClockedSerializer(URLSafeTimedSerializer):
    default_signer = _ClockSigner


LINK_PURPOSES = {"reset": "accounts-password-reset", "invite": "accounts-invitation"}


def _serializer(purpose: str) -> ClockedSerializer:
    return ClockedSerializer(current_app.config["SECRET_KEY"], salt=LINK_PURPOSES[purpose])


def _fingerprint(user: User) -> str:
    # Changes as soon as the password is set or the sessions are reset: the link is then dead.
    state = f"{user.id}:{user.password_hash or '-'}:{user.session_epoch}"
    return vault.keyed_digest(state, "password-link")[:24]


def _link_max_age(purpose: str) -> int:
    config = current_app.config
    if purpose == "invite":
        return int(config["INVITE_LINK_HOURS"]) * 3600
    return int(config["RESET_LINK_MINUTES"]) * 60


def make_password_link(user: User, purpose: str) -> str:
    """A signed, single-use link to set the password of ``user`` (``reset`` or ``invite``)."""
    token = _serializer(purpose).dumps({"u": user.id, "f": _fingerprint(user)})
    path = "/mot-de-passe/reinitialiser" if purpose == "reset" else "/invitation"
    return f"{current_app.config['BASE_URL'].rstrip('/')}{path}/{token}"


def read_password_link(token: str, purpose: str) -> User:
    """The user a link was made for; :class:`AccountError` if it is expired, already used
    or not genuine."""
    serializer = _serializer(purpose)
    try:
        data = serializer.loads(token, max_age=_link_max_age(purpose))
    except SignatureExpired as exc:
        if purpose == "invite":
            validity = f"{current_app.config['INVITE_LINK_HOURS']} heures"
            message = (
                f"Ce lien d'invitation a expiré (il était valable {validity}). "
                "Demandez à l'administrateur de vous inviter de nouveau."
            )
        else:
            validity = f"{current_app.config['RESET_LINK_MINUTES']} minutes"
            message = (
                f"Ce lien a expiré (il était valable {validity}). "
                "Demandez un nouveau lien de réinitialisation."
            )
        raise AccountError(message) from exc
    except BadSignature as exc:
        raise AccountError(
            "Ce lien n'est pas valide : vérifiez qu'il a été copié en entier, "
            "ou demandez-en un nouveau."
        ) from exc
    user = db.session.get(User, data.get("u")) if isinstance(data, dict) else None
    if (
        user is None
        or not user.is_active_account
        or not hmac.compare_digest(str(data.get("f")), _fingerprint(user))
    ):
        raise AccountError(
            "Ce lien a déjà été utilisé ou n'est plus valable. "
            "Demandez un nouveau lien si nécessaire."
        )
    return user


def request_password_reset(raw_email: str, ip: str | None) -> None:
    """Send a reset link if the address belongs to an active account. The caller always
    answers the same, so the form tells nobody whether an address has an account."""
    from datapass.notify import service as notify
    from datapass.notify.models import OutboxMail

    email = normalise_email(raw_email)
    user = find_user_by_email(email)
    actor = Actor.anonymous(ip)
    sent = False
    if user is not None and user.is_active_account:
        recent = db.session.scalar(
            select(func.count(OutboxMail.id)).where(
                OutboxMail.recipient == user.email,
                OutboxMail.template == "account_password_reset",
                OutboxMail.created_at > clock.now() - _window(),
            )
        )
        if recent < RESET_MAILS_PER_WINDOW:
            notify.queue_mail(
                user.email,
                "account_password_reset",
                {
                    "user": user,
                    "link": make_password_link(user, "reset"),
                    "minutes": current_app.config["RESET_LINK_MINUTES"],
                },
            )
            sent = True
    audit.record(
        "accounts:password:reset_requested",
        actor,
        subject=user,
        payload={"email": audit.secret(email), "mail_sent": sent},
    )


def reset_password(token: str, new_password: str, ip: str | None, *, purpose: str) -> User:
    """Set a new password through a reset (``reset``) or invitation (``invite``) link. The
    link dies with it, and every session of the user is signed out."""
    user = read_password_link(token, purpose)
    _set_password(user, new_password)
    # A person who proves their mailbox gets a clean slate for sign-in.
    db.session.execute(delete(LoginFailure).where(LoginFailure.email_key == login_key(user.email)))
    actor = Actor.for_user(user, ip)
    if purpose == "invite":
        audit.record("accounts:user:invitation_accepted", actor, subject=user)
    else:
        audit.record("accounts:password:reset", actor, subject=user)
        _queue_password_changed_mail(user)
    return user


# --- TOTP and recovery codes ----------------------------------------------------------


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret)


def _current_step() -> int:
    return int(clock.now().timestamp()) // 30


def _matching_step(secret: str, code: str, after: int | None) -> int | None:
    code = "".join((code or "").split())
    if len(code) != 6 or not code.isdigit():
        return None
    totp = _totp(secret)
    now_step = _current_step()
    for step in (now_step, now_step - 1, now_step + 1):  # ±30 s of clock drift
        if after is not None and step <= after:
            continue  # a code already used (or older) is refused: no replay
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def verify_totp(user: User, code: str) -> bool:
    """Whether ``code`` is a current TOTP code of ``user`` not used before; records its
    time step so it cannot be replayed."""
    if not user.mfa_enabled or not user.totp_secret_sealed:
        return False
    secret = vault.unseal(user.totp_secret_sealed, "totp").decode()
    step = _matching_step(secret, code, user.last_totp_step)
    if step is None:
        return False
    user.last_totp_step = step
    db.session.flush()
    return True


@dataclass
class Enrolment:
    """A TOTP enrolment in progress: the secret, its provisioning URI and QR code."""

    secret: str
    uri: str
    qr_svg: str

    @property
    def grouped_secret(self) -> str:
        return " ".join(self.secret[i : i + 4] for i in range(0, len(self.secret), 4))


def totp_enrolment(user: User) -> Enrolment:
    """The secret being enrolled in this session (a new one on first visit), kept sealed in
    the session so that reloading the page shows the same QR code. Nothing is stored on the
    account until a code confirms it."""
    sealed = session.get(SESSION_TOTP_ENROLMENT)
    secret = None
    if sealed:
        try:
            secret = vault.unseal(sealed, f"totp-enrolment:{user.id}").decode()
        except (ValueError, InvalidTag):  # a stale or foreign value: start again
            secret = None
    if secret is None:
        secret = pyotp.random_base32()
        session[SESSION_TOTP_ENROLMENT] = vault.seal(secret.encode(), f"totp-enrolment:{user.id}")
    uri = _totp(secret).provisioning_uri(name=user.email, issuer_name=TOTP_ISSUER)
    return Enrolment(secret=secret, uri=uri, qr_svg=_qr_svg(uri))


def _qr_svg(data: str) -> str:
    # Inline SVG with no style attribute or script (the CSP allows neither).
    qr = segno.make(data, error="m")
    return qr.svg_inline(
        scale=4,
        border=2,
        dark="#000",
        light="#fff",
        omitsize=True,  # a viewBox, so that the stylesheet sizes it
        title="QR code à scanner avec votre application d'authentification",
    )


def enable_totp(user: User, code: str, actor: Actor) -> list[str]:
    """Confirm the enrolment with a code from the app; returns the ten recovery codes, to
    be shown once."""
    if user.mfa_enabled:
        raise AccountError("La double authentification est déjà activée sur ce compte.")
    enrolment = totp_enrolment(user)
    step = _matching_step(enrolment.secret, code, None)
    if step is None:
        raise AccountError(
            "Ce code ne correspond pas. Vérifiez l'heure de votre téléphone et saisissez "
            "le code à 6 chiffres affiché par l'application.",
            "code",
        )
    user.totp_secret_sealed = vault.seal(enrolment.secret.encode(), "totp")
    user.mfa_enabled_at = clock.now()
    user.last_totp_step = step
    codes = _new_recovery_codes(user)
    session.pop(SESSION_TOTP_ENROLMENT, None)
    audit.record("accounts:mfa:enabled", actor, subject=user)
    return codes


def disable_totp(user: User, actor: Actor) -> None:
    """Remove TOTP and the recovery codes (staff must enrol again at once)."""
    if not user.mfa_enabled:
        raise AccountError("La double authentification n'est pas activée sur ce compte.")
    user.totp_secret_sealed = None
    user.mfa_enabled_at = None
    user.last_totp_step = None
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    audit.record("accounts:mfa:disabled", actor, subject=user)


def regenerate_recovery_codes(user: User, actor: Actor) -> list[str]:
    """Replace every recovery code with ten new ones (returned, to be shown once)."""
    if not user.mfa_enabled:
        raise AccountError("Activez d'abord la double authentification.")
    codes = _new_recovery_codes(user)
    audit.record("accounts:mfa:recovery_regenerated", actor, subject=user)
    return codes


_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i


def _normalise_recovery(code: str) -> str:
    return "".join(ch for ch in (code or "").lower() if ch.isalnum())


def _new_recovery_codes(user: User) -> list[str]:
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
        db.session.add(RecoveryCode(user_id=user.id, code_hash=vault.sha256_hex(raw)))
    db.session.flush()
    return codes


def remaining_recovery_codes(user: User) -> int:
    return db.session.scalar(
        select(func.count(RecoveryCode.id)).where(
            RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
        )
    )


def use_recovery_code(user: User, code: str, actor: Actor) -> bool:
    """Spend one recovery code of ``user``; False if it is unknown or already used."""
    normalised = _normalise_recovery(code)
    if len(normalised) != 10:
        return False
    digest = vault.sha256_hex(normalised)
    row = db.session.scalar(
        select(RecoveryCode).where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == digest,
            RecoveryCode.used_at.is_(None),
        )
    )
    if row is None:
        return False
    row.used_at = clock.now()
    audit.record(
        "accounts:mfa:recovery_used",
        actor,
        subject=user,
        payload={"remaining": remaining_recovery_codes(user) - 1},
    )
    return True


# --- organisations ----------------------------------------------------------------------


def normalise_siret(raw: str) -> str:
    """The 14 digits of a valid SIRET (spaces allowed in input); :class:`AccountError`."""
    try:
        return siret_module.validate(raw or "")
    except StdnumValidationError as exc:
        raise AccountError(INVALID_SIRET, "siret") from exc


def create_organisation(siret: str, name: str, address: str, actor: Actor) -> Organisation:
    """Register an organisation (SIRET unique)."""
    siret = normalise_siret(siret)
    name = (name or "").strip()
    if not name:
        raise AccountError("Indiquez le nom de l'organisation.", "name")
    if db.session.scalar(select(Organisation.id).where(Organisation.siret == siret)):
        raise AccountError("Une organisation porte déjà ce SIRET.", "siret")
    organisation = Organisation(
        siret=siret, name=name, address=(address or "").strip(), created_at=clock.now()
    )
    db.session.add(organisation)
    db.session.flush()
    audit.record(
        "accounts:organisation:created",
        actor,
        subject=organisation,
        organisation_id=organisation.id,
        payload={"siret": siret, "name": name},
    )
    return organisation


def add_membership(
    organisation: Organisation, user: User, verified: bool, actor: Actor
) -> Membership:
    """Make ``user`` a member of ``organisation`` (verified members see all its requests)."""
    exists = db.session.scalar(
        select(Membership).where(
            Membership.user_id == user.id, Membership.organisation_id == organisation.id
        )
    )
    if exists is not None:
        raise AccountError(f"{user.email} est déjà membre de {organisation.name}.", "email")
    membership = Membership(
        user=user, organisation=organisation, verified=verified, created_at=clock.now()
    )
    db.session.add(membership)
    if user.current_organisation_id is None:
        user.current_organisation_id = organisation.id
    db.session.flush()
    audit.record(
        "accounts:membership:added",
        actor,
        subject=membership,
        organisation_id=organisation.id,
        payload={"user_id": user.id, "verified": verified},
    )
    return membership


def add_member(organisation: Organisation, email: str, verified: bool, actor: Actor) -> Membership:
    """Make the account of ``email`` a member of ``organisation`` (the person must have an
    account: invite them first)."""
    user = find_user_by_email(email)
    if user is None:
        raise AccountError(
            "Aucun compte n'existe pour cette adresse : invitez d'abord la personne.", "email"
        )
    return add_membership(organisation, user, verified, actor)


def current_organisation(user: User) -> Organisation | None:
    """The organisation ``user`` currently acts for: the one they chose if they still belong
    to it, else their first one; None for someone with no membership."""
    memberships = sorted(user.memberships, key=lambda m: m.id)
    for membership in memberships:
        if membership.organisation_id == user.current_organisation_id:
            return membership.organisation
    return memberships[0].organisation if memberships else None


def switch_organisation(user: User, organisation_id: int, actor: Actor) -> Organisation:
    """Make one of ``user``'s own organisations the current one."""
    membership = user.membership(organisation_id)
    if membership is None:
        raise AccountError("Choisissez l'une de vos organisations.", "organisation_id")
    previous = user.current_organisation_id
    if previous == organisation_id:
        return membership.organisation  # nothing changes, nothing to record
    user.current_organisation_id = organisation_id
    db.session.flush()
    audit.record(
        "accounts:organisation:switched",
        actor,
        subject=user,
        organisation_id=organisation_id,
        payload={"from": previous, "to": organisation_id},
    )
    return membership.organisation


def _search_page(stmt, search: str, columns: list, page: int, per_page: int):
    """One page of ``stmt``, narrowed to the rows where one of ``columns`` (lower-cased
    already) contains ``search``."""
    search = (search or "").strip()
    if search:
        pattern = f"%{search.lower()}%"
        stmt = stmt.where(or_(*(column.like(pattern) for column in columns)))
    return db.paginate(stmt, page=page, per_page=per_page, error_out=False)


def organisations_page(search: str = "", page: int = 1, per_page: int = 25):
    """Organisations matching ``search`` (name or SIRET), by name, one page of them."""
    stmt = select(Organisation).order_by(Organisation.name)
    columns = [func.lower(Organisation.name), Organisation.siret]
    return _search_page(stmt, search, columns, page, per_page)


# --- users and roles (administration) -----------------------------------------------------


def users_page(search: str = "", page: int = 1, per_page: int = 25):
    """Users matching ``search`` (address or name), by address, one page of them."""
    stmt = select(User).order_by(User.email)
    columns = [func.lower(User.email), func.lower(User.full_name)]
    return _search_page(stmt, search, columns, page, per_page)


def _new_user(email: str, full_name: str, *, password: str | None, is_demo: bool) -> User:
    if find_user_by_email(email) is not None:
        raise AccountError("Un compte existe déjà pour cette adresse électronique.", "email")
    if password is not None:
        problem = password_problem(password)
        if problem:
            raise AccountError(problem, "password")
    user = User(
        email=email,
        full_name=(full_name or "").strip(),
        password_hash=hash_password(password) if password else None,
        created_at=clock.now(),
        password_changed_at=clock.now() if password else None,
        is_active_account=True,
        session_epoch=0,
        is_demo=is_demo,
    )
    db.session.add(user)
    db.session.flush()
    return user


def create_user(
    raw_email: str, full_name: str, password: str, actor: Actor, *, is_demo: bool = False
) -> User:
    """Create an account with a known password (demo data, operations)."""
    user = _new_user(normalise_email(raw_email), full_name, password=password, is_demo=is_demo)
    audit.record("accounts:user:created", actor, subject=user, payload={"is_demo": is_demo})
    return user


def _add_grant(user: User, role: Role, api_id: int | None, actor: Actor) -> RoleGrant:
    grant = RoleGrant(
        user=user,
        role=str(role),
        api_id=api_id,
        granted_at=clock.now(),
        granted_by_id=actor.user.id if actor.user is not None else None,
    )
    db.session.add(grant)
    return grant


def _check_role(role: str, api_id: int | None) -> tuple[Role, int | None]:
    try:
        role_ = Role(role)
    except ValueError as exc:
        raise AccountError("Ce rôle n'existe pas.", "role") from exc
    if role_ == Role.INSTRUCTOR:
        if api_id is None:
            raise AccountError("Un instructeur instruit une API : choisissez-la.", "api_id")
        from datapass.catalogue.models import Api

        if db.session.get(Api, api_id) is None:
            raise AccountError("Cette API n'existe pas dans le catalogue.", "api_id")
    else:
        api_id = None
    return role_, api_id


def invite_user(
    raw_email: str,
    full_name: str,
    actor: Actor,
    *,
    organisation: Organisation | None = None,
    verified: bool = True,
    roles: list[tuple[str, int | None]] | None = None,
) -> User:
    """Create an account without password and e-mail a link to set it (valid
    INVITE_LINK_HOURS, single use). Optional membership and roles come with it."""

    email = normalise_email(raw_email)
    checked = [_check_role(role, api_id) for role, api_id in roles or []]
    user = _new_user(email, full_name, password=None, is_demo=False)
    if organisation is not None:
        db.session.add(
            Membership(
                user=user, organisation=organisation, verified=verified, created_at=clock.now()
            )
        )
        user.current_organisation_id = organisation.id
    seen = set()
    for role, api_id in checked:
        if (role, api_id) in seen:
            continue
        seen.add((role, api_id))
        _add_grant(user, role, api_id, actor)
    db.session.flush()
    _mail_invitation(user, actor, organisation, [ROLE_LABELS[role] for role, _ in sorted(seen)])
    audit.record(
        "accounts:user:invited",
        actor,
        subject=user,
        organisation_id=organisation.id if organisation else None,
        payload={
            "email": audit.secret(email),
            "roles": sorted(f"{role}:{api_id}" if api_id else str(role) for role, api_id in seen),
            "organisation_id": organisation.id if organisation else None,
        },
    )
    return user


def _mail_invitation(user: User, actor: Actor, organisation, role_labels: list[str]) -> None:
    from datapass.notify import service as notify

    notify.queue_mail(
        user.email,
        "account_invitation",
        {
            "user": user,
            "link": make_password_link(user, "invite"),
            "hours": current_app.config["INVITE_LINK_HOURS"],
            "organisation": organisation,
            "inviter": actor.user,
            "role_labels": role_labels,
        },
    )


def resend_invitation(user: User, actor: Actor) -> None:
    """Send a new invitation link to someone who has not set their password yet."""

    if user.password_hash is not None:
        raise AccountError("Cette personne a déjà choisi son mot de passe.")
    if not user.is_active_account:
        raise AccountError("Ce compte est désactivé.")
    roles = [role_label(r) for r in sorted(user.roles)]
    _mail_invitation(user, actor, current_organisation(user), roles)
    audit.record("accounts:user:invitation_resent", actor, subject=user)


def grant_role(user: User, role: str, api_id: int | None, actor: Actor) -> RoleGrant:
    """Give ``user`` a staff role (an instructor's is scoped to one API)."""
    role_, api_id = _check_role(role, api_id)
    for grant in user.role_grants:
        if grant.role == role_ and grant.api_id == api_id:
            raise AccountError("Cette personne a déjà ce rôle.", "role")
    grant = _add_grant(user, role_, api_id, actor)
    db.session.flush()
    audit.record(
        "accounts:role:granted",
        actor,
        subject=user,
        api_id=api_id,
        payload={"role": str(role_), "api_id": api_id},
    )
    return grant


def withdraw_role(grant: RoleGrant, actor: Actor) -> None:
    """Take a staff role back. An administrator cannot withdraw their own admin role."""
    user = grant.user
    if grant.role == Role.ADMIN and actor.user is not None and actor.user.id == user.id:
        raise AccountError(
            "Vous ne pouvez pas retirer votre propre rôle d'administrateur : "
            "demandez-le à un autre administrateur."
        )
    role, api_id = grant.role, grant.api_id
    user.role_grants.remove(grant)
    db.session.delete(grant)
    db.session.flush()
    audit.record(
        "accounts:role:withdrawn",
        actor,
        subject=user,
        api_id=api_id,
        payload={"role": role, "api_id": api_id},
    )


def deactivate_user(user: User, actor: Actor) -> None:
    """Close an account: it cannot sign in, and every live session ends at its next request."""
    if actor.user is not None and actor.user.id == user.id:
        raise AccountError("Vous ne pouvez pas désactiver votre propre compte.")
    if not user.is_active_account:
        raise AccountError("Ce compte est déjà désactivé.")
    user.is_active_account = False
    user.deactivated_at = clock.now()
    _bump_epoch(user)
    db.session.flush()
    audit.record("accounts:user:deactivated", actor, subject=user)


def reactivate_user(user: User, actor: Actor) -> None:
    """Reopen a closed account (its old sessions stay dead)."""
    if user.is_active_account:
        raise AccountError("Ce compte est déjà actif.")
    user.is_active_account = True
    user.deactivated_at = None
    _bump_epoch(user)
    db.session.flush()
    audit.record("accounts:user:reactivated", actor, subject=user)


def role_label(role: str) -> str:
    try:
        return ROLE_LABELS[Role(role)]
    except ValueError:
        return role


def instructor_emails(api_id: int) -> list[str]:
    """The e-mail addresses of the active instructors of one API."""
    return list(
        db.session.scalars(
            select(User.email)
            .join(RoleGrant, RoleGrant.user_id == User.id)
            .where(
                RoleGrant.role == Role.INSTRUCTOR,
                RoleGrant.api_id == api_id,
                User.is_active_account.is_(True),
            )
            .distinct()
        )
    )
