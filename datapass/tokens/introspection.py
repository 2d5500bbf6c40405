"""Introspection (RFC 7662): the machine API's hot path.

Written for speed (DESIGN §6 budget), and moved here as it was: one prepared column query,
the row, its JSON answer and its usable window cached together for a second, the answer
served as ready-made text, and a call counted in the in-process use buffer
(:mod:`datapass.tokens.uses`) rather than written in the request.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select

from datapass import clock
from datapass.catalogue.models import Api
from datapass.extensions import db, sqlite_read_snapshot
from datapass.tokens import states, uses
from datapass.tokens.models import MAX_TOKEN_LENGTH, AccessToken

_INTROSPECT_COLUMNS = None


def _introspect_query():
    global _INTROSPECT_COLUMNS
    if _INTROSPECT_COLUMNS is None:
        _INTROSPECT_COLUMNS = select(
            AccessToken.status,
            AccessToken.not_before,
            AccessToken.expires_at,
            AccessToken.grace_ends_at,
            AccessToken.last_used_at,
            AccessToken.claims,
            Api.provider_id,
        ).join(Api, Api.id == AccessToken.api_id)
    return _INTROSPECT_COLUMNS


# Recently read token rows, by digest, for ``INTROSPECTION_CACHE_SECONDS`` (1 s by default):
# a provider calling in a loop does not hit the database each time. Any change of a token
# made in this process drops its entry at once; a change made by another process bites
# within that delay (API Entreprise's cache: one hour).
_INTROSPECT_CACHE: dict[str, tuple[float, Any]] = {}


def forget_introspection(digest: str) -> None:
    _INTROSPECT_CACHE.pop(digest, None)


INACTIVE_BODY = '{"active":false}'
# RFC 7662 members answered for an active token, in this order, from its claims.
_INTROSPECTED_CLAIMS = (
    "scope",
    "client_id",
    "sub",
    "aud",
    "iss",
    "exp",
    "iat",
    "nbf",
    "jti",
    "siret",
)


def _active_body(claims: dict[str, Any]) -> str:
    answer: dict[str, Any] = {"active": True}
    answer.update((name, claims[name]) for name in _INTROSPECTED_CLAIMS)
    answer["token_type"] = "Bearer"
    return json.dumps(answer, separators=(",", ":"), ensure_ascii=False)


def _introspect_row(digest: str, ttl: float) -> tuple[Any, str, Any] | None:
    """The token's row, its active answer (JSON) and when it is usable
    (:func:`states.usable_window`), from the cache when fresh."""
    now = time.monotonic()
    cached = _INTROSPECT_CACHE.get(digest)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    row = db.session.execute(_introspect_query().where(AccessToken.digest == digest)).first()
    if row is None:
        return None
    window = states.usable_window(row.status, row.not_before, row.expires_at, row.grace_ends_at)
    found = (row, _active_body(row.claims), window)
    if ttl > 0:
        if len(_INTROSPECT_CACHE) > 100_000:
            _INTROSPECT_CACHE.clear()
        _INTROSPECT_CACHE[digest] = (now, found)
    return found


def introspect(raw: str | None, provider_id: int, ip: str | None = None) -> tuple[str, bool]:
    """RFC 7662 for the provider's machine client: returns the answer as JSON text and
    whether the usage buffer was written (the caller commits). Anything but a usable token
    of one of the provider's APIs answers exactly ``{"active": false}``. A hit counts as a
    use. The row, its answer and its usable window are cached together (this is the machine
    API's hot path).

    The token is found by the SHA-256 of the exact string Datapass issued, so a forged or
    altered token cannot match; no signature check is needed on this path."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH or raw.count(".") != 2:
        return INACTIVE_BODY, False
    digest = hashlib.sha256(raw.encode()).hexdigest()
    config = current_app.config
    with sqlite_read_snapshot():  # SQLite: no write lock to wait for (a sweep, a mail job)
        found = _introspect_row(digest, config.get("INTROSPECTION_CACHE_SECONDS", 1.0))
    if found is None:
        return INACTIVE_BODY, False
    row, body, window = found
    if row.provider_id != provider_id or window is None:
        return INACTIVE_BODY, False
    now = clock.now()
    if (window[0] is not None and window[0] > now) or now >= window[1]:
        return INACTIVE_BODY, False
    interval = timedelta(seconds=config["TOKEN_USE_FLUSH_SECONDS"])
    return body, uses.record_use(digest, now, ip, row.last_used_at, interval)
