"""Rules of authorization requests and habilitations.

Plain functions: each takes the acting :class:`~datapass.actor.Actor` and the objects
it works on, changes state (through :func:`datapass.authorizations.transitions.fire` for the
lifecycle), records the audit event, queues the mails — and flushes, never commits.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import selectinload

from datapass import clock, signals, spreadsheet
from datapass.accounts.models import Membership, Organisation, User
from datapass.audit import service as audit
from datapass.authorizations import states, transitions
from datapass.authorizations.documents import delete_unreferenced_documents, snapshot_documents
from datapass.authorizations.errors import InvalidRequest
from datapass.authorizations.models import (
    CONTACT_ROLES,
    AuthorizationRequest,
    Habilitation,
    MessageTemplate,
    RequestEvent,
)
from datapass.authorizations.sections import completion_errors
from datapass.authorizations.states import Event, HabilitationStatus, RequestState, Role
from datapass.authorizations.visibility import instructors_of
from datapass.catalogue.models import Api
from datapass.extensions import db
from datapass.notify import outbox

if TYPE_CHECKING:
    from datapass.actor import Actor
from datapass.authorizations.mails import mail_context, mail_requester
from datapass.authorizations.snapshots import diff, restore, snapshot

NEW_REQUEST_CATEGORY = "instruction_new_request"


# --- the lifecycle -----------------------------------------------------------------------


def submit(request: AuthorizationRequest, actor: Actor) -> RequestEvent:
    """Send the request to the API's instructors. Every field is checked
    (:class:`InvalidRequest` with the errors by field, nothing changed); the timeline
    records what changed since the previous submission."""
    states.check(Event.SUBMIT, request, states.roles_of(actor.user, request))
    errors = completion_errors(request)
    if errors:
        raise InvalidRequest(errors)
    current = snapshot(request)
    previous = request.submitted_snapshot
    changes = diff(previous, current, request.api.scope_labels())
    now = clock.now()
    values: dict[str, Any] = {"submitted_at": now}
    if request.first_submitted_at is None:
        values["first_submitted_at"] = now
    entry = transitions.fire(
        Event.SUBMIT,
        request,
        actor,
        diff=changes or None,
        values=values,
        data={"resubmission": previous is not None},
    )
    request.submitted_snapshot = current
    request.changes_warning_sent_at = None
    db.session.flush()
    # The files of the version sent back for changes, replaced in this one.
    delete_unreferenced_documents(request, snapshot_documents(previous), actor, "replaced")
    mail_requester(request, "request_submitted", resubmission=previous is not None)
    for instructor in instructors_of(request.api_id):
        outbox.queue_mail(
            instructor.email,
            "instruction_new_request",
            mail_context(
                request,
                instructor=instructor,
                changes=changes,
                unsubscribe_url=outbox.unsubscribe_link(instructor.email, NEW_REQUEST_CATEGORY),
            ),
            category=NEW_REQUEST_CATEGORY,
        )
    _mail_designated(request, previous, current)
    return entry


def _mail_designated(
    request: AuthorizationRequest, previous: dict[str, Any] | None, current: dict[str, Any]
) -> None:
    """Tell the responsable de traitement and the DPO they were named (once per address)."""
    for role in ("controller", "dpo"):
        email = current["contacts"][role]["email"]
        before = ((previous or {}).get("contacts", {}).get(role) or {}).get("email")
        if email and email.lower() != (before or "").lower():
            outbox.queue_mail(
                email,
                "request_designated",
                mail_context(
                    request, role_label=CONTACT_ROLES[role], contact=current["contacts"][role]
                ),
            )


def request_changes(request: AuthorizationRequest, actor: Actor, reason: str) -> RequestEvent:
    """Send the request back to the applicant with the instructor's reason."""
    entry = transitions.fire(Event.REQUEST_CHANGES, request, actor, reason=reason)
    mail_requester(request, "request_changes_requested", reason=entry.text)
    return entry


