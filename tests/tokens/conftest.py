"""Builders for the token tests: a provider with its API and machine client, and an approved
habilitation of an organisation (through the real models)."""

from __future__ import annotations

import itertools

import pytest

from datapass import clock
from datapass.extensions import db
from tests import factories

_n = itertools.count(1)


def make_provider(name: str | None = None):
    from datapass.catalogue.models import Provider

    n = next(_n)
    provider = Provider(
        slug=f"fournisseur-{n}",
        name=name or f"Fournisseur {n}",
        contact_email=f"contact{n}@fournisseur.gouv.fr",
        developer_emails=f"dev{n}@fournisseur.gouv.fr",
        created_at=clock.now(),
    )
    db.session.add(provider)
    db.session.flush()
    return provider


def make_api(provider=None, **fields):
    from datapass.catalogue.models import Api

    provider = provider or make_provider()
    n = next(_n)
    api = Api(
        provider=provider,
        slug=fields.pop("slug", f"api-{n}"),
        name=fields.pop("name", f"API numéro {n}"),
        audience=fields.pop("audience", f"https://api{n}.example.gouv.fr"),
        fallback_procedure=fields.pop("fallback_procedure", "Appeler le service au 01 02 03."),
        created_at=clock.now(),
        **fields,
    )
    db.session.add(api)
    db.session.flush()
    return api


def make_client(provider):
    from datapass.catalogue import clients as catalogue_clients

    return catalogue_clients.create_client(provider, "Passerelle")


def make_habilitation(api=None, organisation=None, requester=None, scopes=("revenus",)):
    from datapass.authorizations.models import AuthorizationRequest, Habilitation

    api = api or make_api()
    organisation = organisation or factories.organisation()
    requester = requester or factories.user(organisation=organisation)
    now = clock.now()
    request = AuthorizationRequest(
        organisation_id=organisation.id,
        api_id=api.id,
        requester_id=requester.id,
        state="validated",
        created_at=now,
        updated_at=now,
        state_changed_at=now,
        scopes=list(scopes),
    )
    db.session.add(request)
    db.session.flush()
    contacts = {
        "technical": {"name": "Tech", "email": f"tech{request.id}@mairie.fr"},
        "controller": {"name": "RT", "email": f"rt{request.id}@mairie.fr"},
    }
    habilitation = Habilitation(
        request_id=request.id,
        organisation_id=organisation.id,
        api_id=api.id,
        requester_id=requester.id,
        scopes=list(scopes),
        status="active",
        snapshot={"title": "Calcul du quotient familial", "contacts": contacts},
        created_at=now,
    )
    db.session.add(habilitation)
    db.session.flush()
    return habilitation


@pytest.fixture
def world(app):
    """A provider with an API and a machine client, a habilitation of an organisation."""
    provider = make_provider()
    api = make_api(provider)
    client, secret = make_client(provider)
    habilitation = make_habilitation(api)

    class World:
        pass

    w = World()
    w.provider, w.api, w.client, w.secret = provider, api, client, secret
    w.habilitation = habilitation
    w.organisation = habilitation.organisation
    w.requester = habilitation.requester
    return w
