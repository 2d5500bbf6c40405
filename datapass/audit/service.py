"""Recording and verifying the audit chain.

Services call :func:`record` in the same transaction as the change they audit; views never
write audit events. Secrets never enter a payload in clear: wrap them with :func:`secret`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_all_start_methods, get_context
from typing import Any

from sqlalchemy import bindparam, create_engine, event, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from datapass import clock, vault
from datapass.actor import Actor
from datapass.audit.models import GENESIS_HASH, AuditAnchor, AuditEvent, AuditHead
from datapass.audit.tags import EventTag
from datapass.extensions import db

TAG_RE = re.compile(r"^[a-z][a-z_]*:[a-z][a-z_]*:[a-z][a-z_]*$")

HMAC_PURPOSE = "audit"


def secret(value: str) -> str:
    """What a payload holds in place of a secret: an HMAC that matches equal values."""
    return "hmac-sha256:" + vault.keyed_digest(value, HMAC_PURPOSE)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_payload(payload: dict[str, Any] | None) -> str:
    return json.dumps(
        payload or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def canonical(row: dict[str, Any]) -> str:
    """The canonical JSON of an event, without its hashes. ``payload`` is already canonical
    text and is embedded as a string, so verification never re-parses it.

    Exactly ``json.dumps([...], separators=(",", ":"), ensure_ascii=False)`` of the thirteen
    values, built by hand because verification and exports run it on millions of rows."""
    return canonical_values(
        row["seq"],
        _iso(row["occurred_at"]),
        row["tag"],
        row["actor_type"],
        row["actor_id"],
        row["actor_label"],
        row["ip"],
        row["subject_type"],
        row["subject_id"],
        row["organisation_id"],
        row["api_id"],
        row["token_digest"],
        row["payload"],
    )


_encode_str = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses


def _json_value(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return _encode_str(value)
    return json.dumps(value, ensure_ascii=False)


def canonical_values(
    seq: int,
    occurred_iso: str,
    tag: str,
    actor_type: str,
    actor_id: str | None,
    actor_label: str | None,
    ip: str | None,
    subject_type: str | None,
    subject_id: str | None,
    organisation_id: int | None,
    api_id: int | None,
    token_digest: str | None,
    payload: str,
) -> str:
    """:func:`canonical` from the values themselves (``occurred_iso`` as :func:`_iso` writes
    it)."""
    j = _json_value
    return (
        f"[{j(seq)},{j(occurred_iso)},{j(tag)},{j(actor_type)},{j(actor_id)},{j(actor_label)},"
        f"{j(ip)},{j(subject_type)},{j(subject_id)},{j(organisation_id)},{j(api_id)},"
        f"{j(token_digest)},{j(payload)}]"
    )


def chain_hash(row: dict[str, Any], prev_hash: str) -> str:
    return hashlib.sha256((canonical(row) + prev_hash).encode()).hexdigest()


def dialect_insert(table, session=None):
    """An ``INSERT`` of the session's dialect (PostgreSQL or SQLite), for its ``ON CONFLICT``
    clauses."""
    dialect = (session or db.session).get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _lock_head(session) -> AuditHead:
    """Take the chain's lock and read its head, creating the head row on first use."""
    bump = update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq)
    if session.execute(bump).rowcount == 0:
        session.execute(
            dialect_insert(AuditHead, session)
            .values(id=1, seq=0, hash=GENESIS_HASH)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        session.execute(bump)
    return session.execute(
        select(AuditHead.seq, AuditHead.hash)
        .where(AuditHead.id == 1)
        .execution_options(populate_existing=True)
    ).one()


_HEAD = "datapass.audit_head"
_HEAD_TABLE = AuditHead.__table__
_MOVE_HEAD = (
    update(_HEAD_TABLE)
    .where(_HEAD_TABLE.c.id == 1)
    .values(seq=bindparam("seq"), hash=bindparam("hash"))
)


def _head(session) -> list:
    """The chain's head for this transaction: locked and read on the first event, then kept
    in the session (the lock holds until the transaction ends)."""
    head = session.info.get(_HEAD)
    if head is None:
        locked = _lock_head(session)
        head = session.info[_HEAD] = [locked.seq, locked.hash]
    return head


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
@event.listens_for(Session, "after_soft_rollback")
def _forget_head(session, *_args) -> None:
    # The lock ended with the transaction (or savepoint): read the head afresh next time.
    session.info.pop(_HEAD, None)


@dataclass(frozen=True)
class Recorded:
    """What :func:`record` appended: the event's place in the chain."""

    seq: int
    hash: str


_INSERT_EVENT = AuditEvent.__table__.insert()


def record(
    tag: str,
    actor: Actor,
    *,
    subject: Any = None,
    subject_type: str | None = None,
    subject_id: Any = None,
    organisation_id: int | None = None,
    api_id: int | None = None,
    token_digest: str | None = None,
    payload: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> Recorded:
    """Append one event to the chain, in the caller's transaction (written, not committed).

    ``subject`` may be a model instance: its table name and id are recorded. The row is
    inserted at once through the session's connection (a Core statement: no ORM unit of
    work on the path every act takes), so later queries of the transaction see it.
    """
    if not TAG_RE.match(tag):
        raise ValueError(f"audit tag {tag!r} is not domain:subject:action")
    if subject is not None:
        subject_type = subject_type or subject.__tablename__
        if subject_id is None:
            subject_id = subject.id
    session = db.session
    if subject_id is None and subject is not None:
        session.flush()  # a new subject gets its id
        subject_id = subject.id
    head = _head(session)
    row = {
        "seq": head[0] + 1,
        "occurred_at": (at or clock.now()).astimezone(UTC),
        "tag": tag,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "actor_label": actor.label,
        "ip": actor.ip,
        "subject_type": subject_type,
        "subject_id": None if subject_id is None else str(subject_id),
        "organisation_id": organisation_id,
        "api_id": api_id,
        "token_digest": token_digest,
        "payload": canonical_payload(payload),
    }
    digest = chain_hash(row, head[1])
    row["prev_hash"], row["hash"] = head[1], digest
    # On the session's connection, not through Session.execute: no autoflush on this path.
    connection = session.connection()
    connection.execute(_INSERT_EVENT, row)
    connection.execute(_MOVE_HEAD, {"seq": row["seq"], "hash": digest})
    head[0], head[1] = row["seq"], digest
    return Recorded(row["seq"], digest)


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    head_seq: int
    problem: str | None = None
    bad_seq: int | None = None

    def message(self) -> str:
        if self.ok:
            return f"Chaîne d'audit intègre : {self.checked} événements vérifiés."
        return f"Chaîne d'audit rompue à l'événement n° {self.bad_seq} : {self.problem}"


COLUMNS = (
    "seq",
    "occurred_at",
    "tag",
    "actor_type",
    "actor_id",
    "actor_label",
    "ip",
    "subject_type",
    "subject_id",
    "organisation_id",
    "api_id",
    "token_digest",
    "payload",
    "prev_hash",
    "hash",
)


def iter_rows(session, batch: int = 20000, start_after: int = 0) -> Iterator[dict[str, Any]]:
    """Every event in chain order, read in keyset batches (constant memory)."""
    columns = [getattr(AuditEvent, c) for c in COLUMNS]
    last = start_after
    while True:
        rows = session.execute(
            select(*columns).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        ).all()
        if not rows:
            return
        for values in rows:
            yield dict(zip(COLUMNS, values, strict=True))
        last = rows[-1][0]


def verify_rows(
    rows: Iterable[dict[str, Any]], prev_hash: str = GENESIS_HASH, prev_seq: int = 0
) -> VerifyResult:
    """Check a run of events against the chain rule; name the first one that does not fit."""
    checked = 0
    for row in rows:
        seq = row["seq"]
        if seq != prev_seq + 1:
            if seq > prev_seq + 1:
                problem = f"événement(s) n° {prev_seq + 1} à {seq - 1} supprimé(s) ou déplacé(s)"
                return VerifyResult(False, checked, prev_seq, problem, prev_seq + 1)
            return VerifyResult(False, checked, prev_seq, "numéro de séquence dupliqué", seq)
        if row["prev_hash"] != prev_hash:
            problem = "le lien vers l'événement précédent ne correspond pas (insertion ou ordre)"
            return VerifyResult(False, checked, prev_seq, problem, seq)
        if chain_hash(row, prev_hash) != row["hash"]:
            problem = "contenu modifié (l'empreinte ne correspond plus)"
            return VerifyResult(False, checked, prev_seq, problem, seq)
        prev_hash = row["hash"]
        prev_seq = seq
        checked += 1
    return VerifyResult(True, checked, prev_seq)


_RAW_COLUMNS = ", ".join(COLUMNS)


def _select_sql(dialect: str, until: int | None) -> str:
    # constant column names; the values are bound
    mark = "%s" if dialect == "postgresql" else "?"
    upper = "" if until is None else f" AND seq <= {mark}"
    return f"SELECT {_RAW_COLUMNS} FROM audit_events WHERE seq > {mark}{upper} ORDER BY seq"  # noqa: S608


def _cursor_rows(
    dbapi, dialect: str, start_after: int, until: int | None = None, batch: int = 20000
) -> Iterator[tuple]:
    """Events after ``start_after`` (up to ``until``) in chain order as raw DBAPI tuples,
    read with ``fetchmany`` (a server-side cursor on PostgreSQL): constant memory."""
    if dialect == "postgresql":
        cursor = dbapi.cursor(name=f"audit_verify_{id(dbapi)}_{start_after}")
        cursor.itersize = batch
    else:
        cursor = dbapi.cursor()
    try:
        cursor.execute(
            _select_sql(dialect, until),
            (start_after,) if until is None else (start_after, until),
        )
        while True:
            rows = cursor.fetchmany(batch)
            if not rows:
                return
            yield from rows
    finally:
        cursor.close()


def _raw_rows(session, start_after: int, batch: int = 20000) -> Iterator[tuple]:
    """:func:`_cursor_rows` on the session's own connection (its transaction included)."""
    connection = session.connection()
    return _cursor_rows(
        connection.connection.dbapi_connection, connection.dialect.name, start_after, batch=batch
    )


def raw_iso(value: Any) -> str:
    """:func:`_iso` of a raw DBAPI timestamp: SQLite's ``YYYY-MM-DD HH:MM:SS.ffffff`` text (in
    UTC, as SQLAlchemy writes it) or a driver's datetime."""
    if type(value) is str:
        if len(value) == 26:
            return f"{value[:10]}T{value[11:]}Z"
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return _iso(value)


def raw_canonical(row: tuple, occurred_iso: str) -> str:
    """:func:`canonical` of a raw ``COLUMNS`` tuple as read from the database (integers for
    the integer columns): the verification and export fast path, same text."""
    enc = _encode_str
    return (
        f"[{row[0]},{enc(occurred_iso)},{enc(row[2])},{enc(row[3])},"
        f"{'null' if row[4] is None else enc(row[4])},"
        f"{'null' if row[5] is None else enc(row[5])},"
        f"{'null' if row[6] is None else enc(row[6])},"
        f"{'null' if row[7] is None else enc(row[7])},"
        f"{'null' if row[8] is None else enc(row[8])},"
        f"{'null' if row[9] is None else row[9]},"
        f"{'null' if row[10] is None else row[10]},"
        f"{'null' if row[11] is None else enc(row[11])},{enc(row[12])}]"
    )


def _verify_raw(rows: Iterable[tuple], prev_hash: str, prev_seq: int) -> VerifyResult:
    """:func:`verify_rows` over raw tuples (``COLUMNS`` order), the fast path."""
    checked = 0
    sha256 = hashlib.sha256
    build = raw_canonical
    iso = raw_iso
    for row in rows:
        seq = row[0]
        if (
            seq != prev_seq + 1
            or row[13] != prev_hash
            or type(row[9]) not in _INT_OR_NONE
            or (type(row[10]) not in _INT_OR_NONE)
        ):
            # the slow, exact path names the problem
            values = dict(zip(COLUMNS, row, strict=True))
            values["occurred_at"] = datetime.fromisoformat(iso(row[1]))
            result = verify_rows([values], prev_hash, prev_seq)
            if not result.ok:
                return VerifyResult(False, checked, prev_seq, result.problem, result.bad_seq)
        elif sha256((build(row, iso(row[1])) + prev_hash).encode()).hexdigest() != row[14]:
            problem = "contenu modifié (l'empreinte ne correspond plus)"
            return VerifyResult(False, checked, prev_seq, problem, seq)
        prev_hash = row[14]
        prev_seq = seq
        checked += 1
    return VerifyResult(True, checked, prev_seq)


_INT_OR_NONE = (int, type(None))


def latest_anchor(session=None):
    """The most recent retention anchor (where the remaining chain starts), or None."""
    session = session or db.session
    return session.scalars(
        select(AuditAnchor).where(AuditAnchor.anchor_seq > 0).order_by(AuditAnchor.id.desc())
    ).first()


def verify_chain(session=None) -> VerifyResult:
    """Verify the chain from its first event — or from the latest retention anchor, when old
    events were purged — to the recorded head."""
    session = session or db.session
    anchor = latest_anchor(session)
    start_seq, start_hash = (anchor.anchor_seq, anchor.anchor_hash) if anchor else (0, GENESIS_HASH)
    result = _verify_parallel(session, start_seq, start_hash)
    if result is None:  # small chain, a test transaction, or something to name precisely
        result = _verify_raw(_raw_rows(session, start_seq), start_hash, start_seq)
    if not result.ok:
        return result
    if anchor is not None:
        problem = _anchor_problem(session, anchor)
        if problem:
            return VerifyResult(False, result.checked, result.head_seq, problem, anchor.purge_seq)
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).first()
    if head is not None and head.seq != result.head_seq:
        problem = "la tête de chaîne enregistrée ne correspond pas au dernier événement"
        return VerifyResult(False, result.checked, result.head_seq, problem, result.head_seq + 1)
    if head is not None and result.checked:
        last_hash = session.execute(
            select(AuditEvent.hash).where(AuditEvent.seq == head.seq)
        ).scalar()
        if last_hash != head.hash:
            problem = "la tête de chaîne enregistrée ne correspond pas au dernier événement"
            return VerifyResult(False, result.checked, result.head_seq, problem, head.seq)
    return result


def _anchor_problem(session, anchor) -> str | None:
    """The anchor row must repeat what the purge event (inside the verified chain) says."""
    event = session.execute(
        select(AuditEvent.tag, AuditEvent.payload).where(AuditEvent.seq == anchor.purge_seq)
    ).first()
    if event is None or event.tag != EventTag.Audit.RetentionPurged:
        return "l'ancre de rétention ne correspond à aucun événement de purge"
    recorded = json.loads(event.payload).get("audit_events") or {}
    if recorded.get("anchor_seq") != anchor.anchor_seq or recorded.get("anchor_hash") != (
        anchor.anchor_hash
    ):
        return "l'ancre de rétention a été modifiée (elle diffère de l'événement de purge)"
    return None


# --- parallel verification of long chains ---------------------------------------------------

PARALLEL_MIN_EVENTS = 200_000


def _verify_segment(url: str, after: int, until: int | None) -> tuple:
    """Worker process: verify the events ``after < seq <= until`` on a connection of its own
    (a bare DBAPI connection: reading must not take SQLite's write lock). Returns (ok,
    checked, first_seq, first_prev_hash, last_seq, last_hash); the caller checks that
    consecutive segments link up."""

    engine = create_engine(url)
    connection = engine.raw_connection()
    try:
        rows = _cursor_rows(connection, engine.dialect.name, after, until)
        first = next(rows, None)
        if first is None:
            return (True, 0, None, None, None, None)
        last: list[str] = [first[14]]

        def tracked() -> Iterator[tuple]:
            for row in _chain_from(first, rows):
                last[0] = row[14]
                yield row

        result = _verify_raw(tracked(), first[13], first[0] - 1)
        return (result.ok, result.checked, first[0], first[13], result.head_seq, last[0])
    finally:
        connection.close()
        engine.dispose()


def _chain_from(first: tuple, rest: Iterator[tuple]) -> Iterator[tuple]:
    yield first
    yield from rest


def _verify_parallel(session, start_seq: int, start_hash: str) -> VerifyResult | None:
    """A long chain is checked in as many segments as there are processors, in parallel, each
    on its own connection; the segments must then link up. Returns None (verify sequentially,
    which names the exact problem) for short chains, inside a caller's connection (tests),
    or when anything does not fit."""

    bind = session.get_bind()
    workers = min(os.cpu_count() or 1, 8)
    if not isinstance(bind, Engine) or workers < 2 or "fork" not in _start_methods():
        return None
    head = session.execute(select(AuditHead.seq).where(AuditHead.id == 1)).scalar()
    if head is None or head - start_seq < PARALLEL_MIN_EVENTS:
        return None
    step = (head - start_seq) // workers + 1
    bounds = [start_seq + i * step for i in range(workers)]
    uppers: list[int | None] = [*bounds[1:], None]  # the last segment is open: beyond the head
    url = bind.url.render_as_string(hide_password=False)
    try:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            segments = list(pool.map(_verify_segment, [url] * workers, bounds, uppers))
    except Exception:  # no processes here: the sequential path still verifies
        return None
    checked, prev_seq, prev_hash = 0, start_seq, start_hash
    for ok, count, first_seq, first_prev, last_seq, last_hash in segments:
        if not ok or not count or first_seq != prev_seq + 1 or first_prev != prev_hash:
            return None
        checked += count
        prev_seq, prev_hash = last_seq, last_hash
    return VerifyResult(True, checked, prev_seq)


def _start_methods() -> list[str]:

    return get_all_start_methods()
