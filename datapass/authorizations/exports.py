"""The filtered queue as CSV (streamed) and XLSX."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from openpyxl import Workbook
from sqlalchemy.orm import selectinload

from datapass import clock, spreadsheet
from datapass.authorizations.models import AuthorizationRequest
from datapass.authorizations.queue import queue_query
from datapass.authorizations.states import RequestState
from datapass.extensions import db

if TYPE_CHECKING:
    from datapass.accounts.models import User
    from datapass.authorizations.queue import QueueFilters


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


def export_csv(user: User, filters: QueueFilters) -> Iterator[str]:
    """The filtered queue as CSV text chunks (streamed; `;`-separated, UTF-8 with BOM for
    spreadsheet software)."""
    return spreadsheet.csv_stream(None, queue_rows(user, filters))


def export_xlsx(user: User, filters: QueueFilters) -> bytes:
    """The filtered queue as an XLSX workbook (openpyxl, write-only mode)."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Demandes")
    for row in queue_rows(user, filters):
        sheet.append([spreadsheet.safe_cell(v) for v in row])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
