"""Unused access: the evidence of a token's last use, and the steps of the unused-access
policy (never used, warning, suspension, revocation) that the sweep does when they fall due.

Part of the sweep's hot path: the newest calls of a whole chunk are read in one query.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select

from datapass.actor import Actor
from datapass.consumption.models import UsageRecent
from datapass.extensions import db
from datapass.formatting import plural
from datapass.lifecycle.days import days_after, format_day
from datapass.lifecycle.mails import mail_context
from datapass.lifecycle.plan import Step, StepOutcome, unused_since, unused_thresholds
from datapass.lifecycle.reactivation import SELF_REACTIVATION
from datapass.tokens import mails as token_mails
from datapass.tokens import states as token_states
from datapass.tokens import transitions as token_transitions
from datapass.tokens.models import AccessToken

if TYPE_CHECKING:
    from datapass.catalogue.models import Api
    from datapass.lifecycle.sweep import Effects


def newest_calls(token_ids: list[int]) -> dict[int, Any]:
    """The newest reported call of each token (``None`` for a token without any), in one
    query: what :func:`last_use_evidence` reads, for a whole chunk of the sweep."""
    found: dict[int, Any] = dict.fromkeys(token_ids)
    if not token_ids:
        return found
    newest = (
        select(UsageRecent.token_id, func.max(UsageRecent.occurred_at).label("at"))
        .where(UsageRecent.token_id.in_(token_ids))
        .group_by(UsageRecent.token_id)
        .subquery()
    )
    rows = db.session.execute(
        select(
            UsageRecent.token_id,
            UsageRecent.occurred_at,
            UsageRecent.endpoint,
            UsageRecent.caller_ip,
        ).join(
            newest,
            and_(
                UsageRecent.token_id == newest.c.token_id,
                UsageRecent.occurred_at == newest.c.at,
            ),
        )
    )
    for row in rows:
        if found[row.token_id] is None:
            found[row.token_id] = row
    return found


def last_use_evidence(token: AccessToken, calls: dict[int, Any] | None = None) -> dict[str, Any]:
    """The last use known: moment, address and endpoint (from reported consumption).
    ``calls``: the newest calls already read (:func:`newest_calls`), when they cover it."""
    evidence: dict[str, Any] = {
        "last_used_at": token.last_used_at,
        "ip": token.last_used_ip,
        "endpoint": None,
    }
    if calls is not None and token.id in calls:
        row = calls[token.id]
    else:
        row = newest_calls([token.id])[token.id]
    if row is not None:
        if evidence["last_used_at"] is None or row.occurred_at >= evidence["last_used_at"]:
            evidence["last_used_at"] = row.occurred_at
            evidence["ip"] = row.caller_ip or evidence["ip"]
        evidence["endpoint"] = row.endpoint
    return evidence


def _unused_context(
    token: AccessToken, api: Api, step: Step, done: set[str], fx: Effects
) -> dict[str, Any]:
    limits = unused_thresholds(api)
    since = unused_since(token)
    return mail_context(
        token,
        api,
        days=step.days,
        evidence=last_use_evidence(token, fx.calls),
        since=since,
        suspend_on=days_after(since, limits["suspend"]) if limits["suspend"] > 0 else None,
        revoke_on=days_after(since, limits["revoke"]) if limits["revoke"] > 0 else None,
        can_self_reactivate=SELF_REACTIVATION not in done,
    )


def do_never_used(
    token: AccessToken,
    api: Api,
    step: Step,
    skipped: list[Step],
    actor: Actor,
    fx: Effects,
    done: set[str],
) -> StepOutcome:
    sent = fx.mail(
        token_mails.holder_emails(token),
        "unused_never_used",
        _unused_context(token, api, step, done, fx),
    )
    return "done", {"mails": sent}


def do_unused_warning(
    token: AccessToken,
    api: Api,
    step: Step,
    skipped: list[Step],
    actor: Actor,
    fx: Effects,
    done: set[str],
) -> StepOutcome:
    context = _unused_context(token, api, step, done, fx)
    recipients = token_mails.holder_emails(token) + fx.instructors(token.api_id)
    sent = fx.mail(recipients, "unused_warning", context)
    evidence = context["evidence"]
    return "done", {
        "mails": sent,
        "last_used_at": evidence["last_used_at"].isoformat() if evidence["last_used_at"] else None,
        "ip": evidence["ip"],
        "endpoint": evidence["endpoint"],
    }


def _why(token: AccessToken, days: int) -> str:
    last = token.last_used_at
    basis = (
        f"dernière utilisation le {format_day(last)}"
        if last
        else "jamais utilisé depuis sa délivrance"
    )
    return f"Jeton non utilisé depuis {plural(days, 'jour', 'jours')} ({basis})."


def do_unused_suspend(
    token: AccessToken,
    api: Api,
    step: Step,
    skipped: list[Step],
    actor: Actor,
    fx: Effects,
    done: set[str],
) -> StepOutcome:
    if not token_states.may_suspend(token.status):
        return "void", None
    context = _unused_context(token, api, step, done, fx)
    token_transitions.apply(
        token,
        "suspend",
        actor,
        reason=_why(token, step.days or 0),
        payload={"cause": "unused", "days": step.days, "since": unused_since(token).isoformat()},
    )
    sent = fx.mail(
        token_mails.holder_emails(token) + fx.instructors(token.api_id),
        "unused_suspended",
        context,
    )
    return "done", {"mails": sent}


def do_unused_revoke(
    token: AccessToken,
    api: Api,
    step: Step,
    skipped: list[Step],
    actor: Actor,
    fx: Effects,
    done: set[str],
) -> StepOutcome:
    if not token_states.is_in_force(token.status):
        return "void", None
    context = _unused_context(token, api, step, done, fx)
    evidence = context["evidence"]
    token_transitions.apply(
        token,
        "revoke",
        actor,
        reason=_why(token, step.days or 0),
        payload={
            "cause": "unused",
            "days": step.days,
            "since": unused_since(token).isoformat(),
            "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
            "last_used_ip": evidence["ip"],
            "last_endpoint": evidence["endpoint"],
        },
    )
    sent = fx.mail(
        token_mails.holder_emails(token) + fx.instructors(token.api_id),
        "unused_revoked",
        context,
    )
    return "done", {"mails": sent}
