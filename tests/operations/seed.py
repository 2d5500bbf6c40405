"""What an approval needs, seeded in its own process against the production database of
``test_production.py`` (``python -m tests.operations.seed``): the catalogue, an organisation
and its applicant with a password, an instructor of the API with TOTP on, and a complete draft
request. Prints them as JSON (addresses, passwords, the instructor's TOTP secret, the
request's id): the test then acts through HTTP only."""

from __future__ import annotations

import json

from datapass import create_app
from datapass.extensions import db
from tests import factories

API = "quotient-familial"
APPLICANT = "demandeur@mairie-dunkerque.example.fr"
INSTRUCTOR = "instructeur@dinum.example.fr"
PASSWORD = "Mot-de-passe-Production-2026"


def seed() -> dict:
    apis = factories.catalogue()
    api = apis[API]
    organisation = factories.organisation("Commune de Dunkerque")
    applicant = factories.user(APPLICANT, password=PASSWORD, organisation=organisation)
    instructor = factories.user(INSTRUCTOR, password=PASSWORD, roles=("instructor",), api=api)
    totp_secret = factories.enable_totp(instructor)
    request = factories.filled_request(api, organisation, applicant)
    db.session.commit()
    return {
        "applicant": APPLICANT,
        "instructor": INSTRUCTOR,
        "password": PASSWORD,
        "instructor_totp_secret": totp_secret,
        "request_id": request.id,
        "api_id": api.id,
    }


def main() -> None:
    app = create_app()  # the production settings of the environment
    with app.app_context():
        print(json.dumps(seed()))


if __name__ == "__main__":
    main()
