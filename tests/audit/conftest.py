"""Builders for the audit tests: providers with their APIs, machine clients and issued
tokens (the token builders are the tokens tests' own)."""

from __future__ import annotations

import base64

import pytest

from datapass.actor import Actor
from tests.tokens.conftest import make_api, make_client, make_habilitation, make_provider


def issue_token(api, organisation=None):
    from datapass.tokens import issuance as token_issuance

    habilitation = make_habilitation(api, organisation=organisation)
    token, raw = token_issuance.issue_for_habilitation(habilitation, Actor.system("tests"))
    return token, raw


def basic(client_id: str, secret: str) -> dict[str, str]:
    value = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


class World:
    """Provider A (our caller) with one API, two tokens; provider B with a foreign token."""


@pytest.fixture
def usage_world(app):
    w = World()
    w.provider = make_provider("Fournisseur A")
    w.api = make_api(w.provider)
    w.client, w.secret = make_client(w.provider)
    w.headers = basic(w.client.client_id, w.secret)
    w.token, w.raw = issue_token(w.api)
    w.token2, w.raw2 = issue_token(w.api)
    w.other_provider = make_provider("Fournisseur B")
    w.other_api = make_api(w.other_provider)
    w.foreign, w.foreign_raw = issue_token(w.other_api)
    return w
