"""``/metrics``: restricted (a bearer token, or loopback only without one), computed at
scrape time, and no per-request hook on the machine API."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from datapass import create_app, scheduler
from datapass.actor import Actor
from datapass.notify import outbox
from datapass.operations import heartbeats, metrics, requestlog
from datapass.tokens import issuance
from tests.conftest import base_config
from tests.tokens.conftest import make_api, make_habilitation, make_provider

TOKEN = "metrics-token-0123456789abcdef"


def _samples(response) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_loopback_only_without_a_token(app, client):
    assert not app.config["METRICS_TOKEN"]
    response = client.get("/metrics")  # the test client calls from 127.0.0.1
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    for remote in ("10.1.2.3", "192.168.0.10", "2001:db8::1"):
        refused = client.get("/metrics", environ_base={"REMOTE_ADDR": remote})
        assert refused.status_code == 403
        assert "datapass_" not in refused.get_data(as_text=True)


@pytest.fixture
def with_token(app):
    app.config["METRICS_TOKEN"] = TOKEN
    yield app
    app.config["METRICS_TOKEN"] = ""


def test_bearer_token_when_configured(with_token, client):
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    assert client.get("/metrics", environ_base=remote).status_code == 401
    assert client.get("/metrics").status_code == 401  # loopback no longer enough
    wrong = {"Authorization": f"Bearer {TOKEN}x"}
    assert client.get("/metrics", headers=wrong, environ_base=remote).status_code == 401
    basic = {"Authorization": f"Basic {TOKEN}"}
    assert client.get("/metrics", headers=basic, environ_base=remote).status_code == 401
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/metrics", headers=right, environ_base=remote).status_code == 200


def test_values_are_computed_at_scrape_time(app, client):
    before = _samples(client.get("/metrics"))
    assert before[("datapass_consumption_buffered_calls", ())] == 0
    assert ("datapass_tokens", (("status", "active"),)) not in before
    habilitation = make_habilitation(make_api(make_provider()))
    issuance.issue_for_habilitation(habilitation, Actor.system("test"))
    outbox.queue_mail("agent@mairie.fr", "test_message", {"name": "Camille"})
    heartbeats.scheduler_alive(starting=True)
    job = next(j for j in scheduler.JOBS if j.name == "audit_checkpoint")
    scheduler.run_job(app, job)

    after = _samples(client.get("/metrics"))
    assert after[("datapass_tokens", (("status", "active"),))] == 1
    assert after[("datapass_authorization_requests", (("state", "validated"),))] >= 1
    assert after[("datapass_job_last_success", (("job", "audit_checkpoint"),))] == 1
    assert after[("datapass_job_last_start_age_seconds", (("job", "audit_checkpoint"),))] == 0
    assert ("datapass_job_last_duration_seconds", (("job", "audit_checkpoint"),)) in after
    assert after[("datapass_job_late", (("job", "deliver_mails"),))] == 0
    assert after[("datapass_scheduler_heartbeat_age_seconds", ())] == 0
    assert after[("datapass_audit_chain_length", ())] >= 1
    assert after[("datapass_audit_last_checkpoint_age_seconds", ())] == 0
    assert after[("datapass_audit_unsigned_events", ())] == 0
    assert after[("datapass_outbox_mails", (("status", "pending"),))] == 1
    assert ("datapass_webhook_deliveries", (("status", "pending"),)) not in after


def test_no_hook_is_added_per_request_in_text_mode(app):
    """Metrics are computed at scrape time and the text log adds nothing: no hook of
    operations runs on the machine API's requests."""
    hooks = [
        *app.before_request_funcs.get(None, []),
        *app.after_request_funcs.get(None, []),
        *app.teardown_request_funcs.get(None, []),
    ]
    assert not [f for f in hooks if f.__module__.startswith("datapass.operations")]
    assert metrics.registry() is metrics.registry()


def test_json_mode_adds_only_the_request_log_hooks():
    json_app = create_app(base_config("sqlite://", LOG_FORMAT="json"))
    hooks = [
        *json_app.before_request_funcs.get(None, []),
        *json_app.after_request_funcs.get(None, []),
    ]
    assert [f for f in hooks if f.__module__.startswith("datapass.operations")] == [
        requestlog._started,
        requestlog._finished,
    ]