def approve(request: AuthorizationRequest, actor: Actor, note: str | None = None) -> Habilitation:
    """Validate the request: a habilitation freezes it (and the previous one, for an update,
    becomes obsolete); its token is issued."""
    previous = request.active_habilitation
    note = (note or "").strip() or None
    entry = transitions.fire(
        Event.APPROVE, request, actor, reason=note, values={"decided_at": clock.now()}
    )
    habilitation = Habilitation(
        request=request,
        organisation_id=request.organisation_id,
        api_id=request.api_id,
        requester_id=request.requester_id,
        scopes=list(request.scopes),
        status=HabilitationStatus.ACTIVE,
        snapshot=request.submitted_snapshot or snapshot(request),
        created_at=clock.now(),
        approved_by_id=actor.user.id if actor.user is not None else None,
        approval_note=note,
    )
    db.session.add(habilitation)
    db.session.flush()
    entry.data = {**(entry.data or {}), "habilitation_id": habilitation.id}
    audit.record(
        "authorizations:habilitation:created",
        actor,
        subject=habilitation,
        organisation_id=habilitation.organisation_id,
        api_id=habilitation.api_id,
        payload={"request_id": request.id, "scopes": habilitation.scopes},
    )
    if previous is not None:
        transitions.make_obsolete(previous, habilitation, actor)
    signals.habilitation_approved.send(habilitation, actor=actor)
    if previous is not None:
        # The replaced habilitation's live tokens give way to the new one's, with a grace
        # period (and a renewal waiting on this update completes): the lifecycle's rules.
        signals.habilitation_updated.send(previous, habilitation=habilitation, actor=actor)
    mail_requester(request, "request_approved", habilitation=habilitation, note=note)
    return habilitation


def refuse(request: AuthorizationRequest, actor: Actor, reason: str) -> RequestEvent:
    """Refuse the request (final), or refuse an update: the habilitation in force stays and
    the request returns to its validated content."""
    reopening = states.is_reopening(request)
    entry = transitions.fire(
        Event.REFUSE, request, actor, reason=reason, values={"decided_at": clock.now()}
    )
    if reopening:
        restore(request, request.active_habilitation.snapshot, actor)
        signals.update_closed.send(request, actor=actor)
    mail_requester(request, "request_refused", reason=entry.text, reopening=reopening)
    return entry


def archive(request: AuthorizationRequest, actor: Actor, reason: str | None = None) -> RequestEvent:
    """Archive a draft or a refused request."""
    return transitions.fire(Event.ARCHIVE, request, actor, reason=reason)


def reopen(request: AuthorizationRequest, actor: Actor) -> RequestEvent:
    """Open an update of a validated request; its habilitation stays active meanwhile."""
    return transitions.fire(Event.REOPEN, request, actor)


def cancel_reopening(request: AuthorizationRequest, actor: Actor) -> RequestEvent:
    """Abandon an update: the request returns to the content of its habilitation."""
    habilitation = request.active_habilitation
    entry = transitions.fire(Event.CANCEL_REOPENING, request, actor)
    restore(request, habilitation.snapshot, actor)
    signals.update_closed.send(request, actor=actor)
    return entry


def revoke(request: AuthorizationRequest, actor: Actor, reason: str) -> RequestEvent:
    """Revoke the request's habilitation and its tokens, with the reason given to the
    organisation."""
    habilitation = request.active_habilitation
    entry = transitions.fire(Event.REVOKE, request, actor, reason=reason)
    if habilitation is not None:
        transitions.revoke_habilitation(habilitation, actor, entry.text)
        signals.habilitation_revoked.send(habilitation, actor=actor, reason=entry.text)
    recipients = {request.requester.email}
    if habilitation is not None:
        recipients |= {
            e for e in (habilitation.technical_contact_email, habilitation.controller_email) if e
        }
    # One message to each recipient, rendered once (the lifecycle closes hundreds a day).
    outbox.queue_mails(
        [
            (
                sorted(recipients),
                "request_revoked",
                mail_context(request, reason=entry.text, habilitation=habilitation),
            )
        ]
    )
    return entry


TRANSITION_FUNCTIONS = {
    Event.SUBMIT: lambda r, a, text: submit(r, a),
    Event.REQUEST_CHANGES: lambda r, a, text: request_changes(r, a, text),
    Event.APPROVE: lambda r, a, text: approve(r, a, text),
    Event.REFUSE: lambda r, a, text: refuse(r, a, text),
    Event.ARCHIVE: lambda r, a, text: archive(r, a, text),
    Event.REOPEN: lambda r, a, text: reopen(r, a),
    Event.CANCEL_REOPENING: lambda r, a, text: cancel_reopening(r, a),
    Event.REVOKE: lambda r, a, text: revoke(r, a, text),
}


def transition(
    request: AuthorizationRequest, event: Event | str, actor: Actor, text: str | None = None
) -> Any:
    """Fire ``event`` with its effects (one entry point for the views and the tests)."""
    return TRANSITION_FUNCTIONS[Event(event)](request, actor, text)


