"""Pages of the lifecycle: the renewal wizard, the self-reactivation of a suspended token,
the instructor's confirmation of a renewal, the security officer's dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from datapass import access, clock, web
from datapass.catalogue import apis as catalogue_apis
from datapass.lifecycle import dashboard as dashboards
from datapass.lifecycle import decisions, forms, plan, queries, reactivation, renewal, trends
from datapass.lifecycle.dashboard import DashboardFilters
from datapass.lifecycle.renewal import RenewalAnswers

if TYPE_CHECKING:
    from datetime import date

    from datapass.accounts.models import User
    from datapass.lifecycle.models import Renewal
    from datapass.tokens.models import AccessToken

bp = Blueprint("lifecycle", __name__)


def _me():
    return current_user._get_current_object()


def _member_token(token_id: int) -> AccessToken:
    """A token of one of the user's organisations (another organisation's → 404)."""
    token = queries.get_member_token(_me(), token_id)
    if token is None:
        abort(404)
    return token


@bp.app_template_global("lifecycle_upcoming_steps")
def _upcoming_steps(token: AccessToken) -> list[tuple[date, str]]:
    return plan.upcoming_steps(token)


@bp.app_template_global("lifecycle_can_renew")
def _can_renew(token: AccessToken, user: User | None) -> bool:
    return renewal.can_renew(token, user)


@bp.app_template_global("lifecycle_can_self_reactivate")
def _can_self_reactivate(token: AccessToken, user: User) -> bool:
    return reactivation.can_self_reactivate(token, user)


@bp.app_template_global("lifecycle_renewal")
def _renewal(token: AccessToken) -> Renewal | None:
    return renewal.shown_renewal(token)


@bp.app_template_global("lifecycle_renewal_blocker")
def _renewal_blocker(token: AccessToken) -> str | None:
    return renewal.renewal_blocker(token)


@bp.app_template_global("lifecycle_justification_form")
def _justification_form():
    return forms.JustificationForm(prefix="reactiver")


def _renewal_form(token: AccessToken) -> forms.RenewalForm:
    habilitation = token.habilitation
    form = forms.RenewalForm()
    labels = token.api.scope_labels()
    form.scopes.choices = [
        forms.SelectChoice(code, labels.get(code, code)) for code in habilitation.scopes
    ]
    if request.method == "GET":
        contacts = renewal.current_contacts(habilitation)
        for role in renewal.CONTACTS:
            sub = getattr(form, role)
            for part in ("name", "email", "phone"):
                getattr(sub.form, part).data = contacts[role][part]
        form.scopes.data = list(habilitation.scopes)
    return form


@bp.route("/jetons/<int:token_id>/renouvellement", methods=["GET", "POST"])
@access.signed_in
def renew(token_id: int):
    token = _member_token(token_id)
    blocker = renewal.renewal_refusal(token, _me())
    form = _renewal_form(token)
    if blocker is not None:
        return render_template(
            "lifecycle/renew.html", token=token, form=form, blocker=blocker
        ), 409 if request.method == "POST" else 200
    if not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return render_template("lifecycle/renew.html", token=token, form=form), status
    answers = RenewalAnswers(
        same_person=form.same_person.data == "oui",
        purpose_unchanged=form.purpose_unchanged.data == "oui",
        legal_basis_holds=form.legal_basis_holds.data == "oui",
        contacts={
            role: {
                part: getattr(getattr(form, role).form, part).data or ""
                for part in ("name", "email", "phone")
            }
            for role in renewal.CONTACTS
        },
        scopes=list(form.scopes.data or []),
    )
    with web.acting(form=form) as act:
        outcome = renewal.renew(token, access.current_actor(), answers)
    if act.refused:
        return render_template("lifecycle/renew.html", token=token, form=form), 409
    if outcome.completed:
        # Shown once: the page is not cached and the token is no longer kept sealed.
        return render_template(
            "lifecycle/renewed.html",
            old=token,
            new=outcome.new_token,
            raw=outcome.raw,
            renewal=outcome.renewal,
        )
    if outcome.reopened:
        flash(
            "Des informations ont changé : la demande est rouverte, pré-remplie. Complétez-la "
            "et soumettez-la ; le renouvellement sera effectif à sa validation.",
            "info",
        )
        return redirect(url_for("authorizations.show", request_id=outcome.renewal.request_id))
    flash(
        "Votre renouvellement est transmis : l'instruction de cette API le confirme avant la "
        "délivrance du nouveau jeton.",
        "info",
    )
    return redirect(url_for("tokens.show", token_id=token.id))


@bp.route("/jetons/<int:token_id>/reactivation-organisation", methods=["POST"])
@access.signed_in
def self_reactivate(token_id: int):
    token = _member_token(token_id)
    form = forms.JustificationForm(prefix="reactiver")
    if not form.validate_on_submit():
        for error in form.justification.errors:
            flash(error, "error")
        return redirect(url_for("tokens.show", token_id=token.id))
    with web.acting(success="Le jeton est réactivé. Les instructeurs de l'API en sont informés."):
        reactivation.self_reactivate(token, access.current_actor(), form.justification.data)
    return redirect(url_for("tokens.show", token_id=token.id))


@bp.route("/renouvellements")
@access.role_required("instructor")
def renewals():
    return render_template("lifecycle/renewals.html", renewals=decisions.pending_renewals(_me()))


@bp.route("/renouvellements/<int:renewal_id>", methods=["GET", "POST"])
@access.role_required("instructor")
def decide(renewal_id: int):
    pending = decisions.get_renewal_for_instructor(renewal_id, _me())
    if pending is None:
        abort(404)
    form = forms.DecisionForm()
    if request.method == "POST" and form.validate_on_submit():
        with web.acting(form=form, success="Décision enregistrée.") as act:
            decisions.decide(
                pending, access.current_actor(), form.decision.data == "confirmer", form.note.data
            )
        if act.done:
            return redirect(url_for("lifecycle.renewals"))
    return render_template(
        "lifecycle/decide.html",
        renewal=pending,
        form=form,
        can_decide=decisions.can_decide(pending, _me()),
    ), (422 if request.method == "POST" else 200)


def _filters() -> DashboardFilters:
    api_id = web.query_int("api")
    organisation = (request.args.get("organisation") or "").strip()[:200]
    return DashboardFilters(api_id=api_id, organisation=organisation)


@bp.route("/securite/tableau-de-bord")
@access.role_required("security_officer")
def dashboard():
    filters = _filters()
    weeks = trends.expiries_per_week(filters)
    stages = trends.unused_by_stage(filters)
    return render_template(
        "lifecycle/dashboard.html",
        weeks=weeks,
        expiries_chart=trends.expiries_chart(weeks),
        stages=stages,
        stages_chart=trends.stages_chart(stages),
        lists=dashboards.dashboard(filters),
        summary=dashboards.dashboard_by_api(filters),
        filters=filters,
        apis=catalogue_apis.list_apis(),
    )


@bp.route("/securite/tableau-de-bord/<name>.csv")
@access.role_required("security_officer")
def dashboard_csv(name: str):
    if name not in dashboards.DASHBOARD_LISTS:
        abort(404)
    filters = _filters()
    stamp = clock.local(clock.now()).strftime("%Y%m%d-%H%M")
    return Response(
        web.stream_lazily(dashboards.dashboard_csv, name, filters),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="datapass-{name}-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )
