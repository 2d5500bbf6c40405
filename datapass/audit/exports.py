"""Exports of audit searches (CSV or JSON Lines) with a signed manifest, verifiable offline.

An export is bounded by a signed checkpoint taken when it is requested, so its file is the
same each time it is downloaded and its manifest can be signed afterwards. The manifest (a
compact JWS signed with the audit key) gives the filter, the number of rows, the first and
last events, a running digest of the rows' chain hashes every :data:`BLOCK` rows, the file's
SHA-256 and the covering checkpoint with its own signature.

Each row carries every field of its event and its chain hash, so a verifier recomputes the
hash of each row (a changed byte is named by its line); the running digests find a dropped,
added or moved line within a block; the file digest catches anything else.

CSV cells that a spreadsheet would read as a formula (starting with ``= + - @``, tab or
carriage return) are prefixed with ``'``; so is a cell starting with ``'`` itself, and an
empty string is written as a lone ``'`` (an empty cell is NULL): the escaping is reversible
and the chain hash of each row can still be recomputed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.engine import Engine

from datapass import clock
from datapass.audit import checkpoints
from datapass.audit import service as audit
from datapass.audit.models import AuditCheckpoint, AuditEvent, AuditExport
from datapass.audit.search import AuditFilter, apply
from datapass.audit.tags import EventTag
from datapass.extensions import db

if TYPE_CHECKING:
    from datapass.accounts.models import User

FORMATS = ("csv", "jsonl")
MANIFEST_TYPE = "datapass-audit-export-manifest"
BLOCK = 1000
FETCH = 2000
FORMULA_START = frozenset("=+-@\t\r'")
INT_COLUMNS = frozenset({"seq", "organisation_id", "api_id"})
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


# --- cells ----------------------------------------------------------------------------------


def csv_cell(value: Any) -> Any:
    """A value as written in a CSV cell (see the module's docstring)."""
    if value is None:
        return ""
    if type(value) is str and (not value or value[0] in FORMULA_START):
        return "'" + value
    return value


def csv_value(cell: str, column: str) -> Any:
    """The value back from a CSV cell (the inverse of :func:`csv_cell`)."""
    if cell == "":
        return None
    if column in INT_COLUMNS:
        return int(cell)
    if cell[0] == "'":
        return cell[1:]
    return cell


# --- creating and streaming -----------------------------------------------------------------


def create_export(flt: AuditFilter, fmt: str, actor: audit.Actor) -> AuditExport:
    """Record an export of the events matching ``flt`` up to a checkpoint signed now (flushes).
    The export itself is an audit event."""
    if fmt not in FORMATS:
        raise ValueError(f"format inconnu : {fmt}")
    checkpoint = checkpoints.create_checkpoint()
    user = actor.user
    export = AuditExport(
        created_at=clock.now(),
        created_by_id=getattr(user, "id", None),
        created_by_label=actor.label,
        format=fmt,
        filters=flt.as_dict(),
        checkpoint_id=checkpoint.id,
        bound_seq=checkpoint.seq,
    )
    db.session.add(export)
    db.session.flush()
    event = audit.record(
        EventTag.Audit.ExportCreated,
        actor,
        subject=export,
        payload={
            "format": fmt,
            "filters": export.filters,
            "bound_seq": export.bound_seq,
            "checkpoint_id": checkpoint.id,
        },
    )
    export.audit_seq = event.seq
    db.session.flush()
    return export


def get_export(export_id: int, user: User) -> AuditExport | None:
    """An export, visible to whoever made it, and to every security officer and admin."""
    export = db.session.get(AuditExport, export_id)
    if export is None:
        return None
    if (
        export.created_by_id == user.id
        or user.has_role("security_officer")  # accounts' roles, by value: audit sits below
        or user.has_role("admin")
    ):
        return export
    return None


def record_download(export: AuditExport, what: str, actor: audit.Actor) -> None:
    """Every download of an export's file or manifest is itself an audit event."""
    audit.record(
        EventTag.Audit.ExportDownloaded,
        actor,
        subject=export,
        payload={"format": export.format, "what": what},
    )


def _rows(flt: AuditFilter, bound_seq: int) -> Iterator[list[tuple]]:
    """The export's events in chain order, in partitions of :data:`FETCH` rows, in constant
    memory, read without per-row processing where possible."""
    columns = [getattr(AuditEvent, c) for c in audit.COLUMNS]
    query = apply(select(*columns), flt).where(AuditEvent.seq <= bound_seq)
    query = query.order_by(AuditEvent.seq)
    bind = db.session.get_bind()
    if isinstance(bind, Engine) and bind.dialect.name == "sqlite":
        yield from _sqlite_autocommit_rows(bind, query)
        return
    connection = db.session.connection()
    if connection.dialect.name != "sqlite":
        # a server-side cursor; per statement: Connection.execution_options() would change
        # the whole connection
        result = connection.execute(query, execution_options={"yield_per": FETCH})
        try:
            yield from result.partitions(FETCH)
        finally:
            result.close()
        return
    # SQLite inside a caller's transaction (tests): its connection, read from the DBAPI cursor
    result = connection.execute(query)  # unbuffered: the DBAPI cursor holds every row
    try:
        yield from _partitions(result.cursor)
    finally:
        result.close()


def _partitions(cursor) -> Iterator[list[tuple]]:
    while True:
        rows = cursor.fetchmany(FETCH)
        if not rows:
            return
        yield rows


def _sqlite_autocommit_rows(engine: Engine, query) -> Iterator[list[tuple]]:
    """SQLite: a long export must not hold the database's write lock (every transaction of
    the application that may write starts with ``BEGIN IMMEDIATE``), so it reads from a
    pooled connection in autocommit mode: one statement, one consistent snapshot (WAL),
    writers not blocked."""
    compiled = query.compile(dialect=engine.dialect)
    params = compiled.construct_params()
    values = []
    for name in compiled.positiontup or ():
        value = params[name]
        if isinstance(value, datetime):  # as UTCDateTime stores it on SQLite
            value = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        values.append(value)
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(str(compiled), values)
        yield from _partitions(cursor)
        cursor.close()
    finally:
        connection.close()


@dataclass
class Digest:
    """What the manifest states about the file, gathered while it is written."""

    rows: int = 0
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)
    bytes: int = 0
    file: Any = field(default_factory=hashlib.sha256)
    chain: Any = field(default_factory=hashlib.sha256)

    def note(self, rows: list[tuple]) -> None:
        """Add a partition's rows (chain hashes in column 14) to the running digests."""
        if not rows:
            return
        if self.first is None:
            self.first = {"seq": rows[0][0], "hash": rows[0][14]}
        start = 0
        while start < len(rows):
            room = BLOCK - self.rows % BLOCK
            part = rows[start : start + room]
            self.chain.update("".join(f"{row[14]}\n" for row in part).encode())
            self.rows += len(part)
            start += len(part)
            if self.rows % BLOCK == 0:
                self.blocks.append(
                    {"rows": self.rows, "seq": part[-1][0], "digest": self.chain.hexdigest()}
                )
        self.last = {"seq": rows[-1][0], "hash": rows[-1][14]}


