"""Browser pages that audit themselves: every page a browser test visits goes through axe-core
(any violation fails the test) and must fit the window at 320 px and 1,280 px."""

from __future__ import annotations

import pytest

from tests.browser.audit import AXE, AuditedPage, Auditor


@pytest.fixture(scope="session")
def auditor():
    if not AXE.exists():
        pytest.fail(f"axe-core absent ({AXE}) : lancez `make setup` (npm ci)")
    return Auditor()


@pytest.fixture
def new_page(chromium, live_server, auditor):
    """Open another audited page in its own browser context (another user)."""
    opened = []

    def open_page():
        context = chromium.new_context(base_url=live_server, locale="fr-FR")
        page = context.new_page()
        page.set_default_timeout(10_000)
        audited = AuditedPage(page, auditor)
        opened.append((context, audited))
        return audited

    yield open_page
    try:
        for _context, audited in opened:
            audited.wait_for_load_state("load")
            audited.audit_now()
        auditor.check()
    finally:
        for context, _audited in opened:
            context.close()


@pytest.fixture
def page(new_page):
    return new_page()
