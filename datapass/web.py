"""HTTP wiring shared by every blueprint: security headers, error pages and RFC 9457
problem documents, template helpers."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from flask import (
    Flask,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    render_template,
    request,
    stream_with_context,
)
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter, Map

from datapass import clock, formatting
from datapass.access import MACHINE_PREFIXES, wants_json
from datapass.errors import DomainError
from datapass.extensions import db

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

TITLES = {
    400: "Requête invalide",
    401: "Authentification requise",
    403: "Accès refusé",
    404: "Page introuvable",
    405: "Méthode non autorisée",
    409: "Conflit",
    413: "Contenu trop volumineux",
    415: "Type de contenu non pris en charge",
    422: "Données invalides",
    429: "Trop de tentatives",
    500: "Erreur interne",
}


MESSAGES = {
    401: "Authentification requise.",
    403: "Vous n'avez pas le droit d'effectuer cette action.",
    404: "Ressource introuvable.",
    400: "La requête est invalide : vérifiez les informations envoyées.",
    405: "Cette action n'est pas possible sur cette adresse.",
    409: "Cette action n'est plus possible : l'objet a changé entre-temps. Rechargez la page.",
    413: "Le contenu envoyé est trop volumineux.",
    415: "Ce type de contenu n'est pas pris en charge.",
    429: "Trop de tentatives : réessayez dans quelques minutes.",
}


# --- request id -------------------------------------------------------------------------------

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_KEY = "datapass.request_id"  # in the WSGI environ: one request's, not g's
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")


def request_id() -> str:
    """The current request's id, decided once per request: the ``X-Request-Id`` a trusted
    reverse proxy set (``TRUSTED_PROXIES`` > 0) when it is well-formed (8 to 128 letters,
    digits, ``.``, ``_``, ``:``, ``-``), else a new one. In the JSON request log, in the
    ``X-Request-Id`` response header, and in error pages and problem documents, so that a
    user's report leads to the log line. In text mode (the default) it is only decided when
    an error is answered: nothing per request."""
    environ = request.environ
    found = environ.get(_REQUEST_ID_KEY)
    if found is None:
        given = environ.get("HTTP_X_REQUEST_ID", "")
        trusted = current_app.config.get("TRUSTED_PROXIES", 0) > 0
        found = given if trusted and _WELL_FORMED_ID.fullmatch(given) else uuid.uuid4().hex
        environ[_REQUEST_ID_KEY] = found
    return found


def known_request_id() -> str | None:
    """The current request's id when it has been decided (none is made up here)."""
    return request.environ.get(_REQUEST_ID_KEY)


