"""E-mail: queued in the outbox by services, delivered by a scheduled job.

A mail is two templates, ``templates/mail/<name>.txt`` and ``templates/mail/<name>.html``;
the text one sets ``{% set subject = "…" %}``. Delivery retries with exponential backoff and
never loses a mail while the SMTP server is down.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import secrets
import smtplib
import socket
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, timedelta
from email.message import EmailMessage
from email.utils import formataddr, make_msgid, parseaddr
from pathlib import Path
from typing import Any

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import selectinload

from datapass import clock, vault
from datapass.accounts.models import Role as AccountRole
from datapass.bulk import bulk_insert, bulk_time, reserve_ids
from datapass.extensions import db
from datapass.notify.models import DeliveryStatus, MailBody, OutboxMail, Unsubscription

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


def _claim(model, limit: int, *where, join=None) -> list[int]:
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
    ids = _claim(OutboxMail, limit)
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


class ReplayRefused(Exception):
    """Only an abandoned (failed) mail is put back in the queue."""


def replay(mail: OutboxMail, actor) -> None:
    """Put a failed mail back in the queue (administrators, from the UI); audited.
    Raises :class:`ReplayRefused` for any other mail."""
    from datapass.audit import service as audit

    if not mail.can_replay:
        raise ReplayRefused("Seul un courriel abandonné peut être renvoyé.")
    mail.status = DeliveryStatus.PENDING
    mail.attempts = 0
    mail.next_attempt_at = clock.now()
    db.session.flush()
    audit.record(
        "notify:mail:replayed",
        actor,
        subject=mail,
        payload={"template": mail.template, "recipient": audit.secret(mail.recipient)},
    )


def replay_all(actor) -> dict[str, int]:
    """Bulk replay (administrators, once the SMTP server is fixed): every abandoned mail back
    in the queue, and every waiting one due now instead of at the end of its backoff;
    audited once. Returns how many of each."""
    from datapass.audit import service as audit

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
    audit.record("notify:mail:replayed_all", actor, payload={"failed": failed, "waiting": waiting})
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
    from sqlalchemy import func

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
    from sqlalchemy import func

    query = select(OutboxMail).order_by(OutboxMail.id.desc()).limit(limit)
    if status:
        query = query.where(OutboxMail.status == status)
    counts = dict(
        db.session.execute(
            select(OutboxMail.status, func.count()).group_by(OutboxMail.status)
        ).all()
    )
    return list(db.session.scalars(query)), counts


# --- webhooks to API providers -------------------------------------------------------------
#
# One entry point, :func:`queue_webhook_for_api` (:func:`queue_webhooks_for_api` for many
# events): it writes one delivery per interested endpoint of the API's provider in the
# caller's transaction; :func:`deliver_webhooks` (scheduled) sends them with
# exponential backoff. The body is fixed when queued; the signature is the HMAC-SHA256 of the
# exact bytes sent.

WEBHOOK_SEAL = "webhook-secret"


def webhook_body(
    event: str, data: dict[str, Any], model_type: str | None, model_id: Any, fired_at
) -> str:
    return json.dumps(
        {
            "event": event,
            "fired_at": fired_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "model_type": model_type,
            "model_id": None if model_id is None else str(model_id),
            "data": data,
        },
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )


def sign_webhook_body(secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256``: ``sha256=`` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _webhook_endpoints(provider_id: int) -> list[tuple[int, tuple[str, ...]]]:
    """(id, wanted events) of the provider's endpoints that receive deliveries, looked up
    once per session (a request, a job): issuing tokens in bulk does not query them for
    every event. Changing an endpoint clears this cache (:func:`_webhook_audit`). Endpoints
    disabled after failures keep receiving deliveries, held until re-enabled."""
    from datapass.notify.models import EndpointState, WebhookEndpoint

    cache = db.session.info.setdefault("dp_webhook_endpoints", {})
    endpoints = cache.get(provider_id)
    if endpoints is None:
        endpoints = cache[provider_id] = [
            (endpoint_id, tuple(events or ()))
            for endpoint_id, events in db.session.execute(
                select(WebhookEndpoint.id, WebhookEndpoint.events).where(
                    WebhookEndpoint.provider_id == provider_id,
                    WebhookEndpoint.state.in_([EndpointState.ENABLED, EndpointState.DISABLED]),
                )
            )
        ]
    return endpoints


def _api_provider(api_id: int) -> int | None:
    from datapass.catalogue.models import Api

    providers = db.session.info.setdefault("dp_api_providers", {})
    if api_id not in providers:
        providers[api_id] = db.session.scalar(select(Api.provider_id).where(Api.id == api_id))
    return providers[api_id]


def _queue(
    provider_id: int | None, items: Iterable[tuple[str, dict[str, Any], str | None, Any]]
) -> int:
    """Write one pending delivery per (event, interested endpoint) in one ``executemany``
    (the caller's transaction); returns how many."""
    from datapass.notify.models import WEBHOOK_EVENTS

    items = list(items)
    for event, *_ in items:
        if event not in WEBHOOK_EVENTS and event != "ping":
            raise ValueError(f"événement de webhook inconnu : {event}")
    if provider_id is None or not items:
        return 0
    endpoints = _webhook_endpoints(provider_id)
    if not endpoints:
        return 0
    now = clock.now()
    stored_now = bulk_time(now)
    pending = DeliveryStatus.PENDING.value
    rows = [
        (
            endpoint_id,
            str(uuid.uuid4()),
            event,
            model_type,
            None if model_id is None else str(model_id),
            webhook_body(event, data, model_type, model_id, now),
            stored_now,
            pending,
            0,
            stored_now,
        )
        for event, data, model_type, model_id in items
        for endpoint_id, wanted in endpoints
        if not wanted or event in wanted
    ]
    bulk_insert("webhook_deliveries", _WEBHOOK_COLUMNS, rows)
    return len(rows)


def queue_webhook_for_api(
    api_id: int,
    event: str,
    data: dict[str, Any],
    *,
    model_type: str | None = None,
    model_id: Any = None,
) -> int:
    """Queue ``event`` for every endpoint of the provider of catalogue API ``api_id`` that
    wants it; returns how many deliveries were written. The single entry point for every
    domain (tokens' token.issued, lifecycle's token.expiring…)."""
    return _queue(_api_provider(api_id), [(event, data, model_type, model_id)])


def queue_webhooks_for_api(
    api_id: int, items: Iterable[tuple[str, dict[str, Any], str | None, Any]]
) -> int:
    """:func:`queue_webhook_for_api` for many ``(event, data, model_type, model_id)`` of one
    API at once: the endpoints are read once, the deliveries written in one ``executemany``."""
    return _queue(_api_provider(api_id), items)


class WebhookError(Exception):
    """A webhook configuration refused (French message for the form)."""


def _check_url(url: str) -> str:
    url = (url or "").strip()
    parsed = urllib.parse.urlsplit(url)
    production = current_app.config["ENV"] == "production"
    if parsed.scheme not in ({"https"} if production else {"https", "http"}) or not parsed.hostname:
        raise WebhookError("L'adresse doit être une URL https:// complète.")
    if parsed.username or parsed.password:
        raise WebhookError("L'adresse ne doit pas contenir d'identifiants.")
    if len(url) > 500:
        raise WebhookError("L'adresse est trop longue (500 caractères au plus).")
    return url


def _webhook_audit(tag: str, actor, endpoint, **payload) -> None:
    from datapass.audit import service as audit

    db.session.info.pop("dp_webhook_endpoints", None)  # every change passes here

    audit.record(
        tag,
        actor,
        subject=endpoint,
        payload={"provider_id": endpoint.provider_id, "url": endpoint.url, **payload},
    )


def _new_secret() -> tuple[str, str]:
    """A new signing secret (shown once) and its sealed form (what is stored)."""
    secret = "whsec_" + secrets.token_urlsafe(32)
    return secret, vault.seal(secret.encode(), WEBHOOK_SEAL)


def create_endpoint(provider, url: str, actor, events: list[str] | None = None):
    """A new endpoint for ``provider``, not enabled until its signed ping succeeds. Returns
    (endpoint, secret); the secret is shown once and stored sealed."""
    from datapass.notify.models import EndpointState, WebhookEndpoint

    url = _check_url(url)
    secret, sealed = _new_secret()
    now = clock.now()
    endpoint = WebhookEndpoint(
        provider_id=provider.id,
        url=url,
        secret_sealed=sealed,
        events=list(events or []),
        state=EndpointState.DRAFT,
        consecutive_failures=0,
        created_at=now,
        updated_at=now,
    )
    db.session.add(endpoint)
    db.session.flush()
    _webhook_audit("notify:webhook:created", actor, endpoint, events=endpoint.events)
    return endpoint, secret


def update_endpoint(endpoint, url: str, events: list[str] | None, actor) -> None:
    """Change the URL or the events; a new URL must pass the ping again."""
    from datapass.notify.models import EndpointState

    url = _check_url(url)
    if url != endpoint.url:
        endpoint.url = url
        endpoint.verified_at = None
        endpoint.state = EndpointState.DRAFT
    endpoint.events = list(events or [])
    endpoint.updated_at = clock.now()
    db.session.flush()
    _webhook_audit("notify:webhook:updated", actor, endpoint, events=endpoint.events)


def rotate_endpoint_secret(endpoint, actor) -> str:
    """A new secret (shown once); the endpoint must pass the ping again."""
    from datapass.notify.models import EndpointState

    secret, endpoint.secret_sealed = _new_secret()
    endpoint.verified_at = None
    endpoint.state = EndpointState.DRAFT
    endpoint.updated_at = clock.now()
    db.session.flush()
    _webhook_audit("notify:webhook:secret_rotated", actor, endpoint)
    return secret


def _address_allowed(address: str, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if allow_loopback and ip.is_loopback:
        return True
    return ip.is_global and not ip.is_multicast


def _resolve_checked(host: str, port: int) -> str:
    """The one address a request to ``host`` goes to: the name is resolved once, every
    address it resolves to must be public (otherwise a receiver could alternate a public and
    an internal one), and the connection is made to the address checked here, never to the
    name again (DNS rebinding). ``WEBHOOK_ALLOW_PRIVATE`` lets loopback through (tests,
    development), nothing else."""
    allow_loopback = bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE"))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise WebhookError(f"nom d'hôte introuvable : {host}") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise WebhookError(f"nom d'hôte introuvable : {host}")
    for address in addresses:
        if not _address_allowed(address, allow_loopback):
            raise WebhookError(f"adresse non publique refusée : {address}")
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a checked address; the Host header still names the receiver."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address; SNI and the certificate check use the receiver's name."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _send_webhook(url: str, raw: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST ``raw`` to ``url`` at the address checked by :func:`_resolve_checked`; returns
    the status code. Redirects are never followed and no answer's body is read: a 3xx is a
    failure like any other, and nothing a receiver (or what it redirects to) says is kept."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise WebhookError("adresse de webhook invalide")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    address = _resolve_checked(parsed.hostname, port)
    kind = _PinnedHTTPSConnection if parsed.scheme == "https" else _PinnedHTTPConnection
    connection = kind(parsed.hostname, port, address, timeout)
    target = parsed.path or "/"
    if parsed.query:
        target += "?" + parsed.query
    try:
        connection.request("POST", target, body=raw, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def _post(url: str, secret_sealed: str, delivery_id: str, event: str, body: str) -> dict[str, Any]:
    """One signed POST; returns what happened (never raises for network errors). Call it
    outside any transaction: it talks to the receiver."""
    secret = vault.unseal(secret_sealed, WEBHOOK_SEAL).decode()
    raw = body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Datapass-Webhooks/1",
        "X-Hub-Signature-256": sign_webhook_body(secret, raw),
        "X-Datapass-Event": event,
        "X-Datapass-Delivery": delivery_id,
        "X-Datapass-Timestamp": str(int(clock.now().timestamp())),
    }
    started = time.monotonic()
    result: dict[str, Any] = {"status_code": None, "error": None}
    try:
        status = _send_webhook(url, raw, headers, current_app.config["WEBHOOK_TIMEOUT"])
    except (OSError, http.client.HTTPException, WebhookError, ValueError) as exc:
        result["error"] = str(exc)[:500] or exc.__class__.__name__
    else:
        result["status_code"] = status
        if 300 <= status < 400:
            result["error"] = f"redirection refusée (HTTP {status})"
    result["duration_ms"] = int((time.monotonic() - started) * 1000)
    result["success"] = result["status_code"] is not None and 200 <= result["status_code"] < 300
    return result


def ping_endpoint(endpoint, actor) -> dict[str, Any]:
    """Send a signed ``ping`` now; success marks the endpoint as verified (it may then be
    enabled, even after a disabling: the ping is newer). Returns the attempt's outcome.

    Commits before talking to the receiver (no transaction, and on SQLite no write lock,
    is held across the request), then records the outcome in the session's next one."""
    from datapass.notify.models import WebhookEndpoint

    endpoint_id, url, sealed = endpoint.id, endpoint.url, endpoint.secret_sealed
    now = clock.now()
    body = webhook_body(
        "ping",
        {"endpoint_id": endpoint.id, "provider_id": endpoint.provider_id},
        "WebhookEndpoint",
        endpoint.id,
        now,
    )
    db.session.commit()
    result = _post(url, sealed, str(uuid.uuid4()), "ping", body)
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if result["success"]:
        endpoint.verified_at = clock.now()
    endpoint.updated_at = clock.now()
    db.session.flush()
    _webhook_audit(
        "notify:webhook:pinged",
        actor,
        endpoint,
        success=result["success"],
        status_code=result["status_code"],
        error=result["error"],
    )
    return result


def enable_endpoint(endpoint, actor) -> None:
    """Enable an endpoint whose signed ping succeeded (after its disabling, if it was
    disabled: an older ping proves nothing about the receiver now); held deliveries become
    due."""
    from datapass.notify.models import EndpointState, WebhookDelivery

    if not endpoint.can_enable:
        if endpoint.state == EndpointState.ENABLED:
            return
        raise WebhookError(
            "Le test signé (ping) doit réussir avant l'activation."
            if endpoint.verified_at is None
            else "Le test signé (ping) doit réussir à nouveau depuis la désactivation."
        )
    endpoint.state = EndpointState.ENABLED
    endpoint.consecutive_failures = 0
    endpoint.disabled_at = None
    endpoint.disabled_reason = None
    endpoint.updated_at = clock.now()
    db.session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint.id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .values(next_attempt_at=clock.now())
    )
    db.session.flush()
    _webhook_audit("notify:webhook:enabled", actor, endpoint)


def disable_endpoint(endpoint, actor, reason: str) -> None:
    """Stop delivering to ``endpoint``; its deliveries wait (nothing is lost)."""
    from datapass.notify.models import EndpointState

    endpoint.state = EndpointState.DISABLED
    endpoint.disabled_at = clock.now()
    endpoint.disabled_reason = reason
    endpoint.updated_at = clock.now()
    db.session.flush()
    _webhook_audit("notify:webhook:disabled", actor, endpoint, reason=reason)


def deliver_webhooks(limit: int = 100) -> dict[str, int]:
    """Send up to ``limit`` due deliveries of enabled endpoints, :data:`CLAIM_SIZE` claimed at
    a time (commits): claim, commit, POST outside any transaction, then record each attempt
    in its own transaction. After ``WEBHOOK_MAX_FAILURES`` failures in a row an endpoint is
    disabled and its provider's developers are e-mailed; the rest of its claim goes back to
    the queue."""
    from datapass.notify.models import EndpointState, WebhookDelivery, WebhookEndpoint

    counts = {"sent": 0, "deferred": 0, "failed": 0}
    while limit > 0:
        ids = _claim(
            WebhookDelivery,
            min(CLAIM_SIZE, limit),
            WebhookEndpoint.state == EndpointState.ENABLED,
            join=(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id),
        )
        if not ids:
            db.session.commit()
            return counts
        limit -= len(ids)
        claimed = [
            (delivery.id, delivery.attempts, delivery.delivery_id, delivery.event, delivery.body)
            + (delivery.endpoint_id, delivery.endpoint.url, delivery.endpoint.secret_sealed)
            for delivery in db.session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.id.in_(ids))
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                .options(selectinload(WebhookDelivery.endpoint))
            )
        ]
        db.session.commit()  # the claim
        disabled: set[int] = set()
        for row_id, attempts, delivery_id, event, body, endpoint_id, url, sealed in claimed:
            if endpoint_id in disabled:
                _release_delivery(row_id)
                continue
            result = _post(url, sealed, delivery_id, event, body)
            outcome = _record_webhook(row_id, attempts, endpoint_id, result)
            counts[outcome] += 1
            if outcome != "sent" and _endpoint_disabled(endpoint_id):
                disabled.add(endpoint_id)
    return counts


