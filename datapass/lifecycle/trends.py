"""The security dashboard's series: tokens expiring each week of the next six months, and
unused access by stage of the unused-access policy. Each is one aggregate query, whatever
the number of tokens (the charts and their tables are drawn from them)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select

from datapass import charts, clock, formatting
from datapass.accounts.models import Organisation
from datapass.extensions import db
from datapass.lifecycle.dashboard import DashboardFilters, organisation_matches
from datapass.lifecycle.days import day_start
from datapass.lifecycle.models import LifecycleAct
from datapass.tokens import queries as token_queries
from datapass.tokens.models import AccessToken

WEEKS = 26  # six months
REVOKED_WINDOW_DAYS = 90

STAGES = (
    ("never_used", "Jamais utilisés, avertis"),
    ("warned", "Inutilisés, avertis"),
    ("suspended", "Suspendus faute d'utilisation"),
    ("revoked", f"Révoqués faute d'utilisation ({REVOKED_WINDOW_DAYS} derniers jours)"),
)


def _filtered(query, filters: DashboardFilters):
    if filters.api_id:
        query = query.where(AccessToken.api_id == filters.api_id)
    if filters.organisation:
        query = query.join(Organisation, Organisation.id == AccessToken.organisation_id).where(
            organisation_matches(filters.organisation)
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
        token_queries.active(),
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
    """Where a token's idleness starts (as :func:`plan.unused_since`): the latest of its
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


# The acts of the unused-access policy, by stage (the rank orders them: a token at several
# stages is counted at the furthest).
STAGE_ACTS = {
    "never_used": ("never_used", 1),
    "warned": ("unused_warning", 2),
    "suspended": ("unused_suspend", 3),
    "revoked": ("unused_revoke", 4),
}


def unused_by_stage(filters: DashboardFilters) -> list[dict[str, Any]]:
    """How many tokens stand at each stage of the unused-access policy, from what the
    policy did (its acts): warned (never used, or idle) and not used since, suspended by it
    and still suspended, revoked by it in the last 90 days. ``[{stage, label, count}]``.

    Driven by the acts (an index on kind and moment), not by the tokens: its cost follows
    the tokens the policy touched, not the size of the table."""
    now = clock.now()
    rank = {kind: number for kind, number in STAGE_ACTS.values()}
    act_rank = case(rank, value=LifecycleAct.kind, else_=0)
    current = or_(
        and_(
            LifecycleAct.kind.in_(["never_used", "unused_warning"]),
            token_queries.active(),
            LifecycleAct.at >= _idle_since(),  # not used since the warning
        ),
        and_(
            LifecycleAct.kind == "unused_suspend",
            token_queries.suspended(),
            LifecycleAct.at >= func.coalesce(AccessToken.reactivated_at, AccessToken.issued_at),
        ),
        and_(
            LifecycleAct.kind == "unused_revoke",
            token_queries.revoked(),
            LifecycleAct.at >= now - timedelta(days=REVOKED_WINDOW_DAYS),
        ),
    )
    per_token = (
        select(LifecycleAct.token_id, func.max(act_rank).label("rank"))
        .join(AccessToken, AccessToken.id == LifecycleAct.token_id)
        .where(
            LifecycleAct.kind.in_(list(rank)),
            LifecycleAct.outcome == "done",
            current,
        )
        .group_by(LifecycleAct.token_id)
    )
    per_token = _filtered(per_token, filters).subquery()
    counts = dict(
        db.session.execute(select(per_token.c.rank, func.count()).group_by(per_token.c.rank)).all()
    )
    return [
        {"stage": name, "label": label, "count": int(counts.get(STAGE_ACTS[name][1], 0))}
        for name, label in STAGES
    ]


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
