"""Signed, single-use links that set a password: password reset and invitation."""

from __future__ import annotations

import hmac

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import delete, func, select

from datapass import clock, vault
from datapass.accounts.addresses import find_user_by_email, normalise_email
from datapass.accounts.errors import AccountError
from datapass.accounts.models import LoginFailure, User
from datapass.accounts.passwords import queue_password_changed_mail, set_password
from datapass.accounts.throttle import login_key, login_window
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.extensions import db
from datapass.notify import outbox
from datapass.notify.models import OutboxMail

RESET_MAILS_PER_WINDOW = 3  # reset mails sent to one address per login window


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
    email = normalise_email(raw_email)
    user = find_user_by_email(email)
    actor = Actor.anonymous(ip)
    sent = False
    if user is not None and user.is_active_account:
        recent = db.session.scalar(
            select(func.count(OutboxMail.id)).where(
                OutboxMail.recipient == user.email,
                OutboxMail.template == "account_password_reset",
                OutboxMail.created_at > clock.now() - login_window(),
            )
        )
        if recent < RESET_MAILS_PER_WINDOW:
            outbox.queue_mail(
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
        EventTag.Accounts.PasswordResetRequested,
        actor,
        subject=user,
        payload={"email": audit.secret(email), "mail_sent": sent},
    )


def reset_password(token: str, new_password: str, ip: str | None, *, purpose: str) -> User:
    """Set a new password through a reset (``reset``) or invitation (``invite``) link. The
    link dies with it, and every session of the user is signed out."""
    user = read_password_link(token, purpose)
    set_password(user, new_password)
    # A person who proves their mailbox gets a clean slate for sign-in.
    db.session.execute(delete(LoginFailure).where(LoginFailure.email_key == login_key(user.email)))
    actor = Actor.for_user(user, ip)
    if purpose == "invite":
        audit.record(EventTag.Accounts.UserInvitationAccepted, actor, subject=user)
    else:
        audit.record(EventTag.Accounts.PasswordReset, actor, subject=user)
        queue_password_changed_mail(user)
    return user
