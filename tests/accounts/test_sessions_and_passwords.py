"""Passwords (hashing, change, reset by e-mail) and session invalidation."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from datapass.accounts import directory, links, passwords
from datapass.accounts.models import User
from datapass.actor import Actor
from datapass.extensions import db
from datapass.notify.models import OutboxMail
from tests import factories
from tests.accounts.conftest import count, post_login, signed_in, text
from tests.conftest import login

NEW_PASSWORD = "Une-nouvelle-phrase-2026"


def _reload(user: User) -> User:
    db.session.expire(user)
    return db.session.get(User, user.id)


# --- hashing ----------------------------------------------------------------------------


def test_passwords_are_argon2id_and_checked(app):
    user = factories.user(password="Correct-horse-battery-9")
    assert user.password_hash.startswith("$argon2id$")
    assert "m=1024,t=1" in user.password_hash  # the configured cost
    assert passwords.check_password(user, "Correct-horse-battery-9")
    assert not passwords.check_password(user, "correct-horse-battery-9")
    assert not passwords.check_password(user, "")


def test_hash_is_upgraded_when_the_cost_changes(app):
    user = factories.user(password="Correct-horse-battery-9")
    app.config["ARGON2_TIME_COST"] = 2
    try:
        assert passwords.check_password(user, "Correct-horse-battery-9")
        assert "t=2" in user.password_hash
    finally:
        app.config["ARGON2_TIME_COST"] = 1


def test_password_rules():
    assert "au moins 12 caractères" in passwords.password_problem("court")
    assert passwords.password_problem("            ") is not None
    assert passwords.password_problem("douze-signes") is None


# --- session invalidation ---------------------------------------------------------------


def test_deactivated_users_live_session_is_signed_out_at_next_request(app, client, login_as):
    admin = factories.user(roles=("admin",))
    user = factories.user()
    login_as(user)
    assert signed_in(client)
    directory.deactivate_user(user, Actor.for_user(admin))
    db.session.commit()
    response = client.get("/profil")
    assert response.status_code == 302
    assert "/connexion" in response.headers["Location"]


def test_password_change_signs_out_the_other_sessions_only(app, login_as):
    user = factories.user()
    mine = app.test_client()
    other = app.test_client()
    login(mine, user)
    login(other, user)
    response = mine.post(
        "/profil/mot-de-passe",
        data={
            "current_password": factories.PASSWORD,
            "password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
        },
    )
    assert response.status_code == 302
    assert signed_in(mine)
    assert not signed_in(other)
    user = _reload(user)
    assert passwords.check_password(user, NEW_PASSWORD)
    assert user.session_epoch == 1


def test_sessions_have_an_absolute_lifetime(client, login_as, frozen_clock):
    login_as(factories.user())
    frozen_clock.advance(timedelta(hours=11, minutes=59))
    assert signed_in(client)
    frozen_clock.advance(timedelta(minutes=2))
    assert not signed_in(client)


def test_a_session_with_a_forged_epoch_is_refused(client):
    user = factories.user()
    with client.session_transaction() as sess:
        sess["_user_id"] = f"{user.id}:7"
        sess["auth_at"] = "2026-11-28T09:00:00+00:00"
    assert not signed_in(client)


# --- change from the profile ------------------------------------------------------------


def test_change_password_needs_the_current_one(client, login_as, tags):
    user = factories.user()
    db.session.commit()  # the view rolls back its own work on refusal
    login_as(user)
    old_hash = user.password_hash
    response = client.post(
        "/profil/mot-de-passe",
        data={
            "current_password": "wrong-password-1",
            "password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
        },
    )
    assert response.status_code == 422
    assert "Le mot de passe actuel est incorrect." in response.get_data(as_text=True)
    assert _reload(user).password_hash == old_hash
    assert tags() == []


def test_change_password_checks_length_and_confirmation(client, login_as):
    user = factories.user()
    login_as(user)
    old_hash = user.password_hash
    response = client.post(
        "/profil/mot-de-passe",
        data={"current_password": factories.PASSWORD, "password": "court", "confirm": "autre"},
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "au moins 12 caractères" in page
    assert "Les deux mots de passe ne sont pas identiques." in page
    assert _reload(user).password_hash == old_hash


def test_change_password_is_audited_and_notified(client, login_as, tags):
    user = factories.user()
    login_as(user)
    client.post(
        "/profil/mot-de-passe",
        data={
            "current_password": factories.PASSWORD,
            "password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
        },
    )
    assert tags() == ["accounts:password:changed"]
    mail = db.session.scalar(select(OutboxMail).where(OutboxMail.recipient == user.email))
    assert mail.template == "account_password_changed"
    assert NEW_PASSWORD not in mail.body_text


# --- reset by e-mail --------------------------------------------------------------------


def _reset_link(email: str) -> str:
    mail = db.session.scalars(
        select(OutboxMail)
        .where(OutboxMail.recipient == email, OutboxMail.template == "account_password_reset")
        .order_by(OutboxMail.id.desc())
    ).first()
    assert mail is not None, "no reset mail"
    return re.search(r"http://datapass\.test(/mot-de-passe/reinitialiser/\S+)", mail.body_text)[1]


def _forgot(client, email: str):
    return client.post("/mot-de-passe/oublie", data={"email": email})


def test_forgot_password_always_answers_the_same(client, tags):
    factories.user("agent@mairie.fr")
    known = _forgot(client, "agent@mairie.fr").get_data(as_text=True)
    unknown = _forgot(client, "nobody@mairie.fr").get_data(as_text=True)
    assert "Si un compte actif correspond à cette adresse" in known

    def body(page):
        return page.split('id="contenu"')[1]

    assert body(known) == body(unknown)
    mails = db.session.scalars(select(OutboxMail)).all()
    assert [m.recipient for m in mails] == ["agent@mairie.fr"]
    assert "valable 60 minutes" in mails[0].body_text
    assert tags() == ["accounts:password:reset_requested"] * 2


def test_forgot_password_with_an_invalid_email_is_explained(client):
    response = _forgot(client, "pas une adresse")
    assert response.status_code == 422
    assert "Saisissez une adresse électronique valide" in response.get_data(as_text=True)
    assert count(OutboxMail) == 0


def test_reset_mails_are_capped(client):
    factories.user("agent@mairie.fr")
    for _ in range(5):
        _forgot(client, "agent@mairie.fr")
    assert count(OutboxMail) == links.RESET_MAILS_PER_WINDOW


def test_reset_link_sets_the_password_once(client, login_as, tags, app):
    user = factories.user("agent@mairie.fr")
    other_session = app.test_client()
    login(other_session, user)
    _forgot(client, "agent@mairie.fr")
    path = _reset_link("agent@mairie.fr")
    assert client.get(path).status_code == 200
    response = client.post(path, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 302
    assert response.headers["Location"] == "/connexion"
    user = _reload(user)
    assert passwords.check_password(user, NEW_PASSWORD)
    assert not signed_in(other_session)  # every session ends
    assert tags() == ["accounts:password:reset_requested", "accounts:password:reset"]
    # the same link a second time: refused, nothing changes
    hash_after = user.password_hash
    reused = client.post(
        path, data={"password": "Encore-une-autre-2026", "confirm": "Encore-une-autre-2026"}
    )
    assert reused.status_code == 400
    assert "déjà été utilisé" in reused.get_data(as_text=True)
    assert _reload(user).password_hash == hash_after
    assert len(tags()) == 2
    # the account's block is lifted (the address's own block stays)
    assert post_login(client, "agent@mairie.fr", NEW_PASSWORD, ip="192.0.2.9").status_code == 302


def test_expired_reset_link_is_refused(client, frozen_clock):
    user = factories.user("agent@mairie.fr")
    old_hash = user.password_hash
    _forgot(client, "agent@mairie.fr")
    path = _reset_link("agent@mairie.fr")
    frozen_clock.advance(timedelta(minutes=59))
    assert client.get(path).status_code == 200
    frozen_clock.advance(timedelta(minutes=2))
    response = client.post(path, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Ce lien a expiré" in page
    assert "Rien n'a été modifié" in page
    assert _reload(user).password_hash == old_hash


def test_tampered_reset_link_is_refused(client):
    user = factories.user("agent@mairie.fr")
    old_hash = user.password_hash
    _forgot(client, "agent@mairie.fr")
    path = _reset_link("agent@mairie.fr")
    tampered = path[:-3] + ("aaa" if not path.endswith("aaa") else "bbb")
    response = client.post(tampered, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 400
    assert "n'est pas valide" in text(response)
    assert _reload(user).password_hash == old_hash


def test_an_invitation_link_is_not_a_reset_link(client):
    factories.user("agent@mairie.fr")
    _forgot(client, "agent@mairie.fr")
    token = _reset_link("agent@mairie.fr").rsplit("/", 1)[1]
    assert client.get(f"/invitation/{token}").status_code == 400


def test_a_weak_password_on_the_reset_page_keeps_the_link_alive(client):
    user = factories.user("agent@mairie.fr")
    old_hash = user.password_hash
    _forgot(client, "agent@mairie.fr")
    path = _reset_link("agent@mairie.fr")
    response = client.post(path, data={"password": "court", "confirm": "court"})
    assert response.status_code == 422
    assert "au moins 12 caractères" in response.get_data(as_text=True)
    assert _reload(user).password_hash == old_hash
    assert (
        client.post(path, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}).status_code
        == 302
    )


def test_reset_clears_the_sign_in_block(client):
    factories.user("agent@mairie.fr")
    for _ in range(5):
        post_login(client, "agent@mairie.fr", "wrong-password-123")
    assert post_login(client, "agent@mairie.fr", factories.PASSWORD).status_code == 429
    _forgot(client, "agent@mairie.fr")
    client.post(
        _reset_link("agent@mairie.fr"), data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    )
    # the account's block is lifted (the address's own block stays)
    assert post_login(client, "agent@mairie.fr", NEW_PASSWORD, ip="192.0.2.9").status_code == 302
