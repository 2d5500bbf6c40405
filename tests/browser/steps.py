"""Steps the browser journeys share."""

from __future__ import annotations

from tests import factories


def sign_in(page, email: str, password: str = factories.PASSWORD, *, home: bool = True) -> None:
    """Sign in through the form; with ``home``, wait for the home page it leads to."""
    page.goto("/connexion")
    page.fill("#email", email)
    page.fill("#password", password)
    page.get_by_role("button", name="Se connecter", exact=True).click()
    if home:
        page.wait_for_url("**/")


def sign_out(page, *, home: bool = True) -> None:
    page.get_by_role("button", name="Se déconnecter").click()
    if home:
        page.wait_for_url("**/")
