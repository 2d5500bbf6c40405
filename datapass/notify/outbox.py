"""The mail outbox: mails queued by services (one, or many at once), one-click unsubscribe,
and the claim, lease and backoff every delivery of the outboxes (mails, webhooks) shares.

A mail is two templates, ``templates/mail/<name>.txt`` and ``templates/mail/<name>.html``;
the text one sets ``{% set subject = "…" %}``. It is rendered when queued, so that it reflects
the state that caused it, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from email.utils import make_msgid, parseaddr
from typing import Any

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import and_, or_, select, update

from datapass import clock
from datapass.bulk import bulk_insert, bulk_time, reserve_ids
from datapass.extensions import db
from datapass.notify.models import (
    DeliveryStatus,
    MailBody,
    OutboxMail,
    Unsubscription,
)

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
    subject, body_text, body_html = _render(_MailTemplates(), template, context)
    now = clock.now()
    mail = OutboxMail(
        created_at=now,
        template=template,
        recipient=to,
        subject=subject,
        body=MailBody(body_text=body_text, body_html=body_html),
        category=category,
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        message_id=make_msgid(domain=_mail_domain()),
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


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8… minutes, capped at six hours (mails and webhook deliveries)."""
    return min(timedelta(minutes=2 ** max(attempts - 1, 0)), MAX_BACKOFF)


# Deliveries claim a few rows at a time: each is ``sending`` until its lease ends, the claim is
# committed, the peer is talked to outside any transaction, and each outcome is recorded in
# its own short transaction. A worker killed mid-claim leaves at most the message in flight
# unrecorded (sent again, with the same Message-ID / X-Datapass-Delivery); the rest of its
# claim is claimed again once the lease is over. The lease outlasts a claim sent at the
# peers' timeouts (10 × 10 s by default).
CLAIM_SIZE = 10


CLAIM_LEASE = timedelta(minutes=10)


def claim(model, limit: int, *where, join=None) -> list[int]:
    """Ids of up to ``limit`` due rows of ``model`` (an outbox), now ``sending`` under a
    lease: pending ones whose attempt is due, and those of a worker whose lease ended.
    Rows another worker holds are skipped (PostgreSQL ``SKIP LOCKED``; on SQLite the claim
    holds the write lock). The caller commits."""
    now = clock.now()
    due = or_(
        and_(model.status == DeliveryStatus.PENDING, model.next_attempt_at <= now),
        and_(model.status == DeliveryStatus.SENDING, model.lease_until <= now),
    )
    query = select(model.id)
    if join is not None:
        query = query.join(*join)
    query = (
        query.where(due, *where)
        .order_by(model.next_attempt_at, model.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=model)
    )
    ids = list(db.session.scalars(query))
    if ids:
        db.session.execute(
            update(model)
            .where(model.id.in_(ids))
            .values(status=DeliveryStatus.SENDING, lease_until=now + CLAIM_LEASE)
            .execution_options(synchronize_session=False)
        )
    return ids


def _mail_domain() -> str:
    """The domain of the Message-IDs: the sender's."""
    return parseaddr(current_app.config["MAIL_FROM"])[1].partition("@")[2] or "datapass"


def _render(
    templates: _MailTemplates, template: str, context: dict[str, Any] | None
) -> tuple[str, str, str]:
    """(subject on one line, text body, HTML body) of one mail: the text template sets the
    subject, which the HTML one receives."""
    context = dict(context or {})
    context.setdefault("base_url", current_app.config["BASE_URL"].rstrip("/"))
    module = templates.module(f"mail/{template}.txt", context)
    subject = getattr(module, "subject", None)
    if not subject:
        raise ValueError(f"mail/{template}.txt sets no subject")
    body_text = str(module)
    context["subject"] = subject
    body_html = templates.render(f"mail/{template}.html", context)
    return " ".join(subject.split()), body_text, body_html


class _MailTemplates:
    """The templates of one queueing (one mail, or a bulk of them), looked up once each, and
    their globals copied once: Jinja otherwise copies a template's global ``ChainMap`` into
    every render."""

    def __init__(self) -> None:
        self.env = current_app.jinja_env
        self.cache: dict[str, tuple[Any, dict[str, Any]]] = {}

    def get(self, name: str) -> tuple[Any, dict[str, Any]]:
        found = self.cache.get(name)
        if found is None:
            template = self.env.get_template(name)
            found = self.cache[name] = (template, dict(template.globals))
        return found

    def module(self, name: str, context: dict[str, Any]) -> Any:
        template, globals_ = self.get(name)
        return template.make_module({**globals_, **context}, shared=True)

    def render(self, name: str, context: dict[str, Any]) -> str:
        template, globals_ = self.get(name)
        ctx = template.new_context({**globals_, **context}, shared=True)
        try:
            return self.env.concat(template.root_render_func(ctx))
        except Exception:
            return self.env.handle_exception()


_MAIL_COLUMNS = (
    "created_at",
    "template",
    "recipient",
    "subject",
    "body_id",
    "category",
    "status",
    "attempts",
    "next_attempt_at",
    "message_id",
)


def queue_mails(messages: Iterable[tuple[Iterable[str], str, dict[str, Any]]]) -> int:
    """:func:`queue_mail` for many mandatory messages at once: each ``(recipients, template,
    context)`` is rendered once and its body stored once, shared by the outbox rows of its
    recipients; bodies and rows are written in one ``executemany`` each. Returns the number
    of mails queued."""
    templates = _MailTemplates()
    domain = _mail_domain()
    rendered: list[tuple[list[str], str, str, str, str]] = []
    for recipients, template, context in messages:
        recipients = list(dict.fromkeys(r for r in recipients if r))
        if recipients:
            rendered.append((recipients, template, *_render(templates, template, context)))
    ids = reserve_ids("mail_bodies", len(rendered))
    bulk_insert(
        "mail_bodies",
        ("id", "body_text", "body_html"),
        [(body_id, m[3], m[4]) for body_id, m in zip(ids, rendered, strict=True)],
    )
    now = bulk_time(clock.now())
    pending = DeliveryStatus.PENDING.value
    msgid = make_msgid
    rows = [
        (now, template, recipient, subject, body_id, None, pending, 0, now, msgid(domain=domain))
        for body_id, (recipients, template, subject, _, _) in zip(ids, rendered, strict=True)
        for recipient in recipients
    ]
    bulk_insert("outbox_mails", _MAIL_COLUMNS, rows)
    return len(rows)
