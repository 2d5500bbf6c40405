"""Webhooks to API providers: their endpoints (created, verified by a signed ping, enabled,
disabled) and the queueing of events.

One entry point, :func:`queue_webhook_for_api` (:func:`queue_webhooks_for_api` for many
events): it writes one delivery per interested endpoint of the API's provider in the caller's
transaction; :func:`~datapass.notify.webhook_delivery.deliver_webhooks` (scheduled) sends
them with exponential backoff. The body is fixed when queued.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
import uuid
from collections.abc import Iterable
from datetime import UTC
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import Select, select, update

from datapass import clock, vault
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.bulk import bulk_insert, bulk_time
from datapass.catalogue.models import Api, Provider
from datapass.extensions import db
from datapass.notify.http import WEBHOOK_SEAL, WebhookError, post
from datapass.notify.models import (
    WEBHOOK_EVENTS,
    DeliveryStatus,
    EndpointState,
    WebhookDelivery,
    WebhookEndpoint,
)

if TYPE_CHECKING:
    from datapass.accounts.models import User


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


def _webhook_endpoints(provider_id: int) -> list[tuple[int, tuple[str, ...]]]:
    """(id, wanted events) of the provider's endpoints that receive deliveries, looked up
    once per session (a request, a job): issuing tokens in bulk does not query them for
    every event. Changing an endpoint clears this cache (:func:`_webhook_audit`). Endpoints
    disabled after failures keep receiving deliveries, held until re-enabled."""

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
    providers = db.session.info.setdefault("dp_api_providers", {})
    if api_id not in providers:
        providers[api_id] = db.session.scalar(select(Api.provider_id).where(Api.id == api_id))
    return providers[api_id]


def _queue(
    provider_id: int | None, items: Iterable[tuple[str, dict[str, Any], str | None, Any]]
) -> int:
    """Write one pending delivery per (event, interested endpoint) in one ``executemany``
    (the caller's transaction); returns how many."""

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


def _check_url(url: str) -> str:
    url = (url or "").strip()
    parsed = urllib.parse.urlsplit(url)
    production = current_app.config["ENV"] == "production"
    if parsed.scheme not in ({"https"} if production else {"https", "http"}) or not parsed.hostname:
        raise WebhookError("L'adresse doit être une URL https:// complète.", field="url")
    if parsed.username or parsed.password:
        raise WebhookError("L'adresse ne doit pas contenir d'identifiants.", field="url")
    if len(url) > 500:
        raise WebhookError("L'adresse est trop longue (500 caractères au plus).", field="url")
    return url


def _webhook_audit(
    tag: EventTag.Notify, actor: Actor, endpoint: WebhookEndpoint, **payload
) -> None:
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


def create_endpoint(provider: Provider, url: str, actor: Actor, events: list[str] | None = None):
    """A new endpoint for ``provider``, not enabled until its signed ping succeeds. Returns
    (endpoint, secret); the secret is shown once and stored sealed."""

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
    _webhook_audit(EventTag.Notify.WebhookCreated, actor, endpoint, events=endpoint.events)
    return endpoint, secret


def update_endpoint(
    endpoint: WebhookEndpoint, url: str, events: list[str] | None, actor: Actor
) -> None:
    """Change the URL or the events; a new URL must pass the ping again."""

    url = _check_url(url)
    if url != endpoint.url:
        endpoint.url = url
        endpoint.verified_at = None
        endpoint.state = EndpointState.DRAFT
    endpoint.events = list(events or [])
    endpoint.updated_at = clock.now()
    db.session.flush()
    _webhook_audit(EventTag.Notify.WebhookUpdated, actor, endpoint, events=endpoint.events)


def rotate_endpoint_secret(endpoint: WebhookEndpoint, actor: Actor) -> str:
    """A new secret (shown once); the endpoint must pass the ping again."""

    secret, endpoint.secret_sealed = _new_secret()
    endpoint.verified_at = None
    endpoint.state = EndpointState.DRAFT
    endpoint.updated_at = clock.now()
    db.session.flush()
    _webhook_audit(EventTag.Notify.WebhookSecretRotated, actor, endpoint)
    return secret


def ping_endpoint(endpoint: WebhookEndpoint, actor: Actor) -> dict[str, Any]:
    """Send a signed ``ping`` now; success marks the endpoint as verified (it may then be
    enabled, even after a disabling: the ping is newer). Returns the attempt's outcome.

    Commits before talking to the receiver (no transaction, and on SQLite no write lock,
    is held across the request), then records the outcome in the session's next one."""

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
    result = post(url, sealed, str(uuid.uuid4()), "ping", body)
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if result["success"]:
        endpoint.verified_at = clock.now()
    endpoint.updated_at = clock.now()
    db.session.flush()
    _webhook_audit(
        EventTag.Notify.WebhookPinged,
        actor,
        endpoint,
        success=result["success"],
        status_code=result["status_code"],
        error=result["error"],
    )
    return result


def enable_endpoint(endpoint: WebhookEndpoint, actor: Actor) -> None:
    """Enable an endpoint whose signed ping succeeded (after its disabling, if it was
    disabled: an older ping proves nothing about the receiver now); held deliveries become
    due."""

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
    _webhook_audit(EventTag.Notify.WebhookEnabled, actor, endpoint)


def disable_endpoint(endpoint: WebhookEndpoint, actor: Actor, reason: str) -> None:
    """Stop delivering to ``endpoint``; its deliveries wait (nothing is lost)."""

    endpoint.state = EndpointState.DISABLED
    endpoint.disabled_at = clock.now()
    endpoint.disabled_reason = reason
    endpoint.updated_at = clock.now()
    db.session.flush()
    _webhook_audit(EventTag.Notify.WebhookDisabled, actor, endpoint, reason=reason)


def replay_delivery(delivery: WebhookDelivery, actor: Actor) -> None:
    """Deliver again (same delivery id, so receivers can deduplicate), at the next run."""
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = clock.now()
    if delivery.attempts >= current_app.config["WEBHOOK_MAX_ATTEMPTS"]:
        delivery.attempts = 0
    db.session.flush()
    _webhook_audit(
        EventTag.Notify.WebhookReplayed,
        actor,
        delivery.endpoint,
        delivery_id=delivery.delivery_id,
        event=delivery.event,
    )


def visible_endpoints_query(user: User) -> Select:
    """Endpoints ``user`` may manage: every one for an administrator, those of the providers
    of the APIs they instruct otherwise."""
    query = select(WebhookEndpoint)
    if user.has_role("admin"):  # accounts' role, by value: notify sits below accounts
        return query
    provider_ids = select(Api.provider_id).where(Api.id.in_(user.instructed_api_ids() or {-1}))
    return query.where(WebhookEndpoint.provider_id.in_(provider_ids))


def visible_providers(user: User) -> list[Provider]:
    query = select(Provider).order_by(Provider.name)
    if not user.has_role("admin"):
        ids = select(Api.provider_id).where(Api.id.in_(user.instructed_api_ids() or {-1}))
        query = query.where(Provider.id.in_(ids))
    return list(db.session.scalars(query))


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
