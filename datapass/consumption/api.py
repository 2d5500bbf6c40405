"""The machine API of consumption: ``POST /api/v1/usage`` (a provider reports API calls)."""

from __future__ import annotations

import orjson
from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from datapass import access
from datapass.consumption import ingest
from datapass.extensions import csrf, retryable
from datapass.web import problem

bp = Blueprint("consumption_api", __name__)
csrf.exempt(bp)  # machine clients authenticate with HTTP Basic, never with a session cookie


def _max_body() -> int:
    return current_app.config.get("USAGE_MAX_BODY_MB", 8) * 1024 * 1024


def _too_large_problem():
    return problem(
        413,
        f"Lot trop volumineux : {ingest.MAX_EVENTS} événements et "
        f"{_max_body() // (1024 * 1024)} Mo au plus par requête.",
    )


@bp.before_request
def _limit_body():
    request.max_content_length = _max_body()
    if request.content_length is not None and request.content_length > _max_body():
        return _too_large_problem()
    return None


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_error):
    return _too_large_problem()


@bp.route("/api/v1/usage", methods=["POST"])
@access.machine_client
def usage():
    """A batch ``{"events": [...]}``; answers ``{accepted, duplicates, refused}``."""
    if request.mimetype != "application/json":
        return problem(415, "Type de contenu attendu : application/json.")
    data = request.get_data(cache=False)
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, tolerated
        data = data[3:]
    try:
        # orjson: a third of the standard parser's time on a batch of 1,000 events; it also
        # refuses what is not JSON (NaN, lone surrogates) instead of passing it on.
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return problem(400, "Le corps de la requête n'est pas un JSON valide.")
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        return problem(
            422,
            "Le corps doit être un objet JSON dont le membre `events` est une liste.",
            errors=[{"index": None, "errors": {"events": "liste attendue"}}],
        )
    if len(events) > ingest.MAX_EVENTS:
        return _too_large_problem()
    provider_id = g.machine_client.provider_id
    try:
        # Committed here; redone when PostgreSQL aborts it as a deadlock or a serialization
        # failure against a concurrent batch or flush (idempotent: event ids are unique).
        result = retryable(lambda: ingest.ingest_usage(provider_id, events), attempts=3)
    except ingest.MalformedBatch as exc:
        indices = ", ".join(str(e["index"]) for e in exc.errors[:20])
        return problem(
            422,
            f"{len(exc.errors)} événement(s) invalide(s) (indices {indices}"
            f"{'…' if len(exc.errors) > 20 else ''}) : aucun événement de ce lot n'a été "
            "enregistré.",
            errors=exc.errors,
        )
    return jsonify(result.as_dict())
