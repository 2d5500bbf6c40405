"""Lifecycle sweep budget (DESIGN §6): the full sweep over 1,000,000 tokens of which 1 % are
due finishes in under 5 s on SQLite, and its time follows the due rows, not the table.

Builds two temporary SQLite databases with bulk inserts — 100,000 and 1,000,000 tokens, the
same 10,000 of them due, spread over the table (their 30-day reminder: three mails each
and a ``token.expiring`` webhook) — runs the sweep on each as ``flask datapass sweep`` does
(every scheduled job once, each through ``scheduler.run_job``) and prints a table. The two
delivery jobs are left out of the timing: they send over the network (SMTP, the providers'
endpoints) at the remote side's pace; what the sweep queues for them is measured.
Usage: ``python benchmarks/bench_sweep.py [--sizes 100000,1000000] [--due 10000]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert, select  # noqa: E402

from datapass import clock, create_app  # noqa: E402
from datapass.extensions import db  # noqa: E402

NOW = datetime(2027, 3, 15, 5, 0, tzinfo=UTC)  # 06:00 in Paris
HABILITATIONS = 1000


def build(path: Path, total: int, due: int) -> None:
    """A catalogue, 1,000 habilitations, ``total`` tokens; ``due`` of them reach their
    30-day reminder today (the 90- and 60-day ones were sent before), the others are due
    months from now."""
    from datapass.accounts.models import Organisation, User
    from datapass.authorizations.models import AuthorizationRequest, Habilitation
    from datapass.lifecycle import service
    from datapass.lifecycle.models import LifecycleAct
    from datapass.tokens.models import AccessToken

    db.drop_all()
    db.create_all()
    from tests.lifecycle.conftest import make_listening_api  # the tests' own builder

    api = make_listening_api()
    orgs = [
        {"siret": f"{21000000000000 + i:014d}", "name": f"Commune {i}", "created_at": NOW}
        for i in range(HABILITATIONS)
    ]
    db.session.execute(insert(Organisation), orgs)
    org_ids = list(db.session.scalars(select(Organisation.id).order_by(Organisation.id)))
    users = [
        {"email": f"agent{i}@commune.fr", "full_name": f"Agent {i}", "created_at": NOW}
        for i in range(HABILITATIONS)
    ]
    db.session.execute(insert(User), users)
    user_ids = list(db.session.scalars(select(User.id).order_by(User.id)))
    db.session.execute(
        insert(AuthorizationRequest),
        [
            {
                "organisation_id": org_ids[i],
                "api_id": api.id,
                "requester_id": user_ids[i],
                "state": "validated",
                "created_at": NOW,
                "updated_at": NOW,
                "state_changed_at": NOW,
                "scopes": ["revenus"],
            }
            for i in range(HABILITATIONS)
        ],
    )
    request_ids = list(
        db.session.scalars(select(AuthorizationRequest.id).order_by(AuthorizationRequest.id))
    )
    db.session.execute(
        insert(Habilitation),
        [
            {
                "request_id": request_ids[i],
                "organisation_id": org_ids[i],
                "api_id": api.id,
                "requester_id": user_ids[i],
                "scopes": ["revenus"],
                "status": "active",
                "snapshot": {
                    "title": "Tarification sociale",
                    "contacts": {
                        "technical": {"email": f"tech{i}@commune.fr"},
                        "controller": {"email": f"rt{i}@commune.fr"},
                    },
                },
                "created_at": NOW,
            }
            for i in range(HABILITATIONS)
        ],
    )
    hab_ids = list(db.session.scalars(select(Habilitation.id).order_by(Habilitation.id)))
    db.session.commit()

    expires_due = service.day_start(clock.local(NOW).date() + timedelta(days=30)) + timedelta(
        hours=9
    )
    issued_due = clock.add_months(expires_due, -18)
    issued_other = NOW - timedelta(days=100)
    expires_other = clock.add_months(issued_other, 18)
    later = NOW + timedelta(days=40)
    table = AccessToken.__table__
    batch = []
    step = max(total // due, 1)  # the due tokens are spread over the whole table
    for n in range(total):
        is_due = n % step == 0 and n // step < due
        issued, expires = (issued_due, expires_due) if is_due else (issued_other, expires_other)
        hab = n % HABILITATIONS
        batch.append(
            {
                "jti": f"00000000-0000-4000-8000-{n:012d}",
                "digest": f"{n:064x}",
                "claims": {"scope": "revenus", "jti": f"{n}", "siret": orgs[hab]["siret"]},
                "habilitation_id": hab_ids[hab],
                "api_id": api.id,
                "organisation_id": org_ids[hab],
                "status": "active",
                "signing_kid": "bench",
                "issued_at": issued,
                "not_before": issued,
                "expires_at": expires,
                "last_used_at": NOW - timedelta(hours=20),
                "lifecycle_due_at": NOW - timedelta(minutes=5) if is_due else later,
            }
        )
        if len(batch) == 50_000:
            db.session.execute(insert(table), batch)
            batch.clear()
    if batch:
        db.session.execute(insert(table), batch)
    due_ids = list(
        db.session.scalars(
            select(AccessToken.id)
            .where(AccessToken.lifecycle_due_at <= NOW)
            .order_by(AccessToken.id)
        )
    )
    db.session.execute(
        insert(LifecycleAct),
        [
            {
                "token_id": token_id,
                "key": f"reminder:{days}",
                "kind": "reminder",
                "outcome": "done",
                "due_at": NOW - timedelta(days=60),
                "at": NOW - timedelta(days=60),
            }
            for token_id in due_ids
            for days in (90, 60)
        ],
    )
    db.session.commit()
    db.session.execute(db.text("ANALYZE"))
    db.session.commit()
    # The bulk load's write-ahead log is folded into the database before timing the sweep.
    db.session.remove()
    with db.engine.connect() as connection:
        connection.connection.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def sweep(app) -> dict:
    """Every scheduled job once, in the scheduler's order, but the deliveries."""
    from datapass.lifecycle import scheduler

    return {
        job.name: scheduler.run_job(app, job)
        for job in scheduler.JOBS
        if not job.name.startswith("deliver_")
    }


