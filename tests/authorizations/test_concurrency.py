"""Two instructors deciding the same request at once (PostgreSQL, real transactions):
exactly one decision wins, the other gets a clear conflict, one event is written."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from datapass.accounts.models import User
from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.authorizations import decisions as authorization_decisions
from datapass.authorizations import states
from datapass.authorizations.models import AuthorizationRequest, Habilitation, RequestEvent
from datapass.extensions import db
from tests import factories


@pytest.mark.postgres
def test_two_instructors_decide_at_once(backend, committed_app):
    if backend == "sqlite":
        pytest.skip("concurrence réelle : PostgreSQL seulement")
    apis = factories.catalogue()
    api = apis["statut-etudiant"]
    first = factories.staff("instructor", api=api, full_name="Première")
    second = factories.staff("instructor", api=api, full_name="Second")
    request = factories.request_in("submitted", api, instructor=first)
    db.session.commit()
    request_id, people = request.id, {"approve": first.id, "refuse": second.id}
    db.session.remove()

    barrier = threading.Barrier(2, timeout=10)
    outcomes: dict[str, object] = {}

    def decide(event: str) -> None:
        with committed_app.app_context():
            try:
                found = db.session.get(AuthorizationRequest, request_id)
                actor = Actor.for_user(db.session.get(User, people[event]))
                assert found.state == "submitted"
                barrier.wait()  # both have read "submitted": now both decide
                authorization_decisions.transition(found, event, actor, "Décision concurrente.")
                db.session.commit()
                outcomes[event] = "won"
            except states.Conflict as conflict:
                db.session.rollback()
                outcomes[event] = conflict
            finally:
                db.session.remove()

    threads = [threading.Thread(target=decide, args=(e,)) for e in ("approve", "refuse")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(type(o).__name__ for o in outcomes.values()) == ["Conflict", "str"]
    (lost,) = [o for o in outcomes.values() if isinstance(o, states.Conflict)]
    assert lost.status == 409
    assert "vient d'être traitée par quelqu'un d'autre" in lost.message
    (winner,) = [e for e, o in outcomes.items() if o == "won"]

    found = db.session.get(AuthorizationRequest, request_id)
    assert found.state == ("validated" if winner == "approve" else "refused")
    decisions = db.session.scalars(
        select(RequestEvent.kind).where(
            RequestEvent.request_id == request_id, RequestEvent.kind.in_(["approve", "refuse"])
        )
    ).all()
    assert decisions == [winner]
    tags = db.session.scalars(
        select(AuditEvent.tag).where(
            AuditEvent.tag.in_(["authorizations:request:approve", "authorizations:request:refuse"])
        )
    ).all()
    assert tags == [f"authorizations:request:{winner}"]
    habilitations = db.session.scalar(select(func.count()).select_from(Habilitation))
    assert habilitations == (1 if winner == "approve" else 0)
