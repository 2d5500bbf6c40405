"""Reminders on a moving clock: an idle draft is reminded once; a request left in
changes_requested is warned after six months and archived 15 days later as a system event.
Every job is safe to re-run."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from datapass.actor import Actor
from datapass.audit.models import AuditEvent
from datapass.authorizations import decisions, sections, tasks
from datapass.extensions import db
from tests import factories
from tests.authorizations.test_lifecycle import mails


def test_idle_draft_is_reminded_once(app, frozen_clock, api, applicant):
    request = factories.filled_request(api, requester=applicant)
    factories.request_in("submitted", api)  # submitted requests are not reminded
    frozen_clock.advance(timedelta(days=14, hours=23))
    assert tasks.remind_idle_drafts() == 0
    frozen_clock.advance(timedelta(hours=1))
    assert tasks.remind_idle_drafts() == 1
    assert tasks.remind_idle_drafts() == 0  # re-run: nothing more
    (mail,) = mails("request_draft_reminder")
    assert mail.recipient == applicant.email and "15 jours" in mail.body_text
    assert request.events[-1].kind == "draft_reminder" and request.events[-1].actor_id is None
    tag = db.session.scalars(
        select(AuditEvent.actor_type).where(
            AuditEvent.tag == "authorizations:request:draft_reminded"
        )
    ).all()
    assert tag == ["system"]
    # Edited, then idle again: a new reminder 15 days later, not before.
    sections.save_section(
        request,
        "projet",
        {"title": "Repris", "description": "d", "purpose": "p"},
        Actor.for_user(applicant),
    )
    frozen_clock.advance(timedelta(days=10))
    assert tasks.remind_idle_drafts() == 0
    frozen_clock.advance(timedelta(days=5))
    assert tasks.remind_idle_drafts() == 1


def test_changes_requested_warned_then_archived(app, frozen_clock, api, instructor, applicant):
    request = factories.request_in(
        "changes_requested", api, instructor=instructor, requester=applicant
    )
    start = frozen_clock.now()
    frozen_clock.set_frozen(frozen_clock.add_months(start, 6) - timedelta(minutes=1))
    assert tasks.warn_stale_changes_requested() == 0
    assert tasks.archive_stale_changes_requested() == 0
    frozen_clock.advance(timedelta(minutes=1))
    assert tasks.warn_stale_changes_requested() == 1
    assert tasks.warn_stale_changes_requested() == 0
    (warning,) = mails("request_changes_warning")
    assert "sera archivée le 12/06/2027" in warning.body_text  # 2027-05-28 + 15 days
    frozen_clock.advance(timedelta(days=14, hours=23))
    assert tasks.archive_stale_changes_requested() == 0
    assert request.state == "changes_requested"
    frozen_clock.advance(timedelta(hours=1))
    assert tasks.archive_stale_changes_requested() == 1
    assert tasks.archive_stale_changes_requested() == 0
    assert request.state == "archived"
    entry = request.events[-1]
    assert (entry.kind, entry.actor_type, entry.actor_id) == ("archive", "system", None)
    assert "Archivage automatique" in entry.text
    audit = db.session.scalars(
        select(AuditEvent).where(AuditEvent.tag == "authorizations:request:archive")
    ).one()
    assert audit.actor_type == "system"
    assert len(mails("request_archived")) == 1


def test_a_resubmitted_request_is_not_archived(app, frozen_clock, api, instructor, applicant):
    request = factories.request_in(
        "changes_requested", api, instructor=instructor, requester=applicant
    )
    frozen_clock.set_frozen(frozen_clock.add_months(frozen_clock.now(), 6))
    assert tasks.warn_stale_changes_requested() == 1
    frozen_clock.advance(timedelta(days=3))
    decisions.submit(request, Actor.for_user(applicant))
    decisions.request_changes(request, Actor.for_user(instructor), "Encore un détail.")
    frozen_clock.advance(timedelta(days=20))
    assert tasks.archive_stale_changes_requested() == 0
    assert tasks.warn_stale_changes_requested() == 0  # a new six months start now
    assert request.state == "changes_requested"


def test_an_update_in_changes_requested_is_never_archived(app, frozen_clock, api, instructor):
    request = factories.request_in("changes_requested", api, reopening=True, instructor=instructor)
    frozen_clock.set_frozen(frozen_clock.add_months(frozen_clock.now(), 7))
    assert tasks.warn_stale_changes_requested() == 0
    frozen_clock.advance(timedelta(days=30))
    assert tasks.archive_stale_changes_requested() == 0
    assert request.state == "changes_requested" and request.active_habilitation.is_active
