"""Who may call each route.

Every view declares its policy with one of the decorators below; the policy is enforced in
one place (:func:`enforce`, run before every request), and a route that declares nothing is
refused (fail closed) — a test also walks ``app.url_map`` so that none ships undeclared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from flask import abort, current_app, g, redirect, request, session, url_for
from flask_login import current_user
from werkzeug.datastructures import Authorization

from datapass.actor import Actor
from datapass.extensions import csrf, sqlite_read_snapshot

ATTR = "_datapass_access"


@dataclass(frozen=True)
class Policy:
    kind: str  # public | user | machine | development
    roles: tuple[str, ...] = ()
    recent_auth: bool = False  # a fresh re-authentication is required (sensitive act)
    during_mfa_enrolment: bool = False  # reachable before a mandatory TOTP is enrolled


def _declare(policy: Policy) -> Callable:
    def decorate(view):
        existing: Policy | None = getattr(view, ATTR, None)
        if existing is not None and existing.kind != "pending":
            raise RuntimeError(f"{view.__name__} declares its access twice")
        if existing is not None:  # flags set by an inner decorator
            policy_ = replace(
                policy,
                recent_auth=policy.recent_auth or existing.recent_auth,
                during_mfa_enrolment=policy.during_mfa_enrolment or existing.during_mfa_enrolment,
            )
        else:
            policy_ = policy
        setattr(view, ATTR, policy_)
        return view

    return decorate


def public(view):
    """Anyone, signed in or not."""
    return _declare(Policy("public"))(view)


def signed_in(view):
    """Any signed-in person (an applicant acts through their organisations)."""
    return _declare(Policy("user"))(view)


def role_required(*roles: str):
    """A signed-in person holding one of ``roles`` (instructor, security_officer, admin)."""
    if not roles:
        raise ValueError("role_required needs at least one role")
    return _declare(Policy("user", roles=tuple(str(r) for r in roles)))


def machine_client(view):
    """An API provider's machine client, authenticated with HTTP Basic."""
    return _declare(Policy("machine"))(view)


def development_only(view):
    """Outside production only (404 in production)."""
    return _declare(Policy("development"))(view)


def _flag(view, **flags):
    existing: Policy | None = getattr(view, ATTR, None)
    if existing is None:
        setattr(view, ATTR, Policy("pending", **flags))
    else:
        setattr(view, ATTR, replace(existing, **flags))
    return view


def recent_auth(view):
    """Inner decorator: the act is sensitive, ask for the password (and TOTP) again."""
    return _flag(view, recent_auth=True)


def mfa_enrolment(view):
    """Inner decorator: reachable while a mandatory TOTP enrolment is pending."""
    return _flag(view, during_mfa_enrolment=True)


@dataclass(frozen=True)
class Checks:
    """What access asks the domains that own machine clients and people. ``create_app``
    hands them in (`init_app`): infrastructure imports no domain."""

    authenticate_client: Callable[[str, str], object | None]
    mfa_enrolment_pending: Callable[[object], bool]
    recently_authenticated: Callable[[object, timedelta], bool]


def init_app(app, checks: Checks) -> None:
    app.extensions["datapass.access"] = checks
    app.before_request(enforce)


def policy_of(view) -> Policy | None:
    policy = getattr(view, ATTR, None)
    return policy if policy is not None and policy.kind != "pending" else None


MACHINE_PREFIXES = ("/api/", "/.well-known/")


def wants_json() -> bool:
    return request.path.startswith(MACHINE_PREFIXES)


def _unauthenticated():
    if wants_json():
        abort(401)
    return redirect(url_for("accounts.login", next=request.full_path.rstrip("?")))


def enforce():
    """``before_request``: apply the declared policy of the matched view, and check the CSRF
    token of forms (Flask-WTF's own hook is off: one hook for every request, the machine
    API's hot path included; machine clients send no cookie, so no CSRF token either)."""
    req = request._get_current_object()
    if req.endpoint is None:  # 404 / 405: nothing to protect
        return None
    app = current_app._get_current_object()
    policy = policy_of(app.view_functions.get(req.endpoint))
    if policy is None:
        app.logger.error("route %s declares no access policy", req.endpoint)
        abort(403)
    if policy.kind == "machine":
        # Parsed by Werkzeug straight from the environment (the hot path of the machine API).
        auth = Authorization.from_header(req.environ.get("HTTP_AUTHORIZATION"))
        client = None
        if auth is not None and auth.type == "basic":
            with sqlite_read_snapshot():  # a read: never behind SQLite's write lock
                client = app.extensions["datapass.access"].authenticate_client(
                    auth.username, auth.password
                )
        if client is None:
            g.auth_challenge = True
            abort(401)
        g.machine_client = client
        return None
    if req.method in app.config["WTF_CSRF_METHODS"] and app.config["WTF_CSRF_ENABLED"]:
        csrf.protect(apply_exemptions=True)  # views and blueprints marked @csrf.exempt pass
    if policy.kind == "public":
        return None
    if policy.kind == "development":
        if app.config["ENV"] == "production":
            abort(404)
        return None
    # a person
    if not current_user.is_authenticated:
        return _unauthenticated()
    checks = app.extensions["datapass.access"]
    if checks.mfa_enrolment_pending(current_user) and not policy.during_mfa_enrolment:
        return redirect(url_for("accounts.mfa_setup", next=request.full_path.rstrip("?")))
    if policy.roles and not any(current_user.has_role(role) for role in policy.roles):
        abort(403)
    if policy.recent_auth and not checks.recently_authenticated(
        session, timedelta(minutes=current_app.config["REAUTH_MINUTES"])
    ):
        if request.method != "GET":
            # A form posted after the window closed: ask again, then come back to the page.
            return redirect(url_for("accounts.reauthenticate", next=request.referrer or "/"))
        return redirect(url_for("accounts.reauthenticate", next=request.full_path.rstrip("?")))
    return None


def client_ip() -> str | None:
    """The caller's address (``ProxyFix`` has already applied the trusted proxies)."""
    return request.remote_addr


def current_actor() -> Actor:
    """The :class:`~datapass.actor.Actor` behind the current request."""
    if getattr(g, "machine_client", None) is not None:
        return Actor.machine(g.machine_client, ip=client_ip())
    if current_user.is_authenticated:
        return Actor.for_user(current_user, ip=client_ip())
    return Actor.anonymous(ip=client_ip())
