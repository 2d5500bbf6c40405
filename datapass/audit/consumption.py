"""API consumption: providers' usage reports, daily counts, the daily seal, consumption views.

A provider's machine client reports calls in batches (``POST /api/v1/usage``); introspections
count too (:func:`record_introspection_uses`, in the counts and last calls only). Each
accepted event is kept for the retention period (12 months by default) and added to
per-token, per-day, per-endpoint counts (5 years).
Each finished day is then sealed into the audit chain (counts and digests of its events and
counts), so consumption history cannot be rewritten unnoticed; late events for a sealed day
are refused and counted as refused (:data:`REFUSED_LATE`). Whoever writes consumption (the
ingest, the introspection flush, the demo) checks the last sealed day under the seal's own
lock (:func:`lock_for_writing`), and takes rows table by table in key order, so that writers
never wait on each other in a cycle (a deadlock left is retried by the caller).

The ingest path is built for throughput, no ORM objects: a validation pass that builds
nothing for a well-formed event (UTC times are checked by the parser and sliced into their
stored form); on SQLite plain tuples through the DBAPI cursor (one ``executemany`` of
``INSERT … ON CONFLICT DO NOTHING``, redone event by event only when some were duplicates,
daily counts summed in Python and upserted once per token, day and endpoint, last uses and
last calls once per token); on PostgreSQL bulk ``INSERT … ON CONFLICT DO NOTHING RETURNING``
and dialect upserts. The events table has no index by token: a token's last calls live in
``usage_recent`` (10 rows a token at most), so an event costs one row (appended), its key
(appended too when a provider's event ids grow) and its day (appended in arrival order).
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import ipaddress
import json
import logging
import operator
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy
from flask import current_app
from sqlalchemy import bindparam, func, or_, select, text, update
from sqlalchemy.orm import Session

from datapass import charts, clock, formatting
from datapass.audit import service as audit
from datapass.audit.models import AuditEvent, UsageDaily, UsageEvent, UsageRecent
from datapass.extensions import UTCDateTime, db

MAX_EVENTS = 10_000
SEAL_TAG = "audit:consumption:sealed"
SEAL_SUBJECT = "usage_day"
INTROSPECT_ENDPOINT = "introspect"
REFUSED_FOREIGN = "jeton inconnu ou rattaché à une API d'un autre fournisseur"
REFUSED_SEALED = "journée déjà scellée : événement trop tardif pour être compté"
FUTURE_TOLERANCE = timedelta(minutes=5)

RECENT_CALLS = 10  # the last calls kept per token (token page, unused-access evidence)

# PostgreSQL advisory lock that keeps consumption out of sealed days: every writer of
# consumption holds it shared for its transaction and reads the last sealed day under it;
# the seal holds it exclusive (after the chain's head), so it waits for writers in flight and
# they wait for it. On SQLite every transaction that may write holds the write lock
# from its start (``BEGIN IMMEDIATE``; read snapshots write nothing), which already
# serialises them.
SEAL_LOCK_ID = int.from_bytes(b"dp:usage", "big")

log = logging.getLogger("datapass.consumption")

# Events and introspection calls refused because their day was already sealed, since this
# process started, by source ("usage": a provider's report, "introspect": the use buffer).
# Counted when the transaction that refused them commits (a retried one counts once).
REFUSED_LATE: Counter[str] = Counter()
_REFUSED_LOCK = threading.Lock()
_PENDING_LATE = "datapass.usage_refused_late"

EVENTS = UsageEvent.__table__
DAILY = UsageDaily.__table__
RECENT = UsageRecent.__table__
_RECENT_COLUMNS = tuple(column.name for column in RECENT.c)


class MalformedBatch(ValueError):
    """Events that do not follow the format: ``errors`` lists them by index."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(f"{len(errors)} événement(s) invalide(s)")
        self.errors = errors


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "refused": self.refused}


def _paris_day(moment: datetime) -> date:
    return moment.astimezone(clock.PARIS).date()


# --- validation ---------------------------------------------------------------------------


def _stored_time(moment: datetime) -> str:
    """An aware time as SQLAlchemy stores it on SQLite (naive UTC text, microseconds): the
    form the ingest compares and writes."""
    return moment.astimezone(UTC).isoformat(" ", "microseconds")[:26]


