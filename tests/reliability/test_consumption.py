"""Consumption under real concurrency (issue 10, points 1 and 2): nothing is written into a
sealed day, whoever writes (a provider's report, an introspection flush, the demo) and
whatever the interleaving with the seal; every introspection call answered is counted, unless
its process is killed hard, and then at most about one flush interval of its calls is lost.

Threads share one process and the frozen clock; the servers are real gunicorn workers and
``flask datapass`` processes on the same database (real clock)."""

from __future__ import annotations

import http.client
import itertools
import json
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from datapass import clock, demo
from datapass.audit import verification
from datapass.consumption import flush as flushing
from datapass.consumption import ingest as ingesting
from datapass.consumption import seal as sealing
from datapass.consumption import store
from datapass.consumption.models import UsageDaily, UsageEvent
from datapass.extensions import db, retryable, sqlite_read_snapshot
from datapass.tokens import uses
from tests.audit.conftest import issue_token
from tests.reliability.servers import Gunicorn, basic, environment, flask_command, wait_for
from tests.tokens.conftest import make_api, make_client, make_provider

DAY = date(2026, 11, 27)  # yesterday in Paris at the frozen time: sealable


class World:
    """A provider (its machine client and secret) and a few tokens of its API, committed."""


@pytest.fixture
def world(committed_app):
    w = World()
    w.provider = make_provider()
    w.api = make_api(w.provider)
    w.client, w.secret = make_client(w.provider)
    tokens = [issue_token(w.api) for _ in range(4)]
    w.provider_id = w.provider.id
    w.client_id = w.client.client_id
    w.token_ids = [token.id for token, _ in tokens]
    w.jtis = [token.jti for token, _ in tokens]
    w.digests = [token.digest for token, _ in tokens]
    w.raws = [raw for _, raw in tokens]
    # Committed, and no object left to refresh: on SQLite a refresh would open a transaction
    # holding the write lock while the threads run.
    db.session.commit()
    db.session.expunge_all()
    return w


def in_threads(app, *targets: Callable[[], object], deadline: float = 60.0) -> None:
    """Run each target in its own thread, app context and database session; re-raise the
    first error."""
    errors: list[BaseException] = []

    def run(target):
        with app.app_context():
            try:
                target()
            except BaseException as error:  # noqa: BLE001 — handed to the test
                errors.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    end = time.monotonic() + deadline
    for thread in threads:
        thread.join(max(end - time.monotonic(), 0))
    assert not any(thread.is_alive() for thread in threads), "threads still running"
    if errors:
        raise errors[0]


def _event(event_id: str, jti: str, at: datetime) -> dict:
    return {
        "id": event_id,
        "token": jti,
        "time": at.isoformat(),
        "endpoint": "/v2/quotient-familial",
        "status": 200,
        "latency_ms": 12,
    }


def _at(day: date, minute: int = 0) -> datetime:
    """A moment of ``day`` (Paris): noon, plus ``minute``."""
    return datetime(day.year, day.month, day.day, 11, tzinfo=UTC) + timedelta(minutes=minute)


def _verify_ok() -> None:
    db.session.rollback()
    with sqlite_read_snapshot():  # SQLite: no write lock held while servers write
        result = verification.verify_all()
    assert result.ok, result.lines()


def _calls(token_ids, endpoint: str | None = None) -> int:
    """Calls counted for these tokens, read in a transaction of its own that ends at once:
    on SQLite an open one would hold the write lock and stall the servers' flushes."""
    db.session.rollback()
    query = select(func.coalesce(func.sum(UsageDaily.calls), 0)).where(
        UsageDaily.token_id.in_(token_ids)
    )
    if endpoint is not None:
        query = query.where(UsageDaily.endpoint == endpoint)
    with sqlite_read_snapshot():
        return db.session.scalar(query)


def _advisory_waiters() -> int:
    with db.engine.connect() as connection:
        return connection.scalar(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )


# --- point 1: no write into a sealed day ------------------------------------------------