# --- messages, transfers -----------------------------------------------------------------


def post_message(request: AuthorizationRequest, actor: Actor, body: str) -> RequestEvent:
    """A message on the request, between the organisation and the API's instructors; the
    other side is e-mailed."""
    roles = states.roles_of(actor.user, request)
    if not states.can_message(request, actor.user):
        raise states.NotAllowed("Vous ne pouvez pas écrire sur cette demande.")
    body = (body or "").strip()
    if not body:
        raise InvalidRequest({"body": ["Écrivez un message."]})
    if len(body) > 5000:
        raise InvalidRequest({"body": ["Le message ne doit pas dépasser 5 000 caractères."]})
    # Someone both applicant and instructor writes as the applicant on their own request.
    side = "applicant" if Role.APPLICANT in roles else "instructor"
    entry = RequestEvent(
        request=request,
        kind="message",
        actor_type="user",
        actor_id=actor.user.id,
        actor_label=actor.label or "",
        side=side,
        text=body,
        created_at=clock.now(),
    )
    db.session.add(entry)
    db.session.flush()
    audit.record(
        "authorizations:request:message_posted",
        actor,
        subject=request,
        organisation_id=request.organisation_id,
        api_id=request.api_id,
        payload={"side": side, "event_id": entry.id, "length": len(body)},
    )
    if side == "instructor":
        mail_requester(request, "request_message", message=entry)
    else:
        for instructor in instructors_of(request.api_id):
            outbox.queue_mail(
                instructor.email, "instruction_message", mail_context(request, message=entry)
            )
    return entry


def transfer_candidates(request: AuthorizationRequest) -> list[User]:
    """Members of the organisation who may take the request over."""
    query = (
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(
            Membership.organisation_id == request.organisation_id,
            User.id != request.requester_id,
            User.is_active_account.is_(True),
        )
        .order_by(User.full_name, User.email)
    )
    return list(db.session.scalars(query))


def transfer(request: AuthorizationRequest, new_requester: User, actor: Actor) -> RequestEvent:
    """Hand a request (and its habilitation in force) to another member of the organisation,
    e.g. when an agent leaves."""
    if not states.can_transfer(request, actor.user):
        raise states.NotAllowed("Vous ne pouvez pas transférer cette demande.")
    if new_requester.id == request.requester_id:
        raise InvalidRequest({"user_id": ["Cette personne est déjà en charge de la demande."]})
    if new_requester.membership(request.organisation_id) is None:
        raise InvalidRequest({"user_id": ["Cette personne n'est pas membre de l'organisation."]})
    previous = request.requester
    request.requester_id = new_requester.id
    request.updated_at = clock.now()
    habilitation = request.active_habilitation
    if habilitation is not None:
        habilitation.requester_id = new_requester.id
    entry = RequestEvent(
        request=request,
        kind="transfer",
        actor_type="user",
        actor_id=actor.user.id,
        actor_label=actor.label or "",
        text=f"Transférée de {previous.display_name} à {new_requester.display_name}",
        data={"from_user_id": previous.id, "to_user_id": new_requester.id},
        created_at=clock.now(),
    )
    db.session.add(entry)
    db.session.flush()
    db.session.refresh(request, ["requester"])
    for subject, tag in ((request, "request"), (habilitation, "habilitation")):
        if subject is None:
            continue
        audit.record(
            f"authorizations:{tag}:transferred",
            actor,
            subject=subject,
            organisation_id=request.organisation_id,
            api_id=request.api_id,
            payload={"from_user_id": previous.id, "to_user_id": new_requester.id},
        )
    outbox.queue_mail(
        new_requester.email,
        "habilitation_transferred",
        mail_context(request, previous=previous, habilitation=habilitation),
    )
    return entry


# --- message templates -------------------------------------------------------------------


def templates_for(user: User, api_id: int | None = None) -> list[MessageTemplate]:
    """The message templates of the APIs ``user`` instructs."""
    ids = user.instructed_api_ids()
    if api_id is not None:
        ids = ids & {api_id}
    if not ids:
        return []
    query = select(MessageTemplate).where(MessageTemplate.api_id.in_(ids))
    return list(db.session.scalars(query.order_by(MessageTemplate.api_id, MessageTemplate.title)))


