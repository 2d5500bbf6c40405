"""The APIs of the catalogue: their description, status and maintenance, their scopes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from datapass import clock
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.catalogue.errors import CatalogueError, check_unique
from datapass.catalogue.models import Api, ApiStatus, Provider, Scope
from datapass.extensions import db


def list_apis(*, active_only: bool = False) -> list[Api]:
    query = select(Api).order_by(Api.name)
    if active_only:
        query = query.where(Api.is_active.is_(True))
    return list(db.session.scalars(query))


def update_api(api: Api, actor: Actor, values: dict[str, Any]) -> None:
    """Change an API's description, audience, legal bases, coverage note or fallback."""
    allowed = {
        "name",
        "description",
        "audience",
        "legal_bases",
        "coverage_note",
        "fallback_procedure",
        "renewal_policy",
        "is_active",
    }
    if "audience" in values:
        check_unique(Api, "audience", values["audience"], exclude_id=api.id)
    changed = {}
    for key, value in values.items():
        if key in allowed and getattr(api, key) != value:
            setattr(api, key, value)
            changed[key] = value if key != "legal_bases" else len(value)
    db.session.flush()
    if changed:
        audit.record(
            EventTag.Catalogue.ApiUpdated,
            actor,
            subject=api,
            api_id=api.id,
            payload={"fields": sorted(changed)},
        )


def create_api(provider: Provider, actor: Actor, values: dict[str, Any]) -> Api:
    """A new API in the catalogue (no scope yet); slug and audience are unique."""
    check_unique(Api, "slug", values["slug"])
    check_unique(Api, "audience", values["audience"])
    api = Api(
        provider=provider,
        slug=values["slug"],
        name=values["name"],
        description=values.get("description", ""),
        audience=values["audience"],
        legal_bases=values.get("legal_bases", []),
        coverage_note=values.get("coverage_note", ""),
        fallback_procedure=values.get("fallback_procedure", ""),
        status=ApiStatus.AVAILABLE,
        created_at=clock.now(),
    )
    db.session.add(api)
    db.session.flush()
    audit.record(
        EventTag.Catalogue.ApiCreated, actor, subject=api, api_id=api.id, payload={"slug": api.slug}
    )
    return api


def set_status(
    api: Api,
    actor: Actor,
    status: str,
    message: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> None:
    """Available, or maintenance with a message and a time window (shown on the request form
    and to token holders)."""
    status = ApiStatus(status)
    api.status = status
    if status == ApiStatus.MAINTENANCE:
        api.maintenance_message, api.maintenance_start, api.maintenance_end = message, start, end
    else:
        api.maintenance_message = api.maintenance_start = api.maintenance_end = None
    db.session.flush()
    audit.record(
        EventTag.Catalogue.ApiStatusChanged,
        actor,
        subject=api,
        api_id=api.id,
        payload={
            "status": status.value,
            "start": start.isoformat() if start else None,
            "end": end.isoformat() if end else None,
        },
    )


def add_scope(api: Api, actor: Actor, code: str, label: str, sensitive: bool) -> Scope:
    """A new scope for ``api``; its code is unique within the API."""
    if code in api.scope_codes():
        raise CatalogueError("Cette API a déjà une donnée avec ce code.", "code")
    position = max((s.position for s in api.scopes), default=-1) + 1
    scope = Scope(api=api, code=code, label=label, sensitive=sensitive, position=position)
    db.session.add(scope)
    db.session.flush()
    audit.record(
        EventTag.Catalogue.ScopeCreated,
        actor,
        subject=scope,
        api_id=api.id,
        payload={"code": code, "sensitive": sensitive},
    )
    return scope


def update_scope(scope: Scope, actor: Actor, label: str, sensitive: bool) -> None:
    scope.label, scope.sensitive = label, sensitive
    db.session.flush()
    audit.record(
        EventTag.Catalogue.ScopeUpdated,
        actor,
        subject=scope,
        api_id=scope.api_id,
        payload={"code": scope.code},
    )


def remove_scope(scope: Scope, actor: Actor) -> None:
    """Remove a scope from the catalogue (habilitations keep their frozen copy)."""
    api_id, code = scope.api_id, scope.code
    db.session.delete(scope)
    db.session.flush()
    audit.record(
        EventTag.Catalogue.ScopeDeleted,
        actor,
        subject_type="scopes",
        subject_id=scope.id,
        api_id=api_id,
        payload={"code": code},
    )
