"""TOTP enrolment, sign-in with a code or a recovery code, replay refusal, disabling,
regenerating the codes, re-authentication."""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp
from sqlalchemy import select

from datapass import clock, vault
from datapass.accounts import mfa
from datapass.accounts.models import RecoveryCode, User
from datapass.actor import Actor
from datapass.extensions import db
from tests import factories
from tests.accounts.conftest import count, payload, post_login, signed_in, text


def _reload(user: User) -> User:
    db.session.expire(user)
    return db.session.get(User, user.id)


def _secret_on_page(page: str) -> str:
    return re.search(r'data-secret="([A-Z2-7]+)"', page)[1]


def _codes_on_page(page: str) -> list[str]:
    return re.findall(r'<li class="dp-mono">([a-z0-9]{5}-[a-z0-9]{5})</li>', page)


def test_enrolment_page_shows_a_qr_code_and_the_key_without_inline_style(client, login_as):
    login_as(factories.user("agent@mairie.fr"))
    response = client.get("/profil/double-authentification")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<svg" in page and "viewBox" in page
    assert "style=" not in page and "<script>" not in page  # the CSP allows neither
    secret = _secret_on_page(page)
    assert len(secret) == 32
    # reloading shows the same secret (kept sealed in the session, nothing stored yet)
    again = client.get("/profil/double-authentification").get_data(as_text=True)
    assert _secret_on_page(again) == secret
    assert (
        db.session.scalar(select(User.totp_secret_sealed).where(User.email == "agent@mairie.fr"))
        is None
    )


def test_enrolment_with_a_wrong_code_changes_nothing(client, login_as, tags):
    user = factories.user()
    db.session.commit()
    login_as(user)
    client.get("/profil/double-authentification")
    response = client.post("/profil/double-authentification", data={"code": "000000"})
    assert response.status_code == 422
    assert "Ce code ne correspond pas" in text(response)
    assert not _reload(user).mfa_enabled
    assert tags() == []


def test_enrolment_confirms_with_a_code_and_shows_ten_recovery_codes_once(client, login_as, tags):
    user = factories.user()
    login_as(user)
    secret = _secret_on_page(client.get("/profil/double-authentification").get_data(as_text=True))
    response = client.post(
        "/profil/double-authentification", data={"code": pyotp.TOTP(secret).at(clock.now())}
    )
    assert response.status_code == 200
    codes = _codes_on_page(response.get_data(as_text=True))
    assert len(codes) == 10 and len(set(codes)) == 10
    user = _reload(user)
    assert user.mfa_enabled
    assert vault.unseal(user.totp_secret_sealed, "totp").decode() == secret
    stored = db.session.scalars(
        select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user.id)
    ).all()
    assert sorted(stored) == sorted(vault.sha256_hex(c.replace("-", "")) for c in codes)
    assert tags() == ["accounts:mfa:enabled"]
    # the codes are never shown again
    status_page = client.get("/profil/double-authentification").get_data(as_text=True)
    assert not _codes_on_page(status_page)
    assert "10</strong> codes de secours" in status_page


def test_sign_in_with_totp_is_two_steps(client, frozen_clock, tags, audit_events):
    user = factories.user("agent@mairie.fr")
    secret = factories.enable_totp(user)
    response = post_login(client, "agent@mairie.fr", factories.PASSWORD, next="/organisation")
    assert response.headers["Location"] == "/connexion/verification"
    assert not signed_in(client)  # the password alone opens nothing
    assert tags() == []
    bad = client.post("/connexion/verification", data={"code": "123456"})
    assert bad.status_code == 401
    assert "Code de vérification incorrect" in text(bad)
    assert not signed_in(client)
    good = client.post("/connexion/verification", data={"code": factories.totp_code(secret)})
    assert good.headers["Location"] == "/organisation"
    assert signed_in(client)
    events = audit_events()
    assert [e.tag for e in events] == ["accounts:user:login_failed", "accounts:user:login"]
    assert payload(events[0])["reason"] == "wrong_second_factor"
    assert payload(events[1])["method"] == "totp"


def test_a_totp_code_cannot_be_replayed(client, frozen_clock):
    user = factories.user("agent@mairie.fr")
    secret = factories.enable_totp(user)
    code = factories.totp_code(secret)
    post_login(client, "agent@mairie.fr", factories.PASSWORD)
    client.post("/connexion/verification", data={"code": code})
    assert signed_in(client)
    client.post("/deconnexion")
    post_login(client, "agent@mairie.fr", factories.PASSWORD)
    replay = client.post("/connexion/verification", data={"code": code})
    assert replay.status_code == 401
    assert "déjà utilisé" in text(replay)
    assert not signed_in(client)
    frozen_clock.advance(timedelta(seconds=30))
    client.post("/connexion/verification", data={"code": factories.totp_code(secret)})
    assert signed_in(client)


def test_codes_from_the_neighbouring_steps_are_accepted(app):
    user = factories.user()
    secret = factories.enable_totp(user)
    assert mfa.verify_totp(user, factories.totp_code(secret, -1))
    assert mfa.verify_totp(user, factories.totp_code(secret, +1))
    assert not mfa.verify_totp(user, factories.totp_code(secret, 0))  # older than the last
    assert not mfa.verify_totp(user, factories.totp_code(secret, +3))


