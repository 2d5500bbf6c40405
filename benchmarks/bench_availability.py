"""Availability budget (issue 10, DESIGN §2.10): on SQLite, introspection keeps a p99 under
50 ms, with no error, while a 4,000-token lifecycle sweep runs and while mails go out to an
SMTP server that takes 150 ms a message.

Served by gunicorn (2 workers) on a temporary SQLite database: 10,000 tokens of which 4,000
reach their 30-day reminder (``bench_sweep.build``), 200 live tokens that four client
threads introspect in turn with keep-alive connections, and 40 queued mails. The row cache
of introspection is off (``INTROSPECTION_CACHE_SECONDS=0``): every call reads the database,
the worst case. Three windows: nothing else running; the token sweep (its own process, as
the scheduler runs it); ``deliver_mails`` to a local aiosmtpd that sleeps 150 ms a message.
The figures are those of the calls that started within each window.

    .venv/bin/python benchmarks/bench_availability.py [--root DIR]

``--root`` runs the application from another checkout (e.g. ``git archive`` of an older
commit) to measure it before a change: the server, the build and the jobs all come from it.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench_introspect import _free_port, stop  # noqa: E402

from tests.reliability.peers import SmtpPeer  # noqa: E402

DUE, TOTAL, LIVE, MAILS, THREADS = 4000, 10_000, 200, 40, 4
SMTP_DELAY = 0.150
BUDGET_MS = 50.0

BUILD = """
import json, sys
sys.path.insert(0, "benchmarks")
from pathlib import Path
from datapass import clock, create_app
from datapass.extensions import db
import bench_sweep
args = json.loads(sys.argv[1])
app = create_app()
with app.app_context():
    clock.set_frozen(bench_sweep.NOW)
    bench_sweep.build(Path(args["db"]), args["total"], args["due"])
    db.session.commit()
    clock.set_frozen(None)
    from datapass.actor import Actor
    from datapass.notify import outbox
    from datapass.tokens import issuance
    from tests.tokens.conftest import make_api, make_client, make_habilitation, make_provider
    provider = make_provider(); api = make_api(provider)
    client, secret = make_client(provider)
    raws = [issuance.issue_for_habilitation(make_habilitation(api), Actor.system("bench"))[1]
            for _ in range(args["live"])]
    outbox.queue_mails([([f"agent{i}@mairie.fr"], "test_message", {"name": "C"})
                        for i in range(args["mails"])])
    db.session.commit()
    print(json.dumps({"client_id": client.client_id, "secret": secret, "tokens": raws}))
"""

JOB = """
import json, sys, time
from datetime import datetime
from datapass import clock, create_app
from datapass import scheduler
args = json.loads(sys.argv[1])
app = create_app()
job = next(j for j in scheduler.JOBS if j.name == args["job"])
if args.get("at"):
    clock.set_frozen(datetime.fromisoformat(args["at"]))
