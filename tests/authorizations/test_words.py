"""Labels instead of codes (issue 11, point 5): the data a request asks for is shown by the
labels the applicant ticked, on the summary, the instructor's page, the habilitation, the
token, the timeline's differences and the mails."""

from __future__ import annotations

from sqlalchemy import select

from datapass.actor import Actor
from datapass.authorizations import decisions, sections, snapshots
from datapass.extensions import db
from datapass.notify.models import OutboxMail
from tests import factories

QF = "Quotient familial du mois et du mois précédent"
ENFANTS = "Identité des enfants du foyer"
ADRESSE = "Adresse postale de l'allocataire"


def _submitted(api, applicant, instructor):
    request = factories.filled_request(
        api, requester=applicant, scopes=["quotient_familial", "enfants"]
    )
    decisions.submit(request, Actor.for_user(applicant))
    db.session.flush()
    return request


def test_summary_and_instructor_pages_list_scope_labels(
    app, client, sign_in, api, applicant, instructor
):
    request = _submitted(api, applicant, instructor)
    for person in (applicant, instructor):
        sign_in(person)
        page = client.get(f"/demandes/{request.id}").get_data(as_text=True)
        assert f"{QF}, {ENFANTS}" in page
        assert "quotient_familial, enfants" not in page


def test_habilitation_and_token_pages_list_scope_labels(
    app, client, sign_in, api, applicant, instructor
):
    request = _submitted(api, applicant, instructor)
    habilitation = decisions.approve(request, Actor.for_user(instructor))
    db.session.flush()
    sign_in(applicant)
    page = client.get(f"/habilitations/{habilitation.id}").get_data(as_text=True)
    assert f"{QF}, {ENFANTS}" in page and "quotient_familial, enfants" not in page
    token = habilitation.tokens[0] if hasattr(habilitation, "tokens") else None
    if token is None:
        from datapass.tokens.models import AccessToken

        token = db.session.scalar(
            select(AccessToken).where(AccessToken.habilitation_id == habilitation.id)
        )
    page = client.get(f"/jetons/{token.id}").get_data(as_text=True)
    assert QF in page and ENFANTS in page
    assert ">quotient_familial<" not in page


def test_timeline_differences_and_mails_use_labels(app, api, applicant, instructor):
    request = _submitted(api, applicant, instructor)
    decisions.request_changes(request, Actor.for_user(instructor), "Retirez les enfants.")
    sections.save_section(
        request, "donnees", {"scopes": ["quotient_familial", "adresse"]}, Actor.for_user(applicant)
    )
    entry = decisions.submit(request, Actor.for_user(applicant))
    change = next(c for c in entry.diff if c["field"] == "scopes")
    assert change["before"] == f"{QF}, {ENFANTS}"
    assert change["after"] == f"{QF}, {ADRESSE}"
    designated = db.session.scalars(
        select(OutboxMail).where(OutboxMail.template == "request_designated")
    ).first()
    assert designated is not None
    assert f"{QF}, {ENFANTS}" in designated.body_text
    assert "quotient_familial" not in designated.body_text


def test_a_scope_removed_from_the_catalogue_still_shows_its_code(api):
    assert api.labels_of(["quotient_familial", "ancien_code"]) == [QF, "ancien_code"]
    flat = snapshots.flat_fields({"scopes": ["enfants", "ancien_code"]}, api.scope_labels())
    assert flat["scopes"] == f"{ENFANTS}, ancien_code"
