"""Demonstration data, one module per domain; this module runs them in order.

``flask --app app datapass demo [--json] [--if-empty] [--scale N]`` calls :func:`run_demo`.
Running it again adds nothing and prints the same accounts. It refuses to run in production.
The accounts (one per role, with their fixed passwords) are listed in
:mod:`datapass.demo.accounts`.

Each domain's demo lives in ``datapass/demo/<domain>.py``; its step is a function
``step(context: DemoContext, result: dict) -> None`` that seeds its data idempotently and adds
its keys to ``result`` (the JSON printed by ``--json``), listed in :data:`STEPS` below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from datapass.accounts.models import User
from datapass.demo.accounts import (
    ROLE_NAMES,
    accounts_json,
    scale_accounts,
    seed_accounts,
    seed_organisations,
)
from datapass.demo.authorizations import seed_authorizations
from datapass.demo.consumption import seed_demo_consumption
from datapass.demo.context import DemoContext, ensure_allowed
from datapass.demo.tokens import issue_demo_token
from datapass.extensions import db


def _consumption_step(context: DemoContext, result: dict[str, Any]) -> None:
    """API consumption over the last 90 days for every token without any (the demo's and
    ``--scale``'s), so that the charts show something. Runs after the tokens exist."""
    seeded = seed_demo_consumption(max_tokens=max(5000, context.scale))
    # Days the scheduler already sealed keep their counts: the new tokens get none there.
    result["consumption"] = {
        "tokens": seeded["tokens"],
        "sealed_days_skipped": seeded["sealed_days_skipped"],
    }
    if context.scale > 0:
        result.setdefault("scale", {})["consumption_tokens"] = seeded["tokens"]


# Steps run in order after the accounts.
STEPS: list[Callable[[DemoContext, dict[str, Any]], None]] = [
    scale_accounts,
    seed_authorizations,
    issue_demo_token,  # needs the demo habilitation
    _consumption_step,  # after the tokens: it counts the tokens they issued
]


def run_demo(*, if_empty: bool = False, scale: int = 0) -> dict[str, Any]:
    """Seed the demo data (idempotent) and return the JSON object describing it:
    ``{"accounts": {"applicant": {"email", "password"}, …}, …}``. With ``if_empty``,
    a database that already has users is left alone (the accounts are still returned).
    Flushes; the caller commits."""
    ensure_allowed()
    context = DemoContext(scale=scale)
    result: dict[str, Any] = {"accounts": accounts_json()}
    has_users = db.session.scalar(select(func.count(User.id))) > 0
    if if_empty and has_users:
        context.seeded = False
        return result
    context.organisations = seed_organisations()
    context.users = seed_accounts(context.organisations)
    for step in STEPS:
        step(context, result)
    db.session.flush()
    return result


def summary(result: dict[str, Any]) -> str:
    """A readable French summary of the demo accounts."""
    lines = ["Comptes de démonstration (développement uniquement) :", ""]
    for key, account in result["accounts"].items():
        name = ROLE_NAMES.get(key, key)
        lines.append(f"  {name:<22} {account['email']:<38} mot de passe : {account['password']}")
    lines += [
        "",
        "Le demandeur est membre de la Commune de Dunkerque et d'Île-de-France Mobilités.",
        "Les comptes d'équipe de démonstration peuvent se passer de double authentification "
        "en développement (jamais en production).",
    ]
    skipped = (result.get("consumption") or {}).get("sealed_days_skipped")
    if skipped:
        lines += [
            "",
            f"Consommation de démonstration : {skipped} journée(s) déjà scellée(s) laissée(s) "
            "telle(s) quelle(s).",
        ]
    return "\n".join(lines)
