"""The machine API fuzzed from its own OpenAPI 3.1 description (schemathesis): no 500, every
response matches the description; oversized bodies get 413, wrong content types 415."""

from __future__ import annotations

import base64

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from datapass.actor import Actor
from datapass.tokens import issuance


def _compact_jws(ctx, response):
    """The revocation list is a compact JWS: a string, as the description says."""
    content_type = (response.headers.get("content-type") or [""])[0]
    if not content_type.startswith("application/jwt"):
        return response.json()
    text = response.content.decode("ascii")
    if text.count(".") != 2:
        raise ValueError("not a compact JWS")
    return text


@pytest.fixture
def jws_deserializer():
    """Schemathesis counts application/jwt as JSON (JWT claims are JSON); the body is a
    compact JWS, so ours must be consulted first, and only during this test."""
    from schemathesis.core import deserialization

    registry = deserialization._DESERIALIZERS
    saved = dict(registry)
    registry.clear()
    registry["application/jwt"] = _compact_jws
    registry.update(saved)
    yield
    registry.clear()
    registry.update(saved)


TOKEN_OPERATIONS = {
    "/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server",
    "/api/v1/introspect",
    "/api/v1/revoke",
    "/api/v1/revocations",
    "/api/v1/leaks",
    "/api/v1/openapi.json",
}


def test_machine_api_conforms(app, world, jws_deserializer):
    """Every operation, its generated cases (bounded): no 500, responses as described."""
    issuance.issue_for_habilitation(world.habilitation, Actor.system("test"))
    auth = "Basic " + base64.b64encode(f"{world.client.client_id}:{world.secret}".encode()).decode()
    app.config["LEAKS_PER_MINUTE"] = 10_000
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    seen = []
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path not in TOKEN_OPERATIONS:
                continue  # other domains' operations (usage) are fuzzed by their own tests
            seen.append(operation.label)

            strategy = operation.as_strategy()
            if operation.method.upper() == "POST":
                # Invalid bodies too (a missing `token`…): refused with a 4xx, never a 200.
                strategy = strategy | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)

            @given(case=strategy)
            @settings(
                max_examples=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def check(case):
                # Public operations ignore it; machine ones get past authentication. A leak
                # report matching the pattern may still not be a JWS (its header must decode
                # to a JSON object: a rule the schema does not express), and gets a 422.
                excluded = [positive_data_acceptance] if case.path == "/api/v1/leaks" else []
                response = case.call_and_validate(
                    headers={"Authorization": auth}, excluded_checks=excluded
                )
                assert response.status_code < 500

            check()
    finally:
        app.config["LEAKS_PER_MINUTE"] = 20
    assert {
        "GET /.well-known/jwks.json",
        "GET /.well-known/oauth-authorization-server",
        "POST /api/v1/introspect",
        "POST /api/v1/revoke",
        "GET /api/v1/revocations",
        "POST /api/v1/leaks",
    } <= set(seen)


def test_openapi_document(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    assert {
        "/.well-known/jwks.json",
        "/api/v1/introspect",
        "/api/v1/revoke",
        "/api/v1/revocations",
        "/api/v1/leaks",
    } <= set(document["paths"])


@pytest.mark.parametrize("path", ["/api/v1/introspect", "/api/v1/revoke", "/api/v1/leaks"])
def test_oversized_and_wrong_content_type(client, world, path):
    auth = base64.b64encode(f"{world.client.client_id}:{world.secret}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}"}
    big = client.post(path, data={"token": "x" * 100_000}, headers=headers)
    assert big.status_code == 413
    assert big.mimetype == "application/problem+json"
    wrong = client.post(path, data=b"<token/>", content_type="application/xml", headers=headers)
    assert wrong.status_code == 415
    assert wrong.get_json()["title"]
