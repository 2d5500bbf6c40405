"""Hostile input on every route of ``app.url_map``, every form and every query parameter, as
each role, on both databases (issue 10, point 8 and the reliability suite): never a 500, a
French error, nothing changed in the database when the input is refused.

Nothing here lists the routes, forms or parameters by hand, so a new one is walked as soon
as it exists:

* the routes come from ``app.url_map`` (with real ids of the world, or hostile ones);
* the query parameters are the ones each view reads (``request.args`` records them while
  every page is fetched once as each role);
* the forms are the ones the pages show (parsed from their HTML, fields and action).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlencode, urlsplit

import pytest
import werkzeug.exceptions
from sqlalchemy import select
from werkzeug.datastructures import ImmutableMultiDict, MultiDict
from werkzeug.routing import IntegerConverter

from datapass.access import MACHINE_PREFIXES, policy_of
from datapass.extensions import db
from datapass.web import FLAT_JSON_REQUIRED, INVALID_JSON, NUL_REFUSED, TITLES
from tests.reliability import hostile_world

ROLES = (None, "applicant", "member", "instructor", "security_officer", "admin")
SKIPPED = {"static", "dsfr"}
# Would end the walk's own sessions: walked once, last (test_logout_…).
LAST = {"accounts.logout"}
# Hostile values for a text (query parameter, form field, path segment). "mixed" is SQL,
# HTML, a formula, and unicode that is not what it looks like (bidi override, emoji, BOM,
# a combining accent), in one value.
XSS = "<script>alert(1)</script>"
TEXTS = {
    "nul": "avant\x00après",
    "huge": "A" * 20_000,
    "mixed": f'\' OR 1=1; DROP TABLE users; --"\'>{XSS}=HYPERLINK("x")'
    + "é\u202e\U0001f600\ufeff\u0301",
    "digits30": "9" * 30,
    "negative": "-2147483649",
    "superscript": "²³",
}
# In forms, "superscript" is plain text.
FORM_TEXTS = {k: v for k, v in TEXTS.items() if k != "superscript"}
# Hostile ids for <int:…> segments: none names a row, all must be a plain 404 (the 30 digits
# are beyond BIGINT too).
IDS = ("9" * 30, str(2**31), "-1")
ENGLISH = {
    cls.description
    for cls in vars(werkzeug.exceptions).values()
    if isinstance(cls, type) and issubclass(cls, werkzeug.exceptions.HTTPException)
    if isinstance(cls.description, str)
}
ERROR_MARKERS = ("--error", "fr-error-text", 'role="alert"')
# What a refused request may still write: the evidence of a failed authentication.
EVIDENCE_TABLES = {"login_failures"}
EVIDENCE_TAGS = ("failed", "refused", "denied", "locked", "throttled")


# --- the walker -------------------------------------------------------------------------


_READ: set[str] = set()


class RecordingArgs(ImmutableMultiDict):
    """``request.args`` that remembers which names the view asked for."""

    def get(self, key, default=None, type=None):  # noqa: A002
        _READ.add(key)
        return super().get(key, default, type)

    def __getitem__(self, key):
        _READ.add(key)
        return super().__getitem__(key)

    def getlist(self, key, type=None):  # noqa: A002
        _READ.add(key)
        return super().getlist(key, type)

    def __contains__(self, key):
        _READ.add(key)
        return super().__contains__(key)


@dataclass
class Form:
    action: str
    role: str | None
    fields: dict[str, str] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)


class FormParser(HTMLParser):
    def __init__(self, page: str, role):
        super().__init__()
        self.page, self.role, self.forms, self.current = page, role, [], None
        self.select = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and (a.get("method") or "get").lower() == "post":
            self.current = Form(a.get("action") or self.page, self.role)
            self.forms.append(self.current)
        elif self.current is None or not a.get("name"):
            return
        elif tag == "input" and a.get("type") == "file":
            self.current.files.add(a["name"])
        elif tag == "input" and a.get("type") not in ("submit", "button"):
            if a.get("type") in ("checkbox", "radio") and a["name"] in self.current.fields:
                return
            self.current.fields[a["name"]] = a.get("value") or "1"
        elif tag in ("textarea", "select"):
            self.current.fields.setdefault(a["name"], "")
            self.select = a["name"] if tag == "select" else None
        elif tag == "option" and self.select and not self.current.fields.get(self.select):
            self.current.fields[self.select] = a.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.current = None


class Walker:
    def __init__(self, app, world):
        self.app, self.world = app, world
        self.clients = {role: world.client(app, role) for role in ROLES}
        self.machine = app.test_client()
        self.args: dict[str, set[str]] = defaultdict(set)  # endpoint → names read
        self.forms: dict[tuple, Form] = {}  # (endpoint, field names) → form
        self.downloads: set[str] = set()  # endpoints that answered with an attachment
        self.adapter = app.url_map.bind("datapass.test")
        self.requests = 0
        self.digests = 0
        self.cached = None
        with app.app_context():
            sqlite = db.engine.dialect.name == "sqlite"
            self.watch = db.engine.raw_connection() if sqlite else None
        self.rules = [r for r in app.url_map.iter_rules() if r.endpoint not in SKIPPED | LAST]

    # who may call a route
    def allowed_role(self, rule) -> str | None:
        policy = policy_of(self.app.view_functions[rule.endpoint])
        if policy.kind == "machine":
            return "machine"
        if policy.kind in ("public", "development"):
            return None
        for role in ("instructor", "security_officer", "admin"):
            if role in policy.roles:
                return role
        return "applicant"

    def add_form(self, form: Form) -> None:
        """One form per (endpoint, fields): the same form on many pages, or for many objects,
        is posted once, as the role the endpoint is for when that role saw it."""
        path = urlsplit(form.action).path
        try:
            endpoint, _ = self.adapter.match(path, method="POST")
        except werkzeug.exceptions.HTTPException:
            return
        if endpoint in LAST:
            return
        key = (endpoint, tuple(sorted(form.fields)))
        rule = next(r for r in self.rules if r.endpoint == endpoint)
        if key not in self.forms or form.role == self.allowed_role(rule):
            self.forms[key] = form

    def client(self, role):
        return self.machine if role == "machine" else self.clients[role]

    def defaults(self, rule) -> dict[str, str] | None:
        """Real values for each URL parameter (None: no such object in the world)."""
        values = {}
        for name, converter in rule._converters.items():
            if isinstance(converter, IntegerConverter):
                if name not in self.world.ids:
                    return None
                values[name] = self.world.ids[name]
            else:
                values[name] = self.world.texts.get((rule.endpoint, name), "x")
        return values

    def path(self, rule, values) -> str:
        return rule.build(values, append_unknown=False)[1]

    def request(self, role, method, url, **kwargs):
        self.requests += 1
        headers = kwargs.pop("headers", {})
        if role == "machine":
            headers["Authorization"] = self.world.basic
        _READ.clear()
        response = self.client(role).open(url, method=method, headers=headers, **kwargs)
        body = response.get_data().decode("utf-8", "replace")
        sent = kwargs.get("query_string") or kwargs.get("data") or kwargs.get("json") or ""
        where = f"{method} {url[:120]} as {role} with {repr(sent)[:160]}"
        # /readyz says "not ready" with a 503 by contract (the walk's world has no scheduler).
        not_ready = url.startswith("/readyz") and response.status_code == 503
        assert response.status_code < 500 or not_ready, f"{where}: {response.status_code}"
        assert XSS not in body, f"{where}: the payload came back unescaped"
        if response.status_code >= 400 and not not_ready:  # readiness: tests/operations
            assert_french(response, body, where)
        return response, body

    def digest(self) -> tuple[str, int]:
        """A digest of every table but the evidence of failed authentications, and the
        audit log's last sequence number. On SQLite, computed again only when some
        connection has written since (``PRAGMA data_version`` of a connection kept open)."""
        version = None
        if self.watch is not None:
            version = self.watch.execute("PRAGMA data_version").fetchone()[0]
            if self.cached is not None and self.cached[0] == version:
                return self.cached[1]
        self.digests += 1
        with self.app.app_context():
            h = hashlib.sha256()
            names = [
                t.name
                for t in db.metadata.sorted_tables
                if t.name not in EVIDENCE_TABLES | {"audit_events", "audit_head"}
            ]
            with db.engine.connect() as connection:
                if connection.dialect.name == "postgresql":  # one round trip
                    parts = [
                        f"(SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                        f" FROM {name} t)"
                        for name in names
                    ]
                    h.update(
                        connection.exec_driver_sql(f"SELECT {' || '.join(parts)}").scalar().encode()
                    )
                else:
                    for name in names:
                        rows = connection.exec_driver_sql(f"SELECT * FROM {name}").all()
                        h.update(repr(sorted(map(repr, rows))).encode())
                last = connection.exec_driver_sql("SELECT max(seq) FROM audit_events").scalar()
        result = h.hexdigest(), last or 0
        self.cached = (version, result)
        return result

    def assert_unchanged(self, before, where: str) -> None:
        from datapass.audit.models import AuditEvent

        after = self.digest()
        assert after[0] == before[0], f"{where}: refused, but the database changed"
        if after[1] != before[1]:
            with self.app.app_context():
                tags = db.session.scalars(
                    select(AuditEvent.tag).where(AuditEvent.seq > before[1])
                ).all()
                db.session.remove()
            odd = [t for t in tags if not any(word in t for word in EVIDENCE_TAGS)]
            assert not odd, f"{where}: refused, but audit events were written: {odd}"


def assert_french(response, body: str, where: str) -> None:
    if response.mimetype.endswith("json"):
        problem = json.loads(body)
        assert problem.get("title") in TITLES.values() or "error" in problem, where
        detail = problem.get("detail") or problem.get("error_description") or ""
        assert detail not in ENGLISH, f"{where}: an English error ({detail})"
        return
    if response.status_code in (401, 405) or response.mimetype != "text/html":
        return
    assert 'lang="fr"' in body, f"{where}: not a French page"
    leaked = [text for text in ENGLISH if text in body]
    assert not leaked, f"{where}: an English error: {leaked[0]}"
    title = TITLES.get(response.status_code)
    said = (title and title in body) or any(m in body for m in ERROR_MARKERS) or "<h1" in body
    assert said, f"{where}: {response.status_code} without a French error message"


@pytest.fixture(scope="module")
def walker(backend, app_for_backend):
    app = app_for_backend(backend)
    world = hostile_world.build(app)
    request_class = app.request_class
    walker = None
    app.request_class = type(
        "Recording", (request_class,), {"parameter_storage_class": RecordingArgs}
    )
    try:
        walker = Walker(app, world)
        _visit_everything(walker)
        yield walker
    finally:
        app.request_class = request_class
        if walker is not None and walker.watch is not None:
            walker.watch.close()
        hostile_world.destroy(app)


def _visit_everything(walker: Walker) -> None:
    """Every GET route as every role, with the world's ids: nothing fails; remember the
    query parameters each view reads and the forms each page shows."""
    for rule in walker.rules:
        values = walker.defaults(rule)
        if values is None or "GET" not in rule.methods or rule.rule.startswith("/api/"):
            continue
        url = walker.path(rule, values)
        for role in ROLES:
            response, body = walker.request(role, "GET", url)
            walker.args[rule.endpoint] |= _READ
            if response.headers.get("Content-Disposition", "").startswith("attachment"):
                walker.downloads.add(rule.endpoint)
            if response.status_code == 200 and response.mimetype == "text/html":
                parser = FormParser(url, role)
                parser.feed(body)
                for form in parser.forms:
                    walker.add_form(form)


# --- the tests --------------------------------------------------------------------------


def test_uploaded_files_may_hold_nul_bytes(walker):
    """The guard reads form values, not uploaded files: a PDF holds binary. (First test of
    the module: the applicant's draft is still a draft.)"""
    from io import BytesIO

    pdf = b"%PDF-1.7\n%\x00\xe2\xe3\x00\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n"
    url = f"/demandes/{walker.world.ids['request_id']}/etapes/cadre-juridique"
    response, body = walker.request(
        "applicant",
        "POST",
        url,
        data={
            "legal_basis_name": "Délibération du 12 mars 2026",
            "legal_basis_document": (BytesIO(pdf), "deliberation.pdf"),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code in (302, 303), f"{url}: refused ({response.status_code})"


def test_every_route_answers_every_role_without_error(walker):
    """GET (done by the fixture) and an empty POST, as each role, on every route."""
    for rule in walker.rules:
        values = walker.defaults(rule)
        if values is None or "POST" not in rule.methods or rule.rule.startswith("/api/"):
            continue
        for role in ROLES:
            walker.request(role, "POST", walker.path(rule, values), data={})
    assert walker.forms and walker.args, "the walk found forms and query parameters"


def test_every_download_is_an_export_tested_with_rows(walker):
    """Whatever answers with an attachment is downloaded with rows by test_exports (its
    route pattern found it), or is a stored document returned as uploaded."""
    from tests.reliability.test_exports import EXPORTS

    documents = {"authorizations.document"}  # the applicant's PDF, as uploaded
    assert walker.downloads - documents <= set(EXPORTS), "add it to test_exports.EXPORTS"
    assert walker.downloads & set(EXPORTS), "the walk downloaded exports"


def test_out_of_range_and_negative_ids_are_404(walker):
    for rule in walker.rules:
        ids = [n for n, c in rule._converters.items() if isinstance(c, IntegerConverter)]
        if not ids:
            continue
        method = "GET" if "GET" in rule.methods else "POST"
        role = walker.allowed_role(rule)
        for name in ids:
            for bad in IDS:
                values = dict(walker.defaults(rule) or {n: 1 for n in ids}) | {name: bad}
                url = walker.path(rule, values)
                response, _ = walker.request(role, method, url)
                assert response.status_code == 404, f"{method} {url}: {response.status_code}"


def test_hostile_path_segments(walker):
    for rule in walker.rules:
        texts = [n for n, c in rule._converters.items() if not isinstance(c, IntegerConverter)]
        if not texts or walker.defaults(rule) is None:
            continue
        method = "GET" if "GET" in rule.methods else "POST"
        role = walker.allowed_role(rule)
        for name in texts:
            for kind, bad in TEXTS.items():
                url = walker.path(rule, walker.defaults(rule) | {name: bad})
                response, body = walker.request(role, method, url)
                if kind == "nul":
                    assert response.status_code in (400, 404), url


# Refused by the guard whatever the parameter, or read as text by every view: sent in every
# parameter at once (one request per page); the others in one parameter at a time.
ALL_AT_ONCE = ("nul", "huge")


def test_hostile_query_parameters(walker):
    """Every query parameter a view reads, given each hostile value in turn."""
    tried = 0
    for rule in walker.rules:
        values = walker.defaults(rule)
        names = sorted(walker.args.get(rule.endpoint, ()))
        if values is None or not names or "GET" not in rule.methods:
            continue
        role = walker.allowed_role(rule)
        url = walker.path(rule, values)
        for kind in ALL_AT_ONCE:
            response, body = walker.request(
                role, "GET", url, query_string={name: TEXTS[kind] for name in names}
            )
            if kind == "nul":
                assert response.status_code == 400 and NUL_REFUSED in body, url
        # a list where one value is expected
        walker.request(
            role, "GET", url, query_string=urlencode([(n, v) for n in names for v in "12"])
        )
        for name in names:
            for kind, bad in TEXTS.items():
                if kind not in ALL_AT_ONCE:
                    walker.request(role, "GET", url, query_string={name: bad})
                    tried += 1
    assert tried


def _bodies(form: Form):
    """Each hostile body for ``form``: (kind, request arguments, the 400 message expected)."""
    for kind, bad in FORM_TEXTS.items():
        expected = NUL_REFUSED if kind == "nul" else None
        yield kind, {"data": {k: bad for k in form.fields}}, expected
    # a list where one value is expected
    yield (
        "list",
        {"data": MultiDict([(k, v) for k, v in form.fields.items() for _ in (0, 1)])},
        None,
    )
    # JSON (Flask-WTF reads it as the form): nested where flat is expected, or not JSON
    nested = {k: {"objet": ["imbriqué", 1]} for k in form.fields}
    yield "json", {"json": nested}, FLAT_JSON_REQUIRED
    yield "bad-json", {"data": "{pas du json", "content_type": "application/json"}, INVALID_JSON


def test_hostile_forms_are_refused_in_french_and_change_nothing(walker):
    """Every form the pages show, posted with every field set to each hostile value, with
    every field repeated, and as nested or invalid JSON."""
    assert walker.forms
    checked = ("nul", "digits30", "json")  # the database compared before and after
    for (_endpoint, _fields), form in sorted(walker.forms.items()):
        role, action = form.role, form.action
        for kind, body, expected in _bodies(form):
            # A button (no field but the CSRF token) acts whatever the body: its outcome,
            # not a refusal, decides what it writes.
            button = not set(form.fields) - {"csrf_token"}
            before = walker.digest() if kind in checked and not button else None
            if before is not None:
                with walker.client(role).session_transaction() as session:
                    session.pop("_flashes", None)  # left by earlier redirects
            response, text = walker.request(role, "POST", form.action, **body)
            where = f"POST {action} ({kind}) as {role}"
            if expected is not None:
                assert response.status_code == 400, where
                assert expected in text.replace("&#39;", "'"), where
            if before is not None and _refused(walker, role, response):
                walker.assert_unchanged(before, where)


# One field at a time, the others as the page filled them: a value too long for its column,
# or a number too large for it, must be refused by that field's validation (not by the
# database, a 500), even when every other field is valid.
PER_FIELD = ("huge", "digits30")


def test_each_field_alone_is_validated(walker):
    for (_endpoint, _fields), form in sorted(walker.forms.items()):
        for name in sorted(set(form.fields) - {"csrf_token"}):
            for kind in PER_FIELD:
                data = dict(form.fields) | {name: TEXTS[kind]}
                walker.request(form.role, "POST", form.action, data=data)


def _refused(walker, role, response) -> bool:
    if response.status_code >= 400:
        return True
    with walker.client(role).session_transaction() as session:
        return any(category == "error" for category, _ in session.get("_flashes", []))


def test_machine_api_hostile_bodies(walker):
    """The machine API: NUL, nested JSON, wrong types, huge numbers: a 4xx problem in French
    (or an inactive answer for an unusable token), never a 500."""
    bodies = [
        {"data": {"token": "a\x00b"}},
        {"data": {"token": ["a", "b"]}},
        {"data": {"token": "x" * 10_000}},
        {"json": {"token": {"nested": {"deeper": [1, 2]}}}},
        {"json": [[{"id": {"x": 1}}]]},
        {"json": {"events": [{"id": ["x"], "token": {"a": 1}, "status": "200"}]}},
        {"json": {"events": [{"id": "e", "token": "t", "status": 10**30, "latency_ms": -1}]}},
        {"json": {"events": {"id": "not a list"}}},
        {"json": {"token": "a\x00b", "kid": {"x": 1}}},
        {"data": "{not json", "content_type": "application/json"},
        {"data": "\x00", "content_type": "application/json"},
    ]
    for rule in walker.rules:
        if not rule.rule.startswith(MACHINE_PREFIXES) or "POST" not in rule.methods:
            continue
        for role in ("machine", None):
            for body in bodies:
                response, text = walker.request(role, "POST", rule.rule, **body)
                nul_form = isinstance(body.get("data"), dict) and "\x00" in str(body["data"])
                if nul_form and role == "machine":
                    assert response.status_code == 400, rule.rule
                if "json" in body or body.get("content_type") == "application/json":
                    # none of these is a valid JSON body: a problem document, never a 2xx
                    assert 400 <= response.status_code < 500, (rule.rule, body)
                    assert response.mimetype == "application/problem+json", rule.rule


def test_logout_refuses_hostile_input_too(walker):
    for rule in walker.app.url_map.iter_rules():
        if rule.endpoint in LAST:
            response, body = walker.request("member", "POST", rule.rule, data={"x": "\x00"})
            assert response.status_code == 400 and NUL_REFUSED in body