_NEEDS_QUOTES = re.compile(r'[",\r\n]')


def _text(value: Any) -> str:
    """One CSV field (RFC 4180) of a text column: escaped against formulas, then quoted when
    it holds a quote, a comma or a line break — what ``csv.writer`` writes, built directly
    because this runs for every cell of a million-row export."""
    if value is None:
        return ""
    if not value or value[0] in FORMULA_START:
        value = "'" + value
    if _NEEDS_QUOTES.search(value) is None:
        return value
    return '"' + value.replace('"', '""') + '"'


def _number(value: Any) -> str:
    return "" if value is None else str(value)


def _csv_chunks(partitions: Iterator[list[tuple]], digest: Digest) -> Iterator[str]:
    yield ",".join(audit.COLUMNS) + "\n"
    iso = audit.raw_iso
    text = _text
    number = _number
    for rows in partitions:
        lines = [
            f"{row[0]},{iso(row[1])},{text(row[2])},{text(row[3])},{text(row[4])},"
            f"{text(row[5])},{text(row[6])},{text(row[7])},{text(row[8])},{number(row[9])},"
            f"{number(row[10])},{text(row[11])},{text(row[12])},{row[13]},{row[14]}\n"
            for row in rows
        ]
        digest.note(rows)
        yield "".join(lines)


