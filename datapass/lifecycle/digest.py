"""The instructors' daily digest: the tokens of their APIs expiring within 30 days and those
renewed since the previous day, once per Paris day (an optional mail)."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select

from datapass import clock
from datapass.accounts.models import Role, RoleGrant, User
from datapass.extensions import db
from datapass.lifecycle.models import DigestSent, Renewal
from datapass.lifecycle.states import RenewalStatus
from datapass.notify import outbox
from datapass.tokens import queries as token_queries
from datapass.tokens.models import AccessToken

DIGEST_CATEGORY = "lifecycle_digest"


def send_digests(now: datetime | None = None) -> dict[str, int]:
    """Once per Paris day (from ``LIFECYCLE_DIGEST_HOUR``): each instructor gets the tokens
    of their APIs expiring within 30 days and those renewed since the previous day. An
    optional mail (one-click unsubscribe); nothing to say, no mail."""
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
                    token_queries.active(),
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
        outbox.queue_mail(
            user.email,
            "lifecycle_digest",
            {"user": user, "expiring": expiring, "renewed": renewed, "day": today},
            category=DIGEST_CATEGORY,
        )
        counts["sent"] += 1
    db.session.flush()
    return counts
