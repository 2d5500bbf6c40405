"""Audit budgets (DESIGN §6) on SQLite with generated data:

- usage ingest through ``POST /api/v1/usage`` in batches of 1,000 events (≥ 100,000 events/s);
- export of 1,000,000 audit events to CSV, streamed (≥ 100,000 rows/s, peak RSS < 150 MB,
  measured in a child process that does only the export);
- ``audit verify`` of the chain (≥ 200,000 events/s).

Usage: ``python benchmarks/bench_audit.py [--events 1000000] [--ingest 200000] [--only ingest]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MASTER_KEY = "YmVuY2htYXJrLW1hc3Rlci1rZXktMDEyMzQ1Njc4OWE="


def make_app(db_path: Path):
    from datapass import create_app

    return create_app(
        {
            "ENV": "testing",
            "DATABASE_URL": f"sqlite:///{db_path}",
            "SECRET_KEY": "benchmark-secret-key-long-enough-0123456789",
            "MASTER_KEY": MASTER_KEY,
            "BASE_URL": "http://datapass.bench",
        }
    )


def generate_chain(app, count: int) -> None:
    """``count`` realistic audit events, chained, bulk-inserted with the DBAPI."""
    from datapass.audit import service as audit
    from datapass.extensions import db

    tags = [
        "accounts:user:login",
        "tokens:token:issued",
        "authorizations:request:submit",
        "tokens:token:revoked",
        "audit:consumption:sealed",
    ]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with app.app_context():
        connection = db.engine.raw_connection()
        cursor = connection.cursor()
        cursor.execute("BEGIN")
        prev = audit.GENESIS_HASH if hasattr(audit, "GENESIS_HASH") else "0" * 64
        batch = []
        sql = (
            f"INSERT INTO audit_events ({', '.join(audit.COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(audit.COLUMNS))})"
        )
        for seq in range(1, count + 1):
            moment = start + timedelta(seconds=seq * 7)
            row = {
                "seq": seq,
                "occurred_at": moment,
                "tag": tags[seq % len(tags)],
                "actor_type": "user" if seq % 3 else "system",
                "actor_id": str(seq % 500) if seq % 3 else None,
                "actor_label": f"agent{seq % 500}@exemple.gouv.fr" if seq % 3 else "scheduler",
                "ip": f"192.0.2.{seq % 250}" if seq % 3 else None,
                "subject_type": "access_tokens",
                "subject_id": str(seq % 10000),
                "organisation_id": seq % 2000,
                "api_id": seq % 12,
                "token_digest": hashlib.sha256(str(seq % 10000).encode()).hexdigest(),
                "payload": json.dumps(
                    {"reason": "rotation planifiée", "n": seq}, separators=(",", ":")
                ),
            }
            digest = audit.chain_hash(row, prev)
            stored = dict(row)
            stored["occurred_at"] = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
            batch.append(tuple(stored[c] for c in audit.COLUMNS[:13]) + (prev, digest))
            prev = digest
            if len(batch) == 50000:
                cursor.executemany(sql, batch)
                batch.clear()
        if batch:
            cursor.executemany(sql, batch)
        cursor.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)", (count, prev))
        cursor.execute("COMMIT")
        # steady state: the generation's write-ahead log must not be replayed by the measures
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.close()
    with app.app_context():
        db.engine.dispose()


def bench_ingest(app, total: int, random_ids: bool = False) -> tuple[float, float]:
    """Events/s through the HTTP endpoint (test client), batches of 1,000: by the wall clock
    (the budget) and by this process's CPU time (what the code costs, whatever else runs on
    the machine)."""
    import base64

    from datapass.actor import Actor
    from datapass.extensions import db
    from datapass.tokens import issuance as token_issuance
    from tests import factories  # the tests' own builders
    from tests.tokens.conftest import make_api, make_client, make_habilitation, make_provider

    with app.app_context():
        provider = make_provider()
        api = make_api(provider)
        client, secret = make_client(provider)
        organisation = factories.organisation()
        requester = factories.user(organisation=organisation, password=None)
        jtis = []
        for _ in range(50):
            habilitation = make_habilitation(api, organisation, requester)
            token, _raw = token_issuance.issue_for_habilitation(habilitation, Actor.system("b"))
            jtis.append(token.jti)
        db.session.commit()
        client_id = client.client_id
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode(),
        "Content-Type": "application/json",
    }
    base = datetime.now(UTC) - timedelta(hours=1)
    bodies = []
    for b in range(total // 1000):
        events = [
            {
                "id": str(uuid.uuid4()) if random_ids else f"b{b}-{i}",
                "token": jtis[(b * 1000 + i) % len(jtis)],
                "time": (base + timedelta(milliseconds=b * 1000 + i)).isoformat(),
                "endpoint": "/v2/quotient-familial" if i % 3 else "/v2/statut-etudiant",
                "status": 200 if i % 50 else 404,
                "latency_ms": 20 + i % 80,
                "caller_ip": f"198.51.100.{i % 250}",
            }
            for i in range(1000)
        ]
        bodies.append(json.dumps({"events": events}))
    http = app.test_client()
    started = time.perf_counter()
    cpu_started = time.process_time()
    for body in bodies:
        response = http.post("/api/v1/usage", data=body, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
    elapsed = time.perf_counter() - started
    return total / elapsed, total / (time.process_time() - cpu_started)


def sqlite_ceilings(db_path: Path) -> tuple[float, float]:
    """What SQLite itself allows on this machine, now: inserting usage rows (same table, same
    indexes, 1,000 per statement) and reading audit rows, with bare sqlite3 calls."""
    import sqlite3

    folder = Path(tempfile.mkdtemp(prefix="datapass-bench-ceiling-"))
    con = sqlite3.connect(folder / "c.db", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    source = sqlite3.connect(db_path)
    schema = source.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'usage_events' AND sql IS NOT NULL"
    ).fetchall()
    for (sql,) in schema:
        con.execute(sql)
    started = time.perf_counter()
    for b in range(50):
        rows = [
            (
                1,
                f"c{b}-{i}",
                i % 50,
                1,
                1,
                f"2026-11-28 08:00:{i % 60:02d}.{b:06d}",
                "2026-11-28",
                "/v2/quotient",
                200,
                20,
                "198.51.100.1",
            )
            for i in range(1000)
        ]
        con.execute("BEGIN IMMEDIATE")
        con.execute(
            "INSERT INTO usage_events VALUES "
            + ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * 1000)
            + " ON CONFLICT DO NOTHING RETURNING event_id",
            [v for row in rows for v in row],
        ).fetchall()
        con.execute("COMMIT")
    insert_rate = 50_000 / (time.perf_counter() - started)
    started = time.perf_counter()
    count = 0
    for _row in source.execute("SELECT * FROM audit_events ORDER BY seq LIMIT 300000"):
        count += 1
    read_rate = count / (time.perf_counter() - started)
    con.close()
    source.close()
    shutil.rmtree(folder, ignore_errors=True)
    return insert_rate, read_rate


def bench_verify(app) -> tuple[float, int]:
    from datapass.audit import service as audit

    with app.app_context():
        started = time.perf_counter()
        result = audit.verify_chain()
        elapsed = time.perf_counter() - started
        assert result.ok, result.message()
        return result.checked / elapsed, result.checked


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ``ru_maxrss``: after fork + exec,
    Linux carries the parent's peak into the child's ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def export_child(db_path: str) -> None:
    """Run in a child process: stream a full CSV export to /dev/null, print rows/s and RSS."""
    from datapass.audit import exports
    from datapass.audit.models import AuditCheckpoint, AuditExport
    from datapass.audit.search import AuditFilter
    from datapass.extensions import db

    app = make_app(Path(db_path))
    with app.app_context():
        from datapass.audit.models import AuditHead

        head = db.session.get(AuditHead, 1)
        checkpoint = AuditCheckpoint(
            seq=head.seq, hash=head.hash, signed_at=datetime.now(UTC), kid="bench", jws="bench"
        )
        db.session.add(checkpoint)
        db.session.flush()
        export = AuditExport(
            created_at=datetime.now(UTC),
            format="csv",
            filters=AuditFilter().as_dict(),
            checkpoint_id=checkpoint.id,
            bound_seq=head.seq,
        )
        db.session.add(export)
        db.session.commit()
        digest = exports.Digest()
        started = time.perf_counter()
        size = 0
        with open(os.devnull, "wb") as sink:
            for chunk in exports.stream(export, digest):
                sink.write(chunk)
                size += len(chunk)
        elapsed = time.perf_counter() - started
        rss_mb = peak_rss_mb()
        print(
            json.dumps({"rows": digest.rows, "seconds": elapsed, "bytes": size, "rss_mb": rss_mb})
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ingest", type=int, default=200_000)
    parser.add_argument("--export-child")
    parser.add_argument(
        "--only", choices=["ingest"], help="run only this measure (quick check while tuning)"
    )
    parser.add_argument(
        "--random-ids",
        action="store_true",
        help="random UUID v4 event ids (default: ids that grow, as a log sequence or UUID v7)",
    )
    args = parser.parse_args()
    if args.export_child:
        export_child(args.export_child)
        return 0

    folder = Path(tempfile.mkdtemp(prefix="datapass-bench-audit-"))
    db_path = folder / "bench.db"
    app = make_app(db_path)
    from datapass.extensions import db

    with app.app_context():
        db.create_all()
    ingest_rate, ingest_cpu_rate = bench_ingest(app, args.ingest, args.random_ids)
    if args.only == "ingest":
        print(
            f"Ingestion `POST /api/v1/usage` (lots de 1 000, {args.ingest:,} événements) : "
            f"{ingest_rate:,.0f} événements/s (budget ≥ 100 000/s, charge moyenne "
            f"{os.getloadavg()[0]:.1f}) ; temps CPU du processus seul : "
            f"{ingest_cpu_rate:,.0f} événements/s"
        )
        shutil.rmtree(folder, ignore_errors=True)
        return 0

    chain_db = folder / "chain.db"
    chain_app = make_app(chain_db)
    with chain_app.app_context():
        db.create_all()
    started = time.perf_counter()
    generate_chain(chain_app, args.events)
    generated = time.perf_counter() - started
    verify_rate, checked = bench_verify(chain_app)

    child = subprocess.run(
        [sys.executable, __file__, "--export-child", str(chain_db)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    export = json.loads(child.stdout.strip().splitlines()[-1])
    export_rate = export["rows"] / export["seconds"]
    insert_ceiling, read_ceiling = sqlite_ceilings(chain_db)
    load = os.getloadavg()[0]

    print(
        f"(données : {args.events:,} événements d'audit générés en {generated:.1f} s ; "
        f"SQLite, {os.cpu_count()} cœurs, charge moyenne {load:.1f})"
    )
    print()
    print("| Mesure | Résultat | Budget | Verdict |")
    print("|---|---|---|---|")
    print(
        f"| Ingestion `POST /api/v1/usage` (lots de 1 000, {args.ingest:,} événements) | "
        f"{ingest_rate:,.0f} événements/s | ≥ 100 000/s | "
        f"{'OK' if ingest_rate >= 100_000 else 'HORS BUDGET'} |"
    )
    print(
        f"| Export CSV en flux ({export['rows']:,} lignes, {export['bytes'] / 1e6:,.0f} Mo) | "
        f"{export_rate:,.0f} lignes/s | ≥ 100 000/s | "
        f"{'OK' if export_rate >= 100_000 else 'HORS BUDGET'} |"
    )
    print(
        f"| Export CSV : mémoire maximale (processus dédié) | {export['rss_mb']:,.0f} Mo | "
        f"< 150 Mo | {'OK' if export['rss_mb'] < 150 else 'HORS BUDGET'} |"
    )
    print(
        f"| `audit verify` ({checked:,} événements) | {verify_rate:,.0f} événements/s | "
        f"≥ 200 000/s | {'OK' if verify_rate >= 200_000 else 'HORS BUDGET'} |"
    )
    print(
        "| Repère : ingestion au temps CPU du processus (hors attente du processeur) | "
        f"{ingest_cpu_rate:,.0f} événements/s | — | coût du code |"
    )
    print(
        "| Repère : SQLite nu, insertion des mêmes lignes (lots de 1 000) | "
        f"{insert_ceiling:,.0f} lignes/s | — | plafond de la machine |"
    )
    print(
        "| Repère : SQLite nu, lecture des lignes d'audit | "
        f"{read_ceiling:,.0f} lignes/s | — | plafond de la machine |"
    )
    shutil.rmtree(folder, ignore_errors=True)  # the generated databases are large
    return 0


if __name__ == "__main__":
    sys.exit(main())
