"""The mails an act on a token sends: to its holders (the habilitation's requester, technical
contact and controller) and, for a leak, to the API's instructors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datapass.accounts import directory as accounts_directory
from datapass.notify import outbox

if TYPE_CHECKING:
    from datapass.tokens.models import AccessToken


def holder_emails(token: AccessToken) -> list[str]:
    """The holders' addresses, lower-cased, each once."""
    habilitation = token.habilitation
    emails = [
        habilitation.requester_email,
        habilitation.technical_contact_email,
        habilitation.controller_email,
    ]
    return list(dict.fromkeys(e.lower() for e in emails if e))


def mail_holders(token: AccessToken, template: str, *, instructors: bool = False, **ctx) -> None:
    """Queue ``template`` to each holder (and the API's instructors with ``instructors``)."""
    recipients = holder_emails(token)
    if instructors:
        recipients += [
            e for e in accounts_directory.instructor_emails(token.api_id) if e not in recipients
        ]
    context = {"token": token, "habilitation": token.habilitation, "api": token.api, **ctx}
    for recipient in recipients:
        outbox.queue_mail(recipient, template, context)
