"""The request journey in a real browser: an applicant fills the form over several visits
and submits; the instructor requests changes; the applicant fixes and resubmits; the
instructor approves; the timeline shows it all; the mails reach a local SMTP server."""

from __future__ import annotations

import socket
from email import message_from_bytes, policy

import pytest

from datapass.extensions import db
from tests import factories
from tests.browser.steps import sign_in, sign_out

pytestmark = pytest.mark.browser


class Inbox:
    """An aiosmtpd handler keeping every message it receives."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.rcpt_tos, message))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[str]:
        return [str(m["Subject"]) for rcpts, m in self.messages if address in rcpts]


@pytest.fixture
def smtp(committed_app):
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    saved = {k: committed_app.config[k] for k in ("MAIL_BACKEND", "SMTP_HOST", "SMTP_PORT")}
    committed_app.config.update(MAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=port)
    try:
        yield inbox
    finally:
        committed_app.config.update(saved)
        controller.stop()


def _continue(page) -> None:
    page.get_by_role("button", name="Enregistrer et continuer").click()


def test_request_journey(page, new_page, committed_app, smtp):
    with committed_app.app_context():
        apis = factories.catalogue()
        api = apis["quotient-familial"]
        organisation = factories.organisation("Commune de Villeneuve-d'Ascq")
        applicant = factories.user(organisation=organisation, full_name="Alice Demandeuse")
        # A demo staff account skips TOTP outside production (DEMO_SKIP_MFA).
        instructor = factories.user(
            roles=("instructor",), api=api, full_name="Inès Tructrice", is_demo=True
        )
        db.session.commit()
        api_id, applicant_email, instructor_email = api.id, applicant.email, instructor.email

    # --- first visit: the project and the data, then the applicant leaves -------------------
    sign_in(page, applicant_email)
    page.goto("/demandes/nouvelle")
    page.locator(f"label[for='api-{api_id}']").click()
    page.get_by_role("button", name="Commencer la demande").click()
    page.fill("#title", "Tarification sociale de la cantine")
    page.fill("#description", "Le portail famille calcule le tarif de la cantine.")
    page.fill("#purpose", "Appliquer le tarif correspondant au quotient familial.")
    _continue(page)
    page.locator("label[for='scope-quotient_familial']").click()
    page.locator("label[for='scope-enfants']").click()
    _continue(page)
    assert "Brouillon enregistré" in page.content()
    sign_out(page, home=False)

    # --- second visit: the draft is where it was left ---------------------------------------
    sign_in(page, applicant_email)
    page.goto("/demandes")
    page.get_by_role("link", name="DP-").first.click()
    assert "Tarification sociale de la cantine" in page.content()
    page.get_by_role("link", name="Modifier la demande").click()
    page.get_by_role("link", name="3. Le cadre juridique").click()
    page.fill("#legal_basis_name", "Délibération du conseil municipal du 12 mars 2026")
    page.fill("#legal_basis_url", "https://www.villeneuvedascq.fr/deliberations/2026-03-12")
    _continue(page)
    for role in ("controller", "dpo", "technical", "business"):
        page.fill(f"#{role}_name", f"{role.title()} Martin")
        page.fill(f"#{role}_email", f"{role}@villeneuvedascq.fr")
        page.fill(f"#{role}_phone", "03 20 43 50 50")
    _continue(page)
    page.fill("#retention_months", "12")
    page.fill("#daily_volume", "400")
    _continue(page)
    page.fill("#homologation_date", "2026-01-15")
    page.fill("#homologation_authority", "Le maire, autorité d'homologation")
    page.set_input_files(
        "#homologation_document",
        files=[
            {"name": "homologation.pdf", "mimeType": "application/pdf", "buffer": factories.PDF}
        ],
    )
    _continue(page)
    page.locator("label[for='terms']").click()
    _continue(page)
    page.locator("#soumettre").click()
    assert "Votre demande a été soumise" in page.content()
    request_url = page.url
    sign_out(page, home=False)

    # --- the instructor asks for a change ---------------------------------------------------
    staff = new_page()
    sign_in(staff, instructor_email)
    staff.goto("/instruction")
    staff.get_by_role("link", name="DP-").first.click()
    assert "homologation.pdf" in staff.content()
    staff.fill("#text-request_changes", "Une conservation de 24 mois est attendue.")
    staff.locator("#action-request_changes").click()
    assert "Les modifications ont été demandées" in staff.content()

    # --- the applicant fixes and resubmits --------------------------------------------------
    sign_in(page, applicant_email)
    page.goto(request_url)
    assert "Modifications demandées" in page.content()
    assert "Une conservation de 24 mois est attendue." in page.content()
    page.get_by_role("link", name="Modifier la demande").click()
    page.get_by_role("link", name="5. Conservation et volumétrie").click()
    page.fill("#retention_months", "24")
    page.get_by_role("button", name="Enregistrer et voir le récapitulatif").click()
    page.locator("#soumettre").click()
    assert "Votre demande a été soumise" in page.content()

    # --- the instructor approves ------------------------------------------------------------
    staff.goto(request_url)
    staff.fill("#text-approve", "Merci pour ces précisions.")
    staff.locator("#action-approve").click()
    assert "La demande est validée" in staff.content()

    # --- the timeline tells the whole story -------------------------------------------------
    page.goto(request_url)
    timeline = page.locator("#historique").inner_text()
    for step in (
        "Demande créée",
        "Demande soumise",
        "Modifications demandées",
        "Motif : Une conservation de 24 mois est attendue.",
        "Demande soumise à nouveau",
        "1 champ modifié depuis la soumission précédente",
        "Demande validée",
        "Note : Merci pour ces précisions.",
    ):
        assert step in timeline, step
    page.locator("#historique details summary").first.click()
    assert "Durée de conservation (mois)" in page.locator("#historique").inner_text()
    assert "Habilitation en vigueur" in page.content()

    # --- the mails reach the SMTP server ----------------------------------------------------
    from datapass.notify import mail as mail_delivery

    with committed_app.app_context():
        while mail_delivery.deliver_due()["sent"]:
            pass
    subjects = smtp.to(applicant_email)
    assert subjects[0].startswith("Accusé de réception de votre demande DP-")
    assert any(s.startswith("Modifications demandées") for s in subjects)
    assert any("à nouveau soumise" in s for s in subjects)
    assert subjects[-1].endswith("est validée")
    instructor_subjects = smtp.to(instructor_email)
    assert len(instructor_subjects) == 2
    assert all(s.startswith("Nouvelle demande à instruire") for s in instructor_subjects)
    (new_request,) = [m for r, m in smtp.messages if instructor_email in r][:1]
    assert new_request["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert smtp.to("controller@villeneuvedascq.fr") and smtp.to("dpo@villeneuvedascq.fr")
    body = [m for r, m in smtp.messages if applicant_email in r][0]
    assert "deux mois" in body.get_body(("plain",)).get_content()
