"""The security officer's dashboard: lists of tokens (expiring, in grace, suspended, unused,
revoked) filtered by API and organisation, a summary per API and organisation, CSV exports.
The charts' series are in :mod:`datapass.lifecycle.trends`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import selectinload

from datapass import clock, spreadsheet
from datapass.accounts.models import Organisation
from datapass.catalogue.models import Api
from datapass.extensions import db
from datapass.tokens import queries as token_queries
from datapass.tokens.models import AccessToken

DASHBOARD_LISTS = {
    "expiring-30": "Jetons qui expirent dans les 30 jours",
    "expiring-90": "Jetons qui expirent dans les 90 jours",
    "grace": "Jetons remplacés encore dans leur délai de grâce",
    "suspended": "Jetons suspendus",
    "unused": "Jetons actifs inutilisés depuis 60 jours ou plus",
    "revoked": "Révocations des 30 derniers jours",
}


@dataclass(frozen=True)
class DashboardFilters:
    api_id: int | None = None
    organisation: str = ""  # SIRET or part of the name


def organisation_matches(text: str):
    """The dashboard's organisation filter: its SIRET, or part of its name."""
    text = text.strip()
    return or_(
        Organisation.siret == text.replace(" ", ""),
        func.lower(Organisation.name).contains(text.lower()),
    )


def dashboard_query(name: str, filters: DashboardFilters):
    """The tokens of one dashboard list (a select; the page limits it, the CSV streams it)."""
    now = clock.now()
    query = select(AccessToken)
    if name in ("expiring-30", "expiring-90"):
        days = int(name.removeprefix("expiring-"))
        query = query.where(
            token_queries.active(),
            AccessToken.expires_at > now,
            AccessToken.expires_at <= now + timedelta(days=days),
        ).order_by(AccessToken.expires_at)
    elif name == "grace":
        query = query.where(token_queries.in_grace(now)).order_by(AccessToken.grace_ends_at)
    elif name == "suspended":
        query = query.where(token_queries.suspended()).order_by(AccessToken.suspended_at.desc())
    elif name == "unused":
        query = query.where(
            token_queries.active(),
            func.coalesce(AccessToken.last_used_at, AccessToken.issued_at)
            <= now - timedelta(days=60),
        ).order_by(func.coalesce(AccessToken.last_used_at, AccessToken.issued_at))
    elif name == "revoked":
        query = query.where(
            token_queries.revoked(),
            AccessToken.revoked_at >= now - timedelta(days=30),
        ).order_by(AccessToken.revoked_at.desc())
    else:
        raise KeyError(name)
    if filters.api_id:
        query = query.where(AccessToken.api_id == filters.api_id)
    if filters.organisation:
        query = query.join(Organisation, Organisation.id == AccessToken.organisation_id).where(
            organisation_matches(filters.organisation)
        )
    return query.options(selectinload(AccessToken.api), selectinload(AccessToken.organisation))


def dashboard(filters: DashboardFilters, limit: int = 50) -> dict[str, dict[str, Any]]:
    """Each list's count and its first ``limit`` tokens."""
    result = {}
    for name, title in DASHBOARD_LISTS.items():
        query = dashboard_query(name, filters)
        count = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
        rows = list(db.session.scalars(query.limit(limit)))
        result[name] = {"title": title, "count": count, "rows": rows}
    return result


def dashboard_by_api(filters: DashboardFilters) -> list[dict[str, Any]]:
    """Counts per API and organisation of the live tokens (the summary table)."""
    now = clock.now()
    query = (
        select(
            Api.name,
            Organisation.name,
            Organisation.siret,
            func.sum(
                case(
                    (
                        and_(
                            token_queries.active(),
                            AccessToken.expires_at <= now + timedelta(days=90),
                        ),
                        1,
                    ),
                    else_=0,
                )
            ),
            func.sum(case((token_queries.superseded(), 1), else_=0)),
            func.sum(case((token_queries.suspended(), 1), else_=0)),
            func.count(),
        )
        .join(Api, Api.id == AccessToken.api_id)
        .join(Organisation, Organisation.id == AccessToken.organisation_id)
        .where(token_queries.live(), AccessToken.expires_at > now)
        .group_by(Api.name, Organisation.name, Organisation.siret)
        .order_by(Api.name, Organisation.name)
        .limit(500)
    )
    if filters.api_id:
        query = query.where(AccessToken.api_id == filters.api_id)
    if filters.organisation:
        query = query.where(organisation_matches(filters.organisation))
    return [
        {
            "api": row[0],
            "organisation": row[1],
            "siret": row[2],
            "expiring": int(row[3] or 0),
            "grace": int(row[4] or 0),
            "suspended": int(row[5] or 0),
            "live": int(row[6] or 0),
        }
        for row in db.session.execute(query)
    ]


CSV_HEADER = [
    "jti",
    "statut",
    "api",
    "organisation",
    "siret",
    "delivre_le",
    "expire_le",
    "fin_de_grace",
    "derniere_utilisation",
    "derniere_adresse",
    "suspendu_le",
    "revoque_le",
    "motif",
]


def dashboard_csv(name: str, filters: DashboardFilters) -> Iterator[str]:
    """The whole list as CSV (semicolon-separated, UTF-8 with BOM for spreadsheets),
    streamed in pages."""
    query = dashboard_query(name, filters).execution_options(yield_per=500)
    rows = (
        (
            token.jti,
            token.status_enum.label,
            token.api.name,
            token.organisation.name,
            token.organisation.siret,
            token.issued_at,
            token.expires_at,
            token.grace_ends_at,
            token.last_used_at,
            token.last_used_ip,
            token.suspended_at,
            token.revoked_at,
            token.revoked_reason or token.suspended_reason,
        )
        for token in db.session.scalars(query)
    )
    return spreadsheet.csv_stream(CSV_HEADER, rows)
