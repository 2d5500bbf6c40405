"""Mail delivery: the outbox delivered by a scheduled job over SMTP (or into files in
development), with exponential backoff, never losing a mail while the SMTP server is down;
replay of abandoned mails, and the outbox's health for the administrators' page.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formataddr
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.orm import selectinload

from datapass import clock
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.errors import DomainError
from datapass.extensions import db
from datapass.notify.models import (
    DeliveryStatus,
    OutboxMail,
)
from datapass.notify.outbox import CLAIM_SIZE, backoff, claim, unsubscribe_link


def build_message(mail: OutboxMail) -> EmailMessage:
    config = current_app.config
    message = EmailMessage()
    message["From"] = config["MAIL_FROM"]
    message["To"] = formataddr(("", mail.recipient))
    message["Subject"] = mail.subject
    message["Message-ID"] = mail.message_id
    message["Date"] = mail.created_at.strftime("%a, %d %b %Y %H:%M:%S +0000")
    message["Auto-Submitted"] = "auto-generated"
    if mail.category:
        link = unsubscribe_link(mail.recipient, mail.category)
        message["List-Unsubscribe"] = f"<{link}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(mail.body_text)
    message.add_alternative(mail.body_html, subtype="html")
    return message


@dataclass(frozen=True)
class _Outgoing:
    """What a claimed mail needs once the claim is committed (no ORM object outlives it)."""

    id: int
    attempts: int
    recipient: str
    created_at: Any
    message: EmailMessage


class _FileBackend:
    """Development: each mail is an ``.eml`` file under ``instance/mail/``."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def __enter__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc):
        return False

    def send(self, mail: _Outgoing) -> None:
        stamp = mail.created_at.strftime("%Y%m%dT%H%M%S")
        path = self.folder / f"{stamp}-{mail.id:08d}.eml"
        path.write_bytes(bytes(mail.message))


class _SmtpBackend:
    def __init__(self, config):
        self.config = config
        self.smtp: smtplib.SMTP | None = None

    def __enter__(self):
        c = self.config
        self.smtp = smtplib.SMTP(c["SMTP_HOST"], c["SMTP_PORT"], timeout=c["SMTP_TIMEOUT"])
        try:
            if c["SMTP_STARTTLS"]:
                self.smtp.starttls(context=ssl.create_default_context())
            if c["SMTP_USER"]:
                self.smtp.login(c["SMTP_USER"], c["SMTP_PASSWORD"])
        except BaseException:
            self.smtp.close()
            raise
        return self

    def __exit__(self, *exc):
        try:
            if self.smtp is not None:
                self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()
        return False

    def send(self, mail: _Outgoing) -> None:
        self.smtp.send_message(mail.message, to_addrs=[mail.recipient])


def _backend():
    config = current_app.config
    if config["MAIL_BACKEND"] == "smtp":
        return _SmtpBackend(config)
    return _FileBackend(config["MAIL_DIR"])