def test_recovery_code_signs_in_once(client, login_as, tags):
    user = factories.user("agent@mairie.fr")
    factories.enable_totp(user)
    codes = mfa._new_recovery_codes(user)
    post_login(client, "agent@mairie.fr", factories.PASSWORD)
    response = client.post("/connexion/verification", data={"code": codes[3].upper()})
    assert response.status_code == 302
    assert signed_in(client)
    assert tags() == ["accounts:mfa:recovery_used", "accounts:user:login"]
    assert mfa.remaining_recovery_codes(user) == 9
    client.post("/deconnexion")
    post_login(client, "agent@mairie.fr", factories.PASSWORD)
    again = client.post("/connexion/verification", data={"code": codes[3]})
    assert again.status_code == 401
    assert not signed_in(client)
    assert mfa.remaining_recovery_codes(user) == 9


def test_second_factor_failures_count_towards_the_rate_limit(client):
    user = factories.user("agent@mairie.fr")
    secret = factories.enable_totp(user)
    post_login(client, "agent@mairie.fr", factories.PASSWORD)
    for _ in range(5):
        client.post("/connexion/verification", data={"code": "000000"})
    blocked = client.post("/connexion/verification", data={"code": factories.totp_code(secret)})
    assert blocked.status_code == 429
    assert not signed_in(client)


def test_second_step_expires(client, frozen_clock):
    user = factories.user("agent@mairie.fr")
    secret = factories.enable_totp(user)
    post_login(client, "agent@mairie.fr", factories.PASSWORD)
    frozen_clock.advance(timedelta(minutes=6))
    response = client.post("/connexion/verification", data={"code": factories.totp_code(secret)})
    assert response.headers["Location"] == "/connexion"
    assert not signed_in(client)


def test_second_step_without_a_password_step_goes_back_to_sign_in(client):
    assert client.get("/connexion/verification").headers["Location"] == "/connexion"


def test_disable_needs_a_recent_authentication(client, login_as, frozen_clock, tags):
    user = factories.user()
    factories.enable_totp(user)
    login_as(user)
    frozen_clock.advance(timedelta(minutes=11))
    response = client.post(
        "/profil/double-authentification/desactiver",
        headers={"Referer": "http://localhost/profil/double-authentification"},
    )
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/reauthentification")
    assert _reload(user).mfa_enabled
    assert tags() == []


def test_disable_removes_totp_and_codes(client, login_as, tags):
    user = factories.user()
    factories.enable_totp(user)
    mfa._new_recovery_codes(user)
    login_as(user)
    response = client.post("/profil/double-authentification/desactiver")
    assert response.headers["Location"] == "/profil"
    user = _reload(user)
    assert not user.mfa_enabled and user.totp_secret_sealed is None
    assert count(RecoveryCode) == 0
    assert tags() == ["accounts:mfa:disabled"]


def test_staff_who_disable_totp_must_enrol_again(client, login_as):
    user = factories.user(roles=("security_officer",))
    factories.enable_totp(user)
    login_as(user)
    response = client.post("/profil/double-authentification/desactiver")
    assert response.headers["Location"] == "/profil/double-authentification"
    assert (
        client.get("/organisation")
        .headers["Location"]
        .startswith("/profil/double-authentification")
    )


def test_regenerating_codes_replaces_them(client, login_as, tags):
    user = factories.user("agent@mairie.fr")
    factories.enable_totp(user)
    old = mfa._new_recovery_codes(user)
    login_as(user)
    response = client.post("/profil/double-authentification/codes-de-secours")
    new = _codes_on_page(response.get_data(as_text=True))
    assert len(new) == 10 and not set(new) & set(old)
    assert tags() == ["accounts:mfa:recovery_regenerated"]
    assert not mfa.use_recovery_code(user, old[0], Actor.system("test"))
    assert mfa.use_recovery_code(user, new[0], Actor.system("test"))


def test_reauthentication_with_password_and_code(client, login_as, frozen_clock, tags):
    user = factories.user()
    secret = factories.enable_totp(user)
    login_as(user, reauth=False)
    frozen_clock.advance(timedelta(minutes=11))
    assert client.get("/admin/utilisateurs").status_code == 403  # not an admin: no reauth asked
    page = client.get("/reauthentification?next=/profil/double-authentification")
    assert "Code de vérification" in page.get_data(as_text=True)
    wrong = client.post(
        "/reauthentification",
        data={"password": factories.PASSWORD, "code": "000000", "next": "/profil"},
    )
    assert wrong.status_code == 401
    with client.session_transaction() as sess:
        assert "reauth_at" not in sess
    ok = client.post(
        "/reauthentification",
        data={
            "password": factories.PASSWORD,
            "code": factories.totp_code(secret),
            "next": "https://evil.example/",
        },
    )
    assert ok.headers["Location"] == "/"
    with client.session_transaction() as sess:
        assert sess["reauth_at"] == frozen_clock.now().isoformat()
    assert tags() == ["accounts:user:login_failed", "accounts:user:reauthenticated"]


def test_reauthentication_follows_a_safe_next(client, login_as):
    user = factories.user()
    login_as(user, reauth=False)
    response = client.post(
        "/reauthentification",
        data={"password": factories.PASSWORD, "next": "/profil/double-authentification"},
    )
    assert response.headers["Location"] == "/profil/double-authentification"
