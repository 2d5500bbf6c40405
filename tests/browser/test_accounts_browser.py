"""Sign-in in a real browser: the demo roles, TOTP enrolment then sign-in with a code, and a
wrong password."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest

from datapass import clock, demo
from datapass.extensions import db
from tests import factories
from tests.browser.steps import sign_in, sign_out

pytestmark = pytest.mark.browser


EXPECTED_ON_HOME = {
    "applicant": "Commune de Dunkerque",
    "instructor": "Dominique Instructeur",
    "security_officer": "Vos rôles : Officier de sécurité",
    "admin": "Inviter des personnes",
}


def test_each_demo_role_signs_in_and_lands_on_its_home_page(page, committed_app):
    with committed_app.app_context():
        accounts = demo.run_demo()["accounts"]
        db.session.commit()
    for key, account in accounts.items():
        sign_in(page, account["email"], account["password"], home=False)
        page.wait_for_url("**/")
        assert page.locator("h1").inner_text().startswith("Bonjour")
        assert EXPECTED_ON_HOME[key] in page.locator("main").inner_text(), key
        if key in ("security_officer", "admin"):  # demo staff skip TOTP in development, and say so
            assert "Compte de démonstration" in page.locator("main").inner_text()
        sign_out(page)
        assert page.get_by_role("link", name="Se connecter").first.is_visible()


def test_staff_enrols_in_totp_then_signs_in_with_a_code(page, committed_app):
    with committed_app.app_context():
        factories.user("officier@dinum.gouv.fr", roles=("security_officer",))
        db.session.commit()
    sign_in(page, "officier@dinum.gouv.fr", factories.PASSWORD, home=False)
    # a staff member without TOTP is sent to enrolment
    page.wait_for_url("**/profil/double-authentification**")
    assert page.locator(".dp-qr svg").is_visible()
    secret = page.locator("#totp-secret").get_attribute("data-secret")
    page.fill("#code", pyotp.TOTP(secret).at(clock.now()))
    page.get_by_role("button", name="Activer").click()
    assert "Double authentification activée" in page.locator("h1").inner_text()
    assert page.locator("#recovery-codes li").count() == 10
    page.get_by_role("link", name="J'ai conservé mes codes, continuer").click()
    sign_out(page)

    clock.advance(timedelta(seconds=30))  # the enrolment code cannot be replayed
    sign_in(page, "officier@dinum.gouv.fr", factories.PASSWORD, home=False)
    page.wait_for_url("**/connexion/verification")
    page.fill("#code", pyotp.TOTP(secret).at(clock.now()))
    page.get_by_role("button", name="Vérifier").click()
    page.wait_for_url("**/")
    assert "Bonjour" in page.locator("h1").inner_text()
    assert "Vos rôles : Officier de sécurité" in page.locator("main").inner_text()


def test_a_wrong_password_shows_the_error(page, committed_app):
    with committed_app.app_context():
        factories.user("agent@mairie.fr")
        db.session.commit()
    sign_in(page, "agent@mairie.fr", "not-the-right-password", home=False)
    error = page.locator("#erreur-connexion")
    assert error.is_visible()
    assert "Adresse électronique ou mot de passe incorrect." in error.inner_text()
    assert page.url.endswith("/connexion")
