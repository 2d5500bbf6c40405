"""Pages: the renewal wizard, the token page's schedule, the self-reactivation, the
instructor's decision, the security officer's dashboard and its CSV exports."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from datapass import clock, spreadsheet
from datapass.extensions import db
from datapass.lifecycle import renewal, sweep
from tests import factories
from tests.lifecycle.conftest import expiring_token, issue, make_listening_api


def wizard_data(token, **overrides):
    data = {
        "same_person": "oui",
        "purpose_unchanged": "oui",
        "legal_basis_holds": "oui",
        "scopes": list(token.habilitation.scopes),
    }
    for role, parts in renewal.current_contacts(token.habilitation).items():
        for part, value in parts.items():
            data[f"{role}-{part}"] = value
    data.update(overrides)
    return data


def test_token_page_shows_the_schedule_and_the_renewal_link(app, login_as):
    api = make_listening_api()
    token = expiring_token(api, days_left=40)
    client = login_as(token.habilitation.requester)
    page = client.get(f"/jetons/{token.id}").get_data(as_text=True)
    assert "Échéances" in page
    assert "<strong>Expirera</strong> le " in page
    assert "Sera suspendu" not in page  # after the expiry: moot, not shown
    assert f"/jetons/{token.id}/renouvellement" in page
    fresh = issue(api, organisation=token.organisation, requester=token.habilitation.requester)
    page = client.get(f"/jetons/{fresh.id}").get_data(as_text=True)
    suspend_on = (clock.local(fresh.issued_at).date() + timedelta(days=120)).strftime("%d/%m/%Y")
    assert f"<strong>Sera suspendu faute d&#39;utilisation</strong> le {suspend_on}" in page
    assert f"/jetons/{fresh.id}/renouvellement" not in page  # the window is not open yet


def test_wizard_with_nothing_changed_shows_the_new_token_once(app, login_as):
    api = make_listening_api()
    token = expiring_token(api, days_left=40)
    client = login_as(token.habilitation.requester)
    assert client.get(f"/jetons/{token.id}/renouvellement").status_code == 200
    response = client.post(f"/jetons/{token.id}/renouvellement", data=wizard_data(token))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'id="nouveau-jeton"' in page and "une seule fois" in page
    assert "délai de grâce" in page
    assert response.headers["Cache-Control"] == "no-store"
    db.session.expire_all()
    assert token.status == "superseded"


def test_wizard_requires_every_answer_and_changes_nothing(app, login_as):
    api = make_listening_api()
    token = expiring_token(api, days_left=40)
    client = login_as(token.habilitation.requester)
    data = wizard_data(token)
    del data["legal_basis_holds"]
    response = client.post(f"/jetons/{token.id}/renouvellement", data=data)
    assert response.status_code == 422
    assert "Répondez par oui ou par non." in response.get_data(as_text=True)
    db.session.expire_all()
    assert token.status == "active"


def test_wizard_with_a_changed_contact_reopens_the_request(app, login_as):
    api = make_listening_api()
    token = expiring_token(api, days_left=40)
    client = login_as(token.habilitation.requester)
    data = wizard_data(token, **{"technical-email": "autre.tech@mairie.fr"})
    response = client.post(f"/jetons/{token.id}/renouvellement", data=data)
    assert response.status_code == 302
    assert f"/demandes/{token.habilitation.request_id}" in response.headers["Location"]
    db.session.expire_all()
    assert token.habilitation.request.state == "draft"
    assert token.status == "active"


def test_another_organisation_gets_404(app, login_as):
    api = make_listening_api()
    token = expiring_token(api, days_left=40)
    stranger = factories.user(organisation=factories.organisation())
    client = login_as(stranger)
    assert client.get(f"/jetons/{token.id}/renouvellement").status_code == 404
    response = client.post(
        f"/jetons/{token.id}/reactivation-organisation",
        data={"reactiver-justification": "Je veux ce jeton."},
    )
    assert response.status_code == 404


def test_self_reactivation_through_the_page(app, login_as):
    api = make_listening_api()
    token = issue(api)
    clock.advance(timedelta(days=121))
    sweep.sweep_tokens()
    assert token.status == "suspended"
    client = login_as(token.habilitation.requester)
    page = client.get(f"/jetons/{token.id}").get_data(as_text=True)
    assert 'id="reactiver-organisation"' in page
    response = client.post(
        f"/jetons/{token.id}/reactivation-organisation", data={"reactiver-justification": ""}
    )
    db.session.expire_all()
    assert token.status == "suspended"
    client.post(
        f"/jetons/{token.id}/reactivation-organisation",
        data={"reactiver-justification": "Le service reprend le mois prochain."},
    )
    db.session.expire_all()
    assert token.status == "active"
    assert response.status_code == 302


def test_instructor_refusal_without_a_reason_is_shown_under_the_reason(app, login_as):
    api = make_listening_api(renewal_policy="instructor")
    instructor = factories.user(roles=("instructor",), api=api)
    factories.enable_totp(instructor)
    token = expiring_token(api, days_left=40)
    client = login_as(token.habilitation.requester)
    client.post(f"/jetons/{token.id}/renouvellement", data=wizard_data(token))
    pending = renewal.open_renewal(token)
    client = login_as(instructor)
    response = client.post(f"/renouvellements/{pending.id}", data={"decision": "refuser"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="note-error"' in page and "Indiquez le motif du refus" in page
    db.session.expire_all()
    assert pending.status == "pending" and token.status == "active"


def test_instructor_confirms_a_renewal(app, login_as):
    api = make_listening_api(renewal_policy="instructor")
    instructor = factories.user(roles=("instructor",), api=api)
    factories.enable_totp(instructor)
    token = expiring_token(api, days_left=40)
    client = login_as(token.habilitation.requester)
    response = client.post(f"/jetons/{token.id}/renouvellement", data=wizard_data(token))
    assert response.status_code == 302
    pending = renewal.open_renewal(token)
    client = login_as(instructor)
    assert "Examiner" in client.get("/renouvellements").get_data(as_text=True)
    response = client.post(f"/renouvellements/{pending.id}", data={"decision": "confirmer"})
    assert response.status_code == 302
    db.session.expire_all()
    assert pending.status == "completed" and token.status == "superseded"


def test_dashboard_is_for_security_officers_and_exports_safe_csv(app, login_as):
    api = make_listening_api()
    organisation = factories.organisation(name='=HYPERLINK("http://evil")')
    token = expiring_token(api, days_left=20, organisation=organisation)
    requester = token.habilitation.requester
    assert login_as(requester).get("/securite/tableau-de-bord").status_code == 403
    officer = factories.user(roles=("security_officer",))
    factories.enable_totp(officer)
    client = login_as(officer)
    page = client.get("/securite/tableau-de-bord").get_data(as_text=True)
    assert "Jetons qui expirent dans les 30 jours" in page
    assert token.organisation.siret in page
    response = client.get("/securite/tableau-de-bord/expiring-30.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(
        csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff")), delimiter=";")
    )
    assert rows[0][0] == "jti" and len(rows) == 2
    assert rows[1][3].startswith("'=HYPERLINK")  # never a live formula
    other = client.get(
        "/securite/tableau-de-bord/expiring-30.csv", query_string={"organisation": "nulle part"}
    )
    assert len(other.get_data(as_text=True).strip().splitlines()) == 1
    assert client.get("/securite/tableau-de-bord/inconnue.csv").status_code == 404


def test_csv_safe():
    assert spreadsheet.safe_cell("=1+1") == "'=1+1"
    assert spreadsheet.safe_cell("+33 1") == "'+33 1"
    assert spreadsheet.safe_cell("@SUM") == "'@SUM"
    assert spreadsheet.safe_cell("Commune") == "Commune"
    assert spreadsheet.safe_cell(None) == ""