@pytest.mark.parametrize("writer", ["ingest", "flush"])
def test_a_writer_racing_the_seal_is_in_the_seal_or_refused(
    backend, committed_app, world, monkeypatch, writer
):
    """The writer has checked the last sealed day (none) when the seal starts: it must hold
    the seal off until it commits (its counts are in the seal), never write after the seal
    has read the day. Deterministic: the writer waits, after its check, until the seal has
    either finished (the bug) or is waiting for it (the lock)."""
    if backend != "postgresql":
        pytest.skip("SQLite: every transaction holds the write lock from its start")
    # Consumption the day before, so that the seal has days to seal (from the first one).
    retryable(
        lambda: ingesting.ingest_usage(
            world.provider_id, [_event("before", world.jtis[1], _at(DAY - timedelta(days=1)))]
        )
    )
    checked, sealed = threading.Event(), threading.Event()
    original = sealing.lock_for_writing

    def lock_then_let_the_seal_start():
        last = original()
        checked.set()
        wait_for(lambda: sealed.is_set() or _advisory_waiters() > 0, 10, what="le sceau a démarré")
        return last

    monkeypatch.setattr(sealing, "lock_for_writing", lock_then_let_the_seal_start)

    def write():
        if writer == "ingest":
            result = retryable(
                lambda: ingesting.ingest_usage(
                    world.provider_id, [_event("race-1", world.jtis[0], _at(DAY))]
                )
            )
            assert result.accepted == 1
        else:
            uses.give_back([(world.digests[0], _at(DAY), "192.0.2.1")], store.RECENT_CALLS)
            assert flushing.flush_usage_committed() == 1

    def seal():
        assert checked.wait(10)
        sealing.seal_finished_days()
        db.session.commit()
        sealed.set()

    in_threads(committed_app, write, seal)
    _verify_ok()
    assert sealing.last_sealed_day() == DAY
    assert _calls(world.token_ids[:1]) == 1  # counted, and in the seal


def test_ingest_flushes_and_seals_interleaved_keep_every_seal(committed_app, world, caplog):
    """Two ingesting and two flushing threads write into eight days while a sealer seals
    them one at a time: every event and call is either counted in its day (and its seal) or
    refused and counted as refused, and `audit verify` passes. Writers take rows in one
    order: no transaction had to be redone."""
    days = [DAY - timedelta(days=n) for n in range(7, -1, -1)]
    totals = {"sent": 0, "accepted": 0, "refused": 0, "flushed": 0}
    refused_before = sealing.REFUSED_LATE.copy()
    done = threading.Event()
    rounds = itertools.count()
    progress = [0]
    ids = itertools.count()
    lock = threading.Lock()

    def ingest(seed: int):
        rng = random.Random(seed)
        while not done.is_set():
            batch = [
                _event(f"mix-{next(ids)}", rng.choice(world.jtis), _at(rng.choice(days), n))
                for n in range(rng.randint(1, 30))
            ]
            result = retryable(lambda b=batch: ingesting.ingest_usage(world.provider_id, b))
            assert result.accepted + len(result.refused) == len(batch)
            with lock:
                totals["sent"] += len(batch)
                totals["accepted"] += result.accepted
                totals["refused"] += len(result.refused)
                progress[0] = next(rounds)

    def flush(seed: int):
        rng = random.Random(seed)
        while not done.is_set():
            calls = [
                (rng.choice(world.digests), _at(rng.choice(days), n), None)
                for n in range(rng.randint(1, 40))
            ]
            uses.give_back(calls, store.RECENT_CALLS)
            written = flushing.flush_usage_committed()
            with lock:
                totals["flushed"] += written
                progress[0] = next(rounds)

    def seal():
        try:
            for _ in [*days, None]:
                seen = progress[0]
                wait_for(lambda s=seen: progress[0] >= s + 6, 20, what="les écrivains avancent")
                sealing.seal_finished_days(limit=1)
                db.session.commit()
        finally:
            done.set()

    in_threads(
        committed_app,
        lambda: ingest(1),
        lambda: ingest(2),
        lambda: flush(3),
        lambda: flush(4),
        seal,
    )
    _verify_ok()
    sealed = db.session.scalar(
        select(func.count()).where(text("tag = :tag")).select_from(text("audit_events")),
        {"tag": sealing.SEAL_TAG},
    )
    assert sealed == len(days)
    late = sealing.REFUSED_LATE - refused_before
    assert totals["refused"] > 0, "the last rounds write into sealed days"
    assert late["usage"] == totals["refused"]
    assert _calls(world.token_ids, "/v2/quotient-familial") == totals["accepted"]
    assert db.session.scalar(select(func.count()).select_from(UsageEvent)) == totals["accepted"]
    assert _calls(world.token_ids, "introspect") + late["introspect"] == totals["flushed"]
    assert not [r.message for r in caplog.records if "transaction aborted" in r.message]


