"""Exports that people open in a spreadsheet (queues, dashboards, consumption).

One rule for every such export: a cell never runs as a formula (OWASP "CSV injection"), and
CSV is streamed in chunks with a BOM so spreadsheet software reads UTF-8. The audit log's
verifiable exports have their own, reversible escaping (``datapass.audit.exports``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from datapass import clock

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "|", "%")
CHUNK = 64_000


def safe_cell(value: Any) -> Any:
    """Text that starts like a formula gets a leading apostrophe; moments are shown in
    Europe/Paris; ``None`` is an empty cell; numbers stay numbers (XLSX keeps their type)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return clock.local(value).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_stream(
    header: Iterable[Any] | None, rows: Iterable[Iterable[Any]], *, delimiter: str = ";"
) -> Iterator[str]:
    """CSV text in chunks (constant memory), header first when given."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    yield "\ufeff"
    if header is not None:
        writer.writerow(header)
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
        if buffer.tell() > CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
