"""The consumption pages: an API's volume and top consumers for its instructors, a token's
CSV for who may see the token."""

from __future__ import annotations

from datapass.consumption import ingest
from tests import factories


def _staff(*roles, **kwargs):
    person = factories.user(roles=roles, **kwargs)
    factories.enable_totp(person)  # staff must have a second factor
    return person


def _client_for(app, person):
    from flask import g

    from tests.conftest import login

    # requests share the test's app context, where Flask-Login keeps the current user
    g.pop("_login_user", None)
    client = app.test_client()
    login(client, person)
    return client


def test_provider_instructors_see_their_api_consumption(client, login_as, app, usage_world):
    w = usage_world
    ingest.ingest_usage(
        w.provider.id,
        [
            {
                "id": f"e{i}",
                "token": w.token.jti,
                "time": "2026-11-28T08:00:00Z",
                "endpoint": "/v2/x",
                "status": 200 if i else 503,
            }
            for i in range(4)
        ],
    )
    login_as(_staff("instructor", api=w.api))
    page = client.get("/audit/consommation?jours=7").get_data(as_text=True)
    assert w.token.jti in page and w.token.organisation.name in page
    assert 'data-calls="4"' in page
    csv_text = client.get("/audit/consommation.csv?jours=7").get_data(as_text=True)
    assert csv_text.splitlines()[1].startswith("2026-11-28,") and ",4,1," in csv_text
    # another provider's instructor sees nothing of it
    client = _client_for(app, _staff("instructor", api=w.other_api))
    other = client.get("/audit/consommation").get_data(as_text=True)
    assert w.token.jti not in other
    foreign = client.get(f"/audit/consommation.csv?api={w.api.id}").get_data(as_text=True)
    assert ",4," not in foreign


def test_token_consumption_csv_is_scoped(client, login_as, app, usage_world):
    w = usage_world
    login_as(w.token.habilitation.requester)
    assert client.get(f"/audit/jetons/{w.token.id}/consommation.csv").status_code == 200
    stranger = _client_for(app, factories.user(organisation=factories.organisation()))
    assert stranger.get(f"/audit/jetons/{w.token.id}/consommation.csv").status_code == 404
