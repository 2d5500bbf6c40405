"""The security dashboard's series: tokens expiring each week of the next six months, and
unused access by stage of the unused-access policy. Each is one aggregate query, whatever
the number of tokens (the charts and their tables are drawn from them)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, case, false, func, select

from datapass import charts, clock, formatting
from datapass.extensions import db
from datapass.lifecycle.models import LifecycleAct
from datapass.lifecycle.service import DashboardFilters, _organisation_matches, day_start
from datapass.tokens.models import AccessToken
from datapass.tokens.states import TokenStatus

WEEKS = 26  # six months
REVOKED_WINDOW_DAYS = 90

STAGES = (
    ("never_used", "Jamais utilisés, avertis"),
    ("warned", "Inutilisés, avertis"),
    ("suspended", "Suspendus faute d'utilisation"),
    ("revoked", f"Révoqués faute d'utilisation ({REVOKED_WINDOW_DAYS} derniers jours)"),
)


def _filtered(query, filters: DashboardFilters):
    from datapass.accounts.models import Organisation

    if filters.api_id:
        query = query.where(AccessToken.api_id == filters.api_id)
    if filters.organisation:
        query = query.join(Organisation, Organisation.id == AccessToken.organisation_id).where(
            _organisation_matches(filters.organisation)
        )
    return query


def week_starts(weeks: int = WEEKS, today: date | None = None) -> list[date]:
    """The Mondays (Paris) of this week and the ``weeks - 1`` following."""
    today = today or clock.today()
    monday = today - timedelta(days=today.weekday())
    return [monday + timedelta(weeks=i) for i in range(weeks)]


def expiries_per_week(filters: DashboardFilters, weeks: int = WEEKS) -> list[dict[str, Any]]:
    """Active tokens expiring each week (Monday 00:00 Paris to the next), this week
    included, for ``weeks`` weeks: ``[{week, end, count}]``. Already expired tokens of this
    week's past days are not counted (they no longer expire)."""
    mondays = week_starts(weeks)
    bounds = [day_start(d) for d in mondays] + [day_start(mondays[-1] + timedelta(weeks=1))]
    now = clock.now()
    expires = AccessToken.expires_at
    columns = [
        func.sum(case((and_(expires >= low, expires < high), 1), else_=0))
        for low, high in zip(bounds, bounds[1:], strict=False)
    ]
    query = select(*columns).where(
        AccessToken.status == TokenStatus.ACTIVE,
        expires > now,
        expires >= bounds[0],
        expires < bounds[-1],
    )
    row = db.session.execute(_filtered(query, filters)).one()
    return [
        {"week": monday, "end": monday + timedelta(days=6), "count": int(count or 0)}
        for monday, count in zip(mondays, row, strict=True)
    ]


def _idle_since():
    """Where a token's idleness starts (as :func:`service.unused_since`): the latest of its
    issuance, last use and reactivation."""
    issued = AccessToken.issued_at
    parts = (
        issued,
        func.coalesce(AccessToken.last_used_at, issued),
        func.coalesce(AccessToken.reactivated_at, issued),
    )
    if db.session.get_bind().dialect.name == "sqlite":
        return func.max(*parts)  # SQLite's scalar max() of several arguments
    return func.greatest(*parts)


def _cutoffs(now) -> tuple[dict[int, Any], dict[int, Any]]:
    """API id → the moment before which a token has crossed the API's first warning for a
    token never used, and its warning for an idle one (one query; APIs where a step is off
    are left out of its map)."""
    from datapass.catalogue.models import Api

    never_used, idle = {}, {}
    for api_id, never_days, warn_days in db.session.execute(
        select(Api.id, Api.unused_never_used_warning_days, Api.unused_warning_days)
    ):
        if never_days and int(never_days) > 0:
            never_used[api_id] = now - timedelta(days=int(never_days))
        if warn_days and int(warn_days) > 0:
            idle[api_id] = now - timedelta(days=int(warn_days))
    return never_used, idle


def unused_by_stage(filters: DashboardFilters) -> list[dict[str, Any]]:
    """How many tokens stand at each stage of the unused-access policy, by each API's own
    thresholds: active and never used past the first warning, active and idle past the
    warning, suspended by the policy, revoked by it lately. ``[{stage, label, count}]``."""
    now = clock.now()
    idle = _idle_since()
    never_cut, warn_cut = _cutoffs(now)
    active = AccessToken.status == TokenStatus.ACTIVE
    warned = idle <= case(warn_cut, value=AccessToken.api_id, else_=None) if warn_cut else false()
    never_used = (
        and_(
            AccessToken.last_used_at.is_(None),
            AccessToken.reactivated_at.is_(None),
            AccessToken.issued_at <= case(never_cut, value=AccessToken.api_id, else_=None),
        )
        if never_cut
        else false()
    )

    def by_policy(kind: str):
        return AccessToken.id.in_(
            select(LifecycleAct.token_id).where(
                LifecycleAct.kind == kind, LifecycleAct.outcome == "done"
            )
        )

    stage = case(
        (and_(active, warned), "warned"),
        (and_(active, never_used), "never_used"),
        (
            and_(AccessToken.status == TokenStatus.SUSPENDED, by_policy("unused_suspend")),
            "suspended",
        ),
        (
            and_(
                AccessToken.status == TokenStatus.REVOKED,
                AccessToken.revoked_at >= now - timedelta(days=REVOKED_WINDOW_DAYS),
                by_policy("unused_revoke"),
            ),
            "revoked",
        ),
        else_=None,
    ).label("stage")
    query = (
        select(stage, func.count())
        .where(
            AccessToken.status.in_(
                [TokenStatus.ACTIVE, TokenStatus.SUSPENDED, TokenStatus.REVOKED]
            ),
            AccessToken.expires_at > now - timedelta(days=REVOKED_WINDOW_DAYS),
        )
        .group_by(stage)
    )
    counts = {name: int(n) for name, n in db.session.execute(_filtered(query, filters)) if name}
    return [{"stage": name, "label": label, "count": counts.get(name, 0)} for name, label in STAGES]


EXPIRY_SERIES = (charts.Series("count", "jeton", "jetons", "calls", "jetons qui expirent"),)
STAGE_SERIES = (charts.Series("count", "jeton", "jetons", "t2", "jetons"),)


def expiries_chart(weeks: list[dict[str, Any]]) -> dict[str, Any]:
    points = [
        charts.Point(
            label=f"{w['week'].day:02d}/{w['week'].month:02d}",
            title=f"Semaine du {formatting.date(w['week'])} au {formatting.date(w['end'])}",
            values={"count": w["count"]},
            attrs={"week": w["week"].isoformat(), "count": w["count"]},
        )
        for w in weeks
    ]
    return charts.bar_chart(points, EXPIRY_SERIES, label_every=4)


def stages_chart(stages: list[dict[str, Any]]) -> dict[str, Any]:
    short = {
        "never_used": "Jamais utilisés",
        "warned": "Avertis",
        "suspended": "Suspendus",
        "revoked": "Révoqués",
    }
    points = [
        charts.Point(
            label=short[s["stage"]],
            title=s["label"],
            values={"count": s["count"]},
            attrs={"stage": s["stage"], "count": s["count"]},
        )
        for s in stages
    ]
    return charts.bar_chart(points, STAGE_SERIES, label_every=1, height=200)
