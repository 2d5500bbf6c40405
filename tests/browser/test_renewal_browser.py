"""Renewal in a real browser: nothing changed → a new token shown once and the old one's
grace end; a changed contact → the request is reopened instead."""

from __future__ import annotations

import pytest

from datapass.extensions import db
from tests.browser.steps import sign_in, tab_to
from tests.lifecycle.conftest import expiring_token, make_listening_api

pytestmark = pytest.mark.browser


def _setup(committed_app):
    with committed_app.app_context():
        api = make_listening_api(name="API Quotient familial")
        token = expiring_token(api, days_left=25)
        ids = (token.id, token.habilitation.request_id, token.habilitation.requester.email)
        db.session.commit()
    return ids


def _answer_yes(page) -> None:
    for name in ("same_person", "purpose_unchanged", "legal_basis_holds"):
        page.locator(f"label[for='{name}-0']").click()


def test_renewal_with_nothing_changed_shows_the_new_token_once(page, committed_app):
    token_id, _request_id, email = _setup(committed_app)
    sign_in(page, email)
    page.goto(f"/jetons/{token_id}")
    assert "Échéances" in page.locator("#cycle-de-vie").inner_text()
    page.locator("#renouveler").click()
    page.wait_for_url(f"**/jetons/{token_id}/renouvellement")
    # The wizard by keyboard only: Tab into each yes/no group, Space picks "yes", Enter sends.
    for name in ("same_person", "purpose_unchanged", "legal_basis_holds"):
        tab_to(page, f"#{name}-0")
        page.keyboard.press("Space")
        assert page.locator(f"#{name}-0").is_checked()
    tab_to(page, "#formulaire-renouvellement button[type=submit]")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    secret = page.locator("#nouveau-jeton").inner_text().strip()
    assert secret.count(".") == 2  # a JWT
    # It wraps (the audit of every page checks the width) and copies like the reveal page.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator("#copier-jeton").click()
    assert page.locator("#copier-jeton").inner_text() == "Copié"
    assert page.evaluate("navigator.clipboard.readText()") == secret
    grace = page.locator("#fin-de-grace").inner_text()
    assert "L'ancien jeton reste valable jusqu'au" in grace
    # The old token's page shows it is replaced and valid until its grace end.
    page.get_by_role("link", name="Voir l'ancien jeton").click()
    assert "délai de grâce" in page.locator("main").inner_text().lower()
    assert "remplacé" in page.locator("#statut-jeton").inner_text().lower()
    # The new token is shown once only: the result page is not kept (no-store) and the new
    # token's page no longer offers to display it.
    page.locator("dt:has-text('Remplacé par') + dd a").click()
    assert page.locator("#afficher-jeton").count() == 0
    assert secret not in page.content()


def test_renewal_with_a_changed_contact_reopens_the_request(page, committed_app):
    token_id, request_id, email = _setup(committed_app)
    sign_in(page, email)
    page.goto(f"/jetons/{token_id}/renouvellement")
    # Sent unanswered: the error summary links to each question left out.
    page.get_by_role("button", name="Renouveler").click()
    page.locator("#resume-erreurs").wait_for()
    assert page.locator("#resume-erreurs a[href='#same_person']").count() == 1
    _answer_yes(page)
    page.fill("#technical-email", "nouveau.contact@mairie.fr")
    page.get_by_role("button", name="Renouveler").click()
    page.wait_for_url(f"**/demandes/{request_id}")
    assert "la demande est rouverte" in page.locator("main").inner_text()
    page.goto(f"/jetons/{token_id}")
    assert "actif" in page.locator("#statut-jeton").inner_text().lower()
    schedule = page.locator("#cycle-de-vie").inner_text().lower()
    assert "mise à jour de la demande en cours" in schedule
