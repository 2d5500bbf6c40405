"""The machine API of tokens: JWKS, introspection (RFC 7662), revocation (RFC 7009), the
signed revocation list, leak reports, and the OpenAPI 3.1 description of it all."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import deque
from pathlib import Path

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from datapass import access
from datapass.extensions import csrf, db
from datapass.keys import service as keys_service
from datapass.tokens import introspection, revocation_list, transitions
from datapass.tokens.leaks import report_leak
from datapass.tokens.verify import MalformedToken
from datapass.web import problem

bp = Blueprint("tokens_api", __name__)
csrf.exempt(bp)  # machine clients authenticate with HTTP Basic, never with a session cookie

MAX_BODY = 16 * 1024
FORM = "application/x-www-form-urlencoded"
OPENAPI_PATH = Path(__file__).with_name("openapi.json")


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_error):
    return problem(413, f"Le corps de la requête dépasse {MAX_BODY} octets.")


def _require(*mimetypes: str):
    """Every POST of this API starts here: a bounded body (413) of an accepted type (415).
    Read from the raw WSGI environment: this is on the introspection hot path."""
    environ = request.environ
    length = environ.get("CONTENT_LENGTH", "")
    size = int(length) if length.isascii() and length.isdigit() else None
    if size is None:  # chunked (or unreadable): let the form parser stop at the limit
        request.max_content_length = MAX_BODY
    elif size > MAX_BODY:
        return problem(413, f"Le corps de la requête dépasse {MAX_BODY} octets.")
    mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    empty = not size and not mimetype
    if not empty and mimetype not in mimetypes:
        return problem(415, f"Type de contenu attendu : {' ou '.join(mimetypes)}.")
    return None


def _form_token() -> str | None:
    """The ``token`` parameter exactly as sent, or None when it is absent or empty. Never
    stripped: a token is the exact string Datapass issued (introspection finds it by the
    digest of that string, the offline verifier refuses any other encoding)."""
    return request.form.get("token") or None


def _missing_token():
    # RFC 7662 §2.1 and RFC 7009 §2.1: `token` is REQUIRED; RFC 6749 §5.2 names the error.
    return problem(
        400,
        "Le paramètre « token » (le jeton à examiner) est obligatoire.",
        errors={"token": ["Le jeton est obligatoire."]},
        error="invalid_request",
    )


@bp.route("/.well-known/jwks.json")
@access.public
def jwks():
    keys = keys_service.jwks()
    db.session.commit()  # the first call may have created the first key
    response = jsonify(keys)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.route("/.well-known/oauth-authorization-server")
@access.public
def authorization_server_metadata():
    """RFC 8414 metadata, so that providers' OAuth libraries find the keys and endpoints.
    Datapass issues tokens out of band (an instructor's approval, not an OAuth flow): it has
    no authorization or token endpoint, hence no response type."""
    base = current_app.config["BASE_URL"].rstrip("/")
    methods = ["client_secret_basic"]
    response = jsonify(
        {
            "issuer": base,  # the `iss` of every token
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "introspection_endpoint": f"{base}/api/v1/introspect",
            "introspection_endpoint_auth_methods_supported": methods,
            "revocation_endpoint": f"{base}/api/v1/revoke",
            "revocation_endpoint_auth_methods_supported": methods,
            "response_types_supported": [],
            "grant_types_supported": [],
            "service_documentation": f"{base}/api/v1/openapi.json",
        }
    )
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@bp.route("/api/v1/introspect", methods=["POST"])
@access.machine_client
def introspect():
    refused = _require(FORM)
    if refused is not None:
        return refused
    raw = _form_token()
    if raw is None:
        return _missing_token()
    body, wrote = introspection.introspect(raw, g.machine_client.provider_id, access.client_ip())
    if wrote:
        db.session.commit()  # the use buffer was written here (USAGE_FLUSH_SECONDS = 0)
    return current_app.response_class(body, mimetype="application/json")


@bp.route("/api/v1/revoke", methods=["POST"])
@access.machine_client
def revoke():
    refused = _require(FORM)
    if refused is not None:
        return refused
    raw = _form_token()
    if raw is None:
        return _missing_token()
    transitions.revoke_by_client(raw, g.machine_client, access.current_actor())
    db.session.commit()
    # RFC 7009 §2.2: 200 whether the token was valid, unknown or already revoked.
    return "", 200


@bp.route("/api/v1/revocations")
@access.public
def revocations():
    result = revocation_list.revocation_list()
    db.session.commit()
    # A weak ETag: the list's content, not its signature time, decides.
    if request.if_none_match.contains_weak(result.etag):
        response = current_app.response_class(status=304)
    else:
        response = current_app.response_class(result.jws, mimetype="application/jwt")
    response.set_etag(result.etag, weak=True)
    response.headers["Cache-Control"] = f"public, max-age={result.max_age}"
    return response


# Leak reports: anyone may post; a small in-process sliding window per address keeps the
# endpoint from being used to probe tokens by brute force.
_LEAK_WINDOWS: dict[str, deque] = {}
_LEAK_LOCK = threading.Lock()


def _leak_allowed(ip: str | None) -> bool:
    limit = current_app.config["LEAKS_PER_MINUTE"]
    now = time.monotonic()
    with _LEAK_LOCK:
        if len(_LEAK_WINDOWS) > 10_000:
            _LEAK_WINDOWS.clear()
        window = _LEAK_WINDOWS.setdefault(ip or "?", deque())
        while window and now - window[0] > 60:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True


@bp.route("/api/v1/leaks", methods=["POST"])
@access.public
def leaks():
    refused = _require(FORM, "application/json")
    if refused is not None:
        return refused
    if request.mimetype == "application/json":
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return problem(400, "Le corps doit être un objet JSON.")
        token, source = data.get("token"), data.get("source")
    else:
        token, source = request.form.get("token"), request.form.get("source")
    errors = {}
    if not isinstance(token, str) or not token.strip():
        errors["token"] = ["Le jeton trouvé est obligatoire."]
    if source is not None and not isinstance(source, str):
        errors["source"] = ["L'origine doit être une chaîne (adresse où le jeton a été vu)."]
    if errors:
        return problem(422, "Signalement incomplet.", errors=errors)
    if not _leak_allowed(access.client_ip()):
        response = problem(429, "Trop de signalements depuis cette adresse : réessayez plus tard.")
        response.headers["Retry-After"] = "60"
        return response
    try:
        report_leak(token, access.current_actor(), source)
    except MalformedToken:  # raised before anything was written
        return problem(
            422,
            "Ce texte n'est pas un jeton Datapass.",
            errors={
                "token": [
                    "Un jeton Datapass est un JWT compact : trois parties en base64url "
                    "séparées par des points (eyJ….eyJ….…). Collez-le tel que vous l'avez trouvé."
                ]
            },
        )
    db.session.commit()
    # The same answer whether or not the token existed.
    response = jsonify({"status": "received"})
    response.status_code = 202
    return response


_OPENAPI: dict | None = None


@bp.route("/api/v1/openapi.json")
@access.public
def openapi():
    global _OPENAPI
    if _OPENAPI is None:
        _OPENAPI = json.loads(OPENAPI_PATH.read_text())
    document = copy.deepcopy(_OPENAPI)
    document["servers"] = [{"url": current_app.config["BASE_URL"].rstrip("/")}]
    response = jsonify(document)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
