"""What every writer of consumption stores besides a provider's events: the daily counts,
each token's last calls and its last use (the ingest, the introspection flush and the demo
write them, in the same key order, so that writers never wait on each other in a cycle)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, text, update

from datapass import clock
from datapass.audit import service as audit
from datapass.consumption.models import UsageDaily, UsageEvent, UsageRecent
from datapass.extensions import UTCDateTime, db
from datapass.tokens.models import AccessToken

RECENT_CALLS = 10  # the last calls kept per token (token page, unused-access evidence)

EVENTS = UsageEvent.__table__
DAILY = UsageDaily.__table__
RECENT = UsageRecent.__table__
RECENT_COLUMNS = tuple(column.name for column in RECENT.c)


def paris_day(moment: datetime) -> date:
    return moment.astimezone(clock.PARIS).date()


# A token's calls older than its RECENT_CALLS-th newest (none when it has fewer), for
# SQLite's DBAPI and SQLAlchemy's text() alike.
RECENT_TRIM = (
    "DELETE FROM usage_recent WHERE token_id = :token "
    "AND (occurred_at, provider_id, event_id) < (SELECT occurred_at, provider_id, event_id "
    "FROM usage_recent WHERE token_id = :token "
    "ORDER BY occurred_at DESC, provider_id DESC, event_id DESC LIMIT 1 OFFSET 9)"
)


def add_to_daily(totals: dict[tuple, list[int]]) -> None:
    """Upsert ``{(token_id, day, endpoint): [api_id, organisation_id, calls, errors,
    latency_ms_sum]}`` into the daily counts, in key order (the order every writer takes
    these rows in)."""
    if not totals:
        return
    statement = audit.dialect_insert(DAILY)
    statement = statement.on_conflict_do_update(
        index_elements=["token_id", "day", "endpoint"],
        set_={
            "calls": DAILY.c.calls + statement.excluded.calls,
            "errors": DAILY.c.errors + statement.excluded.errors,
            "latency_ms_sum": DAILY.c.latency_ms_sum + statement.excluded.latency_ms_sum,
        },
    )
    db.session.execute(
        statement,
        [
            {
                "token_id": token_id,
                "day": day,
                "endpoint": endpoint,
                "api_id": api_id,
                "organisation_id": organisation_id,
                "calls": calls,
                "errors": errors,
                "latency_ms_sum": latency,
            }
            for (token_id, day, endpoint), (api_id, organisation_id, calls, errors, latency) in (
                sorted(totals.items())
            )
        ],
    )


def remember(rows: Iterable[dict[str, Any]], use_interval: timedelta = timedelta(0)) -> None:
    """Each token's last calls (its newest events, :data:`RECENT_CALLS` kept) and last use
    (the latest reported time, never moved backwards; written only when the stored one is
    older than ``use_interval``), token by token in id order (the order every writer takes
    these rows in)."""
    by_token: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_token.setdefault(row["token_id"], []).append(row)
    if not by_token:
        return
    newest = {
        token_id: sorted(
            calls,
            key=lambda r: (r["occurred_at"], r["provider_id"], r["event_id"]),
            reverse=True,
        )[:RECENT_CALLS]
        for token_id, calls in sorted(by_token.items())
    }
    db.session.execute(
        audit.dialect_insert(RECENT).on_conflict_do_nothing(),
        [
            {column: row[column] for column in RECENT_COLUMNS}
            for calls in newest.values()
            for row in calls
        ],
    )
    db.session.execute(text(RECENT_TRIM), [{"token": token_id} for token_id in newest])
    table = AccessToken.__table__
    at = bindparam("b_at", type_=UTCDateTime())
    before = bindparam("b_before", type_=UTCDateTime())
    statement = (
        update(table)
        .where(
            table.c.id == bindparam("b_id"),
            or_(table.c.last_used_at.is_(None), table.c.last_used_at < before),
        )
        .values(last_used_at=at, last_used_ip=bindparam("b_ip"))
    )
    db.session.execute(
        statement,
        [
            {
                "b_id": token_id,
                "b_at": calls[0]["occurred_at"],
                "b_before": calls[0]["occurred_at"] - use_interval,
                "b_ip": calls[0]["caller_ip"],
            }
            for token_id, calls in newest.items()
        ],
        execution_options={"synchronize_session": False},
    )
