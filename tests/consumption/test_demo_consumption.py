"""The demo creates 90 days of consumption for its tokens; sealing it verifies."""

from __future__ import annotations

from sqlalchemy import func, select

from datapass import demo
from datapass.audit import verification
from datapass.consumption import seal
from datapass.consumption.models import UsageDaily, UsageEvent
from datapass.demo import consumption as demo_consumption
from datapass.extensions import db
from datapass.tokens.models import AccessToken


def test_demo_tokens_get_ninety_days_of_consumption(app):
    demo.run_demo()
    tokens = db.session.scalar(select(func.count()).select_from(AccessToken))
    if not tokens:  # the demo of the tokens domain issues them; nothing to count otherwise
        return
    days = db.session.scalar(select(func.count(func.distinct(UsageDaily.day))))
    assert days == 90
    assert db.session.scalar(select(func.count()).select_from(UsageEvent)) > 0
    again = demo_consumption.seed_demo_consumption()
    assert again["tokens"] == 0  # idempotent
    demo.run_demo()
    assert seal.seal_finished_days()
    assert verification.verify_all().ok
