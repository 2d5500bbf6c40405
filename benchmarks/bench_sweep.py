"""Lifecycle sweep budget (DESIGN §6): the full sweep over 1,000,000 tokens of which 1 % are
due finishes in under 5 s on SQLite, and its time follows the due rows, not the table.

Builds two temporary SQLite databases with bulk inserts — 100,000 and 1,000,000 tokens, the
same 10,000 of them due, spread over the table (their 30-day reminder: three mails each
and a ``token.expiring`` webhook) — runs the sweep on each as ``flask datapass sweep`` does
(every scheduled job once, each through ``scheduler.run_job``) and prints a table. The two
delivery jobs are left out of the timing: they send over the network (SMTP, the providers'
endpoints) at the remote side's pace; what the sweep queues for them is measured.
With ``--mix`` the same number of due tokens is split as a real day's sweep sees them
(:data:`MIX`): reminders at every step (90/60/30/15/7/1 days and the day itself), tokens
expiring today, superseded tokens whose grace ends today, unused-access warnings (60 days
never used, 90 days unused), suspensions (120 days) and revocations (180 days), and
habilitations closed 90 days after their token expired; each due token then has its own
habilitation and contacts, and the script counts what each category produced (acts, mails,
webhooks, status changes) against what it must produce exactly once, then checks that a
re-run does nothing.
Usage: ``python benchmarks/bench_sweep.py [--sizes 100000,1000000] [--due 10000] [--mix]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert, select  # noqa: E402

from datapass import clock, create_app  # noqa: E402
from datapass.extensions import db  # noqa: E402

NOW = datetime(2027, 3, 15, 5, 0, tzinfo=UTC)  # 06:00 in Paris
HABILITATIONS = 1000
INSTRUCTORS = 2

# --mix: share (in %) of the due tokens in each category. Every day as many tokens reach each
# reminder step as expire, so the seven reminder steps weigh the same.
MIX = (
    ("reminder:90", 10),
    ("reminder:60", 10),
    ("reminder:30", 10),
    ("reminder:15", 10),
    ("reminder:7", 10),
    ("reminder:1", 10),
    ("reminder:0", 10),
    ("expiry", 8),
    ("grace_end", 5),
    ("never_used", 2),  # the 60-day warning (never used)
    ("unused_warning", 3),  # the 90-day warning, with evidence, to the instructors too
    ("unused_suspend", 4),  # 120 days
    ("unused_revoke", 3),  # 180 days
    ("closure", 5),  # 90 days after expiry without renewal
)


def pattern() -> list[str]:
    """100 slots of :data:`MIX` interleaved, so that each category's due tokens are spread
    over the table like the others."""
    slots = [
        ((j + 0.5) / share, name) for name, share in MIX for j in range(share)
    ]  # each category's j-th slot at its own pace
    return [name for _position, name in sorted(slots)]


def build(path: Path, total: int, due: int, mix: bool = False) -> dict[str, list[int]]:
    """A catalogue, 1,000 habilitations, ``total`` tokens; ``due`` of them are due today, the
    others months from now. By default the due tokens reach their 30-day reminder (the 90- and
    60-day ones were sent before); with ``mix`` they are split as :data:`MIX` says, each with
    its own habilitation (the acts done before today recorded). Returns the due token ids per
    category (``mix`` only)."""
    from datapass.accounts.models import Organisation, User
    from datapass.authorizations.models import AuthorizationRequest, Habilitation
    from datapass.lifecycle.days import day_start
    from datapass.lifecycle.models import LifecycleAct
    from datapass.tokens.models import AccessToken
    from tests import factories

    db.drop_all()
    db.create_all()
    from tests.lifecycle.conftest import make_listening_api  # the tests' own builder

    api = make_listening_api()
    if mix:  # the warnings, suspensions and revocations go to the API's instructors too
        for i in range(INSTRUCTORS):
            factories.user(
                f"instructeur{i}@dinum.gouv.fr", password=None, roles=("instructor",), api=api
            )
    orgs = [
        {"siret": f"{21000000000000 + i:014d}", "name": f"Commune {i}", "created_at": NOW}
        for i in range(HABILITATIONS)
    ]
    db.session.execute(insert(Organisation), orgs)
    org_ids = list(db.session.scalars(select(Organisation.id).order_by(Organisation.id)))

    def habilitations(holders: list[str], contacts: list[tuple[str, str]], org_of) -> list[int]:
        """One user, validated request and active habilitation per holder (bulk inserts)."""
        first_user = (db.session.scalar(select(func.max(User.id))) or 0) + 1
        db.session.execute(
            insert(User),
            [
                {"email": email, "full_name": f"Agent {i}", "created_at": NOW}
                for i, email in enumerate(holders)
            ],
        )
        user_ids = list(
            db.session.scalars(select(User.id).where(User.id >= first_user).order_by(User.id))
        )
        first_request = (db.session.scalar(select(func.max(AuthorizationRequest.id))) or 0) + 1
        db.session.execute(
            insert(AuthorizationRequest),
            [
                {
                    "organisation_id": org_of(i),
                    "api_id": api.id,
                    "requester_id": user_ids[i],
                    "state": "validated",
                    "created_at": NOW,
                    "updated_at": NOW,
                    "state_changed_at": NOW,
                    "scopes": ["revenus"],
                }
                for i in range(len(holders))
            ],
        )
        request_ids = list(
            db.session.scalars(
                select(AuthorizationRequest.id)
                .where(AuthorizationRequest.id >= first_request)
                .order_by(AuthorizationRequest.id)
            )
        )
        first_habilitation = (db.session.scalar(select(func.max(Habilitation.id))) or 0) + 1
        db.session.execute(
            insert(Habilitation),
            [
                {
                    "request_id": request_ids[i],
                    "organisation_id": org_of(i),
                    "api_id": api.id,
                    "requester_id": user_ids[i],
                    "scopes": ["revenus"],
                    "status": "active",
                    "snapshot": {
                        "title": "Tarification sociale",
                        "contacts": {
                            "technical": {"email": contacts[i][0]},
                            "controller": {"email": contacts[i][1]},
                        },
                    },
                    "created_at": NOW,
                }
                for i in range(len(holders))
            ],
        )
        return list(
            db.session.scalars(
                select(Habilitation.id)
                .where(Habilitation.id >= first_habilitation)
                .order_by(Habilitation.id)
            )
        )

    hab_ids = habilitations(
        [f"agent{i}@commune.fr" for i in range(HABILITATIONS)],
        [(f"tech{i}@commune.fr", f"rt{i}@commune.fr") for i in range(HABILITATIONS)],
        lambda i: org_ids[i],
    )
    step = max(total // due, 1)  # the due tokens are spread over the whole table
    due = min(due, (total + step - 1) // step)
    slots = pattern()
    category_of = [slots[k % len(slots)] for k in range(due)] if mix else []
    own_hab_ids = (
        habilitations(  # mix: each due token has its own habilitation and contacts
            [f"demandeur{k}@mairie.fr" for k in range(due)],
            [(f"tech{k}@mairie.fr", f"rt{k}@mairie.fr") for k in range(due)],
            lambda k: org_ids[k % HABILITATIONS],
        )
        if mix
        else []
    )
    db.session.commit()

    expires_due = day_start(clock.local(NOW).date() + timedelta(days=30)) + timedelta(hours=9)
    issued_due = clock.add_months(expires_due, -18)
    issued_other = NOW - timedelta(days=100)
    expires_other = clock.add_months(issued_other, 18)
    later = NOW + timedelta(days=40)
    table = AccessToken.__table__
    batch = []
    prior: list[dict] = []  # mix: the acts done before today
    recent: list[dict] = []  # mix: the last call kept as unused-access evidence
    for n in range(total):
        is_due = n % step == 0 and n // step < due
        issued, expires = (issued_due, expires_due) if is_due else (issued_other, expires_other)
        hab = n % HABILITATIONS
        row = {
            "jti": f"00000000-0000-4000-8000-{n:012d}",
            "digest": f"{n:064x}",
            "claims": {"scope": "revenus", "jti": f"{n}", "siret": orgs[hab]["siret"]},
            "habilitation_id": hab_ids[hab],
            "api_id": api.id,
            "organisation_id": org_ids[hab],
            "status": "active",
            "signing_kid": "bench",
            "issued_at": issued,
            "not_before": issued,
            "expires_at": expires,
            "last_used_at": NOW - timedelta(hours=20),
            "lifecycle_due_at": NOW - timedelta(minutes=5) if is_due else later,
        }
        if mix:  # one set of columns for every row of an executemany
            row.update(grace_ends_at=None, last_used_ip=None, suspended_at=None)
            row["suspended_reason"] = None
        if mix and is_due:
            k = n // step
            row["habilitation_id"] = own_hab_ids[k]
            row["organisation_id"] = org_ids[k % HABILITATIONS]
            row["claims"]["siret"] = orgs[k % HABILITATIONS]["siret"]
            row.update(mixed_token(category_of[k], n, api.provider_id, prior, recent))
        elif mix and n % step == 1 and n // step < due and category_of[n // step] == "grace_end":
            # The successor of the superseded token just before it: same habilitation,
            # issued when the grace period began, not due.
            k = n // step
            row["habilitation_id"] = own_hab_ids[k]
            row["organisation_id"] = org_ids[k % HABILITATIONS]
            issued = NOW - timedelta(days=30)
            row.update(issued_at=issued, not_before=issued, expires_at=clock.add_months(issued, 18))
        batch.append(row)
        if len(batch) == 50_000:
            db.session.execute(insert(table), batch)
            batch.clear()
    if batch:
        db.session.execute(insert(table), batch)
    due_ids = list(
        db.session.scalars(
            select(AccessToken.id)
            .where(AccessToken.lifecycle_due_at <= NOW)
            .order_by(AccessToken.id)
        )
    )
    if mix:
        by_jti = dict(
            db.session.execute(
                select(AccessToken.jti, AccessToken.id).where(AccessToken.id.in_(due_ids))
            ).all()
        )
        acts = [
            {**act, "token_id": by_jti[act.pop("jti")], "outcome": "done", "at": act["due_at"]}
            for act in prior
        ]
        if recent:
            from datapass.consumption.models import UsageRecent

            db.session.execute(
                insert(UsageRecent),
                [{**call, "token_id": by_jti[call.pop("jti")]} for call in recent],
            )
    else:
        acts = [
            {
                "token_id": token_id,
                "key": f"reminder:{days}",
                "kind": "reminder",
                "outcome": "done",
                "due_at": NOW - timedelta(days=60),
                "at": NOW - timedelta(days=60),
            }
            for token_id in due_ids
            for days in (90, 60)
        ]
    if acts:
        db.session.execute(insert(LifecycleAct), acts)
    db.session.commit()
    db.session.execute(db.text("ANALYZE"))
    db.session.commit()
    categories: dict[str, list[int]] = {}
    if mix:  # due_ids is in table order, as the due rows were written
        for k, token_id in enumerate(due_ids):
            categories.setdefault(category_of[k], []).append(token_id)
    # The bulk load's write-ahead log is folded into the database before timing the sweep.
    db.session.remove()
    with db.engine.connect() as connection:
        connection.connection.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return categories


def mixed_token(
    category: str, n: int, provider_id: int, prior: list[dict], recent: list[dict]
) -> dict:
    """The columns of due token ``n`` of ``category`` (as the sweep finds them on the day),
    and the acts done before today (``prior``) and its last call (``recent``) when it has
    them. The acts are those the earlier sweeps recorded: the same keys, at their due days."""
    from datapass.lifecycle.days import day_start
    from datapass.lifecycle.plan import REMINDER_DAYS

    today = clock.local(NOW).date()
    jti = f"00000000-0000-4000-8000-{n:012d}"

    def at(days: int, hour: int) -> datetime:  # ``hour`` o'clock in Paris, ``days`` from today
        return day_start(today + timedelta(days=days)) + timedelta(hours=hour)

    def reminders_before(expires: datetime, down_to: int) -> None:
        day = clock.local(expires).date()
        for days in REMINDER_DAYS:
            if days > down_to:
                prior.append(
                    {
                        "jti": jti,
                        "key": f"reminder:{days}",
                        "kind": "reminder",
                        "due_at": day_start(day - timedelta(days=days)),
                    }
                )

    def unused(issued: datetime, last_used: datetime, done: tuple[str, ...]) -> dict:
        stamp = str(int(last_used.timestamp()))  # the idle period's key (lifecycle.plan._stamp)
        for kind, days in (("warning", 90), ("suspend", 120)):
            if kind in done:
                prior.append(
                    {
                        "jti": jti,
                        "key": f"unused:{kind}:{stamp}",
                        "kind": f"unused_{kind}",
                        "due_at": day_start(clock.local(last_used).date() + timedelta(days=days)),
                    }
                )
        recent.append(
            {
                "jti": jti,
                "occurred_at": last_used,
                "provider_id": provider_id,
                "event_id": f"bench-{n}",
                "endpoint": "/v2/quotient-familial",
                "status": 200,
                "latency_ms": 12,
                "caller_ip": f"192.0.2.{n % 250 + 1}",
            }
        )
        return {
            "issued_at": issued,
            "not_before": issued,
            "expires_at": clock.add_months(issued, 18),
            "last_used_at": last_used,
            "last_used_ip": f"192.0.2.{n % 250 + 1}",
        }

    if category.startswith("reminder:"):
        days = int(category.partition(":")[2])
        expires = at(days, 9)
        reminders_before(expires, days)
        issued = clock.add_months(expires, -18)
        return {"issued_at": issued, "not_before": issued, "expires_at": expires}
    if category == "expiry":  # expired at 04:00 this morning, every reminder sent
        expires = at(0, 4)
        reminders_before(expires, -1)
        issued = clock.add_months(expires, -18)
        return {"issued_at": issued, "not_before": issued, "expires_at": expires}
    if category == "grace_end":  # renewed 30 days ago; the old token's grace ended at 03:00
        issued = at(-400, 10)
        return {
            "status": "superseded",
            "issued_at": issued,
            "not_before": issued,
            "expires_at": clock.add_months(issued, 18),
            "grace_ends_at": at(0, 3),
        }
    if category == "never_used":  # issued 60 days ago, never called
        issued = at(-60, 10)
        return {
            "issued_at": issued,
            "not_before": issued,
            "expires_at": clock.add_months(issued, 18),
            "last_used_at": None,
        }
    if category == "unused_warning":
        return unused(at(-300, 10), at(-90, 11), ())
    if category == "unused_suspend":  # warned 30 days ago
        return unused(at(-400, 10), at(-120, 11), ("warning",))
    if category == "unused_revoke":  # warned, then suspended 60 days ago
        columns = unused(at(-450, 10), at(-180, 11), ("warning", "suspend"))
        return {
            **columns,
            "status": "suspended",
            "suspended_at": at(-60, 0),
            "suspended_reason": "Jeton non utilisé depuis 120 jours.",
        }
    if category == "closure":  # expired 90 days ago, not renewed; every act done then
        expires = at(-90, 9)
        reminders_before(expires, -1)
        prior.append({"jti": jti, "key": "expiry", "kind": "expire", "due_at": expires})
        issued = clock.add_months(expires, -18)
        return {
            "status": "expired",
            "issued_at": issued,
            "not_before": issued,
            "expires_at": expires,
            "last_used_at": expires - timedelta(days=2),
        }
    raise ValueError(category)


# What each category must produce, exactly once per token: the act (kind), the mails per
# token by template (the holders: requester, technical contact, responsable de traitement;
# the instructors counted apart), the webhooks by event, the token's status afterwards.
HOLDER_MAILS = 3
EXPECTED: dict[str, dict] = {
    **{
        f"reminder:{days}": {
            "act": "reminder",
            "mails": {"reminder_expiry": HOLDER_MAILS},
            "instructor_mails": {},
            "webhooks": {"token.expiring": 1} if days in (30, 7) else {},
            "status": "active",
        }
        for days in (90, 60, 30, 15, 7, 1, 0)
    },
    "expiry": {
        "act": "expire",
        "mails": {"expiry_notice": HOLDER_MAILS},
        "instructor_mails": {},
        "webhooks": {"token.expired": 1},
        "status": "expired",
    },
    "grace_end": {
        "act": "grace_end",
        "mails": {},
        "instructor_mails": {},
        "webhooks": {"token.revoked": 1},
        "status": "revoked",
    },
    "never_used": {
        "act": "never_used",
        "mails": {"unused_never_used": HOLDER_MAILS},
        "instructor_mails": {},
        "webhooks": {},
        "status": "active",
    },
    "unused_warning": {
        "act": "unused_warning",
        "mails": {"unused_warning": HOLDER_MAILS},
        "instructor_mails": {"unused_warning": INSTRUCTORS},
        "webhooks": {},
        "status": "active",
    },
    "unused_suspend": {
        "act": "unused_suspend",
        "mails": {"unused_suspended": HOLDER_MAILS},
        "instructor_mails": {"unused_suspended": INSTRUCTORS},
        "webhooks": {"token.suspended": 1},
        "status": "suspended",
    },
    "unused_revoke": {
        "act": "unused_revoke",
        "mails": {"unused_revoked": HOLDER_MAILS},
        "instructor_mails": {"unused_revoked": INSTRUCTORS},
        "webhooks": {"token.revoked": 1},
        "status": "revoked",
    },
    "closure": {  # the request's revocation mails the holders
        "act": "closure",
        "mails": {"request_revoked": HOLDER_MAILS},
        "instructor_mails": {},
        "webhooks": {"habilitation.revoked": 1},
        "status": "expired",
        "habilitation": "revoked",
    },
}
HOLDER = re.compile(r"^(?:demandeur|tech|rt)(\d+)@mairie\.fr$")


def marks() -> dict[str, int]:
    """The last id of each table the sweep writes to (what came after is the sweep's)."""
    from datapass.audit.models import AuditEvent
    from datapass.lifecycle.models import LifecycleAct
    from datapass.notify.models import OutboxMail, WebhookDelivery

    return {
        name: db.session.scalar(select(func.coalesce(func.max(column), 0)))
        for name, column in (
            ("acts", LifecycleAct.id),
            ("mails", OutboxMail.id),
            ("webhooks", WebhookDelivery.id),
            ("audit", AuditEvent.seq),
        )
    }


def check(categories: dict[str, list[int]], before: dict[str, int]) -> tuple[list, list[str]]:
    """Count what the sweep did per category; returns the table rows and the differences
    from :data:`EXPECTED`."""
    from datapass.authorizations.models import Habilitation
    from datapass.lifecycle.models import LifecycleAct
    from datapass.notify.models import OutboxMail, WebhookDelivery
    from datapass.tokens.models import AccessToken

    category_of = {tid: name for name, ids in categories.items() for tid in ids}
    order = {tid: k for k, tid in enumerate(sorted(category_of))}  # k: the holders' number
    by_k = {order[tid]: name for tid, name in category_of.items()}
    acts: dict[str, Counter] = {name: Counter() for name in categories}
    per_token: Counter = Counter()
    for token_id, kind, outcome in db.session.execute(
        select(LifecycleAct.token_id, LifecycleAct.kind, LifecycleAct.outcome).where(
            LifecycleAct.id > before["acts"]
        )
    ):
        acts[category_of.get(token_id, "other")][(kind, outcome)] += 1
        per_token[token_id] += 1
    mails: dict[str, Counter] = {name: Counter() for name in categories}
    instructor_mails: Counter = Counter()
    for recipient, template in db.session.execute(
        select(OutboxMail.recipient, OutboxMail.template).where(OutboxMail.id > before["mails"])
    ):
        found = HOLDER.match(recipient)
        if found:
            mails[by_k[int(found.group(1))]][template] += 1
        elif recipient.startswith("instructeur"):
            instructor_mails[template] += 1
        else:
            mails.setdefault("other", Counter())[template] += 1
    hooks: dict[str, Counter] = {name: Counter() for name in categories}
    habilitation_of = dict(
        db.session.execute(
            select(AccessToken.habilitation_id, AccessToken.id).where(
                AccessToken.id.in_(list(category_of))
            )
        ).all()
    )
    for model_type, model_id, event in db.session.execute(
        select(WebhookDelivery.model_type, WebhookDelivery.model_id, WebhookDelivery.event).where(
            WebhookDelivery.id > before["webhooks"]
        )
    ):
        token_id = int(model_id) if model_type == "AccessToken" else None
        if model_type == "Habilitation":
            token_id = habilitation_of.get(int(model_id))
        hooks.setdefault(category_of.get(token_id, "other"), Counter())[event] += 1
    status: dict[str, Counter] = {name: Counter() for name in categories}
    habilitation_status: dict[str, Counter] = {name: Counter() for name in categories}
    for token_id, token_status, hab_status in db.session.execute(
        select(AccessToken.id, AccessToken.status, Habilitation.status)
        .join(Habilitation, Habilitation.id == AccessToken.habilitation_id)
        .where(AccessToken.id.in_(list(category_of)))
    ):
        if token_id in category_of:
            status[category_of[token_id]][token_status] += 1
            habilitation_status[category_of[token_id]][hab_status] += 1
    problems = []
    if any(per_token[t] != 1 for t in category_of) or set(per_token) - set(category_of):
        problems.append("some token got no act, several, or was not due")
    rows = []
    for name, ids in sorted(
        categories.items(), key=lambda item: [m for m, _ in MIX].index(item[0])
    ):
        n, want = len(ids), EXPECTED[name]
        instructors = {t: c * n for t, c in want["instructor_mails"].items()}
        expected = {
            "acts": Counter({(want["act"], "done"): n}),
            "mails": Counter({t: c * n for t, c in want["mails"].items()}),
            "webhooks": Counter({e: c * n for e, c in want["webhooks"].items()}),
            "status": Counter({want["status"]: n}),
        }
        got = {"acts": acts[name], "mails": mails[name], "webhooks": hooks[name]}
        got["status"] = status[name]
        for what, value in expected.items():
            if +got[what] != +value:
                problems.append(f"{name}: {what} {dict(got[what])} instead of {dict(value)}")
        if "habilitation" in want and habilitation_status[name] != Counter(
            {want["habilitation"]: n}
        ):
            problems.append(f"{name}: habilitations {dict(habilitation_status[name])}")
        rows.append((name, n, acts[name], mails[name], instructors, hooks[name], status[name]))
    expected_instructors = Counter()
    for name, ids in categories.items():
        for template, c in EXPECTED[name]["instructor_mails"].items():
            expected_instructors[template] += c * len(ids)
    if +instructor_mails != +expected_instructors:
        problems.append(
            f"instructors: {dict(instructor_mails)} instead of {dict(expected_instructors)}"
        )
    for extra in ("other",):
        if acts.get(extra) or mails.get(extra) or hooks.get(extra):
            problems.append(
                f"acts/mails/webhooks outside the due tokens: {acts.get(extra)} "
                f"{mails.get(extra)} {hooks.get(extra)}"
            )
    return rows, problems


def sweep(app) -> dict:
    """Every scheduled job once, in the scheduler's order, but the deliveries."""
    from datapass import scheduler

    return {
        job.name: scheduler.run_job(app, job)
        for job in scheduler.JOBS
        if not job.name.startswith("deliver_")
    }


def run(total: int, due: int, mix: bool = False, profile: str | None = None) -> dict:
    from datapass.audit.models import AuditEvent
    from datapass.notify.models import MailBody, OutboxMail, WebhookDelivery

    folder = Path(tempfile.mkdtemp(prefix="datapass-bench-sweep-"))
    app = create_app(
        {
            "ENV": "testing",
            "DATABASE_URL": f"sqlite:///{folder / 'bench.db'}",
            "SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
            "MASTER_KEY": "dGVzdHMtbWFzdGVyLWtleS0wMTIzNDU2Nzg5YWJjZGU=",
            "MAIL_DIR": str(folder / "mail"),
        }
    )
    with app.app_context():
        clock.set_frozen(NOW)
        started = time.perf_counter()
        categories = build(folder / "bench.db", total, due, mix)
        built = time.perf_counter() - started
        before = marks()
        db.session.remove()
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
        started, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        counts = sweep(app)["token_lifecycle"]
        if profiler:
            profiler.disable()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if profiler:
            profiler.dump_stats(f"{profile}.{total}")
        mails = db.session.scalar(select(func.count()).select_from(OutboxMail))
        bodies = db.session.scalar(select(func.count()).select_from(MailBody))
        hooks = db.session.scalar(select(func.count()).select_from(WebhookDelivery))
        audit = db.session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.seq > before["audit"])
        )
        rows, problems = check(categories, before) if mix else ([], [])
        after = marks()
        db.session.remove()
        started = time.perf_counter()
        again = sweep(app)["token_lifecycle"]
        idle = time.perf_counter() - started
        if marks() != after:
            problems.append(f"the re-run wrote rows: {after} → {marks()}")
        clock.set_frozen(None)
        db.session.remove()
        db.engine.dispose()
    shutil.rmtree(folder, ignore_errors=True)  # a 1,000,000-token database is large
    return {
        "tokens": total,
        "due": due,
        "build_s": built,
        "sweep_s": elapsed,
        "cpu_s": cpu,
        "idle_s": idle,
        "mails": mails,
        "bodies": bodies,
        "webhooks": hooks,
        "audit": audit,
        "counts": counts,
        "again": again,
        "rows": rows,
        "problems": problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument(
        "--mix", action="store_true", help="due tokens split as a real day's (see MIX)"
    )
    parser.add_argument("--profile", help="write the sweep's cProfile stats to PROFILE.<size>")
    args = parser.parse_args()
    if args.mix:
        print("mix: " + ", ".join(f"{name} {share} %" for name, share in MIX) + "\n")
    else:
        print("mix: none, every due token at its 30-day reminder (--mix for a real day's)\n")
    results = [run(int(size), args.due, args.mix, args.profile) for size in args.sizes.split(",")]
    print(
        "| tokens | due | sweep (s) | CPU (s) | per due token (ms) | mails (bodies) | webhooks "
        "| re-run (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['tokens']:,} | {r['due']:,} | {r['sweep_s']:.2f} | {r['cpu_s']:.2f} | "
            f"{1000 * r['sweep_s'] / max(r['due'], 1):.3f} | {r['mails']:,} ({r['bodies']:,}) | "
            f"{r['webhooks']:,} | {r['idle_s']:.3f} |"
        )
    if len(results) >= 2:
        ratio = results[-1]["sweep_s"] / results[0]["sweep_s"]
        print(
            f"\nratio {results[-1]['tokens']:,} / {results[0]['tokens']:,} tokens: {ratio:.2f} "
            "(budget: about 1; under 5 s at 1,000,000)"
        )
    if args.mix:
        r = results[-1]
        print(f"\nwhat the sweep did per category ({r['tokens']:,} tokens):\n")
        print(
            "| category | tokens | acts | mails to holders | to instructors | webhooks | status |"
        )
        print("|---|---:|---|---|---|---|---|")
        for name, n, acts, mails, instructors, hooks, status in r["rows"]:

            def show(counter) -> str:
                return ", ".join(
                    f"{key if isinstance(key, str) else '/'.join(key)} {value:,}"
                    for key, value in sorted(counter.items())
                )

            print(
                f"| {name} | {n:,} | {show(acts)} | {show(mails) or '—'} | "
                f"{show(instructors) or '—'} | {show(hooks) or '—'} | {show(status)} |"
            )
        for r in results:
            print(
                f"\n{r['tokens']:,} tokens: {r['audit']:,} audit events; "
                + (
                    "every category did its act once, re-run did nothing"
                    if not r["problems"]
                    else "PROBLEMS: " + "; ".join(r["problems"])
                )
            )
    print("\n" + json.dumps([{k: r[k] for k in ("tokens", "counts", "again")} for r in results]))
    if any(r["problems"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
