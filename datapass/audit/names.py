"""The names people read for what audit events point at.

An event stores its subject as a table name and an id (``access_tokens``, ``28``), and the
organisation and API as ids: the chain hashes those, and they never change. Pages show
names instead (« Jeton n° 28 — Commune de Dunkerque, API Particulier — Quotient familial »),
resolved for a whole page in one query (a ``UNION ALL`` over the tables the page refers
to), never one query per row.

The tables are reached through the metadata by name: the audit domain sits below those
that own them and imports none of their models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import String, Table, case, cast, func, literal, select, union_all

from datapass.extensions import db

SEAL_SUBJECT = "usage_day"  # as in consumption (a sealed day: its ISO date is the id)

# What each kind of subject is called, in French.
KINDS = {
    "access_tokens": "Jeton",
    "authorization_requests": "Demande",
    "habilitations": "Habilitation",
    "users": "Utilisateur",
    "organisations": "Organisation",
    "memberships": "Rattachement",
    "role_grants": "Rôle",
    "apis": "API",
    "providers": "Fournisseur",
    "scopes": "Donnée",
    "machine_clients": "Client machine",
    "signing_keys": "Clé de signature",
    "webhook_endpoints": "Webhook",
    "message_templates": "Modèle de message",
    "renewals": "Renouvellement",
    "audit_exports": "Export d'audit",
    "documents": "Pièce jointe",
    "token_links": "Lien vers le jeton",
    SEAL_SUBJECT: "Journée de consommation",
}


def _t(name: str) -> Table:
    return db.metadata.tables[name]


def _text(column) -> Any:
    return func.coalesce(cast(column, String), "")


def _person(users: Table):
    return case(
        (func.coalesce(users.c.full_name, "") != "", users.c.full_name), else_=users.c.email
    )


def _row(kind: str, ident, name) -> tuple:
    """The three columns every part of the union selects: kind, id (text), name (text)."""
    return (
        literal(kind, String).label("kind"),
        cast(ident, String).label("ident"),
        cast(name, String).label("name"),
    )


def _tokens(ids: list[int]):
    tokens, orgs, apis = _t("access_tokens"), _t("organisations"), _t("apis")
    return (
        select(*_row("access_tokens", tokens.c.id, orgs.c.name + literal(", ") + apis.c.name))
        .join(orgs, orgs.c.id == tokens.c.organisation_id)
        .join(apis, apis.c.id == tokens.c.api_id)
        .where(tokens.c.id.in_(ids))
    )


def _requests(ids: list[int]):
    requests = _t("authorization_requests")
    return select(*_row("authorization_requests", requests.c.id, _text(requests.c.title))).where(
        requests.c.id.in_(ids)
    )


def _habilitations(ids: list[int]):
    habilitations, requests = _t("habilitations"), _t("authorization_requests")
    return (
        select(*_row("habilitations", habilitations.c.id, _text(requests.c.title)))
        .join(requests, requests.c.id == habilitations.c.request_id)
        .where(habilitations.c.id.in_(ids))
    )


def _users(ids: list[int]):
    users = _t("users")
    return select(*_row("users", users.c.id, _person(users))).where(users.c.id.in_(ids))


def _memberships(ids: list[int]):
    memberships, users, orgs = _t("memberships"), _t("users"), _t("organisations")
    return (
        select(
            *_row("memberships", memberships.c.id, _person(users) + literal(" à ") + orgs.c.name)
        )
        .join(users, users.c.id == memberships.c.user_id)
        .join(orgs, orgs.c.id == memberships.c.organisation_id)
        .where(memberships.c.id.in_(ids))
    )


def _renewals(ids: list[int]):
    renewals, orgs, apis = _t("renewals"), _t("organisations"), _t("apis")
    return (
        select(*_row("renewals", renewals.c.id, orgs.c.name + literal(", ") + apis.c.name))
        .join(orgs, orgs.c.id == renewals.c.organisation_id)
        .join(apis, apis.c.id == renewals.c.api_id)
        .where(renewals.c.id.in_(ids))
    )


def _column(table: str, column: str) -> Callable[[list[int]], Any]:
    def query(ids: list[int]):
        t = _t(table)
        return select(*_row(table, t.c.id, _text(t.c[column]))).where(t.c.id.in_(ids))

    return query


QUERIES: dict[str, Callable[[list[int]], Any]] = {
    "access_tokens": _tokens,
    "authorization_requests": _requests,
    "habilitations": _habilitations,
    "users": _users,
    "memberships": _memberships,
    "renewals": _renewals,
    "organisations": _column("organisations", "name"),
    "apis": _column("apis", "name"),
    "providers": _column("providers", "name"),
    "scopes": _column("scopes", "label"),
    "machine_clients": _column("machine_clients", "name"),
    "signing_keys": _column("signing_keys", "kid"),
    "webhook_endpoints": _column("webhook_endpoints", "url"),
    "message_templates": _column("message_templates", "title"),
    "documents": _column("documents", "filename"),
}

# Ids people know these by (« DP-000012 »), as the models write them.
REFERENCES = {
    "authorization_requests": "DP-{:06d}",
    "habilitations": "HAB-{:06d}",
}


def _french_day(iso: str) -> str:
    try:
        day = date.fromisoformat(iso)
    except ValueError:
        return iso
    return f"{day.day:02d}/{day.month:02d}/{day.year}"


@dataclass
class Names:
    """Names of the subjects, organisations and APIs of some events (see :func:`resolve`)."""

    found: dict[tuple[str, str], str] = field(default_factory=dict)

    def name(self, kind: str, ident: Any) -> str | None:
        if ident is None:
            return None
        return self.found.get((kind, str(ident)))

    def organisation(self, ident: Any) -> str:
        """The organisation's name (its id if it no longer exists), ``—`` for none."""
        if ident is None:
            return "—"
        return self.name("organisations", ident) or f"Organisation n° {ident} (supprimée)"

    def api(self, ident: Any) -> str:
        if ident is None:
            return "—"
        return self.name("apis", ident) or f"API n° {ident} (supprimée)"

    @staticmethod
    def actor(event) -> str:
        """Who acted, in words: the person's address, « Client machine Passerelle »,
        « Datapass (tâche lifecycle_sweep) », « Anonyme »."""
        label = event.actor_label
        if event.actor_type == "user":
            return label or f"Personne n° {event.actor_id}"
        if event.actor_type == "machine":
            return f"Client machine {label or event.actor_id}"
        if event.actor_type == "system":
            return f"Datapass (tâche {label})" if label else "Datapass (tâche automatique)"
        if event.actor_type == "anonymous":
            return f"Anonyme ({label})" if label else "Anonyme"
        return label or event.actor_type or "—"

    def subject(self, event) -> str:
        """« Jeton n° 28 — Commune de Dunkerque, API Entreprise », « Demande DP-000012 —
        Cantine », « Journée de consommation du 27/11/2026 »; ``—`` for none."""
        kind, ident = event.subject_type, event.subject_id
        if not kind:
            return "—"
        label = KINDS.get(kind, kind)
        if kind == SEAL_SUBJECT:
            return f"{label} du {_french_day(ident or '')}"
        reference = REFERENCES.get(kind)
        if reference and ident and str(ident).isdigit():
            head = f"{label} {reference.format(int(ident))}"
        else:
            head = f"{label} n° {ident}" if ident is not None else label
        name = self.name(kind, ident)
        if kind in QUERIES and ident is not None and name is None:
            return f"{head} (supprimé)"
        return f"{head} — {name}" if name else head


