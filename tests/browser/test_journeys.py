"""The journeys of issue 11 as new users walk them, in a real browser (every page visited is
audited by axe-core and must fit 320 and 1,280 px: tests/browser/conftest.py):

- an applicant finds the catalogue from the menu, asks for an API from its page (preselected)
  and submits, partly by keyboard only; breadcrumbs everywhere below the first level;
- habilitations and tokens lead to each other, "Mes jetons" grouped by habilitation;
- the page counts of each journey (the budgets of benchmarks/README.md, "Parcours").
"""

from __future__ import annotations

import re
import time

import pytest

from datapass.actor import Actor
from datapass.extensions import db
from datapass.tokens import issuance as token_issuance
from tests import factories
from tests.browser.steps import fill_request, sign_in, tab_to
from tests.tokens.conftest import make_api, make_habilitation, make_provider

pytestmark = pytest.mark.browser

# The journey budgets, in pages loaded (benchmarks/README.md, "Parcours"): a journey that
# grows longer fails here and must be discussed.
CATALOGUE_TO_SUBMITTED = 12
REMINDER_TO_RENEWED = 3
DASHBOARD_TO_VERIFIED_EXPORT = 2


@pytest.fixture(scope="session", params=["sqlite"])
def backend(request) -> str:
    """These journeys run on SQLite only: the browser is what they test, and on PostgreSQL
    they would double the time for no page that differs (the pages' queries are tested on
    both databases elsewhere)."""
    return request.param


def crumbs(page) -> list[str]:
    """The breadcrumb's labels, the current page last."""
    nav = page.locator("nav.fr-breadcrumb")
    assert nav.count() == 1, "pas de fil d'Ariane"
    labels = [t.strip() for t in nav.locator("li").all_inner_texts()]
    assert nav.locator("[aria-current=page]").inner_text().strip() == labels[-1]
    return labels


def test_from_the_catalogue_to_a_submitted_request(page, committed_app):
    with committed_app.app_context():
        api = factories.catalogue()["quotient-familial"]
        organisation = factories.organisation("Commune de Villeneuve-d'Ascq")
        applicant = factories.user(organisation=organisation)
        db.session.commit()
        api_id, api_name, email = api.id, api.name, applicant.email

    # Signed out, the menu and the footer already lead to the catalogue.
    page.goto("/")
    assert page.locator("#pied-de-page").get_by_role("link", name="Catalogue des API").count()
    sign_in(page, email)
    assert page.locator(".fr-card").get_by_role("link", name="Catalogue des API").count()
    start = len(page.visited)
    page.locator("#navigation-principale").get_by_role("link", name="Catalogue des API").click()
    page.wait_for_url("**/catalogue")
    assert crumbs(page) == ["Accueil", "Catalogue des API"]
    page.get_by_role("link", name=api_name).click()
    page.wait_for_url("**/catalogue/quotient-familial")
    assert crumbs(page) == ["Accueil", "Catalogue des API", api_name]
    page.get_by_role("link", name="Demander l'accès").click()
    page.wait_for_url(f"**/demandes/nouvelle?api={api_id}")
    assert crumbs(page) == ["Accueil", "Mes demandes", "Nouvelle demande"]
    assert page.locator(f"#api-{api_id}").is_checked()  # preselected: no choosing again
    assert page.get_by_role("link", name="catalogue des API").count()
    page.get_by_role("button", name="Commencer la demande").click()
    page.wait_for_url("**/etapes/projet")
    assert crumbs(page)[-1] == "Le projet"
    fill_request(page)
    assert crumbs(page)[:2] == ["Accueil", "Mes demandes"]
    tab_to(page, "#soumettre")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "Votre demande a été soumise" in page.content()
    pages = len(page.visited) - start
    print(f"\nParcours catalogue → demande soumise : {pages} pages")
    assert pages <= CATALOGUE_TO_SUBMITTED, page.visited[start:]


