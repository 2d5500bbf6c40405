"""Another organisation's request is invisible and unreachable by URL: every route of the
blueprint that takes an id answers 404, and nothing changes."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.authorizations import templates
from datapass.authorizations.models import AuthorizationRequest
from datapass.extensions import db
from tests import factories
from tests.authorizations.conftest import commit


@pytest.fixture
def target(app, apis, instructor, org, applicant):
    """A validated request of ``org`` (with documents, a habilitation and a message
    template of its API)."""
    request = factories.request_in(
        "validated",
        apis["quotient-familial"],
        instructor=instructor,
        organisation=org,
        requester=applicant,
    )
    template = templates.save_template(
        instructor, Actor.for_user(instructor), request.api_id, "Pièce manquante", "Merci de…"
    )
    commit()
    return {
        "request_id": request.id,
        "section": "projet",
        "event": "reopen",
        "document_id": request.homologation_document_id,
        "habilitation_id": request.active_habilitation.id,
        "template_id": template.id,
    }


def _id_rules(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("authorizations.") and rule.arguments:
            for method in sorted(rule.methods & {"GET", "POST"}):
                yield rule, method


def _outsiders(apis):
    other_org = factories.organisation()
    return {
        "membre d'une autre organisation": factories.user(organisation=other_org),
        "instructeur d'une autre API": factories.staff("instructor", api=apis["api-entreprise"]),
    }


def test_every_route_with_an_id_answers_404(app, client, sign_in, apis, target):
    outsiders = _outsiders(apis)
    commit()
    rules = list(_id_rules(app))
    assert len(rules) >= 10  # the walk really covers the blueprint
    audits = db.session.scalar(select(func.count()).select_from(AuditEvent))
    for label, person in outsiders.items():
        sign_in(person)
        for rule, method in rules:
            url = rule.build({k: target[k] for k in rule.arguments}, append_unknown=False)[1]
            instructor_only = rule.endpoint.endswith("_template")
            if instructor_only and "instructeur" not in label:
                continue  # an instructor-only page: a non-instructor gets 403 before any id
            response = client.open(url, method=method, data={"text": "x", "body": "x"})
            assert response.status_code == 404, (label, method, url, response.status_code)
    db.session.expire_all()
    request = db.session.get(AuthorizationRequest, target["request_id"])
    assert request.state == "validated"
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == audits


def test_unverified_member_sees_only_their_own(app, client, sign_in, apis, org, target):
    colleague = factories.user(organisation=org, verified=False)
    commit()
    sign_in(colleague)
    assert client.get(f"/demandes/{target['request_id']}").status_code == 404
    assert client.get(f"/habilitations/{target['habilitation_id']}").status_code == 404
    page = client.get("/demandes").get_data(as_text=True)
    assert "DP-" not in page and "HAB-" not in page


def test_lists_do_not_show_other_organisations(app, client, sign_in, apis, org, target):
    outsiders = _outsiders(apis)
    commit()
    reference = f"DP-{target['request_id']:06d}"
    sign_in(outsiders["membre d'une autre organisation"])
    assert reference not in client.get("/demandes").get_data(as_text=True)
    sign_in(outsiders["instructeur d'une autre API"])
    assert reference not in client.get("/instruction?etat=").get_data(as_text=True)
    assert reference not in client.get("/instruction/export.csv?etat=").get_data(as_text=True)
    # …while the organisation's verified members and the API's instructors see it.
    member = factories.user(organisation=org)
    commit()
    sign_in(member)
    assert reference in client.get("/demandes").get_data(as_text=True)
