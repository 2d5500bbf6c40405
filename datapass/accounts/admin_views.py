"""The administration of accounts (administrators only): users, their roles and invitations,
organisations and their members. The routes join the accounts blueprint of views.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from datapass import access, web
from datapass.accounts import directory, forms, organisations
from datapass.accounts.models import ROLE_LABELS, Organisation, RoleGrant, User
from datapass.accounts.views import bp
from datapass.catalogue import apis as catalogue_apis
from datapass.extensions import db

if TYPE_CHECKING:
    from datapass.catalogue.models import Api

PER_PAGE = 25


def _apis() -> list[Api]:
    return catalogue_apis.list_apis(active_only=True)


def _page_number() -> int:
    return web.query_int("page", 1, minimum=1)


# --- administration: users --------------------------------------------------------------


@bp.route("/admin/utilisateurs")
@access.role_required("admin")
def admin_users():
    search = forms.SearchForm(request.args)
    query = search.q.data or "" if search.validate() else ""
    pagination = directory.users_page(query, _page_number(), PER_PAGE)
    return render_template(
        "accounts/admin_users.html",
        search=search,
        query=query,
        pagination=pagination,
        role_labels=ROLE_LABELS,
    )


def _organisations() -> Sequence[Organisation]:
    return db.session.scalars(select(Organisation).order_by(Organisation.name)).all()


@bp.route("/admin/utilisateurs/inviter", methods=["GET", "POST"])
@access.role_required("admin")
@access.recent_auth
def admin_invite():
    choices = _organisations()
    apis = _apis()
    form = forms.InviteForm(organisations=choices, apis=apis)
    status = 200
    if form.validate_on_submit():
        organisation = (
            db.session.get(Organisation, int(form.organisation_id.data))
            if form.organisation_id.data
            else None
        )
        # The service keeps the API for the instructor role only.
        api_id = int(form.api_id.data) if form.api_id.data else None
        roles = [(role, api_id) for role in form.roles.data]
        with web.acting(form=form) as act:
            user = directory.invite_user(
                form.email.data,
                form.full_name.data,
                access.current_actor(),
                organisation=organisation,
                verified=form.verified.data,
                roles=roles,
            )
        if act.done:
            flash(f"Invitation envoyée à {user.email}.", "success")
            return redirect(url_for("accounts.admin_user", user_id=user.id))
        status = 422
    elif form.is_submitted():
        status = 422
    return render_template("accounts/admin_invite.html", form=form, has_apis=bool(apis)), status


def _user_or_404(user_id: int) -> User:
    # Administrators see every account: the query needs no further scope.
    return db.get_or_404(User, user_id)


@bp.route("/admin/utilisateurs/<int:user_id>")
@access.role_required("admin")
def admin_user(user_id: int):
    user = _user_or_404(user_id)
    apis = _apis()
    return _render_admin_user(user, forms.GrantRoleForm(apis=apis), apis)


def _render_admin_user(
    user: User, grant_form: forms.GrantRoleForm, apis: list[Api], status: int = 200
):
    return render_template(
        "accounts/admin_user.html",
        user=user,
        grant_form=grant_form,
        has_apis=bool(apis),
        role_labels=ROLE_LABELS,
        grants=sorted(user.role_grants, key=lambda g: (g.role, g.api_id or 0)),
        is_self=user.id == current_user.id,
    ), status


@bp.route("/admin/utilisateurs/<int:user_id>/roles", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def admin_grant_role(user_id: int):
    user = _user_or_404(user_id)
    apis = _apis()
    form = forms.GrantRoleForm(apis=apis)
    if not form.validate_on_submit():
        return _render_admin_user(user, form, apis, 422)
    api_id = int(form.api_id.data) if form.api_id.data else None
    with web.acting(form=form) as act:
        directory.grant_role(user, form.role.data, api_id, access.current_actor())
    if act.refused:
        return _render_admin_user(user, form, apis, 422)
    flash(f"Rôle « {directory.role_label(form.role.data)} » attribué à {user.email}.", "success")
    return redirect(url_for("accounts.admin_user", user_id=user.id))


def _post_act(user_id: int, act, success: str):
    """A button that posts one act on a user: CSRF-checked, refused acts explained."""
    user = _user_or_404(user_id)
    form = forms.EmptyForm()
    if not form.validate_on_submit():
        flash("Le formulaire a expiré : recommencez.", "error")
        return redirect(url_for("accounts.admin_user", user_id=user.id))
    with web.acting(success=success.format(email=user.email)):
        act(user)
    return redirect(url_for("accounts.admin_user", user_id=user.id))


@bp.route("/admin/utilisateurs/<int:user_id>/roles/<int:grant_id>/retirer", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def admin_withdraw_role(user_id: int, grant_id: int):
    grant = db.session.scalar(
        select(RoleGrant).where(RoleGrant.id == grant_id, RoleGrant.user_id == user_id)
    )
    if grant is None:
        abort(404)
    return _post_act(
        user_id,
        lambda user: directory.withdraw_role(grant, access.current_actor()),
        "Rôle retiré à {email}.",
    )


@bp.route("/admin/utilisateurs/<int:user_id>/desactiver", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def admin_deactivate(user_id: int):
    return _post_act(
        user_id,
        lambda user: directory.deactivate_user(user, access.current_actor()),
        "Le compte {email} est désactivé : ses sessions sont fermées.",
    )


@bp.route("/admin/utilisateurs/<int:user_id>/reactiver", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def admin_reactivate(user_id: int):
    return _post_act(
        user_id,
        lambda user: directory.reactivate_user(user, access.current_actor()),
        "Le compte {email} est réactivé.",
    )


@bp.route("/admin/utilisateurs/<int:user_id>/renvoyer-invitation", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def admin_resend_invitation(user_id: int):
    return _post_act(
        user_id,
        lambda user: directory.resend_invitation(user, access.current_actor()),
        "Nouvelle invitation envoyée à {email}.",
    )


# --- administration: organisations ----------------------------------------------------------


@bp.route("/admin/organisations")
@access.role_required("admin")
def admin_organisations():
    search = forms.SearchForm(request.args)
    query = search.q.data or "" if search.validate() else ""
    pagination = directory.organisations_page(query, _page_number(), PER_PAGE)
    return render_template(
        "accounts/admin_organisations.html", search=search, query=query, pagination=pagination
    )


@bp.route("/admin/organisations/nouvelle", methods=["GET", "POST"])
@access.role_required("admin")
@access.recent_auth
def admin_organisation_new():
    form = forms.OrganisationForm()
    status = 200
    if form.validate_on_submit():
        with web.acting(form=form) as act:
            organisation = organisations.create_organisation(
                form.siret.data, form.name.data, form.address.data, access.current_actor()
            )
        if act.done:
            flash(f"Organisation « {organisation.name} » enregistrée.", "success")
            return redirect(url_for("accounts.admin_organisation", organisation_id=organisation.id))
        status = 422
    elif form.is_submitted():
        status = 422
    return render_template("accounts/admin_organisation_new.html", form=form), status


def _render_admin_organisation(organisation: Organisation, form, status: int = 200):
    members = sorted(organisation.memberships, key=lambda m: m.user.email)
    return render_template(
        "accounts/admin_organisation.html",
        organisation=organisation,
        members=members,
        form=form,
    ), status


@bp.route("/admin/organisations/<int:organisation_id>")
@access.role_required("admin")
def admin_organisation(organisation_id: int):
    organisation = db.get_or_404(Organisation, organisation_id)
    return _render_admin_organisation(organisation, forms.MemberForm())


@bp.route("/admin/organisations/<int:organisation_id>/membres", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def admin_add_member(organisation_id: int):
    organisation = db.get_or_404(Organisation, organisation_id)
    form = forms.MemberForm()
    if not form.validate_on_submit():
        return _render_admin_organisation(organisation, form, 422)
    with web.acting(form=form) as act:
        membership = organisations.add_member(
            organisation, form.email.data, form.verified.data, access.current_actor()
        )
    if act.refused:
        return _render_admin_organisation(organisation, form, 422)
    flash(f"{membership.user.email} est membre de {organisation.name}.", "success")
    return redirect(url_for("accounts.admin_organisation", organisation_id=organisation.id))
