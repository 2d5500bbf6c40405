"""What every mail about a request carries, and the mail to its requester."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datapass.notify import outbox

if TYPE_CHECKING:
    from datapass.authorizations.models import AuthorizationRequest

    pass


def mail_context(request: AuthorizationRequest, **extra: Any) -> dict[str, Any]:
    return {"request": request, "api": request.api, "organisation": request.organisation, **extra}


def mail_requester(request: AuthorizationRequest, template: str, **extra: Any) -> None:
    """Mail ``template`` to the requester, with the request, its API and organisation."""
    outbox.queue_mail(request.requester.email, template, mail_context(request, **extra))
