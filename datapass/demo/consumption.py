"""Demonstration consumption: 90 days of calls for the tokens that have none."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from datapass import clock
from datapass.audit import service as audit
from datapass.catalogue.models import Api
from datapass.consumption import seal
from datapass.consumption.store import DAILY, EVENTS, remember
from datapass.extensions import db
from datapass.tokens.models import AccessToken


def seed_demo_consumption(days: int = 90, max_tokens: int = 5000) -> dict[str, int]:
    """Realistic consumption over the last ``days`` days for tokens that have none yet (the
    demo's, and ``--scale``'s): weekday traffic, quiet weekends, a few errors, and the last
    calls of today as events. Bulk inserts; idempotent (tokens with counts are skipped).

    Days already sealed are left alone (``sealed_days_skipped``): the demo is a writer of
    consumption like any other, under the seal's lock, so running it again after the
    scheduler has sealed days never rewrites them."""
    has_usage = select(DAILY.c.token_id).where(DAILY.c.token_id == AccessToken.id).exists()
    tokens = db.session.execute(
        select(
            AccessToken.id,
            AccessToken.api_id,
            AccessToken.organisation_id,
            Api.slug,
            Api.provider_id,
        )
        .join(Api, Api.id == AccessToken.api_id)
        .where(~has_usage)
        .order_by(AccessToken.id)
        .limit(max_tokens)
    ).all()
    if not tokens:
        return {"tokens": 0, "daily_rows": 0, "events": 0, "sealed_days_skipped": 0}
    sealed = seal.lock_for_writing()
    today = clock.today()
    now = clock.now()
    first = today - timedelta(days=days - 1)
    skipped = 0 if sealed is None or sealed < first else (min(sealed, today) - first).days + 1
    daily: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for token_id, api_id, organisation_id, slug, provider_id in tokens:
        rng = random.Random(token_id)
        base = rng.randint(30, 900)
        error_rate = rng.choice([0.002, 0.01, 0.03, 0.08])
        endpoints = [f"/api/v2/{slug}", f"/api/v2/{slug}/verification"]
        ip = f"198.51.100.{rng.randint(1, 254)}"
        for offset in range(days):
            day = today - timedelta(days=offset)
            if sealed is not None and day <= sealed:
                continue
            factor = 0.15 if day.weekday() >= 5 else 1.0
            growth = 0.6 + 0.4 * (days - offset) / days
            calls = int(base * factor * growth * rng.uniform(0.7, 1.3))
            if offset == 0:
                calls = max(int(calls * min(now.astimezone(clock.PARIS).hour, 23) / 24), 10)
            for share, endpoint in zip((0.7, 0.3), endpoints, strict=True):
                n = int(calls * share)
                if not n:
                    continue
                errors = sum(1 for _ in range(min(n, 200)) if rng.random() < error_rate) * max(
                    n // 200, 1
                )
                daily.append(
                    {
                        "token_id": token_id,
                        "day": day,
                        "endpoint": endpoint,
                        "api_id": api_id,
                        "organisation_id": organisation_id,
                        "calls": n,
                        "errors": min(errors, n),
                        "latency_ms_sum": n * rng.randint(40, 180),
                    }
                )
        for i in range(10):
            moment = now - timedelta(minutes=7 * i + rng.randint(1, 6))
            if moment.astimezone(clock.PARIS).date() != today or (
                sealed is not None and today <= sealed
            ):
                break
            events.append(
                {
                    "provider_id": provider_id,
                    "event_id": f"demo-{token_id}-{i}",
                    "token_id": token_id,
                    "api_id": api_id,
                    "organisation_id": organisation_id,
                    "occurred_at": moment,
                    "day": today,
                    "endpoint": endpoints[i % 2],
                    "status": 200 if rng.random() > error_rate else 503,
                    "latency_ms": rng.randint(30, 250),
                    "caller_ip": ip,
                }
            )
    # Key order, as every writer of these tables.
    daily.sort(key=lambda row: (row["token_id"], row["day"], row["endpoint"]))
    events.sort(key=lambda row: (row["provider_id"], row["event_id"]))
    for start in range(0, len(daily), 5000):
        db.session.execute(
            audit.dialect_insert(DAILY).on_conflict_do_nothing(), daily[start : start + 5000]
        )
    for start in range(0, len(events), 5000):
        db.session.execute(
            audit.dialect_insert(EVENTS).on_conflict_do_nothing(), events[start : start + 5000]
        )
    remember(events)
    return {
        "tokens": len(tokens),
        "daily_rows": len(daily),
        "events": len(events),
        "sealed_days_skipped": skipped,
    }
