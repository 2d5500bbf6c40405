"""The sweep: the scheduled job that does every lifecycle step that fell due.

Each token carries ``lifecycle_due_at``, the next moment anything is due for it. The sweep
claims the due tokens through that index (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), works out
from the token's state which steps fell due (:func:`~datapass.lifecycle.plan.plan`), does each
one exactly once (a :class:`LifecycleAct` row, unique per token and step, is written in the
same transaction as the mail, webhook or state change) and sets the next due moment. After
downtime, within one chain of steps only the latest that fell due is done; the earlier ones
are recorded as skipped.

Written for speed (DESIGN §6: a million tokens in < 5 s, its cost following the due rows, not
the table): columns instead of ORM objects where the state does not change, a chunk's rows
written in a few ``executemany``, no savepoint unless a token fails. Keep it so.
"""

from __future__ import annotations

import gc
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from datapass import bulk, clock
from datapass.accounts import directory as accounts_directory
from datapass.actor import Actor
from datapass.authorizations.models import Habilitation
from datapass.catalogue.models import Api
from datapass.extensions import db, pause_for_writers
from datapass.lifecycle.plan import Step, done_keys, plan
from datapass.lifecycle.states import LifecycleError
from datapass.lifecycle.steps import HANDLERS
from datapass.lifecycle.unused import newest_calls
from datapass.notify import outbox, webhooks
from datapass.tokens import transitions as token_transitions
from datapass.tokens.models import AccessToken

log = logging.getLogger("datapass.lifecycle")


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
            found = self._instructors[api_id] = accounts_directory.instructor_emails(api_id)
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
        outbox.queue_mails(self.mails)
        for api_id, items in self.webhooks.items():
            webhooks.queue_webhooks_for_api(api_id, items)
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
    rows: list[TokenRow], apis: dict[int, Api], now: datetime, actor: Actor, careful: bool
) -> Counter[str]:
    """The claimed tokens: those with only reminders (or nothing) due are handled from their
    columns; those with a state change due are loaded as ORM objects (already locked)."""
    counts: Counter[str] = Counter()
    done = done_keys(row.id for row in rows)
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


def _apis() -> dict[int, Api]:
    return {
        api.id: api for api in db.session.scalars(select(Api).options(selectinload(Api.scopes)))
    }


def _preload_habilitations(tokens: list[AccessToken | TokenRow]) -> list[Any]:
    """The chunk's habilitations (for mails), their requesters and organisations, in three
    queries; the caller holds the list so the identity map keeps them."""
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
    api: Api,
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
        outcome, detail = HANDLERS[latest.kind](
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
