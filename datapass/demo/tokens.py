"""The demo token: issued afresh at each run for the demo habilitation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from datapass.authorizations.models import Habilitation
from datapass.authorizations.states import HabilitationStatus
from datapass.demo.context import ACTOR, DemoContext
from datapass.extensions import db
from datapass.tokens import issuance as token_issuance


def issue_demo_token(context: DemoContext, result: dict[str, Any]) -> None:
    """A token freshly issued at each run for the demo habilitation (tokens domain), so that
    ``--json`` hands scripts and browser tests a working token: ``"token": {"value", "jti"}``.
    Runs after the authorizations step that creates the demo habilitation."""
    habilitation_id = (result.get("habilitation") or {}).get("id")
    if habilitation_id is None:
        org_ids = [o.id for o in context.organisations.values()]
        habilitation_id = db.session.scalar(
            select(Habilitation.id)
            .where(
                Habilitation.organisation_id.in_(org_ids),
                Habilitation.status == HabilitationStatus.ACTIVE,
            )
            .order_by(Habilitation.id)
            .limit(1)
        )
    if habilitation_id is None:
        return
    habilitation = db.session.get(Habilitation, habilitation_id)
    token, raw = token_issuance.issue_for_habilitation(habilitation, ACTOR)
    result["token"] = {"value": raw, "jti": token.jti}
