"""Each process's background writer of the introspection use buffer.

Introspection answers from memory and notes the call in the process's use buffer
(:func:`datapass.tokens.uses.record_use`); this thread writes the buffer every
``USAGE_FLUSH_SECONDS`` (1 s by default), and at once when it is full. So a request never
waits on that write, and a process that is killed hard (SIGKILL, OOM) loses at most the calls
of its last interval plus the flush in flight. A process that stops normally (gunicorn's
SIGTERM, SIGQUIT or SIGABRT to a worker, ``sys.exit``, Ctrl-C) flushes what is left on its way
out (``atexit``). A failed flush puts its calls back in the buffer: the next one retries them.

Started on the first buffered call of a process (tokens sends ``signals.use_buffer_due``),
never by ``create_app``; a forked child starts its own (the parent's thread and buffer are not
its own).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from datapass import signals
from datapass.consumption import flush
from datapass.extensions import db
from datapass.tokens import uses

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("datapass.usage_flusher")

STOP_TIMEOUT = 10.0  # seconds a stopping process waits for the flush in flight


class Flusher:
    """The thread that flushes the use buffer of this process every ``interval`` seconds."""

    def __init__(self, app: Flask, interval: float):
        self.app = app
        self.interval = interval
        self.wakeup = threading.Event()
        self.stopping = False
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name="datapass-usage-flusher", daemon=True)

    def _run(self) -> None:
        while not self.stopping:
            self.wakeup.wait(self.interval)
            self.wakeup.clear()
            if self.stopping:
                return
            self.flush()

    def flush(self) -> int:
        """Write the buffer now, in its own app context and transaction; returns how many
        calls were written (0 when the flush failed: they are back in the buffer)."""
        with self.app.app_context():
            try:
                written = flush.flush_usage_committed()
            except Exception:
                self.failures += 1
                if self.failures == 1 or self.failures % 60 == 0:
                    log.exception(
                        "use buffer not written (%d failure(s) in a row); %d call(s) kept",
                        self.failures,
                        uses.buffered_calls(),
                    )
                return 0
            finally:
                db.session.remove()
        if self.failures:
            log.warning("use buffer written again after %d failure(s)", self.failures)
            self.failures = 0
        return written

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the thread, then flush what is left (in the calling thread)."""
        self.stopping = True
        self.wakeup.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        self.flush()
        left = uses.buffered_calls()
        if left:
            log.error("%d introspection call(s) could not be counted before exit", left)


active: Flusher | None = None  # this process's, once started
_start_lock = threading.Lock()


def ensure_started(app: Flask, interval: float) -> Flusher:
    """This process's flusher, started on first use."""
    global active
    flusher = active
    if flusher is not None:
        return flusher
    with _start_lock:
        if active is None:
            active = Flusher(app, interval)
            active.thread.start()
            uses.flusher_wakeup = active.wakeup
        return active


def wake() -> None:
    """Ask for a flush now (the buffer is full)."""
    flusher = active
    if flusher is not None:
        flusher.wakeup.set()


def stop() -> None:
    """Stop this process's flusher and write what is left (a graceful exit)."""
    global active
    with _start_lock:
        flusher, active = active, None
        uses.flusher_wakeup = None
    if flusher is not None:
        flusher.stop()


def _after_fork_in_child() -> None:
    # The parent's thread does not exist here and its lock may have been held at the fork.
    global active, _start_lock
    active = None
    _start_lock = threading.Lock()


@signals.use_buffer_due.connect
def _on_use_buffer_due(
    app: Flask, *, every: float, full: bool, at: datetime | None = None, **_extra: Any
) -> int:
    """Tokens' use buffer needs writing: inline (``every == 0``) now, in the request's
    transaction; otherwise by this process's flusher, started on its first call."""
    if every <= 0:
        return flush.flush_usage(at)
    flusher = active or ensure_started(app, every)
    if full:
        flusher.wakeup.set()
    return 0


atexit.register(stop)
os.register_at_fork(after_in_child=_after_fork_in_child)
