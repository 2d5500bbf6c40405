"""Organisations (SIRET, memberships, switching) and the administration of users and roles."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from datapass.accounts import addresses, organisations, passwords
from datapass.accounts.errors import AccountError
from datapass.accounts.models import Membership, Organisation, RoleGrant, User
from datapass.actor import Actor
from datapass.extensions import db
from datapass.notify.models import OutboxMail
from tests import factories
from tests.accounts.conftest import count, payload, post_login, signed_in, text
from tests.conftest import login
from tests.tokens.conftest import make_api


def _reload(user: User) -> User:
    db.session.expire(user)
    return db.session.get(User, user.id)


@pytest.fixture
def admin_client(client, login_as):
    admin = factories.user("chef@dinum.fr", roles=("admin",), is_demo=True)
    db.session.commit()
    login_as(admin)
    client.admin = admin
    return client


# --- SIRET and organisations ------------------------------------------------------------


def test_siret_validation():
    assert organisations.normalise_siret("215 901 836 00019") == "21590183600019"
    for bad in ("21590183600018", "2159018360001", "2159018360001A", "", "00000000000000x"):
        with pytest.raises(AccountError) as error:
            organisations.normalise_siret(bad)
        assert error.value.message == "Le SIRET doit comporter 14 chiffres et être valide."


def test_invalid_siret_is_explained_and_creates_nothing(admin_client, tags):
    before = count(Organisation)
    response = admin_client.post(
        "/admin/organisations/nouvelle",
        data={"siret": "21590183600018", "name": "Commune de Dunkerque", "address": ""},
    )
    assert response.status_code == 422
    assert "Le SIRET doit comporter 14 chiffres et être valide." in text(response)
    assert count(Organisation) == before
    assert tags() == []


def test_admin_creates_an_organisation(admin_client, tags):
    response = admin_client.post(
        "/admin/organisations/nouvelle",
        data={"siret": "215 901 836 00019", "name": "Commune de Dunkerque", "address": "Place"},
    )
    assert response.status_code == 302
    organisation = db.session.scalar(
        select(Organisation).where(Organisation.siret == "21590183600019")
    )
    assert organisation.name == "Commune de Dunkerque"
    assert tags() == ["accounts:organisation:created"]
    duplicate = admin_client.post(
        "/admin/organisations/nouvelle",
        data={"siret": "21590183600019", "name": "Doublon", "address": ""},
    )
    assert duplicate.status_code == 422
    assert "Une organisation porte déjà ce SIRET." in text(duplicate)
    assert tags() == ["accounts:organisation:created"]


def test_admin_adds_a_member(admin_client, tags):
    organisation = factories.organisation()
    person = factories.user("agent@mairie.fr")
    db.session.commit()
    response = admin_client.post(
        f"/admin/organisations/{organisation.id}/membres",
        data={"email": "Agent@Mairie.fr", "verified": "y"},
    )
    assert response.status_code == 302
    membership = db.session.scalar(select(Membership).where(Membership.user_id == person.id))
    assert membership.verified and membership.organisation_id == organisation.id
    assert tags() == ["accounts:membership:added"]
    again = admin_client.post(
        f"/admin/organisations/{organisation.id}/membres", data={"email": "agent@mairie.fr"}
    )
    assert again.status_code == 422
    assert "déjà membre" in text(again)
    unknown = admin_client.post(
        f"/admin/organisations/{organisation.id}/membres", data={"email": "nobody@mairie.fr"}
    )
    assert "invitez d'abord la personne" in text(unknown)
    assert tags() == ["accounts:membership:added"]


def test_switch_organisation_among_own_ones(client, login_as, tags, audit_events):
    first = factories.organisation("Commune A")
    second = factories.organisation("Commune B")
    foreign = factories.organisation("Commune C")
    user = factories.user(organisation=first)
    organisations.add_membership(second, user, True, Actor.system("test"))
    db.session.commit()
    login_as(user)
    page = client.get("/organisation").get_data(as_text=True)
    assert "Commune A" in page and "Commune B" in page and "Commune C" not in page
    response = client.post("/organisation", data={"organisation_id": str(second.id)})
    assert response.status_code == 302
    assert _reload(user).current_organisation_id == second.id
    assert organisations.current_organisation(user) == second
    event = audit_events()[-1]
    assert event.tag == "accounts:organisation:switched"
    assert payload(event) == {"from": first.id, "to": second.id}
    # another organisation's id: refused, nothing changes
    refused = client.post("/organisation", data={"organisation_id": str(foreign.id)})
    assert refused.status_code == 422
    assert "Choisissez l'une de vos organisations." in text(refused)
    assert _reload(user).current_organisation_id == second.id
    assert client.post("/organisation", data={"organisation_id": "abc"}).status_code == 422
    assert [t for t in tags() if t.endswith("switched")] == ["accounts:organisation:switched"]


def test_current_organisation_falls_back_to_a_membership(app):
    first = factories.organisation()
    user = factories.user(organisation=first)
    other = factories.organisation()
    user.current_organisation_id = other.id  # no longer a member there
    assert organisations.current_organisation(user) == first
    assert organisations.current_organisation(factories.user()) is None


# --- administration ---------------------------------------------------------------------


def test_administration_is_for_admins(client, login_as):
    login_as(factories.user(roles=("security_officer",), is_demo=True))
    assert client.get("/admin/utilisateurs").status_code == 403
    assert client.post("/admin/utilisateurs/inviter", data={}).status_code == 403


def test_users_list_search_and_pagination(admin_client):
    for i in range(30):
        factories.user(f"agent{i:02d}@commune.fr", full_name=f"Agent Numéro {i}")
    factories.user("claire.dupont@idfm.fr", full_name="Claire Dupont")
    first = admin_client.get("/admin/utilisateurs").get_data(as_text=True)
    assert "32 comptes" in first
    assert "Page suivante" in first and "agent00@commune.fr" in first
    second = admin_client.get("/admin/utilisateurs?page=2").get_data(as_text=True)
    assert "claire.dupont@idfm.fr" in second and "agent00@commune.fr" not in second
    found = admin_client.get("/admin/utilisateurs?q=DUPONT").get_data(as_text=True)
    assert "1 compte " in found and "claire.dupont@idfm.fr" in found
    assert "agent01@commune.fr" not in found


def test_invite_creates_the_account_and_mails_a_single_use_link(admin_client, tags, client):
    organisation = factories.organisation("Commune de Test")
    db.session.commit()
    response = admin_client.post(
        "/admin/utilisateurs/inviter",
        data={
            "email": "Nouvelle.Personne@Mairie.fr",
            "full_name": "Nouvelle Personne",
            "organisation_id": str(organisation.id),
            "verified": "y",
            "roles": ["security_officer"],
        },
    )
    assert response.status_code == 302
    user = addresses.find_user_by_email("nouvelle.personne@mairie.fr")
    assert user.password_hash is None
    assert user.has_role("security_officer")
    assert [m.organisation_id for m in user.memberships] == [organisation.id]
    assert tags() == ["accounts:user:invited"]
    mail = db.session.scalar(select(OutboxMail).where(OutboxMail.recipient == user.email))
    assert "valable 72 heures" in mail.body_text
    path = re.search(r"http://datapass\.test(/invitation/\S+)", mail.body_text)[1]
    # the invited person sets their password (in another browser)
    client.post("/deconnexion")
    password = "Mon-mot-de-passe-2026"
    response = client.post(path, data={"password": password, "confirm": password})
    assert response.headers["Location"] == "/connexion"
    assert passwords.check_password(_reload(user), password)
    assert tags()[-1] == "accounts:user:invitation_accepted"
    assert client.get(path).status_code == 400  # single use
    assert post_login(client, user.email, password).status_code == 302


def test_expired_invitation(admin_client, frozen_clock, client):
    admin_client.post(
        "/admin/utilisateurs/inviter",
        data={"email": "late@mairie.fr", "full_name": "En Retard", "organisation_id": ""},
    )
    mail = db.session.scalar(select(OutboxMail).where(OutboxMail.recipient == "late@mairie.fr"))
    path = re.search(r"http://datapass\.test(/invitation/\S+)", mail.body_text)[1]
    frozen_clock.advance(timedelta(hours=72, minutes=1))
    response = client.get(path)
    assert response.status_code == 400
    assert "Ce lien d'invitation a expiré" in text(response)


def test_invite_refuses_bad_input(admin_client, tags):
    factories.user("exists@mairie.fr")
    db.session.commit()
    bad_email = admin_client.post(
        "/admin/utilisateurs/inviter", data={"email": "pas-une-adresse", "full_name": "X"}
    )
    assert bad_email.status_code == 422
    assert "Saisissez une adresse électronique valide" in text(bad_email)
    duplicate = admin_client.post(
        "/admin/utilisateurs/inviter", data={"email": "EXISTS@mairie.fr", "full_name": "X"}
    )
    assert duplicate.status_code == 422
    assert "Un compte existe déjà pour cette adresse électronique." in text(duplicate)
    instructor_without_api = admin_client.post(
        "/admin/utilisateurs/inviter",
        data={"email": "i@dinum.fr", "full_name": "I", "roles": ["instructor"]},
    )
    assert instructor_without_api.status_code == 422
    assert "Un instructeur instruit une API" in text(instructor_without_api)
    assert tags() == []
    assert count(OutboxMail) == 0


def test_grant_and_withdraw_roles(admin_client, audit_events):
    person = factories.user("agent@dinum.fr")
    api = make_api()
    db.session.commit()
    response = admin_client.post(
        f"/admin/utilisateurs/{person.id}/roles", data={"role": "instructor", "api_id": str(api.id)}
    )
    assert response.status_code == 302
    assert _reload(person).instructed_api_ids() == {api.id}
    duplicate = admin_client.post(
        f"/admin/utilisateurs/{person.id}/roles", data={"role": "instructor", "api_id": str(api.id)}
    )
    assert duplicate.status_code == 422
    assert "Cette personne a déjà ce rôle." in text(duplicate)
    no_api = admin_client.post(
        f"/admin/utilisateurs/{person.id}/roles", data={"role": "instructor"}
    )
    assert no_api.status_code == 422
    grant = db.session.scalar(select(RoleGrant).where(RoleGrant.user_id == person.id))
    admin_client.post(f"/admin/utilisateurs/{person.id}/roles/{grant.id}/retirer")
    assert not _reload(person).has_role("instructor")
    events = audit_events()
    assert [e.tag for e in events] == ["accounts:role:granted", "accounts:role:withdrawn"]
    assert events[0].api_id == api.id
    assert payload(events[0]) == {"role": "instructor", "api_id": api.id}


def test_withdrawing_a_grant_of_another_user_is_not_found(admin_client):
    first = factories.user(roles=("security_officer",))
    second = factories.user()
    grant = first.role_grants[0]
    response = admin_client.post(f"/admin/utilisateurs/{second.id}/roles/{grant.id}/retirer")
    assert response.status_code == 404
    assert _reload(first).has_role("security_officer")


def test_an_admin_cannot_demote_or_deactivate_themselves(admin_client, tags):
    admin = admin_client.admin
    grant = admin.role_grants[0]
    response = admin_client.post(
        f"/admin/utilisateurs/{admin.id}/roles/{grant.id}/retirer", follow_redirects=True
    )
    assert "Vous ne pouvez pas retirer votre propre rôle d'administrateur" in text(response)
    assert _reload(admin).has_role("admin")
    response = admin_client.post(
        f"/admin/utilisateurs/{admin.id}/desactiver", follow_redirects=True
    )
    assert "Vous ne pouvez pas désactiver votre propre compte." in text(response)
    assert _reload(admin).is_active_account
    assert tags() == []


def test_deactivate_and_reactivate(admin_client, app, tags):
    person = factories.user("agent@mairie.fr")
    db.session.commit()
    their_browser = app.test_client()
    login(their_browser, person)
    assert signed_in(their_browser)
    admin_client.post(f"/admin/utilisateurs/{person.id}/desactiver")
    person = _reload(person)
    assert not person.is_active_account and person.session_epoch == 1
    assert not signed_in(their_browser)
    assert post_login(their_browser, "agent@mairie.fr", factories.PASSWORD).status_code == 401
    admin_client.post(f"/admin/utilisateurs/{person.id}/reactiver")
    assert _reload(person).is_active_account
    assert post_login(their_browser, "agent@mairie.fr", factories.PASSWORD).status_code == 302
    assert [t for t in tags() if not t.startswith("accounts:user:login")] == [
        "accounts:user:deactivated",
        "accounts:user:reactivated",
    ]


def test_sensitive_admin_acts_need_a_recent_authentication(client, login_as, frozen_clock, tags):
    admin = factories.user(roles=("admin",), is_demo=True)
    person = factories.user()
    login_as(admin, reauth=False)
    frozen_clock.advance(timedelta(minutes=11))
    assert client.get("/admin/utilisateurs").status_code == 200  # reading is not sensitive
    response = client.post(
        f"/admin/utilisateurs/{person.id}/desactiver",
        headers={"Referer": f"http://localhost/admin/utilisateurs/{person.id}"},
    )
    assert response.headers["Location"] == (
        f"/reauthentification?next=http://localhost/admin/utilisateurs/{person.id}"
    )
    assert _reload(person).is_active_account
    assert tags() == []
    follow = client.post(
        "/reauthentification",
        data={
            "password": factories.PASSWORD,
            "next": f"http://localhost/admin/utilisateurs/{person.id}",
        },
    )
    assert follow.headers["Location"] == f"/admin/utilisateurs/{person.id}"
    client.post(f"/admin/utilisateurs/{person.id}/desactiver")
    assert not _reload(person).is_active_account


def test_admin_actions_need_the_csrf_token(csrf_app, login_as):
    admin = factories.user(roles=("admin",), is_demo=True)
    person = factories.user()
    client = login_as(admin)
    assert client.post(f"/admin/utilisateurs/{person.id}/desactiver").status_code == 400
    assert _reload(person).is_active_account


def test_resend_invitation(admin_client, tags):
    person = factories.user("invited@mairie.fr", password=None)
    db.session.commit()
    admin_client.post(f"/admin/utilisateurs/{person.id}/renvoyer-invitation")
    assert tags() == ["accounts:user:invitation_resent"]
    assert count(OutboxMail) == 1


def test_admin_pages_render(admin_client):
    organisation = factories.organisation()
    person = factories.user(organisation=organisation, roles=("security_officer",))
    for path in (
        "/admin/utilisateurs",
        f"/admin/utilisateurs/{person.id}",
        "/admin/utilisateurs/inviter",
        "/admin/organisations",
        f"/admin/organisations/{organisation.id}",
        "/admin/organisations/nouvelle",
    ):
        response = admin_client.get(path)
        assert response.status_code == 200, path
        assert "style=" not in response.get_data(as_text=True)
    assert admin_client.get("/admin/utilisateurs/999999").status_code == 404