def problem(
    status: int, detail: str, *, title: str | None = None, errors: Any = None, **extra: Any
):
    """An RFC 9457 problem document, with the request's id (``request_id``)."""
    rid = request_id()
    body: dict[str, Any] = {
        "type": f"https://datapass.gouv.fr/problemes/{status}",
        "title": title or TITLES.get(status, "Erreur"),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    body["request_id"] = rid
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    response.headers[REQUEST_ID_HEADER] = rid
    if status == 401 and getattr(g, "auth_challenge", False):
        response.headers["WWW-Authenticate"] = 'Basic realm="datapass", charset="UTF-8"'
    return response


def _describe(error: HTTPException) -> str:
    """The view's own (French) description, else our French message for the status."""
    status = error.code or 500
    if error.description and error.description != type(error).description:
        return error.description
    return MESSAGES.get(status, "La requête n'a pas pu être traitée.")


def _protocol_headers(error: HTTPException) -> list[tuple[str, str]]:
    """The headers the error itself requires (``Allow`` of a 405, RFC 9110 §15.5.6;
    ``Retry-After``…): Werkzeug's, without its own content type."""
    return [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]


def _handle_http_error(error: HTTPException):
    status = error.code or 500
    message = _describe(error)
    if wants_json():
        extra = {}
        if status == 401 and getattr(g, "auth_challenge", False):
            message = "Identifiants du client machine absents ou invalides."
            extra["error"] = "invalid_client"  # RFC 6749 §5.2, for OAuth client libraries
        response = problem(status, message, **extra)
        response.headers.extend(_protocol_headers(error))
        return response
    template = status if status in {403, 404, 500} else "generic"
    title = TITLES.get(status, "Erreur")
    page = render_template(f"errors/{template}.html", status=status, title=title, message=message)
    return page, status, [*_protocol_headers(error), (REQUEST_ID_HEADER, request_id())]


def _handle_csrf_error(error: CSRFError):
    detail = (
        "Le formulaire a expiré ou son jeton de sécurité (CSRF) est absent : "
        "rechargez la page et recommencez."
    )
    if wants_json():
        return problem(400, detail)
    page = render_template(
        "errors/generic.html", status=400, title="Formulaire expiré", message=detail
    )
    return page, 400, {REQUEST_ID_HEADER: request_id()}


def _handle_domain_error(error: DomainError):
    """A refusal no view caught: nothing was changed; a problem on the API, a page else."""
    db.session.rollback()
    if wants_json():
        errors = {error.field: [error.message]} if error.field else None
        return problem(error.status, error.message, errors=errors)
    title = TITLES.get(error.status, "Erreur")
    page = render_template(
        "errors/generic.html", status=error.status, title=title, message=error.message
    )
    return page, error.status, {REQUEST_ID_HEADER: request_id()}


class acting:  # noqa: N801 - used as a statement: ``with web.acting(…) as act:``
    """The block every page that changes something runs: commit, or refuse and show why.

    Inside the ``with``, call the service. If it raises a :class:`DomainError`, the
    transaction is rolled back and the message goes under its field when ``form`` has it, else
    into a flash; ``act.refused`` then holds the error and the view renders its page again.
    Otherwise the transaction is committed, ``success`` is flashed and ``act.done`` is true.
    Any other exception propagates (after a rollback).
    """

    def __init__(self, form: Any = None, success: str | None = None) -> None:
        self.form, self.success = form, success
        self.done = False
        self.refused: DomainError | None = None

    def __enter__(self) -> acting:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None:
            db.session.commit()
            self.done = True
            if self.success:
                flash(self.success, "success")
            return False
        db.session.rollback()
        if not isinstance(error, DomainError):
            return False
        self.refused = error
        form = self.form
        if form is not None and error.field and error.field in form:
            form[error.field].errors = [*form[error.field].errors, error.message]
        else:
            flash(error.message, "error")
        return True


def _handle_unexpected(error: Exception):
    rid = request_id()
    current_app.logger.exception(
        "unhandled error on %s %s (request id %s)",
        request.method,
        request.path,
        rid,
        extra={"request_id": rid},
    )
    if wants_json():
        return problem(500, "Une erreur interne est survenue.")
    page = render_template("errors/500.html", status=500, title=TITLES[500])
    return page, 500, {REQUEST_ID_HEADER: rid}


SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)
# JSON for machines: no page to frame or script to run, so a locked-down policy (OWASP REST).
MACHINE_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
)
HSTS = ("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
CACHEABLE_ENDPOINTS = frozenset({"static", "dsfr"})


def _security_headers(response):
    # This runs on every response, the machine API's hot path included: one request lookup,
    # one pass over the few headers already set, then appends.
    req = request._get_current_object()
    headers = response.headers
    present = {key.lower() for key, _ in headers.items()}
    wanted = MACHINE_HEADERS if req.path.startswith(MACHINE_PREFIXES) else SECURITY_HEADERS
    headers.extend((k, v) for k, v in wanted if k.lower() not in present)
    if current_app.config["ENV"] == "production" and HSTS[0].lower() not in present:
        headers.add(*HSTS)
    if "cache-control" not in present and req.endpoint not in CACHEABLE_ENDPOINTS:
        headers.add("Cache-Control", "no-store")
    return response


class StatelessApiSessions(SecureCookieSessionInterface):
    """The machine API is stateless: no session cookie is read or written under ``/api/``
    and ``/.well-known/`` (a null session stands in)."""

    def open_session(self, app, request):
        if request.path.startswith(MACHINE_PREFIXES):
            return None
        return super().open_session(app, request)


# --- hostile input: NUL bytes, numbers the database cannot hold ------------------------------

INT32_MAX = 2**31 - 1  # INTEGER columns (PostgreSQL's int4): every id but the audit log's
INT64_MAX = 2**63 - 1  # BIGINT columns (the audit log's sequence number)
NUL_REFUSED = (
    "La requête contient un caractère nul (octet 0), refusé dans tous les champs : "
    "retirez-le et recommencez."
)
FLAT_JSON_REQUIRED = (
    "Le corps JSON d'un formulaire doit être un objet à plat dont chaque valeur est un texte "
    "(ni objet, ni liste, ni nombre) : corrigez-le et recommencez."
)
INVALID_JSON = "Le corps de la requête n'est pas un JSON valide."
# The machine API bounds its bodies itself (413) after this hook: a body larger than this is
# left to it rather than parsed here.
_MACHINE_FORM_CHECKED = 64 * 1024


class IdConverter(IntegerConverter):
    """``<int:…>``: a number that fits an INTEGER column. A larger one matches no route (404)
    instead of reaching the database, which refuses it (PostgreSQL: a 500)."""

    def __init__(self, map, fixed_digits=0, min=None, max=INT32_MAX, signed=False) -> None:  # noqa: A002
        super().__init__(map, fixed_digits, min, max, signed)


class BigIdConverter(IdConverter):
    """``<bigint:…>``: a number that fits a BIGINT column."""

    def __init__(self, map, fixed_digits=0, min=None, max=INT64_MAX, signed=False) -> None:  # noqa: A002
        super().__init__(map, fixed_digits, min, max, signed)


class DatapassMap(Map):
    """The URL map, with bounded ``int`` and ``bigint`` converters."""

    default_converters = {**Map.default_converters, "int": IdConverter, "bigint": BigIdConverter}


_INTEGER = re.compile(r"-?[0-9]{1,19}")


def query_int(
    name: str, default: int | None = None, *, minimum: int = 0, maximum: int = INT32_MAX
) -> int | None:
    """An integer query parameter (a filter, a page number), or ``default`` when it is absent,
    not an integer written in ASCII digits, or out of ``minimum``–``maximum``: such a value
    cannot match anything, so it is ignored (never passed on to the database)."""
    raw = request.args.get(name, "").strip()
    if _INTEGER.fullmatch(raw) is None:
        return default
    value = int(raw)
    return value if minimum <= value <= maximum else default


def refuse_hostile_input():
    """``before_request``: a NUL byte in the path, the query string or a form value (or name)
    is refused with a clear 400 before any view sees it. No field of Datapass accepts one,
    and PostgreSQL refuses it in text (a 500 deep in a search otherwise). Uploaded files are
    not form values: a PDF may hold NUL bytes.

    The pages' forms also read a JSON body (Flask-WTF), as form fields: one that is not a
    flat object of texts (nested objects, lists, numbers) is refused here with a 400, as is
    invalid JSON. The machine API (``/api/``) validates its own JSON (problem documents)."""
    req = request._get_current_object()
    environ = req.environ
    if "\x00" in req.path or b"%00" in req.query_string or b"\x00" in req.query_string:
        abort(400, NUL_REFUSED)
    if req.method not in ("POST", "PUT", "PATCH"):
        return None
    content_type = environ.get("CONTENT_TYPE", "")
    machine = req.path.startswith(MACHINE_PREFIXES)
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        if machine:
            length = environ.get("CONTENT_LENGTH", "")
            if not length.isascii() or not length.isdigit() or int(length) > _MACHINE_FORM_CHECKED:
                return None
        for key, values in req.form.lists():
            if "\x00" in key or any("\x00" in value for value in values):
                abort(400, NUL_REFUSED)
    elif req.is_json and not machine:
        body = req.get_json(silent=True)
        if body is None and req.get_data().strip() != b"null":
            abort(400, INVALID_JSON)
        if not isinstance(body, dict) or not all(type(v) is str for v in body.values()):
            abort(400, FLAT_JSON_REQUIRED)
        if any("\x00" in key or "\x00" in value for key, value in body.items()):
            abort(400, NUL_REFUSED)
    return None


T = TypeVar("T")


def stream_lazily(produce: Callable[..., Iterable[T]], /, *args: Any, **kwargs: Any) -> Iterator[T]:
    """A streamed response body: ``produce(*args, **kwargs)`` is called only once the response
    starts streaming, inside the request's contexts pushed again (``stream_with_context``).

    Flask tears the app context down when the view returns, before the body is sent, and with
    it the database session, closing any cursor the view opened (PostgreSQL's server-side
    cursor is gone even for an empty list; SQLite's rows vanish). So a streamed export runs
    its query here, in the fresh session of the streaming phase, and from plain values (ids,
    filters): ORM objects the view loaded are detached by then."""

    def body() -> Iterator[T]:
        yield from produce(*args, **kwargs)

    return stream_with_context(body())


# Navigation by role: (endpoint, label, who sees it). Entries whose endpoint is not
# registered are skipped, so each domain's pages appear as soon as they exist.
NAVIGATION = [
    ("accounts.home", "Accueil", "any"),
    ("catalogue.index", "Catalogue des API", "public"),
    ("authorizations.applicant_index", "Mes demandes", "member"),
    ("tokens.applicant_index", "Mes jetons", "member"),
    ("authorizations.instructor_queue", "Instruction", "instructor"),
    ("tokens.supervision", "Jetons", "instructor"),
    ("lifecycle.renewals", "Renouvellements", "instructor"),
    ("consumption.api_usage", "Consommation", "instructor"),
    ("lifecycle.dashboard", "Tableau de bord sécurité", "security_officer"),
    ("audit.console", "Journal d'audit", "security_officer"),
    ("catalogue.admin_index", "Gestion du catalogue", "admin"),
    ("accounts.admin_users", "Utilisateurs", "admin"),
    ("notify.webhooks", "Webhooks", "admin"),
    ("notify.admin_outbox", "Courriels", "admin"),
    ("operations.jobs", "Tâches planifiées", "admin"),
    ("notify.dev_mails", "Courriels (dév.)", "development"),
]


def _visible(audience: str, user) -> bool:
    if audience == "public":
        return True
    if not user.is_authenticated:
        return False
    if audience == "any":
        return True
    if audience == "development":
        return current_app.config["ENV"] != "production"
    if audience == "member":
        return bool(user.memberships)
    return user.has_role(audience)


def navigation_items() -> list[dict[str, Any]]:
    from flask import url_for
    from flask_login import current_user

    items = []
    for endpoint, label, audience in NAVIGATION:
        if endpoint not in current_app.view_functions or not _visible(audience, current_user):
            continue
        items.append(
            {"url": url_for(endpoint), "label": label, "current": request.endpoint == endpoint}
        )
    return items


def init_app(app: Flask) -> None:
    app.session_interface = StatelessApiSessions()
    app.jinja_env.globals["navigation_items"] = navigation_items
    app.jinja_env.globals["request_id"] = request_id
    app.register_error_handler(CSRFError, _handle_csrf_error)
    app.register_error_handler(HTTPException, _handle_http_error)
    app.register_error_handler(DomainError, _handle_domain_error)
    app.register_error_handler(Exception, _handle_unexpected)
    app.after_request(_security_headers)
    # First of the hooks: nothing else reads a value carrying a NUL byte.
    app.before_request_funcs.setdefault(None, []).insert(0, refuse_hostile_input)
    formatting.init_app(app)
    app.jinja_env.globals["now"] = clock.now