def _jsonl_chunks(partitions: Iterator[list[tuple]], digest: Digest) -> Iterator[str]:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    iso = audit.raw_iso
    names = audit.COLUMNS
    for rows in partitions:
        lines = []
        for row in rows:
            values = list(row)
            values[1] = iso(values[1])
            lines.append(dumps(dict(zip(names, values, strict=True))))
        lines.append("")
        digest.note(rows)
        yield "\n".join(lines)


def stream(export: AuditExport, digest: Digest | None = None) -> Iterator[bytes]:
    """The export file, chunk by chunk (constant memory)."""
    digest = digest if digest is not None else Digest()
    flt = AuditFilter.from_dict(export.filters)
    chunks = _csv_chunks if export.format == "csv" else _jsonl_chunks
    for chunk in chunks(_rows(flt, export.bound_seq), digest):
        data = chunk.encode()
        digest.file.update(data)
        digest.bytes += len(data)
        yield data


def filename(export: AuditExport, manifest: bool = False) -> str:
    stem = f"audit-export-{export.id}"
    return f"{stem}.manifest.jws" if manifest else f"{stem}.{export.format}"


def manifest(export: AuditExport) -> dict[str, Any]:
    """The manifest of an export (the file is produced once more to digest it)."""
    digest = Digest()
    for _ in stream(export, digest):
        pass
    checkpoint = db.session.get(AuditCheckpoint, export.checkpoint_id)
    return {
        "typ": MANIFEST_TYPE,
        "version": 1,
        "iss": current_app.config["BASE_URL"].rstrip("/"),
        "export_id": export.id,
        "file": filename(export),
        "format": export.format,
        "created_at": audit._iso(export.created_at),
        "created_by": export.created_by_label,
        "filter": export.filters,
        "bound_seq": export.bound_seq,
        "rows": digest.rows,
        "first": digest.first,
        "last": digest.last,
        "block_size": BLOCK,
        "blocks": digest.blocks,
        "rows_digest": digest.chain.hexdigest(),
        "sha256": digest.file.hexdigest(),
        "bytes": digest.bytes,
        "checkpoint": checkpoints.as_manifest_entry(checkpoint),
    }


def signed_manifest(export: AuditExport) -> str:
    """The manifest as a compact JWS signed with the audit key."""
    return checkpoints.sign(manifest(export))


# --- offline verification -------------------------------------------------------------------


@dataclass
class ExportCheck:
    ok: bool
    rows: int
    problems: list[str]

    def message(self) -> str:
        if self.ok:
            return f"Export intègre : {self.rows} lignes vérifiées, manifeste signé valide."
        return "Export NON conforme :\n" + "\n".join(f"- {p}" for p in self.problems)


def _csv_records(handle) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None or tuple(header) != audit.COLUMNS:
        yield 1, "en-tête absent ou modifié"
    for cells in reader:
        line = reader.line_num
        if len(cells) != len(audit.COLUMNS):
            yield line, f"{len(cells)} colonnes au lieu de {len(audit.COLUMNS)}"
            continue
        try:
            yield line, {c: csv_value(v, c) for c, v in zip(audit.COLUMNS, cells, strict=True)}
        except ValueError:
            yield line, "valeur illisible"


def _jsonl_records(handle) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            yield number, "ligne vide"
            continue
        try:
            record = json.loads(text)
        except ValueError:
            yield number, "JSON illisible"
            continue
        if not isinstance(record, dict) or set(record) != set(audit.COLUMNS):
            yield number, "champs absents ou en trop"
            continue
        yield number, record


def _row_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(
        (
            audit.canonical_values(
                record["seq"], record["occurred_at"], *(record[c] for c in audit.COLUMNS[2:13])
            )
            + (record["prev_hash"] or "")
        ).encode()
    ).hexdigest()


