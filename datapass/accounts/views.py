"""Pages of the accounts domain: sign-in, profile, organisations, administration."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user, logout_user

from datapass import access

bp = Blueprint("accounts", __name__)


@bp.route("/")
@access.public
def home():
    return render_template("accounts/home.html")


@bp.route("/mentions-legales")
@access.public
def legal():
    return render_template("accounts/legal.html")


@bp.route("/connexion", methods=["GET", "POST"])
@access.public
def login():
    return render_template("accounts/login.html")


@bp.route("/deconnexion", methods=["POST"])
@access.public
def logout():
    if current_user.is_authenticated:
        logout_user()
    return redirect(url_for("accounts.home"))


@bp.route("/profil")
@access.mfa_enrolment
@access.signed_in
def profile():
    return render_template("accounts/home.html")


@bp.route("/organisation")
@access.signed_in
def choose_organisation():
    return render_template("accounts/home.html")


@bp.route("/profil/double-authentification")
@access.mfa_enrolment
@access.signed_in
def mfa_setup():
    return render_template("accounts/home.html")


@bp.route("/reauthentification")
@access.mfa_enrolment
@access.signed_in
def reauthenticate():
    return render_template("accounts/home.html")
