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