def _parse_time(value: Any, now: datetime) -> datetime | str:
    if type(value) is not str or len(value) < 20 or len(value) > 40 or value[10] not in "Tt ":
        return "date RFC 3339 attendue (ex. 2026-11-28T09:00:00Z)"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return "date RFC 3339 invalide"
    if moment.tzinfo is None:
        return "la date doit préciser son fuseau (Z ou ±hh:mm)"
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        return "date RFC 3339 invalide"
    if moment > now + FUTURE_TOLERANCE:
        return "date dans le futur"
    return moment


def _utc_text(value: str) -> str | None:
    """The stored form of an RFC 3339 time, or None if it is not one with an offset.

    Times already in UTC with microseconds (what ``datetime.isoformat()`` writes, the usual
    case) are checked by the parser and then sliced, not re-formatted."""
    fromisoformat = datetime.fromisoformat
    try:
        moment = fromisoformat(value)
    except ValueError:
        return None
    if (
        len(value) == 32
        and value[26:] == "+00:00"
        and value[19] == "."
        and value[4] == "-" == value[7]
        and value[13] == ":" == value[16]
    ):
        return value[:10] + " " + value[11:26]
    if moment.tzinfo is None:
        return None
    try:
        return _stored_time(moment)
    except OverflowError:
        return None


@functools.lru_cache(maxsize=4096)
def _normal_ip(value: str) -> str | None:
    """The address in its normal form, or None if it is not one (cached: callers repeat)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _problems(event: dict, now: datetime) -> dict[str, str]:
    """What is wrong with one event, field by field (empty when it is valid)."""
    problems: dict[str, str] = {}
    event_id = event.get("id")
    if type(event_id) is not str or not 0 < len(event_id) <= 100 or "\x00" in event_id:
        problems["id"] = "identifiant d'événement requis (texte, 100 caractères au plus)"
    jti = event.get("token")
    digest = event.get("token_sha256")
    if (jti is None) == (digest is None):
        problems["token"] = "indiquez soit `token` (jti), soit `token_sha256`"
    elif jti is not None and (type(jti) is not str or not 0 < len(jti) <= 100 or "\x00" in jti):
        problems["token"] = "jti invalide"
    elif digest is not None and (
        type(digest) is not str or len(digest) != 64 or digest.strip("0123456789abcdef") != ""
    ):
        problems["token_sha256"] = "empreinte SHA-256 attendue (64 caractères hexadécimaux)"
    at = _parse_time(event.get("time"), now)
    if type(at) is str:
        problems["time"] = at
    endpoint = event.get("endpoint")
    if type(endpoint) is not str or not 0 < len(endpoint) <= 200 or "\x00" in endpoint:
        problems["endpoint"] = "point d'accès requis (texte, 200 caractères au plus)"
    status = event.get("status")
    if type(status) is float and status.is_integer():  # 200.0 is a JSON integer
        status = int(status)
    if type(status) is not int or not 100 <= status <= 599:
        problems["status"] = "code HTTP attendu (entier de 100 à 599)"
    latency = event.get("latency_ms", 0)
    if type(latency) is float and 0 <= latency < 1e9:
        pass
    elif type(latency) is not int or not 0 <= latency < 10**9:
        problems["latency_ms"] = "durée en millisecondes attendue (nombre positif)"
    ip = event.get("caller_ip")
    if ip is not None and (type(ip) is not str or len(ip) > 64 or _normal_ip(ip) is None):
        problems["caller_ip"] = "adresse IP invalide"
    return problems


def _validate(events: list[Any], now: datetime) -> tuple[list[tuple], list[dict[str, Any]]]:
    """Parsed events ``(index, event_id, jti, digest, stored time, ISO Paris day, endpoint,
    status, latency, ip)`` and the errors by index.

    Hot path of the ingest: a well-formed event (the usual case) is checked by one chain of
    cheap tests without building anything; only an event failing it is examined field by
    field (:func:`_problems`) to say what is wrong. Paris days are computed once per UTC hour
    (offsets change on the hour)."""
    parsed: list[tuple] = []
    append = parsed.append
    errors: list[dict[str, Any]] = []
    latest = _stored_time(now + FUTURE_TOLERANCE)
    hours: dict[str, str] = {}
    utc_text = _utc_text
    normal_ip = _normal_ip
    for index, event in enumerate(events):
        if type(event) is not dict:
            errors.append({"index": index, "errors": {"": "objet JSON attendu"}})
            continue
        get = event.get
        event_id = get("id")
        jti = get("token")
        digest = get("token_sha256")
        value = get("time")
        endpoint = get("endpoint")
        status = get("status")
        latency = get("latency_ms", 0)
        ip = get("caller_ip")
        if (
            type(event_id) is str
            and 0 < len(event_id) <= 100
            and "\x00" not in event_id
            and (
                (digest is None and type(jti) is str and 0 < len(jti) <= 100 and "\x00" not in jti)
                or (
                    jti is None
                    and type(digest) is str
                    and len(digest) == 64
                    and digest.strip("0123456789abcdef") == ""
                )
            )
            and type(endpoint) is str
            and 0 < len(endpoint) <= 200
            and "\x00" not in endpoint
            and type(status) is int
            and 100 <= status <= 599
            and type(latency) is int
            and 0 <= latency < 10**9
            and (ip is None or (type(ip) is str and len(ip) <= 64))
            and type(value) is str
            and 20 <= len(value) <= 40
            and value[10] in "Tt "
            and (stored := utc_text(value)) is not None
            and stored <= latest
            and (ip is None or (ip := normal_ip(ip)) is not None)
        ):
            day = hours.get(stored[:13])
            if day is None:
                day = hours[stored[:13]] = _paris_day(
                    datetime.fromisoformat(stored[:13]).replace(tzinfo=UTC)
                ).isoformat()
            append((index, event_id, jti, digest, stored, day, endpoint, status, latency, ip))
            continue
        # Not the usual shape: a float status or latency, or a real problem.
        problems = _problems(event, now)
        if problems:
            errors.append({"index": index, "errors": problems})
            continue
        if type(status) is float:
            status = int(status)
        if type(latency) is float:
            latency = int(round(latency))
        at = _parse_time(value, now)
        if ip is not None:
            ip = normal_ip(ip)
        stored = _stored_time(at)
        day = _paris_day(at).isoformat()
        append((index, event_id, jti, digest, stored, day, endpoint, status, latency, ip))
    return parsed, errors


# --- tokens -------------------------------------------------------------------------------


def _provider_tokens(provider_id: int, column: str, values: set[str]) -> dict[str, tuple]:
    """The provider's tokens (those of its APIs) among ``values`` of ``column`` (jti or
    digest): ``{value: (token id, api id, organisation id)}``. A token missing from the
    answer is unknown or another provider's."""
    from datapass.catalogue.models import Api
    from datapass.tokens.models import AccessToken

    if not values:
        return {}
    table = AccessToken.__table__
    apis = Api.__table__
    connection = db.session.connection()
    found: dict[str, tuple] = {}
    ordered = sorted(values)
    for start in range(0, len(ordered), 5000):
        rows = connection.execute(
            select(table.c[column], table.c.id, table.c.api_id, table.c.organisation_id)
            .join(apis, apis.c.id == table.c.api_id)
            .where(
                apis.c.provider_id == provider_id,
                table.c[column].in_(ordered[start : start + 5000]),
            )
        )
        for key, token_id, api_id, organisation_id in rows:
            found[key] = (token_id, api_id, organisation_id)
    return found


