"""The second factor: who must have one, TOTP enrolment and codes, recovery codes."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from flask import current_app, session
from sqlalchemy import delete, func, select

from datapass import clock, vault
from datapass.accounts.errors import AccountError
from datapass.accounts.models import RecoveryCode, User
from datapass.accounts.sessions import SESSION_TOTP_ENROLMENT
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.extensions import db

RECOVERY_CODE_COUNT = 10
TOTP_ISSUER = "Datapass"


def mfa_required(user: User) -> bool:
    """TOTP is mandatory for staff (instructors, security officers, administrators)."""
    if not user.is_staff:
        return False
    if user.is_demo and current_app.config["ENV"] != "production":
        return not current_app.config["DEMO_SKIP_MFA"]
    return True


def mfa_enrolment_pending(user: User) -> bool:
    return mfa_required(user) and not user.mfa_enabled


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
    audit.record(EventTag.Accounts.MfaEnabled, actor, subject=user)
    return codes


def disable_totp(user: User, actor: Actor) -> None:
    """Remove TOTP and the recovery codes (staff must enrol again at once)."""
    if not user.mfa_enabled:
        raise AccountError("La double authentification n'est pas activée sur ce compte.")
    user.totp_secret_sealed = None
    user.mfa_enabled_at = None
    user.last_totp_step = None
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    audit.record(EventTag.Accounts.MfaDisabled, actor, subject=user)


def regenerate_recovery_codes(user: User, actor: Actor) -> list[str]:
    """Replace every recovery code with ten new ones (returned, to be shown once)."""
    if not user.mfa_enabled:
        raise AccountError("Activez d'abord la double authentification.")
    codes = _new_recovery_codes(user)
    audit.record(EventTag.Accounts.MfaRecoveryRegenerated, actor, subject=user)
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
        EventTag.Accounts.MfaRecoveryUsed,
        actor,
        subject=user,
        payload={"remaining": remaining_recovery_codes(user) - 1},
    )
    return True
