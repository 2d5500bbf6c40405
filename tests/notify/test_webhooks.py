"""Webhooks to API providers, against a real local receiver that checks the signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from datapass import clock
from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.extensions import db
from datapass.notify import http as webhook_http
from datapass.notify import webhook_delivery, webhooks
from datapass.notify.models import OutboxMail, WebhookAttempt, WebhookDelivery
from datapass.tokens import issuance as token_issuance
from datapass.tokens import transitions as token_transitions
from tests import factories
from tests.tokens.conftest import make_api, make_habilitation, make_provider

ADMIN = Actor.system("test-admin")


class Receiver:
    """A provider's receiver on 127.0.0.1: verifies X-Hub-Signature-256 in constant time and
    records what it accepted. ``status`` decides its answer (500 = down for the app)."""

    def __init__(self):
        self.secret = None
        self.status = 200
        self.received: list[dict] = []
        self.rejected = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = (
                    "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                )
                signature = self.headers.get("X-Hub-Signature-256", "")
                if not hmac.compare_digest(expected, signature):
                    receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if receiver.status >= 300:
                    self.send_response(receiver.status)
                    self.end_headers()
                    self.wfile.write(b"indisponible")
                    return
                receiver.received.append(
                    {
                        "event": self.headers["X-Datapass-Event"],
                        "delivery": self.headers["X-Datapass-Delivery"],
                        "timestamp": self.headers["X-Datapass-Timestamp"],
                        "body": json.loads(body),
                    }
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhooks/datapass"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self, name=None):
        return [r for r in self.received if name is None or r["event"] == name]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(app):
    app.config["WEBHOOK_ALLOW_PRIVATE"] = True
    box = Receiver()
    yield box
    box.close()
    app.config["WEBHOOK_ALLOW_PRIVATE"] = False


@pytest.fixture
def endpoint(app, receiver):
    provider = make_provider()
    api = make_api(provider)
    endpoint, secret = webhooks.create_endpoint(provider, receiver.url, ADMIN)
    receiver.secret = secret
    assert webhooks.ping_endpoint(endpoint, ADMIN)["success"]
    webhooks.enable_endpoint(endpoint, ADMIN)
    endpoint.api = api
    return endpoint


def test_ping_must_succeed_before_enabling(app, receiver):
    provider = make_provider()
    endpoint, secret = webhooks.create_endpoint(provider, receiver.url, ADMIN)
    assert vars(endpoint).get("secret_sealed") != secret and secret not in endpoint.secret_sealed
    with pytest.raises(webhook_http.WebhookError):
        webhooks.enable_endpoint(endpoint, ADMIN)
    receiver.secret = "whsec_not-the-right-one"
    assert not webhooks.ping_endpoint(endpoint, ADMIN)["success"]  # receiver refuses signature
    assert receiver.rejected == 1
    receiver.secret = secret
    result = webhooks.ping_endpoint(endpoint, ADMIN)
    assert result["success"] and result["status_code"] == 204
    assert receiver.events("ping")[0]["body"]["event"] == "ping"
    webhooks.enable_endpoint(endpoint, ADMIN)
    assert endpoint.is_enabled
    tags = [e.tag for e in db.session.query(AuditEvent).order_by(AuditEvent.seq)]
    assert "notify:webhook:created" in tags and "notify:webhook:enabled" in tags
    assert all(secret not in e.payload for e in db.session.query(AuditEvent))


def test_events_are_delivered_once_signed(app, receiver, endpoint):
    habilitation = make_habilitation(endpoint.api)
    token, _ = token_issuance.issue_for_habilitation(habilitation, Actor.system("test"))
    counts = webhook_delivery.deliver_webhooks()
    assert counts["sent"] == 2
    assert [r["event"] for r in receiver.events() if r["event"] != "ping"] == [
        "habilitation.approved",
        "token.issued",
    ]
    issued = receiver.events("token.issued")[0]
    body = issued["body"]
    assert set(body) == {"event", "fired_at", "model_type", "model_id", "data"}
    assert body["model_type"] == "AccessToken" and body["model_id"] == str(token.id)
    assert body["data"]["jti"] == token.jti
    assert issued["timestamp"].isdigit() and len(issued["delivery"]) == 36
    # the token itself never travels
    assert token.sealed_value is None or "eyJ" not in json.dumps(body)
    # delivered once: a second run sends nothing
    assert webhook_delivery.deliver_webhooks()["sent"] == 0
    assert len(receiver.events("token.issued")) == 1


def test_receiver_down_then_up_nothing_lost(app, receiver, endpoint):
    habilitation = make_habilitation(endpoint.api)
    token, _ = token_issuance.issue_for_habilitation(habilitation, Actor.system("test"))
    officer = Actor.for_user(factories.user(roles=("security_officer",)))
    token_transitions.suspend(token, officer, "Enquête en cours")
    receiver.status = 503
    counts = webhook_delivery.deliver_webhooks()
    assert counts == {"sent": 0, "deferred": 3, "failed": 0}
    attempts = db.session.query(WebhookAttempt).all()
    assert len(attempts) == 3 and all(a.status_code == 503 for a in attempts)
    # deliberately changed (issue 10, point 6): nothing of the answer's body is kept
    assert all("indisponible" not in (a.error or "") for a in attempts)
    # not due yet: nothing is attempted before the backoff
    assert webhook_delivery.deliver_webhooks() == {"sent": 0, "deferred": 0, "failed": 0}
    receiver.status = 200
    clock.advance(timedelta(minutes=1))
    assert webhook_delivery.deliver_webhooks()["sent"] == 3
    assert [r["event"] for r in receiver.events() if r["event"] != "ping"] == [
        "habilitation.approved",
        "token.issued",
        "token.suspended",
    ]
    assert endpoint.consecutive_failures == 0


def test_backoff_is_exponential(app, receiver, endpoint):
    token_issuance.issue_for_habilitation(make_habilitation(endpoint.api), Actor.system("test"))
    receiver.status = 500
    app.config["WEBHOOK_MAX_FAILURES"] = 100
    try:
        waits = []
        for _ in range(4):
            webhook_delivery.deliver_webhooks()
            delivery = db.session.query(WebhookDelivery).order_by(WebhookDelivery.id).first()
            waits.append(delivery.next_attempt_at - clock.now())
            clock.set_frozen(delivery.next_attempt_at)
    finally:
        app.config["WEBHOOK_MAX_FAILURES"] = 5
    assert waits == [timedelta(minutes=m) for m in (1, 2, 4, 8)]


def test_failing_endpoint_is_disabled_and_developers_told(app, receiver, endpoint):
    receiver.status = 500
    for _ in range(5):
        token_issuance.issue_for_habilitation(make_habilitation(endpoint.api), Actor.system("test"))
    webhook_delivery.deliver_webhooks()
    assert endpoint.state == "disabled"
    assert "échecs consécutifs" in endpoint.disabled_reason
    mails = db.session.query(OutboxMail).filter_by(template="webhook_disabled").all()
    assert [m.recipient for m in mails] == [endpoint.provider.developer_emails]
    # while disabled, events are kept, not delivered
    token_issuance.issue_for_habilitation(make_habilitation(endpoint.api), Actor.system("test"))
    clock.advance(timedelta(hours=1))
    assert webhook_delivery.deliver_webhooks()["sent"] == 0
    receiver.status = 200
    webhooks.ping_endpoint(endpoint, ADMIN)
    webhooks.enable_endpoint(endpoint, ADMIN)
    sent = webhook_delivery.deliver_webhooks()["sent"]
    assert sent == db.session.query(WebhookDelivery).count() == 12


def test_replay(app, receiver, endpoint):
    token_issuance.issue_for_habilitation(make_habilitation(endpoint.api), Actor.system("test"))
    webhook_delivery.deliver_webhooks()
    delivery = db.session.query(WebhookDelivery).filter_by(event="token.issued").one()
    webhooks.replay_delivery(delivery, ADMIN)
    assert webhook_delivery.deliver_webhooks()["sent"] == 1
    replays = receiver.events("token.issued")
    assert len(replays) == 2 and replays[0]["delivery"] == replays[1]["delivery"]
    assert replays[0]["body"] == replays[1]["body"]
    assert len(delivery.attempt_log) == 2


def test_private_addresses_refused_in_production_like_config(app, receiver, endpoint):
    app.config["WEBHOOK_ALLOW_PRIVATE"] = False
    result = webhooks.ping_endpoint(endpoint, ADMIN)
    assert not result["success"] and "non publique" in result["error"]
