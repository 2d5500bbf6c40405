"""Pages of the tokens domain: the organisation's tokens, a token's page and its acts, the
staff's supervision list, and the single-use link that hands a token to the technical
contact."""

from __future__ import annotations

from itertools import groupby

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from datapass import access, formatting, web
from datapass.authorizations import visibility as authorization_visibility
from datapass.authorizations.models import Habilitation
from datapass.extensions import db
from datapass.tokens import forms, issuance, links, queries, transitions
from datapass.tokens.models import AccessToken
from datapass.tokens.states import TokenStatus

bp = Blueprint("tokens", __name__, url_prefix="/jetons")

PER_PAGE = 50


def _me():
    return current_user._get_current_object()


def _load(token_id: int) -> AccessToken:
    """The token, if the current user may see it (another organisation's token → 404)."""
    token = queries.get_visible(_me(), token_id)
    if token is None:
        abort(404)
    return token


def _page() -> int:
    return web.query_int("page", 1, minimum=1, maximum=99_999)


def _render_show(token: AccessToken, status: int = 200, **forms_):
    user = _me()
    context = {
        "rotate_form": forms.RotateForm(prefix="rotate"),
        "revoke_form": forms.ReasonForm(prefix="revoke"),
        "suspend_form": forms.ReasonForm(prefix="suspend"),
        "reactivate_form": forms.ReasonForm(prefix="reactivate"),
        "action_form": forms.EmptyForm(),
    }
    context.update(forms_)
    successor = db.session.scalar(
        select(AccessToken).where(AccessToken.predecessor_id == token.id).limit(1)
    )
    return render_template(
        "tokens/show.html",
        token=token,
        api=token.api,
        habilitation=token.habilitation,
        habilitation_visible=authorization_visibility.get_habilitation(token.habilitation_id, user)
        is not None,
        successor=successor
        if successor is not None and queries.get_visible(user, successor.id)
        else None,
        user=user,
        **context,
    ), status


@bp.route("/")
@access.signed_in
def applicant_index():
    # Grouped by habilitation (newest first), each group's tokens newest first: the template
    # starts a group whenever the habilitation changes.
    query = (
        queries.organisation_tokens_query(_me())
        .join(Habilitation, Habilitation.id == AccessToken.habilitation_id)
        .order_by(
            Habilitation.created_at.desc(),
            Habilitation.id.desc(),
            AccessToken.issued_at.desc(),
            AccessToken.id.desc(),
        )
    )
    pagination = db.paginate(query, page=_page(), per_page=PER_PAGE, error_out=False)
    groups = [
        (habilitation, list(tokens))
        for habilitation, tokens in groupby(pagination.items, key=lambda t: t.habilitation)
    ]
    return render_template(
        "tokens/index.html",
        pagination=pagination,
        tokens=pagination.items,
        groups=groups,
        supervision=False,
    )


@bp.route("/supervision")
@access.role_required("instructor", "security_officer")
def supervision():
    query = queries.visible_tokens_query(_me())
    status = request.args.get("statut")
    if status in {s.value for s in TokenStatus}:
        query = query.where(AccessToken.status == status)
    query = query.order_by(AccessToken.issued_at.desc())
    pagination = db.paginate(query, page=_page(), per_page=PER_PAGE, error_out=False)
    return render_template(
        "tokens/index.html",
        pagination=pagination,
        tokens=pagination.items,
        supervision=True,
        statuses=list(TokenStatus),
        status=status,
    )


@bp.app_template_global()
def habilitation_tokens(habilitation) -> list[AccessToken]:
    """The tokens of a habilitation that the current user may see, newest first (the
    habilitation's page lists them; the authorizations domain does not know tokens)."""
    query = queries.visible_tokens_query(_me()).where(
        AccessToken.habilitation_id == habilitation.id
    )
    order = (AccessToken.issued_at.desc(), AccessToken.id.desc())
    return list(db.session.scalars(query.order_by(*order)))


@bp.route("/<int:token_id>")
@access.signed_in
def show(token_id: int):
    return _render_show(_load(token_id))


@bp.route("/<int:token_id>/afficher", methods=["POST"])
@access.signed_in
@access.recent_auth
def reveal(token_id: int):
    token = _load(token_id)
    if not token.can_reveal(_me()):
        abort(403)
    if not forms.EmptyForm().validate_on_submit():
        abort(400)
    with web.acting() as act:
        raw = links.reveal(token, access.current_actor())
    if act.refused:
        return redirect(url_for("tokens.show", token_id=token.id))
    return render_template("tokens/revealed.html", token=token, raw=raw)


@bp.route("/<int:token_id>/envoi", methods=["POST"])
@access.signed_in
@access.recent_auth
def send(token_id: int):
    token = _load(token_id)
    if not token.can_send(_me()):
        abort(403)
    if not forms.EmptyForm().validate_on_submit():
        abort(400)
    with web.acting() as act:
        link = links.send_to_technical_contact(token, access.current_actor())
    if act.done:  # the message names the link's expiry and recipient
        flash(
            f"Un lien à usage unique, valable jusqu'au {formatting.datetime(link.expires_at)} "
            f"(heure de Paris), a été envoyé à {link.recipient}.",
            "success",
        )
    return redirect(url_for("tokens.show", token_id=token.id))


@bp.route("/<int:token_id>/rotation", methods=["POST"])
@access.signed_in
@access.recent_auth
def rotate(token_id: int):
    token = _load(token_id)
    if not token.can_rotate(_me()):
        abort(403)
    form = forms.RotateForm(prefix="rotate")
    if not form.validate_on_submit():
        return _render_show(token, 422, rotate_form=form)
    success = (
        "Nouveau jeton émis. Affichez-le une seule fois ou envoyez-le au contact technique ; "
        "l'ancien reste valable pendant le délai de grâce choisi."
    )
    with web.acting(form=form, success=success) as act:
        new, _raw = issuance.rotate(token, access.current_actor(), form.grace_days.data)
    if act.refused:
        return _render_show(token, 422, rotate_form=form)
    return redirect(url_for("tokens.show", token_id=new.id))


def _reason_act(token_id: int, name: str, prefix: str, do, done: str):
    token = _load(token_id)
    if not token.can(name, _me()):
        abort(403)
    form = forms.ReasonForm(prefix=prefix)
    if not form.validate_on_submit():
        return _render_show(token, 422, **{f"{prefix}_form": form})
    with web.acting(form=form, success=done) as act:
        do(token, access.current_actor(), form.reason.data.strip())
    if act.refused:
        return _render_show(token, 422, **{f"{prefix}_form": form})
    return redirect(url_for("tokens.show", token_id=token.id))


@bp.route("/<int:token_id>/revocation", methods=["POST"])
@access.signed_in
@access.recent_auth
def revoke(token_id: int):
    return _reason_act(token_id, "revoke", "revoke", transitions.revoke, "Le jeton est révoqué.")


@bp.route("/<int:token_id>/suspension", methods=["POST"])
@access.role_required("instructor", "security_officer")
@access.recent_auth
def suspend(token_id: int):
    return _reason_act(
        token_id, "suspend", "suspend", transitions.suspend, "Le jeton est suspendu."
    )


@bp.route("/<int:token_id>/reactivation", methods=["POST"])
@access.role_required("instructor", "security_officer")
@access.recent_auth
def reactivate(token_id: int):
    return _reason_act(
        token_id, "reactivate", "reactivate", transitions.reactivate, "Le jeton est réactivé."
    )


@bp.route("/lien/<secret>", methods=["GET", "POST"])
@access.public
def link(secret: str):
    """The technical contact's single-use link. GET only shows a button (mail scanners that
    prefetch links must not consume it); POST reveals the token once."""
    found = links.find_link(secret)
    if found is None:
        return render_template("tokens/link_invalid.html"), 404
    form = forms.EmptyForm()
    if request.method == "POST" and form.validate_on_submit():
        # Not ``web.acting``: a refused link answers the invalid-link page alone, no message.
        try:
            raw = links.consume_link(found, access.current_actor())
        except transitions.TokenError:
            db.session.rollback()
            return render_template("tokens/link_invalid.html"), 404
        db.session.commit()
        return render_template("tokens/revealed.html", token=found.token, raw=raw, by_link=True)
    return render_template("tokens/link.html", link=found, token=found.token, form=form)
