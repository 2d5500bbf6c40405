"""Extensions, created unbound and bound by ``create_app``."""

from __future__ import annotations

import logging
import random
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import DateTime, Engine, MetaData, TypeDecorator, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, make_transient_to_detached, registry

T = TypeVar("T")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite forgets the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: use datapass.clock.now()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    registry = registry(
        metadata=MetaData(naming_convention=NAMING),
        type_annotation_map={datetime: UTCDateTime()},
    )


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()


# --- objects whose row a Core statement inserted ------------------------------------------
# The hot paths (issuing a token) insert with one Core statement and hand the caller the
# persistent object without reading it back. Such an object is not "new" to the session, so
# a rollback would leave it in the identity map, claiming a row that no longer exists (and
# blocking the id, which SQLite reuses). The session forgets it as it would a flushed new one.

_ADOPTED = "datapass.adopted"


def adopt(instance: Any) -> Any:
    """Make ``instance`` persistent in the session as if just loaded (every column must be
    set on it: nothing is read back); it leaves the session if the transaction or savepoint
    that inserted its row rolls back."""
    session = db.session()  # the scoped session's current Session
    make_transient_to_detached(instance)
    session.add(instance)
    transaction = session.get_nested_transaction() or session.get_transaction()
    # Weakly held, as the identity map holds it: an object nobody uses any more goes away.
    session.info.setdefault(_ADOPTED, []).append((transaction, weakref.ref(instance)))
    return instance


@event.listens_for(Session, "after_soft_rollback")
def _drop_adopted(session: Session, previous_transaction: Any) -> None:
    adopted = session.info.get(_ADOPTED)
    if not adopted:
        return
    kept = []
    for transaction, ref in adopted:
        instance = ref()
        if instance is None:
            continue
        inside = transaction
        while inside is not None and inside is not previous_transaction:
            inside = inside.parent
        if inside is None:
            kept.append((transaction, ref))
        elif instance in session:
            session.expunge(instance)
    session.info[_ADOPTED] = kept


@event.listens_for(Session, "after_commit")
def _forget_adopted(session: Session) -> None:
    session.info.pop(_ADOPTED, None)


# --- transactions that concurrent workers may have to redo --------------------------------
# PostgreSQL aborts one of two transactions that wait on each other (deadlock, SQLSTATE 40P01)
# or that cannot both be serialised (40001); the work is then simply redone. Writers take
# rows in one fixed order so that this stays rare, but a retry is what makes it harmless.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})

log = logging.getLogger("datapass.db")


def is_retryable(error: BaseException) -> bool:
    """Whether ``error`` is a deadlock or a serialization failure (worth redoing)."""
    original = getattr(error, "orig", None)
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return state in RETRYABLE_SQLSTATES


def retryable(work: Callable[[], T], *, attempts: int = 3) -> T:
    """Run ``work()`` and commit; when the database aborts the transaction as a deadlock or
    a serialization failure, roll back and run it again (``attempts`` times in all, with a
    short random pause). Any other error rolls back and propagates at once."""
    for attempt in range(1, attempts + 1):
        try:
            result = work()
            db.session.commit()
            return result
        except DBAPIError as error:
            db.session.rollback()
            if attempt == attempts or not is_retryable(error):
                raise
            log.warning("transaction aborted (%s), attempt %d/%d", error.orig, attempt, attempts)
            time.sleep(random.uniform(0.005, 0.05) * attempt)
        except BaseException:
            db.session.rollback()
            raise
    raise AssertionError("unreachable")


# --- SQLite: who takes the write lock, and when --------------------------------------------
# SQLite has one writer at a time. A transaction that will write takes the lock when it
# begins (``BEGIN IMMEDIATE``): one that read first and then tried to write could not, in WAL
# mode, wait for a writer that committed meanwhile (SQLITE_BUSY at once). SQLite's own busy
# handler sleeps up to 100 ms between tries, so a waiter keeps missing the short gaps between
# a long job's transactions: writers poll every 0.5 ms instead. Reads that need no lock
# (introspection) run in a deferred transaction (:func:`sqlite_read_snapshot`): in WAL mode
# they never wait, whoever writes. No transaction is held across network I/O (DESIGN §2.10).

BUSY_POLL_SECONDS = 0.0005
BUSY_TIMEOUT_SECONDS = 10.0
_READ_SNAPSHOT: ContextVar[bool] = ContextVar("datapass_sqlite_read_snapshot", default=False)


def _begin_immediate(dbapi_connection: Any) -> None:
    """``BEGIN IMMEDIATE``, retried every :data:`BUSY_POLL_SECONDS` while another connection
    holds the write lock (at most :data:`BUSY_TIMEOUT_SECONDS`, then "database is locked")."""
    cursor = dbapi_connection.cursor()
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    cursor.execute("PRAGMA busy_timeout=0")  # the loop below waits, not SQLite's handler
    try:
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(BUSY_POLL_SECONDS)
    finally:
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
        cursor.close()


@event.listens_for(Engine, "begin")
def _sqlite_begin(conn: Any) -> None:
    if conn.dialect.name != "sqlite":
        return
    if _READ_SNAPSHOT.get():
        conn.exec_driver_sql("BEGIN")  # deferred: a WAL snapshot, no lock
    else:
        _begin_immediate(conn.connection.dbapi_connection)


@contextmanager
def sqlite_read_snapshot() -> Iterator[None]:
    """Run the reads of the block in a read-only transaction on SQLite: deferred (no write
    lock, never waiting for a writer), ended when the block ends so that a write after it
    takes the lock in a transaction of its own. Only when the session has no transaction
    yet (otherwise the block joins it); nothing to do on PostgreSQL. Write nothing inside."""
    session = db.session()  # the scoped session's current Session
    if session.in_transaction() or session.get_bind().dialect.name != "sqlite":
        yield
        return
    token = _READ_SNAPSHOT.set(True)
    try:
        yield
    finally:
        _READ_SNAPSHOT.reset(token)
        session.rollback()  # nothing was written: end the snapshot


def pause_for_writers() -> None:
    """Between two transactions of a long job on SQLite: give the write lock a chance to go to
    a waiting writer (they poll every :data:`BUSY_POLL_SECONDS`) before taking it again."""
    if db.session.get_bind().dialect.name == "sqlite":
        time.sleep(2 * BUSY_POLL_SECONDS)