def test_late_events_are_refused_and_counted_as_refused(committed_app, world):
    """After the seal, a provider's late report and a late introspection flush are refused,
    counted as refused once committed, and change nothing sealed."""
    retryable(
        lambda: ingesting.ingest_usage(world.provider_id, [_event("e1", world.jtis[0], _at(DAY))])
    )
    assert sealing.seal_finished_days() == [DAY]
    db.session.commit()
    before = sealing.REFUSED_LATE.copy()
    response = committed_app.test_client().post(
        "/api/v1/usage",
        json={"events": [_event("e2", world.jtis[0], _at(DAY, 1))]},
        headers={"Authorization": basic(world.client_id, world.secret)},
    )
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["accepted"] == 0
    assert body["refused"] == [{"index": 0, "id": "e2", "reason": ingesting.REFUSED_SEALED}]
    uses.give_back([(world.digests[0], _at(DAY, 2), None)], store.RECENT_CALLS)
    assert flushing.flush_usage_committed() == 1
    assert uses.buffered_calls() == 0
    late = sealing.REFUSED_LATE - before
    assert late == {"usage": 1, "introspect": 1}
    assert _calls(world.token_ids) == 1
    _verify_ok()


def test_demo_run_again_after_the_seal_leaves_sealed_days_alone(committed_app):
    """`datapass demo` run again once the scheduler has sealed days (it issues a new token,
    which gets consumption) skips the sealed days: every seal still verifies."""
    demo.run_demo()
    db.session.commit()
    sealed = sealing.seal_finished_days()
    db.session.commit()
    assert sealed, "the demo's consumption gives days to seal"
    result = demo.run_demo()
    db.session.commit()
    assert result["consumption"]["tokens"] >= 1  # the token issued by this run
    assert result["consumption"]["sealed_days_skipped"] == len(sealed)
    assert "déjà scellée" in demo.summary(result)
    _verify_ok()


def test_a_failed_flush_keeps_its_calls_and_a_deadlock_is_retried(
    committed_app, world, monkeypatch
):
    from sqlalchemy.exc import OperationalError

    calls = [(world.digests[0], clock.now(), None), (world.digests[1], clock.now(), None)]
    uses.give_back(calls, store.RECENT_CALLS)
    original = flushing.record_introspection_uses
    failures = []

    class Deadlock(Exception):
        sqlstate = "40P01"

    def failing(rows, **kwargs):
        rows = list(rows)
        if len(failures) < failures_wanted[0]:
            failures.append(1)
            raise OperationalError("UPDATE …", {}, Deadlock("deadlock detected"))
        return original(rows, **kwargs)

    monkeypatch.setattr(flushing, "record_introspection_uses", failing)
    failures_wanted = [3]  # every attempt fails: the calls stay in the buffer
    with pytest.raises(OperationalError):
        flushing.flush_usage_committed()
    assert uses.buffered_calls() == 2
    assert _calls(world.token_ids) == 0
    failures.clear()
    failures_wanted[0] = 1  # one deadlock, then it goes through: written once
    assert flushing.flush_usage_committed() == 2
    assert uses.buffered_calls() == 0
    assert _calls(world.token_ids) == 2


def test_a_long_outage_compacts_the_buffer_and_loses_no_call(committed_app, world, monkeypatch):
    """Flushes failing for long (the database down): the calls kept are compacted to each
    token's newest calls plus one count per token and day, and all are counted once a flush
    goes through, with each token's last calls."""
    from datapass.consumption.models import UsageRecent

    monkeypatch.setattr(uses, "COMPACT_ABOVE", 50)
    start = clock.now() - timedelta(days=1)
    calls = [
        (world.digests[n % 2], start + timedelta(minutes=17 * n), "192.0.2.7") for n in range(200)
    ]
    uses.give_back(calls[:100], store.RECENT_CALLS)  # a failed flush's calls…
    uses.give_back(calls[100:], store.RECENT_CALLS)  # …and the next one's: compacted
    assert uses.buffered_calls() == 200
    assert len(uses._USE_CALLS) <= 2 * (store.RECENT_CALLS + 3)
    assert flushing.flush_usage_committed() == 200
    db.session.rollback()
    per_token_day = db.session.execute(
        select(UsageDaily.token_id, UsageDaily.day, UsageDaily.calls).order_by(
            UsageDaily.token_id, UsageDaily.day
        )
    ).all()
    expected: dict[tuple, int] = {}
    for digest, at, _ip in calls:
        key = (world.token_ids[world.digests.index(digest)], at.astimezone(clock.PARIS).date())
        expected[key] = expected.get(key, 0) + 1
    assert {(t, d): c for t, d, c in per_token_day} == expected
    recent = db.session.execute(
        select(UsageRecent.token_id, func.max(UsageRecent.occurred_at), func.count())
        .group_by(UsageRecent.token_id)
        .order_by(UsageRecent.token_id)
    ).all()
    newest = [max(at for d, at, _ in calls if d == digest) for digest in world.digests[:2]]
    assert [(t, clock.as_utc(at), n) for t, at, n in recent] == [
        (world.token_ids[0], newest[0], store.RECENT_CALLS),
        (world.token_ids[1], newest[1], store.RECENT_CALLS),
    ]


