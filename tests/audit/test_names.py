"""The audit log speaks names (issue 11, point 5): the "Objet", organisation and API columns
and an export's criteria show what people know, resolved in one query per page."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date

from sqlalchemy import event

from datapass.audit import names as audit_names
from datapass.audit import search
from datapass.audit import service as audit
from datapass.audit.models import AuditEvent
from datapass.extensions import db
from tests import factories
from tests.audit.conftest import issue_token
from tests.tokens.conftest import make_api


def _officer():
    person = factories.user(roles=("security_officer",))
    factories.enable_totp(person)
    return person


@contextmanager
def count_queries():
    statements: list[str] = []

    def note(conn, cursor, statement, *args):
        statements.append(statement)

    engine = db.session.get_bind()
    engine = getattr(engine, "engine", engine)
    event.listen(engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", note)


def _world():
    organisation = factories.organisation("Commune de Dunkerque")
    api = make_api(name="API Particulier — Quotient familial")
    token, _raw = issue_token(api, organisation=organisation)
    person = factories.user(full_name="Camille Martin", organisation=organisation)
    return organisation, api, token, person


def test_console_shows_names_not_table_names_or_ids(app, client, login_as):
    organisation, api, token, person = _world()
    audit.record(
        "tokens:token:revoked",
        audit.Actor.system("test"),
        subject=token,
        organisation_id=organisation.id,
        api_id=api.id,
    )
    audit.record("accounts:user:updated", audit.Actor.system("test"), subject=person)
    db.session.flush()
    login_as(_officer())
    page = client.get("/audit/").get_data(as_text=True)
    assert f"access_tokens n° {token.id}" not in page
    assert f"Jeton n° {token.id} — Commune de Dunkerque, API Particulier — Quotient familial" in (
        page
    )
    assert "Utilisateur n° " in page and "Camille Martin" in page
    assert "<td>Commune de Dunkerque</td>" in page
    assert "<td>API Particulier — Quotient familial</td>" in page
    assert f"<td>{organisation.id}</td>" not in page


def test_event_page_names_its_subject_organisation_and_api(app, client, login_as):
    organisation, api, token, _person = _world()
    recorded = audit.record(
        "tokens:token:suspended",
        audit.Actor.system("test"),
        subject=token,
        organisation_id=organisation.id,
        api_id=api.id,
    )
    db.session.flush()
    seq = recorded.seq
    login_as(_officer())
    page = client.get(f"/audit/evenements/{seq}").get_data(as_text=True)
    assert f"Jeton n° {token.id} — Commune de Dunkerque" in page
    assert ">Commune de Dunkerque</a>" in page
    assert ">API Particulier — Quotient familial</a>" in page


def test_names_of_a_page_take_one_query_whatever_its_size(app):
    subjects = []
    for n in range(12):
        organisation = factories.organisation(f"Mairie {n}")
        api = make_api(name=f"API n° {n}")
        token, _raw = issue_token(api, organisation=organisation)
        person = factories.user(organisation=organisation)
        subjects += [(token, organisation, api), (person, organisation, None)]
    for subject, organisation, api in subjects:
        audit.record(
            "tests:thing:done",
            audit.Actor.system("test"),
            subject=subject,
            organisation_id=organisation.id,
            api_id=api.id if api else None,
        )
    audit.record(
        "tests:day:sealed",
        audit.Actor.system("t"),
        subject_type="usage_day",
        subject_id="2026-11-27",
    )
    db.session.flush()
    events = list(
        db.session.scalars(
            db.select(AuditEvent).where(AuditEvent.tag.like("tests:%")).order_by(AuditEvent.seq)
        )
    )
    assert len(events) == 25
    with count_queries() as statements:
        found = audit_names.resolve(events)
        shown = [
            (found.subject(e), found.organisation(e.organisation_id), found.api(e.api_id))
            for e in events
        ]
    assert len(statements) == 1, statements
    assert shown[0][0].startswith("Jeton n° ") and shown[0][0].endswith("Mairie 0, API n° 0")
    assert shown[1][0].startswith("Utilisateur n° ") and shown[1][1] == "Mairie 0"
    assert shown[-1][0] == "Journée de consommation du 27/11/2026"
    assert shown[-1][1] == "—" and shown[1][2] == "—"


def test_deleted_objects_keep_a_readable_reference(app):
    events = [
        AuditEvent(
            subject_type="access_tokens", subject_id="999999", organisation_id=999999, api_id=None
        ),
        AuditEvent(subject_type="authorization_requests", subject_id="12"),
    ]
    found = audit_names.resolve(events)
    assert found.subject(events[0]) == "Jeton n° 999999 (supprimé)"
    assert found.organisation(999999) == "Organisation n° 999999 (supprimée)"
    assert found.subject(events[1]).startswith("Demande DP-000012")


def test_export_criteria_read_as_words(app, client, login_as):
    organisation, api, _token, _person = _world()
    flt = search.AuditFilter(
        start=date(2026, 11, 1),
        end=date(2026, 11, 28),
        organisation_id=organisation.id,
        api_id=api.id,
        tag="tokens:*",
    )
    assert search.criteria(flt.as_dict()) == [
        ("Du", "01/11/2026"),
        ("Au", "28/11/2026"),
        ("Organisation", "Commune de Dunkerque"),
        ("API", "API Particulier — Quotient familial"),
        ("Étiquette", "tokens:*"),
    ]
    login_as(_officer())
    response = client.post(
        "/audit/exports",
        data={"format": "csv", "organisation": organisation.siret, "api": str(api.id)},
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "organisation_id" not in page and "api_id =" not in page
    assert "Organisation : Commune de Dunkerque" in page
    assert "API : API Particulier — Quotient familial" in page


def test_actors_are_named_in_words():
    def event(actor_type, label=None, actor_id=None):
        return AuditEvent(actor_type=actor_type, actor_label=label, actor_id=actor_id)

    names = audit_names.Names()
    assert names.actor(event("user", "a@b.fr", "3")) == "a@b.fr"
    assert names.actor(event("machine", "Passerelle", "cli_1")) == "Client machine Passerelle"
    assert names.actor(event("system", "lifecycle_sweep")) == "Datapass (tâche lifecycle_sweep)"
    assert names.actor(event("anonymous")) == "Anonyme"
