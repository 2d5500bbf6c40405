"""E-mail: queued in the outbox by services, delivered by a scheduled job.

A mail is two templates, ``templates/mail/<name>.txt`` and ``templates/mail/<name>.html``;
the text one sets ``{% set subject = "…" %}``. Delivery retries with exponential backoff and
never loses a mail while the SMTP server is down.
"""

from __future__ import annotations

import smtplib
import ssl
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formataddr, make_msgid, parseaddr
from pathlib import Path
from typing import Any

from flask import current_app, render_template
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select

from datapass import clock
from datapass.extensions import db
from datapass.notify.models import DeliveryStatus, OutboxMail, Unsubscription

MAX_BACKOFF = timedelta(hours=6)


def queue_mail(
    to: str,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    category: str | None = None,
) -> OutboxMail | None:
    """Render a mail now (so it reflects the state that caused it) and put it in the outbox.

    An optional mail (``category`` set) is skipped when the recipient unsubscribed from it.
    """
    if category is not None and is_unsubscribed(to, category):
        return None
    context = dict(context or {})
    context.setdefault("base_url", current_app.config["BASE_URL"].rstrip("/"))
    text_template = current_app.jinja_env.get_template(f"mail/{template}.txt")
    module = text_template.make_module(context)
    subject = getattr(module, "subject", None)
    if not subject:
        raise ValueError(f"mail/{template}.txt sets no subject")
    body_text = str(module)
    body_html = render_template(f"mail/{template}.html", subject=subject, **context)
    domain = parseaddr(current_app.config["MAIL_FROM"])[1].partition("@")[2] or "datapass"
    now = clock.now()
    mail = OutboxMail(
        created_at=now,
        template=template,
        recipient=to,
        subject=" ".join(subject.split()),
        body_text=body_text,
        body_html=body_html,
        category=category,
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        message_id=make_msgid(domain=domain),
    )
    db.session.add(mail)
    db.session.flush()
    return mail


def _unsubscribe_serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="notify-unsubscribe")


def unsubscribe_link(recipient: str, category: str) -> str:
    """A one-click unsubscribe link (RFC 8058) for one optional category of mail."""
    token = _unsubscribe_serializer().dumps({"to": recipient, "c": category})
    return f"{current_app.config['BASE_URL'].rstrip('/')}/notifications/desabonnement/{token}"


def read_unsubscribe_token(token: str) -> tuple[str, str] | None:
    try:
        data = _unsubscribe_serializer().loads(token)
    except BadSignature:
        return None
    return data["to"], data["c"]


def unsubscribe(recipient: str, category: str) -> bool:
    """Record that ``recipient`` wants no more mails of ``category``; True if it is new."""
    exists = db.session.scalar(
        select(Unsubscription).where(
            Unsubscription.recipient == recipient, Unsubscription.category == category
        )
    )
    if exists is not None:
        return False
    db.session.add(Unsubscription(recipient=recipient, category=category, at=clock.now()))
    db.session.flush()
    return True


def is_unsubscribed(recipient: str, category: str) -> bool:
    return (
        db.session.scalar(
            select(Unsubscription.id).where(
                Unsubscription.recipient == recipient, Unsubscription.category == category
            )
        )
        is not None
    )


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


class _FileBackend:
    """Development: each mail is an ``.eml`` file under ``instance/mail/``."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def __enter__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc):
        return False

    def send(self, mail: OutboxMail, message: EmailMessage) -> None:
        stamp = mail.created_at.strftime("%Y%m%dT%H%M%S")
        path = self.folder / f"{stamp}-{mail.id:08d}.eml"
        path.write_bytes(bytes(message))


class _SmtpBackend:
    def __init__(self, config):
        self.config = config
        self.smtp: smtplib.SMTP | None = None

    def __enter__(self):
        c = self.config
        self.smtp = smtplib.SMTP(c["SMTP_HOST"], c["SMTP_PORT"], timeout=c["SMTP_TIMEOUT"])
        if c["SMTP_STARTTLS"]:
            self.smtp.starttls(context=ssl.create_default_context())
        if c["SMTP_USER"]:
            self.smtp.login(c["SMTP_USER"], c["SMTP_PASSWORD"])
        return self

    def __exit__(self, *exc):
        try:
            if self.smtp is not None:
                self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
        return False

    def send(self, mail: OutboxMail, message: EmailMessage) -> None:
        self.smtp.send_message(message, to_addrs=[mail.recipient])


def _backend():
    config = current_app.config
    if config["MAIL_BACKEND"] == "smtp":
        return _SmtpBackend(config)
    return _FileBackend(config["MAIL_DIR"])


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8… minutes, capped at six hours."""
    return min(timedelta(minutes=2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def _claim_due(limit: int) -> list[OutboxMail]:
    query = (
        select(OutboxMail)
        .where(
            OutboxMail.status == DeliveryStatus.PENDING,
            OutboxMail.next_attempt_at <= clock.now(),
        )
        .order_by(OutboxMail.next_attempt_at, OutboxMail.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(db.session.scalars(query))


def deliver_due(limit: int = 200) -> dict[str, int]:
    """Send the mails that are due; commits. Safe with several workers (rows are claimed)."""
    mails = _claim_due(limit)
    counts = {"sent": 0, "failed": 0, "deferred": 0}
    if not mails:
        db.session.commit()
        return counts
    max_attempts = current_app.config["OUTBOX_MAX_ATTEMPTS"]
    try:
        backend = _backend().__enter__()
    except (OSError, smtplib.SMTPException) as exc:
        # Server unreachable: every claimed mail waits for the next attempt, nothing is lost.
        for mail in mails:
            _defer(mail, f"connexion SMTP impossible : {exc}", max_attempts)
            counts["deferred"] += 1
        db.session.commit()
        return counts
    try:
        for mail in mails:
            try:
                backend.send(mail, build_message(mail))
            except (OSError, smtplib.SMTPException) as exc:
                _defer(mail, str(exc), max_attempts)
                counts["deferred"] += 1
                continue
            mail.status = DeliveryStatus.SENT
            mail.sent_at = clock.now()
            mail.attempts += 1
            mail.last_error = None
            counts["sent"] += 1
    finally:
        backend.__exit__(None, None, None)
    counts["failed"] = sum(1 for m in mails if m.status == DeliveryStatus.FAILED)
    db.session.commit()
    return counts


def _defer(mail: OutboxMail, error: str, max_attempts: int) -> None:
    mail.attempts += 1
    mail.last_error = error[:2000]
    if mail.attempts >= max_attempts:
        mail.status = DeliveryStatus.FAILED
    else:
        mail.next_attempt_at = clock.now() + backoff(mail.attempts)


def replay(mail: OutboxMail) -> None:
    """Put a failed mail back in the queue (administrators, from the UI)."""
    mail.status = DeliveryStatus.PENDING
    mail.attempts = 0
    mail.next_attempt_at = clock.now()
    db.session.flush()
