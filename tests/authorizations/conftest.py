"""Fixtures of the authorizations tests: the seeded catalogue and the people around one
request (its applicant, an instructor of its API, outsiders)."""

from __future__ import annotations

import pytest

from datapass.extensions import db
from tests import factories


@pytest.fixture
def apis(app):
    return factories.catalogue()


@pytest.fixture
def api(apis):
    return apis["quotient-familial"]


@pytest.fixture
def instructor(api):
    return factories.staff("instructor", api=api, full_name="Inès Tructrice")


@pytest.fixture
def org():
    return factories.organisation("Commune de Villeneuve")


@pytest.fixture
def applicant(org):
    return factories.user(organisation=org, full_name="Alice Demandeuse")


def commit():
    """Test data must be committed (a savepoint released) before the app rolls back."""
    db.session.commit()


@pytest.fixture
def sign_in(login_as):
    """``login_as`` that also works for a second person in the same test: requests reuse the
    test's app context, where Flask-Login caches the first user in ``g``."""

    def do(user, **kwargs):
        from flask import g

        g.pop("_login_user", None)
        return login_as(user, **kwargs)

    return do
