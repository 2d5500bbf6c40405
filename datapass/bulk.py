"""Bulk writes for the jobs that write thousands of rows per run (sweeps, mail queueing).

Plain tuples through one ``executemany`` on the session's connection (same transaction),
without SQLAlchemy's per-value processing: written for speed, so the callers hand over values
already in their stored form (times through :func:`bulk_time`, enums as their values, JSON
dumped).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from datapass.extensions import db


def bulk_time(moment: Any) -> Any:
    """``moment`` as a raw DBAPI parameter, stored exactly as SQLAlchemy stores it: naive UTC
    text with microseconds on SQLite, the aware value on PostgreSQL."""
    return bulk_time_param()(moment)


def _sqlite_time(moment: Any) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _same(moment: Any) -> Any:
    return moment


def bulk_time_param() -> Any:
    """:func:`bulk_time` for the session's database, looked up once (for loops)."""
    return _sqlite_time if db.session.get_bind().dialect.name == "sqlite" else _same


def bulk_insert(table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """One ``executemany`` of plain tuples through the session's connection (same
    transaction), without SQLAlchemy's per-value processing: times must come from
    :func:`bulk_time`, enums as their values, JSON already dumped."""
    if not rows:
        return
    marker = "?" if db.session.get_bind().dialect.name == "sqlite" else "%s"
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - names from the code
        f"VALUES ({', '.join([marker] * len(columns))})"
    )
    db.session.connection().exec_driver_sql(sql, rows)


def reserve_ids(table: str, count: int) -> list[int] | range:
    """``count`` new primary keys of ``table``, for a bulk insert that must know its ids.
    PostgreSQL: from the table's sequence (as concurrent inserts do). SQLite: after the
    largest id, which is safe because every transaction there that may write takes the write
    lock when it begins (``BEGIN IMMEDIATE``; only :func:`~datapass.extensions.
    sqlite_read_snapshot` blocks, which write nothing, do not): no other writer can take the
    same ids meanwhile."""
    if count <= 0:
        return []
    connection = db.session.connection()
    if connection.dialect.name == "sqlite":
        last = connection.exec_driver_sql(
            f"SELECT coalesce(max(id), 0) FROM {table}"  # noqa: S608 - name from the code
        ).scalar()
        return range(last + 1, last + 1 + count)
    return [
        row[0]
        for row in connection.exec_driver_sql(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            (table, count),
        )
    ]
