"""Sign-in: the form, the same answer for unknown addresses, the rate limit, safe redirects,
sign-out, and MFA enrolment for staff."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from datapass.accounts import sessions, throttle
from datapass.accounts.models import LoginFailure, User
from datapass.extensions import db
from tests import factories
from tests.accounts.conftest import count, payload, post_login, signed_in

WRONG = "Adresse électronique ou mot de passe incorrect."


def test_sign_in_opens_a_session_and_is_audited(client, frozen_clock, audit_events):
    user = factories.user("agent@mairie.fr")
    response = post_login(client, "Agent@Mairie.FR", factories.PASSWORD)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    with client.session_transaction() as sess:
        assert sess["auth_at"] == frozen_clock.now().isoformat()
        assert sess["_user_id"] == user.get_id()
        assert sess.permanent
    assert signed_in(client)
    assert db.session.get(User, user.id).last_login_at == frozen_clock.now()
    events = audit_events()
    assert [e.tag for e in events] == ["accounts:user:login"]
    assert events[0].actor_id == str(user.id)
    assert factories.PASSWORD not in events[0].payload


def test_wrong_password_and_unknown_email_get_the_same_answer(client, audit_events):
    factories.user("agent@mairie.fr")
    wrong = post_login(client, "agent@mairie.fr", "not-the-password-at-all")
    unknown = post_login(client, "nobody@mairie.fr", "not-the-password-at-all")
    assert wrong.status_code == unknown.status_code == 401
    for response in (wrong, unknown):
        page = response.get_data(as_text=True)
        assert WRONG in page
        assert "désactivé" not in page
    assert not signed_in(client)
    assert count(LoginFailure) == 2
    events = audit_events()
    assert [e.tag for e in events] == ["accounts:user:login_failed"] * 2
    for event in events:
        assert "not-the-password-at-all" not in event.payload
        assert "agent@mairie.fr" not in event.payload and "nobody@mairie.fr" not in event.payload
        assert payload(event)["email"].startswith("hmac-sha256:")
    assert [payload(e)["reason"] for e in events] == ["wrong_password", "unknown_email"]


def test_invalid_email_is_explained_beside_the_field_and_changes_nothing(client, tags):
    response = post_login(client, "pas-une-adresse", "whatever-password")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Saisissez une adresse électronique valide" in page
    assert 'aria-invalid="true"' in page
    assert count(LoginFailure) == 0
    assert tags() == []


def test_missing_fields_are_explained(client):
    response = client.post("/connexion", data={})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Saisissez votre adresse électronique." in page
    assert "Saisissez votre mot de passe." in page


def test_missing_csrf_token_is_refused(csrf_app, tags):
    factories.user("agent@mairie.fr")
    client = csrf_app.test_client()
    response = post_login(client, "agent@mairie.fr", factories.PASSWORD)
    assert response.status_code == 400
    assert not signed_in(client)
    assert tags() == []


def test_the_form_works_with_its_csrf_token(csrf_app):
    factories.user("agent@mairie.fr")
    client = csrf_app.test_client()
    page = client.get("/connexion").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    response = post_login(client, "agent@mairie.fr", factories.PASSWORD, csrf_token=token)
    assert response.status_code == 302
    assert signed_in(client)


def test_rate_limit_per_account(client, frozen_clock, tags):
    factories.user("agent@mairie.fr")
    for i in range(5):
        response = post_login(client, "agent@mairie.fr", "wrong-password-123", ip=f"198.51.100.{i}")
        assert response.status_code == 401
    # the right password, from yet another address: still blocked
    blocked = post_login(client, "agent@mairie.fr", factories.PASSWORD, ip="192.0.2.77")
    assert blocked.status_code == 429
    page = blocked.get_data(as_text=True)
    assert "Trop de tentatives" in page
    assert "réessayez dans 15 minutes" in page
    assert "(à partir de 10:15)" in page  # 09:00 UTC + 15 min, in Paris
    assert not signed_in(client)
    assert tags()[-1] == "accounts:user:login_throttled"
    assert count(LoginFailure) == 5  # a blocked attempt does not extend the block
    frozen_clock.advance(timedelta(minutes=15, seconds=1))
    assert post_login(client, "agent@mairie.fr", factories.PASSWORD).status_code == 302
    assert signed_in(client)


def test_rate_limit_per_address(client, frozen_clock):
    factories.user("victim@mairie.fr")
    for i in range(5):
        post_login(client, f"guess{i}@mairie.fr", "wrong-password-123", ip="198.51.100.9")
    blocked = post_login(client, "victim@mairie.fr", factories.PASSWORD, ip="198.51.100.9")
    assert blocked.status_code == 429
    assert "Trop de tentatives" in blocked.get_data(as_text=True)
    assert not signed_in(client)
    # the same account from another address is not blocked
    assert (
        post_login(client, "victim@mairie.fr", factories.PASSWORD, ip="192.0.2.1").status_code
        == 302
    )


def test_failures_slide_out_of_the_window(client, frozen_clock):
    factories.user("agent@mairie.fr")
    for _ in range(4):
        post_login(client, "agent@mairie.fr", "wrong-password-123")
    frozen_clock.advance(timedelta(minutes=16))
    post_login(client, "agent@mairie.fr", "wrong-password-123")
    assert post_login(client, "agent@mairie.fr", factories.PASSWORD).status_code == 302


def test_a_successful_sign_in_clears_the_account_failures(client):
    factories.user("agent@mairie.fr")
    for _ in range(3):
        post_login(client, "agent@mairie.fr", "wrong-password-123", ip="192.0.2.5")
    post_login(client, "agent@mairie.fr", factories.PASSWORD, ip="192.0.2.5")
    key = throttle.login_key("agent@mairie.fr")
    assert db.session.scalars(select(LoginFailure).where(LoginFailure.email_key == key)).all() == []


def test_deactivated_account_cannot_sign_in(client, tags):
    user = factories.user("gone@mairie.fr")
    user.is_active_account = False
    db.session.flush()
    response = post_login(client, "gone@mairie.fr", factories.PASSWORD)
    assert response.status_code == 401
    assert "désactivé" in response.get_data(as_text=True)
    assert not signed_in(client)
    assert tags() == ["accounts:user:login_failed"]
    # with a wrong password it looks like any other failure
    response = post_login(client, "gone@mairie.fr", "wrong-password-123")
    assert WRONG in response.get_data(as_text=True)


def test_invited_account_without_password_cannot_sign_in(client):
    factories.user("invited@mairie.fr", password=None)
    response = post_login(client, "invited@mairie.fr", "")
    assert response.status_code == 422
    response = post_login(client, "invited@mairie.fr", "any-password-123")
    assert WRONG in response.get_data(as_text=True)


def test_safe_next_is_followed(client):
    factories.user("agent@mairie.fr")
    response = post_login(client, "agent@mairie.fr", factories.PASSWORD, next="/profil?onglet=1")
    assert response.headers["Location"] == "/profil?onglet=1"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/phish",
        "//evil.example/phish",
        "/\\evil.example",
        "javascript:alert(1)",
        "http://datapass.test.evil.example/",
    ],
)
def test_unsafe_next_is_ignored(client, target):
    factories.user("agent@mairie.fr")
    response = post_login(client, "agent@mairie.fr", factories.PASSWORD, next=target)
    assert response.headers["Location"] == "/"


def test_safe_next_rules():
    assert sessions.safe_next("/a/b?c=d") == "/a/b?c=d"
    assert sessions.safe_next("http://host/x?y=1", host="host") == "/x?y=1"
    assert sessions.safe_next("http://other/x", host="host") is None
    assert sessions.safe_next("//host/x", host="host") is None
    assert sessions.safe_next("/x\r\nSet-Cookie: a=b") is None
    assert sessions.safe_next("") is None


def test_sign_out_is_a_post_and_is_audited(client, tags):
    factories.user("agent@mairie.fr")
    post_login(client, "agent@mairie.fr", factories.PASSWORD)
    assert client.get("/deconnexion").status_code == 405
    response = client.post("/deconnexion")
    assert response.status_code == 302
    assert not signed_in(client)
    assert tags() == ["accounts:user:login", "accounts:user:logout"]


def test_logout_needs_the_csrf_token(csrf_app, login_as):
    user = factories.user()
    client = login_as(user)
    assert client.post("/deconnexion").status_code == 400
    assert signed_in(client)


def test_staff_without_totp_is_sent_to_enrolment(client):
    factories.user("officer@dinum.fr", roles=("security_officer",))
    response = post_login(client, "officer@dinum.fr", factories.PASSWORD, next="/profil")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/profil/double-authentification")
    # every other page sends them back there until TOTP is enrolled
    response = client.get("/")
    assert response.status_code == 200  # the home page is public
    response = client.get("/organisation")
    assert response.headers["Location"].startswith("/profil/double-authentification")


def test_demo_staff_skip_enrolment_in_development_only(app, client):
    factories.user("demo-admin@dinum.fr", roles=("admin",), is_demo=True)
    response = post_login(client, "demo-admin@dinum.fr", factories.PASSWORD)
    assert response.headers["Location"] == "/"
    assert client.get("/admin/utilisateurs").status_code == 200
    assert "Compte de démonstration" in client.get("/").get_data(as_text=True)
    app.config["DEMO_SKIP_MFA"] = False
    try:
        assert client.get("/admin/utilisateurs").status_code == 302
    finally:
        app.config["DEMO_SKIP_MFA"] = True


def test_session_cookie_flags(client):
    factories.user("agent@mairie.fr")
    response = post_login(client, "agent@mairie.fr", factories.PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Expires=" in cookie  # permanent: bounded by SESSION_HOURS
