"""Instructor queue budget (DESIGN §6): with 100,000 requests, the queue page renders in
under 200 ms of server time.

The data set is built by ``demo --scale N`` (bulk inserts); the demo instructor (who
instructs the five API Particulier APIs) then loads the queue through the WSGI app (no
network), for the default view and each filter; the median and 95th percentile of the
server time are printed as a table.

    .venv/bin/python benchmarks/bench_queue.py [--requests 100000] [--repeat 15]
                                               [--database-url postgresql+psycopg://…]

SQLite in a temporary folder by default.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUDGET_MS = 200.0
MASTER_KEY = "YmVuY2htYXJrLW1hc3Rlci1rZXktMDEyMzQ1Njc4OWE="


def make_app(url: str):
    from datapass import create_app

    app = create_app(
        {
            "ENV": "development",
            "DATABASE_URL": url,
            "SECRET_KEY": "benchmark-secret-key-long-enough-0123456789",
            "MASTER_KEY": MASTER_KEY,
            "BASE_URL": "http://datapass.bench",
            "MAIL_DIR": tempfile.mkdtemp(prefix="datapass-bench-mail-"),
            "DEMO_SKIP_MFA": True,
            "ARGON2_TIME_COST": 1,
            "ARGON2_MEMORY_KIB": 1024,
        }
    )
    app.config["WTF_CSRF_ENABLED"] = False
    return app


def build(app, n: int) -> float:
    from datapass import demo
    from datapass.extensions import db

    with app.app_context():
        db.drop_all()
        db.create_all()
        started = time.perf_counter()
        demo.run_demo(scale=n)
        db.session.commit()
        return time.perf_counter() - started


def measure(app, repeat: int) -> list[tuple[str, float, float, int]]:
    from datapass import clock
    from datapass.accounts.models import User
    from datapass.authorizations.models import AuthorizationRequest
    from datapass.catalogue.models import Api
    from datapass.extensions import db

    with app.app_context():
        instructor = db.session.scalar(
            db.select(User).where(User.email == "instructeur@demo.datapass.gouv.fr")
        )
        identity = instructor.get_id()
        api_id = db.session.scalar(db.select(Api.id).where(Api.slug == "statut-etudiant"))
        total = db.session.scalar(db.select(db.func.count(AuthorizationRequest.id)))
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = identity
        session["_fresh"] = True
        session["auth_at"] = clock.now().isoformat()
    cases = [
        ("File par défaut (à instruire, page 1)", "/instruction"),
        ("Tous les états", "/instruction?etat="),
        ("Page 200 (à instruire)", "/instruction?page=200"),
        ("Filtre API", f"/instruction?api={api_id}"),
        ("Filtre organisation (nom)", "/instruction?etat=&organisation=n%C2%B0+4242"),
        ("Recherche libre (intitulé)", "/instruction?etat=&q=n%C2%B0+99"),
        ("Recherche par référence", "/instruction?etat=&q=DP-050000"),
    ]
    rows = []
    for label, url in cases:
        assert client.get(url).status_code == 200, url  # warm-up (and a sanity check)
        timings = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(url)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        timings.sort()
        p95 = timings[max(0, round(0.95 * len(timings)) - 1)]
        rows.append((label, statistics.median(timings), p95, total))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="datapass-bench-queue-"))
    url = args.database_url or f"sqlite:///{folder / 'queue.db'}"
    app = make_app(url)
    seconds = build(app, args.requests)
    backend = url.split(":", 1)[0]
    print(f"Jeu de données : demo --scale {args.requests} en {seconds:.1f} s ({backend})")
    rows = measure(app, args.repeat)
    print()
    title = f"Page de la file (instructeur, {rows[0][3]} demandes)"
    print(f"| {title} | médiane (ms) | p95 (ms) | budget |")
    print("|---|---:|---:|---|")
    ok = True
    for label, median, p95, _ in rows:
        verdict = "OK" if median < BUDGET_MS else "DÉPASSÉ"
        ok &= median < BUDGET_MS
        print(f"| {label} | {median:.1f} | {p95:.1f} | < {BUDGET_MS:.0f} ms : {verdict} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
