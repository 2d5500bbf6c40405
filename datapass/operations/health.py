"""Readiness checks (``/readyz``): the database answers, its schema is at the migrations'
head, a signing key is current, the scheduler is alive and the audit chain is checkpointed.

Each check is one or two small queries; none writes. When the database does not answer, the
checks that need it are reported as not run.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from datetime import timedelta

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from datapass import clock
from datapass.audit import checkpoints
from datapass.audit.models import AuditEvent, AuditHead
from datapass.config import ROOT
from datapass.extensions import db
from datapass.keys import service as keys_service
from datapass.keys.models import KeyUsage
from datapass.operations import heartbeats
from datapass.operations.models import SCHEDULER

MIGRATIONS = ROOT / "migrations"

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # ok | failed | skipped
    message: str  # French, for the operator

    @property
    def ok(self) -> bool:
        return self.state == OK


@functools.cache
def script_heads(directory: str = str(MIGRATIONS)) -> tuple[str, ...]:
    """The migration scripts' head revision(s): read once per process (they ship with the
    code, and change only with a new deployment)."""
    return tuple(sorted(ScriptDirectory(directory).get_heads()))


def _plain(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def check_database() -> Check:
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        db.session.rollback()
        return Check("database", FAILED, f"Base de données injoignable ({type(exc).__name__}).")
    return Check("database", OK, "La base de données répond.")


def check_migrations() -> Check:
    current = tuple(sorted(MigrationContext.configure(db.session.connection()).get_current_heads()))
    expected = script_heads()
    if current == expected:
        return Check("migrations", OK, f"Schéma à jour (révision {', '.join(expected)}).")
    found = ", ".join(current) or "aucune"
    return Check(
        "migrations",
        FAILED,
        f"Schéma en retard : révision {found}, le code attend {', '.join(expected)} "
        "(lancez « flask --app app db upgrade »).",
    )


def check_signing_key() -> Check:
    key = keys_service.current_key(KeyUsage.TOKEN, create=False)
    if key is None:
        return Check(
            "signing_key",
            FAILED,
            "Aucune clé de signature courante : les jetons ne peuvent pas être signés "
            "(la tâche rotate_signing_keys la crée).",
        )
    return Check("signing_key", OK, f"Clé de signature courante : {key.kid[:12]}…")


def check_scheduler() -> Check:
    limit = int(current_app.config["READY_SCHEDULER_MAX_AGE_SECONDS"])
    beat = heartbeats.all_heartbeats().get(SCHEDULER)
    if beat is None or beat.ended_at is None:
        return Check("scheduler", FAILED, "Le planificateur n'a jamais donné signe de vie.")
    age = (clock.now() - clock.as_utc(beat.ended_at)).total_seconds()
    if age > limit:
        return Check(
            "scheduler",
            FAILED,
            f"Dernier signe de vie du planificateur il y a {_plain(age)} "
            f"(plus de {_plain(limit)}) : est-il arrêté ?",
        )
    return Check("scheduler", OK, f"Planificateur en vie (il y a {_plain(age)}).")


def checkpoint_limit() -> timedelta:
    """How long an audit event may wait for a signed checkpoint: ``READY_CHECKPOINT_PERIODS``
    intervals of ``AUDIT_CHECKPOINT_MINUTES`` (the checkpoint job signs once per interval)."""
    minutes = int(current_app.config["AUDIT_CHECKPOINT_MINUTES"])
    return timedelta(minutes=minutes * int(current_app.config["READY_CHECKPOINT_PERIODS"]))


def check_checkpoint() -> Check:
    """The last checkpoint is recent enough: no event of the chain has waited for a
    signature longer than :func:`checkpoint_limit` (a quiet chain needs no new one)."""
    last = checkpoints.latest()
    signed = last.seq if last is not None else 0
    waiting_since = db.session.scalar(
        select(AuditEvent.occurred_at)
        .where(AuditEvent.seq > signed)
        .order_by(AuditEvent.seq)
        .limit(1)
    )
    if waiting_since is None:
        return Check("audit_checkpoint", OK, "Le dernier point de contrôle couvre toute la chaîne.")
    head = db.session.scalar(select(AuditHead.seq).where(AuditHead.id == 1)) or signed
    waited = clock.now() - clock.as_utc(waiting_since)
    limit = checkpoint_limit()
    if waited > limit:
        return Check(
            "audit_checkpoint",
            FAILED,
            f"{head - signed} événement(s) d'audit attendent un point de contrôle signé depuis "
            f"{_plain(waited.total_seconds())} (plus de {_plain(limit.total_seconds())}) : "
            "la tâche audit_checkpoint tourne-t-elle ?",
        )
    return Check(
        "audit_checkpoint",
        OK,
        f"{head - signed} événement(s) à signer au prochain point de contrôle.",
    )


CHECKS = (
    ("migrations", check_migrations),
    ("signing_key", check_signing_key),
    ("scheduler", check_scheduler),
    ("audit_checkpoint", check_checkpoint),
)
SKIPPED_MESSAGE = "Non vérifié : la base de données ne répond pas."


def readiness() -> tuple[bool, list[dict[str, str]]]:
    """Every check, in order; ready when all pass."""
    results = [check_database()]
    if results[0].ok:
        for name, check in CHECKS:
            try:
                results.append(check())
            except SQLAlchemyError as exc:
                db.session.rollback()
                results.append(
                    Check(name, FAILED, f"Vérification impossible ({type(exc).__name__}).")
                )
    else:
        results.extend(Check(name, SKIPPED, SKIPPED_MESSAGE) for name, _check in CHECKS)
    return all(r.ok for r in results), [asdict(r) for r in results]
