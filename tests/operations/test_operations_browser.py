"""The scheduled jobs' page in a real browser (axe-core and the two widths, through the
audited page), reached from the administrator's menu."""

from __future__ import annotations

from datetime import timedelta

import pytest

from datapass import scheduler
from datapass.extensions import db
from datapass.operations import heartbeats
from tests import factories
from tests.browser.steps import sign_in

pytestmark = pytest.mark.browser


def test_admin_sees_the_jobs_and_which_is_late(page, committed_app, frozen_clock):
    with committed_app.app_context():
        admin = factories.user(roles=("admin",), is_demo=True)  # demo staff: no TOTP here
        db.session.commit()
        email = admin.email
        heartbeats.scheduler_alive(starting=True)
        scheduler.run_job(
            committed_app, next(j for j in scheduler.JOBS if j.name == "audit_checkpoint")
        )
        frozen_clock.advance(timedelta(minutes=3))
        heartbeats.scheduler_alive()

    sign_in(page, email)
    page.get_by_role("link", name="Tâches planifiées").first.click()
    page.wait_for_url("**/admin/taches")
    assert page.locator("h1").inner_text() == "Tâches planifiées"
    assert "Planificateur en vie" in page.locator("#etat-planificateur").inner_text()
    checkpoint = page.locator("#tache-audit_checkpoint").inner_text().lower()  # badges: capitals
    assert "réussie" in checkpoint and "en retard" in checkpoint  # 3 minutes, every minute
    lifecycle = page.locator("#tache-token_lifecycle").inner_text().lower()
    assert "jamais exécutée" in lifecycle and "à l'heure" in lifecycle
    assert page.locator("#taches tbody tr").count() == len(scheduler.JOBS)
