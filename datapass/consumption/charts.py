"""What the consumption pages show: a token's consumption, some APIs' daily volume and top
consumers, the daily rows of the CSV downloads, and the calls-per-day bar chart."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select

from datapass import charts, clock, formatting
from datapass.accounts.models import Organisation
from datapass.catalogue.models import Api
from datapass.consumption.store import DAILY, RECENT, RECENT_CALLS
from datapass.extensions import db
from datapass.tokens.models import AccessToken

PERIODS = (7, 30, 90)


def _days(days: int) -> list[date]:
    today = clock.today()
    return [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


@dataclass
class Consumption:
    days: int
    series: list[dict[str, Any]]  # [{day, calls, errors}] oldest first, every day present
    endpoints: list[dict[str, Any]]  # [{endpoint, calls, errors, error_rate, latency_avg}]
    calls: int
    errors: int
    last_calls: list[dict[str, Any]]

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def peak(self) -> int:
        return max((point["calls"] for point in self.series), default=0)


def token_consumption(token: AccessToken, days: int = 30) -> Consumption:
    """A token's consumption over the last ``days`` Paris days (today included): calls and
    errors per day, per endpoint, error rate and the last 10 calls."""
    days = days if days in PERIODS else 30
    span = _days(days)
    rows = db.session.execute(
        select(
            DAILY.c.day, DAILY.c.endpoint, DAILY.c.calls, DAILY.c.errors, DAILY.c.latency_ms_sum
        ).where(DAILY.c.token_id == token.id, DAILY.c.day >= span[0])
    ).all()
    per_day = {d: [0, 0] for d in span}
    per_endpoint: dict[str, list[int]] = {}
    for day, endpoint, calls, errors, latency in rows:
        if day in per_day:
            per_day[day][0] += calls
            per_day[day][1] += errors
        entry = per_endpoint.setdefault(endpoint, [0, 0, 0])
        entry[0] += calls
        entry[1] += errors
        entry[2] += latency
    last = db.session.execute(
        select(
            RECENT.c.occurred_at,
            RECENT.c.endpoint,
            RECENT.c.status,
            RECENT.c.latency_ms,
            RECENT.c.caller_ip,
        )
        .where(RECENT.c.token_id == token.id)
        .order_by(
            RECENT.c.occurred_at.desc(), RECENT.c.provider_id.desc(), RECENT.c.event_id.desc()
        )
        .limit(RECENT_CALLS)
    ).all()
    return Consumption(
        days=days,
        series=[{"day": d, "calls": c, "errors": e} for d, (c, e) in per_day.items()],
        endpoints=[
            {
                "endpoint": endpoint,
                "calls": calls,
                "errors": errors,
                "error_rate": errors / calls if calls else 0.0,
                "latency_avg": latency / calls if calls else 0.0,
            }
            for endpoint, (calls, errors, latency) in sorted(
                per_endpoint.items(), key=lambda item: -item[1][0]
            )
        ],
        calls=sum(c for c, _ in per_day.values()),
        errors=sum(e for _, e in per_day.values()),
        last_calls=[
            {"at": at, "endpoint": ep, "status": st, "latency_ms": lat, "ip": ip}
            for at, ep, st, lat, ip in last
        ],
    )


def api_consumption(api_ids: Iterable[int], days: int = 30, top: int = 10) -> dict[str, Any]:
    """Daily volume of some APIs and their top consumers (tokens, with their organisation)."""
    api_ids = list(api_ids)
    days = days if days in PERIODS else 30
    span = _days(days)
    per_day = {d: [0, 0] for d in span}
    for day, calls, errors in db.session.execute(
        select(DAILY.c.day, func.sum(DAILY.c.calls), func.sum(DAILY.c.errors))
        .where(DAILY.c.api_id.in_(api_ids), DAILY.c.day >= span[0])
        .group_by(DAILY.c.day)
    ):
        if day in per_day:
            per_day[day] = [int(calls), int(errors)]
    calls_sum = func.sum(DAILY.c.calls).label("calls")
    consumers = db.session.execute(
        select(
            DAILY.c.token_id,
            AccessToken.jti,
            Organisation.name,
            Organisation.siret,
            Api.name,
            calls_sum,
            func.sum(DAILY.c.errors).label("errors"),
        )
        .join(AccessToken, AccessToken.id == DAILY.c.token_id)
        .join(Organisation, Organisation.id == DAILY.c.organisation_id)
        .join(Api, Api.id == DAILY.c.api_id)
        .where(DAILY.c.api_id.in_(api_ids), DAILY.c.day >= span[0])
        .group_by(
            DAILY.c.token_id, AccessToken.jti, Organisation.name, Organisation.siret, Api.name
        )
        .order_by(calls_sum.desc(), DAILY.c.token_id)
        .limit(top)
    ).all()
    series = [{"day": d, "calls": c, "errors": e} for d, (c, e) in per_day.items()]
    return {
        "days": days,
        "series": series,
        "calls": sum(p["calls"] for p in series),
        "errors": sum(p["errors"] for p in series),
        "peak": max((p["calls"] for p in series), default=0),
        "consumers": [
            {
                "token_id": token_id,
                "jti": jti,
                "organisation": org_name,
                "siret": siret,
                "api": api_name,
                "calls": int(calls),
                "errors": int(errors),
            }
            for token_id, jti, org_name, siret, api_name, calls, errors in consumers
        ],
    }


def daily_rows(
    *, token_id: int | None = None, api_ids: Iterable[int] | None = None, days: int = 90
) -> Iterator[tuple]:
    """Daily counts (day, token id, endpoint, calls, errors, average latency) for a CSV."""
    span = _days(days if days in PERIODS else 90)
    query = select(
        DAILY.c.day,
        DAILY.c.token_id,
        DAILY.c.endpoint,
        DAILY.c.calls,
        DAILY.c.errors,
        DAILY.c.latency_ms_sum,
    ).where(DAILY.c.day >= span[0])
    if token_id is not None:
        query = query.where(DAILY.c.token_id == token_id)
    if api_ids is not None:
        query = query.where(DAILY.c.api_id.in_(list(api_ids)))
    for day, tid, endpoint, calls, errors, latency in db.session.execute(
        query.order_by(DAILY.c.day, DAILY.c.token_id, DAILY.c.endpoint)
    ):
        yield day, tid, endpoint, calls, errors, round(latency / calls, 1) if calls else 0


CALLS_SERIES = (
    charts.Series("calls", "appel", "appels", "calls", "appels"),
    charts.Series("errors", "erreur", "erreurs", "errors", "dont erreurs (statut HTTP ≥ 400)"),
)


def _consumption_labels(n: int) -> int:
    return 1 if n <= 7 else 5 if n <= 31 else 15


def bar_chart(series: list[dict[str, Any]], width: int = 720, height: int = 200) -> dict[str, Any]:
    """The calls per day as a bar chart (:mod:`datapass.charts`), the errors drawn inside
    each bar."""
    points = [
        charts.Point(
            label=f"{p['day'].day:02d}/{p['day'].month:02d}",
            title=formatting.date(p["day"]),
            values={"calls": p["calls"], "errors": p["errors"]},
            attrs={"day": p["day"].isoformat(), "calls": p["calls"], "errors": p["errors"]},
        )
        for p in series
    ]
    return charts.bar_chart(
        points,
        CALLS_SERIES,
        mode="overlay",
        label_every=_consumption_labels,
        width=width,
        height=height,
        scale_to_peak=True,
    )