def _release_delivery(row_id: int) -> None:
    """A claimed delivery not attempted (its endpoint was disabled meanwhile): back to the
    queue as it was."""
    from datapass.notify.models import WebhookDelivery

    db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == row_id, WebhookDelivery.status == DeliveryStatus.SENDING)
        .values(status=DeliveryStatus.PENDING, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def _endpoint_disabled(endpoint_id: int) -> bool:
    from datapass.notify.models import EndpointState, WebhookEndpoint

    state = db.session.scalar(
        select(WebhookEndpoint.state).where(WebhookEndpoint.id == endpoint_id)
    )
    db.session.commit()
    return state != EndpointState.ENABLED


def _record_webhook(row_id: int, attempts: int, endpoint_id: int, result: dict[str, Any]) -> str:
    """One attempt's outcome, in its own transaction (commits): the attempt logged, the
    delivery sent, deferred or abandoned, the endpoint's run of failures counted (and the
    endpoint disabled at the limit). Returns ``sent``, ``deferred`` or ``failed``."""
    from datapass.actor import Actor
    from datapass.notify.models import (
        EndpointState,
        WebhookAttempt,
        WebhookDelivery,
        WebhookEndpoint,
    )

    config = current_app.config
    now = clock.now()
    attempts += 1
    db.session.add(
        WebhookAttempt(
            delivery_id=row_id,
            at=now,
            status_code=result["status_code"],
            error=result["error"],
            duration_ms=result["duration_ms"],
            success=result["success"],
        )
    )
    values: dict[str, Any] = {
        "attempts": attempts,
        "lease_until": None,
        "last_status_code": result["status_code"],
        "last_error": result["error"],
    }
    if result["success"]:
        outcome = "sent"
        values.update(status=DeliveryStatus.SENT, delivered_at=now)
        failures = 0
    else:
        outcome = "failed" if attempts >= config["WEBHOOK_MAX_ATTEMPTS"] else "deferred"
        if outcome == "failed":
            values.update(status=DeliveryStatus.FAILED)
        else:
            values.update(status=DeliveryStatus.PENDING, next_attempt_at=now + backoff(attempts))
        failures = WebhookEndpoint.consecutive_failures + 1
    db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == row_id, WebhookDelivery.status == DeliveryStatus.SENDING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    # one statement: concurrent workers count every failure
    count = db.session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(consecutive_failures=failures)
        .returning(WebhookEndpoint.consecutive_failures, WebhookEndpoint.state)
        .execution_options(synchronize_session=False)
    ).one()
    if (
        not result["success"]
        and count.state == EndpointState.ENABLED
        and count.consecutive_failures >= config["WEBHOOK_MAX_FAILURES"]
    ):
        endpoint = db.session.get(WebhookEndpoint, endpoint_id, populate_existing=True)
        disable_endpoint(
            endpoint,
            Actor.system("notify.deliver_webhooks"),
            f"{count.consecutive_failures} échecs consécutifs "
            f"(dernier : {result['status_code'] or result['error']})",
        )
        _mail_developers(endpoint)
    db.session.commit()
    return outcome


