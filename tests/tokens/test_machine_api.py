"""The machine API: introspection (RFC 7662), revocation (RFC 7009), the signed revocation
list, leak reports."""

from __future__ import annotations

import base64
from datetime import timedelta

import jwt
import pytest

from datapass import clock
from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.extensions import db
from datapass.lifecycle.sweep import sweep_tokens
from datapass.notify.models import OutboxMail
from datapass.tokens import issuance, transitions
from datapass.tokens.models import AccessToken
from tests import factories
from tests.tokens.conftest import make_api, make_client, make_habilitation, make_provider

SYSTEM = Actor.system("test")


def basic(client_id: str, secret: str) -> dict:
    value = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def introspect(client, world, raw, *, auth=None):
    return client.post(
        "/api/v1/introspect",
        data={"token": raw} if raw is not None else {},
        headers=auth or basic(world.client.client_id, world.secret),
    )


def issue(world, habilitation=None):
    return issuance.issue_for_habilitation(habilitation or world.habilitation, SYSTEM)


def test_active_token(client, world):
    token, raw = issue(world)
    response = introspect(client, world, raw)
    assert response.status_code == 200
    body = response.get_json()
    assert body["active"] is True
    assert body["token_type"] == "Bearer"
    for claim in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti"):
        assert body[claim] == token.claims[claim]
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("act", ["revoke", "suspend"])
def test_revoked_and_suspended_are_inactive(client, world, act):
    token, raw = issue(world)
    instructor = factories.user(roles=("instructor",), api=world.api)
    getattr(transitions, act)(token, Actor.for_user(instructor), "Usage contraire aux CGU")
    assert introspect(client, world, raw).get_json() == {"active": False}


def test_reactivated_is_active_again(client, world):
    token, raw = issue(world)
    officer = factories.user(roles=("security_officer",))
    transitions.suspend(token, Actor.for_user(officer), "Enquête en cours")
    transitions.reactivate(token, Actor.for_user(officer), "Enquête close")
    assert introspect(client, world, raw).get_json()["active"] is True


def test_expired_is_inactive(client, world):
    token, raw = issue(world)
    clock.set_frozen(token.expires_at - timedelta(seconds=1))
    assert introspect(client, world, raw).get_json()["active"] is True
    clock.set_frozen(token.expires_at)
    assert introspect(client, world, raw).get_json() == {"active": False}
    sweep_tokens()  # the lifecycle job expires it, once
    assert token.status == "expired"


def test_superseded_within_and_after_grace(client, world):
    token, raw = issue(world)
    new, new_raw = issuance.rotate(token, Actor.for_user(world.requester), 3)
    assert token.status == "superseded"
    assert introspect(client, world, raw).get_json()["active"] is True
    assert introspect(client, world, new_raw).get_json()["active"] is True
    assert new.expires_at == token.expires_at  # rotating never postpones renewal
    clock.advance(timedelta(days=3))
    assert introspect(client, world, raw).get_json() == {"active": False}
    sweep_tokens()  # the lifecycle job ends the grace period
    assert token.status == "revoked"
    assert introspect(client, world, new_raw).get_json()["active"] is True


def test_rotation_without_grace_revokes_at_once(client, world):
    token, raw = issue(world)
    issuance.rotate(token, Actor.for_user(world.requester), 0)
    assert token.status == "revoked"
    assert introspect(client, world, raw).get_json() == {"active": False}


def test_foreign_token_is_inactive(client, world):
    other_api = make_api(make_provider())
    _, raw = issue(world, make_habilitation(other_api))
    assert introspect(client, world, raw).get_json() == {"active": False}


@pytest.mark.parametrize(
    "raw", ["abc", "a.b.c", "x" * 5000, "eyJhbGciOiJub25lIn0.e30.", "é.é.é", " "]
)
def test_malformed_is_inactive(client, world, raw):
    response = introspect(client, world, raw)
    assert response.status_code == 200
    assert response.get_json() == {"active": False}


