"""API providers (ministries, agencies) and the registration and revocation of their
machine clients."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from datapass import clock
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.catalogue.clients import create_client, forget_client
from datapass.catalogue.errors import check_unique
from datapass.catalogue.models import MachineClient, Provider
from datapass.extensions import db


def list_providers() -> list[Provider]:
    return list(db.session.scalars(select(Provider).order_by(Provider.name)))


def create_provider(actor: Actor, slug: str, name: str, contact_email: str) -> Provider:
    """A new API provider (ministry, agency)."""
    check_unique(Provider, "slug", slug)
    provider = Provider(
        slug=slug,
        name=name,
        contact_email=contact_email,
        developer_emails="",
        created_at=clock.now(),
    )
    db.session.add(provider)
    db.session.flush()
    audit.record(
        EventTag.Catalogue.ProviderCreated, actor, subject=provider, payload={"slug": slug}
    )
    return provider


def update_provider(provider: Provider, actor: Actor, values: dict[str, Any]) -> None:
    for key in ("name", "contact_email", "developer_emails"):
        if key in values:
            setattr(provider, key, values[key])
    db.session.flush()
    audit.record(EventTag.Catalogue.ProviderUpdated, actor, subject=provider, payload={})


def register_client(provider: Provider, actor: Actor, name: str) -> tuple[MachineClient, str]:
    """A new machine client for ``provider`` (administrators); the secret is returned once."""
    client, secret = create_client(provider, name)
    audit.record(
        EventTag.Catalogue.ClientCreated,
        actor,
        subject=client,
        payload={
            "client_id": client.client_id,
            "provider": provider.slug,
            "secret": audit.secret(secret),
        },
    )
    return client, secret


def revoke_client(client: MachineClient, actor: Actor) -> bool:
    """Revoke a machine client at once; False if it already was."""
    if client.revoked_at is not None:
        return False
    client.revoked_at = clock.now()
    forget_client(client.client_id)
    db.session.flush()
    audit.record(
        EventTag.Catalogue.ClientRevoked,
        actor,
        subject=client,
        payload={"client_id": client.client_id},
    )
    return True