def test_habilitations_and_tokens_lead_to_each_other(page, committed_app):
    with committed_app.app_context():
        organisation = factories.organisation()
        requester = factories.user(organisation=organisation)
        api = make_api(make_provider(), name="API Quotient familial")
        other_api = make_api(make_provider(), name="API Statut étudiant")
        first = make_habilitation(api, organisation, requester)
        second = make_habilitation(other_api, organisation, requester)
        for habilitation in (first, first, second):
            token_issuance.issue_for_habilitation(habilitation, Actor.system("test"))
        db.session.commit()
        email = requester.email
        first_id, first_ref, first_title = first.id, first.reference, first.title
        second_ref = second.reference

    sign_in(page, email)
    page.goto("/jetons/")
    assert crumbs(page) == ["Accueil", "Mes jetons"]
    groups = page.locator("main section")
    assert groups.count() == 2  # one group per habilitation, two tokens in the first
    group = page.locator(f"section:has(a:text-is('{first_ref}'))")
    assert first_title in group.locator("h2").inner_text()
    assert "API Quotient familial" in group.inner_text()
    assert group.locator("tbody tr").count() == 2
    assert [h.strip() for h in group.locator("thead th").all_inner_texts()] == [
        "Jeton",
        "Statut",
        "Délivré le",
        "Expire le",
        "Dernière utilisation",
    ]
    assert page.locator(f"section:has(a:text-is('{second_ref}')) tbody tr").count() == 1
    # From the list to the habilitation, from there to a token, and back.
    group.get_by_role("link", name=first_ref).click()
    page.wait_for_url(f"**/habilitations/{first_id}")
    assert crumbs(page)[-1] == f"Habilitation {first_ref}"
    assert page.locator("#jetons-habilitation li").count() == 2
    page.locator("#jetons-habilitation a").first.click()
    page.wait_for_url("**/jetons/*")
    assert crumbs(page)[:2] == ["Accueil", "Mes jetons"]
    page.locator("#lien-habilitation").click()
    page.wait_for_url(f"**/habilitations/{first_id}")


def test_decision_errors_by_keyboard_then_the_applicant_sees_what_was_asked(
    page, new_page, committed_app
):
    from datapass.authorizations import decisions as authorization_decisions

    with committed_app.app_context():
        api = factories.catalogue()["quotient-familial"]
        applicant = factories.user(organisation=factories.organisation())
        instructor = factories.user(roles=("instructor",), api=api, is_demo=True)
        request = factories.filled_request(api, requester=applicant)
        authorization_decisions.submit(request, Actor.for_user(applicant))
        db.session.commit()
        request_id, applicant_email, instructor_email = (
            request.id,
            applicant.email,
            instructor.email,
        )

    # The instructor asks for changes without a motive, by keyboard only.
    staff = new_page()
    sign_in(staff, instructor_email)
    staff.goto(f"/demandes/{request_id}")
    tab_to(staff, "#action-request_changes")
    with staff.expect_navigation():
        staff.keyboard.press("Enter")
    # The error summary is focused and links to the one field in error.
    assert staff.evaluate("document.activeElement.id") == "resume-erreurs"
    summary = staff.locator("#resume-erreurs")
    assert summary.get_by_role("link").count() == 1
    decision = staff.locator("aside")
    assert decision.locator(".fr-error-text").count() == 1
    motive = staff.locator("#text-request_changes")
    assert motive.get_attribute("aria-invalid") == "true"
    message = staff.locator(f"#{motive.get_attribute('aria-describedby')}")
    assert "Indiquez un motif" in message.inner_text()
    assert staff.locator("#text-approve").get_attribute("aria-invalid") is None
    # The summary's link takes the focus to the field; the motive is typed and sent.
    tab_to(staff, "#resume-erreurs a")
    staff.keyboard.press("Enter")
    assert staff.evaluate("document.activeElement.id") == "text-request_changes"
    staff.keyboard.type("Une conservation de 24 mois est attendue.")
    tab_to(staff, "#action-request_changes")
    with staff.expect_navigation():
        staff.keyboard.press("Enter")
    assert "Les modifications ont été demandées" in staff.content()
    staff.fill("#body", "Et quel volume exact par jour ?")
    staff.get_by_role("button", name="Envoyer le message").click()
    staff.wait_for_url("**/demandes/*")

    # The applicant sees both at the top of the request, above the summary.
    sign_in(page, applicant_email)
    page.goto(f"/demandes/{request_id}")
    callout = page.locator("#demande-instructeur")
    assert "Une conservation de 24 mois est attendue." in callout.inner_text()
    assert "Et quel volume exact par jour ?" in callout.inner_text()
    above = page.evaluate(
        "() => !!(document.querySelector('#demande-instructeur').compareDocumentPosition("
        "document.querySelector('#section-projet')) & Node.DOCUMENT_POSITION_FOLLOWING)"
    )
    assert above
    callout.get_by_role("link", name="Corriger la demande").click()
    page.wait_for_url("**/etapes/projet")
    # A section sent back with an error: the same pattern, by keyboard.
    page.fill("#title", "")
    tab_to(page, "button[type=submit]:not([name])")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "resume-erreurs"
    assert page.locator("#title").get_attribute("aria-describedby") == "title-error"
    tab_to(page, "#resume-erreurs a")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "title"


# --- every role's main pages, audited (axe, 320 and 1,280 px) ------------------------------

