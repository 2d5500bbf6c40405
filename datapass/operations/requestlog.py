"""Logs in JSON on request (``DATAPASS_LOG_FORMAT=json``): every log record becomes one JSON
line, and each request writes one line (``datapass.requests``) with its id, method, route
(the URL rule, not the raw path: no identifier or token in it), status and duration.

In text mode (the default) nothing is added per request. In JSON mode, one hook before and
one after each request, without any database access (measured on the machine API:
benchmarks/README.md).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from flask import Flask, has_request_context, request

from datapass import web
from datapass.config import ConfigError

log = logging.getLogger("datapass.requests")
_STARTED_KEY = "datapass.request_started"  # in the WSGI environ, beside the request id

FORMATS = ("text", "json")
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message, the fields passed in
    ``extra`` and, inside a request, its id; an exception's traceback in ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        # As logging.Formatter does: handlers and tools after this one read record.message.
        record.message = record.getMessage()
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.message,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if "request_id" not in entry and has_request_context():
            rid = web.known_request_id()
            if rid is not None:
                entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _started() -> None:
    request.environ[_STARTED_KEY] = time.perf_counter()


def _finished(response):
    req = request._get_current_object()
    environ = req.environ
    started = environ.get(_STARTED_KEY)
    rid = web.request_id()
    response.headers[web.REQUEST_ID_HEADER] = rid
    if log.isEnabledFor(logging.INFO):
        rule = req.url_rule
        fields = {
            "request_id": rid,
            "method": req.method,
            "route": rule.rule if rule is not None else None,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2)
            if started is not None
            else None,
        }
        # The record made directly: ``log.info`` would also look for its caller's source
        # line in the stack, on every request, for a line that never shows it.
        log.handle(
            log.makeRecord(log.name, logging.INFO, __file__, 0, "requête", (), None, extra=fields)
        )
    return response


def use_json_logs() -> None:
    """Every handler of the root logger writes JSON lines."""
    formatter = JsonFormatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def init_app(app: Flask) -> None:
    form = app.config.get("LOG_FORMAT", "text")
    if form not in FORMATS:
        raise ConfigError(f"DATAPASS_LOG_FORMAT doit valoir text ou json ({form!r}).")
    if form != "json":
        return
    use_json_logs()
    # First of the hooks (before the refusal of hostile input and access control, which may
    # answer at once), so that every request is timed.
    app.before_request_funcs.setdefault(None, []).insert(0, _started)
    app.after_request(_finished)
