"""Time to decision per API and month: median, 90th percentile, distribution, and its charts."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from datapass import charts, clock, formatting
from datapass.authorizations.models import AuthorizationRequest, RequestEvent
from datapass.authorizations.states import Event
from datapass.catalogue.models import Api
from datapass.extensions import db

if TYPE_CHECKING:
    from datapass.accounts.models import User

    pass


# Time to decision, in days: the distribution's buckets (upper bound included; None: above).
DECISION_BUCKETS = (
    (7, "t1", "en 7 jours au plus"),
    (30, "t2", "en 8 à 30 jours"),
    (60, "t3", "en 31 à 60 jours"),
    (None, "t4", "en plus de 60 jours"),
)


def decision_bucket(days: float) -> int:
    """The index in :data:`DECISION_BUCKETS` of a decision taken after ``days`` days (a
    decision after 7 days and 2 hours is "in 8 to 30 days")."""
    for index, (limit, _tone, _label) in enumerate(DECISION_BUCKETS):
        if limit is not None and days <= limit:
            return index
    return len(DECISION_BUCKETS) - 1


@dataclass
class DecisionStats:
    api_name: str
    month: str  # YYYY-MM (Paris)
    decisions: int
    median_days: float
    p90_days: float
    buckets: tuple[int, ...] = ()  # decisions per DECISION_BUCKETS


def decision_statistics(user: User) -> list[DecisionStats]:
    """Per API and per month of decision: the median and 90th percentile time (in days)
    from first submission to approval or refusal, and how many decisions fell in each of
    :data:`DECISION_BUCKETS`, for the APIs ``user`` instructs."""
    api_ids = user.instructed_api_ids() or {-1}
    rows = db.session.execute(
        select(Api.name, AuthorizationRequest.first_submitted_at, RequestEvent.created_at)
        .join(AuthorizationRequest, RequestEvent.request_id == AuthorizationRequest.id)
        .join(Api, Api.id == AuthorizationRequest.api_id)
        .where(
            AuthorizationRequest.api_id.in_(api_ids),
            RequestEvent.kind.in_([Event.APPROVE.value, Event.REFUSE.value]),
            AuthorizationRequest.first_submitted_at.is_not(None),
        )
    ).all()
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for api_name, submitted, decided in rows:
        days = (clock.as_utc(decided) - clock.as_utc(submitted)).total_seconds() / 86400
        groups[(api_name, clock.local(decided).strftime("%Y-%m"))].append(days)
    stats = []
    for (api_name, month), values in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        buckets = [0] * len(DECISION_BUCKETS)
        for value in values:
            buckets[decision_bucket(value)] += 1
        stats.append(
            DecisionStats(
                api_name,
                month,
                len(values),
                round(statistics.median(values), 1),
                round(_p90(values), 1),
                tuple(buckets),
            )
        )
    return stats


def _months_back(months: int) -> list[str]:
    """``YYYY-MM`` of this month (Paris) and the ``months - 1`` before, oldest first."""
    today = clock.today()
    year, month = today.year, today.month
    found = []
    for _ in range(months):
        found.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return found[::-1]


def decision_charts(stats: list[DecisionStats], months: int = 12) -> list[dict[str, Any]]:
    """Per API with decisions: the distribution of decision times per month over the last
    ``months`` months (a stacked bar chart, :mod:`datapass.charts`) and every month's
    figures (the table)."""
    series = [
        charts.Series(f"b{i}", "décision", "décisions", tone, label)
        for i, (_limit, tone, label) in enumerate(DECISION_BUCKETS)
    ]
    window = _months_back(months)
    by_api: dict[str, dict[str, DecisionStats]] = defaultdict(dict)
    for stat in stats:
        by_api[stat.api_name][stat.month] = stat
    result = []
    for api_name in sorted(by_api):
        per_month = by_api[api_name]
        points = []
        for month in window:
            stat = per_month.get(month)
            values = {f"b{i}": (stat.buckets[i] if stat else 0) for i in range(len(series))}
            points.append(
                charts.Point(
                    label=formatting.month_short(month),
                    title=formatting.month(month),
                    values=values,
                    attrs={"month": month, "decisions": stat.decisions if stat else 0},
                )
            )
        result.append(
            {
                "api": api_name,
                "chart": charts.bar_chart(points, series, label_every=1),
                "rows": [per_month[m] for m in sorted(per_month, reverse=True)],
                "series": series,
            }
        )
    return result


def _p90(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]
