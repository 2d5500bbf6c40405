"""The one place a state changes: requests (:func:`fire`) and habilitations (active →
obsolete | revoked, both final).

Each checks the guards of :mod:`datapass.authorizations.states`, changes the state with a
conditional UPDATE (two instructors deciding at once: exactly one wins), and writes the
timeline entry and the audit event. Flushes, never commits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value

from datapass import clock
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.authorizations.models import AuthorizationRequest, Habilitation, RequestEvent
from datapass.authorizations.states import (
    Conflict,
    Event,
    HabilitationStatus,
    ReasonRequired,
    Role,
    check,
    roles_of,
    state_of,
    target_of,
)
from datapass.extensions import db

if TYPE_CHECKING:
    from datapass.actor import Actor

Tag = EventTag.Authorizations
AUDIT_TAGS = {
    Event.SUBMIT: Tag.RequestSubmit,
    Event.REQUEST_CHANGES: Tag.RequestRequestChanges,
    Event.APPROVE: Tag.RequestApprove,
    Event.REFUSE: Tag.RequestRefuse,
    Event.ARCHIVE: Tag.RequestArchive,
    Event.REOPEN: Tag.RequestReopen,
    Event.CANCEL_REOPENING: Tag.RequestCancelReopening,
    Event.REVOKE: Tag.RequestRevoke,
}


def fire(
    event: Event | str,
    request: AuthorizationRequest,
    actor: Actor,
    *,
    reason: str | None = None,
    diff: list[dict[str, Any]] | None = None,
    values: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> RequestEvent:
    """Fire ``event`` on ``request`` as ``actor``; returns the timeline entry.

    Checks the actor's role for this request (:class:`NotAllowed`) and the state
    (:class:`Conflict`), then changes the state with ``UPDATE … WHERE id = ? AND state = ?
    AND version = ?``: if another transaction decided first, no row matches and
    :class:`Conflict` is raised with nothing changed. ``values`` are extra columns set in the
    same statement (e.g. ``decided_at``). Flushes, never commits.
    """

    event = Event(event)
    roles = {Role.SYSTEM} if actor.type == "system" else roles_of(actor.user, request)
    transition = check(event, request, roles)
    reason = (reason or "").strip() or None
    if transition.reason_required and not reason:
        raise ReasonRequired("Indiquez un motif : il est transmis au demandeur.")
    source = state_of(request)
    target = target_of(transition, request)
    now = clock.now()
    changes = {
        "state": target.value,
        "version": request.version + 1,
        "state_changed_at": now,
        "updated_at": now,
        **(values or {}),
    }
    db.session.flush()  # pending edits first, so the conditional UPDATE is the decision
    result = db.session.execute(
        update(AuthorizationRequest)
        .where(
            AuthorizationRequest.id == request.id,
            AuthorizationRequest.state == source.value,
            AuthorizationRequest.version == request.version,
        )
        .values(**changes)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.session.expire(request)
        raise Conflict(
            "Cette demande vient d'être traitée par quelqu'un d'autre : votre action n'a pas "
            "été enregistrée. Rechargez la page pour voir sa décision."
        )
    for key, value in changes.items():
        set_committed_value(request, key, value)
    entry = RequestEvent(
        request=request,
        kind=event.value,
        actor_type="system" if actor.type == "system" else "user",
        actor_id=actor.user.id if actor.user is not None else None,
        actor_label=actor.label or "",
        from_state=source.value,
        to_state=target.value,
        text=reason,
        diff=diff,
        data=data,
        created_at=now,
    )
    db.session.add(entry)
    payload: dict[str, Any] = {"from": source.value, "to": target.value}
    if reason:
        payload["reason"] = reason
    if diff:
        payload["changed_fields"] = [change["field"] for change in diff]
    if data:
        payload.update(data)
    audit.record(
        AUDIT_TAGS[event],
        actor,
        subject=request,
        organisation_id=request.organisation_id,
        api_id=request.api_id,
        payload=payload,
    )
    return entry


# --- habilitations: active → obsolete | revoked (both final) ------------------------------


def _leave_active(habilitation: Habilitation, new_status: HabilitationStatus) -> None:
    if habilitation.status != HabilitationStatus.ACTIVE:
        raise Conflict(
            f"Cette habilitation est déjà « {HabilitationStatus(habilitation.status).label} »."
        )
    db.session.flush()
    result = db.session.execute(
        update(Habilitation)
        .where(Habilitation.id == habilitation.id, Habilitation.status == HabilitationStatus.ACTIVE)
        .values(status=new_status.value)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.session.expire(habilitation)
        raise Conflict("Cette habilitation vient d'être modifiée par quelqu'un d'autre.")
    set_committed_value(habilitation, "status", new_status.value)


def make_obsolete(habilitation: Habilitation, replaced_by: Habilitation, actor: Actor) -> None:
    """The approval of an update replaces ``habilitation`` by ``replaced_by``."""
    _leave_active(habilitation, HabilitationStatus.OBSOLETE)
    habilitation.obsoleted_at = clock.now()
    habilitation.replaced_by_id = replaced_by.id
    audit.record(
        Tag.HabilitationObsoleted,
        actor,
        subject=habilitation,
        organisation_id=habilitation.organisation_id,
        api_id=habilitation.api_id,
        payload={"replaced_by": replaced_by.id},
    )


def revoke_habilitation(habilitation: Habilitation, actor: Actor, reason: str | None) -> None:
    """Revoke ``habilitation`` (its request's revoke event calls this; tokens follow)."""
    _leave_active(habilitation, HabilitationStatus.REVOKED)
    habilitation.revoked_at = clock.now()
    habilitation.revoked_by_id = actor.user.id if actor.user is not None else None
    habilitation.revocation_reason = reason
    audit.record(
        Tag.HabilitationRevoked,
        actor,
        subject=habilitation,
        organisation_id=habilitation.organisation_id,
        api_id=habilitation.api_id,
        payload={"reason": reason},
    )
