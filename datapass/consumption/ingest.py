"""A provider's usage reports (``POST /api/v1/usage``): validated, stored, counted.

Each accepted event is kept for the retention period (12 months by default) and added to
per-token, per-day, per-endpoint counts (5 years). Writers check the last sealed day under
the seal's own lock (:func:`~datapass.consumption.seal.lock_for_writing`), and take rows
table by table in key order, so that writers never wait on each other in a cycle (a
deadlock left is retried by the caller).

Written for speed (a hot path, moved as it was): built for throughput, no ORM objects: a
validation pass that builds nothing for a well-formed event (UTC times are checked by the
parser and sliced into their stored form); on SQLite plain tuples through the DBAPI cursor
(one ``executemany`` of ``INSERT … ON CONFLICT DO NOTHING``, redone event by event only when
some were duplicates, daily counts summed in Python and upserted once per token, day and
endpoint, last uses and last calls once per token); on PostgreSQL bulk ``INSERT … ON
CONFLICT DO NOTHING RETURNING`` and dialect upserts. The events table has no index by token:
a token's last calls live in ``usage_recent`` (10 rows a token at most), so an event costs
one row (appended), its key (appended too when a provider's event ids grow) and its day
(appended in arrival order).
"""

from __future__ import annotations

import functools
import ipaddress
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from datapass import clock
from datapass.audit import service as audit
from datapass.catalogue.models import Api
from datapass.consumption import seal
from datapass.consumption.store import (
    EVENTS,
    RECENT_CALLS,
    RECENT_TRIM,
    add_to_daily,
    paris_day,
    remember,
)
from datapass.errors import DomainError
from datapass.extensions import db
from datapass.tokens.models import AccessToken

MAX_EVENTS = 10_000
REFUSED_FOREIGN = "jeton inconnu ou rattaché à une API d'un autre fournisseur"
REFUSED_SEALED = "journée déjà scellée : événement trop tardif pour être compté"
FUTURE_TOLERANCE = timedelta(minutes=5)


class MalformedBatch(DomainError):
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
                day = hours[stored[:13]] = paris_day(
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
        day = paris_day(at).isoformat()
        append((index, event_id, jti, digest, stored, day, endpoint, status, latency, ip))
    return parsed, errors


# --- tokens -------------------------------------------------------------------------------


def _provider_tokens(provider_id: int, column: str, values: set[str]) -> dict[str, tuple]:
    """The provider's tokens (those of its APIs) among ``values`` of ``column`` (jti or
    digest): ``{value: (token id, api id, organisation id)}``. A token missing from the
    answer is unknown or another provider's."""
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
    sealed = seal.lock_for_writing()
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
    seal.note_refused_late("usage", late)
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
    remember(rows)
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
    add_to_daily(totals)
