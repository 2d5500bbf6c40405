"""The token page in a real browser: an applicant signs in, reveals the token once, then
rotates it with a grace period."""

from __future__ import annotations

import pytest

from datapass.actor import Actor
from datapass.extensions import db
from datapass.tokens import issuance
from tests import factories
from tests.browser.steps import sign_in, tab_to
from tests.tokens.conftest import make_api, make_habilitation, make_provider

pytestmark = pytest.mark.browser


def test_reveal_once_then_rotate(page, committed_app):
    with committed_app.app_context():
        organisation = factories.organisation()
        requester = factories.user(organisation=organisation)
        api = make_api(make_provider(), name="API Quotient familial")
        habilitation = make_habilitation(api, organisation, requester)
        token, raw = issuance.issue_for_habilitation(habilitation, Actor.system("test"))
        db.session.commit()
        email, token_id = requester.email, token.id

    sign_in(page, email, home=False)
    page.goto("/jetons/")
    page.get_by_role("link", name="Jeton du").first.click()
    assert page.locator("#statut-jeton").text_content().strip() == "Actif"
    assert "jours restants" in page.locator("#jours-restants").inner_text()

    # The reveal by keyboard only.
    tab_to(page, "#afficher-jeton")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.locator("#jeton-brut").inner_text().strip() == raw
    page.get_by_role("link", name="Retour au jeton").click()
    assert page.locator("#afficher-jeton").count() == 0
    assert "Datapass ne le conserve plus" in page.content()

    page.fill("#rotate-grace_days", "7")
    page.get_by_role("button", name="Émettre un nouveau jeton").click()
    assert "Nouveau jeton émis" in page.content()
    assert page.url.rstrip("/").split("/")[-1] != str(token_id)
    page.locator("#afficher-jeton").click()
    new_raw = page.locator("#jeton-brut").inner_text().strip()
    assert new_raw and new_raw != raw
    page.goto(f"/jetons/{token_id}")
    assert page.locator("#statut-jeton").text_content().strip() == "Remplacé"