def _permanent(exc: Exception) -> bool:
    """A refusal for good (SMTP 5xx) of this message: retrying cannot help. Anything else
    (unreachable, timeout, 4xx, a dropped connection) is transient."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(500 <= code < 600 for code in codes)
    code = getattr(exc, "smtp_code", None)
    return isinstance(code, int) and 500 <= code < 600


def deliver_due(limit: int = CLAIM_SIZE) -> dict[str, int]:
    """Claim up to ``limit`` due mails, commit, send them over one SMTP connection and record
    each outcome in its own transaction (commits). An unreachable server or a transient
    error defers a mail with backoff, never abandons it; only a permanent refusal (5xx) of
    the message does. Safe with several workers (rows are claimed under a lease)."""
    counts = {"sent": 0, "failed": 0, "deferred": 0}
    ids = claim(OutboxMail, limit)
    if not ids:
        db.session.commit()
        return counts
    mails = db.session.scalars(
        select(OutboxMail)
        .where(OutboxMail.id.in_(ids))
        .order_by(OutboxMail.next_attempt_at, OutboxMail.id)
        .options(selectinload(OutboxMail.body))
    )
    outgoing = [
        _Outgoing(mail.id, mail.attempts, mail.recipient, mail.created_at, build_message(mail))
        for mail in mails
    ]
    db.session.commit()  # the claim: from here on, no transaction until an outcome
    try:
        backend = _backend().__enter__()
    except (OSError, smtplib.SMTPException) as exc:
        for mail in outgoing:
            _record_mail(mail, error=f"connexion SMTP impossible : {exc}")
            counts["deferred"] += 1
        return counts
    try:
        for mail in outgoing:
            try:
                backend.send(mail)
            except (OSError, smtplib.SMTPException) as exc:
                permanent = _permanent(exc)
                _record_mail(mail, error=str(exc) or exc.__class__.__name__, permanent=permanent)
                counts["failed" if permanent else "deferred"] += 1
                continue
            _record_mail(mail)
            counts["sent"] += 1
    finally:
        backend.__exit__(None, None, None)
    return counts


def _record_mail(mail: _Outgoing, error: str | None = None, permanent: bool = False) -> None:
    """One outcome, in its own transaction (commits); only if the row is still this claim's
    (``sending``)."""
    now = clock.now()
    values: dict[str, Any] = {"attempts": mail.attempts + 1, "lease_until": None}
    if error is None:
        values.update(status=DeliveryStatus.SENT, sent_at=now, last_error=None)
    elif permanent:
        values.update(status=DeliveryStatus.FAILED, last_error=error[:2000])
    else:
        values.update(
            status=DeliveryStatus.PENDING,
            last_error=error[:2000],
            next_attempt_at=now + backoff(mail.attempts + 1),
        )
    db.session.execute(
        update(OutboxMail)
        .where(OutboxMail.id == mail.id, OutboxMail.status == DeliveryStatus.SENDING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


class ReplayRefused(DomainError):
    """Only an abandoned (failed) mail is put back in the queue."""

    status = 409


def replay(mail: OutboxMail, actor: Actor) -> None:
    """Put a failed mail back in the queue (administrators, from the UI); audited.
    Raises :class:`ReplayRefused` for any other mail."""

    if not mail.can_replay:
        raise ReplayRefused("Seul un courriel abandonné peut être renvoyé.")
    mail.status = DeliveryStatus.PENDING
    mail.attempts = 0
    mail.next_attempt_at = clock.now()
    db.session.flush()
    audit.record(
        EventTag.Notify.MailReplayed,
        actor,
        subject=mail,
        payload={"template": mail.template, "recipient": audit.secret(mail.recipient)},
    )


def replay_all(actor: Actor) -> dict[str, int]:
    """Bulk replay (administrators, once the SMTP server is fixed): every abandoned mail back
    in the queue, and every waiting one due now instead of at the end of its backoff;
    audited once. Returns how many of each."""

    now = clock.now()
    failed = db.session.execute(
        update(OutboxMail)
        .where(OutboxMail.status == DeliveryStatus.FAILED)
        .values(status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    waiting = db.session.execute(
        update(OutboxMail)
        .where(OutboxMail.status == DeliveryStatus.PENDING, OutboxMail.next_attempt_at > now)
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.expire_all()
    audit.record(
        EventTag.Notify.MailReplayedAll, actor, payload={"failed": failed, "waiting": waiting}
    )
    return {"failed": failed, "waiting": waiting}


STUCK_AFTER = timedelta(minutes=30)


@dataclass(frozen=True)
class OutboxHealth:
    """How the mail outbox is doing: stuck when a mail has waited longer than
    :data:`STUCK_AFTER` (the server is down or refusing, or nothing delivers)."""

    waiting: int
    oldest: Any
    failed: int
    last_error: str | None

    @property
    def stuck(self) -> bool:
        return self.oldest is not None and self.oldest <= clock.now() - STUCK_AFTER


def outbox_health() -> OutboxHealth:
    waiting_states = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
    waiting, oldest = db.session.execute(
        select(func.count(), func.min(OutboxMail.created_at)).where(
            OutboxMail.status.in_(waiting_states)
        )
    ).one()
    failed = db.session.scalar(
        select(func.count()).where(OutboxMail.status == DeliveryStatus.FAILED)
    )
    last_error = db.session.scalar(
        select(OutboxMail.last_error)
        .where(OutboxMail.status.in_(waiting_states), OutboxMail.last_error.is_not(None))
        .order_by(OutboxMail.next_attempt_at.desc())
        .limit(1)
    )
    return OutboxHealth(waiting, clock.as_utc(oldest), failed, last_error)


def outbox_page(status: str | None, limit: int = 100) -> tuple[list[OutboxMail], dict[str, int]]:
    """The latest mails (optionally of one status) and the count per status."""

    query = select(OutboxMail).order_by(OutboxMail.id.desc()).limit(limit)
    if status:
        query = query.where(OutboxMail.status == status)
    counts = dict(
        db.session.execute(
            select(OutboxMail.status, func.count()).group_by(OutboxMail.status)
        ).all()
    )
    return list(db.session.scalars(query)), counts
