"""Lifecycle rules: reminders, expiry, grace ends, unused access, renewal, closing.

Each token carries ``lifecycle_due_at``, the next moment anything is due for it. The
scheduler claims the due tokens through that index (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), works out from the token's state which steps fell due (:func:`plan`), does each
one exactly once (a :class:`LifecycleAct` row, unique per token and step, is written in the
same transaction as the mail, webhook or state change) and sets the next due moment. After
downtime, within one chain of steps only the latest that fell due is done; the earlier ones
are recorded as skipped.

Calendar days are Paris days: a step "on day D" is due at 00:00 (Europe/Paris) on D.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from flask import current_app
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from datapass import bulk, clock, signals, spreadsheet
from datapass.accounts import service as accounts_service
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.models import UsageRecent
from datapass.catalogue.models import RenewalPolicy
from datapass.extensions import db, pause_for_writers
from datapass.formatting import plural
from datapass.lifecycle import states as renewal_states
from datapass.lifecycle.models import DigestSent, LifecycleAct, Renewal
from datapass.lifecycle.states import RenewalStatus
from datapass.tokens import mails as token_mails
from datapass.tokens import queries as token_queries
from datapass.tokens import service as tokens_service
from datapass.tokens import states as token_states
from datapass.tokens import transitions as token_transitions
from datapass.tokens.models import AccessToken
from datapass.tokens.states import TokenStatus

REMINDER_DAYS = (90, 60, 30, 15, 7, 1, 0)
WEBHOOK_DAYS = frozenset({30, 7})  # token.expiring to the provider
MAX_GRACE_DAYS = 90
DIGEST_CATEGORY = "lifecycle_digest"
RENEW_PATH = "/jetons/{id}/renouvellement"


log = logging.getLogger("datapass.lifecycle")


class LifecycleError(Exception):
    """An act refused, with a French message for the page."""


# --- time --------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def day_start(day: date) -> datetime:
    """00:00 in Paris on ``day``, as an aware UTC moment."""
    return datetime.combine(day, time(0), tzinfo=clock.PARIS).astimezone(UTC)


def paris_day(moment: datetime) -> date:
    return clock.local(moment).date()


def format_day(moment: datetime | date | None) -> str:
    """``31/07/2028`` (Paris day): what mails print, without strftime's cost in a sweep."""
    if moment is None:
        return "—"
    day = paris_day(moment) if isinstance(moment, datetime) else moment
    return f"{day.day:02d}/{day.month:02d}/{day.year}"


def _days_after(moment: datetime, days: int) -> datetime:
    return day_start(paris_day(moment) + timedelta(days=days))


# --- the plan of a token -----------------------------------------------------------------


class Step(NamedTuple):  # a tuple: a sweep builds a dozen per token
    at: datetime
    chain: str  # steps of one chain catch up to the latest only
    key: str  # unique per token (LifecycleAct.key)
    kind: str
    label: str  # what the token page says ("Sera suspendu faute d'utilisation")
    days: int | None = None


def unused_thresholds(api) -> dict[str, int]:
    """The API's unused-access grading, in days (0 or less: that step is off)."""
    return {
        "never_used": int(api.unused_never_used_warning_days or 0),
        "warning": int(api.unused_warning_days or 0),
        "suspend": int(api.unused_suspend_days or 0),
        "revoke": int(api.unused_revoke_days or 0),
    }


def unused_since(token: AccessToken | TokenRow) -> datetime:
    """Where the unused-access count starts: the last use (any channel), else issuance; a
    lifted suspension restarts it."""
    moments = [m for m in (token.issued_at, token.last_used_at, token.reactivated_at) if m]
    return max(clock.as_utc(m) for m in moments)


def _stamp(moment: datetime) -> str:
    """The idle period a step belongs to (its start, in epoch seconds): a use or a
    reactivation starts a new period, whose steps are new acts."""
    return str(int(moment.timestamp()))


def plan(token: AccessToken | TokenRow, api) -> list[Step]:
    """Every step of ``token``'s life from its current state, past and future, in time order.
    Which of them are done is known from its :class:`LifecycleAct` rows."""
    status = token.status
    expires_at = clock.as_utc(token.expires_at)
    steps: list[Step] = []
    if status == TokenStatus.ACTIVE:
        issued_at = clock.as_utc(token.issued_at)
        steps.extend(
            step for step in _reminders(paris_day(expires_at)) if issued_at < step.at < expires_at
        )
    if status in token_states.LIVE:
        steps.append(Step(expires_at, "expiry", "expiry", "expire", "Expirera"))
    if status == TokenStatus.EXPIRED:
        steps.append(Step(expires_at, "expiry", "expiry", "expire", "A expiré"))
        close_days = current_app.config["LIFECYCLE_CLOSE_AFTER_DAYS"]
        steps.append(
            Step(
                _days_after(expires_at, close_days),
                "closure",
                "closure",
                "closure",
                "L'habilitation sera close faute de renouvellement",
            )
        )
    if status == TokenStatus.SUPERSEDED and token.grace_ends_at is not None:
        grace_end = clock.as_utc(token.grace_ends_at)
        if grace_end < expires_at:
            steps.append(
                Step(
                    grace_end,
                    "grace",
                    "grace_end",
                    "grace_end",
                    "Sera révoqué (fin du délai de grâce)",
                )
            )
    if status in (TokenStatus.ACTIVE, TokenStatus.SUSPENDED):
        steps.extend(_unused_steps(token, api, status))
    steps.sort(key=lambda s: (s.at, s.key))
    return steps


@lru_cache(maxsize=4096)
def _reminders(expiry_day: date) -> tuple[Step, ...]:
    """The reminder steps of the tokens expiring on ``expiry_day`` (shared: a sweep plans
    thousands of tokens expiring on a handful of days)."""
    return tuple(
        Step(
            day_start(expiry_day - timedelta(days=days)),
            "expiry",
            f"reminder:{days}",
            "reminder",
            "Rappel de renouvellement (expire ce jour)"
            if days == 0
            else f"Rappel de renouvellement (J-{days})",
            days,
        )
        for days in REMINDER_DAYS
    )


# The idle-period steps: (threshold, kind, label, only while active).
_IDLE_STEPS = (
    (
        "warning",
        "unused_warning",
        "Avertissement aux contacts et à l'instruction : jeton inutilisé",
        True,
    ),
    ("suspend", "unused_suspend", "Sera suspendu faute d'utilisation", True),
    ("revoke", "unused_revoke", "Sera révoqué faute d'utilisation", False),
)


