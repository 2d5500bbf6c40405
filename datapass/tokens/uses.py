"""The introspection use buffer: every introspection is counted, from an in-process buffer.

Each introspection call is noted here, then written as consumption (daily counts, last
calls, last use) by a flush that the consumption domain runs: it PULLS the buffer
(:func:`take`, then :func:`mark_written`, or :func:`give_back` when writing failed), so this
module never imports consumption. The flush runs every ``USAGE_FLUSH_SECONDS`` in the
process's background flusher (:mod:`datapass.consumption.flusher`), never inside a request.
With ``USAGE_FLUSH_SECONDS = 0`` (tests) there is no thread: the request that finds the
buffer due writes it (its caller commits).

Consumption is told through :data:`datapass.signals.use_buffer_due` only when it must act
(no flusher yet in this process, the buffer full, or inline a flush due), never on every
call: :func:`record_use` is on introspection's hot path.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta
from typing import Any

from flask import current_app

from datapass import clock, signals

# A call is ``(digest, at, ip)``; calls of a long database outage are compacted into
# ``(digest, at, None, count)``: ``count`` calls of that token on ``at``'s Paris day.
_USE_CALLS: list[tuple] = []
# A buffer that holds this many calls is written at once (by the flusher, woken), so that a
# flush stays a small batch.
MAX_BUFFERED_CALLS = 5000
_USE_WRITTEN: dict[str, datetime] = {}  # last use this process wrote, by digest (inline mode)
_USE_LOCK = threading.Lock()
_last_flush: list[datetime | None] = [None]
# The running flusher's wake-up (set by the flusher when it starts, None when there is none).
flusher_wakeup: threading.Event | None = None


def record_use(
    digest: str,
    at: datetime,
    ip: str | None,
    last_written: datetime | None,
    interval: timedelta,
) -> bool:
    """Note one introspection of a token. With a background flusher (``USAGE_FLUSH_SECONDS``
    > 0) that is all: returns False. Inline (0), the buffer is written here when this token's
    last written use (stored, or written by this process), or the buffer itself, is older
    than ``TOKEN_USE_FLUSH_SECONDS`` (``interval``), or when it is full: returns True when it
    wrote (the caller commits)."""
    every = current_app.config.get("USAGE_FLUSH_SECONDS", 1.0)
    if every > 0:
        with _USE_LOCK:
            _USE_CALLS.append((digest, at, ip))
            full = len(_USE_CALLS) >= MAX_BUFFERED_CALLS
        wakeup = flusher_wakeup
        if wakeup is None:  # the first call of this process: the flusher starts
            signals.use_buffer_due.send(current_app._get_current_object(), every=every, full=full)
        elif full:
            wakeup.set()
        return False
    with _USE_LOCK:
        _USE_CALLS.append((digest, at, ip))
        mine = _USE_WRITTEN.get(digest)
        if mine is not None and (last_written is None or mine > last_written):
            last_written = mine
        stale = last_written is None or at - last_written >= interval
        buffer_old = _last_flush[0] is None or at - _last_flush[0] >= interval
        buffer_full = len(_USE_CALLS) >= MAX_BUFFERED_CALLS
    if stale or buffer_old or buffer_full:
        written = signals.use_buffer_due.send(
            current_app._get_current_object(), every=every, full=buffer_full, at=at
        )
        return any(count > 0 for _receiver, count in written)
    return False


# Past this many entries (the flushes have been failing for a while: the database is down),
# the buffer is compacted: each token keeps its newest calls (its last calls, its last use)
# and the others become one count per token and day, so that memory stays bounded by the
# tokens and days, not the calls, until a flush goes through.
COMPACT_ABOVE = 100_000


def size(calls: list[tuple]) -> int:
    """How many calls these buffer entries stand for (a compacted entry counts several)."""
    return sum(call[3] if len(call) > 3 else 1 for call in calls)


def buffered_calls() -> int:
    """How many introspection calls this process holds, not yet written."""
    with _USE_LOCK:
        return size(_USE_CALLS)


def take(at: datetime) -> list[tuple]:
    """Empty the buffer and return its calls, for a flush that starts at ``at``."""
    with _USE_LOCK:
        calls = _USE_CALLS[:]
        _USE_CALLS.clear()
        _last_flush[0] = at
    return calls


def give_back(calls: list[tuple], keep: int) -> None:
    """A failed flush's calls return to the buffer, before the calls noted meanwhile (once
    compacted, each token keeps its ``keep`` newest calls as they are)."""
    with _USE_LOCK:
        _USE_CALLS[:0] = calls
        if len(_USE_CALLS) > COMPACT_ABOVE:
            _USE_CALLS[:] = _compact(_USE_CALLS, keep)


def mark_written(calls: list[tuple]) -> None:
    """Remember the last use written of each token (inline mode writes a token's use again
    only once it is older than ``TOKEN_USE_FLUSH_SECONDS``)."""
    with _USE_LOCK:
        if len(_USE_WRITTEN) > 100_000:
            _USE_WRITTEN.clear()
        for call in calls:
            _USE_WRITTEN[call[0]] = call[1]


def _compact(calls: list[tuple], keep: int) -> list[tuple]:
    """The same calls as few entries: each token's ``keep`` newest calls as they are, the
    rest one ``(digest, at, None, count)`` per token and Paris day (``at``: its newest call)."""
    by_digest: dict[str, list[tuple]] = {}
    for call in calls:
        by_digest.setdefault(call[0], []).append(call)
    kept: list[tuple] = []
    for digest, own in by_digest.items():
        singles = sorted((c for c in own if len(c) == 3), key=lambda c: c[1], reverse=True)
        kept += singles[:keep]
        days: dict[Any, list] = {}
        for call in [*singles[keep:], *(c for c in own if len(c) > 3)]:
            day = call[1].astimezone(clock.PARIS).date()
            entry = days.get(day)
            if entry is None:
                days[day] = [call[1], call[3] if len(call) > 3 else 1]
            else:
                entry[0] = max(entry[0], call[1])
                entry[1] += call[3] if len(call) > 3 else 1
        kept += [(digest, at, None, count) for at, count in days.values()]
    return kept


def _forget_buffer_in_child() -> None:
    # A forked child holds a copy of its parent's calls, which the parent writes: not its own;
    # nor is the parent's flusher.
    global _USE_LOCK, flusher_wakeup
    _USE_LOCK = threading.Lock()
    _USE_CALLS.clear()
    _last_flush[0] = None
    flusher_wakeup = None


os.register_at_fork(after_in_child=_forget_buffer_in_child)
