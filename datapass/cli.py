"""``flask --app app datapass …`` commands."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from datapass import demo as demo_module
from datapass import scheduler
from datapass.accounts.cli import users_cli
from datapass.audit import checkpoints, exports, retention, verification
from datapass.config import SETTINGS
from datapass.demo.context import DemoRefused
from datapass.extensions import db
from datapass.notify import tasks as notify_tasks
from datapass.tokens.cli import keys_cli

datapass_cli = AppGroup("datapass", help="Commandes d'exploitation de Datapass.")
audit_cli = AppGroup("audit", help="Journal d'audit chaîné.")
datapass_cli.add_command(audit_cli)


@audit_cli.command("verify")
def audit_verify() -> None:
    """Vérifie la chaîne d'audit (depuis l'ancre de rétention), les points de contrôle signés
    et les sceaux quotidiens de consommation ; nomme ce qui ne correspond pas."""
    result = verification.verify_all(db.session)
    for line in result.lines():
        click.echo(line)
    if not result.ok:
        sys.exit(1)


@audit_cli.command("verify-export", with_appcontext=False)
@click.argument("export", type=click.Path(exists=True, dir_okay=False))
@click.argument("manifest", type=click.File("r"))
@click.option(
    "--jwks",
    "jwks_file",
    type=click.File("r"),
    required=True,
    help="Clés publiques (copie de /.well-known/jwks.json).",
)
def audit_verify_export(export: str, manifest, jwks_file) -> None:
    """Vérifie hors ligne un export du journal d'audit avec son manifeste signé et les seules
    clés publiques ; nomme la ligne en cause."""
    try:
        jwks = json.load(jwks_file)
    except ValueError as exc:
        raise click.BadParameter("fichier JWKS illisible") from exc
    result = exports.verify_export(Path(export), manifest.read(), jwks)
    click.echo(result.message())
    if not result.ok:
        sys.exit(1)


@audit_cli.command("checkpoint")
def audit_checkpoint() -> None:
    """Signe maintenant la tête de la chaîne d'audit (point de contrôle)."""
    checkpoint = checkpoints.create_checkpoint(force=True)
    db.session.commit()
    click.echo(f"Point de contrôle n° {checkpoint.id} : événement n° {checkpoint.seq}.")


@audit_cli.command("purge")
def audit_purge() -> None:
    """Purge ce qui dépasse la durée de conservation (consommation, audit) et l'enregistre."""
    payload = retention.purge()
    db.session.commit()
    if payload is None:
        click.echo("Rien à purger.")
        return
    click.echo(
        f"Purgé : {payload['audit_events']['removed']} événement(s) d'audit, "
        f"{payload['usage_events']['removed']} événement(s) de consommation, "
        f"{payload['usage_daily']['removed']} compteur(s) quotidien(s). "
        f"Ancre : événement n° {payload['audit_events']['anchor_seq']}."
    )


@datapass_cli.command("config")
def show_config() -> None:
    """Affiche le tableau Markdown des variables DATAPASS_* (pour le README)."""
    click.echo("| Variable | Défaut | Rôle |")
    click.echo("|---|---|---|")
    for setting in SETTINGS:
        default = "—" if setting.default is None else f"`{setting.default}`"
        if setting.default == "":
            default = "(vide)"
        if setting.key in {"DATABASE_URL", "MAIL_DIR"}:
            default = "`instance/…`"
        click.echo(f"| `{setting.env}` | {default} | {setting.doc} |")


@datapass_cli.command("deliver")
def deliver() -> None:
    """Envoie les courriels en attente (sans attendre le planificateur)."""
    counts = notify_tasks.deliver_mails()
    sent, deferred, failed = counts["sent"], counts["deferred"], counts["failed"]
    click.echo(f"{sent} envoyé(s), {deferred} reporté(s), {failed} abandonné(s).")


@datapass_cli.command("scheduler")
def scheduler_command() -> None:
    """Lance le planificateur (processus dédié en production)."""
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


@datapass_cli.command("demo")
@click.option("--json", "as_json", is_flag=True, help="Affiche les données créées en JSON.")
@click.option("--if-empty", is_flag=True, help="Ne crée rien si des comptes existent déjà.")
@click.option("--scale", default=0, type=int, help="Ajoute N organisations et comptes (mesures).")
def demo(as_json: bool, if_empty: bool, scale: int) -> None:
    """Crée les données de démonstration (jamais en production) et affiche les comptes."""
    try:
        result = demo_module.run_demo(if_empty=if_empty, scale=scale)
    except DemoRefused as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    db.session.commit()
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        click.echo(demo_module.summary(result))


def init_app(app: Flask) -> None:
    datapass_cli.add_command(keys_cli)
    datapass_cli.add_command(users_cli)
    app.cli.add_command(datapass_cli)


def is_production() -> bool:
    return current_app.config["ENV"] == "production"
