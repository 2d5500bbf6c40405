"""Every export of the application, downloaded completely over the test client as the role
allowed to, with rows, on both databases (issue 10, point 9: the security dashboard's CSV
aborted mid-stream because its query's cursor was closed before the response streamed).

The export routes are found in ``app.url_map``: a new one fails
:func:`test_every_export_route_is_downloaded_here` until it is added to :data:`EXPORTS`.
Each download is compared with the row count the database gives, and no cell may start like
a formula: the payload organisations, titles, people and endpoints of the world come back
neutralised (a leading apostrophe).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from datapass.access import MACHINE_PREFIXES
from datapass.extensions import db
from tests.reliability import hostile_world
from tests.reliability.hostile_world import EMAILS, PAYLOADS

FORMULA = ("=", "+", "-", "@")
# A download: a path ending in a file extension, or an export's file or manifest.
DOWNLOAD = re.compile(r"\.(csv|xlsx|ods|json|jsonl|zip|pdf)$|/(fichier|manifeste)$")


@pytest.fixture(scope="module")
def world(backend, app_for_backend):
    app = app_for_backend(backend)
    built = hostile_world.build(app)
    yield app, built
    hostile_world.destroy(app)


def _dashboard(app, world, name):
    from datapass.lifecycle import dashboard

    return dashboard.dashboard(dashboard.DashboardFilters(), limit=1)[name]["count"]


def _queue(app, world, _):
    from datapass.accounts.models import User
    from datapass.authorizations import queue

    user = db.session.get(User, world.user_ids["instructor"])
    return queue.instructor_queue(user, queue.QueueFilters(state="")).total


def _usage(app, world, token_id):
    from datapass.consumption import charts

    if token_id is not None:
        return len(list(charts.daily_rows(token_id=token_id, days=90)))
    return len(list(charts.daily_rows(api_ids=[world.api_id], days=30)))


def _audit(app, world, export_id):
    from datapass.audit.models import AuditEvent, AuditExport

    bound = db.session.get(AuditExport, export_id).bound_seq
    return db.session.scalar(select(func.count()).where(AuditEvent.seq <= bound))


@dataclass(frozen=True)
class Export:
    role: str
    kind: str  # csv; | csv, | xlsx | audit-csv | jsonl | jws
    urls: Callable  # world → [(url values, query string, key for `rows`)]
    rows: Callable  # (app, world, key) → the number of data rows expected
    payloads: tuple[str, ...] = PAYLOADS  # the world's formula payloads found in it


def _dashboard_urls(world):
    from datapass.lifecycle.dashboard import DASHBOARD_LISTS

    return [({"name": name}, {}, name) for name in DASHBOARD_LISTS]


EXPORTS: dict[str, Export] = {
    "lifecycle.dashboard_csv": Export("security_officer", "csv;", _dashboard_urls, _dashboard),
    "authorizations.export_csv": Export(
        "instructor", "csv;", lambda w: [({}, {"etat": ""}, None)], _queue
    ),
    "authorizations.export_xlsx": Export(
        "instructor", "xlsx", lambda w: [({}, {"etat": ""}, None)], _queue
    ),
    "consumption.api_usage_csv": Export(
        "instructor", "csv,", lambda w: [({}, {"api": w.api_id, "jours": 30}, None)], _usage
    ),
    "consumption.token_usage_csv": Export(
        "member",
        "csv,",
        lambda w: [({"token_id": w.payload_token_id}, {}, w.payload_token_id)],
        _usage,
        payloads=PAYLOADS[:1],  # the token of the member's organisation
    ),
    "audit.export_file": Export(
        "security_officer",
        "audit",
        lambda w: [({"export_id": i}, {}, i) for i in w.export_ids.values()],
        _audit,
        payloads=EMAILS,  # the actors' labels
    ),
    "audit.export_manifest": Export(
        "security_officer",
        "jws",
        lambda w: [({"export_id": i}, {}, i) for i in w.export_ids.values()],
        _audit,
        payloads=(),
    ),
}


def export_endpoints(app) -> set[str]:
    found = set()
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint in {"static", "dsfr"}:
            continue
        if rule.rule.startswith(MACHINE_PREFIXES):
            continue  # the machine API's documents are not people's exports
        if DOWNLOAD.search(rule.rule):
            found.add(rule.endpoint)
    return found


def test_every_export_route_is_downloaded_here(world):
    app, _ = world
    assert export_endpoints(app) == set(EXPORTS), "add the new export to EXPORTS"


def _cells(kind: str, body: bytes) -> list[list]:
    if kind in ("csv;", "csv,"):
        text = body.decode("utf-8")
        assert text.startswith("\ufeff"), "a BOM, so that spreadsheets read UTF-8"
        return list(csv.reader(io.StringIO(text[1:]), delimiter=kind[-1]))
    if kind == "xlsx":
        from openpyxl import load_workbook

        sheet = load_workbook(io.BytesIO(body), read_only=True).active
        return [list(row) for row in sheet.iter_rows(values_only=True)]
    if kind == "audit-csv":
        return list(csv.reader(io.StringIO(body.decode("utf-8"))))
    if kind == "jsonl":
        return [list(json.loads(line).values()) for line in body.decode().splitlines()]
    raise AssertionError(kind)


def _manifest(jws: str) -> dict:
    payload = jws.strip().split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.mark.parametrize("endpoint", sorted(EXPORTS))
def test_export_downloads_completely_with_formulas_neutralised(world, endpoint, tmp_path):
    app, built = world
    export = EXPORTS[endpoint]
    client = built.client(app, export.role)
    adapter = app.url_map.bind("datapass.test")
    for values, query, key in export.urls(built):
        url = adapter.build(endpoint, values)
        response = client.get(url, query_string=query)
        assert response.status_code == 200, url
        body = response.get_data()  # the whole stream: an abort mid-stream raises here
        assert response.headers["Content-Disposition"].startswith("attachment"), url
        with app.app_context():
            expected = export.rows(app, built, key)
            db.session.remove()
        assert expected > 0, f"{url}: the world seeds rows for every export"
        kind = export.kind
        if kind == "audit":
            kind = "audit-csv" if response.mimetype == "text/csv" else "jsonl"
        if kind == "jws":
            manifest = _manifest(body.decode())
            assert manifest["rows"] == expected, url
            file = client.get(adapter.build("audit.export_file", values)).get_data()
            assert len(file) == manifest["bytes"], url
            continue
        rows = _cells(kind, body)
        header = 0 if kind == "jsonl" else 1
        assert len(rows) - header == expected, f"{url}: every row, and only once"
        texts = [c for row in rows for c in row if isinstance(c, str)]
        if kind != "jsonl":
            live = [c for c in texts if c.startswith(FORMULA)]
            assert not live, f"{url}: cells that would run as formulas: {live[:3]}"
        if export.payloads:
            wanted = {p if kind == "jsonl" else "'" + p for p in export.payloads}
            found = {p for p in wanted if any(p in c for c in texts)}
            assert found == wanted, f"{url}: the payload rows are in the export"


def test_audit_exports_verify_offline_after_download(world, tmp_path):
    """The streamed file and its manifest, downloaded, pass the offline verifier."""
    from datapass.audit import exports

    app, built = world
    client = built.client(app, "security_officer")
    jwks = client.get("/.well-known/jwks.json").get_json()
    for fmt, export_id in built.export_ids.items():
        path = tmp_path / f"export.{fmt}"
        path.write_bytes(client.get(f"/audit/exports/{export_id}/fichier").get_data())
        manifest = client.get(f"/audit/exports/{export_id}/manifeste").get_data(as_text=True)
        with app.app_context():
            result = exports.verify_export(path, manifest, jwks)
        assert result.ok, (fmt, result.problems)
