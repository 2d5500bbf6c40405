"""The consumption tests use the audit tests' world: provider A with one API, two tokens and a
machine client; provider B with a foreign token."""

from __future__ import annotations

from tests.audit.conftest import usage_world  # noqa: F401 - the fixture, shared
