"""``flask --app app datapass keys …``: list and rotate the signing keys."""

from __future__ import annotations

import click
from flask.cli import AppGroup
from sqlalchemy import select

from datapass.actor import Actor
from datapass.extensions import db
from datapass.keys import service as keys_service
from datapass.keys.models import SigningKey
from datapass.tokens import key_rotation, tasks

keys_cli = AppGroup("keys", help="Clés de signature (jetons et audit).")


@keys_cli.command("list")
def keys_list() -> None:
    """Liste les clés : usage, état, algorithme, dates, publication dans le JWKS."""
    published = {k.kid for k in keys_service.published_keys()}
    keys = db.session.scalars(select(SigningKey).order_by(SigningKey.usage, SigningKey.id)).all()
    if not keys:
        click.echo("Aucune clé : la première est créée à la première émission.")
    for key in keys:
        click.echo(
            f"{key.usage:6} {key.state:8} {key.algorithm:6} {key.kid}  "
            f"créée {key.created_at:%Y-%m-%d}  signe dès {key.activates_at:%Y-%m-%d}  "
            f"{'publiée' if key.kid in published else 'non publiée'}"
        )


@keys_cli.command("rotate")
@click.option("--usage", type=click.Choice(["token", "audit"]), default="token")
@click.option(
    "--immediately",
    is_flag=True,
    help="La nouvelle clé signe tout de suite (sans les 7 jours de publication).",
)
@click.option(
    "--compromised",
    is_flag=True,
    help="Clé compromise : la nouvelle signe tout de suite et l'ancienne quitte le JWKS "
    "(ses jetons doivent être renouvelés par rotation).",
)
def keys_rotate(usage: str, immediately: bool, compromised: bool) -> None:
    """Prépare la clé suivante (publiée maintenant, elle signe dans 7 jours)."""
    key = key_rotation.rotate_keys(
        usage, Actor.system("cli.keys.rotate"), immediately=immediately, compromised=compromised
    )
    immediately = immediately or compromised
    db.session.commit()
    when = "maintenant" if immediately else f"le {key.activates_at:%Y-%m-%d %H:%M} UTC"
    click.echo(f"Clé {key.kid} ({usage}) : signe {when}.")


@keys_cli.command("rotate-if-due")
def keys_rotate_if_due() -> None:
    """Ce que fait la tâche planifiée (idempotent)."""
    done = tasks.rotate_keys_if_due()
    click.echo(
        f"créées : {len(done['created'])}, activées : {len(done['activated'])}, "
        f"retirées du JWKS : {len(done['unpublished'])}"
    )