def _unused_steps(token: AccessToken | TokenRow, api, status: str) -> list[Step]:
    limits = unused_thresholds(api)
    since = unused_since(token)
    stamp = _stamp(since)
    since_day = paris_day(since)  # once: three steps count from it

    def after(days: int) -> datetime:
        return day_start(since_day + timedelta(days=days))

    steps: list[Step] = []
    active = status == TokenStatus.ACTIVE
    never_used = token.last_used_at is None and token.reactivated_at is None
    if active and never_used and limits["never_used"] > 0:
        steps.append(
            Step(
                _days_after(token.issued_at, limits["never_used"]),
                "unused",
                "unused:never_used",
                "never_used",
                "Avertissement : jeton jamais utilisé",
                limits["never_used"],
            )
        )
    for name, kind, label, active_only in _IDLE_STEPS:
        days = limits[name]
        if days > 0 and (active or not active_only):
            steps.append(Step(after(days), "unused", f"unused:{name}:{stamp}", kind, label, days))
    return steps


def upcoming_steps(token: AccessToken) -> list[tuple[date, str]]:
    """The thresholds still ahead for ``token`` (Paris dates, French labels), for its page:
    expiry, end of grace, each unused-access step ("Sera suspendu faute d'utilisation le …")
    and the closing of the habilitation. Reminders are left out."""
    now = clock.now()
    done = _done_keys([token.id]).get(token.id, set())
    expires_at = clock.as_utc(token.expires_at)
    return [
        (paris_day(step.at), step.label)
        for step in plan(token, token.api)
        if step.at > now
        and step.key not in done
        and step.kind != "reminder"
        and not (step.chain == "unused" and step.at >= expires_at)  # moot after expiry
    ]


# --- the sweep ---------------------------------------------------------------------------


def _done_keys(token_ids: Iterable[int]) -> dict[int, set[str]]:
    ids = list(token_ids)
    found: dict[int, set[str]] = {}
    if not ids:
        return found
    rows = db.session.execute(
        select(LifecycleAct.token_id, LifecycleAct.key).where(LifecycleAct.token_id.in_(ids))
    )
    for token_id, key in rows:
        found.setdefault(token_id, set()).add(key)
    return found


class TokenRow:
    """The columns of a claimed token that the sweep reads, without an ORM object: enough
    to plan its steps, send a reminder and describe it in a webhook. A token whose due
    steps change its state is loaded as an :class:`AccessToken` instead."""

    __slots__ = (
        "id",
        "jti",
        "status",
        "habilitation_id",
        "api_id",
        "organisation_id",
        "claims",
        "issued_at",
        "expires_at",
        "grace_ends_at",
        "last_used_at",
        "reactivated_at",
        "habilitation",
    )

    def __init__(self, *values: Any) -> None:
        (
            self.id,
            self.jti,
            self.status,
            self.habilitation_id,
            self.api_id,
            self.organisation_id,
            self.claims,
            self.issued_at,
            self.expires_at,
            self.grace_ends_at,
            self.last_used_at,
            self.reactivated_at,
        ) = values
        self.habilitation = None

    @property
    def scopes(self) -> list[str]:
        return (self.claims or {}).get("scope", "").split()


_CLAIMED = tuple(getattr(AccessToken, name) for name in TokenRow.__slots__[:-1])


def claim_due(limit: int, now: datetime | None = None) -> list[TokenRow]:
    """Lock up to ``limit`` due tokens (oldest due first) and read their columns. On
    PostgreSQL another scheduler skips the rows locked here; on SQLite the write transaction
    serialises schedulers."""
    now = now or clock.now()
    query = (
        select(*_CLAIMED)
        .where(AccessToken.lifecycle_due_at <= now)
        .order_by(AccessToken.lifecycle_due_at, AccessToken.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=AccessToken)
    )
    return [TokenRow(*row) for row in db.session.execute(query)]


def _changes_state(steps: list[Step], done: set[str], now: datetime) -> bool:
    """Whether any due step may change the token (anything but a reminder)."""
    return any(s.kind != "reminder" and s.at <= now and s.key not in done for s in steps)


class Effects:
    """What a chunk of the sweep queues, written in a few statements at the end of the chunk
    (same transaction as the state changes): act rows, mails, webhooks, next due moments."""

    def __init__(self) -> None:
        self.acts: list[dict[str, Any]] = []
        self.mails: list[tuple[list[str], str, dict[str, Any]]] = []
        self.webhooks: dict[int, list[tuple[str, dict[str, Any], str, int]]] = {}
        self.dues: list[dict[str, Any]] = []
        self._instructors: dict[int, list[str]] = {}
        # The newest call of each loaded token (unused-access evidence), read once per chunk.
        self.calls: dict[int, Any] | None = None

    def instructors(self, api_id: int) -> list[str]:
        """The API's instructors' addresses, read once per chunk (the unused-access steps
        of hundreds of tokens of one API write to the same people)."""
        found = self._instructors.get(api_id)
        if found is None:
            found = self._instructors[api_id] = accounts_service.instructor_emails(api_id)
        return list(found)

    def mail(self, recipients: Iterable[str], template: str, context: dict[str, Any]) -> int:
        recipients = list(dict.fromkeys(recipients))
        self.mails.append((recipients, template, context))
        return len(recipients)

    def mark(self) -> tuple[int, int, int, dict[int, int]]:
        return (
            len(self.acts),
            len(self.mails),
            len(self.dues),
            {api_id: len(items) for api_id, items in self.webhooks.items()},
        )

    def rollback_to(self, mark: tuple[int, int, int, dict[int, int]]) -> None:
        acts, mails, dues, hooks = mark
        del self.acts[acts:], self.mails[mails:], self.dues[dues:]
        for api_id, items in self.webhooks.items():
            del items[hooks.get(api_id, 0) :]

    def webhook(self, token: AccessToken, event: str, **extra: Any) -> None:
        self.webhooks.setdefault(token.api_id, []).append(
            (event, token_transitions.token_webhook_data(token, **extra), "AccessToken", token.id)
        )

    def write(self) -> None:
        """Write the chunk's rows: plain tuples through one ``executemany`` per table (no
        per-value processing by SQLAlchemy: a sweep writes tens of thousands of rows)."""
        import json

        from datapass.notify import service as notify

        db.session.flush()  # state changes first: their own due moment is then overwritten
        at = bulk.bulk_time_param()
        bulk.bulk_insert(
            "lifecycle_acts",
            ("token_id", "key", "kind", "outcome", "due_at", "at", "detail"),
            [
                (
                    act["token_id"],
                    act["key"],
                    act["kind"],
                    act["outcome"],
                    at(act["due_at"]),
                    at(act["at"]),
                    json.dumps(act["detail"]),  # as the JSON column stores it (None: null)
                )
                for act in self.acts
            ],
        )
        notify.queue_mails(self.mails)
        for api_id, items in self.webhooks.items():
            notify.queue_webhooks_for_api(api_id, items)
        if self.dues:
            sqlite = db.session.get_bind().dialect.name == "sqlite"
            db.session.connection().exec_driver_sql(
                "UPDATE access_tokens SET lifecycle_due_at = ? WHERE id = ?"
                if sqlite
                else "UPDATE access_tokens SET lifecycle_due_at = %s WHERE id = %s",
                [
                    (None if due["due"] is None else at(due["due"]), due["token_id"])
                    for due in self.dues
                ],
            )


