"""``flask --app app datapass …`` commands."""

from __future__ import annotations

import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from datapass.extensions import db

datapass_cli = AppGroup("datapass", help="Commandes d'exploitation de Datapass.")
audit_cli = AppGroup("audit", help="Journal d'audit chaîné.")
datapass_cli.add_command(audit_cli)


@audit_cli.command("verify")
def audit_verify() -> None:
    """Vérifie toute la chaîne d'audit et nomme le premier événement qui ne correspond pas."""
    from datapass.audit import service as audit_service

    result = audit_service.verify_chain(db.session)
    click.echo(result.message())
    if not result.ok:
        sys.exit(1)


@datapass_cli.command("config")
def show_config() -> None:
    """Affiche le tableau Markdown des variables DATAPASS_* (pour le README)."""
    from datapass.config import SETTINGS

    click.echo("| Variable | Défaut | Rôle |")
    click.echo("|---|---|---|")
    for setting in SETTINGS:
        default = "—" if setting.default is None else f"`{setting.default}`"
        if setting.key in {"DATABASE_URL", "MAIL_DIR"}:
            default = "`instance/…`"
        click.echo(f"| `{setting.env}` | {default} | {setting.doc} |")


@datapass_cli.command("deliver")
def deliver() -> None:
    """Envoie les courriels en attente (sans attendre le planificateur)."""
    from datapass.notify import service as notify_service

    counts = notify_service.deliver_due()
    sent, deferred, failed = counts["sent"], counts["deferred"], counts["failed"]
    click.echo(f"{sent} envoyé(s), {deferred} reporté(s), {failed} abandonné(s).")


@datapass_cli.command("scheduler")
def scheduler_command() -> None:
    """Lance le planificateur (processus dédié en production)."""
    from datapass.lifecycle import scheduler

    scheduler.run_forever(current_app._get_current_object())


@datapass_cli.command("sweep")
@click.option(
    "--at",
    "at",
    default=None,
    help="Hors production : exécuter comme à cet instant (ISO 8601 avec fuseau).",
)
def sweep_command(at: str | None) -> None:
    """Exécute une fois chaque tâche planifiée puis s'arrête (cron, exploitation)."""
    from datetime import datetime

    from datapass.lifecycle import scheduler

    moment = None
    if at is not None:
        if is_production():
            raise click.UsageError("--at est refusé en production.")
        try:
            moment = datetime.fromisoformat(at)
        except ValueError as exc:
            raise click.BadParameter(f"date invalide : {at}") from exc
        if moment.tzinfo is None:
            raise click.BadParameter("précisez le fuseau, par exemple 2028-05-01T09:00:00+00:00")
    results = scheduler.sweep(current_app._get_current_object(), at=moment)
    for name, result in results.items():
        click.echo(f"{name} : {result}")
    if any(isinstance(r, str) and r.startswith("échec") for r in results.values()):
        sys.exit(1)


def init_app(app: Flask) -> None:
    app.cli.add_command(datapass_cli)


def is_production() -> bool:
    return current_app.config["ENV"] == "production"
