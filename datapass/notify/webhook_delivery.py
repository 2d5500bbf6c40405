"""Webhook delivery: the scheduled job that sends due deliveries to enabled endpoints, claim by
claim, and records each attempt; an endpoint that keeps failing is disabled and its
provider's developers are told by mail.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from datapass import clock
from datapass.actor import Actor
from datapass.extensions import db
from datapass.notify.http import post
from datapass.notify.models import (
    DeliveryStatus,
    EndpointState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from datapass.notify.outbox import CLAIM_SIZE, backoff, claim, queue_mail
from datapass.notify.webhooks import disable_endpoint


def deliver_webhooks(limit: int = 100) -> dict[str, int]:
    """Send up to ``limit`` due deliveries of enabled endpoints, :data:`CLAIM_SIZE` claimed at
    a time (commits): claim, commit, POST outside any transaction, then record each attempt
    in its own transaction. After ``WEBHOOK_MAX_FAILURES`` failures in a row an endpoint is
    disabled and its provider's developers are e-mailed; the rest of its claim goes back to
    the queue."""

    counts = {"sent": 0, "deferred": 0, "failed": 0}
    while limit > 0:
        ids = claim(
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
            result = post(url, sealed, delivery_id, event, body)
            outcome = _record_webhook(row_id, attempts, endpoint_id, result)
            counts[outcome] += 1
            if outcome != "sent" and _endpoint_disabled(endpoint_id):
                disabled.add(endpoint_id)
    return counts


def _release_delivery(row_id: int) -> None:
    """A claimed delivery not attempted (its endpoint was disabled meanwhile): back to the
    queue as it was."""

    db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == row_id, WebhookDelivery.status == DeliveryStatus.SENDING)
        .values(status=DeliveryStatus.PENDING, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def _endpoint_disabled(endpoint_id: int) -> bool:
    state = db.session.scalar(
        select(WebhookEndpoint.state).where(WebhookEndpoint.id == endpoint_id)
    )
    db.session.commit()
    return state != EndpointState.ENABLED


def _record_webhook(row_id: int, attempts: int, endpoint_id: int, result: dict[str, Any]) -> str:
    """One attempt's outcome, in its own transaction (commits): the attempt logged, the
    delivery sent, deferred or abandoned, the endpoint's run of failures counted (and the
    endpoint disabled at the limit). Returns ``sent``, ``deferred`` or ``failed``."""

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


def _mail_developers(endpoint: WebhookEndpoint) -> None:
    provider = endpoint.provider
    emails = [e.strip() for e in (provider.developer_emails or "").split(",") if e.strip()]
    if not emails and provider.contact_email:
        emails = [provider.contact_email]
    for email in dict.fromkeys(emails):
        queue_mail(email, "webhook_disabled", {"endpoint": endpoint, "provider": provider})
