"""Introspection budget (DESIGN §6): served by gunicorn (2 workers) and loaded with wrk on
loopback, ``POST /api/v1/introspect`` reaches ≥ 0.8 × the requests/s of a trivial Flask
endpoint served the same way in the same run, with p99 < 20 ms at 8 connections.

    .venv/bin/python benchmarks/bench_introspect.py [--duration 5] [--rounds 5]

Needs /usr/bin/wrk. SQLite in a temporary folder (``--database-url`` for PostgreSQL).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from flask import Flask, jsonify, request

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The reference: a trivial Flask endpoint, same method, same body, same server.
trivial = Flask(__name__)


@trivial.post("/api/v1/introspect")
def trivial_introspect():
    return jsonify({"active": bool(request.form.get("token"))})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(folder: str, url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATAPASS_ENV": "development",
            "DATAPASS_DATABASE_URL": url or f"sqlite:///{folder}/bench.db",
            "DATAPASS_SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
            "DATAPASS_MASTER_KEY": base64.b64encode(b"i" * 32).decode(),
            "DATAPASS_BASE_URL": "https://datapass.bench",
            "DATAPASS_MAIL_DIR": f"{folder}/mail",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def seed(env: dict[str, str]) -> dict[str, str]:
    """Tables, a provider with its machine client, a habilitation and its token."""
    code = """
import json
from datapass import create_app
from datapass.actor import Actor
from datapass.extensions import db
from datapass.tokens import issuance
from tests.tokens.conftest import make_api, make_client, make_habilitation, make_provider
app = create_app()
with app.app_context():
    db.drop_all(); db.create_all()
    provider = make_provider(); api = make_api(provider)
    client, secret = make_client(provider)
    token, raw = issuance.issue_for_habilitation(make_habilitation(api), Actor.system("bench"))
    db.session.commit()
    print(json.dumps({"client_id": client.client_id, "secret": secret, "token": raw}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def start(target: str, port: int, env: dict[str, str], chdir: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "--no-control-socket",  # two servers at once: no shared control socket
            "--chdir",
            str(chdir),
            target,
        ],
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
    raise RuntimeError(f"gunicorn {target} did not start")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=10)


def wrk(url: str, script: Path, duration: int) -> tuple[float, float]:
    out = subprocess.run(
        ["wrk", "-t2", "-c8", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    if "Non-2xx" in out:
        raise RuntimeError("wrk saw non-2xx answers:\n" + out)
    return rps, p99


def main() -> None:
    parser = argparse.ArgumentParser()
    # Short interleaved rounds and their medians: a burst of other work on the machine then
    # spoils one round, not the verdict.
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk est introuvable (/usr/bin/wrk).")
    folder = tempfile.mkdtemp(prefix="bench-introspect-")
    env = _env(folder, args.database_url)
    data = seed(env)
    auth = base64.b64encode(f"{data['client_id']}:{data['secret']}".encode()).decode()
    script = Path(folder) / "introspect.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "token={data["token"]}"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        f'wrk.headers["Authorization"] = "Basic {auth}"\n'
    )
    ports = {"trivial": _free_port(), "datapass": _free_port()}
    servers = {
        "trivial": start("bench_introspect:trivial", ports["trivial"], env, ROOT / "benchmarks"),
        "datapass": start("datapass:create_app()", ports["datapass"], env, ROOT),
    }
    results: dict[str, list[tuple[float, float]]] = {"trivial": [], "datapass": []}
    try:
        check = urllib.request.Request(
            f"http://127.0.0.1:{ports['datapass']}/api/v1/introspect",
            data=f"token={data['token']}".encode(),
            headers={"Authorization": f"Basic {auth}"},
        )
        with urllib.request.urlopen(check) as response:
            assert json.load(response)["active"] is True, "the token must be active"
        for port in ports.values():  # warm up
            wrk(f"http://127.0.0.1:{port}/api/v1/introspect", script, 2)
        for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
            for name, port in ports.items():
                url = f"http://127.0.0.1:{port}/api/v1/introspect"
                results[name].append(wrk(url, script, args.duration))
    finally:
        for process in servers.values():
            stop(process)
    trivial_rps = statistics.median(r for r, _ in results["trivial"])
    datapass_rps = statistics.median(r for r, _ in results["datapass"])
    datapass_p99 = statistics.median(p for _, p in results["datapass"])
    trivial_p99 = statistics.median(p for _, p in results["trivial"])
    # Each round's two runs are neighbours in time: the median of their ratios.
    ratios = sorted(
        d / t for (t, _), (d, _) in zip(results["trivial"], results["datapass"], strict=True)
    )
    ratio = statistics.median(ratios)
    print(f"{'Mesure (gunicorn 2 workers, wrk 8 connexions)':<48} {'Valeur':>10} {'Budget':>8}  OK")
    rows = [
        ("Flask trivial (req/s)", f"{trivial_rps:,.0f}", "—", True),
        ("Flask trivial p99 (ms)", f"{trivial_p99:.2f}", "—", True),
        ("Introspection (req/s)", f"{datapass_rps:,.0f}", "—", True),
        ("Introspection p99 (ms)", f"{datapass_p99:.2f}", "< 20", datapass_p99 < 20),
        ("Introspection / trivial (médiane des manches)", f"{ratio:.2f}", "≥ 0,80", ratio >= 0.8),
        ("  manche la plus basse / la plus haute", f"{ratios[0]:.2f}–{ratios[-1]:.2f}", "—", True),
    ]
    for name, value, budget, ok in rows:
        print(f"{name:<48} {value:>10} {budget:>8}  {'oui' if ok else 'NON'}")


if __name__ == "__main__":
    main()