@pytest.mark.parametrize("path", ["/api/v1/introspect", "/api/v1/revoke"])
@pytest.mark.parametrize("raw", ["", None])
def test_missing_token_is_invalid_request(client, world, path, raw):
    """RFC 7662 §2.1 and RFC 7009 §2.1: `token` is required; RFC 6749 §5.2 names the error.
    (Was 200 {"active": false} before issue 10.)"""
    response = client.post(
        path,
        data={"token": raw} if raw is not None else {},
        headers=basic(world.client.client_id, world.secret),
    )
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["error"] == "invalid_request"
    assert "token" in body["errors"]


def test_wrong_client_secret_is_401(client, world):
    _, raw = issue(world)
    response = introspect(client, world, raw, auth=basic(world.client.client_id, "dps_faux"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["error"] == "invalid_client"  # RFC 6749 §5.2
    for path in ("/api/v1/introspect", "/api/v1/revoke", "/api/v1/usage"):
        anonymous = client.post(path, data={"token": raw})
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
        assert anonymous.get_json()["error"] == "invalid_client"


def test_wrong_content_type_is_415_and_oversized_is_413(client, world):
    _, raw = issue(world)
    headers = basic(world.client.client_id, world.secret)
    response = client.post("/api/v1/introspect", json={"token": raw}, headers=headers)
    assert response.status_code == 415
    assert response.get_json()["status"] == 415
    response = client.post("/api/v1/introspect", data={"token": "x" * 20000}, headers=headers)
    assert response.status_code == 413


def test_a_content_length_of_non_ascii_digits_is_not_a_crash(client, world):
    # "²" and "٣" are digits to str.isdigit(), not to int(): the length is unreadable, so the
    # body is read up to the limit, as for a chunked body.
    _, raw = issue(world)
    headers = basic(world.client.client_id, world.secret)
    for length in ("²", "٣"):
        response = client.post(
            "/api/v1/introspect",
            data={"token": raw},
            headers=headers,
            environ_overrides={"CONTENT_LENGTH": length},
        )
        assert response.status_code < 500, length


def test_use_is_written_at_most_once_a_minute(client, world):
    token, raw = issue(world)
    assert token.last_used_at is None
    introspect(client, world, raw)
    db.session.expire_all()
    first = db.session.get(AccessToken, token.id).last_used_at
    assert first == clock.now()
    clock.advance(timedelta(seconds=30))
    introspect(client, world, raw)
    db.session.expire_all()
    assert db.session.get(AccessToken, token.id).last_used_at == first
    clock.advance(timedelta(seconds=31))
    introspect(client, world, raw)
    db.session.expire_all()
    row = db.session.get(AccessToken, token.id)
    assert row.last_used_at == clock.now()
    assert row.last_used_ip == "127.0.0.1"


def test_every_introspection_counts_as_consumption(client, world):
    from sqlalchemy import func, select

    from datapass.consumption import flush
    from datapass.consumption.models import UsageDaily

    flush.flush_usage()  # start from an empty buffer
    token, raw = issue(world)
    for _ in range(3):
        introspect(client, world, raw)  # the first call writes, the next two are buffered
    clock.advance(timedelta(seconds=61))
    introspect(client, world, raw)  # a minute later: the buffer goes out
    calls = db.session.scalar(
        select(func.sum(UsageDaily.calls)).where(
            UsageDaily.token_id == token.id, UsageDaily.endpoint == "introspect"
        )
    )
    assert calls == 4


def test_a_full_call_buffer_goes_out_at_once(client, world, monkeypatch):
    """A busy token does not keep a minute of calls in memory: the buffer is written once
    it holds MAX_BUFFERED_CALLS calls, into the counts and the last calls (no event row
    per introspection)."""
    from sqlalchemy import func, select

    from datapass.consumption import flush
    from datapass.consumption.models import UsageDaily, UsageEvent, UsageRecent
    from datapass.tokens import uses

    flush.flush_usage()
    monkeypatch.setattr(uses, "MAX_BUFFERED_CALLS", 3)
    token, raw = issue(world)

    def counted():
        return db.session.scalar(
            select(func.coalesce(func.sum(UsageDaily.calls), 0)).where(
                UsageDaily.token_id == token.id
            )
        )

    introspect(client, world, raw)  # the first call writes
    assert counted() == 1
    introspect(client, world, raw)
    introspect(client, world, raw)
    assert counted() == 1  # buffered: two calls, same second
    introspect(client, world, raw)  # the third buffered call fills it
    assert counted() == 4
    recent = db.session.scalars(
        select(UsageRecent.endpoint).where(UsageRecent.token_id == token.id)
    ).all()
    assert recent == ["introspect"] * 4
    assert db.session.scalar(select(func.count()).select_from(UsageEvent)) == 0


def test_rfc7009_revoke(client, world):
    token, raw = issue(world)
    headers = basic(world.client.client_id, world.secret)
    response = client.post("/api/v1/revoke", data={"token": raw}, headers=headers)
    assert response.status_code == 200
    assert token.status == "revoked"
    # unknown and already revoked: 200 too
    assert (
        client.post("/api/v1/revoke", data={"token": "inconnu"}, headers=headers).status_code == 200
    )
    assert client.post("/api/v1/revoke", data={"token": raw}, headers=headers).status_code == 200
    # a provider cannot revoke another provider's token
    other_api = make_api(make_provider())
    other, other_raw = issue(world, make_habilitation(other_api))
    assert (
        client.post("/api/v1/revoke", data={"token": other_raw}, headers=headers).status_code == 200
    )
    assert other.status == "active"
    assert client.post("/api/v1/revoke", data={"token": raw}).status_code == 401


def test_revocation_list_is_signed_and_exact(client, world):
    officer = Actor.for_user(factories.user(roles=("security_officer",)))
    clock.set_frozen(clock.now() - timedelta(days=600))
    old, _ = issue(world)
    transitions.revoke(old, officer, "Révoqué avant d'expirer")  # expired by now: not listed
    clock.set_frozen(clock.now() + timedelta(days=600))
    alive, _ = issue(world)
    revoked, _ = issue(world)
    transitions.revoke(revoked, officer, "Fuite constatée")
    suspended, _ = issue(world)
    transitions.suspend(suspended, officer, "Enquête en cours")
    rotated, _ = issue(world)
    issuance.rotate(rotated, Actor.for_user(world.requester), 1)
    clock.advance(timedelta(days=2))  # grace over, job not yet run: listed as revoked

    response = client.get("/api/v1/revocations")
    assert response.status_code == 200
    assert response.mimetype == "application/jwt"
    assert "max-age" in response.headers["Cache-Control"]
    jws = response.get_data(as_text=True)
    jwks = client.get("/.well-known/jwks.json").get_json()
    header = jwt.get_unverified_header(jws)
    assert header["typ"] == "datapass-revocations+jwt"
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    payload = jwt.decode(jws, key.key, algorithms=["ES256"], options={"verify_iat": False})
    assert {item["jti"] for item in payload["revoked"]} == {revoked.jti, rotated.jti}
    assert {item["jti"] for item in payload["suspended"]} == {suspended.jti}
    assert payload["next_update"] > payload["iat"]
    assert alive.jti not in str(payload)
    # cacheable: same content, same ETag → 304
    etag = response.headers["ETag"]
    again = client.get("/api/v1/revocations", headers={"If-None-Match": etag})
    assert again.status_code == 304
    transitions.revoke(alive, officer, "Fin de mission")
    assert client.get("/api/v1/revocations", headers={"If-None-Match": etag}).status_code == 200


def test_leak_report_revokes_and_warns(client, world):
    instructor = factories.user(roles=("instructor",), api=world.api)
    token, raw = issue(world)
    response = client.post(
        "/api/v1/leaks", json={"token": raw, "source": "https://gist.example/123"}
    )
    assert response.status_code == 202
    assert token.status == "revoked"
    recipients = {
        m.recipient for m in db.session.query(OutboxMail).filter_by(template="token_leaked")
    }
    assert {
        world.requester.email,
        instructor.email,
        world.habilitation.technical_contact_email,
    } <= recipients
    event = db.session.query(AuditEvent).filter_by(tag="tokens:token:leaked").one()
    assert event.token_digest == token.digest
    assert raw not in event.payload
    # an unknown or forged token gets exactly the same answer
    unknown = client.post("/api/v1/leaks", json={"token": raw[:-4] + "AAAA"})
    assert unknown.status_code == 202 and unknown.get_json() == response.get_json()
    # Not a JWS at all: a 422 that says so (was 202 before issue 10; test_token_strings.py)
    assert client.post("/api/v1/leaks", data={"token": "nimporte.quoi.ici"}).status_code == 422


def test_leak_reports_are_rate_limited(client, app):
    from datapass.tokens import api

    api._LEAK_WINDOWS.clear()
    app.config["LEAKS_PER_MINUTE"] = 3
    try:
        codes = [
            client.post(
                "/api/v1/leaks",
                json={"token": "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"},  # well formed, not ours
                environ_base={"REMOTE_ADDR": "10.9.9.9"},
            ).status_code
            for _ in range(5)
        ]
    finally:
        app.config["LEAKS_PER_MINUTE"] = 20
    assert codes == [202, 202, 202, 429, 429]


def test_leak_wrong_content_type_and_missing_token(client):
    assert client.post("/api/v1/leaks", data="x", content_type="text/plain").status_code == 415
    response = client.post("/api/v1/leaks", json={"source": "ici"})
    assert response.status_code == 422
    assert "token" in response.get_json()["errors"]


def test_revoking_a_habilitation_revokes_its_tokens(client, world):
    first, raw1 = issue(world)
    second, raw2 = issuance.rotate(first, Actor.for_user(world.requester), 10)
    instructor = factories.user(roles=("instructor",), api=world.api)
    revoked = transitions.revoke_for_habilitation(
        world.habilitation, Actor.for_user(instructor), "Fin du marché"
    )
    assert {t.id for t in revoked} == {first.id, second.id}
    assert introspect(client, world, raw1).get_json() == {"active": False}
    assert introspect(client, world, raw2).get_json() == {"active": False}


def test_machine_client_of_provider_sees_its_token(client, world):
    # a second client of the same provider works as well
    other_client, other_secret = make_client(world.provider)
    _, raw = issue(world)
    response = introspect(client, world, raw, auth=basic(other_client.client_id, other_secret))
    assert response.get_json()["active"] is True


def test_rfc8414_metadata_points_at_the_real_endpoints(client, world):
    """An OAuth library finds the keys and endpoints from the issuer alone, and they work."""
    response = client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert "max-age" in response.headers["Cache-Control"]
    meta = response.get_json()
    token, raw = issue(world)
    assert meta["issuer"] == token.claims["iss"]
    assert meta["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert meta["revocation_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert meta["response_types_supported"] == []
    base = meta["issuer"]
    path = {
        name: meta[name].removeprefix(base) for name in meta if name.endswith(("_uri", "point"))
    }
    assert path == {
        "jwks_uri": "/.well-known/jwks.json",
        "introspection_endpoint": "/api/v1/introspect",
        "revocation_endpoint": "/api/v1/revoke",
    }
    keys = client.get(path["jwks_uri"]).get_json()["keys"]
    assert token.signing_kid in {key["kid"] for key in keys}
    headers = basic(world.client.client_id, world.secret)
    answer = client.post(path["introspection_endpoint"], data={"token": raw}, headers=headers)
    assert answer.get_json()["jti"] == token.jti
    client.post(path["revocation_endpoint"], data={"token": raw}, headers=headers)
    assert token.status == "revoked"
