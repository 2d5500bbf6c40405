"""Searching the audit log: the security officer's filters and cursor pagination.

A token is searched by its SHA-256 digest; a pasted token is hashed at once
(:func:`token_digest_of`) and only the digest travels further (URL, export manifest, logs).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, or_, select

from datapass import clock, formatting, vault
from datapass.audit import names as audit_names
from datapass.audit.models import AuditEvent
from datapass.extensions import db

PAGE_SIZE = 50
HEX64 = re.compile(r"^[0-9a-f]{64}$")
TAG_FILTER = re.compile(r"^[a-z_:]{1,80}\*?$")
SIRET = re.compile(r"^\d{14}$")


def token_digest_of(value: str) -> str:
    """The digest to search for: a 64-hex digest as is, otherwise the SHA-256 of the pasted
    token (surrounding spaces and a ``Bearer`` prefix removed). The token is not kept."""
    value = value.strip()
    if value.lower().startswith("bearer "):
        value = value[7:].strip()
    if HEX64.match(value.lower()):
        return value.lower()
    return vault.sha256_hex(value)


@dataclass(frozen=True)
class AuditFilter:
    start: date | None = None
    end: date | None = None
    actor: str | None = None
    organisation_id: int | None = None
    api_id: int | None = None
    token_digest: str | None = None
    tag: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The filter as stored with an export and written in its manifest."""
        return {
            key: (value.isoformat() if isinstance(value, date) else value)
            for key, value in asdict(self).items()
            if value not in (None, "")
        }

    def query_args(self) -> dict[str, Any]:
        return {
            "debut": self.start.isoformat() if self.start else None,
            "fin": self.end.isoformat() if self.end else None,
            "acteur": self.actor,
            "organisation": self.organisation_id,
            "api": self.api_id,
            "jeton": self.token_digest,
            "etiquette": self.tag,
        }

    @property
    def empty(self) -> bool:
        return not self.as_dict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditFilter:
        return cls(
            start=date.fromisoformat(data["start"]) if data.get("start") else None,
            end=date.fromisoformat(data["end"]) if data.get("end") else None,
            actor=data.get("actor"),
            organisation_id=data.get("organisation_id"),
            api_id=data.get("api_id"),
            token_digest=data.get("token_digest"),
            tag=data.get("tag"),
        )


def parse_filter(args) -> tuple[AuditFilter, dict[str, str]]:
    """The filter from the console's query string, and French errors by field."""
    errors: dict[str, str] = {}

    def day(name: str) -> date | None:
        value = (args.get(name) or "").strip()
        if not value:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            errors[name] = "Date invalide : utilisez le format AAAA-MM-JJ."
            return None

    start, end = day("debut"), day("fin")
    if start and end and end < start:
        errors["fin"] = "La fin de la période précède son début."
    actor = (args.get("acteur") or "").strip() or None
    if actor and len(actor) > 320:
        errors["acteur"] = "320 caractères au plus."
    organisation_id = None
    organisation = (args.get("organisation") or "").strip()
    if organisation:
        if SIRET.match(organisation):
            # Through the metadata by name: audit imports no domain above it.
            organisations = db.metadata.tables["organisations"]
            organisation_id = db.session.scalar(
                select(organisations.c.id).where(organisations.c.siret == organisation)
            )
            if organisation_id is None:
                errors["organisation"] = "Aucune organisation n'a ce SIRET."
        elif organisation.isascii() and organisation.isdigit() and len(organisation) < 10:
            organisation_id = int(organisation)
        else:
            errors["organisation"] = "Indiquez un SIRET (14 chiffres) ou un identifiant."
    api_id = None
    api = (args.get("api") or "").strip()
    if api:
        if api.isascii() and api.isdigit() and len(api) < 10:
            api_id = int(api)
        else:
            errors["api"] = "API inconnue."
    token_digest = None
    token = (args.get("jeton") or "").strip().lower()
    if token:
        if HEX64.match(token):
            token_digest = token
        else:
            errors["jeton"] = (
                "Empreinte SHA-256 attendue (64 caractères hexadécimaux) ; pour un jeton, "
                "utilisez le champ « Coller un jeton »."
            )
    tag = (args.get("etiquette") or "").strip().lower() or None
    if tag and not TAG_FILTER.match(tag):
        errors["etiquette"] = "Étiquette du type domaine:objet:action (préfixe suivi de * accepté)."
    if errors:
        return AuditFilter(), errors
    return AuditFilter(start, end, actor, organisation_id, api_id, token_digest, tag), errors


def _paris_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=clock.PARIS)


def apply(query: Select, flt: AuditFilter) -> Select:
    """``query`` restricted to the events the filter selects."""
    if flt.start:
        query = query.where(AuditEvent.occurred_at >= _paris_midnight(flt.start))
    if flt.end:
        query = query.where(AuditEvent.occurred_at < _paris_midnight(flt.end + timedelta(days=1)))
    if flt.actor:
        query = query.where(
            or_(
                AuditEvent.actor_id == flt.actor,
                AuditEvent.actor_label.in_({flt.actor, flt.actor.lower()}),
            )
        )
    if flt.organisation_id is not None:
        query = query.where(AuditEvent.organisation_id == flt.organisation_id)
    if flt.api_id is not None:
        query = query.where(AuditEvent.api_id == flt.api_id)
    if flt.token_digest:
        query = query.where(AuditEvent.token_digest == flt.token_digest)
    if flt.tag:
        if flt.tag.endswith("*"):
            prefix = flt.tag[:-1].replace("_", r"\_")
            query = query.where(AuditEvent.tag.like(prefix + "%", escape="\\"))
        else:
            query = query.where(AuditEvent.tag == flt.tag)
    return query


@dataclass
class Page:
    events: list[AuditEvent]
    next_before: int | None  # cursor of the next (older) page


def search(flt: AuditFilter, before: int | None = None, size: int = PAGE_SIZE) -> Page:
    """One page of matching events, newest first, after the ``before`` cursor (a seq)."""
    query = apply(select(AuditEvent), flt).order_by(AuditEvent.seq.desc()).limit(size + 1)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    events = list(db.session.scalars(query))
    more = len(events) > size
    events = events[:size]
    return Page(events, events[-1].seq if more and events else None)


def get_event(seq: int) -> AuditEvent | None:
    return db.session.get(AuditEvent, seq)


CRITERIA_LABELS = {
    "start": "Du",
    "end": "Au",
    "actor": "Acteur",
    "organisation_id": "Organisation",
    "api_id": "API",
    "token_digest": "Empreinte du jeton",
    "tag": "Étiquette",
}


def criteria(filters: dict[str, Any]) -> list[tuple[str, str]]:
    """A stored filter (an export's) as people read it: (« Organisation », « Commune de
    Dunkerque ») rather than ``organisation_id = 1``; names resolved in one query."""
    flt = AuditFilter.from_dict(filters)
    found = audit_names.resolve(
        organisation_ids=[flt.organisation_id] if flt.organisation_id is not None else [],
        api_ids=[flt.api_id] if flt.api_id is not None else [],
    )
    shown = {
        "start": formatting.date(flt.start) if flt.start else None,
        "end": formatting.date(flt.end) if flt.end else None,
        "actor": flt.actor,
        "organisation_id": (
            found.organisation(flt.organisation_id) if flt.organisation_id is not None else None
        ),
        "api_id": found.api(flt.api_id) if flt.api_id is not None else None,
        "token_digest": flt.token_digest,
        "tag": flt.tag,
    }
    return [(CRITERIA_LABELS[key], value) for key, value in shown.items() if value]
