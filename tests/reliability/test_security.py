"""Sessions and sign-in under attack (issue 10, point 8): a session cookie copied before
sign-out is worthless after it, and a burst of concurrent wrong passwords against one
account on PostgreSQL, from as many addresses, threads and connections, gets exactly the
rate limit's number of password checks."""

from __future__ import annotations

import threading

from sqlalchemy import delete, func, select

from datapass.accounts.models import LoginFailure, User
from datapass.audit.models import AuditEvent
from datapass.extensions import db
from tests import factories
from tests.accounts.conftest import post_login, signed_in


def _session_cookie(app, client) -> str:
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    return cookie.value


def test_a_session_cookie_copied_before_sign_out_is_dead_after_it(app):
    user = factories.user("agent@mairie.fr")
    browser, other_browser = app.test_client(), app.test_client()
    assert post_login(browser, "agent@mairie.fr", factories.PASSWORD).status_code == 302
    assert post_login(other_browser, "agent@mairie.fr", factories.PASSWORD).status_code == 302
    stolen = _session_cookie(app, browser)
    name = app.config["SESSION_COOKIE_NAME"]
    thief = app.test_client()
    thief.set_cookie(name, stolen)
    assert signed_in(thief)  # the copy works while the session lives

    response = browser.post("/deconnexion", follow_redirects=True)
    assert "tous les autres navigateurs" in response.get_data(as_text=True)
    assert not signed_in(browser)

    replay = app.test_client()
    replay.set_cookie(name, stolen)
    page = replay.get("/profil")
    assert page.status_code == 302 and page.headers["Location"].startswith("/connexion")
    assert not signed_in(thief)
    # the copy cannot be told from another browser: that one is signed out too, as it says
    assert not signed_in(other_browser)
    # and signing in again works, with a fresh cookie
    assert post_login(browser, "agent@mairie.fr", factories.PASSWORD).status_code == 302
    assert signed_in(browser)
    assert db.session.get(User, user.id).session_epoch >= 1


BURST = 16


def test_concurrent_wrong_passwords_check_only_up_to_the_limit(committed_app):
    """16 threads, 16 connections, 16 addresses, one account, released together. PostgreSQL
    is the case that broke (the account's row lock fixes it); on SQLite every transaction
    holds the write lock from its BEGIN."""
    app = committed_app
    user = factories.user("cible@mairie.fr")
    db.session.commit()
    limit = app.config["LOGIN_MAX_FAILURES"]
    assert 3 * limit < BURST
    barrier = threading.Barrier(BURST)
    codes: list[int] = []
    errors: list[BaseException] = []

    def guess(n: int) -> None:
        try:
            client = app.test_client()
            barrier.wait(timeout=30)
            response = post_login(
                client, "cible@mairie.fr", f"mauvais-mot-de-passe-{n}", ip=f"198.51.100.{n}"
            )
            codes.append(response.status_code)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(BURST)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    db.session.rollback()
    checked = db.session.scalar(
        select(func.count()).where(AuditEvent.tag == "accounts:user:login_failed")
    )
    refused = db.session.scalar(
        select(func.count()).where(AuditEvent.tag == "accounts:user:login_throttled")
    )
    assert checked == limit
    assert refused == BURST - limit
    assert sorted(codes) == [401] * limit + [429] * (BURST - limit)
    assert db.session.scalar(select(func.count()).select_from(LoginFailure)) == limit
    db.session.execute(delete(LoginFailure))
    db.session.commit()
    assert db.session.get(User, user.id) is not None