def last_sealed_day() -> date | None:
    """The latest Paris day already sealed into the chain (later events are refused).

    Only a hint outside the seal's lock: writers call :func:`lock_for_writing` instead."""
    events = AuditEvent.__table__
    value = db.session.connection().scalar(
        select(func.max(events.c.subject_id)).where(events.c.subject_type == SEAL_SUBJECT)
    )
    return date.fromisoformat(value) if value else None


def _seal_lock(*, exclusive: bool) -> None:
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        connection.exec_driver_sql(f"SELECT {function}({SEAL_LOCK_ID})")


def lock_for_writing() -> date | None:
    """Take the seal's lock as a writer of consumption (until the transaction ends) and
    return the last sealed day, read under it: nothing written in this transaction for a
    later day can be sealed before it commits, and no seal can come in between.

    Call it before writing any row (counts, events, last calls): the seal takes the chain's
    head then this lock, so a writer that held a row the seal reads would wait in a cycle."""
    _seal_lock(exclusive=False)
    return last_sealed_day()


def _note_refused_late(source: str, count: int) -> None:
    if count:
        pending = db.session.info.setdefault(_PENDING_LATE, Counter())
        pending[source] += count


@sqlalchemy.event.listens_for(Session, "after_commit")
def _count_refused_late(session: Session) -> None:
    pending = session.info.pop(_PENDING_LATE, None)
    if pending:
        with _REFUSED_LOCK:
            REFUSED_LATE.update(pending)
        for source, count in pending.items():
            log.warning("%d %s event(s) refused: their day is already sealed", count, source)