DETAIL = re.compile(r"^/[a-z/-]+/\d+$")


def _tour(page, limit: int) -> list[str]:
    """The menu's pages, then the first detail page (…/<id>) of each kind linked from them."""
    menu = page.locator("#navigation-principale a").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))"
    )
    seen, visited = set(), []
    queue = list(menu)
    while queue and len(visited) < limit:
        href = queue.pop(0)
        kind = re.sub(r"\d+", "N", href)
        if kind in seen:
            continue
        seen.add(kind)
        page.goto(href)
        visited.append(href)
        if href in menu:
            links = page.locator("main a[href^='/']").evaluate_all(
                "links => links.map(a => a.getAttribute('href').split('#')[0])"
            )
            queue.extend(h for h in links if DETAIL.match(h))
    return visited


def test_each_role_walks_its_main_pages(new_page, committed_app, auditor):
    from datapass import demo

    with committed_app.app_context():
        accounts = demo.run_demo()["accounts"]
        db.session.commit()
    before = auditor.pages
    started = time.perf_counter()
    for role, limit in (
        ("applicant", 7),
        ("instructor", 7),
        ("security_officer", 5),
        ("admin", 7),
    ):
        page = new_page()
        sign_in(page, accounts[role]["email"], accounts[role]["password"])
        visited = _tour(page, limit)
        assert len(visited) >= 4, (role, visited)
        page.audit_now()
    print(f"\nPages auditées : {auditor.pages - before} en {time.perf_counter() - started:.1f} s")


# --- the journey budgets (benchmarks/README.md, "Parcours") -------------------------------


def test_from_a_reminder_mail_to_a_renewed_token(page, committed_app):
    from datapass.lifecycle import sweep
    from tests.lifecycle.conftest import expiring_token, mails, make_listening_api

    with committed_app.app_context():
        token = expiring_token(make_listening_api(name="API Quotient familial"), days_left=30)
        email = token.habilitation.requester.email
        db.session.commit()
        sweep.sweep_tokens()
        db.session.commit()
        (reminder,) = [m for m in mails("reminder_expiry") if m.recipient == email]
        link = re.search(r"https?://\S+/renouvellement", reminder.body_text).group(0)

    # Signed out, as one is when reading mail: the link, the sign-in, the wizard, the result.
    start = len(page.visited)
    page.goto(link)
    page.fill("#email", email)
    page.fill("#password", factories.PASSWORD)
    page.get_by_role("button", name="Se connecter", exact=True).click()
    page.wait_for_url("**/renouvellement")
    for name in ("same_person", "purpose_unchanged", "legal_basis_holds"):
        page.locator(f"label[for='{name}-0']").click()
    page.get_by_role("button", name="Renouveler").click()
    page.locator("#nouveau-jeton").wait_for()
    pages = len(page.visited) - start
    print(f"\nParcours courriel de rappel → jeton renouvelé : {pages} pages")
    assert pages <= REMINDER_TO_RENEWED, page.visited[start:]


def test_from_the_dashboard_to_a_verified_export(page, committed_app, tmp_path):
    from datapass.audit import checkpoints, exports

    with committed_app.app_context():
        officer = factories.user(roles=("security_officer",), is_demo=True)
        db.session.commit()
        email = officer.email

    sign_in(page, email)
    # Bad criteria in the audit console: the linked error summary (audited like every page).
    page.goto("/audit/?debut=hier&api=abc")
    assert page.locator("#resume-erreurs a[href='#filtre-debut']").count() == 1
    assert page.locator("#filtre-api").get_attribute("aria-describedby") == "filtre-api-erreur"
    start = len(page.visited)
    page.locator("#navigation-principale").get_by_role(
        "link", name="Tableau de bord sécurité"
    ).click()
    page.wait_for_url("**/securite/tableau-de-bord")
    # The dashboard exports the journal itself (it took the audit console in between).
    page.get_by_role("button", name="Exporter le journal d'audit").click()
    page.wait_for_url(re.compile(r"/audit/exports/\d+$"))
    files = {}
    for link, name in (("#telecharger-export", "export.csv"), ("#telecharger-manifeste", "m.jws")):
        with page.expect_download() as download:
            page.locator(link).click()
        files[name] = tmp_path / name
        download.value.save_as(files[name])
    pages = len(page.visited) - start
    with committed_app.app_context():
        check = exports.verify_export(
            files["export.csv"], files["m.jws"].read_text(), checkpoints.public_jwks()
        )
    assert check.ok, check
    print(f"\nParcours tableau de bord → export vérifié : {pages} pages")
    assert pages <= DASHBOARD_TO_VERIFIED_EXPORT, page.visited[start:]