def _ids(values: Iterable[Any]) -> list[int]:
    found = set()
    for value in values:
        if value is None:
            continue
        text = str(value)
        if text.isdigit() and len(text) < 19:
            found.add(int(text))
    return sorted(found)


def resolve(
    events: Iterable[Any] = (),
    *,
    organisation_ids: Iterable[Any] = (),
    api_ids: Iterable[Any] = (),
) -> Names:
    """The names of every subject, organisation and API the ``events`` (and the extra ids)
    refer to, in one query."""
    events = list(events)
    wanted: dict[str, list[Any]] = {}
    for event in events:
        if event.subject_type in QUERIES:
            wanted.setdefault(event.subject_type, []).append(event.subject_id)
    wanted.setdefault("organisations", []).extend(
        [e.organisation_id for e in events] + list(organisation_ids)
    )
    wanted.setdefault("apis", []).extend([e.api_id for e in events] + list(api_ids))
    parts = []
    for kind, values in wanted.items():
        ids = _ids(values)
        if not ids:
            continue
        parts.append(QUERIES[kind](ids))
    if not parts:
        return Names()
    query = parts[0] if len(parts) == 1 else union_all(*parts)
    rows = db.session.execute(query).all()
    return Names({(kind, ident): name for kind, ident, name in rows if name})