def get_template(template_id: int, user: User) -> MessageTemplate | None:
    ids = user.instructed_api_ids()
    return db.session.scalar(
        select(MessageTemplate).where(
            MessageTemplate.id == template_id, MessageTemplate.api_id.in_(ids or {-1})
        )
    )


def save_template(
    user: User,
    actor: Actor,
    api_id: int,
    title: str,
    body: str,
    template: MessageTemplate | None = None,
) -> MessageTemplate:
    """Create or change a message template of an API ``user`` instructs."""
    if api_id not in user.instructed_api_ids():
        raise InvalidRequest({"api_id": ["Vous n'instruisez pas cette API."]})
    now = clock.now()
    if template is None:
        template = MessageTemplate(api_id=api_id, created_by_id=user.id, created_at=now)
        db.session.add(template)
    template.api_id, template.title, template.body = api_id, title.strip(), body.strip()
    template.updated_at = now
    db.session.flush()
    audit.record(
        "authorizations:template:saved",
        actor,
        subject=template,
        api_id=api_id,
        payload={"title": template.title},
    )
    return template


def delete_template(template: MessageTemplate, actor: Actor) -> None:
    template_id, api_id = template.id, template.api_id
    db.session.delete(template)
    db.session.flush()
    audit.record(
        "authorizations:template:deleted",
        actor,
        subject_type="message_templates",
        subject_id=template_id,
        api_id=api_id,
    )


# --- the instructor's queue ----------------------------------------------------------------


@dataclass
class QueueFilters:
    state: str = RequestState.SUBMITTED.value  # "" = every state
    api_id: int | None = None
    organisation: str = ""  # SIRET or part of the name
    text: str = ""  # part of the title or the reference
    page: int = 1
    organisation_ids: list[int] | None = None  # resolved from ``organisation`` once


@dataclass
class QueuePage:
    items: list[AuthorizationRequest]
    total: int
    page: int
    per_page: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _contains(column, needle: str):
    """Case-insensitive substring match. SQLite's LIKE already ignores ASCII case (and its
    lower() folds nothing else), so it skips a lower() call per row there."""
    if db.session.get_bind().dialect.name == "sqlite":
        return column.contains(needle, autoescape=True)
    return column.icontains(needle, autoescape=True)


ORGANISATION_MATCHES = 1000


def _matching_organisations(filters: QueueFilters) -> list[int]:
    """Organisations whose SIRET is, or whose name contains, the filter (looked up once per
    page, not once per query)."""
    if filters.organisation_ids is None:
        needle = filters.organisation.strip()
        filters.organisation_ids = list(
            db.session.scalars(
                select(Organisation.id)
                .where(
                    or_(
                        Organisation.siret == needle.replace(" ", ""),
                        _contains(Organisation.name, needle),
                    )
                )
                .limit(ORGANISATION_MATCHES)
            )
        )
    return filters.organisation_ids


def queue_query(user: User, filters: QueueFilters, *, with_state: bool = True) -> Select:
    api_ids = user.instructed_api_ids()
    if filters.api_id is not None:
        api_ids &= {filters.api_id}
    text_search, by_reference = filters.text.strip(), None
    reference = text_search.upper().removeprefix("DP-").lstrip("0")
    # A reference is an id: ASCII digits that fit the column (else it names no request).
    as_id = int(reference) if reference.isascii() and reference.isdigit() else None
    if as_id is not None and as_id > 2**31 - 1:
        as_id = -1
    if text_search.upper().startswith("DP-") and as_id is not None:
        by_reference = as_id
    api_column = AuthorizationRequest.api_id
    if text_search and by_reference is None:
        # A substring search reads every row anyway: one sequential scan beats tens of
        # thousands of index-then-row lookups ("+ 0" keeps the planner off the index).
        api_column = AuthorizationRequest.api_id + 0
    query = select(AuthorizationRequest).where(api_column.in_(api_ids or {-1}))
    if with_state and filters.state:
        query = query.where(AuthorizationRequest.state == filters.state)
    if filters.organisation:
        query = query.where(
            AuthorizationRequest.organisation_id.in_(_matching_organisations(filters) or [-1])
        )
    if by_reference is not None:
        query = query.where(AuthorizationRequest.id == by_reference)
    elif text_search:
        clauses = [_contains(AuthorizationRequest.title, text_search)]
        if as_id is not None:
            clauses.append(AuthorizationRequest.id == as_id)
        query = query.where(or_(*clauses))
    return query


