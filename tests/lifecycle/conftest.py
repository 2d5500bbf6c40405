"""Builders for the lifecycle tests: an API whose provider listens to webhooks, and tokens
issued through the tokens service at the (frozen) moment asked for."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import select

from datapass import clock, vault
from datapass.actor import Actor
from datapass.extensions import db
from tests.tokens.conftest import make_api, make_habilitation, make_provider


def make_listening_api(**fields):
    """An API whose provider has an enabled webhook endpoint (deliveries are counted)."""
    from datapass.notify.models import WebhookEndpoint

    provider = make_provider()
    api = make_api(provider, **fields)
    now = clock.now()
    db.session.add(
        WebhookEndpoint(
            provider_id=provider.id,
            url="https://hooks.example.gouv.fr/datapass",
            secret_sealed=vault.seal(b"webhook-secret", "webhook"),
            events=[],
            state="enabled",
            verified_at=now,
            consecutive_failures=0,
            created_at=now,
            updated_at=now,
        )
    )
    db.session.flush()
    return api


def issue(api, at: datetime | None = None, **kwargs):
    """A habilitation and its token issued at ``at`` (the clock is left where it was)."""
    from datapass.tokens import issuance as token_issuance

    previous = clock.now()
    if at is not None:
        clock.set_frozen(at)
    try:
        habilitation = make_habilitation(api, **kwargs)
        token, _raw = token_issuance.issue_for_habilitation(habilitation, Actor.system("tests"))
        db.session.flush()
    finally:
        clock.set_frozen(previous)
    return token


def mails(template: str | None = None) -> list:
    from datapass.notify.models import OutboxMail

    query = select(OutboxMail).order_by(OutboxMail.id)
    if template:
        query = query.where(OutboxMail.template == template)
    return list(db.session.scalars(query))


def webhooks(event: str | None = None) -> list:
    from datapass.notify.models import WebhookDelivery

    query = select(WebhookDelivery).order_by(WebhookDelivery.id)
    if event:
        query = query.where(WebhookDelivery.event == event)
    return list(db.session.scalars(query))


def acts(token_id: int | None = None) -> list:
    from datapass.lifecycle.models import LifecycleAct

    query = select(LifecycleAct).order_by(LifecycleAct.id)
    if token_id is not None:
        query = query.where(LifecycleAct.token_id == token_id)
    return list(db.session.scalars(query))


def counter(rows, attribute: str) -> Counter:
    return Counter(getattr(row, attribute) for row in rows)


def add_scopes(api, *codes: str) -> None:
    from datapass.catalogue.models import Scope

    for position, code in enumerate(codes):
        db.session.add(Scope(api_id=api.id, code=code, label=f"Donnée {code}", position=position))
    db.session.flush()
    db.session.refresh(api)


def expiring_token(api, days_left: int = 30, used: bool = True, **kwargs):
    """A token issued so that it expires ``days_left`` days from the frozen clock (used
    just now, unless ``used`` is false, so no unused-access step interferes)."""
    from datetime import timedelta

    moment = clock.add_months(clock.now() + timedelta(days=days_left), -18)
    token = issue(api, moment, **kwargs)
    if used:
        token.last_used_at = clock.now()
        db.session.flush()
    return token
