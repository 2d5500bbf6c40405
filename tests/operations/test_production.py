"""The production layout of the README ("Déploiement"), started on this machine (issue 13):
production settings with secrets from ``*_FILE`` and ``DATABASE_URL``, PostgreSQL, a real SMTP
server (aiosmtpd), ``flask db upgrade``, ``flask datapass users create-admin``, gunicorn with
``gunicorn.conf.py`` (2 workers) and the scheduler as its own process. Then, through real
HTTP to gunicorn only: the administrator sets their password with the printed link and enrols
TOTP, an applicant submits a request, an instructor approves it, its token exists; and both
processes stop cleanly on SIGTERM.

The test stands for the TLS reverse proxy in front of gunicorn: its requests carry
``X-Forwarded-Proto: https`` and ``X-Forwarded-For`` (``DATAPASS_TRUSTED_PROXIES=1``), the
``Secure`` session cookie and the ``Referer`` a browser sends over HTTPS.

It needs its own empty database (``flask db upgrade`` builds the schema from nothing): the
test database's name with ``_production``, created and dropped here."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin

import pyotp
import pytest
import requests
from sqlalchemy import create_engine, text

from datapass import config as config_module
from tests.conftest import PG_URL, missing
from tests.reliability.peers import SmtpPeer
from tests.reliability.servers import ROOT, Gunicorn, Process, flask_command, free_port

pytestmark = pytest.mark.postgres

COMMAND_DEADLINE = 60.0  # seconds for one `flask …` command (imports, argon2, PostgreSQL)
ADMIN = "premiere.admin@dinum.example.fr"
ADMIN_PASSWORD = "Administratrice-Production-2026"


@pytest.fixture
def production_database():
    """An empty PostgreSQL database beside the test database, dropped afterwards."""
    if not PG_URL:
        missing("PostgreSQL indisponible : DATAPASS_TEST_DATABASE_URL n'est pas défini")
    base, _, name = PG_URL.partition("?")[0].rpartition("/")
    database = f"{name}_production"
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    drop()
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    try:
        yield f"{base}/{database}"
    finally:
        drop()
        admin.dispose()


def production_environment(folder: Path, database_url: str, port: int, smtp_port: int) -> dict:
    """What an operator exports (README, "Déploiement"): secrets in files, the database as a
    hosting platform names it, a real SMTP server, one trusted reverse proxy."""
    secrets = folder / "secrets"
    secrets.mkdir(mode=0o700)
    for name, value in (
        ("secret_key", os.urandom(32).hex()),
        ("master_key", config_module.new_master_key()),
    ):
        path = secrets / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DATAPASS_")
        and key not in {"DATABASE_URL", "SECRET_KEY", "HOST", "PORT", "WEB_CONCURRENCY"}
    }
    env.update(
        {
            "DATAPASS_ENV": "production",
            "DATAPASS_SECRET_KEY_FILE": str(secrets / "secret_key"),
            "DATAPASS_MASTER_KEY_FILE": str(secrets / "master_key"),
            # postgresql:// as platforms give it: Datapass reads it with psycopg 3.
            "DATABASE_URL": database_url.replace("postgresql+psycopg://", "postgresql://", 1),
            "DATAPASS_BASE_URL": f"https://127.0.0.1:{port}",
            "DATAPASS_TRUSTED_PROXIES": "1",
            "DATAPASS_MAIL_BACKEND": "smtp",
            "DATAPASS_SMTP_HOST": "127.0.0.1",
            "DATAPASS_SMTP_PORT": str(smtp_port),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run(env: dict, *args: str) -> str:
    """A one-off command (migrations, the first administrator…), waited on with a deadline;
    its output, or a failure that shows it."""
    result = subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COMMAND_DEADLINE,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} a échoué :\n{output}"
    assert "Traceback" not in output, output
    return result.stdout


class Browser:
    """One person's browser, as gunicorn sees it through the reverse proxy. The proxy
    terminates TLS and talks to gunicorn in clear on the loopback: the ``Secure`` cookies the
    browser holds go with each request all the same (kept here, since an HTTP client keeps
    them for ``https://`` only), and each request carries the proxy's headers."""

    def __init__(self, server_url: str, public_url: str, ip: str):
        self.server_url = server_url
        self.session = requests.Session()
        self.session.headers.update(
            {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-For": ip,
                # Over HTTPS, Flask-WTF wants a same-origin Referer on each form.
                "Referer": f"{public_url}/",
            }
        )
        self.cookies: dict[str, str] = {}
        self.page = ""

    def _send(self, method: str, path: str, data: dict | None = None) -> requests.Response:
        url = f"{self.server_url}{path}"
        for _ in range(10):
            response = self.session.request(
                method,
                url,
                data=data,
                headers={"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())},
                allow_redirects=False,
                timeout=20,
            )
            self.cookies.update({cookie.name: cookie.value for cookie in response.cookies})
            if not response.is_redirect:
                return response
            url, method, data = urljoin(url, response.headers["Location"]), "GET", None
        raise AssertionError(f"trop de redirections depuis {path}")

    def get(self, path: str) -> requests.Response:
        response = self._send("GET", path)
        assert response.status_code == 200, f"GET {path} : {response.status_code}"
        self.page = response.text
        return response

    def submit(self, path: str, data: dict, *, read_from: str | None = None) -> requests.Response:
        """Post the form of ``path`` (or of the page at ``read_from``) with its CSRF token, as
        a browser does; follows the redirections and expects a page."""
        form_page = self.get(read_from or path).text
        token = re.search(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"', form_page)
        assert token, f"pas de jeton CSRF sur {read_from or path}"
        response = self._send("POST", path, {"csrf_token": token[1], **data})
        main = response.text[response.text.find("<main") :][:1500]
        assert response.status_code == 200, f"POST {path} : {response.status_code}\n{main}"
        self.page = response.text
        return response

    def sign_in(self, email: str, password: str) -> requests.Response:
        return self.submit("/connexion", {"email": email, "password": password, "next": ""})

    def close(self) -> None:
        self.session.close()


def stop_cleanly(process: Process, what: str) -> None:
    """SIGTERM, as ``systemctl stop`` or ``docker stop`` sends it to the main process: exit
    code 0 and no traceback, before the deadline."""
    process.popen.send_signal(signal.SIGTERM)
    code = process.wait(deadline=40)
    output = process.output()
    assert code == 0, f"{what} : code de sortie {code}\n{output}"
    assert "Traceback" not in output, f"{what} :\n{output}"


def test_production_layout_from_first_admin_to_an_approved_request(tmp_path, production_database):
    port = free_port()
    smtp = SmtpPeer().start()
    env = production_environment(tmp_path, production_database, port, smtp.port)
    public_url = env["DATAPASS_BASE_URL"]
    processes: list[Process] = []
    browsers: list[Browser] = []
    engine = create_engine(production_database)
    try:
        run(env, "-m", "flask", "--app", "app", "db", "upgrade")

        printed = run(
            env, "-m", "flask", "--app", "app", "datapass", "users", "create-admin", ADMIN,
            "--name", "Première Administratrice",
        )  # fmt: skip
        link = re.search(rf"^{re.escape(public_url)}(/invitation/\S+)$", printed, re.M)
        assert link, printed
        invitation = link[1]
        # A first sweep on the new database (README): the current signing key, the first
        # audit checkpoint, and the invitation mail out through the real SMTP server.
        run(env, "-m", "flask", "--app", "app", "datapass", "sweep")
        mails = smtp.wait_for(1)
        assert any(m["To"] == ADMIN and "invitation/" in str(m) for m in mails)

        scheduler = flask_command(env, "scheduler")
        processes.append(scheduler)
        web = Gunicorn(env, workers=2, config_file="gunicorn.conf.py", port=port)
        processes.append(web)
        # While they start: what an approval needs, from another process.
        seeded = json.loads(run(env, "-m", "tests.operations.seed"))
        # Ready: both workers answer /readyz with 200 (schema at head, a current key, the
        # scheduler's heartbeat, a recent audit checkpoint).
        web.wait_ready(deadline=60, path="/readyz")
        assert "gthread" in web.output()  # the worker class chosen by gunicorn.conf.py
        assert len(web.worker_pids()) == 2

        # The first administrator: password through the printed link, then TOTP enrolment.
        admin = Browser(web.url, public_url, "198.51.100.10")
        browsers.append(admin)
        response = admin.submit(invitation, {"password": ADMIN_PASSWORD, "confirm": ADMIN_PASSWORD})
        assert response.url.endswith("/connexion")
        response = admin.sign_in(ADMIN, ADMIN_PASSWORD)
        assert "/profil/double-authentification" in response.url
        secret = re.search(r'data-secret="([A-Z2-7]+)"', response.text)[1]
        admin.submit("/profil/double-authentification", {"code": pyotp.TOTP(secret).now()})
        assert admin.get("/admin/utilisateurs").status_code == 200
        assert ADMIN in admin.page

        request_id = seeded["request_id"]
        request_path = f"/demandes/{request_id}"

        applicant = Browser(web.url, public_url, "198.51.100.20")
        browsers.append(applicant)
        applicant.sign_in(seeded["applicant"], seeded["password"])
        response = applicant.submit(
            f"{request_path}/actions/submit", {"text": ""}, read_from=request_path
        )
        assert response.url.endswith(request_path)

        instructor = Browser(web.url, public_url, "198.51.100.30")
        browsers.append(instructor)
        response = instructor.sign_in(seeded["instructor"], seeded["password"])
        assert response.url.endswith("/connexion/verification")
        code = pyotp.TOTP(seeded["instructor_totp_secret"]).now()
        instructor.submit("/connexion/verification", {"code": code})
        response = instructor.submit(
            f"{request_path}/actions/approve",
            {"text": "Conforme au cadre juridique."},
            read_from=request_path,
        )
        assert response.url.endswith(request_path)

        with engine.connect() as connection:
            state = connection.scalar(
                text("SELECT state FROM authorization_requests WHERE id = :id"),
                {"id": request_id},
            )
            tokens = connection.execute(
                text(
                    "SELECT t.status FROM access_tokens t "
                    "JOIN habilitations h ON h.id = t.habilitation_id WHERE h.request_id = :id"
                ),
                {"id": request_id},
            ).all()
        assert state == "validated"
        assert [row.status for row in tokens] == ["active"]
        # Its signing key is published for the providers.
        jwks = requests.get(f"{web.url}/.well-known/jwks.json", timeout=10).json()
        assert jwks["keys"]

        assert scheduler.alive(), scheduler.output()
        for browser in browsers:  # the reverse proxy closes its connections
            browser.close()
        stop_cleanly(web, "gunicorn")
        stop_cleanly(scheduler, "planificateur")
    finally:
        for browser in browsers:
            browser.close()
        for process in processes:
            process.kill()
        smtp.stop()
        engine.dispose()
