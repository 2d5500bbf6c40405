"""``flask --app app datapass users …``: the first administrator of a deployment."""

from __future__ import annotations

import getpass
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from datapass.accounts import directory
from datapass.accounts.errors import AccountError
from datapass.actor import Actor
from datapass.extensions import db

users_cli = AppGroup("users", help="Comptes (premier administrateur).")


def _operator() -> str:
    """The system login of who runs the command (a container may have no name for it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


@users_cli.command("create-admin")
@click.argument("email")
@click.option("--name", "full_name", default="", help="Prénom et nom de l'administrateur.")
@click.option(
    "--force",
    is_flag=True,
    help="Crée l'administrateur même si un administrateur actif existe déjà.",
)
def create_admin(email: str, full_name: str, force: bool) -> None:
    """Crée un administrateur (le premier d'un déploiement) et affiche son lien à usage unique
    pour choisir son mot de passe ; le même lien lui est envoyé par courriel. Aucun secret
    n'est demandé ni passé sur la ligne de commande ; la double authentification lui sera
    demandée à sa première connexion."""
    try:
        created = directory.create_admin_by_operator(
            email,
            full_name,
            Actor.system("cli.users.create-admin"),
            force=force,
            operator=_operator(),
        )
    except AccountError as error:
        db.session.rollback()
        click.echo(f"Refusé : {error.message}", err=True)
        sys.exit(1)
    db.session.commit()
    hours = current_app.config["INVITE_LINK_HOURS"]
    click.echo(f"Administrateur créé : {created.user.email}.")
    click.echo(
        f"Lien pour choisir son mot de passe (valable {hours} heures, une seule fois ; "
        "le même lien part aussi par courriel) :"
    )
    click.echo(created.link)
    click.echo("À la première connexion, Datapass demandera d'activer la double authentification.")
