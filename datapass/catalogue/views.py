"""Pages of the catalogue: the public list of APIs, and its administration (APIs, scopes,
status and maintenance, providers and their machine clients)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from wtforms.fields.choices import SelectChoice

from datapass import access, clock, web
from datapass.catalogue import apis, forms, providers
from datapass.catalogue.models import Api, MachineClient, Provider, Scope
from datapass.extensions import db

bp = Blueprint("catalogue", __name__)


@bp.route("/catalogue")
@access.public
def index():
    return render_template("catalogue/index.html", apis=apis.list_apis(active_only=True))


@bp.route("/catalogue/<slug>")
@access.public
def api_detail(slug: str):
    api = db.session.scalar(select(Api).where(Api.slug == slug, Api.is_active.is_(True)))
    if api is None:
        abort(404)
    return render_template("catalogue/api.html", api=api)


# --- administration ----------------------------------------------------------------------


@bp.route("/admin/catalogue")
@access.role_required("admin")
def admin_index():
    return render_template(
        "catalogue/admin_index.html",
        apis=apis.list_apis(),
        providers=providers.list_providers(),
    )


def _api_values(form) -> dict:
    return {
        "name": form.name.data.strip(),
        "description": (form.description.data or "").strip(),
        "audience": form.audience.data.strip(),
        "legal_bases": forms.parse_legal_bases(form.legal_bases.data),
        "coverage_note": (form.coverage_note.data or "").strip(),
        "fallback_procedure": (form.fallback_procedure.data or "").strip(),
        "renewal_policy": form.renewal_policy.data,
        "is_active": bool(form.is_active.data),
    }


@bp.route("/admin/catalogue/apis/nouvelle", methods=["GET", "POST"])
@access.role_required("admin")
@access.recent_auth
def new_api():
    form = forms.NewApiForm(data={"is_active": True} if request.method == "GET" else None)
    form.provider_id.choices = [SelectChoice(p.id, p.name) for p in providers.list_providers()]
    if form.validate_on_submit():
        provider = db.get_or_404(Provider, form.provider_id.data)
        with web.acting(form=form, success="API ajoutée au catalogue.") as act:
            api = apis.create_api(
                provider, access.current_actor(), {"slug": form.slug.data, **_api_values(form)}
            )
        if act.done:
            return redirect(url_for("catalogue.edit_api", api_id=api.id))
    return render_template("catalogue/api_new.html", form=form), (
        422 if request.method == "POST" else 200
    )


def _render_api(
    api: Api,
    form: forms.ApiForm | None = None,
    status_form: forms.StatusForm | None = None,
    scope_form: forms.ScopeForm | None = None,
    status: int = 200,
):
    if form is None:
        form = forms.ApiForm(obj=api)
        form.legal_bases.data = forms.format_legal_bases(api.legal_bases or [])
    if status_form is None:
        status_form = forms.StatusForm(
            data={
                "status": api.status,
                "message": api.maintenance_message or "",
                "start": _paris_naive(api.maintenance_start),
                "end": _paris_naive(api.maintenance_end),
            }
        )
    return render_template(
        "catalogue/api_edit.html",
        api=api,
        form=form,
        status_form=status_form,
        scope_form=scope_form or forms.ScopeForm(),
    ), status


def _paris_naive(moment):
    local = clock.local(moment)
    return local.replace(tzinfo=None) if local is not None else None


@bp.route("/admin/catalogue/apis/<int:api_id>", methods=["GET", "POST"])
@access.role_required("admin")
@access.recent_auth
def edit_api(api_id: int):
    api = db.get_or_404(Api, api_id)
    if request.method == "GET":
        return _render_api(api)
    form = forms.ApiForm()
    if form.validate_on_submit():
        with web.acting(form=form, success="API enregistrée.") as act:
            apis.update_api(api, access.current_actor(), _api_values(form))
        if act.done:
            return redirect(url_for("catalogue.edit_api", api_id=api.id))
    return _render_api(api, form=form, status=422)


@bp.route("/admin/catalogue/apis/<int:api_id>/statut", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def set_status(api_id: int):
    api = db.get_or_404(Api, api_id)
    form = forms.StatusForm()
    if not form.validate_on_submit():
        return _render_api(api, status_form=form, status=422)
    with web.acting(success="Statut enregistré."):
        apis.set_status(
            api,
            access.current_actor(),
            form.status.data,
            (form.message.data or "").strip() or None,
            forms.paris_to_utc(form.start.data),
            forms.paris_to_utc(form.end.data),
        )
    return redirect(url_for("catalogue.edit_api", api_id=api.id))


@bp.route("/admin/catalogue/apis/<int:api_id>/donnees", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def add_scope(api_id: int):
    api = db.get_or_404(Api, api_id)
    form = forms.ScopeForm()
    if form.validate_on_submit():
        with web.acting(form=form, success="Donnée ajoutée.") as act:
            apis.add_scope(
                api,
                access.current_actor(),
                form.code.data,
                form.label.data.strip(),
                bool(form.sensitive.data),
            )
        if act.done:
            return redirect(url_for("catalogue.edit_api", api_id=api.id))
    return _render_api(api, scope_form=form, status=422)


@bp.route("/admin/catalogue/donnees/<int:scope_id>", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def edit_scope(scope_id: int):
    scope = db.get_or_404(Scope, scope_id)
    form = forms.ScopeEditForm()
    if not form.validate_on_submit():
        flash("Le libellé de la donnée est obligatoire.", "error")
    else:
        with web.acting(success="Donnée enregistrée."):
            apis.update_scope(
                scope, access.current_actor(), form.label.data.strip(), bool(form.sensitive.data)
            )
    return redirect(url_for("catalogue.edit_api", api_id=scope.api_id))


@bp.route("/admin/catalogue/donnees/<int:scope_id>/suppression", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def delete_scope(scope_id: int):
    scope = db.get_or_404(Scope, scope_id)
    api_id = scope.api_id
    with web.acting(
        success="Donnée retirée du catalogue (les habilitations existantes gardent la leur)."
    ):
        apis.remove_scope(scope, access.current_actor())
    return redirect(url_for("catalogue.edit_api", api_id=api_id))


@bp.route("/admin/catalogue/fournisseurs/nouveau", methods=["GET", "POST"])
@access.role_required("admin")
@access.recent_auth
def new_provider():
    form = forms.NewProviderForm()
    if form.validate_on_submit():
        with web.acting(form=form, success="Fournisseur ajouté.") as act:
            provider = providers.create_provider(
                access.current_actor(),
                form.slug.data,
                form.name.data.strip(),
                form.contact_email.data,
            )
        if act.done:
            return redirect(url_for("catalogue.edit_provider", provider_id=provider.id))
    return render_template("catalogue/provider_new.html", form=form), (
        422 if request.method == "POST" else 200
    )


def _render_provider(
    provider: Provider,
    form: forms.ProviderForm | None = None,
    client_form: forms.ClientForm | None = None,
    secret: str | None = None,
    client: MachineClient | None = None,
    status: int = 200,
):
    return render_template(
        "catalogue/provider.html",
        provider=provider,
        form=form or forms.ProviderForm(obj=provider),
        client_form=client_form or forms.ClientForm(),
        secret=secret,
        new_client=client,
    ), status


@bp.route("/admin/catalogue/fournisseurs/<int:provider_id>", methods=["GET", "POST"])
@access.role_required("admin")
@access.recent_auth
def edit_provider(provider_id: int):
    provider = db.get_or_404(Provider, provider_id)
    if request.method == "GET":
        return _render_provider(provider)
    form = forms.ProviderForm()
    if not form.validate_on_submit():
        return _render_provider(provider, form=form, status=422)
    with web.acting(success="Fournisseur enregistré."):
        providers.update_provider(
            provider,
            access.current_actor(),
            {
                "name": form.name.data.strip(),
                "contact_email": form.contact_email.data,
                "developer_emails": form.developer_emails.data or "",
            },
        )
    return redirect(url_for("catalogue.edit_provider", provider_id=provider.id))


@bp.route("/admin/catalogue/fournisseurs/<int:provider_id>/clients", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def create_client(provider_id: int):
    provider = db.get_or_404(Provider, provider_id)
    form = forms.ClientForm()
    if not form.validate_on_submit():
        return _render_provider(provider, client_form=form, status=422)
    client, secret = providers.register_client(
        provider, access.current_actor(), form.name.data.strip()
    )
    db.session.commit()
    # Rendered, not redirected: the secret is shown this once and never stored in clear.
    return _render_provider(provider, secret=secret, client=client)


@bp.route("/admin/catalogue/clients/<int:client_id>/revocation", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def revoke_client(client_id: int):
    client = db.get_or_404(MachineClient, client_id)
    if providers.revoke_client(client, access.current_actor()):
        db.session.commit()
        flash(
            f"Client {client.client_id} révoqué : ses appels sont refusés dès maintenant.",
            "success",
        )
    return redirect(url_for("catalogue.edit_provider", provider_id=client.provider_id))
