"""Recording and verifying the audit chain.

Services call :func:`record` in the same transaction as the change they audit; views never
write audit events. Secrets never enter a payload in clear: wrap them with :func:`secret`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from datapass import clock, vault
from datapass.audit.models import GENESIS_HASH, AuditEvent, AuditHead
from datapass.extensions import db

TAG_RE = re.compile(r"^[a-z][a-z_]*:[a-z][a-z_]*:[a-z][a-z_]*$")

HMAC_PURPOSE = "audit"


@dataclass(frozen=True)
class Actor:
    """Who acts: a person, a machine client, the system (a scheduled job) or nobody known."""

    type: str
    id: str | None = None
    label: str | None = None
    ip: str | None = None
    user: Any = None  # the User, when a person acts (not written to the log)

    @classmethod
    def for_user(cls, user, ip: str | None = None) -> Actor:
        return cls("user", str(user.id), user.email, ip, user)

    @classmethod
    def machine(cls, client, ip: str | None = None) -> Actor:
        return cls("machine", str(client.client_id), client.name, ip)

    @classmethod
    def system(cls, job: str) -> Actor:
        return cls("system", None, job)

    @classmethod
    def anonymous(cls, ip: str | None = None, label: str | None = None) -> Actor:
        return cls("anonymous", None, label, ip)


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
    text and is embedded as a string, so verification never re-parses it."""
    return json.dumps(
        [
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
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )


def chain_hash(row: dict[str, Any], prev_hash: str) -> str:
    return hashlib.sha256((canonical(row) + prev_hash).encode()).hexdigest()


def _lock_head(session) -> AuditHead:
    """Take the chain's lock and read its head, creating the head row on first use."""
    bump = update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq)
    if session.execute(bump).rowcount == 0:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(
            insert(AuditHead)
            .values(id=1, seq=0, hash=GENESIS_HASH)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        session.execute(bump)
    return session.execute(
        select(AuditHead.seq, AuditHead.hash)
        .where(AuditHead.id == 1)
        .execution_options(populate_existing=True)
    ).one()


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
) -> AuditEvent:
    """Append one event to the chain, in the caller's transaction (flushed, not committed).

    ``subject`` may be a model instance: its table name and id are recorded.
    """
    if not TAG_RE.match(tag):
        raise ValueError(f"audit tag {tag!r} is not domain:subject:action")
    if subject is not None:
        subject_type = subject_type or subject.__tablename__
        subject_id = subject_id if subject_id is not None else subject.id
    session = db.session
    session.flush()  # the audited change is in the transaction before the chain moves
    head = _lock_head(session)
    row = {
        "seq": head.seq + 1,
        "occurred_at": at or clock.now(),
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
    # microsecond precision is what every backend keeps
    row["occurred_at"] = row["occurred_at"].astimezone(UTC)
    digest = chain_hash(row, head.hash)
    event = AuditEvent(**row, prev_hash=head.hash, hash=digest)
    session.add(event)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=row["seq"], hash=digest))
    session.flush()
    return event


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


def verify_chain(session=None) -> VerifyResult:
    """Verify the whole chain from its first event to the recorded head."""
    session = session or db.session
    result = verify_rows(iter_rows(session))
    if not result.ok:
        return result
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
