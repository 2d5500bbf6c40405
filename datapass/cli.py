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


def init_app(app: Flask) -> None:
    app.cli.add_command(datapass_cli)


def is_production() -> bool:
    return current_app.config["ENV"] == "production"