@sqlalchemy.event.listens_for(Session, "after_rollback")
def _forget_refused_late(session: Session) -> None:
    session.info.pop(_PENDING_LATE, None)


# --- ingest -------------------------------------------------------------------------------


def ingest_usage(provider_id: int, events: list[Any]) -> IngestResult:
    """Store a provider's batch of usage events (flushes, never commits).

    Raises :class:`MalformedBatch` — nothing stored — when any event is malformed. Events of
    tokens that are not of the provider's APIs, or of an already sealed day, are refused and
    listed by index; an event id already reported by this provider is a duplicate."""
    if len(events) > MAX_EVENTS:
        raise ValueError(f"au plus {MAX_EVENTS} événements par lot")
    parsed, errors = _validate(events, clock.now())
    if errors:
        raise MalformedBatch(errors)
    result = IngestResult()
    if not parsed:
        return result
    db.session.flush()  # the reads below go through the connection, past the session
    by_jti = _provider_tokens(provider_id, "jti", {p[2] for p in parsed if p[2] is not None})
    by_digest = _provider_tokens(provider_id, "digest", {p[3] for p in parsed if p[3] is not None})
    sealed = lock_for_writing()
    sealed_iso = sealed.isoformat() if sealed is not None else ""
    # In _COLUMNS order, times and days as SQLite stores them.
    rows: list[tuple] = []
    append = rows.append
    seen: set[str] = set()
    refused = result.refused
    late = 0
    for index, event_id, jti, digest, stored, day, endpoint, status, latency, ip in parsed:
        token = by_jti.get(jti) if jti is not None else by_digest.get(digest)
        if token is None:
            refused.append({"index": index, "id": event_id, "reason": REFUSED_FOREIGN})
            continue
        if day <= sealed_iso:
            refused.append({"index": index, "id": event_id, "reason": REFUSED_SEALED})
            late += 1
            continue
        if event_id in seen:
            result.duplicates += 1
            continue
        seen.add(event_id)
        append((provider_id, event_id, *token, stored, day, endpoint, status, latency, ip))
    _note_refused_late("usage", late)
    if not rows:
        return result
    if db.session.get_bind().dialect.name == "sqlite":
        inserted = _ingest_sqlite(rows)
    else:
        # Rows taken in key order, as every writer does (no two batches wait on each other
        # in a cycle).
        rows.sort(key=operator.itemgetter(1))
        inserted = _store([_as_values(row) for row in rows])
    result.accepted = inserted
    result.duplicates += len(rows) - inserted
    return result


_COLUMNS = (
    "provider_id",
    "event_id",
    "token_id",
    "api_id",
    "organisation_id",
    "occurred_at",
    "day",
    "endpoint",
    "status",
    "latency_ms",
    "caller_ip",
)


def _as_values(row: tuple) -> dict[str, Any]:
    """A stored-form row as the typed values SQLAlchemy binds (aware time, date)."""
    values = dict(zip(_COLUMNS, row, strict=True))
    values["occurred_at"] = datetime.fromisoformat(row[5]).replace(tzinfo=UTC)
    values["day"] = date.fromisoformat(row[6])
    return values