def _mail_developers(endpoint) -> None:
    provider = endpoint.provider
    emails = [e.strip() for e in (provider.developer_emails or "").split(",") if e.strip()]
    if not emails and provider.contact_email:
        emails = [provider.contact_email]
    for email in dict.fromkeys(emails):
        queue_mail(email, "webhook_disabled", {"endpoint": endpoint, "provider": provider})


def replay_delivery(delivery, actor) -> None:
    """Deliver again (same delivery id, so receivers can deduplicate), at the next run."""
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = clock.now()
    if delivery.attempts >= current_app.config["WEBHOOK_MAX_ATTEMPTS"]:
        delivery.attempts = 0
    db.session.flush()
    _webhook_audit(
        "notify:webhook:replayed",
        actor,
        delivery.endpoint,
        delivery_id=delivery.delivery_id,
        event=delivery.event,
    )


def visible_endpoints_query(user):
    """Endpoints ``user`` may manage: every one for an administrator, those of the providers
    of the APIs they instruct otherwise."""
    from datapass.catalogue.models import Api
    from datapass.notify.models import WebhookEndpoint

    query = select(WebhookEndpoint)
    if user.has_role(AccountRole.ADMIN):
        return query
    provider_ids = select(Api.provider_id).where(Api.id.in_(user.instructed_api_ids() or {-1}))
    return query.where(WebhookEndpoint.provider_id.in_(provider_ids))


def visible_providers(user) -> list:
    from datapass.catalogue.models import Api, Provider

    query = select(Provider).order_by(Provider.name)
    if not user.has_role(AccountRole.ADMIN):
        ids = select(Api.provider_id).where(Api.id.in_(user.instructed_api_ids() or {-1}))
        query = query.where(Provider.id.in_(ids))
    return list(db.session.scalars(query))


# --- bulk queueing (scheduled sweeps queue thousands of messages per run) ---------------------


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


_WEBHOOK_COLUMNS = (
    "endpoint_id",
    "delivery_id",
    "event",
    "model_type",
    "model_id",
    "body",
    "created_at",
    "status",
    "attempts",
    "next_attempt_at",
)