started = time.time()
result = scheduler.run_job(app, job)
print(json.dumps({"start": started, "end": time.time(), "result": result}, default=str))
"""


def _env(folder: Path, root: Path, smtp_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATAPASS_ENV": "development",
            "DATAPASS_DATABASE_URL": f"sqlite:///{folder}/bench.db",
            "DATAPASS_SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
            "DATAPASS_MASTER_KEY": base64.b64encode(b"i" * 32).decode(),
            "DATAPASS_BASE_URL": "https://datapass.bench",
            "DATAPASS_MAIL_DIR": f"{folder}/mail",
            "DATAPASS_MAIL_BACKEND": "smtp",
            "DATAPASS_SMTP_HOST": "127.0.0.1",
            "DATAPASS_SMTP_PORT": str(smtp_port),
            "DATAPASS_INTROSPECTION_CACHE_SECONDS": "0",
            "DATAPASS_ARGON2_TIME_COST": "1",  # the builders' users: not what is measured
            "DATAPASS_ARGON2_MEMORY_KIB": "1024",
            "PYTHONPATH": str(root),
        }
    )
    return env


def start(port: int, env: dict[str, str], root: Path) -> subprocess.Popen:
    """gunicorn (2 workers) serving the application of ``root``: started from ``root`` so
    that ``python -m`` puts it first on the path (before the venv's editable install)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}"]
        + ["--log-level", "warning", "--no-control-socket", "datapass:create_app()"],
        cwd=root,
        env=env,
        start_new_session=True,
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("gunicorn did not start")


def _python(code: str, args: dict, env: dict[str, str], root: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


class Load:
    """``THREADS`` clients introspecting the live tokens in turn, each call recorded as
    (wall-clock start, latency in ms, HTTP status or 0 for a transport error)."""

    def __init__(self, port: int, client_id: str, secret: str, tokens: list[str]):
        self.port, self.tokens = port, tokens
        auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        self.headers = {
            "Authorization": f"Basic {auth}",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        self.calls: list[tuple[float, float, int]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(THREADS)]

    def _run(self, offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        calls, i = [], offset
        while not self.stop.is_set():
            body = f"token={self.tokens[i % len(self.tokens)]}"
            i += THREADS
            started, t0 = time.time(), time.perf_counter()
            try:
                connection.request("POST", "/api/v1/introspect", body=body, headers=self.headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            calls.append((started, (time.perf_counter() - t0) * 1000, status))
        connection.close()
        self.calls.extend(calls)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def window(self, start: float, end: float) -> dict:
        inside = [(latency, status) for at, latency, status in self.calls if start <= at <= end]
        latencies = sorted(latency for latency, _ in inside)
        if not latencies:
            return {"calls": 0}
        return {
            "calls": len(latencies),
            "seconds": end - start,
            "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "max": latencies[-1],
            "errors": sum(1 for _, status in inside if status != 200),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=HERE.parent)
    args = parser.parse_args()
    root = args.root.resolve()
    folder = Path(tempfile.mkdtemp(prefix="bench-availability-"))
    smtp = SmtpPeer().start()
    smtp.delay = SMTP_DELAY
    env = _env(folder, root, smtp.port)
    build_args = {"db": str(folder / "bench.db"), "total": TOTAL, "due": DUE}
    began = time.perf_counter()
    data = _python(BUILD, {**build_args, "live": LIVE, "mails": MAILS}, env, root)
    print(f"base construite en {time.perf_counter() - began:.0f} s", file=sys.stderr)
    port = _free_port()
    server = start(port, env, root)
    results = {}
    try:
        load = Load(port, data["client_id"], data["secret"], data["tokens"])
        for token in data["tokens"] * 2:  # both workers up; every token's first use written
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.request("POST", "/api/v1/introspect", f"token={token}", load.headers)
            assert b'"active":true' in connection.getresponse().read()
            connection.close()
        with load:
            time.sleep(2)
            quiet = time.time()
            time.sleep(2)
            windows = {"sans tâche de fond": (quiet, time.time())}
            from bench_sweep import NOW

            sweep = _python(JOB, {"job": "token_lifecycle", "at": NOW.isoformat()}, env, root)
            windows[f"balayage de {DUE:,} jetons".replace(",", " ")] = (
                sweep["start"],
                sweep["end"],
            )
            time.sleep(0.5)
            mails = _python(JOB, {"job": "deliver_mails"}, env, root)
            windows[f"{MAILS} courriels, SMTP à 150 ms"] = (mails["start"], mails["end"])
            time.sleep(0.2)
        results = {name: load.window(*bounds) for name, bounds in windows.items()}
    finally:
        stop(server)
        smtp.stop()
    delivered = len(smtp.messages)
    print(f"application : {root}  (charge de la machine : {os.getloadavg()[0]:.1f})")
    print(f"sweep : {sweep['result']}  courriels reçus par le serveur SMTP : {delivered}")
    print(
        f"{'Fenêtre':<28} {'durée (s)':>9} {'appels':>7} {'p50 (ms)':>9} {'p99 (ms)':>9} "
        f"{'max (ms)':>9} {'erreurs':>7}  p99 < {BUDGET_MS:.0f} ms"
    )
    for name, r in results.items():
        if not r["calls"]:
            print(f"{name:<28} aucun appel dans la fenêtre")
            continue
        ok = r["p99"] < BUDGET_MS and r["errors"] == 0
        print(
            f"{name:<28} {r['seconds']:>9.2f} {r['calls']:>7} {r['p50']:>9.1f} {r['p99']:>9.1f} "
            f"{r['max']:>9.1f} {r['errors']:>7}  {'oui' if ok else 'NON'}"
        )


if __name__ == "__main__":
    main()