def verify_export(
    export_path: Path, manifest_jws: str, jwks: dict[str, Any], check_jws: Callable | None = None
) -> ExportCheck:
    """Verify an export file against its signed manifest with public keys only (offline)."""
    check_jws = check_jws or checkpoints.check_jws
    problems: list[str] = []
    try:
        info = check_jws(manifest_jws.strip(), jwks)
    except ValueError as exc:
        return ExportCheck(False, 0, [f"manifeste : signature invalide ({exc})"])
    if info.get("typ") != MANIFEST_TYPE:
        return ExportCheck(False, 0, ["manifeste : ce document n'est pas un manifeste d'export"])
    checkpoint = info.get("checkpoint") or {}
    try:
        signed = check_jws(checkpoint.get("jws", ""), jwks)
        if signed.get("seq") != checkpoint.get("seq") or signed.get("hash") != checkpoint.get(
            "hash"
        ):
            problems.append("point de contrôle : ne correspond pas à sa signature")
    except ValueError as exc:
        problems.append(f"point de contrôle : signature invalide ({exc})")
    last = info.get("last") or {}
    if last and checkpoint.get("seq") is not None and last.get("seq", 0) > checkpoint["seq"]:
        problems.append("le dernier événement exporté est postérieur au point de contrôle")
    if (
        not info.get("filter")
        and last.get("seq") == checkpoint.get("seq")
        and last.get("hash") != checkpoint.get("hash")
    ):
        problems.append("le dernier événement ne correspond pas au point de contrôle signé")

    file_hash = hashlib.sha256()
    size = 0
    with open(export_path, "rb") as raw:
        for chunk in iter(lambda: raw.read(1 << 20), b""):
            file_hash.update(chunk)
            size += len(chunk)

    blocks = {b["rows"]: b for b in info.get("blocks", [])}
    block_size = info.get("block_size") or BLOCK
    chain = hashlib.sha256()
    rows = 0
    previous_seq = 0
    first_line = None
    line_problems = 0
    block_reported = False
    records = _csv_records if info.get("format") == "csv" else _jsonl_records
    with open(export_path, encoding="utf-8", newline="") as handle:
        for line, record in records(handle):
            if isinstance(record, str):
                problems.append(f"ligne {line} : {record}")
                line_problems += 1
                if line_problems > 20:
                    break
                continue
            rows += 1
            first_line = first_line or line
            seq = record["seq"]
            if _row_hash(record) != record["hash"]:
                problems.append(f"ligne {line} (événement n° {seq}) : contenu modifié")
                line_problems += 1
            if seq <= previous_seq:
                problems.append(f"ligne {line} (événement n° {seq}) : ordre ou doublon")
                line_problems += 1
            previous_seq = seq
            chain.update(str(record["hash"]).encode() + b"\n")
            expected = blocks.get(rows)
            if expected and not block_reported and expected["digest"] != chain.hexdigest():
                start = (first_line or 2) + rows - block_size
                problems.append(
                    f"entre les lignes {max(start, first_line or 1)} et {line} : une ligne a "
                    "été supprimée, ajoutée ou déplacée"
                )
                block_reported = True
            if line_problems > 20:
                problems.append("… (vérification arrêtée après 20 anomalies)")
                break
    if rows != info.get("rows"):
        problems.append(f"{rows} lignes dans le fichier, {info.get('rows')} dans le manifeste")
    if chain.hexdigest() != info.get("rows_digest") and not block_reported:
        start = (len(blocks) * block_size) + (first_line or 2)
        problems.append(
            f"à partir de la ligne {start} : une ligne a été supprimée, ajoutée ou déplacée"
        )
    if file_hash.hexdigest() != info.get("sha256") or size != info.get("bytes"):
        if not problems:
            problems.append("le fichier diffère de celui du manifeste (mise en forme modifiée)")
        else:
            problems.append(
                "l'empreinte SHA-256 du fichier ne correspond pas au manifeste (autre fichier "
                "ou fichier modifié)"
            )
    return ExportCheck(not problems, rows, problems)
