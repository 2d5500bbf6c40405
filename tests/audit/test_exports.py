"""Exports: streamed CSV / JSON Lines, a signed manifest, offline verification that names
where a file was changed; formula-injection-safe CSV cells."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pytest
from click.testing import CliRunner

from datapass.audit import checkpoints, exports
from datapass.audit import service as audit
from datapass.audit.search import AuditFilter
from datapass.extensions import db
from tests import factories


def _seed(n=12):
    actor = audit.Actor.system("test")
    labels = [
        '=HYPERLINK("http://x")',
        "+33 1 02",
        "-2+3",
        "@SUM(A1)",
        "\tcaché",
        "'cité",
        "",
        'Dupont, "Jean"\nsuite',
    ]
    for i in range(n):
        audit.record(
            "accounts:user:login",
            audit.Actor("user", str(i), labels[i % len(labels)], "192.0.2.1"),
            subject_type="users",
            subject_id=i,
            organisation_id=1 if i % 2 else None,
            payload={"i": i, "note": "=1+1" if i == 3 else "ok"},
        )
    audit.record("tokens:token:revoked", actor, payload={"reason": "test"})
    db.session.flush()


def _export(fmt="csv", flt=None, tmp_path=None):
    officer = factories.user(roles=("security_officer",))
    export = exports.create_export(flt or AuditFilter(), fmt, audit.Actor.for_user(officer))
    data = b"".join(exports.stream(export))
    manifest = exports.signed_manifest(export)
    path = tmp_path / exports.filename(export)
    path.write_bytes(data)
    return export, path, manifest


def _jwks():
    return checkpoints.public_jwks()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_verifies_offline(app, tmp_path, fmt):
    _seed()
    export, path, manifest = _export(fmt, tmp_path=tmp_path)
    info = checkpoints.check_jws(manifest, _jwks())
    assert info["rows"] == 13 + 1  # the audit key's creation is an event too
    assert info["checkpoint"]["seq"] == export.bound_seq == info["last"]["seq"]
    result = exports.verify_export(path, manifest, _jwks())
    assert result.ok, result.problems
    # the export is an audit event, after the bound
    assert db.session.get(audit.AuditEvent, export.audit_seq).tag == "audit:export:created"


def test_cli_verifies_with_a_jwks_file(app, tmp_path):
    _seed()
    _export_row, path, manifest = _export(tmp_path=tmp_path)
    (tmp_path / "m.jws").write_text(manifest)
    (tmp_path / "jwks.json").write_text(json.dumps(_jwks()))
    from datapass.cli import audit_verify_export

    runner = CliRunner()
    args = [str(path), str(tmp_path / "m.jws"), "--jwks", str(tmp_path / "jwks.json")]
    ok = runner.invoke(audit_verify_export, args)
    assert ok.exit_code == 0, ok.output
    assert "intègre" in ok.output
    lines = path.read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b"ok", b"oK", 1)
    path.write_bytes(b"\n".join(lines))
    bad = runner.invoke(audit_verify_export, args)
    assert bad.exit_code == 1 and "ligne 6" in bad.output


def test_one_changed_byte_is_named_by_line(app, tmp_path):
    _seed()
    _e, path, manifest = _export(tmp_path=tmp_path)
    data = bytearray(path.read_bytes())
    lines = data.split(b"\n")
    target = lines[6]
    position = target.index(b"192.0.2.1") + 8
    target[position : position + 1] = b"7"
    path.write_bytes(b"\n".join(lines))
    result = exports.verify_export(path, manifest, _jwks())
    assert not result.ok
    assert any(p.startswith("ligne 7 ") and "modifié" in p for p in result.problems)


def test_a_dropped_or_added_line_is_detected_and_located(app, tmp_path):
    _seed()
    _e, path, manifest = _export(tmp_path=tmp_path)
    original = path.read_bytes()
    lines = original.split(b"\n")
    path.write_bytes(b"\n".join(lines[:5] + lines[6:]))
    dropped = exports.verify_export(path, manifest, _jwks())
    assert not dropped.ok
    assert any("lignes dans le fichier" in p for p in dropped.problems)
    assert any("supprimée, ajoutée ou déplacée" in p and "ligne" in p for p in dropped.problems)
    path.write_bytes(b"\n".join(lines[:5] + [lines[5]] + lines[5:]))
    added = exports.verify_export(path, manifest, _jwks())
    assert not added.ok
    assert any("ligne 7" in p and "ordre ou doublon" in p for p in added.problems)


def test_another_manifest_or_a_forged_signature_fails(app, tmp_path):
    _seed()
    _e, path, _manifest = _export(tmp_path=tmp_path)
    _e2, _path2, other = _export(flt=AuditFilter(tag="tokens:token:revoked"), tmp_path=tmp_path)
    result = exports.verify_export(path, other, _jwks())
    assert not result.ok
    assert any("dans le manifeste" in p for p in result.problems)
    header, payload, signature = other.split(".")
    forged = f"{header}.{payload[:-2]}AA.{signature}"
    assert "signature invalide" in exports.verify_export(path, forged, _jwks()).problems[0]


def test_csv_cells_that_look_like_formulas_open_as_text(app, tmp_path):
    _seed()
    _e, path, _m = _export(tmp_path=tmp_path)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    header, body = rows[0], rows[1:]
    labels = [row[header.index("actor_label")] for row in body]
    for cell in labels:
        assert not cell or cell[0] not in "=+-@\t\r", cell
    assert '\'=HYPERLINK("http://x")' in labels
    assert "'+33 1 02" in labels and "'-2+3" in labels and "'@SUM(A1)" in labels
    assert "'\tcaché" in labels and "''cité" in labels
    assert "'" in labels  # an empty string, told apart from NULL (an empty cell)
    assert exports.csv_value("'=1", "actor_label") == "=1"
    assert exports.csv_value("''cité", "actor_label") == "'cité"
    assert exports.csv_value("", "actor_label") is None


def test_filtered_export_only_holds_matching_rows(app, tmp_path):
    _seed()
    _e, path, manifest = _export("jsonl", flt=AuditFilter(organisation_id=1), tmp_path=tmp_path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records and all(r["organisation_id"] == 1 for r in records)
    assert exports.verify_export(path, manifest, _jwks()).ok


def test_a_long_sqlite_export_does_not_block_writers(committed_app, backend, tmp_path, monkeypatch):
    """Outside a test transaction, a SQLite export reads in autocommit: writers go on."""
    if backend != "sqlite":
        pytest.skip("PostgreSQL reads under MVCC with a server-side cursor")
    monkeypatch.setattr(exports, "FETCH", 5)
    for i in range(30):
        audit.record("accounts:user:login", audit.Actor.system("t"), payload={"i": i})
    db.session.commit()
    today = date(2026, 11, 28)
    export = exports.create_export(
        AuditFilter(tag="accounts:user:login", start=today, end=today),
        "csv",
        audit.Actor.system("t"),
    )
    db.session.commit()
    chunks = exports.stream(export)
    first = next(chunks) + next(chunks)
    audit.record("accounts:user:login", audit.Actor.system("t"), payload={"during": True})
    db.session.commit()  # would wait for the lock (and fail) if the export held it
    data = first + b"".join(chunks)
    path = tmp_path / "e.csv"
    path.write_bytes(data)
    assert data.count(b"\n") == 31  # header + the 30 events under the bound
    assert exports.verify_export(
        path, exports.signed_manifest(export), checkpoints.public_jwks()
    ).ok
