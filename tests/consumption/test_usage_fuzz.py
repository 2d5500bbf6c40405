"""POST /api/v1/usage fuzzed from the OpenAPI description (schemathesis): no 500, every
response as described."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance


def test_usage_conforms_to_its_description(app, usage_world):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [
        result.ok() for result in schema.get_all_operations() if result.ok().path == "/api/v1/usage"
    ]
    if not operations:
        pytest.fail("POST /api/v1/usage absent de la description OpenAPI")

    @given(case=operations[0].as_strategy())
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case):
        # A schema-valid batch may still be refused: a time in the future, several events
        # malformed together — rules a schema does not express; every other check applies.
        response = case.call_and_validate(
            headers=usage_world.headers, excluded_checks=[positive_data_acceptance]
        )
        assert response.status_code < 500

    check()


def test_the_described_bounds_are_the_enforced_ones(client, usage_world):
    """Each bound of a usage event in the description is where the server starts refusing:
    just inside is accepted, just outside is a 422 (and nothing of the batch is written)."""
    document = client.get("/api/v1/openapi.json").get_json()
    fields = document["components"]["schemas"]["UsageEvent"]["properties"]
    assert fields["latency_ms"]["minimum"] == 0
    limit = fields["latency_ms"]["exclusiveMaximum"]
    assert all("\\u0000" in fields[name]["pattern"] for name in ("id", "token", "endpoint"))
    base = {
        "token": usage_world.token.jti,
        "time": "2026-11-28T08:00:00Z",
        "endpoint": "/v1/revenus",
        "status": 200,
    }
    cases = [
        ({"latency_ms": limit - 1}, True),
        ({"latency_ms": limit - 0.5}, True),
        ({"latency_ms": limit}, False),
        ({"latency_ms": -1}, False),
        ({"status": fields["status"]["maximum"]}, True),
        ({"status": fields["status"]["maximum"] + 1}, False),
        ({"status": fields["status"]["minimum"] - 1}, False),
        ({"endpoint": "e" * fields["endpoint"]["maxLength"]}, True),
        ({"endpoint": "e" * (fields["endpoint"]["maxLength"] + 1)}, False),
        ({"endpoint": "/v1/\x00"}, False),
        ({"id": "i" * (fields["id"]["maxLength"] + 1)}, False),
        ({"caller_ip": "1" * (fields["caller_ip"]["maxLength"] + 1)}, False),
    ]
    for n, (change, accepted) in enumerate(cases):
        event = {"id": f"borne-{n}", **base, **change}
        response = client.post(
            "/api/v1/usage", json={"events": [event]}, headers=usage_world.headers
        )
        assert response.status_code == (200 if accepted else 422), (change, response.json)
