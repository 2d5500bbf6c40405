"""Pages of the audit domain: the security officer's console (search, event detail,
exports) and consumption pages (an API's daily volume and top consumers, CSV downloads)."""

from __future__ import annotations

import json

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select

from datapass import access, web
from datapass.audit import exports, forms, names, search
from datapass.audit.models import AuditExport
from datapass.extensions import db

bp = Blueprint("audit", __name__, url_prefix="/audit")

OFFICERS = ("security_officer", "admin")


def _me():
    return current_user._get_current_object()


def _apis():
    """Every API (id, name) for the console's filter, through the metadata by name: the audit
    domain sits below the catalogue and imports none of its models."""
    apis = db.metadata.tables["apis"]
    return db.session.execute(select(apis.c.id, apis.c.name).order_by(apis.c.name)).all()


# --- console --------------------------------------------------------------------------------


@bp.route("/")
@access.role_required(*OFFICERS)
def console():
    flt, errors = search.parse_filter(request.args)
    before = web.query_int("avant", maximum=web.INT64_MAX)
    page = search.search(flt, before) if not errors else None
    export_form = forms.ExportForm(
        formdata=None, **{k: v for k, v in flt.query_args().items() if v}
    )
    return render_template(
        "audit/console.html",
        flt=flt,
        args=request.args,
        errors=errors,
        page=page,
        names=names.resolve(page.events if page else ()),
        apis=_apis(),
        token_form=forms.PastedTokenForm(),
        export_form=export_form,
        first_page=not before,
    )


@bp.route("/jeton", methods=["POST"])
@access.role_required(*OFFICERS)
def search_token():
    form = forms.PastedTokenForm()
    if not form.validate_on_submit():
        flash("Collez un jeton (ou son empreinte) pour rechercher ses événements.", "error")
        return redirect(url_for("audit.console"))
    digest = search.token_digest_of(form.value.data)
    return redirect(url_for("audit.console", jeton=digest))


@bp.route("/evenements/<bigint:seq>")
@access.role_required(*OFFICERS)
def event(seq: int):
    found = search.get_event(seq)
    if found is None:
        abort(404)
    try:
        payload = json.dumps(json.loads(found.payload), indent=2, ensure_ascii=False)
    except ValueError:
        payload = found.payload
    return render_template(
        "audit/event.html", event=found, payload=payload, names=names.resolve([found])
    )


# --- exports --------------------------------------------------------------------------------


@bp.route("/exports", methods=["POST"])
@access.role_required(*OFFICERS)
def create_export():
    form = forms.ExportForm()
    flt, errors = search.parse_filter(request.form)
    if not form.validate_on_submit() or errors:
        flash("L'export n'a pas pu être préparé : vérifiez les critères de recherche.", "error")
        return redirect(url_for("audit.console"))
    export = exports.create_export(flt, form.format.data, access.current_actor())
    db.session.commit()
    return redirect(url_for("audit.export", export_id=export.id))


def _load_export(export_id: int):
    export = exports.get_export(export_id, _me())
    if export is None:
        abort(404)
    return export


@bp.route("/exports/<int:export_id>")
@access.role_required(*OFFICERS)
def export(export_id: int):
    found = _load_export(export_id)
    return render_template(
        "audit/export.html", export=found, criteria=search.criteria(found.filters)
    )


def _export_chunks(export_id: int):
    # Streamed after the view's session is gone: the export is loaded again (by id).
    return exports.stream(db.session.get(AuditExport, export_id))


@bp.route("/exports/<int:export_id>/fichier")
@access.role_required(*OFFICERS)
def export_file(export_id: int):
    found = _load_export(export_id)
    exports.record_download(found, "file", access.current_actor())
    db.session.commit()
    response = Response(
        web.stream_lazily(_export_chunks, found.id), mimetype=exports.MEDIA_TYPES[found.format]
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{exports.filename(found)}"'
    return response


@bp.route("/exports/<int:export_id>/manifeste")
@access.role_required(*OFFICERS)
def export_manifest(export_id: int):
    found = _load_export(export_id)
    signed = exports.signed_manifest(found)
    exports.record_download(found, "manifest", access.current_actor())
    db.session.commit()
    response = Response(signed + "\n", mimetype="application/jose")
    name = exports.filename(found, manifest=True)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@bp.app_context_processor
def _limits():
    return {
        "audit_base_url": current_app.config["BASE_URL"],
    }
