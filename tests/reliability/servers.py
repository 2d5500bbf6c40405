"""Real processes for the reliability suite: gunicorn workers and ``flask datapass`` commands
run against the test database, waited on with a condition and a deadline, and always killed
at teardown (their whole process group)."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import base_config

ROOT = Path(__file__).resolve().parents[2]


class Timeout(AssertionError):
    """A condition that did not come true before its deadline."""


def wait_for(
    condition: Callable[[], Any], deadline: float = 10.0, every: float = 0.02, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something true (returned), or fail after
    ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise Timeout(f"toujours faux après {deadline} s : {what or condition}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(database_url: str, **settings: Any) -> dict[str, str]:
    """The environment of a Datapass process on the tests' database, with the tests' keys
    (``settings``: more ``DATAPASS_*`` values, by key without the prefix)."""
    config = base_config(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPASS_")}
    folder = tempfile.mkdtemp(prefix="datapass-reliability-")
    env.update(
        {
            "DATAPASS_ENV": "development",
            "DATAPASS_DATABASE_URL": database_url,
            "DATAPASS_SECRET_KEY": config["SECRET_KEY"],
            "DATAPASS_MASTER_KEY": config["MASTER_KEY"],
            "DATAPASS_BASE_URL": config["BASE_URL"],
            "DATAPASS_MAIL_BACKEND": "file",
            "DATAPASS_MAIL_DIR": f"{folder}/mail",
            "DATAPASS_ARGON2_TIME_COST": str(config["ARGON2_TIME_COST"]),
            "DATAPASS_ARGON2_MEMORY_KIB": str(config["ARGON2_MEMORY_KIB"]),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"DATAPASS_{key}": str(value) for key, value in settings.items()})
    return env


class Process:
    """A child process in its own process group (so that a signal reaches all of it)."""

    def __init__(self, args: list[str], env: dict[str, str]):
        # Kept open as long as the process runs (closed by kill()).
        self.log = tempfile.NamedTemporaryFile(prefix="datapass-process-", suffix=".log")  # noqa: SIM115
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """``sig`` to the whole group (gunicorn's master and its workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def wait(self, deadline: float = 15.0) -> int:
        try:
            return self.popen.wait(timeout=deadline)
        except subprocess.TimeoutExpired as error:
            raise Timeout(f"processus {self.pid} toujours vivant après {deadline} s") from error

    def kill(self) -> None:
        """Teardown: SIGKILL to the group, whatever its state."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self.log.close()


class Gunicorn(Process):
    """``gunicorn -w N 'datapass:create_app()'`` on a free loopback port; with
    ``config_file``, ``gunicorn -c <config_file>`` as production starts it (the file reads the
    port and the number of workers from ``PORT`` and ``WEB_CONCURRENCY``)."""

    def __init__(
        self,
        env: dict[str, str],
        workers: int = 2,
        *,
        config_file: str | None = None,
        port: int | None = None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if config_file is not None:
            env = {
                **env,
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "WEB_CONCURRENCY": str(workers),
            }
            args = [sys.executable, "-m", "gunicorn", "-c", config_file]
        else:
            args = [
                sys.executable,
                "-m",
                "gunicorn",
                "-w",
                str(workers),
                "-b",
                f"127.0.0.1:{self.port}",
                "--no-control-socket",
                "--graceful-timeout",
                "20",
                "--log-level",
                "warning",
                "datapass:create_app()",
            ]
        super().__init__(args, env)
        self.workers = workers

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def wait_ready(self, deadline: float = 30.0, path: str = "/.well-known/jwks.json") -> Gunicorn:
        """Every worker booted and answering ``path``."""

        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"gunicorn s'est arrêté :\n{self.output()}")
            if len(self.worker_pids()) < self.workers:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}{path}", timeout=2):
                    return True
            except (OSError, urllib.error.URLError):
                return False

        wait_for(ready, deadline, every=0.05, what="gunicorn prêt")
        return self


def flask_command(env: dict[str, str], *args: str) -> Process:
    """``flask --app app datapass <args>`` (the scheduler, a sweep, the demo…)."""
    return Process([sys.executable, "-m", "flask", "--app", "app", "datapass", *args], env)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