def sweep_tokens(chunk: int | None = None) -> dict[str, int]:
    """The scheduled job: process every due token, committing after each chunk, so a crash
    loses at most the chunk in progress (rolled back, redone by the next run).

    A chunk runs without savepoints (the fast path). If one token fails (a bug, bad data),
    the chunk is rolled back and redone token by token, each in a savepoint: the failing
    token is set aside for an hour and the others go through."""
    chunk = chunk or current_app.config["LIFECYCLE_CHUNK"]
    with _heap_frozen():
        return _sweep(chunk)


@contextmanager
def _heap_frozen() -> Iterator[None]:
    """A sweep allocates tens of thousands of short-lived containers, which makes Python run
    full collections that rescan the whole heap (the app, SQLAlchemy's registries) each time
    (≈ 15 % of a large sweep). The objects alive before the sweep are set aside meanwhile."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _sweep(chunk: int) -> dict[str, int]:
    actor = Actor.system("lifecycle.tokens")
    totals: Counter[str] = Counter()
    apis = _apis()
    careful = False
    while True:
        now = clock.now()
        tokens = claim_due(chunk, now)
        if not tokens:
            db.session.commit()
            break
        try:
            counts = _process_chunk(tokens, apis, now, actor, careful=careful)
        except Exception:
            if careful:
                raise
            db.session.rollback()
            log.warning("lifecycle: a token failed, its chunk is redone token by token")
            careful = True
            continue
        db.session.commit()
        pause_for_writers()  # SQLite: a waiting writer (an introspection flush) goes first
        totals.update(counts)
        careful = False
    return dict(totals)


def _process_chunk(
    rows: list[TokenRow], apis: dict[int, Any], now: datetime, actor: Actor, careful: bool
) -> Counter[str]:
    """The claimed tokens: those with only reminders (or nothing) due are handled from their
    columns; those with a state change due are loaded as ORM objects (already locked)."""
    counts: Counter[str] = Counter()
    done = _done_keys(row.id for row in rows)
    planned = []
    for row in rows:
        steps = plan(row, apis[row.api_id])
        planned.append((row, steps))
    loaded = _load_tokens(
        [row.id for row, steps in planned if _changes_state(steps, done.get(row.id, ()), now)]
    )
    tokens = [(loaded.get(row.id, row), steps) for row, steps in planned]
    keep = _preload_habilitations([token for token, _ in tokens])  # noqa: F841 - held: weak map
    effects = Effects()
    effects.calls = newest_calls(list(loaded))
    with db.session.no_autoflush:
        for token, steps in tokens:
            counts["tokens"] += 1
            api, token_done = apis[token.api_id], done.get(token.id, set())
            if isinstance(token, AccessToken):
                steps = None  # replanned from the loaded object
            if not careful:
                counts.update(process_token(token, api, token_done, now, actor, effects, steps))
                continue
            mark = effects.mark()
            try:
                with db.session.begin_nested():
                    counts.update(process_token(token, api, token_done, now, actor, effects, steps))
            except Exception:
                log.exception("lifecycle: token %s failed, retried in an hour", token.id)
                effects.rollback_to(mark)
                effects.dues.append({"token_id": token.id, "due": now + timedelta(hours=1)})
                counts["failed"] += 1
    effects.write()
    return counts


def _load_tokens(ids: list[int]) -> dict[int, AccessToken]:
    """The ORM objects of claimed tokens whose state may change (their rows are locked)."""
    if not ids:
        return {}
    query = (
        select(AccessToken).where(AccessToken.id.in_(ids)).execution_options(populate_existing=True)
    )
    return {token.id: token for token in db.session.scalars(query)}


def _apis() -> dict[int, Any]:
    from datapass.catalogue.models import Api

    return {
        api.id: api for api in db.session.scalars(select(Api).options(selectinload(Api.scopes)))
    }


def _preload_habilitations(tokens: list[AccessToken | TokenRow]) -> list[Any]:
    """The chunk's habilitations (for mails), their requesters and organisations, in three
    queries; the caller holds the list so the identity map keeps them."""
    from datapass.authorizations.models import Habilitation

    ids = {t.habilitation_id for t in tokens}
    if not ids:
        return []
    habilitations = list(
        db.session.scalars(
            select(Habilitation)
            .where(Habilitation.id.in_(ids))
            .options(selectinload(Habilitation.requester), selectinload(Habilitation.organisation))
        )
    )
    # Each token's ``habilitation`` set as loaded: no lazy-load round per token.
    by_id = {h.id: h for h in habilitations}
    for token in tokens:
        habilitation = by_id.get(token.habilitation_id)
        if isinstance(token, TokenRow):
            token.habilitation = habilitation
        elif habilitation is not None and "habilitation" not in token.__dict__:
            set_committed_value(token, "habilitation", habilitation)
    return habilitations


def process_token(
    token: AccessToken | TokenRow,
    api,
    done: set[str],
    now: datetime,
    actor: Actor,
    effects: Effects | None = None,
    steps: list[Step] | None = None,
) -> Counter[str]:
    """Do what fell due for one (locked) token, then set its next due moment. ``effects``
    gathers the chunk's rows (written by the caller); without it they are written now.
    ``steps``: its :func:`plan`, when the caller already drew it. A :class:`TokenRow` only
    takes steps that leave its state alone (reminders)."""
    own = effects is None
    effects = effects or Effects()
    counts: Counter[str] = Counter()
    done = set(done)
    steps, status = steps if steps is not None else plan(token, api), token.status
    for _ in range(12):  # a token has few steps; a state change redraws its plan
        if token.status != status:
            steps, status = plan(token, api), token.status
        pending = [s for s in steps if s.key not in done and s.at <= now]
        if not pending:
            break
        first = pending[0]
        chain = [s for s in pending if s.chain == first.chain]
        latest = chain[-1]
        if latest.kind != "reminder" and isinstance(token, TokenRow):
            raise LifecycleError(f"jeton {token.id} : {latest.key} exige l'objet chargé")
        for step in chain[:-1]:
            _record(effects, token, step, "skipped", now)
            done.add(step.key)
            counts["skipped"] += 1
        outcome, detail = _HANDLERS[latest.kind](
            token, api, latest, chain[:-1], actor, effects, done
        )
        _record(effects, token, latest, outcome, now, detail)
        done.add(latest.key)
        counts[latest.kind if outcome == "done" else "void"] += 1
    if token.status != status:
        steps = plan(token, api)
    future = [s.at for s in steps if s.key not in done and s.at > now]
    due = min(future) if future else None
    if due is not None and due <= now:
        due = now + timedelta(hours=1)
    effects.dues.append({"token_id": token.id, "due": due})
    if own:
        effects.write()
    return counts


def _record(
    effects: Effects,
    token: AccessToken,
    step: Step,
    outcome: str,
    now: datetime,
    detail: dict | None = None,
) -> None:
    effects.acts.append(
        {
            "token_id": token.id,
            "key": step.key,
            "kind": step.kind,
            "outcome": outcome,
            "due_at": step.at,
            "at": now,
            "detail": detail,
        }
    )


# --- the steps ---------------------------------------------------------------------------


def renewal_url(token: AccessToken) -> str:
    return current_app.config["BASE_URL"].rstrip("/") + RENEW_PATH.format(id=token.id)


def token_url(token: AccessToken) -> str:
    return current_app.config["BASE_URL"].rstrip("/") + f"/jetons/{token.id}"


def _context(token: AccessToken, api, **extra: Any) -> dict[str, Any]:
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


def _mail(recipients: Iterable[str], template: str, context: dict[str, Any]) -> int:
    """Queue one message to each recipient now (pages: a handful of mails)."""
    from datapass.notify import service as notify

    n = 0
    for recipient in dict.fromkeys(recipients):
        notify.queue_mail(recipient, template, context)
        n += 1
    return n


def _do_reminder(
    token, api, step: Step, skipped: list[Step], actor: Actor, fx: Effects, done: set[str]
):
    days = step.days or 0
    sent = fx.mail(
        token_mails.holder_emails(token), "reminder_expiry", _context(token, api, days=days)
    )
    crossed = {s.days for s in skipped} | {days}
    if crossed & WEBHOOK_DAYS and days <= max(WEBHOOK_DAYS):
        fx.webhook(token, "token.expiring", days_left=days)
    return "done", {"days": days, "mails": sent}


def _has_successor(token: AccessToken) -> bool:
    """Another live token of the same habilitation, or a live token of the habilitation
    that replaced it (a renewal through an update)."""
    return (
        db.session.scalar(
            select(AccessToken.id)
            .where(
                AccessToken.habilitation_id == token.habilitation_id,
                AccessToken.id != token.id,
                AccessToken.status.in_([TokenStatus.ACTIVE, TokenStatus.SUSPENDED]),
            )
            .limit(1)
        )
        is not None
        or not token.habilitation.is_active
    )


def _do_expire(
    token, api, step: Step, skipped: list[Step], actor: Actor, fx: Effects, done: set[str]
):
    was = token.status
    if was in token_states.TRANSITIONS["expire"].sources:
        token_transitions.apply(token, "expire", actor)
    if was == TokenStatus.SUPERSEDED or _has_successor(token):
        return "done", {"from": was, "mails": 0}
    sent = fx.mail(token_mails.holder_emails(token), "expiry_notice", _context(token, api))
    return "done", {"from": was, "mails": sent}


def _do_grace_end(
    token, api, step: Step, skipped: list[Step], actor: Actor, fx: Effects, done: set[str]
):
    if token.status != TokenStatus.SUPERSEDED:
        return "void", None
    token_transitions.apply(
        token,
        "revoke",
        actor,
        reason="Fin du délai de grâce : le jeton a été remplacé.",
        payload={"cause": "grace_end"},
    )
    return "done", None


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


def _unused_context(token, api, step: Step, done: set[str], fx: Effects) -> dict[str, Any]:
    limits = unused_thresholds(api)
    since = unused_since(token)
    return _context(
        token,
        api,
        days=step.days,
        evidence=last_use_evidence(token, fx.calls),
        since=since,
        suspend_on=_days_after(since, limits["suspend"]) if limits["suspend"] > 0 else None,
        revoke_on=_days_after(since, limits["revoke"]) if limits["revoke"] > 0 else None,
        can_self_reactivate=SELF_REACTIVATION not in done,
    )


def _do_never_used(
    token, api, step: Step, skipped: list[Step], actor: Actor, fx: Effects, done: set[str]
):
    sent = fx.mail(
        token_mails.holder_emails(token),
        "unused_never_used",
        _unused_context(token, api, step, done, fx),
    )
    return "done", {"mails": sent}


def _do_unused_warning(
    token, api, step: Step, skipped: list[Step], actor: Actor, fx: Effects, done: set[str]
):
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


def _do_unused_suspend(
    token, api, step: Step, skipped: list[Step], actor: Actor, fx: Effects, done: set[str]
):
    if token.status != TokenStatus.ACTIVE:
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


def _do_unused_revoke(
    token, api, step: Step, skipped: list[Step], actor: Actor, fx: Effects, done: set[str]
):
    if token.status not in (TokenStatus.ACTIVE, TokenStatus.SUSPENDED):
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


def _do_closure(
    token, api, step: Step, skipped: list[Step], actor: Actor, fx: Effects, done: set[str]
):
    """Close the habilitation whose token expired long ago without renewal."""
    from datapass.authorizations import service as authorizations

    habilitation = token.habilitation
    if not habilitation.is_active or _has_successor(token):
        return "void", None
    request = habilitation.request
    days = current_app.config["LIFECYCLE_CLOSE_AFTER_DAYS"]
    reason = (
        f"Habilitation close automatiquement : son jeton a expiré le "
        f"{format_day(token.expires_at)} et n'a pas été renouvelé "
        f"dans {'le' if days == 1 else 'les'} {plural(days, 'jour', 'jours')}."
    )
    recipients = token_mails.holder_emails(token)
    context = _context(token, api, reason=reason)
    for renewal in db.session.scalars(
        select(Renewal).where(
            Renewal.habilitation_id == habilitation.id,
            Renewal.status.in_(list(renewal_states.OPEN)),
        )
    ):
        renewal.status = RenewalStatus.CANCELLED
        renewal.decided_at = clock.now()
    closed_by_request = request is not None and request.active_habilitation is habilitation
    if closed_by_request:
        # The request's revocation mails the requester and the contacts with this reason.
        authorizations.revoke(request, actor, reason)
    else:
        from datapass.authorizations import states as authorization_states

        authorization_states.revoke_habilitation(habilitation, actor, reason)
    audit.record(
        "lifecycle:habilitation:closed",
        actor,
        subject=habilitation,
        organisation_id=habilitation.organisation_id,
        api_id=habilitation.api_id,
        token_digest=token.digest,
        payload={"jti": token.jti, "expired_at": token.expires_at.isoformat(), "days": days},
    )
    sent = 0 if closed_by_request else fx.mail(recipients, "lifecycle_closed", context)
    return "done", {"mails": sent, "by_request": closed_by_request}


_HANDLERS = {
    "reminder": _do_reminder,
    "expire": _do_expire,
    "grace_end": _do_grace_end,
    "never_used": _do_never_used,
    "unused_warning": _do_unused_warning,
    "unused_suspend": _do_unused_suspend,
    "unused_revoke": _do_unused_revoke,
    "closure": _do_closure,
}


# --- reactivation by the organisation (once) ------------------------------------------------

SELF_REACTIVATION = "self_reactivation"


def has_self_reactivated(token: AccessToken) -> bool:
    return (
        db.session.scalar(
            select(LifecycleAct.id).where(
                LifecycleAct.token_id == token.id, LifecycleAct.key == SELF_REACTIVATION
            )
        )
        is not None
    )


def can_self_reactivate(token: AccessToken, user) -> bool:
    """A verified member may lift a suspension once per token, with a justification; after
    that (a second suspension) only an instructor can."""
    return (
        token.status == TokenStatus.SUSPENDED
        and "member" in token_states.roles_of(user, token)
        and clock.as_utc(token.expires_at) > clock.now()
        and not has_self_reactivated(token)
    )


def self_reactivate(token: AccessToken, actor: Actor, justification: str) -> None:
    """Reactivate a suspended token on the organisation's word (once); the instructors are
    told. Raises :class:`LifecycleError` (nothing changed) otherwise."""
    justification = (justification or "").strip()
    if len(justification) < 10:
        raise LifecycleError("Expliquez en quelques mots pourquoi ce jeton doit être réactivé.")
    if token.status != TokenStatus.SUSPENDED:
        raise LifecycleError("Ce jeton n'est pas suspendu.")
    if has_self_reactivated(token):
        raise LifecycleError(
            "Ce jeton a déjà été réactivé une fois par votre organisation : seul un "
            "instructeur de l'API peut désormais le réactiver."
        )
    if "member" not in token_states.roles_of(actor.user, token):
        raise LifecycleError("Seul un membre vérifié de l'organisation peut réactiver ce jeton.")
    now = clock.now()
    db.session.add(
        LifecycleAct(
            token_id=token.id,
            key=SELF_REACTIVATION,
            kind=SELF_REACTIVATION,
            outcome="done",
            due_at=now,
            at=now,
            detail={"by": actor.id, "justification": justification[:2000]},
        )
    )
    # The member is authorised here (once, with a justification): the transitions table
    # keeps reactivation for staff, so this trusted caller passes the role itself.
    token_transitions.apply(
        token,
        "reactivate",
        actor,
        reason=justification,
        role="system",
        payload={"self_service": True},
    )
    api = token.api
    _mail(
        token_mails.holder_emails(token) + accounts_service.instructor_emails(token.api_id),
        "lifecycle_reactivated",
        _context(token, api, justification=justification, by=actor.label),
    )


# --- renewal -------------------------------------------------------------------------------


def grace_days() -> int:
    return max(0, min(int(current_app.config["LIFECYCLE_RENEWAL_GRACE_DAYS"]), MAX_GRACE_DAYS))


def renewal_window(token: AccessToken) -> tuple[datetime, datetime]:
    days = timedelta(days=current_app.config["RENEWAL_WINDOW_DAYS"])
    expires_at = clock.as_utc(token.expires_at)
    return expires_at - days, expires_at + days


def open_renewal(token: AccessToken) -> Renewal | None:
    """The renewal in progress: waiting for an instructor, or waiting on a reopened request
    that is still being updated (a cancelled or refused update ends it)."""
    from datapass.authorizations import states as authorization_states

    renewal = db.session.scalar(
        select(Renewal)
        .where(Renewal.token_id == token.id, Renewal.status.in_(list(renewal_states.OPEN)))
        .order_by(Renewal.id.desc())
    )
    if renewal is not None and renewal_states.is_reopened(renewal):
        request = renewal.habilitation.request
        if not authorization_states.is_reopening(request):
            return None
    return renewal


def shown_renewal(token: AccessToken) -> Renewal | None:
    """The renewal the token's page shows: the one in progress, else the latest."""
    return open_renewal(token) or db.session.scalar(
        select(Renewal).where(Renewal.token_id == token.id).order_by(Renewal.id.desc())
    )


