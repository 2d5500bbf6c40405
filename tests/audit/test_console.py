"""The security officer's console: search, cursor pagination, event detail, exports over
HTTP."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlparse

from datapass.audit import checkpoints, exports
from datapass.audit import service as audit
from datapass.extensions import db
from tests import factories


def _staff(*roles, **kwargs):
    person = factories.user(roles=roles, **kwargs)
    factories.enable_totp(person)  # staff must have a second factor
    return person


def _officer():
    return _staff("security_officer")


def _client_for(app, person):
    from flask import g

    from tests.conftest import login

    # requests share the test's app context, where Flask-Login keeps the current user
    g.pop("_login_user", None)
    client = app.test_client()
    login(client, person)
    return client


def test_only_security_officers_and_admins_read_the_console(app):
    applicant = factories.user(organisation=factories.organisation())
    assert _client_for(app, applicant).get("/audit/").status_code == 403
    assert _client_for(app, _staff("admin")).get("/audit/").status_code == 200
    assert _client_for(app, _officer()).get("/audit/").status_code == 200


def test_search_filters_and_cursor_pagination(client, login_as, app):
    for i in range(60):
        audit.record(
            "accounts:user:login" if i % 2 else "tokens:token:revoked",
            audit.Actor.system("test"),
            organisation_id=7 if i < 10 else None,
            payload={"i": i},
        )
    login_as(_officer())
    page = client.get("/audit/?etiquette=tokens:*").get_data(as_text=True)
    assert (
        page.count(">tokens:token:revoked</td>") == 30 and ">accounts:user:login</td>" not in page
    )
    first = client.get("/audit/").get_data(as_text=True)
    assert "Événements plus anciens" in first
    start = first.index("avant=")
    cursor = first[start + 6 : first.index('"', start)].split("&")[0]
    second = client.get(f"/audit/?avant={cursor}").get_data(as_text=True)
    assert f">{int(cursor) - 1}</a>" in second and f">{cursor}</a>" not in second
    assert (
        client.get("/audit/?organisation=7").get_data(as_text=True).count("/audit/evenements/")
        == 10
    )
    bad = client.get("/audit/?debut=hier&etiquette=DROP TABLE")
    assert bad.status_code == 200 and "Date invalide" in bad.get_data(as_text=True)


def test_a_pasted_token_is_hashed_and_never_kept(client, login_as, app, usage_world, caplog):
    login_as(_officer())
    response = client.post("/audit/jeton", data={"value": usage_world.raw})
    assert response.status_code == 302
    query = parse_qs(urlparse(response.headers["Location"]).query)
    digest = hashlib.sha256(usage_world.raw.encode()).hexdigest()
    assert query == {"jeton": [digest]}
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "tokens:token:issued" in page
    assert usage_world.raw not in page and usage_world.raw not in caplog.text
    rows = db.session.execute(db.text("SELECT payload FROM audit_events")).scalars().all()
    assert not any(usage_world.raw in row for row in rows)


def test_event_detail(client, login_as, app):
    event = audit.record("accounts:user:login", audit.Actor.system("t"), payload={"x": "y"})
    login_as(_officer())
    page = client.get(f"/audit/evenements/{event.seq}").get_data(as_text=True)
    assert event.hash in page and "accounts:user:login" in page
    assert client.get("/audit/evenements/999999").status_code == 404


def test_export_over_http_streams_and_verifies(client, login_as, app, tmp_path):
    for i in range(5):
        audit.record("accounts:user:login", audit.Actor.system("t"), payload={"i": i})
    login_as(_officer())
    response = client.post("/audit/exports", data={"format": "csv", "etiquette": "accounts:*"})
    assert response.status_code == 302
    export_page = response.headers["Location"]
    assert client.get(export_page).status_code == 200
    data = client.get(export_page + "/fichier")
    assert data.mimetype == "text/csv" and data.data.count(b"\n") == 6
    manifest = client.get(export_page + "/manifeste").get_data(as_text=True)
    path = tmp_path / "export.csv"
    path.write_bytes(data.data)
    assert exports.verify_export(path, manifest, checkpoints.public_jwks()).ok
    tags = db.session.execute(db.text("SELECT tag FROM audit_events")).scalars().all()
    assert "audit:export:created" in tags and tags.count("audit:export:downloaded") == 2
