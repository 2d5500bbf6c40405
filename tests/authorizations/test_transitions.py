"""Every transition, from every state, by every role (DESIGN §3): the allowed ones work and
write one timeline entry and one audit event; the others answer 403 (wrong role), 409 (wrong
state) or 404 (cannot see the request) and change nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from datapass.audit.models import AuditEvent
from datapass.authorizations.models import AuthorizationRequest, RequestEvent
from datapass.extensions import db
from tests import factories
from tests.authorizations.conftest import commit

# (state, reopening) pairs a request can be in.
STATES = [
    ("draft", False),
    ("submitted", False),
    ("changes_requested", False),
    ("validated", False),
    ("refused", False),
    ("archived", False),
    ("revoked", False),
    ("draft", True),
    ("submitted", True),
    ("changes_requested", True),
]

APP, INS, SO = "applicant", "instructor", "security_officer"

# The table of DESIGN §3, written out again here on purpose (a test must not read the table it
# checks). "*" marks a reopening (an update of a validated request). Deviations, documented in
# states.py: archive also from changes_requested (abandoned after a change request); revoke
# also during a reopening; refusing an update returns to validated.
EXPECTED = {
    "submit": ({APP}, {"draft", "changes_requested", "draft*", "changes_requested*"}, "submitted"),
    "request_changes": ({INS}, {"submitted", "submitted*"}, "changes_requested"),
    "approve": ({INS}, {"submitted", "submitted*"}, "validated"),
    "refuse": ({INS}, {"submitted", "submitted*"}, "refused"),
    "archive": ({APP, INS}, {"draft", "changes_requested", "refused"}, "archived"),
    "reopen": ({APP}, {"validated"}, "draft"),
    "cancel_reopening": (
        {APP, INS},
        {"draft*", "changes_requested*", "submitted*"},
        "validated",
    ),
    "revoke": (
        {INS, SO},
        {"validated", "draft*", "changes_requested*", "submitted*"},
        "revoked",
    ),
}

# People who cannot see the request (another organisation, another API's instructor) get a
# 404 on every route: tests/authorizations/test_isolation.py.
ROLES = ["applicant", "instructor", "security_officer"]


def _expected(event: str, state: str, reopening: bool, role: str) -> tuple[int, str | None]:
    roles, sources, target = EXPECTED[event]
    if role not in roles:
        return 403, None
    key = state + ("*" if reopening else "")
    if key not in sources:
        return 409, None
    if event == "refuse" and reopening:
        target = "validated"
    return 302, target


def _counts(request_id: int) -> tuple[int, int]:
    events = db.session.scalar(
        select(func.count()).select_from(RequestEvent).where(RequestEvent.request_id == request_id)
    )
    audits = db.session.scalar(select(func.count()).select_from(AuditEvent))
    return events, audits


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("state,reopening", STATES, ids=lambda v: str(v))
@pytest.mark.parametrize("event", list(EXPECTED))
def test_transition(app, client, login_as, apis, event, state, reopening, role):
    api = apis["quotient-familial"]
    org = factories.organisation()
    applicant = factories.user(organisation=org)
    instructor = factories.staff("instructor", api=api)
    request = factories.request_in(
        state,
        api,
        reopening=reopening,
        instructor=instructor,
        organisation=org,
        requester=applicant,
    )
    people = {
        "applicant": applicant,
        "instructor": instructor,
        "security_officer": factories.staff("security_officer"),
    }
    commit()
    before_state, before_version = request.state, request.version
    events_before, audits_before = _counts(request.id)
    had_habilitation = request.active_habilitation is not None

    login_as(people[role])
    response = client.post(
        f"/demandes/{request.id}/actions/{event}", data={"text": "Motif donné par le test."}
    )

    status, target = _expected(event, state, reopening, role)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    db.session.expire_all()
    request = db.session.get(AuthorizationRequest, request.id)
    events_after, audits_after = _counts(request.id)
    if status == 302:
        assert request.state == target
        assert request.version == before_version + 1
        kinds = [e.kind for e in request.events]
        assert kinds[-1] == event
        tags = db.session.scalars(select(AuditEvent.tag).order_by(AuditEvent.seq.desc())).all()
        assert f"authorizations:request:{event}" in tags[: audits_after - audits_before]
        if event == "approve":
            assert request.active_habilitation is not None
        if event == "revoke":
            assert request.active_habilitation is None and had_habilitation
        if event == "cancel_reopening" or (event == "refuse" and reopening):
            assert request.active_habilitation is not None
    else:
        assert status in (403, 409)
        assert request.state == before_state
        assert request.version == before_version
        assert (events_after, audits_after) == (events_before, audits_before)
        body = response.get_data(as_text=True)
        assert ("Action impossible" if status == 409 else "Accès refusé") in body
