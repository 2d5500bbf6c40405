"""The token pages: the organisation's list and token page, its acts, the staff's acts, and
the single-use link for the technical contact."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from datapass import clock
from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.extensions import db
from datapass.notify.models import OutboxMail
from datapass.tokens import issuance
from datapass.tokens.models import AccessToken
from tests import factories


@pytest.fixture
def token(world):
    token, raw = issuance.issue_for_habilitation(world.habilitation, Actor.system("test"))
    token.raw = raw
    return token


def test_member_sees_list_and_page(login_as, world, token):
    client = login_as(world.requester)
    page = client.get("/jetons/").get_data(as_text=True)
    assert world.api.name in page and "Actif" in page
    page = client.get(f"/jetons/{token.id}").get_data(as_text=True)
    assert token.jti in page
    assert "jours restants" in page
    assert "28/05/2028" in page  # expiry, Paris time
    assert "Jamais utilisé" in page
    assert world.api.fallback_procedure in page
    assert token.raw not in page


def test_other_organisation_gets_404(login_as, world, token):
    stranger = factories.user(organisation=factories.organisation())
    client = login_as(stranger)
    assert client.get(f"/jetons/{token.id}").status_code == 404
    assert (
        client.post(f"/jetons/{token.id}/revocation", data={"revoke-reason": "xxxxx"}).status_code
        == 404
    )
    assert token.jti not in client.get("/jetons/").get_data(as_text=True)


def test_reveal_once(login_as, world, token):
    client = login_as(world.requester)
    response = client.post(f"/jetons/{token.id}/afficher")
    assert response.status_code == 200
    assert token.raw in response.get_data(as_text=True)
    assert token.sealed_value is None
    again = client.post(f"/jetons/{token.id}/afficher")
    assert again.status_code == 403
    assert "tokens:token:revealed" in {e.tag for e in db.session.query(AuditEvent)}


def test_send_to_technical_contact_single_use_link(login_as, world, token, client):
    login_as(world.requester)
    response = client.post(f"/jetons/{token.id}/envoi")
    assert response.status_code == 302
    mail = db.session.query(OutboxMail).filter_by(template="token_link").one()
    assert mail.recipient == world.habilitation.technical_contact_email
    assert token.raw not in mail.body_text
    link = re.search(r"http://datapass.test(/jetons/lien/\S+)", mail.body_text).group(1)
    anonymous = client.application.test_client()
    # GET (a mail scanner prefetching) does not consume the link
    assert anonymous.get(link).status_code == 200
    assert anonymous.get(link).status_code == 200
    shown = anonymous.post(link)
    assert shown.status_code == 200 and token.raw in shown.get_data(as_text=True)
    assert anonymous.post(link).status_code == 404
    assert anonymous.get(link).status_code == 404
    tags = {e.tag for e in db.session.query(AuditEvent)}
    assert {"tokens:token:sent", "tokens:token:revealed"} <= tags


def test_link_expires_after_four_hours(login_as, world, token, client):
    login_as(world.requester)
    client.post(f"/jetons/{token.id}/envoi")
    mail = db.session.query(OutboxMail).filter_by(template="token_link").one()
    link = re.search(r"http://datapass.test(/jetons/lien/\S+)", mail.body_text).group(1)
    clock.advance(timedelta(hours=4))
    assert client.application.test_client().post(link).status_code == 404
    assert token.sealed_value is not None


def test_rotate_with_grace(login_as, world, token):
    client = login_as(world.requester)
    response = client.post(f"/jetons/{token.id}/rotation", data={"rotate-grace_days": "31"})
    assert response.status_code == 422
    assert "entre 0 et 30" in response.get_data(as_text=True) or "de 0 à 30" in response.get_data(
        as_text=True
    )
    assert token.status == "active"
    response = client.post(f"/jetons/{token.id}/rotation", data={"rotate-grace_days": "7"})
    assert response.status_code == 302
    new = db.session.query(AccessToken).filter_by(predecessor_id=token.id).one()
    assert response.headers["Location"].endswith(f"/jetons/{new.id}")
    assert token.status == "superseded"
    assert token.grace_ends_at == clock.now() + timedelta(days=7)
    page = client.get(f"/jetons/{token.id}").get_data(as_text=True)
    assert "délai de grâce" in page


def test_revoke_needs_a_reason(login_as, world, token):
    client = login_as(world.requester)
    response = client.post(f"/jetons/{token.id}/revocation", data={"revoke-reason": ""})
    assert response.status_code == 422
    assert "motif" in response.get_data(as_text=True).lower()
    assert token.status == "active"
    response = client.post(
        f"/jetons/{token.id}/revocation", data={"revoke-reason": "Logiciel abandonné"}
    )
    assert response.status_code == 302
    assert token.status == "revoked" and token.revoked_reason == "Logiciel abandonné"
    mails = db.session.query(OutboxMail).filter_by(template="token_revoked").all()
    assert world.requester.email in {m.recipient for m in mails}


def test_member_cannot_suspend(login_as, world, token):
    client = login_as(world.requester)
    assert (
        client.post(f"/jetons/{token.id}/suspension", data={"suspend-reason": "xxxxxx"}).status_code
        == 403
    )


def test_instructor_suspends_and_reactivates(login_as, world, token):
    instructor = factories.user(roles=("instructor",), api=world.api, mfa_enabled_at=clock.now())
    client = login_as(instructor)
    assert token.jti in client.get("/jetons/supervision").get_data(as_text=True)
    response = client.post(
        f"/jetons/{token.id}/suspension", data={"suspend-reason": "Enquête en cours"}
    )
    assert response.status_code == 302 and token.status == "suspended"
    response = client.post(
        f"/jetons/{token.id}/reactivation", data={"reactivate-reason": "Enquête close"}
    )
    assert response.status_code == 302 and token.status == "active"


def test_instructor_of_another_api_gets_404(login_as, token):
    other = factories.user(roles=("instructor",), api=_other_api(), mfa_enabled_at=clock.now())
    client = login_as(other)
    assert client.get(f"/jetons/{token.id}").status_code == 404
    assert (
        client.post(
            f"/jetons/{token.id}/suspension", data={"suspend-reason": "Enquête en cours"}
        ).status_code
        == 404
    )
    assert token.status == "active"


def _other_api():
    from tests.tokens.conftest import make_api

    return make_api()


def test_sensitive_acts_need_recent_authentication(login_as, world, token):
    client = login_as(world.requester, reauth=False)
    clock.advance(timedelta(hours=1))
    response = client.post(f"/jetons/{token.id}/afficher")
    assert response.status_code == 302 and "reauthentification" in response.headers["Location"]
    assert token.sealed_value is not None


def test_maintenance_notice_shown_to_holders(login_as, world, token):
    world.api.status = "maintenance"
    world.api.maintenance_message = "Migration des serveurs"
    db.session.flush()
    page = login_as(world.requester).get(f"/jetons/{token.id}").get_data(as_text=True)
    assert "Procédure de repli" in page


def test_habilitation_and_tokens_link_each_other(login_as, world, token):
    from tests.tokens.conftest import make_habilitation

    second, _raw = issuance.issue_for_habilitation(world.habilitation, Actor.system("test"))
    other = make_habilitation(world.api, world.organisation, world.requester)
    issuance.issue_for_habilitation(other, Actor.system("test"))
    client = login_as(world.requester)
    listing = client.get("/jetons/").get_data(as_text=True)
    # One section per habilitation, newest habilitation first, linking to it.
    sections = re.findall(
        r'<section class="fr-mb-5w" aria-labelledby="habilitation-(\d+)"', listing
    )
    assert sections == [str(other.id), str(world.habilitation.id)]
    assert f'href="/habilitations/{world.habilitation.id}"' in listing
    assert world.habilitation.title in listing and world.api.name in listing
    page = client.get(f"/habilitations/{world.habilitation.id}").get_data(as_text=True)
    listed = re.findall(r'<li><a href="/jetons/(\d+)">', page)
    assert listed == [str(second.id), str(token.id)]
    page = client.get(f"/jetons/{token.id}").get_data(as_text=True)
    assert f'href="/habilitations/{world.habilitation.id}" id="lien-habilitation"' in page
    # Someone who sees the token but not the habilitation gets its reference, no dead link.
    officer = factories.user(roles=("security_officer",), mfa_enabled_at=clock.now())
    client = login_as(officer)
    page = client.get(f"/jetons/{token.id}").get_data(as_text=True)
    linked = 'id="lien-habilitation"' in page
    assert world.habilitation.reference in page
    assert linked == (client.get(f"/habilitations/{world.habilitation.id}").status_code == 200)
