"""Scheduled jobs of authorization requests (wired in ``datapass.scheduler``).

Plain functions without arguments; the scheduler commits. Each is safe to re-run: a row is
claimed by a conditional UPDATE before anything is sent, so a second run (or a second
scheduler) finds nothing left to do; every act is a system audit event and a timeline entry.
"""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from datapass import clock
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.authorizations import mails, states, transitions
from datapass.authorizations.models import AuthorizationRequest, RequestEvent
from datapass.authorizations.states import Event, RequestState
from datapass.extensions import db

BATCH = 500


def _claim(request_id: int, *conditions, **values) -> bool:
    """Set ``values`` on the request if ``conditions`` still hold; True if this run won it."""
    result = db.session.execute(
        update(AuthorizationRequest)
        .where(AuthorizationRequest.id == request_id, *conditions)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _timeline(request: AuthorizationRequest, kind: str, text: str, job: str) -> None:
    db.session.add(
        RequestEvent(
            request_id=request.id,
            kind=kind,
            actor_type="system",
            actor_label=f"Datapass ({job})",
            text=text,
            created_at=clock.now(),
        )
    )


def remind_idle_drafts() -> int:
    """A draft left unchanged for DRAFT_REMINDER_DAYS gets one reminder (another only after
    it is edited and left idle again). Returns the number of reminders."""
    now = clock.now()
    days = current_app.config["DRAFT_REMINDER_DAYS"]
    cutoff = now - timedelta(days=days)
    idle = (
        AuthorizationRequest.state == RequestState.DRAFT,
        AuthorizationRequest.updated_at <= cutoff,
        AuthorizationRequest.draft_reminder_sent_at.is_(None),
    )
    ids = db.session.scalars(
        select(AuthorizationRequest.id).where(*idle).order_by(AuthorizationRequest.id).limit(BATCH)
    ).all()
    actor = Actor.system("authorizations.remind_idle_drafts")
    sent = 0
    for request_id in ids:
        if not _claim(request_id, *idle, draft_reminder_sent_at=now):
            continue
        request = db.session.get(AuthorizationRequest, request_id)
        db.session.refresh(request)
        mails.mail_requester(request, "request_draft_reminder", days=days)
        _timeline(
            request, "draft_reminder", f"Relance envoyée à {request.requester.email}.", "relance"
        )
        audit.record(
            EventTag.Authorizations.RequestDraftReminded,
            actor,
            subject=request,
            organisation_id=request.organisation_id,
            api_id=request.api_id,
            payload={"idle_days": days, "updated_at": request.updated_at.isoformat()},
        )
        sent += 1
    db.session.flush()
    return sent


def warn_stale_changes_requested() -> int:
    """A request left in changes_requested for CHANGES_WARNING_MONTHS gets one warning: it
    will be archived CHANGES_ARCHIVE_DAYS later. Returns the number of warnings."""
    now = clock.now()
    months = current_app.config["CHANGES_WARNING_MONTHS"]
    archive_days = current_app.config["CHANGES_ARCHIVE_DAYS"]
    cutoff = clock.add_months(now, -months)
    stale = (
        AuthorizationRequest.state == RequestState.CHANGES_REQUESTED,
        AuthorizationRequest.state_changed_at <= cutoff,
        AuthorizationRequest.changes_warning_sent_at.is_(None),
    )
    ids = db.session.scalars(
        select(AuthorizationRequest.id).where(*stale).order_by(AuthorizationRequest.id).limit(BATCH)
    ).all()
    actor = Actor.system("authorizations.warn_stale_changes_requested")
    warned = 0
    for request_id in ids:
        request = db.session.get(AuthorizationRequest, request_id)
        if states.is_reopening(request):
            continue  # an update is cancelled by its author, never archived
        if not _claim(request_id, *stale, changes_warning_sent_at=now):
            continue
        db.session.refresh(request)
        archive_on = clock.local(now + timedelta(days=archive_days)).strftime("%d/%m/%Y")
        mails.mail_requester(
            request, "request_changes_warning", months=months, archive_on=archive_on
        )
        _timeline(
            request,
            "changes_warning",
            f"Sans nouvelle soumission, la demande sera archivée le {archive_on}.",
            "avertissement",
        )
        audit.record(
            EventTag.Authorizations.RequestArchiveWarned,
            actor,
            subject=request,
            organisation_id=request.organisation_id,
            api_id=request.api_id,
            payload={
                "changes_requested_at": request.state_changed_at.isoformat(),
                "archive_on": archive_on,
            },
        )
        warned += 1
    db.session.flush()
    return warned


def archive_stale_changes_requested() -> int:
    """Archive, as a system event, the requests warned at least CHANGES_ARCHIVE_DAYS ago and
    still waiting in changes_requested since before that warning. A request resubmitted or
    sent back again since (its warning is cleared, or its state changed after the warning)
    is left alone. Returns the number archived."""
    now = clock.now()
    archive_days = current_app.config["CHANGES_ARCHIVE_DAYS"]
    months = current_app.config["CHANGES_WARNING_MONTHS"]
    due = now - timedelta(days=archive_days)
    requests = db.session.scalars(
        select(AuthorizationRequest)
        .where(
            AuthorizationRequest.state == RequestState.CHANGES_REQUESTED,
            AuthorizationRequest.changes_warning_sent_at.is_not(None),
            AuthorizationRequest.changes_warning_sent_at <= due,
            AuthorizationRequest.state_changed_at <= AuthorizationRequest.changes_warning_sent_at,
        )
        .order_by(AuthorizationRequest.id)
        .limit(BATCH)
    ).all()
    actor = Actor.system("authorizations.archive_stale_changes_requested")
    archived = 0
    for request in requests:
        # Belt and braces (the v1 job once archived wrongly): re-check every condition on
        # the row itself before acting.
        waited = clock.add_months(clock.as_utc(request.state_changed_at), months)
        if waited > clock.as_utc(request.changes_warning_sent_at) or states.is_reopening(request):
            continue
        try:
            transitions.fire(
                Event.ARCHIVE,
                request,
                actor,
                reason=(
                    f"Archivage automatique : modifications demandées depuis plus de {months} "
                    f"mois, sans réponse {archive_days} jours après l'avertissement."
                ),
                data={"warned_at": request.changes_warning_sent_at.isoformat()},
            )
        except states.Conflict:
            continue  # decided or resubmitted meanwhile: nothing to do
        mails.mail_requester(request, "request_archived")
        archived += 1
    db.session.flush()
    return archived