def run(total: int, due: int) -> dict:
    from datapass.notify.models import MailBody, OutboxMail, WebhookDelivery

    folder = Path(tempfile.mkdtemp(prefix="datapass-bench-sweep-"))
    app = create_app(
        {
            "ENV": "testing",
            "DATABASE_URL": f"sqlite:///{folder / 'bench.db'}",
            "SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
            "MASTER_KEY": "dGVzdHMtbWFzdGVyLWtleS0wMTIzNDU2Nzg5YWJjZGU=",
            "MAIL_DIR": str(folder / "mail"),
        }
    )
    with app.app_context():
        clock.set_frozen(NOW)
        started = time.perf_counter()
        build(folder / "bench.db", total, due)
        built = time.perf_counter() - started
        started, cpu = time.perf_counter(), time.process_time()
        counts = sweep(app)["token_lifecycle"]
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        mails = db.session.scalar(select(func.count()).select_from(OutboxMail))
        bodies = db.session.scalar(select(func.count()).select_from(MailBody))
        hooks = db.session.scalar(select(func.count()).select_from(WebhookDelivery))
        db.session.remove()
        started = time.perf_counter()
        again = sweep(app)["token_lifecycle"]
        idle = time.perf_counter() - started
        clock.set_frozen(None)
        db.session.remove()
        db.engine.dispose()
    shutil.rmtree(folder, ignore_errors=True)  # a 1,000,000-token database is large
    return {
        "tokens": total,
        "due": due,
        "build_s": built,
        "sweep_s": elapsed,
        "cpu_s": cpu,
        "idle_s": idle,
        "mails": mails,
        "bodies": bodies,
        "webhooks": hooks,
        "counts": counts,
        "again": again,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--due", type=int, default=10_000)
    args = parser.parse_args()
    results = [run(int(size), args.due) for size in args.sizes.split(",")]
    print(
        "| tokens | due | sweep (s) | CPU (s) | per due token (ms) | mails (bodies) | webhooks "
        "| re-run (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['tokens']:,} | {r['due']:,} | {r['sweep_s']:.2f} | {r['cpu_s']:.2f} | "
            f"{1000 * r['sweep_s'] / max(r['due'], 1):.3f} | {r['mails']:,} ({r['bodies']:,}) | "
            f"{r['webhooks']:,} | {r['idle_s']:.3f} |"
        )
    if len(results) >= 2:
        ratio = results[-1]["sweep_s"] / results[0]["sweep_s"]
        print(
            f"\nratio {results[-1]['tokens']:,} / {results[0]['tokens']:,} tokens: {ratio:.2f} "
            "(budget: about 1; under 5 s at 1,000,000)"
        )
    print("\n" + json.dumps([{k: r[k] for k in ("tokens", "counts")} for r in results]))


if __name__ == "__main__":
    main()
