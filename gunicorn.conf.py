"""gunicorn settings for Datapass in production: ``gunicorn -c gunicorn.conf.py`` from the
checkout (the scheduler runs as its own process: ``flask --app app datapass scheduler``).

Environment (read here, by gunicorn, before the application starts):

- ``PORT`` (8000) and ``HOST`` (0.0.0.0): where to listen, behind the TLS reverse proxy;
- ``WEB_CONCURRENCY``: worker processes (default: 2 per CPU + 1, at most 8);
- ``WEB_THREADS``: threads per worker (default 4);
- ``WEB_TIMEOUT``: seconds a worker's main loop may stay silent before it is restarted (60).

The application's own settings (``DATAPASS_*`` and their ``*_FILE`` forms, ``DATABASE_URL``)
are read by ``datapass.config`` in each worker.
"""

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) <= 0:
        raise SystemExit(f"{name} doit être un entier positif (reçu {value!r}).")
    return int(value)


wsgi_app = "app:app"

_host = os.environ.get("HOST", "").strip() or "0.0.0.0"  # noqa: S104 (a container or a VM)
if ":" in _host and not _host.startswith("["):
    _host = f"[{_host}]"
bind = [f"{_host}:{_int('PORT', 8000)}"]

# Threaded workers (gthread), not the default sync ones. Datapass streams long responses (an
# audit export of a million events, large CSV/XLSX exports) and serves many short API calls
# (introspection, JWKS) at once. A sync worker handles one request at a time and only tells
# the master it is alive between requests: a download longer than ``timeout`` (30 s by
# default) gets the worker killed mid-stream, and the client receives a 200 with a truncated
# body. A gthread worker answers in a thread pool while its main loop tells the master it is
# alive every second, whatever the requests do: a streamed export runs to its end, however
# long, and ``timeout`` only catches a worker whose main loop is stuck.
worker_class = "gthread"
workers = _int("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count() + 1, 8))
threads = _int("WEB_THREADS", 4)

# A stuck worker (its main loop silent this long) is killed and replaced. It does not bound a
# request's duration with gthread (see above), so it can stay short.
timeout = _int("WEB_TIMEOUT", 60)
# On SIGTERM (systemctl stop, docker stop, an upgrade), requests in progress have this long
# to finish, and each worker then writes the introspection calls it has not counted yet
# (atexit). Keep the process manager's own stop timeout above it (systemd TimeoutStopSec,
# docker stop -t, Kubernetes terminationGracePeriodSeconds).
graceful_timeout = _int("WEB_GRACEFUL_TIMEOUT", 30)
# The reverse proxy keeps connections open to the workers: a little above a request gap.
keepalive = 5

# Each worker imports the application itself (no preload): database pools, the usage
# flusher's thread and the signing keys' caches are each process's own, never shared by fork.
preload_app = False
# No max_requests: a worker restarted after N requests stops gracefully, and a streamed
# export in progress would be cut after graceful_timeout.

# A request line and headers of reasonable size (the reverse proxy sets the same limits).
limit_request_line = 8190
limit_request_fields = 100

# Logs to standard output and error (the process manager collects them); the access log
# says who asked what, through the reverse proxy. With DATAPASS_LOG_FORMAT=json, Datapass
# writes one JSON line per request itself (request id, route, status, duration): gunicorn's
# plain-text access line would only repeat it in another format.
accesslog = None if os.environ.get("DATAPASS_LOG_FORMAT", "").lower() == "json" else "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# The client's address as the reverse proxy says it (X-Forwarded-For); Datapass reads the
# same header itself through DATAPASS_TRUSTED_PROXIES.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# No control socket in the working directory (a read-only checkout in production).
control_socket_disable = True
