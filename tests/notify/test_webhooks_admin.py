"""The webhook administration pages: create (secret shown once), test ping, enable, replay;
scoped to the providers one manages."""

from __future__ import annotations

import re

import pytest

from datapass import clock
from datapass.extensions import db
from datapass.notify.models import WebhookDelivery, WebhookEndpoint
from tests import factories
from tests.notify.test_webhooks import Receiver
from tests.tokens.conftest import make_api, make_provider


@pytest.fixture
def receiver(app):
    app.config["WEBHOOK_ALLOW_PRIVATE"] = True
    box = Receiver()
    yield box
    box.close()
    app.config["WEBHOOK_ALLOW_PRIVATE"] = False


def test_admin_creates_pings_enables_and_replays(login_as, receiver):
    provider = make_provider()
    make_api(provider)
    admin = factories.user(roles=("admin",), mfa_enabled_at=clock.now())
    client = login_as(admin)
    assert client.get("/admin/webhooks/nouveau").status_code == 200
    bad = client.post(
        "/admin/webhooks/nouveau", data={"provider_id": provider.id, "url": "pas une url"}
    )
    assert bad.status_code == 422 and "URL complète" in bad.get_data(as_text=True)
    response = client.post(
        "/admin/webhooks/nouveau",
        data={"provider_id": provider.id, "url": receiver.url, "events": ["token.issued"]},
    )
    assert response.status_code == 201
    page = response.get_data(as_text=True)
    secret = re.search(r"(whsec_[A-Za-z0-9_\-]+)", page).group(1)
    endpoint = db.session.query(WebhookEndpoint).one()
    assert secret not in endpoint.secret_sealed
    assert secret not in client.get(f"/admin/webhooks/{endpoint.id}").get_data(as_text=True)
    # enabling before a successful ping is refused
    client.post(f"/admin/webhooks/{endpoint.id}/activer")
    assert endpoint.state == "draft"
    receiver.secret = secret
    client.post(f"/admin/webhooks/{endpoint.id}/test")
    assert endpoint.verified_at is not None
    client.post(f"/admin/webhooks/{endpoint.id}/activer")
    assert endpoint.state == "enabled"
    delivery = WebhookDelivery(
        endpoint_id=endpoint.id,
        delivery_id="00000000-0000-4000-8000-000000000001",
        event="token.issued",
        body="{}",
        created_at=clock.now(),
        status="failed",
        attempts=15,
        next_attempt_at=clock.now(),
    )
    db.session.add(delivery)
    db.session.flush()
    response = client.post(f"/admin/webhooks/{endpoint.id}/livraisons/{delivery.id}/rejouer")
    assert response.status_code == 302
    assert delivery.status == "pending"


def test_instructor_sees_only_own_providers(login_as):
    mine, theirs = make_provider(), make_provider()
    api = make_api(mine)
    make_api(theirs)
    from datapass.actor import Actor
    from datapass.notify import webhooks

    other, _ = webhooks.create_endpoint(theirs, "https://hooks.example.org/x", Actor.system("t"))
    instructor = factories.user(roles=("instructor",), api=api, mfa_enabled_at=clock.now())
    client = login_as(instructor)
    assert client.get(f"/admin/webhooks/{other.id}").status_code == 404
    page = client.get("/admin/webhooks/nouveau").get_data(as_text=True)
    assert mine.name in page and theirs.name not in page
    applicant = factories.user(organisation=factories.organisation())
    client = login_as(applicant)
    assert client.get("/admin/webhooks").status_code == 403
