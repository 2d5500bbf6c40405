"""Pages of the accounts domain: home, sign-in, passwords, TOTP, profile, the organisation
one acts for. The administration of users and organisations is in admin_views.py, on the
same blueprint."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from datapass import access, web
from datapass.accounts import (
    authentication,
    directory,
    forms,
    links,
    mfa,
    organisations,
    passwords,
    sessions,
)
from datapass.accounts.errors import AccountError
from datapass.accounts.models import ROLE_LABELS, Role, User
from datapass.actor import Actor
from datapass.extensions import db

bp = Blueprint("accounts", __name__)


@bp.app_template_global("demo_mfa_notice")
def demo_mfa_notice() -> bool:
    """A demo staff account without MFA where MFA is not required: the layout says so."""
    return (
        current_user.is_authenticated
        and current_user.is_demo
        and current_user.is_staff
        and not current_user.mfa_enabled
        and not mfa.mfa_required(current_user)
    )


# --- helpers ----------------------------------------------------------------------------


def _next(raw: str | None) -> str | None:
    return sessions.safe_next(raw, host=request.host)


def _me() -> User:
    return current_user._get_current_object()


def _actor() -> Actor:
    return access.current_actor()


# Home page cards: (endpoint, title, description, audience). A card shows only when the
# person's roles allow it.
CARDS = [
    (
        "catalogue.index",
        "Catalogue des API",
        "Découvrir les API de données de l'État, leurs données et demander l'accès.",
        "any",
    ),
    (
        "authorizations.applicant_index",
        "Mes demandes d'habilitation",
        "Demander l'accès à une API, suivre vos demandes et celles de votre organisation.",
        "member",
    ),
    (
        "tokens.applicant_index",
        "Mes jetons d'accès",
        "Consulter les jetons de vos habilitations, leur échéance et leur renouvellement.",
        "member",
    ),
    (
        "authorizations.instructor_queue",
        "Instruction des demandes",
        "Examiner, valider ou refuser les demandes des API que vous instruisez.",
        Role.INSTRUCTOR,
    ),
    (
        "lifecycle.dashboard",
        "Tableau de bord sécurité",
        "Jetons à échéance, accès inutilisés, suspensions et révocations.",
        Role.SECURITY_OFFICER,
    ),
    (
        "audit.console",
        "Journal d'audit",
        "Rechercher, exporter et vérifier l'intégrité du journal des actes.",
        Role.SECURITY_OFFICER,
    ),
    (
        "accounts.admin_users",
        "Utilisateurs",
        "Inviter des personnes, attribuer et retirer des rôles, désactiver des comptes.",
        Role.ADMIN,
    ),
    (
        "accounts.admin_organisations",
        "Organisations",
        "Enregistrer les organisations (SIRET) et leurs membres.",
        Role.ADMIN,
    ),
    (
        "catalogue.admin_index",
        "Gestion du catalogue",
        "Fournisseurs, API, périmètres de données et clients machine.",
        Role.ADMIN,
    ),
    (
        "notify.admin_outbox",
        "Envois de courriels et webhooks",
        "Suivre les envois en attente ou en échec et les relancer.",
        Role.ADMIN,
    ),
    (
        "accounts.profile",
        "Mon profil",
        "Mot de passe, double authentification, organisations.",
        "any",
    ),
]


def _cards(user: User) -> list[dict]:
    cards = []
    for endpoint, title, description, audience in CARDS:
        if audience == "member":
            allowed = bool(user.memberships)
        elif audience == "any":
            allowed = True
        else:
            allowed = user.has_role(audience)
        if allowed:
            cards.append({"url": url_for(endpoint), "title": title, "description": description})
    return cards


# --- public pages -----------------------------------------------------------------------


@bp.route("/")
@access.public
def home():
    if not current_user.is_authenticated:
        return render_template("accounts/home.html")
    user = _me()
    return render_template(
        "accounts/home.html",
        cards=_cards(user),
        organisation=organisations.current_organisation(user),
        role_labels=[directory.role_label(r) for r in sorted(user.roles)],
    )


@bp.route("/mentions-legales")
@access.public
def legal():
    return render_template("accounts/legal.html")


@bp.route("/accessibilite")
@access.public
def accessibility():
    """The accessibility statement RGAA requires (state, known non-conformities, contact,
    the Défenseur des droits)."""
    return render_template("accounts/accessibility.html")


# --- sign-in and sign-out ---------------------------------------------------------------


def _after_login(user: User, next_url: str | None):
    target = _next(next_url)
    if mfa.mfa_enrolment_pending(user):
        return redirect(url_for("accounts.mfa_setup", next=target))
    return redirect(target or url_for("accounts.home"))


@bp.route("/connexion", methods=["GET", "POST"])
@access.public
def login():
    if current_user.is_authenticated:
        return redirect(_next(request.args.get("next")) or url_for("accounts.home"))
    form = forms.LoginForm(next=request.args.get("next", ""))
    status = 200
    error = None
    if form.validate_on_submit():
        outcome = authentication.authenticate(
            form.email.data, form.password.data, access.client_ip()
        )
        if outcome.status == "second_factor":
            authentication.begin_second_factor(outcome.user, _next(form.next.data))
        db.session.commit()
        if outcome.status == "second_factor":
            return redirect(url_for("accounts.login_second_factor"))
        if outcome.status == "signed_in":
            flash(f"Bienvenue, {outcome.user.display_name}.", "success")
            return _after_login(outcome.user, form.next.data)
        error = outcome.message
        status = 429 if outcome.status == "throttled" else 401
    elif form.is_submitted():
        status = 422
    return render_template("accounts/login.html", form=form, error=error), status


@bp.route("/connexion/verification", methods=["GET", "POST"])
@access.public
def login_second_factor():
    user, next_url = authentication.pending_second_factor()
    if user is None:
        flash("Votre connexion a expiré : saisissez de nouveau vos identifiants.", "warning")
        return redirect(url_for("accounts.login"))
    form = forms.SecondFactorForm()
    status = 200
    error = None
    if form.validate_on_submit():
        outcome = authentication.complete_second_factor(user, form.code.data, access.client_ip())
        db.session.commit()
        if outcome.status == "signed_in":
            flash(f"Bienvenue, {user.display_name}.", "success")
            return _after_login(user, next_url)
        error = outcome.message
        status = 429 if outcome.status == "throttled" else 401
    elif form.is_submitted():
        status = 422
    return render_template("accounts/second_factor.html", form=form, error=error), status


@bp.route("/deconnexion", methods=["POST"])
@access.signed_in
@access.mfa_enrolment
def logout():
    authentication.sign_out(_me(), access.client_ip())
    db.session.commit()
    flash(
        "Vous êtes déconnecté, ici et sur tous les autres navigateurs et appareils où vous "
        "étiez connecté à Datapass.",
        "info",
    )
    return redirect(url_for("accounts.home"))


# --- passwords --------------------------------------------------------------------------


@bp.route("/mot-de-passe/oublie", methods=["GET", "POST"])
@access.public
def forgot_password():
    form = forms.ForgotPasswordForm()
    if form.validate_on_submit():
        links.request_password_reset(form.email.data, access.client_ip())
        db.session.commit()
        return render_template(
            "accounts/forgot_password.html",
            form=form,
            sent=True,
            minutes=current_app.config["RESET_LINK_MINUTES"],
        )
    status = 422 if form.is_submitted() else 200
    return render_template("accounts/forgot_password.html", form=form, sent=False), status


def _set_password_page(token: str, purpose: str):
    try:
        user = links.read_password_link(token, purpose)
    except AccountError as exc:
        return render_template(
            "accounts/link_invalid.html", message=exc.message, purpose=purpose
        ), 400
    form = forms.NewPasswordForm()
    status = 200
    if form.validate_on_submit():
        if purpose == "invite":
            success = "Votre mot de passe est enregistré : vous pouvez vous connecter."
        else:
            success = (
                "Votre mot de passe a été modifié. Toutes vos sessions ont été fermées : "
                "connectez-vous avec le nouveau mot de passe."
            )
        with web.acting(form=form, success=success) as act:
            links.reset_password(token, form.password.data, access.client_ip(), purpose=purpose)
        if act.done:
            return redirect(url_for("accounts.login"))
        status = 422
    elif form.is_submitted():
        status = 422
    return render_template(
        "accounts/set_password.html", form=form, user=user, purpose=purpose
    ), status


@bp.route("/mot-de-passe/reinitialiser/<token>", methods=["GET", "POST"])
@access.public
def reset_password(token: str):
    return _set_password_page(token, "reset")


@bp.route("/invitation/<token>", methods=["GET", "POST"])
@access.public
def accept_invitation(token: str):
    return _set_password_page(token, "invite")


@bp.route("/profil/mot-de-passe", methods=["GET", "POST"])
@access.signed_in
def change_password():
    form = forms.ChangePasswordForm()
    status = 200
    if form.validate_on_submit():
        success = "Votre mot de passe a été modifié. Vos autres sessions ont été fermées."
        with web.acting(form=form, success=success) as act:
            passwords.change_password(
                _me(), form.current_password.data, form.password.data, _actor()
            )
        if act.done:
            return redirect(url_for("accounts.profile"))
        status = 422
    elif form.is_submitted():
        status = 422
    return render_template("accounts/change_password.html", form=form), status


# --- profile, TOTP, re-authentication ---------------------------------------------------


@bp.route("/profil")
@access.signed_in
@access.mfa_enrolment
def profile():
    user = _me()
    return render_template(
        "accounts/profile.html",
        user=user,
        organisation=organisations.current_organisation(user),
        role_grants=sorted(user.role_grants, key=lambda g: (g.role, g.api_id or 0)),
        role_labels=ROLE_LABELS,
        mfa_required=mfa.mfa_required(user),
        remaining_codes=mfa.remaining_recovery_codes(user) if user.mfa_enabled else 0,
        action_form=forms.EmptyForm(),
    )


@bp.route("/profil/double-authentification", methods=["GET", "POST"])
@access.signed_in
@access.mfa_enrolment
@access.recent_auth
def mfa_setup():
    user = _me()
    next_url = _next(request.args.get("next"))
    if user.mfa_enabled:
        return render_template(
            "accounts/mfa_status.html",
            user=user,
            remaining_codes=mfa.remaining_recovery_codes(user),
            mfa_required=mfa.mfa_required(user),
        )
    form = forms.TotpConfirmForm()
    status = 200
    if form.validate_on_submit():
        with web.acting(form=form) as act:
            codes = mfa.enable_totp(user, form.code.data, _actor())
        if act.done:
            return render_template(
                "accounts/recovery_codes.html", codes=codes, enabled=True, next_url=next_url
            )
        status = 422
    elif form.is_submitted():
        status = 422
    enrolment = mfa.totp_enrolment(user)
    return render_template(
        "accounts/mfa_setup.html",
        form=form,
        enrolment=enrolment,
        mfa_required=mfa.mfa_required(user),
    ), status


@bp.route("/profil/double-authentification/desactiver", methods=["POST"])
@access.signed_in
@access.recent_auth
def mfa_disable():
    form = forms.EmptyForm()
    if not form.validate_on_submit():
        return redirect(url_for("accounts.mfa_setup"))
    user = _me()
    with web.acting() as act:
        mfa.disable_totp(user, _actor())
    if act.refused:
        return redirect(url_for("accounts.profile"))
    if mfa.mfa_required(user):
        flash(
            "La double authentification a été désactivée. Elle est obligatoire pour votre rôle : "
            "configurez-la de nouveau avec votre nouvel appareil.",
            "warning",
        )
        return redirect(url_for("accounts.mfa_setup"))
    flash("La double authentification a été désactivée.", "success")
    return redirect(url_for("accounts.profile"))


@bp.route("/profil/double-authentification/codes-de-secours", methods=["POST"])
@access.signed_in
@access.recent_auth
def mfa_regenerate_codes():
    form = forms.EmptyForm()
    if not form.validate_on_submit():
        return redirect(url_for("accounts.mfa_setup"))
    with web.acting() as act:
        codes = mfa.regenerate_recovery_codes(_me(), _actor())
    if act.refused:
        return redirect(url_for("accounts.profile"))
    return render_template("accounts/recovery_codes.html", codes=codes, enabled=False)


@bp.route("/reauthentification", methods=["GET", "POST"])
@access.signed_in
@access.mfa_enrolment
def reauthenticate():
    user = _me()
    form = forms.ReauthenticateForm(next=request.args.get("next", ""))
    status = 200
    error = None
    if form.validate_on_submit():
        outcome = authentication.reauthenticate(
            user, form.password.data, form.code.data, access.client_ip()
        )
        db.session.commit()
        if outcome.status == "signed_in":
            return redirect(_next(form.next.data) or url_for("accounts.home"))
        error = outcome.message
        status = 429 if outcome.status == "throttled" else 401
    elif form.is_submitted():
        status = 422
    return render_template(
        "accounts/reauthenticate.html", form=form, error=error, needs_code=user.mfa_enabled
    ), status


# --- organisations ----------------------------------------------------------------------


@bp.route("/organisation", methods=["GET", "POST"])
@access.signed_in
def choose_organisation():
    user = _me()
    mine = sorted(user.organisations, key=lambda o: o.name)
    current = organisations.current_organisation(user)
    form = forms.OrganisationChoiceForm(
        organisations=mine,
        data={"organisation_id": str(current.id) if current else None},
    )
    status = 200
    if form.validate_on_submit():
        with web.acting(form=form) as act:
            chosen = organisations.switch_organisation(
                user, int(form.organisation_id.data), _actor()
            )
        if act.done:
            flash(f"Vous agissez désormais pour {chosen.name}.", "success")
            return redirect(_next(request.args.get("next")) or url_for("accounts.home"))
        status = 422
    elif form.is_submitted():
        status = 422
    return render_template(
        "accounts/choose_organisation.html",
        form=form,
        organisations=mine,
        current=current,
    ), status