# --- point 2: every introspection answered is counted (real gunicorn workers) -------------

FLUSH_SECONDS = 1.0  # the default USAGE_FLUSH_SECONDS
# What a SIGKILL may lose, as calls answered in this window before the kill: the flush
# interval, plus the flush in flight and a loaded CI machine's scheduling delays.
KILL_BOUND_SECONDS = FLUSH_SECONDS + 1.0


@pytest.fixture(scope="module")
def gunicorn(backend, app_for_backend):
    """This module's server (2 workers, default flush interval), started again if a test
    killed it; killed at teardown."""
    url = app_for_backend(backend).config["DATABASE_URL"]
    holder: dict[str, Gunicorn] = {}

    def running() -> Gunicorn:
        server = holder.get("server")
        if server is None or not server.alive():
            if server is not None:
                server.kill()
            holder["server"] = server = Gunicorn(environment(url)).wait_ready()
        return server

    yield running
    if "server" in holder:
        holder["server"].kill()


class Load:
    """Client threads introspecting the world's tokens in a random order until stopped;
    every answer (200, active) is noted with the moment it arrived."""

    def __init__(self, server: Gunicorn, world: World, threads: int = 4):
        self.port = server.port
        self.world = world
        self.answered: list[float] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]
        self.headers = {
            "Authorization": basic(world.client_id, world.secret),
            "Content-Type": "application/x-www-form-urlencoded",
        }

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stopping.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                connection.request(
                    "POST",
                    "/api/v1/introspect",
                    body=f"token={rng.choice(self.world.raws)}",
                    headers=self.headers,
                )
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                continue  # the server is stopping or gone: nothing was answered
            finally:
                connection.close()
            with self.lock:
                if response.status == 200 and b'"active":true' in body:
                    self.answered.append(time.monotonic())
                else:
                    self.failures.append(f"{response.status} {body[:200]!r}")

    def count(self) -> int:
        return len(self.answered)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)


def _introspected(world: World) -> int:
    return _calls(world.token_ids, flushing.INTROSPECT_ENDPOINT)


def _real_days_back(*offsets: int) -> list[date]:
    """Paris days before the real today (the servers run on the real clock)."""
    today = datetime.now(UTC).astimezone(clock.PARIS).date()
    return [today - timedelta(days=offset) for offset in offsets]


