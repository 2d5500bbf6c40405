"""What the lifecycle's mails say about a token: the links to its page and to its renewal,
and the context every lifecycle template receives."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import current_app

from datapass.lifecycle.days import format_day
from datapass.notify import outbox

if TYPE_CHECKING:
    from datapass.catalogue.models import Api
    from datapass.lifecycle.sweep import TokenRow
    from datapass.tokens.models import AccessToken

RENEW_PATH = "/jetons/{id}/renouvellement"


def renewal_url(token: AccessToken | TokenRow) -> str:
    return current_app.config["BASE_URL"].rstrip("/") + RENEW_PATH.format(id=token.id)


def token_url(token: AccessToken | TokenRow) -> str:
    return current_app.config["BASE_URL"].rstrip("/") + f"/jetons/{token.id}"


def mail_context(token: AccessToken | TokenRow, api: Api, **extra: Any) -> dict[str, Any]:
    habilitation = token.habilitation
    labels = api.scope_labels()
    return {
        "token": token,
        "api": api,
        "habilitation": habilitation,
        "organisation": habilitation.organisation,
        "scopes": [labels.get(code, code) for code in token.scopes],
        "expires_at": token.expires_at,
        "expires_on": format_day(token.expires_at),
        "renew_url": renewal_url(token),
        "token_url": token_url(token),
        **extra,
    }


def mail_now(recipients: Iterable[str], template: str, context: dict[str, Any]) -> int:
    """Queue one message to each recipient now (pages: a handful of mails; the sweep gathers
    its own and writes them in bulk)."""
    n = 0
    for recipient in dict.fromkeys(recipients):
        outbox.queue_mail(recipient, template, context)
        n += 1
    return n
