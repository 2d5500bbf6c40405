"""Signed checkpoints of the audit chain.

Every few minutes the chain's head (sequence number, hash, time) is signed with the audit key
(``datapass.keys``: one key, one usage, published in the JWKS) and stored. Anyone holding
the JWKS can then check that a copy of the log — or an export — matches what Datapass signed
at that moment; ``audit verify`` checks every stored checkpoint against the chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select

from datapass import clock
from datapass.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from datapass.audit.service import _iso, latest_anchor
from datapass.extensions import db
from datapass.keys import jws
from datapass.keys import service as keys_service
from datapass.keys.models import KeyUsage, SigningKey

CHECKPOINT_TYPE = "datapass-audit-checkpoint"
AUDIT_JWS_TYPES = ("datapass-audit+jwt",)


def sign(payload: dict[str, Any]) -> str:
    """A compact JWS of ``payload`` with the current audit key (created on first use)."""
    return jws.sign_jws(payload, usage=KeyUsage.AUDIT)


def public_jwks() -> dict[str, Any]:
    """Every audit key's public half, as a JWKS (read-only: unlike the published JWKS, this
    never creates a key, so verifying writes nothing). ``/.well-known/jwks.json`` publishes
    the same audit keys."""
    keys = db.session.scalars(
        select(SigningKey.public_jwk)
        .where(SigningKey.usage == KeyUsage.AUDIT)
        .order_by(SigningKey.id)
    )
    return {"keys": [dict(key) for key in keys]}


def check_jws(compact: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Verify an audit JWS with public keys only; returns its payload or raises ValueError."""
    return jws.verify_jws(compact, usage=KeyUsage.AUDIT, keys=jwks, types=AUDIT_JWS_TYPES)


def _kid(compact: str) -> str:
    return jws.kid_of(compact)


def _ensure_audit_key() -> None:
    # Creating the key records an audit event: do it before reading the head to sign.
    keys_service.current_key(KeyUsage.AUDIT)


def latest() -> AuditCheckpoint | None:
    return db.session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc())).first()


def create_checkpoint(force: bool = False) -> AuditCheckpoint | None:
    """Sign the current head and store it (flushes). Without ``force``, nothing is signed when
    the head has not moved since the last checkpoint; returns that checkpoint then."""
    _ensure_audit_key()
    head = db.session.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)
    ).first()
    seq, digest = (head.seq, head.hash) if head is not None else (0, "0" * 64)
    previous = latest()
    if previous is not None and previous.seq == seq and previous.hash == digest and not force:
        return previous
    now = clock.now()
    payload = {
        "typ": CHECKPOINT_TYPE,
        "iss": current_app.config["BASE_URL"].rstrip("/"),
        "seq": seq,
        "hash": digest,
        "time": _iso(now),
    }
    compact = sign(payload)
    checkpoint = AuditCheckpoint(
        seq=seq, hash=digest, signed_at=now, kid=_kid(compact), jws=compact
    )
    db.session.add(checkpoint)
    db.session.flush()
    return checkpoint


def is_due() -> bool:
    """A checkpoint is due when the last one is older than ``AUDIT_CHECKPOINT_MINUTES``."""
    previous = latest()
    minutes = current_app.config.get("AUDIT_CHECKPOINT_MINUTES", 15)
    return previous is None or clock.as_utc(previous.signed_at) <= clock.now() - timedelta(
        minutes=minutes
    )


def as_manifest_entry(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    return {
        "seq": checkpoint.seq,
        "hash": checkpoint.hash,
        "time": _iso(checkpoint.signed_at),
        "kid": checkpoint.kid,
        "jws": checkpoint.jws,
    }


@dataclass
class CheckpointReport:
    checked: int = 0
    problems: list[str] = field(default_factory=list)


def verify_checkpoints() -> CheckpointReport:
    """Each stored checkpoint: its signature verifies with the published keys, its signed
    payload repeats its columns, and the chain's event at its ``seq`` has its ``hash`` (seqs at
    or before a retention anchor are checked against the anchor only)."""
    report = CheckpointReport()
    jwks = public_jwks()
    anchor = latest_anchor()
    for checkpoint in db.session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)):
        where = f"point de contrôle n° {checkpoint.id} (événement n° {checkpoint.seq})"
        try:
            payload = check_jws(checkpoint.jws, jwks)
        except ValueError as exc:
            report.problems.append(f"{where} : signature invalide ({exc})")
            continue
        if (
            payload.get("typ") != CHECKPOINT_TYPE
            or payload.get("seq") != checkpoint.seq
            or payload.get("hash") != checkpoint.hash
        ):
            report.problems.append(f"{where} : le contenu signé diffère de la ligne enregistrée")
            continue
        if checkpoint.seq == 0:
            report.checked += 1
            continue
        if anchor is not None and checkpoint.seq <= anchor.anchor_seq:
            if checkpoint.seq == anchor.anchor_seq and checkpoint.hash != anchor.anchor_hash:
                report.problems.append(f"{where} : ne correspond pas à l'ancre de rétention")
            else:
                report.checked += 1
            continue
        actual = db.session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == checkpoint.seq))
        if actual is None:
            report.problems.append(f"{where} : l'événement signé a disparu de la chaîne")
        elif actual != checkpoint.hash:
            report.problems.append(
                f"{where} : l'empreinte signée ne correspond plus à la chaîne (réécriture)"
            )
        else:
            report.checked += 1
    return report
