"""Deliveries under faults (issue 10, points 3–6): webhooks never follow a redirect nor
reconnect to another address than the one checked, and show nothing of what a refused or
redirected answer said; mails survive crashes and outages without repeating by the batch."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest

from datapass import clock
from datapass.audit.service import Actor
from datapass.extensions import db
from datapass.notify import service as notify
from datapass.notify.models import EndpointState, WebhookAttempt, WebhookDelivery
from tests import factories
from tests.reliability.peers import HttpPeer
from tests.tokens.conftest import make_api, make_provider

ADMIN = Actor.system("test-admin")
INTERNAL = b"SECRET-INTERNE ami-id i-0123456789"


@pytest.fixture(scope="module")
def receiver():
    peer = HttpPeer()
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def internal():
    """What a redirect would reach: an internal service on another loopback port."""
    peer = HttpPeer(body=INTERNAL)
    peer.status = 200
    yield peer
    peer.close()


@pytest.fixture
def webhook_app(app, receiver, internal):
    receiver.reset()
    internal.reset()
    internal.status = 200
    app.config["WEBHOOK_ALLOW_PRIVATE"] = True  # loopback only
    yield app
    app.config["WEBHOOK_ALLOW_PRIVATE"] = False


def _endpoint(url: str):
    provider = make_provider()
    api = make_api(provider)
    endpoint, _ = notify.create_endpoint(provider, url, ADMIN)
    endpoint.state = EndpointState.ENABLED
    endpoint.verified_at = clock.now()
    db.session.flush()
    return endpoint, api


def _queue_one(api) -> WebhookDelivery:
    notify.queue_webhook_for_api(api.id, "token.revoked", {"jti": "x"})
    return db.session.query(WebhookDelivery).order_by(WebhookDelivery.id.desc()).first()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(webhook_app, receiver, internal, status):
    endpoint, api = _endpoint(receiver.url)
    receiver.status, receiver.body = status, b"<html>moved</html>"
    receiver.location = f"http://127.0.0.1:{internal.port}/latest/meta-data/"
    delivery = _queue_one(api)
    counts = notify.deliver_webhooks()
    assert counts == {"sent": 0, "deferred": 1, "failed": 0}
    assert len(receiver.requests) == 1 and internal.requests == []  # not followed
    assert delivery.status == "pending" and delivery.last_status_code == status
    assert "redirection refusée" in delivery.last_error
    attempt = db.session.query(WebhookAttempt).filter_by(delivery_id=delivery.id).one()
    assert not attempt.success and attempt.response_excerpt is None


def test_redirect_to_metadata_address_shows_nothing(webhook_app, receiver, internal, login_as):
    endpoint, api = _endpoint(receiver.url)
    receiver.status, receiver.body = 302, INTERNAL
    receiver.location = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    _queue_one(api)
    notify.deliver_webhooks()
    result = notify.ping_endpoint(endpoint, ADMIN)
    assert not result["success"] and result["status_code"] == 302
    admin = factories.user(roles=("admin",), mfa_enabled_at=clock.now())
    page = login_as(admin).get(f"/admin/webhooks/{endpoint.id}").get_data(as_text=True)
    assert "redirection refusée" in page
    assert "SECRET-INTERNE" not in page and "169.254" not in page and "moved" not in page
    # an error answer's body is not shown either
    receiver.status, receiver.location = 500, None
    clock.advance(timedelta(hours=1))
    notify.deliver_webhooks()
    page = login_as(admin).get(f"/admin/webhooks/{endpoint.id}").get_data(as_text=True)
    assert "SECRET-INTERNE" not in page


def test_connects_to_the_checked_address_dns_rebinding(webhook_app, receiver, monkeypatch):
    """The name is resolved once; a second resolution (rebinding to the metadata address)
    would be refused, and the connection goes to the address that was checked."""
    real = socket.getaddrinfo
    calls = []

    def rebinding(host, port, *args, **kwargs):
        if host == "hooks.fournisseur.test":
            calls.append(host)
            address = "127.0.0.1" if len(calls) == 1 else "169.254.169.254"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    endpoint, api = _endpoint(f"http://hooks.fournisseur.test:{receiver.port}/webhooks")
    _queue_one(api)
    assert notify.deliver_webhooks()["sent"] == 1
    assert calls == ["hooks.fournisseur.test"]
    (request,) = receiver.requests
    assert request["headers"]["Host"] == f"hooks.fournisseur.test:{receiver.port}"
    assert request["path"] == "/webhooks"


def test_every_resolved_address_is_checked(webhook_app, receiver, monkeypatch):
    real = socket.getaddrinfo

    def mixed(host, port, *args, **kwargs):
        if host == "hooks.fournisseur.test":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", mixed)
    endpoint, api = _endpoint(f"http://hooks.fournisseur.test:{receiver.port}/webhooks")
    delivery = _queue_one(api)
    assert notify.deliver_webhooks()["deferred"] == 1
    assert "non publique" in delivery.last_error and "10.0.0.7" in delivery.last_error
    assert receiver.requests == []


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "10.1.2.3", "192.168.1.1", "100.64.0.1", "::ffff:10.0.0.1"]
)
def test_allow_private_lets_only_loopback_through(webhook_app, address):
    endpoint, _ = _endpoint(f"http://[{address}]/x" if ":" in address else f"http://{address}/x")
    result = notify.ping_endpoint(endpoint, ADMIN)
    assert not result["success"] and "non publique" in result["error"]


def test_reenabling_needs_a_ping_newer_than_the_disabling(webhook_app, receiver):
    endpoint, _ = _endpoint(receiver.url)
    assert notify.ping_endpoint(endpoint, ADMIN)["success"]
    clock.advance(timedelta(minutes=5))
    notify.disable_endpoint(endpoint, ADMIN, "5 échecs consécutifs")
    assert not endpoint.can_enable
    with pytest.raises(notify.WebhookError, match="depuis la désactivation"):
        notify.enable_endpoint(endpoint, ADMIN)
    assert endpoint.state == EndpointState.DISABLED
    receiver.status = 500
    clock.advance(timedelta(minutes=5))
    assert not notify.ping_endpoint(endpoint, ADMIN)["success"]
    assert not endpoint.can_enable
    receiver.status = 204
    assert notify.ping_endpoint(endpoint, ADMIN)["success"]
    assert endpoint.can_enable
    notify.enable_endpoint(endpoint, ADMIN)
    assert endpoint.state == EndpointState.ENABLED