def test_reports_flushes_two_sweeps_and_the_demo_racing_keep_every_seal(
    backend, committed_app, world, gunicorn
):
    """Late usage reports over HTTP and two workers flushing introspections, while two
    `flask datapass sweep` processes seal the finished days and then `datapass demo` runs:
    every event is counted in its seal or refused as late, and `audit verify` passes."""
    server = gunicorn()
    days = _real_days_back(8, 7, 6, 5, 4, 3, 2)  # sealable whatever the hour
    sent, accepted, refused = [0], [0], []
    stopping = threading.Event()
    batches = [0]

    def report():
        rng = random.Random(7)
        ids = itertools.count()
        headers = {
            "Authorization": basic(world.client_id, world.secret),
            "Content-Type": "application/json",
        }
        while not stopping.is_set():
            events = [
                _event(f"late-{next(ids)}", rng.choice(world.jtis), _at(rng.choice(days), n))
                for n in range(rng.randint(1, 50))
            ]
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            try:
                connection.request(
                    "POST", "/api/v1/usage", body=json.dumps({"events": events}), headers=headers
                )
                response = connection.getresponse()
                body = json.loads(response.read())
            finally:
                connection.close()
            assert response.status == 200, body
            sent[0] += len(events)
            accepted[0] += body["accepted"]
            refused.extend(body["refused"])
            batches[0] += 1

    load = Load(server, world, threads=2).start()
    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    sweeps = []
    try:
        wait_for(lambda: batches[0] >= 5 and load.count() >= 50, 30, what="trafic établi")
        env = environment(committed_app.config["DATABASE_URL"])
        sweeps = [flask_command(env, "sweep"), flask_command(env, "sweep")]
        sweeps.append(flask_command(env, "demo"))  # at the same time: it writes consumption
        for process in sweeps:
            assert process.wait(90) == 0, process.output()
        seen = batches[0]
        wait_for(lambda: batches[0] >= seen + 3, 30, what="rapports après le sceau")
    finally:
        stopping.set()
        reporter.join(30)
        load.stop()
        for process in sweeps:
            process.kill()
    assert not reporter.is_alive()
    assert load.failures == []
    assert refused, "the reports sent after the seal are refused"
    assert {r["reason"] for r in refused} == {ingesting.REFUSED_SEALED}
    assert accepted[0] + len(refused) == sent[0]
    reported = select(func.count()).where(UsageEvent.provider_id == world.provider_id)
    with sqlite_read_snapshot():
        assert db.session.scalar(reported) == accepted[0]
        assert sealing.last_sealed_day() >= days[-1]
    _verify_ok()


def test_idle_workers_flush_within_a_second_and_a_kill_loses_at_most_that(
    backend, committed_app, world, gunicorn
):
    """Two workers under load: once the load stops, every answered call is counted within
    a few flush intervals without any further request (idle workers flush too); then a
    SIGKILL of the whole server under load loses only calls of its last interval."""
    server = gunicorn()
    load = Load(server, world).start()
    try:
        wait_for(lambda: load.count() >= 300, 30, what="300 appels")
    finally:
        load.stop()
    answered = load.count()
    started = time.monotonic()
    wait_for(lambda: _introspected(world) == answered, 10, what="tout compté, sans requête")
    idle_flush = time.monotonic() - started
    assert load.failures == []

    load = Load(server, world).start()
    try:
        # Several flush intervals of load, so that flushes ran under it.
        loaded = time.monotonic() + 2.5 * FLUSH_SECONDS
        wait_for(lambda: time.monotonic() > loaded and load.count() >= 300, 60, what="charge")
        killed_at = time.monotonic()
        server.signal(signal.SIGKILL)
        server.wait(10)
    finally:
        load.stop()
    output = server.output()
    server.kill()
    assert load.failures == []
    assert "Traceback" not in output and "deadlock" not in output, output[-3000:]
    total = answered + load.count()
    counted = _introspected(world)
    lost = total - counted
    last_second = sum(1 for t in load.answered if killed_at - 1.0 < t <= killed_at)
    window = sum(1 for t in load.answered if t > killed_at - KILL_BOUND_SECONDS)
    print(
        f"\n[{backend}] SIGKILL sous charge : {load.count()} appels répondus, {lost} perdus "
        f"(≈ {1000 * lost / max(last_second, 1):.0f} ms de trafic à {last_second} appels/s) ; "
        f"écriture des processus inactifs en {idle_flush:.2f} s"
    )
    assert 0 <= lost <= window, (lost, window)


def test_sigterm_under_load_counts_every_answered_call(backend, committed_app, world):
    """gunicorn (2 workers) stopped by SIGTERM under load: every call answered is counted.
    With a flush interval of a minute, only the exit flush can have written them."""
    url = committed_app.config["DATABASE_URL"]
    server = Gunicorn(environment(url, USAGE_FLUSH_SECONDS=60)).wait_ready()
    load = Load(server, world).start()
    try:
        wait_for(lambda: load.count() >= 400, 30, what="400 appels")
        assert _introspected(world) == 0  # nothing written yet: all in the workers' buffers
        server.signal(signal.SIGTERM)  # the master and every worker, as systemd does
        assert server.wait(30) == 0, server.output()
    finally:
        load.stop()
        server.kill()
    assert load.failures == []
    counted = _introspected(world)
    print(f"\n[{backend}] SIGTERM sous charge : {load.count()} répondus, {counted} comptés")
    assert counted == load.count()
