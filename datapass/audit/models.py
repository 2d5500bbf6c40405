"""The append-only, hash-chained audit log."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, BigInteger, Date, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from datapass.extensions import db

SeqType = BigInteger().with_variant(Integer(), "sqlite")

GENESIS_HASH = "0" * 64


class AuditEvent(db.Model):
    """One governance act or system event. Written only by :mod:`datapass.audit.service`.

    ``hash = SHA-256(canonical JSON of the event ‖ prev_hash)``: changing, deleting, inserting
    or reordering a row breaks the chain at that row.
    """

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    tag: Mapped[str] = mapped_column(String(80), index=True)
    actor_type: Mapped[str] = mapped_column(String(16))  # user | system | machine | anonymous
    actor_id: Mapped[str | None] = mapped_column(String(64), index=True)
    actor_label: Mapped[str | None] = mapped_column(String(320))
    ip: Mapped[str | None] = mapped_column(String(64))
    subject_type: Mapped[str | None] = mapped_column(String(40))
    subject_id: Mapped[str | None] = mapped_column(String(64))
    organisation_id: Mapped[int | None] = mapped_column(Integer, index=True)
    api_id: Mapped[int | None] = mapped_column(Integer, index=True)
    token_digest: Mapped[str | None] = mapped_column(String(64), index=True)
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON, secrets HMAC'd
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    __table_args__ = (Index("ix_audit_events_subject", "subject_type", "subject_id"),)


class AuditHead(db.Model):
    """The chain's head (one row). Updating it is the lock that keeps appends from several
    processes a single chain, on PostgreSQL (row lock) as on SQLite (write lock)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(SeqType)
    hash: Mapped[str] = mapped_column(String(64))


# --- checkpoints, anchors, exports --------------------------------------------------------


class AuditCheckpoint(db.Model):
    """The chain's head (seq, hash, time) signed with the audit key (compact JWS)."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(SeqType, index=True)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime]
    kid: Mapped[str] = mapped_column(String(64))
    jws: Mapped[str] = mapped_column(Text)


class AuditAnchor(db.Model):
    """What one retention purge removed. ``anchor_seq``/``anchor_hash`` (the last removed
    event) are where the remaining chain starts; the purge event in the chain repeats them,
    so a forged anchor row is detected."""

    __tablename__ = "audit_anchors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    purged_at: Mapped[datetime]
    purge_seq: Mapped[int] = mapped_column(SeqType)  # the audit event that records the purge
    anchor_seq: Mapped[int] = mapped_column(SeqType, default=0)
    anchor_hash: Mapped[str] = mapped_column(String(64), default=GENESIS_HASH)
    audit_events_removed: Mapped[int] = mapped_column(BigInteger, default=0)
    usage_events_before: Mapped[date | None] = mapped_column(Date)
    usage_events_removed: Mapped[int] = mapped_column(BigInteger, default=0)
    usage_daily_before: Mapped[date | None] = mapped_column(Date)
    usage_daily_removed: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditExport(db.Model):
    """An export of a console search: its filter and the signed checkpoint that bounds it,
    so the file and its manifest can be produced again, identical."""

    __tablename__ = "audit_exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime]
    created_by_id: Mapped[int | None] = mapped_column(Integer)
    created_by_label: Mapped[str | None] = mapped_column(String(320))
    format: Mapped[str] = mapped_column(String(8))  # csv | jsonl
    filters: Mapped[dict] = mapped_column(JSON)
    checkpoint_id: Mapped[int] = mapped_column(Integer)
    bound_seq: Mapped[int] = mapped_column(SeqType)
    audit_seq: Mapped[int | None] = mapped_column(SeqType)  # the "export created" event
