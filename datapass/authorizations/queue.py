"""The instructor's queue: the requests of the APIs they instruct, filtered, oldest waiting
first, one page at a time.

Written for speed (the queue's budget, DESIGN §6, ``benchmarks/bench_queue.py``): one grouped
count over the queue index, a page sorted and skipped over the covering waiting index before
its rows are loaded, the organisation filter resolved once; the comments say why each is so."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import selectinload

from datapass import clock
from datapass.accounts.models import Organisation
from datapass.authorizations.models import AuthorizationRequest
from datapass.authorizations.states import RequestState
from datapass.extensions import db

if TYPE_CHECKING:
    from datapass.accounts.models import User

    pass


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


def waiting_days(request: AuthorizationRequest) -> int:
    return (clock.now() - clock.as_utc(request.state_changed_at)).days