def renewal_blocker(token: AccessToken) -> str | None:
    """Why ``token`` cannot be renewed now (French), or None."""
    now = clock.now()
    opens, closes = renewal_window(token)
    if token.status not in (TokenStatus.ACTIVE, TokenStatus.EXPIRED):
        return "Seul un jeton actif ou expiré se renouvelle."
    if not token.habilitation.is_active:
        return "L'habilitation de ce jeton n'est plus en vigueur."
    if now < opens:
        days = current_app.config["RENEWAL_WINDOW_DAYS"]
        return (
            f"Le renouvellement ouvrira le {format_day(opens)}, "
            f"{plural(days, 'jour', 'jours')} avant l'expiration."
        )
    if now > closes:
        return "Le délai de renouvellement est dépassé : déposez une nouvelle demande."
    if _has_successor(token):
        return "Ce jeton a déjà un successeur."
    if open_renewal(token) is not None:
        return "Un renouvellement est déjà en cours pour ce jeton."
    return None


def _may_renew(token: AccessToken, user) -> bool:
    """The requester or a verified member of the organisation."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    return (
        "member" in token_states.roles_of(user, token) or token.habilitation.requester_id == user.id
    )


def can_renew(token: AccessToken, user) -> bool:
    """The requester or a verified member of the organisation, inside the window."""
    return _may_renew(token, user) and renewal_blocker(token) is None


def renewal_refusal(token: AccessToken, user) -> str | None:
    """Why ``user`` cannot renew ``token`` now (French), or None (the wizard's page)."""
    blocker = renewal_blocker(token)
    if blocker is None and not _may_renew(token, user):
        return "Seuls le demandeur et les membres vérifiés de l'organisation renouvellent."
    return blocker


CONTACTS = {
    "controller": "Responsable de traitement",
    "technical": "Contact technique",
    "dpo": "Délégué à la protection des données",
    "business": "Contact métier",
}


def current_contacts(habilitation) -> dict[str, dict[str, str]]:
    contacts = (habilitation.snapshot or {}).get("contacts") or {}
    return {
        role: {
            part: (contacts.get(role) or {}).get(part) or "" for part in ("name", "email", "phone")
        }
        for role in CONTACTS
    }


@dataclass
class RenewalAnswers:
    same_person: bool
    purpose_unchanged: bool
    legal_basis_holds: bool
    contacts: dict[str, dict[str, str]] = field(default_factory=dict)
    scopes: list[str] = field(default_factory=list)


@dataclass
class RenewalOutcome:
    renewal: Renewal
    new_token: AccessToken | None = None
    raw: str | None = None  # shown once, never stored

    @property
    def completed(self) -> bool:
        return renewal_states.is_completed(self.renewal)

    @property
    def reopened(self) -> bool:
        return renewal_states.is_reopened(self.renewal)

    @property
    def pending(self) -> bool:
        return renewal_states.is_pending(self.renewal)


def changes_of(habilitation, answers: RenewalAnswers) -> list[dict[str, str]]:
    """What the wizard's answers change (empty: nothing changed)."""
    changes: list[dict[str, str]] = []
    for flag, label in (
        ("same_person", "La personne en charge a changé"),
        ("purpose_unchanged", "La finalité a changé"),
        ("legal_basis_holds", "Le cadre juridique a changé"),
    ):
        if not getattr(answers, flag):
            changes.append({"field": flag, "label": label, "before": "oui", "after": "non"})
    before = current_contacts(habilitation)
    for role, parts in answers.contacts.items():
        for part, value in parts.items():
            old = before.get(role, {}).get(part, "")
            if (value or "").strip() != old:
                changes.append(
                    {
                        "field": f"{role}_{part}",
                        "label": f"{CONTACTS.get(role, role)} ({part})",
                        "before": old,
                        "after": (value or "").strip(),
                    }
                )
    kept = [s for s in habilitation.scopes if s in set(answers.scopes)]
    if kept != list(habilitation.scopes):
        changes.append(
            {
                "field": "scopes",
                "label": "Données demandées",
                "before": ", ".join(habilitation.scopes),
                "after": ", ".join(kept),
            }
        )
    return changes


def renew(token: AccessToken, actor: Actor, answers: RenewalAnswers) -> RenewalOutcome:
    """The renewal wizard's answers. Nothing changed: the API's policy decides (a new token
    at once, shown once; or an instructor confirms first). Anything changed: the request is
    reopened pre-filled and the renewal completes when the update is approved."""
    blocker = renewal_blocker(token)
    if blocker:
        raise LifecycleError(blocker)
    habilitation = token.habilitation
    if not set(answers.scopes) <= set(habilitation.scopes):
        raise LifecycleError(
            "Les données demandées ne peuvent que diminuer lors d'un renouvellement."
        )
    if not answers.scopes:
        raise LifecycleError("Gardez au moins une donnée, ou laissez l'habilitation expirer.")
    changes = changes_of(habilitation, answers)
    now = clock.now()
    renewal = Renewal(
        token_id=token.id,
        habilitation_id=habilitation.id,
        organisation_id=token.organisation_id,
        api_id=token.api_id,
        requested_by_id=actor.user.id if actor.user is not None else None,
        status=RenewalStatus.PENDING,
        attestations={
            "same_person": answers.same_person,
            "purpose_unchanged": answers.purpose_unchanged,
            "legal_basis_holds": answers.legal_basis_holds,
        },
        changes=changes,
        scopes=[s for s in habilitation.scopes if s in set(answers.scopes)],
        created_at=now,
    )
    db.session.add(renewal)
    db.session.flush()
    _audit_renewal("requested", renewal, actor, changes=[c["field"] for c in changes])
    if changes:
        _reopen(renewal, actor, answers)
        return RenewalOutcome(renewal)
    if token.api.renewal_policy == RenewalPolicy.INSTRUCTOR:
        _mail(
            accounts_service.instructor_emails(token.api_id),
            "renewal_to_confirm",
            _context(token, token.api, renewal=renewal),
        )
        return RenewalOutcome(renewal)
    new, raw = complete(renewal, actor, reveal=True)
    # The technical contact installs tokens: tell them a new one exists and when the old
    # one stops (the token itself is never mailed).
    _mail(
        [habilitation.technical_contact_email or habilitation.requester.email],
        "renewal_completed",
        _context(
            token,
            token.api,
            renewal=renewal,
            new_token=new,
            requester_name=actor.user.display_name if actor.user is not None else "Datapass",
        ),
    )
    return RenewalOutcome(renewal, new, raw)


def _audit_renewal(action: str, renewal: Renewal, actor: Actor, **payload: Any) -> None:
    token = renewal.token
    audit.record(
        f"lifecycle:renewal:{action}",
        actor,
        subject=renewal,
        organisation_id=renewal.organisation_id,
        api_id=renewal.api_id,
        token_digest=token.digest if token is not None else None,
        payload={"renewal_id": renewal.id, "jti": token.jti if token else None, **payload},
    )


def _reopen(renewal: Renewal, actor: Actor, answers: RenewalAnswers) -> None:
    """Reopen the habilitation's request for an update, pre-filled with the new contacts and
    the remaining scopes (authorizations' own rules apply)."""
    from datapass.authorizations import service as authorizations
    from datapass.authorizations import states as authorization_states

    request = renewal.habilitation.request
    if authorization_states.is_validated(request):
        authorizations.reopen(request, actor)
    values = {
        f"{role}_{part}": (value or "").strip()
        for role, parts in answers.contacts.items()
        for part, value in parts.items()
    }
    if values and authorization_states.can_edit(request, actor.user):
        authorizations.save_section(request, "contacts", values, actor)
    if renewal.scopes != list(request.scopes or []) and authorization_states.can_edit(
        request, actor.user
    ):
        authorizations.save_section(request, "donnees", {"scopes": list(renewal.scopes)}, actor)
    renewal.status = RenewalStatus.REOPENED
    renewal.request_id = request.id
    db.session.flush()
    _audit_renewal("reopened", renewal, actor, request_id=request.id)


def complete(
    renewal: Renewal, actor: Actor, *, reveal: bool = False, new_token: AccessToken | None = None
) -> tuple[AccessToken, str | None]:
    """Finish a renewal: a new token (18 months from now) unless the approval of an update
    already issued it; the old token is superseded and stays valid for the grace period."""
    old = renewal.token
    raw = None
    if new_token is None:
        new_token, _ = tokens_service.issue_for_habilitation(
            renewal.habilitation, actor, predecessor=old
        )
        if reveal:
            raw = tokens_service.reveal(new_token, actor)
    grace_end = supersede_with_grace(old, new_token, actor, renewal=renewal)
    renewal.status = RenewalStatus.COMPLETED
    renewal.new_token_id = new_token.id
    renewal.grace_ends_at = grace_end
    renewal.decided_at = clock.now()
    if actor.user is not None and actor.user.id != renewal.requested_by_id:
        renewal.decided_by_id = actor.user.id
    db.session.flush()
    _audit_renewal(
        "completed",
        renewal,
        actor,
        new_jti=new_token.jti,
        grace_ends_at=grace_end.isoformat() if grace_end else None,
    )
    return new_token, raw


def supersede_with_grace(
    old: AccessToken, new: AccessToken, actor: Actor, *, renewal: Renewal | None = None
) -> datetime | None:
    """The old token stays valid ``LIFECYCLE_RENEWAL_GRACE_DAYS`` (never past its own
    expiry), then the scheduler revokes it. An already dead token is left alone."""
    if old.status != TokenStatus.ACTIVE or clock.as_utc(old.expires_at) <= clock.now():
        return None
    grace_end = min(clock.now() + timedelta(days=grace_days()), clock.as_utc(old.expires_at))
    old.grace_ends_at = grace_end
    token_transitions.apply(
        old,
        "supersede",
        actor,
        role="system",  # authorised by the renewal (requester, instructor or approval)
        payload={
            "successor_jti": new.jti,
            "grace_ends_at": grace_end.isoformat(),
            "cause": "renewal",
            "renewal_id": renewal.id if renewal is not None else None,
        },
    )
    return grace_end


def can_decide(renewal: Renewal, user) -> bool:
    return (
        renewal_states.is_pending(renewal)
        and user is not None
        and renewal.api_id in user.instructed_api_ids()
    )


def decide(renewal: Renewal, actor: Actor, approve: bool, note: str | None = None) -> None:
    """An instructor confirms (a new token, revealed later by the organisation) or refuses
    (with a reason) a renewal under the "instructor" policy."""
    if not can_decide(renewal, actor.user):
        raise LifecycleError("Ce renouvellement n'attend pas votre décision.")
    note = (note or "").strip() or None
    recipients = [renewal.requested_by.email] if renewal.requested_by else []
    recipients += token_mails.holder_emails(renewal.token)
    if approve:
        blocker = renewal_blocker_for_decision(renewal)
        if blocker:
            raise LifecycleError(blocker)
        renewal.decision_note = note
        complete(renewal, actor)
        _mail(
            recipients, "renewal_confirmed", _context(renewal.token, renewal.api, renewal=renewal)
        )
        return
    if not note:
        raise LifecycleError("Indiquez le motif du refus : il est transmis à l'organisation.")
    renewal.status = RenewalStatus.REFUSED
    renewal.decided_at = clock.now()
    renewal.decided_by_id = actor.user.id if actor.user else None
    renewal.decision_note = note
    db.session.flush()
    _audit_renewal("refused", renewal, actor, reason=note)
    _mail(
        recipients,
        "renewal_refused",
        _context(renewal.token, renewal.api, renewal=renewal, reason=note),
    )


def renewal_blocker_for_decision(renewal: Renewal) -> str | None:
    token = renewal.token
    if token.status not in (TokenStatus.ACTIVE, TokenStatus.EXPIRED):
        return "Le jeton n'est plus renouvelable (révoqué ou remplacé)."
    if not renewal.habilitation.is_active:
        return "L'habilitation n'est plus en vigueur."
    return None


def pending_renewals(user) -> list[Renewal]:
    ids = user.instructed_api_ids()
    if not ids:
        return []
    return list(
        db.session.scalars(
            select(Renewal)
            .where(Renewal.api_id.in_(ids), Renewal.status == RenewalStatus.PENDING)
            .order_by(Renewal.created_at)
        )
    )


def get_renewal_for_instructor(renewal_id: int, user) -> Renewal | None:
    ids = user.instructed_api_ids()
    if not ids:
        return None
    return db.session.scalar(
        select(Renewal).where(Renewal.id == renewal_id, Renewal.api_id.in_(ids))
    )


@signals.habilitation_updated.connect
def on_update_approved(previous, habilitation, actor: Actor) -> None:
    """Hook called by authorizations when the update of a validated request is approved:
    the new habilitation's token replaces the old habilitation's live tokens (superseded,
    valid for the grace period), and a renewal waiting on that update is completed."""
    new_token = db.session.scalar(
        select(AccessToken)
        .where(AccessToken.habilitation_id == habilitation.id)
        .order_by(AccessToken.id.desc())
    )
    if new_token is None:
        return
    renewals = list(
        db.session.scalars(
            select(Renewal).where(
                Renewal.habilitation_id == previous.id,
                Renewal.status.in_(list(renewal_states.OPEN)),
            )
        )
    )
    for renewal in renewals:
        complete(renewal, actor, new_token=new_token)
    for old in db.session.scalars(
        select(AccessToken).where(
            AccessToken.habilitation_id == previous.id,
            AccessToken.status == TokenStatus.ACTIVE,
        )
    ):
        supersede_with_grace(old, new_token, actor)


@signals.update_closed.connect
def on_update_closed(request, actor: Actor) -> None:
    """A reopening was cancelled or refused: a renewal waiting on it is cancelled."""
    for renewal in db.session.scalars(
        select(Renewal).where(
            Renewal.request_id == request.id, Renewal.status == RenewalStatus.REOPENED
        )
    ):
        renewal.status = RenewalStatus.CANCELLED
        renewal.decided_at = clock.now()
        db.session.flush()
        _audit_renewal("cancelled", renewal, actor, request_id=request.id)


# --- the instructors' digest ---------------------------------------------------------------


def send_digests(now: datetime | None = None) -> dict[str, int]:
    """Once per Paris day (from ``LIFECYCLE_DIGEST_HOUR``): each instructor gets the tokens
    of their APIs expiring within 30 days and those renewed since the previous day. An
    optional mail (one-click unsubscribe); nothing to say, no mail."""
    from datapass.accounts.models import Role, RoleGrant, User
    from datapass.notify import service as notify

    now = now or clock.now()
    local = clock.local(now)
    if local.hour < current_app.config["LIFECYCLE_DIGEST_HOUR"]:
        return {"sent": 0}
    today = local.date()
    counts = {"sent": 0, "empty": 0}
    users = db.session.scalars(
        select(User)
        .join(RoleGrant, RoleGrant.user_id == User.id)
        .where(RoleGrant.role == Role.INSTRUCTOR, User.is_active_account.is_(True))
        .distinct()
    ).all()
    for user in users:
        already = db.session.scalar(
            select(DigestSent.id).where(DigestSent.user_id == user.id, DigestSent.day == today)
        )
        if already is not None:
            continue
        api_ids = sorted(user.instructed_api_ids())
        expiring = list(
            db.session.scalars(
                select(AccessToken)
                .where(
                    AccessToken.api_id.in_(api_ids),
                    AccessToken.status == TokenStatus.ACTIVE,
                    AccessToken.expires_at > now,
                    AccessToken.expires_at <= now + timedelta(days=30),
                )
                .order_by(AccessToken.expires_at)
                .limit(500)
            )
        )
        renewed = list(
            db.session.scalars(
                select(Renewal)
                .where(
                    Renewal.api_id.in_(api_ids),
                    Renewal.status == RenewalStatus.COMPLETED,
                    Renewal.decided_at > now - timedelta(days=1),
                )
                .order_by(Renewal.decided_at)
            )
        )
        items = len(expiring) + len(renewed)
        db.session.add(DigestSent(user_id=user.id, day=today, at=now, items=items))
        if not items:
            counts["empty"] += 1
            continue
        notify.queue_mail(
            user.email,
            "lifecycle_digest",
            {"user": user, "expiring": expiring, "renewed": renewed, "day": today},
            category=DIGEST_CATEGORY,
        )
        counts["sent"] += 1
    db.session.flush()
    return counts


# --- the security officer's dashboard ------------------------------------------------------

DASHBOARD_LISTS = {
    "expiring-30": "Jetons qui expirent dans les 30 jours",
    "expiring-90": "Jetons qui expirent dans les 90 jours",
    "grace": "Jetons remplacés encore dans leur délai de grâce",
    "suspended": "Jetons suspendus",
    "unused": "Jetons actifs inutilisés depuis 60 jours ou plus",
    "revoked": "Révocations des 30 derniers jours",
}


@dataclass(frozen=True)
class DashboardFilters:
    api_id: int | None = None
    organisation: str = ""  # SIRET or part of the name


def _organisation_matches(text: str):
    """The dashboard's organisation filter: its SIRET, or part of its name."""
    from datapass.accounts.models import Organisation

    text = text.strip()
    return or_(
        Organisation.siret == text.replace(" ", ""),
        func.lower(Organisation.name).contains(text.lower()),
    )


def dashboard_query(name: str, filters: DashboardFilters):
    """The tokens of one dashboard list (a select; the page limits it, the CSV streams it)."""
    from datapass.accounts.models import Organisation

    now = clock.now()
    query = select(AccessToken)
    if name in ("expiring-30", "expiring-90"):
        days = int(name.removeprefix("expiring-"))
        query = query.where(
            AccessToken.status == TokenStatus.ACTIVE,
            AccessToken.expires_at > now,
            AccessToken.expires_at <= now + timedelta(days=days),
        ).order_by(AccessToken.expires_at)
    elif name == "grace":
        query = query.where(
            AccessToken.status == TokenStatus.SUPERSEDED, AccessToken.grace_ends_at > now
        ).order_by(AccessToken.grace_ends_at)
    elif name == "suspended":
        query = query.where(AccessToken.status == TokenStatus.SUSPENDED).order_by(
            AccessToken.suspended_at.desc()
        )
    elif name == "unused":
        query = query.where(
            AccessToken.status == TokenStatus.ACTIVE,
            func.coalesce(AccessToken.last_used_at, AccessToken.issued_at)
            <= now - timedelta(days=60),
        ).order_by(func.coalesce(AccessToken.last_used_at, AccessToken.issued_at))
    elif name == "revoked":
        query = query.where(
            AccessToken.status == TokenStatus.REVOKED,
            AccessToken.revoked_at >= now - timedelta(days=30),
        ).order_by(AccessToken.revoked_at.desc())
    else:
        raise KeyError(name)
    if filters.api_id:
        query = query.where(AccessToken.api_id == filters.api_id)
    if filters.organisation:
        query = query.join(Organisation, Organisation.id == AccessToken.organisation_id).where(
            _organisation_matches(filters.organisation)
        )
    return query.options(selectinload(AccessToken.api), selectinload(AccessToken.organisation))


def dashboard(filters: DashboardFilters, limit: int = 50) -> dict[str, dict[str, Any]]:
    """Each list's count and its first ``limit`` tokens."""
    result = {}
    for name, title in DASHBOARD_LISTS.items():
        query = dashboard_query(name, filters)
        count = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
        rows = list(db.session.scalars(query.limit(limit)))
        result[name] = {"title": title, "count": count, "rows": rows}
    return result


def dashboard_by_api(filters: DashboardFilters) -> list[dict[str, Any]]:
    """Counts per API and organisation of the live tokens (the summary table)."""
    from datapass.accounts.models import Organisation
    from datapass.catalogue.models import Api

    now = clock.now()
    query = (
        select(
            Api.name,
            Organisation.name,
            Organisation.siret,
            func.sum(
                case(
                    (
                        and_(
                            AccessToken.status == TokenStatus.ACTIVE,
                            AccessToken.expires_at <= now + timedelta(days=90),
                        ),
                        1,
                    ),
                    else_=0,
                )
            ),
            func.sum(case((AccessToken.status == TokenStatus.SUPERSEDED, 1), else_=0)),
            func.sum(case((AccessToken.status == TokenStatus.SUSPENDED, 1), else_=0)),
            func.count(),
        )
        .join(Api, Api.id == AccessToken.api_id)
        .join(Organisation, Organisation.id == AccessToken.organisation_id)
        .where(AccessToken.status.in_(list(token_states.LIVE)), AccessToken.expires_at > now)
        .group_by(Api.name, Organisation.name, Organisation.siret)
        .order_by(Api.name, Organisation.name)
        .limit(500)
    )
    if filters.api_id:
        query = query.where(AccessToken.api_id == filters.api_id)
    if filters.organisation:
        query = query.where(_organisation_matches(filters.organisation))
    return [
        {
            "api": row[0],
            "organisation": row[1],
            "siret": row[2],
            "expiring": int(row[3] or 0),
            "grace": int(row[4] or 0),
            "suspended": int(row[5] or 0),
            "live": int(row[6] or 0),
        }
        for row in db.session.execute(query)
    ]


CSV_HEADER = [
    "jti",
    "statut",
    "api",
    "organisation",
    "siret",
    "delivre_le",
    "expire_le",
    "fin_de_grace",
    "derniere_utilisation",
    "derniere_adresse",
    "suspendu_le",
    "revoque_le",
    "motif",
]


def dashboard_csv(name: str, filters: DashboardFilters) -> Iterator[str]:
    """The whole list as CSV (semicolon-separated, UTF-8 with BOM for spreadsheets),
    streamed in pages."""
    query = dashboard_query(name, filters).execution_options(yield_per=500)
    rows = (
        (
            token.jti,
            token.status_enum.label,
            token.api.name,
            token.organisation.name,
            token.organisation.siret,
            token.issued_at,
            token.expires_at,
            token.grace_ends_at,
            token.last_used_at,
            token.last_used_ip,
            token.suspended_at,
            token.revoked_at,
            token.revoked_reason or token.suspended_reason,
        )
        for token in db.session.scalars(query)
    )
    return spreadsheet.csv_stream(CSV_HEADER, rows)


# --- pages of the organisation ---------------------------------------------------------------


def get_member_token(user, token_id: int) -> AccessToken | None:
    """A token of one of ``user``'s organisations (verified member), else None (404)."""
    return db.session.scalar(
        token_queries.organisation_tokens_query(user).where(AccessToken.id == token_id)
    )
