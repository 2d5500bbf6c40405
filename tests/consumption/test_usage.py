"""POST /api/v1/usage: batches of consumption, idempotent, refused and malformed events."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta

from sqlalchemy import func, select

from datapass import clock
from datapass.consumption import charts, flush, ingest, seal
from datapass.consumption.models import UsageDaily, UsageEvent, UsageRecent
from datapass.extensions import db
from datapass.lifecycle.unused import last_use_evidence


def _event(i, tok, **fields):
    event = {
        "id": f"evt-{i}",
        "token": tok.jti,
        "time": "2026-11-28T08:00:00Z",
        "endpoint": "/v2/quotient-familial",
        "status": 200,
        "latency_ms": 40,
        "caller_ip": "192.0.2.10",
    }
    event.update(fields)
    return event


def _post(client, world, events, **kwargs):
    return client.post("/api/v1/usage", json={"events": events}, headers=world.headers, **kwargs)


def _count(model):
    return db.session.scalar(select(func.count()).select_from(model))


def test_a_batch_is_stored_counted_and_touches_last_use(client, usage_world):
    w = usage_world
    events = [_event(i, w.token, status=200 if i % 4 else 500) for i in range(8)]
    events.append(
        _event(
            8,
            w.token2,
            token=None,
            token_sha256=w.token2.digest,
            time="2026-11-28T09:30:00+01:00",
            caller_ip="2001:db8::1",
        )
    )
    del events[8]["token"]
    response = _post(client, w, events)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"accepted": 9, "duplicates": 0, "refused": []}
    assert _count(UsageEvent) == 9
    daily = db.session.execute(
        select(UsageDaily.token_id, UsageDaily.day, UsageDaily.calls, UsageDaily.errors).order_by(
            UsageDaily.token_id
        )
    ).all()
    assert daily == [
        (w.token.id, date(2026, 11, 28), 8, 2),
        (w.token2.id, date(2026, 11, 28), 1, 0),
    ]
    db.session.refresh(w.token2)
    assert clock.as_utc(w.token2.last_used_at).isoformat() == "2026-11-28T08:30:00+00:00"
    assert w.token2.last_used_ip == "2001:db8::1"


def test_duplicates_are_ignored_and_not_counted_twice(client, usage_world):
    w = usage_world
    first = _post(client, w, [_event(i, w.token) for i in range(5)])
    assert first.get_json()["accepted"] == 5
    again = _post(client, w, [_event(i, w.token) for i in range(3, 8)] + [_event(7, w.token)])
    assert again.get_json() == {"accepted": 3, "duplicates": 3, "refused": []}
    assert _count(UsageEvent) == 8
    calls = db.session.scalar(select(func.sum(UsageDaily.calls)))
    assert calls == 8


def test_foreign_and_unknown_tokens_are_refused_and_listed(client, usage_world):
    w = usage_world
    events = [
        _event(0, w.token),
        _event(1, w.foreign),
        _event(2, w.token, token="00000000-0000-0000-0000-000000000000"),
        _event(3, w.token, token=None, token_sha256=hashlib.sha256(b"x").hexdigest()),
    ]
    del events[3]["token"]
    body = _post(client, w, events).get_json()
    assert body["accepted"] == 1 and body["duplicates"] == 0
    assert [r["index"] for r in body["refused"]] == [1, 2, 3]
    assert body["refused"][0]["id"] == "evt-1"
    assert "autre fournisseur" in body["refused"][0]["reason"]
    assert db.session.scalar(select(UsageEvent.token_id)) == w.token.id
    db.session.refresh(w.foreign)
    assert w.foreign.last_used_at is None


def test_malformed_events_give_422_with_indices_and_nothing_is_stored(client, usage_world):
    w = usage_world
    events = [
        _event(0, w.token),
        _event(1, w.token, status="200"),
        _event(2, w.token, time="2026-11-28T08:00:00"),  # no offset
        "not an object",
        _event(4, w.token, id="x" * 101),
        _event(5, w.token, caller_ip="999.1.1.1"),
        _event(6, w.token, time="2027-01-01T00:00:00Z"),  # in the future
        _event(7, w.token),
    ]
    response = _post(client, w, events)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert [e["index"] for e in body["errors"]] == [1, 2, 3, 4, 5, 6]
    assert "status" in body["errors"][0]["errors"]
    assert "1, 2, 3, 4, 5, 6" in body["detail"]
    assert _count(UsageEvent) == 0 and _count(UsageDaily) == 0


def test_oversized_batch_is_413(client, usage_world):
    w = usage_world
    events = [_event(i, w.token) for i in range(ingest.MAX_EVENTS + 1)]
    response = _post(client, w, events)
    assert response.status_code == 413
    assert _count(UsageEvent) == 0
    huge = b'{"events": [' + b" " * (9 * 1024 * 1024) + b"]}"
    response = client.post(
        "/api/v1/usage", data=huge, headers={**w.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_wrong_content_type_is_415_and_bad_json_400(client, usage_world):
    w = usage_world
    body = json.dumps({"events": [_event(0, usage_world.token)]})
    response = client.post(
        "/api/v1/usage", data=body, headers={**w.headers, "Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    response = client.post(
        "/api/v1/usage", data="{", headers={**w.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert _count(UsageEvent) == 0


def test_what_is_not_json_is_400_and_a_byte_order_mark_is_tolerated(client, usage_world):
    w = usage_world
    headers = {**w.headers, "Content-Type": "application/json"}
    event = json.dumps(_event(0, w.token))
    for body in (
        '{"events": [' + event.replace('"status": 200', '"status": NaN') + "]}",
        '{"events": [' + event.replace('"evt-0"', '"evt-\\ud800"') + "]}",
        b"\xff" + event.encode(),
    ):
        assert client.post("/api/v1/usage", data=body, headers=headers).status_code == 400
    assert _count(UsageEvent) == 0
    body = b"\xef\xbb\xbf" + json.dumps({"events": [_event(0, w.token)]}).encode()
    response = client.post("/api/v1/usage", data=body, headers=headers)
    assert response.status_code == 200 and response.get_json()["accepted"] == 1


def test_without_client_credentials_is_401(client, usage_world):
    response = client.post("/api/v1/usage", json={"events": []})
    assert response.status_code == 401


def test_events_of_a_sealed_day_are_refused(client, usage_world):
    w = usage_world
    _post(client, w, [_event(0, w.token, time="2026-11-26T10:00:00Z")])
    sealed = seal.seal_finished_days()
    assert sealed == [date(2026, 11, 26), date(2026, 11, 27)]
    body = _post(
        client, w, [_event(1, w.token, time="2026-11-27T10:00:00Z"), _event(2, w.token)]
    ).get_json()
    assert body["accepted"] == 1
    assert body["refused"][0]["index"] == 0 and "scellée" in body["refused"][0]["reason"]


def test_introspection_uses_count_as_consumption(app, usage_world):
    w = usage_world
    now = clock.now()
    stored = flush.record_introspection_uses(
        [
            {"token_id": w.token.id, "at": now, "ip": "192.0.2.1"},
            {"jti": w.token.jti, "at": now - timedelta(minutes=1), "ip": "192.0.2.1"},
            {"digest": w.token2.digest, "at": now, "ip": None, "status": 200},
            {"jti": "unknown", "at": now, "ip": None},
        ]
    )
    assert stored == 3
    rows = db.session.execute(
        select(UsageDaily.token_id, UsageDaily.endpoint, UsageDaily.calls).order_by(
            UsageDaily.token_id
        )
    ).all()
    assert rows == [(w.token.id, "introspect", 2), (w.token2.id, "introspect", 1)]


def test_token_consumption_series(client, usage_world):
    w = usage_world
    events = [_event(i, w.token, time="2026-11-27T10:00:00Z") for i in range(3)]
    events += [_event(10 + i, w.token, status=404, endpoint="/v2/autre") for i in range(2)]
    _post(client, w, events)
    view = charts.token_consumption(w.token, 7)
    assert len(view.series) == 7 and view.series[-1]["day"] == date(2026, 11, 28)
    assert [p["calls"] for p in view.series][-2:] == [3, 2]
    assert view.calls == 5 and view.errors == 2
    assert view.endpoints[0]["endpoint"] == "/v2/quotient-familial"
    assert len(view.last_calls) == 5 and view.last_calls[0]["status"] == 404


def test_control_characters_that_databases_refuse_are_malformed(client, usage_world):
    w = usage_world
    response = _post(client, w, [_event(0, w.token, endpoint="/v2/\x00"), _event(1, w.token)])
    assert response.status_code == 422
    assert [e["index"] for e in response.get_json()["errors"]] == [0]


def test_last_calls_keep_each_tokens_ten_newest_across_batches(client, usage_world):
    """The token page's last calls and the unused-access evidence come from the per-token
    recent calls, not from an index over every event: they must follow late events,
    duplicates and several tokens exactly as a query over the events would."""
    w = usage_world
    first = [
        _event(i, w.token, time=f"2026-11-28T07:{i:02d}:00.500000+00:00", caller_ip="192.0.2.1")
        for i in range(15)
    ]
    first.append(_event(99, w.token2, time="2026-11-28T06:00:00Z"))
    assert _post(client, w, first).get_json()["accepted"] == 16
    later = [
        _event(20, w.token, time="2026-11-28T08:30:00+01:00", endpoint="/v2/late"),  # 07:30 UTC
        _event(21, w.token, time="2026-11-28T07:40:00Z", status=503, caller_ip="192.0.2.9"),
        _event(22, w.token, time="2026-11-28T06:00:00Z", endpoint="/v2/old"),  # too old to show
        _event(3, w.token, time="2026-11-28T08:50:00Z", endpoint="/v2/dup"),  # a duplicate
    ]
    assert _post(client, w, later).get_json() == {"accepted": 3, "duplicates": 1, "refused": []}

    expected = db.session.execute(
        select(UsageEvent.occurred_at, UsageEvent.endpoint, UsageEvent.status)
        .where(UsageEvent.token_id == w.token.id)
        .order_by(UsageEvent.occurred_at.desc())
        .limit(10)
    ).all()
    view = charts.token_consumption(w.token, 7)
    assert [(c["at"], c["endpoint"], c["status"]) for c in view.last_calls] == expected
    assert clock.as_utc(view.last_calls[0]["at"]).isoformat() == "2026-11-28T07:40:00+00:00"
    assert view.last_calls[1]["endpoint"] == "/v2/late"
    assert "/v2/old" not in {c["endpoint"] for c in view.last_calls}
    assert "/v2/dup" not in {c["endpoint"] for c in view.last_calls}
    counts = dict(
        db.session.execute(
            select(UsageRecent.token_id, func.count()).group_by(UsageRecent.token_id)
        ).all()
    )
    assert counts == {w.token.id: 10, w.token2.id: 1}

    evidence = last_use_evidence(w.token)
    assert clock.as_utc(evidence["last_used_at"]).isoformat() == "2026-11-28T07:40:00+00:00"
    assert evidence["ip"] == "192.0.2.9" and evidence["endpoint"] == "/v2/quotient-familial"
    assert last_use_evidence(w.token2)["endpoint"] == "/v2/quotient-familial"


def test_times_are_stored_in_utc_whatever_their_form(client, usage_world):
    w = usage_world
    forms = {
        "a": "2026-11-28T08:15:00.250000+00:00",  # what isoformat() writes: sliced, not parsed
        "b": "2026-11-28T09:15:00.250000+01:00",
        "c": "2026-11-28T08:15:00.25Z",
        "d": "2026-11-28 08:15:00.250000+00:00",
        "e": "2026-11-28t06:15:00.250000-02:00",
    }
    events = [_event(0, w.token, id=key, time=value) for key, value in forms.items()]
    assert _post(client, w, events).get_json()["accepted"] == 5
    stored = db.session.execute(select(UsageEvent.event_id, UsageEvent.occurred_at)).all()
    assert {clock.as_utc(at).isoformat() for _id, at in stored} == {
        "2026-11-28T08:15:00.250000+00:00"
    }
    # The fast path still refuses what the parser refuses, and times in the future.
    bad = [
        _event(1, w.token, time="2026-11-31T08:15:00.250000+00:00"),
        _event(2, w.token, time="2026-11-28T09:10:00.000001+00:00"),
        _event(3, w.token, time="2026-11-28T08:15:00.250000"),
    ]
    response = _post(client, w, bad)
    assert response.status_code == 422
    errors = {e["index"]: e["errors"]["time"] for e in response.get_json()["errors"]}
    assert errors[0] == "date RFC 3339 invalide"
    assert errors[1] == "date dans le futur"
    assert "fuseau" in errors[2]
