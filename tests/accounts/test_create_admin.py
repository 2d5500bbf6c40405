"""``flask datapass users create-admin``: the first administrator of a deployment, without a
secret on the command line (issue 13, point 1)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from datapass import create_app
from datapass.accounts import addresses, passwords
from datapass.accounts.mfa import mfa_enrolment_pending, mfa_required
from datapass.accounts.models import User
from datapass.extensions import db
from datapass.notify.models import OutboxMail
from tests import factories
from tests.accounts.conftest import payload, post_login
from tests.conftest import base_config

PASSWORD = "Premier-Administrateur-2026"


def create_admin(app, *args: str):
    return app.test_cli_runner().invoke(args=["datapass", "users", "create-admin", *args])


def printed_link(output: str) -> str:
    return re.search(r"^(http://datapass\.test/invitation/\S+)$", output, re.M)[1]


def test_creates_an_admin_without_password_and_prints_a_single_use_link(app, client, audit_events):
    result = create_admin(app, "Premiere.Admin@Dinum.Gouv.fr", "--name", "Première Admin")
    assert result.exit_code == 0, result.output
    assert "Administrateur créé : premiere.admin@dinum.gouv.fr." in result.output
    assert "valable 72 heures" in result.output
    link = printed_link(result.output)

    admin = addresses.find_user_by_email("premiere.admin@dinum.gouv.fr")
    assert admin.full_name == "Première Admin"
    assert admin.password_hash is None
    assert admin.roles == {"admin"}
    assert mfa_required(admin) and mfa_enrolment_pending(admin)  # as every staff account

    # the invitation mail is queued too, with a link that works as well
    mail = db.session.scalar(select(OutboxMail).where(OutboxMail.recipient == admin.email))
    assert mail.template == "account_invitation"
    assert "Administrateur" in mail.body_text
    assert re.search(r"http://datapass\.test/invitation/\S+", mail.body_text)

    [event] = audit_events("accounts:")
    assert event.tag == "accounts:user:admin_created_by_operator"
    assert event.actor_type == "system"
    recorded = payload(event)
    assert recorded["forced"] is False
    assert recorded["active_admins_before"] == 0
    assert recorded["roles"] == ["admin"]
    assert "premiere.admin" not in event.payload  # the address only as an HMAC

    # the printed link sets the password, once; the admin then signs in (TOTP enrolment next)
    path = link.removeprefix("http://datapass.test")
    response = client.post(path, data={"password": PASSWORD, "confirm": PASSWORD})
    assert response.status_code == 302
    db.session.refresh(admin)
    assert passwords.check_password(admin, PASSWORD)
    assert client.get(path).status_code == 400
    assert post_login(client, admin.email, PASSWORD).status_code == 302


def test_refused_while_an_active_administrator_exists(app, audit_events):
    factories.user("chef@dinum.fr", roles=("admin",))
    db.session.commit()
    users_before = db.session.scalar(select(func.count(User.id)))
    result = create_admin(app, "autre@dinum.fr")
    assert result.exit_code == 1
    assert "Refusé : Un administrateur actif existe déjà (chef@dinum.fr)" in result.output
    assert "--force" in result.output
    assert db.session.scalar(select(func.count(User.id))) == users_before
    assert audit_events("accounts:") == []
    assert db.session.scalar(select(func.count(OutboxMail.id))) == 0


def test_force_adds_an_administrator_and_says_so_in_the_audit(app, audit_events):
    factories.user("chef@dinum.fr", roles=("admin",))
    db.session.commit()
    result = create_admin(app, "secours@dinum.fr", "--force")
    assert result.exit_code == 0, result.output
    assert addresses.find_user_by_email("secours@dinum.fr").roles == {"admin"}
    [event] = audit_events("accounts:")
    assert payload(event)["forced"] is True
    assert payload(event)["active_admins_before"] == 1


def test_a_deactivated_administrator_does_not_count(app):
    factories.user("ancien@dinum.fr", roles=("admin",)).is_active_account = False
    factories.user("instructeur@dinum.fr", roles=("security_officer",))
    db.session.commit()
    result = create_admin(app, "nouveau@dinum.fr")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("pas-une-adresse", "Saisissez une adresse électronique valide"),
        ("deja@mairie.fr", "Un compte existe déjà pour cette adresse électronique."),
    ],
)
def test_a_bad_or_taken_address_is_refused_in_french(app, email, message):
    factories.user("deja@mairie.fr")
    db.session.commit()
    result = create_admin(app, email)
    assert result.exit_code == 1
    assert f"Refusé : {message}" in result.output
    assert db.session.scalar(select(func.count(OutboxMail.id))) == 0


def test_works_in_production_where_the_demo_is_refused(tmp_path):
    app = create_app(base_config(f"sqlite:///{tmp_path / 'prod.db'}", ENV="production"))
    with app.app_context():
        db.create_all()
    runner = app.test_cli_runner()
    assert runner.invoke(args=["datapass", "demo"]).exit_code == 1
    result = runner.invoke(args=["datapass", "users", "create-admin", "admin@dinum.gouv.fr"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^http://datapass\.test/invitation/\S+$", result.output, re.M)
    with app.app_context():
        admin = addresses.find_user_by_email("admin@dinum.gouv.fr")
        assert mfa_required(admin)
        db.session.remove()