_SQLITE_EVENT_INSERT = (
    "INSERT INTO usage_events (provider_id, event_id, token_id, api_id, organisation_id, "
    "occurred_at, day, endpoint, status, latency_ms, caller_ip) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (provider_id, event_id) DO NOTHING"
)
_SQLITE_DAILY_UPSERT = (
    "INSERT INTO usage_daily (token_id, day, endpoint, api_id, organisation_id, calls, errors, "
    "latency_ms_sum) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (token_id, day, endpoint) DO UPDATE "
    "SET calls = calls + excluded.calls, errors = errors + excluded.errors, "
    "latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum"
)
_SQLITE_TOUCH = (
    "UPDATE access_tokens SET last_used_at = ?, last_used_ip = ? "
    "WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)"
)
_SQLITE_RECENT_INSERT = (
    "INSERT INTO usage_recent (token_id, occurred_at, provider_id, event_id, endpoint, status, "
    "latency_ms, caller_ip) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)
# A token's calls older than its RECENT_CALLS-th newest (none when it has fewer), for
# SQLite's DBAPI and SQLAlchemy's text() alike.
RECENT_TRIM = (
    "DELETE FROM usage_recent WHERE token_id = :token "
    "AND (occurred_at, provider_id, event_id) < (SELECT occurred_at, provider_id, event_id "
    "FROM usage_recent WHERE token_id = :token "
    "ORDER BY occurred_at DESC, provider_id DESC, event_id DESC LIMIT 1 OFFSET 9)"
)

# Newest first: time, then provider and event id (a total order, like the trim's).
_recent_order = operator.itemgetter(5, 0, 1)


def _ingest_sqlite(rows: list[tuple]) -> int:
    """SQLite hot path of :func:`ingest_usage`, through the DBAPI cursor of the session's
    connection (same transaction), values pre-formatted as SQLAlchemy stores them (UTC text
    with microseconds, ISO day). One ``executemany`` of ``INSERT … ON CONFLICT DO NOTHING``
    in a savepoint: when its row count says some events were already there (a retry, or a
    concurrent batch — SQLite writers are serialised, so the count is exact), it is rolled
    back and redone event by event to know which. Then the daily counts of exactly the new
    events, one upsert per (token, day, endpoint), and per token its last use and last calls.
    Returns how many events were new."""
    cursor = db.session.connection().connection.cursor()
    try:
        cursor.execute("SAVEPOINT usage_batch")
        cursor.executemany(_SQLITE_EVENT_INSERT, rows)
        if cursor.rowcount != len(rows):
            cursor.execute("ROLLBACK TO usage_batch")
            execute = cursor.execute
            rows = [row for row in rows if execute(_SQLITE_EVENT_INSERT, row).rowcount == 1]
        cursor.execute("RELEASE usage_batch")
        if not rows:
            return 0
        totals: dict[tuple, list] = {}
        by_token: dict[int, list[tuple]] = {}
        for row in rows:
            key = (row[2], row[6], row[7])
            entry = totals.get(key)
            if entry is None:
                entry = totals[key] = [row[3], row[4], 0, 0, 0]
            entry[2] += 1
            if row[8] >= 400:
                entry[3] += 1
            entry[4] += row[9]
            calls = by_token.get(row[2])
            if calls is None:
                by_token[row[2]] = [row]
            else:
                calls.append(row)
        cursor.executemany(_SQLITE_DAILY_UPSERT, [(*k, *e) for k, e in sorted(totals.items())])
        recent: list[tuple] = []
        touches: list[tuple] = []
        for token_id, calls in sorted(by_token.items()):
            newest = sorted(calls, key=_recent_order, reverse=True)[:RECENT_CALLS]
            recent += [(token_id, r[5], r[0], r[1], r[7], r[8], r[9], r[10]) for r in newest]
            touches.append((newest[0][5], newest[0][10], token_id, newest[0][5]))
        cursor.executemany(_SQLITE_RECENT_INSERT, recent)
        cursor.executemany(RECENT_TRIM, [{"token": token_id} for token_id in sorted(by_token)])
        cursor.executemany(_SQLITE_TOUCH, touches)
        return len(rows)
    finally:
        cursor.close()


def _store(rows: list[dict[str, Any]]) -> int:
    """PostgreSQL path of :func:`ingest_usage`: insert the events (duplicates skipped by the
    unique constraint, even between concurrent batches), then add exactly the inserted ones to
    the counts, last calls and last uses. Returns how many were new."""
    statement = (
        audit.dialect_insert(EVENTS)
        .on_conflict_do_nothing(index_elements=["provider_id", "event_id"])
        .returning(EVENTS.c.event_id)
    )
    new_ids: set[str] = set()
    for start in range(0, len(rows), 2000):
        new_ids.update(db.session.execute(statement, rows[start : start + 2000]).scalars())
    if len(new_ids) != len(rows):
        rows = [row for row in rows if row["event_id"] in new_ids]
    _count(rows)
    _remember(rows)
    return len(rows)


def _count(rows: Iterable[dict[str, Any]]) -> None:
    totals: dict[tuple, list[int]] = {}
    for row in rows:
        key = (row["token_id"], row["day"], row["endpoint"])
        entry = totals.get(key)
        if entry is None:
            entry = totals[key] = [row["api_id"], row["organisation_id"], 0, 0, 0]
        entry[2] += 1
        if row["status"] >= 400:
            entry[3] += 1
        entry[4] += row["latency_ms"]
    _add_to_daily(totals)


def _add_to_daily(totals: dict[tuple, list[int]]) -> None:
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


def _remember(rows: Iterable[dict[str, Any]], use_interval: timedelta = timedelta(0)) -> None:
    """Each token's last calls (its newest events, :data:`RECENT_CALLS` kept) and last use
    (the latest reported time, never moved backwards; written only when the stored one is
    older than ``use_interval``), token by token in id order (the order every writer takes
    these rows in)."""
    from datapass.tokens.models import AccessToken

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
            {column: row[column] for column in _RECENT_COLUMNS}
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
    from datapass.catalogue.models import Api
    from datapass.tokens.models import AccessToken

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
    sealed = lock_for_writing()  # before reading or writing any row the seal reads
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
            day = days[hour] = _paris_day(at)
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
    _note_refused_late("introspect", late)
    _add_to_daily(totals)
    _remember(
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


# --- the daily seal -----------------------------------------------------------------------


def _event_lines(day: date) -> Iterator[str]:
    query = (
        select(
            EVENTS.c.provider_id,
            EVENTS.c.event_id,
            EVENTS.c.token_id,
            EVENTS.c.occurred_at,
            EVENTS.c.endpoint,
            EVENTS.c.status,
            EVENTS.c.latency_ms,
            EVENTS.c.caller_ip,
        )
        .where(EVENTS.c.day == day)
        .order_by(EVENTS.c.provider_id, EVENTS.c.event_id)
    )
    for provider_id, event_id, token_id, at, endpoint, status, latency, ip in db.session.execute(
        query.execution_options(yield_per=5000)
    ):
        yield json.dumps(
            [provider_id, event_id, token_id, audit._iso(at), endpoint, status, latency, ip],
            ensure_ascii=False,
            separators=(",", ":"),
        )


def _daily_lines(day: date) -> Iterator[tuple[str, tuple]]:
    query = (
        select(
            DAILY.c.token_id,
            DAILY.c.endpoint,
            DAILY.c.api_id,
            DAILY.c.organisation_id,
            DAILY.c.calls,
            DAILY.c.errors,
            DAILY.c.latency_ms_sum,
        )
        .where(DAILY.c.day == day)
        .order_by(DAILY.c.token_id, DAILY.c.endpoint)
    )
    for row in db.session.execute(query):
        yield json.dumps(list(row), ensure_ascii=False, separators=(",", ":")), tuple(row)


def day_summary(day: date) -> dict[str, Any]:
    """What the seal of ``day`` records: counts and SHA-256 digests, in a canonical order, of
    the day's events (by provider and event id) and of its daily counts (by token, endpoint)."""
    events_hash = hashlib.sha256()
    events = 0
    for line in _event_lines(day):
        events_hash.update(line.encode() + b"\n")
        events += 1
    daily_hash = hashlib.sha256()
    calls = errors = latency = 0
    tokens: set[int] = set()
    for line, row in _daily_lines(day):
        daily_hash.update(line.encode() + b"\n")
        tokens.add(row[0])
        calls += row[4]
        errors += row[5]
        latency += row[6]
    return {
        "day": day.isoformat(),
        "counts": {
            "events": events,
            "calls": calls,
            "errors": errors,
            "latency_ms_sum": latency,
            "tokens": len(tokens),
        },
        "digest": events_hash.hexdigest(),
        "daily_digest": daily_hash.hexdigest(),
    }


def _first_usage_day() -> date | None:
    first_event = db.session.scalar(select(func.min(EVENTS.c.day)))
    first_daily = db.session.scalar(select(func.min(DAILY.c.day)))
    days = [d for d in (first_event, first_daily) if d is not None]
    return min(days) if days else None


def sealable_until(now: datetime | None = None) -> date:
    """The last Paris day that is over (plus the lateness allowed to providers)."""
    now = now or clock.now()
    delay = timedelta(hours=current_app.config.get("USAGE_SEAL_DELAY_HOURS", 2))
    return _paris_day(now - delay) - timedelta(days=1)


def seal_finished_days(limit: int = 400) -> list[date]:
    """Seal every finished, not yet sealed day as an ``audit:consumption:sealed`` event (one
    per day, empty days included so that deleting a whole day is detected too). Safe to re-run
    and to run from two schedulers: the chain's lock is taken before looking."""
    session = db.session
    session.flush()
    audit._lock_head(session)
    # Then the writers' lock, exclusive: the writers in flight commit first (their counts
    # are in the seal), the later ones wait and then see the new seal.
    _seal_lock(exclusive=True)
    last = last_sealed_day()
    start = last + timedelta(days=1) if last is not None else _first_usage_day()
    until = sealable_until()
    sealed: list[date] = []
    if start is None:
        return sealed
    actor = audit.Actor.system("audit.seal_consumption")
    day = start
    while day <= until and len(sealed) < limit:
        audit.record(
            SEAL_TAG,
            actor,
            subject_type=SEAL_SUBJECT,
            subject_id=day.isoformat(),
            payload=day_summary(day),
        )
        sealed.append(day)
        day += timedelta(days=1)
    return sealed


@dataclass
class SealReport:
    checked: int = 0
    problems: list[str] = field(default_factory=list)


def verify_seals() -> SealReport:
    """Recompute each seal from the consumption still retained: a changed, added or deleted
    event or daily count of a sealed day is reported (with the day)."""
    anchor = latest_anchor_any()
    events_from = anchor.usage_events_before if anchor and anchor.usage_events_before else None
    daily_from = anchor.usage_daily_before if anchor and anchor.usage_daily_before else None
    report = SealReport()
    seals = db.session.execute(
        select(AuditEvent.seq, AuditEvent.payload)
        .where(AuditEvent.tag == SEAL_TAG)
        .order_by(AuditEvent.seq)
    )
    sealed_days: set[date] = set()
    for seq, payload_text in seals:
        payload = json.loads(payload_text)
        day = date.fromisoformat(payload["day"])
        sealed_days.add(day)
        current = day_summary(day)
        where = f"sceau de la consommation du {day.strftime('%d/%m/%Y')} (événement n° {seq})"
        events_kept = events_from is None or day >= events_from
        daily_kept = daily_from is None or day >= daily_from
        if events_kept and (
            current["digest"] != payload["digest"]
            or current["counts"]["events"] != payload["counts"]["events"]
        ):
            report.problems.append(
                f"{where} : les événements de consommation de ce jour ont été modifiés "
                f"({current['counts']['events']} aujourd'hui, {payload['counts']['events']} "
                "scellés)"
            )
        elif daily_kept and current["daily_digest"] != payload["daily_digest"]:
            report.problems.append(
                f"{where} : les compteurs quotidiens de ce jour ont été modifiés "
                f"({current['counts']['calls']} appels aujourd'hui, "
                f"{payload['counts']['calls']} scellés)"
            )
        else:
            report.checked += 1
    if sealed_days:
        # Seals start at the first day with consumption: earlier counts were added afterwards.
        query = select(func.count()).select_from(DAILY).where(DAILY.c.day < min(sealed_days))
        if daily_from is not None:
            query = query.where(DAILY.c.day >= daily_from)
        stray = db.session.scalar(query)
        if stray:
            report.problems.append(
                f"{stray} compteur(s) quotidien(s) antérieurs au premier sceau (ajout après coup)"
            )
    return report


def latest_anchor_any():
    """The latest retention purge record (usage horizons included), or None."""
    from datapass.audit.models import AuditAnchor

    return db.session.scalars(select(AuditAnchor).order_by(AuditAnchor.id.desc())).first()


# --- consumption views --------------------------------------------------------------------

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


def token_consumption(token, days: int = 30) -> Consumption:
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
    from datapass.accounts.models import Organisation
    from datapass.catalogue.models import Api
    from datapass.tokens.models import AccessToken

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


# --- demonstration data ---------------------------------------------------------------------


def seed_demo_consumption(days: int = 90, max_tokens: int = 5000) -> dict[str, int]:
    """Realistic consumption over the last ``days`` days for tokens that have none yet (the
    demo's, and ``--scale``'s): weekday traffic, quiet weekends, a few errors, and the last
    calls of today as events. Bulk inserts; idempotent (tokens with counts are skipped).

    Days already sealed are left alone (``sealed_days_skipped``): the demo is a writer of
    consumption like any other, under the seal's lock, so running it again after the
    scheduler has sealed days never rewrites them."""
    import random

    from datapass.catalogue.models import Api
    from datapass.tokens.models import AccessToken

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
    sealed = lock_for_writing()
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
    _remember(events)
    return {
        "tokens": len(tokens),
        "daily_rows": len(daily),
        "events": len(events),
        "sealed_days_skipped": skipped,
    }
