"""Introspection calls counted as consumption: the flush of the tokens domain's use buffer.

Tokens notes each introspection in its in-process buffer (:mod:`datapass.tokens.uses`) and
never imports this domain; the flush PULLS the buffer (take, write, give back on failure),
run by this process's background flusher (:mod:`datapass.consumption.flusher`), or inline
when tokens signals that the buffer is due (``USAGE_FLUSH_SECONDS = 0``).

Written for speed (a hot path, moved as it was): a flush costs per token, not per call.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import or_, select

from datapass import clock
from datapass.catalogue.models import Api
from datapass.consumption import seal
from datapass.consumption.store import RECENT_CALLS, add_to_daily, paris_day, remember
from datapass.extensions import db, retryable
from datapass.tokens import uses
from datapass.tokens.models import AccessToken

INTROSPECT_ENDPOINT = "introspect"


def record_introspection_uses(
    rows: Iterable[dict[str, Any]], use_interval: timedelta = timedelta(0)
) -> int:
    """Count introspection calls as consumption (called by the tokens domain when it flushes
    its use buffer). Each row: ``token_id`` or ``jti`` or ``digest``, ``at`` (aware),
    ``ip``, optional ``endpoint`` (default ``"introspect"``), ``status`` (default 200) and
    ``calls`` (default 1: a row of several calls of that day counts in the daily counts,
    not among the last calls). Uses of unknown tokens are skipped; uses of a sealed day are
    refused and counted in :data:`REFUSED_LATE` (``"introspect"``). A token's last use is
    written when the stored one is older than ``use_interval``. Returns how many were
    counted.

    Datapass saw these calls itself, so there is no provider's event to keep: they go to the
    daily counts (sealed with the day), the token's last calls and its last use, not one
    ``usage_events`` row each — introspection is the hot path, and a busy token is
    introspected thousands of times a minute."""
    rows = list(rows)
    if not rows:
        return 0
    table = AccessToken.__table__
    ids = {r["token_id"] for r in rows if r.get("token_id") is not None}
    jtis = {r["jti"] for r in rows if r.get("jti") is not None and r.get("token_id") is None}
    digests = {
        r["digest"]
        for r in rows
        if r.get("digest") is not None and r.get("token_id") is None and r.get("jti") is None
    }
    query = select(
        table.c.id,
        table.c.jti,
        table.c.digest,
        table.c.api_id,
        table.c.organisation_id,
        Api.provider_id,
    ).join(Api, Api.id == table.c.api_id)
    conditions = []
    if ids:
        conditions.append(table.c.id.in_(ids))
    if jtis:
        conditions.append(table.c.jti.in_(jtis))
    if digests:
        conditions.append(table.c.digest.in_(digests))
    if not conditions:
        return 0
    sealed = seal.lock_for_writing()  # before reading or writing any row the seal reads
    found_by_id, found_by_jti, found_by_digest = {}, {}, {}
    for token_id, jti, digest, api_id, organisation_id, provider_id in db.session.execute(
        query.where(or_(*conditions))
    ):
        info = (token_id, api_id, organisation_id, provider_id)
        found_by_id[token_id], found_by_jti[jti], found_by_digest[digest] = info, info, info
    # Summed per token, day and endpoint as they are read; only each token's newest calls
    # become rows (with an id) for its last calls: a flush costs per token, not per call.
    totals: dict[tuple, list[int]] = {}
    newest: dict[int, list[tuple]] = {}
    days: dict[tuple, date] = {}
    counted = late = 0
    for row in rows:
        info = (
            found_by_id.get(row.get("token_id"))
            or found_by_jti.get(row.get("jti"))
            or found_by_digest.get(row.get("digest"))
        )
        if info is None:
            continue
        at = row["at"].astimezone(UTC)
        hour = (at.year, at.month, at.day, at.hour)  # Paris offsets change on the hour
        day = days.get(hour)
        if day is None:
            day = days[hour] = paris_day(at)
        calls = row.get("calls", 1)
        if sealed is not None and day <= sealed:
            late += calls
            continue
        endpoint = row.get("endpoint") or INTROSPECT_ENDPOINT
        status = int(row.get("status") or 200)
        latency = int(row.get("latency_ms") or 0)
        key = (info[0], day, endpoint)
        entry = totals.get(key)
        if entry is None:
            entry = totals[key] = [info[1], info[2], 0, 0, 0]
        entry[2] += calls
        entry[3] += (status >= 400) * calls
        entry[4] += latency * calls
        if calls == 1:
            newest.setdefault(info[0], []).append((at, info, day, endpoint, status, latency, row))
        counted += calls
    seal.note_refused_late("introspect", late)
    add_to_daily(totals)
    remember(
        (
            {
                "provider_id": info[3],
                "event_id": f"introspect-{uuid.uuid4().hex}",  # its key among the last calls
                "token_id": info[0],
                "api_id": info[1],
                "organisation_id": info[2],
                "occurred_at": at,
                "day": day,
                "endpoint": endpoint,
                "status": status,
                "latency_ms": latency,
                "caller_ip": row.get("ip"),
            }
            for calls in newest.values()
            for at, info, day, endpoint, status, latency, row in heapq.nlargest(
                RECENT_CALLS, calls, key=lambda call: call[0]
            )
        ),
        use_interval,
    )
    return counted


# --- the use buffer of tokens, pulled and written ---------------------------------------------


def _write_calls(calls: list[tuple]) -> None:
    interval = timedelta(seconds=current_app.config["TOKEN_USE_FLUSH_SECONDS"])
    record_introspection_uses(
        (
            {"digest": call[0], "at": call[1], "ip": call[2]}
            if len(call) == 3
            else {"digest": call[0], "at": call[1], "ip": None, "calls": call[3]}
            for call in calls
        ),
        use_interval=interval,
    )
    uses.mark_written(calls)


def flush_usage(at: datetime | None = None) -> int:
    """Write the buffered calls as consumption in the session (flushes, never commits: the
    caller commits). If writing fails, the calls go back to the buffer. Returns how many
    calls were written."""
    calls = uses.take(at or clock.now())
    if not calls:
        return 0
    try:
        _write_calls(calls)
    except BaseException:
        uses.give_back(calls, RECENT_CALLS)
        raise
    return uses.size(calls)


def flush_usage_committed(attempts: int = 3) -> int:
    """Write the buffered calls in a transaction of their own and commit it, redone on a
    deadlock or a serialization failure; on failure (commit included) the calls go back to
    the buffer and the error propagates. What the background flusher runs."""
    calls = uses.take(clock.now())
    if not calls:
        return 0
    try:
        retryable(lambda: _write_calls(calls), attempts=attempts)
    except BaseException:
        uses.give_back(calls, RECENT_CALLS)
        raise
    return uses.size(calls)