def instructor_queue(user: User, filters: QueueFilters, per_page: int | None = None) -> QueuePage:
    """The requests of the APIs ``user`` instructs, filtered, oldest waiting first, one page,
    with the number of requests in each state (under the other filters)."""
    per_page = per_page or current_app.config["QUEUE_PAGE_SIZE"]
    # One grouped count serves both the counts per state and the total of the page's state.
    # Grouped by (api, state), the order of the queue index: no sort, then summed here. A
    # title search scans the waiting index instead, where that grouping would not help.
    base = queue_query(user, filters, with_state=False).subquery()
    groups = [base.c.state] if filters.text.strip() else [base.c.api_id, base.c.state]
    counts = {s.value: 0 for s in RequestState}
    for state, count in db.session.execute(select(base.c.state, func.count()).group_by(*groups)):
        counts[state] += count
    total = counts.get(filters.state, 0) if filters.state else sum(counts.values())
    page = max(1, min(filters.page, max(1, -(-total // per_page))))
    # Deferred join: sort and skip over the (covering) index, then load only the page's rows.
    ids = list(
        db.session.scalars(
            queue_query(user, filters)
            .with_only_columns(AuthorizationRequest.id)
            .order_by(AuthorizationRequest.state_changed_at, AuthorizationRequest.id)
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
    )
    rows = {
        r.id: r
        for r in db.session.scalars(
            select(AuthorizationRequest)
            .where(AuthorizationRequest.id.in_(ids or [-1]))
            .options(
                selectinload(AuthorizationRequest.organisation),
                selectinload(AuthorizationRequest.api),
            )
        )
    }
    return QueuePage([rows[i] for i in ids], total, page, per_page, counts)


def queue_rows(user: User, filters: QueueFilters) -> Iterator[list[Any]]:
    """Every request of the filtered queue as export rows (no pagination), header first."""
    yield [
        "Référence",
        "Intitulé",
        "Organisation",
        "SIRET",
        "API",
        "État",
        "Première soumission",
        "Dernier changement d'état",
        "Jours d'attente",
        "Demandeur",
    ]
    query = (
        queue_query(user, filters)
        .options(
            selectinload(AuthorizationRequest.organisation),
            selectinload(AuthorizationRequest.api),
            selectinload(AuthorizationRequest.requester),
        )
        .order_by(AuthorizationRequest.state_changed_at, AuthorizationRequest.id)
    )
    now = clock.now()
    for request in db.session.scalars(query.execution_options(yield_per=1000)):
        yield [
            request.reference,
            request.title,
            request.organisation.name,
            request.organisation.siret,
            request.api.name,
            RequestState(request.state).label,
            _iso_local(request.first_submitted_at),
            _iso_local(request.state_changed_at),
            (now - clock.as_utc(request.state_changed_at)).days,
            request.requester.email,
        ]


def _iso_local(moment: datetime | None) -> str:
    local = clock.local(moment)
    return local.strftime("%Y-%m-%d %H:%M") if local is not None else ""


@dataclass(frozen=True)
class InstructorAsks:
    """What the instructors asked that the organisation has not answered yet."""

    change_request: RequestEvent | None  # the latest, while the request waits for changes
    messages: list[RequestEvent]  # instructors' messages since the organisation last spoke

    def __bool__(self) -> bool:
        return self.change_request is not None or bool(self.messages)


def instructor_asks(request: AuthorizationRequest) -> InstructorAsks:
    """The top of the applicant's page: the latest change request (while the request is in
    changes_requested) and the instructors' messages written after the organisation's last
    message or submission, oldest first."""
    change_request = None
    if request.state == RequestState.CHANGES_REQUESTED:
        change_request = next(
            (e for e in reversed(request.events) if e.kind == Event.REQUEST_CHANGES), None
        )
    messages: list[RequestEvent] = []
    for entry in reversed(request.events):
        if entry.kind == Event.SUBMIT or (entry.kind == "message" and entry.side == "applicant"):
            break
        if entry.kind == "message" and entry.side == "instructor":
            messages.append(entry)
    return InstructorAsks(change_request, messages[::-1])


def waiting_days(request: AuthorizationRequest) -> int:
    return (clock.now() - clock.as_utc(request.state_changed_at)).days


# --- statistics --------------------------------------------------------------------------


# Time to decision, in days: the distribution's buckets (upper bound included; None: above).
DECISION_BUCKETS = (
    (7, "t1", "en 7 jours au plus"),
    (30, "t2", "en 8 à 30 jours"),
    (60, "t3", "en 31 à 60 jours"),
    (None, "t4", "en plus de 60 jours"),
)


def decision_bucket(days: float) -> int:
    """The index in :data:`DECISION_BUCKETS` of a decision taken after ``days`` days (a
    decision after 7 days and 2 hours is "in 8 to 30 days")."""
    for index, (limit, _tone, _label) in enumerate(DECISION_BUCKETS):
        if limit is not None and days <= limit:
            return index
    return len(DECISION_BUCKETS) - 1


@dataclass
class DecisionStats:
    api_name: str
    month: str  # YYYY-MM (Paris)
    decisions: int
    median_days: float
    p90_days: float
    buckets: tuple[int, ...] = ()  # decisions per DECISION_BUCKETS


def decision_statistics(user: User) -> list[DecisionStats]:
    """Per API and per month of decision: the median and 90th percentile time (in days)
    from first submission to approval or refusal, and how many decisions fell in each of
    :data:`DECISION_BUCKETS`, for the APIs ``user`` instructs."""
    api_ids = user.instructed_api_ids() or {-1}
    rows = db.session.execute(
        select(Api.name, AuthorizationRequest.first_submitted_at, RequestEvent.created_at)
        .join(AuthorizationRequest, RequestEvent.request_id == AuthorizationRequest.id)
        .join(Api, Api.id == AuthorizationRequest.api_id)
        .where(
            AuthorizationRequest.api_id.in_(api_ids),
            RequestEvent.kind.in_([Event.APPROVE.value, Event.REFUSE.value]),
            AuthorizationRequest.first_submitted_at.is_not(None),
        )
    ).all()
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for api_name, submitted, decided in rows:
        days = (clock.as_utc(decided) - clock.as_utc(submitted)).total_seconds() / 86400
        groups[(api_name, clock.local(decided).strftime("%Y-%m"))].append(days)
    stats = []
    for (api_name, month), values in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        buckets = [0] * len(DECISION_BUCKETS)
        for value in values:
            buckets[decision_bucket(value)] += 1
        stats.append(
            DecisionStats(
                api_name,
                month,
                len(values),
                round(statistics.median(values), 1),
                round(_p90(values), 1),
                tuple(buckets),
            )
        )
    return stats


def _months_back(months: int) -> list[str]:
    """``YYYY-MM`` of this month (Paris) and the ``months - 1`` before, oldest first."""
    today = clock.today()
    year, month = today.year, today.month
    found = []
    for _ in range(months):
        found.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return found[::-1]


def decision_charts(stats: list[DecisionStats], months: int = 12) -> list[dict[str, Any]]:
    """Per API with decisions: the distribution of decision times per month over the last
    ``months`` months (a stacked bar chart, :mod:`datapass.charts`) and every month's
    figures (the table)."""
    from datapass import charts, formatting

    series = [
        charts.Series(f"b{i}", "décision", "décisions", tone, label)
        for i, (_limit, tone, label) in enumerate(DECISION_BUCKETS)
    ]
    window = _months_back(months)
    by_api: dict[str, dict[str, DecisionStats]] = defaultdict(dict)
    for stat in stats:
        by_api[stat.api_name][stat.month] = stat
    result = []
    for api_name in sorted(by_api):
        per_month = by_api[api_name]
        points = []
        for month in window:
            stat = per_month.get(month)
            values = {f"b{i}": (stat.buckets[i] if stat else 0) for i in range(len(series))}
            points.append(
                charts.Point(
                    label=formatting.month_short(month),
                    title=formatting.month(month),
                    values=values,
                    attrs={"month": month, "decisions": stat.decisions if stat else 0},
                )
            )
        result.append(
            {
                "api": api_name,
                "chart": charts.bar_chart(points, series, label_every=1),
                "rows": [per_month[m] for m in sorted(per_month, reverse=True)],
                "series": series,
            }
        )
    return result


def _p90(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


# --- exports -----------------------------------------------------------------------------


def export_csv(user: User, filters: QueueFilters) -> Iterator[str]:
    """The filtered queue as CSV text chunks (streamed; `;`-separated, UTF-8 with BOM for
    spreadsheet software)."""
    return spreadsheet.csv_stream(None, queue_rows(user, filters))


def export_xlsx(user: User, filters: QueueFilters) -> bytes:
    """The filtered queue as an XLSX workbook (openpyxl, write-only mode)."""
    import io

    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Demandes")
    for row in queue_rows(user, filters):
        sheet.append([spreadsheet.safe_cell(v) for v in row])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
