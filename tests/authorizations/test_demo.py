"""The demo data of this domain: the catalogue, requests in every state with a validated
habilitation, a provider's machine client whose secret works; ``--scale N`` adds N requests
by bulk insert. Running it again adds nothing."""

from __future__ import annotations

from sqlalchemy import func, select

from datapass import demo
from datapass.authorizations.models import AuthorizationRequest, Habilitation
from datapass.catalogue import apis as catalogue_apis
from datapass.catalogue import clients as catalogue_clients
from datapass.catalogue.models import MachineClient
from datapass.demo import authorizations as demo_authorizations
from datapass.demo.accounts import seed_accounts
from datapass.extensions import db


def _states() -> dict[str, int]:
    return dict(
        db.session.execute(
            select(AuthorizationRequest.state, func.count()).group_by(AuthorizationRequest.state)
        ).all()
    )


def test_demo(app):
    result = demo.run_demo()
    assert set(_states()) == {
        "draft",
        "submitted",
        "changes_requested",
        "validated",
        "refused",
        "archived",
        "revoked",
    }
    client = result["provider_client"]
    machine = catalogue_clients.authenticate_client(client["client_id"], client["client_secret"])
    assert machine is not None and client["api"] == "quotient-familial"
    habilitation = db.session.get(Habilitation, result["habilitation"]["id"])
    assert habilitation.is_active and habilitation.api.provider_id == machine.provider_id
    instructor = seed_accounts()["instructor"]
    assert {
        a.slug for a in catalogue_apis.list_apis() if a.id in instructor.instructed_api_ids()
    } >= set(demo_authorizations.API_PARTICULIER)
    again = demo.run_demo()
    assert sum(_states().values()) == 7
    # The same client and secret each run (derived from the master key): nothing added.
    assert again["provider_client"] == client
    assert catalogue_clients.authenticate_client(client["client_id"], client["client_secret"])
    clients = select(func.count()).select_from(MachineClient)
    assert db.session.scalar(clients) == 1


def test_scale(app):
    demo.run_demo(scale=60)
    scaled = db.session.scalar(
        select(func.count())
        .select_from(AuthorizationRequest)
        .where(AuthorizationRequest.title.like("Demande d'échelle%"))
    )
    assert scaled == 60
    states = _states()
    assert states["submitted"] >= 18 and states["validated"] >= 12
    habilitations = db.session.scalar(
        select(func.count()).select_from(Habilitation).where(Habilitation.status == "active")
    )
    assert habilitations == states["validated"]  # every validated request has its habilitation
    demo.run_demo(scale=60)
    assert sum(_states().values()) == sum(states.values())  # idempotent
