"""Steps the browser journeys share."""

from __future__ import annotations

import re

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


def tab_to(page, selector: str, limit: int = 60) -> None:
    """Move the focus with the Tab key only until it reaches ``selector`` (a keyboard user's
    way): fails if the element cannot be reached."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => !!document.activeElement?.matches(s)", selector):
            return
    raise AssertionError(f"{selector} n'est pas atteignable au clavier")


def fill_request(page) -> None:
    """Fill every section of a new request, from its first section to the summary; the
    project, the data and the terms by keyboard only."""

    def proceed() -> None:
        page.get_by_role("button", name="Enregistrer et continuer").click()

    # 1. The project, by keyboard only: Tab to each field, type, Enter on the button.
    tab_to(page, "#title")
    page.keyboard.type("Tarification sociale de la cantine")
    tab_to(page, "#description")
    page.keyboard.type("Le portail famille calcule le tarif de la cantine.")
    tab_to(page, "#purpose")
    page.keyboard.type("Appliquer le tarif correspondant au quotient familial.")
    tab_to(page, "button[type=submit]:not([name])")
    page.keyboard.press("Enter")
    page.wait_for_url("**/donnees")
    # 2. The data, by keyboard: Space ticks a checkbox.
    tab_to(page, "input[name=scopes]")
    page.keyboard.press("Space")
    proceed()
    page.fill("#legal_basis_name", "Délibération du conseil municipal du 12 mars 2026")
    page.fill("#legal_basis_url", "https://www.villeneuvedascq.fr/deliberations/2026-03-12")
    proceed()
    for role in ("controller", "dpo", "technical", "business"):
        page.fill(f"#{role}_name", f"{role.title()} Martin")
        page.fill(f"#{role}_email", f"{role}@villeneuvedascq.fr")
        page.fill(f"#{role}_phone", "03 20 43 50 50")
    proceed()
    page.fill("#retention_months", "12")
    page.fill("#daily_volume", "400")
    proceed()
    page.fill("#homologation_date", "2026-01-15")
    page.fill("#homologation_authority", "Le maire, autorité d'homologation")
    page.set_input_files(
        "#homologation_document",
        files=[
            {"name": "homologation.pdf", "mimeType": "application/pdf", "buffer": factories.PDF}
        ],
    )
    proceed()
    tab_to(page, "#terms")
    page.keyboard.press("Space")
    tab_to(page, "button[type=submit]:not([name])")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/demandes/\d+$"))
