"""Pages of authorization requests: the applicant's form and list, the request page with its
timeline and messages, the instructor's queue, exports, statistics and message templates."""

from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from datapass import access, clock, web
from datapass.accounts.models import User
from datapass.authorizations import decisions, exports, forms, queue, snapshots, states, visibility
from datapass.authorizations import documents as authorization_documents
from datapass.authorizations import messages as authorization_messages
from datapass.authorizations import sections as authorization_sections
from datapass.authorizations import statistics as authorization_statistics
from datapass.authorizations import templates as authorization_templates
from datapass.authorizations.errors import InvalidRequest
from datapass.authorizations.models import CONTACT_ROLES
from datapass.authorizations.states import Event, RequestState
from datapass.catalogue import apis as catalogue_apis
from datapass.extensions import db

bp = Blueprint("authorizations", __name__)

SUCCESS = {
    Event.SUBMIT: "Votre demande a été soumise : les instructeurs de l'API en sont informés.",
    Event.REQUEST_CHANGES: "Les modifications ont été demandées au demandeur.",
    Event.APPROVE: "La demande est validée : l'habilitation est créée.",
    Event.REFUSE: "La demande est refusée.",
    Event.ARCHIVE: "La demande est archivée.",
    Event.REOPEN: "La mise à jour est ouverte : l'habilitation en vigueur reste active.",
    Event.CANCEL_REOPENING: "La mise à jour est annulée : l'habilitation en vigueur est inchangée.",
    Event.REVOKE: "L'habilitation est révoquée, ainsi que ses jetons.",
}


@bp.app_template_global()
def state_enum(value: str) -> RequestState:
    return RequestState(value)


@bp.app_template_global()
def event_label(entry) -> str:
    return states.timeline_label(entry)


def _load(request_id: int):
    found = visibility.get_request(request_id, current_user)
    if found is None:
        abort(404)
    return found


def _refused(error: states.TransitionError):
    db.session.rollback()
    return render_template(
        "authorizations/error.html", status=error.status, message=error.message
    ), error.status


# --- applicant ---------------------------------------------------------------------------


@bp.route("/demandes")
@access.signed_in
def applicant_index():
    organisation = current_user.current_organisation
    requests = habilitations = []
    if organisation is not None:
        requests = visibility.organisation_requests(current_user, organisation)
        habilitations = visibility.organisation_habilitations(current_user, organisation)
    return render_template(
        "authorizations/applicant_index.html",
        organisation=organisation,
        requests=requests,
        habilitations=habilitations,
    )


@bp.route("/demandes/nouvelle", methods=["GET", "POST"])
@access.signed_in
def new_request():
    organisation = current_user.current_organisation
    if organisation is None:
        flash("Choisissez d'abord l'organisation pour laquelle vous faites la demande.", "warning")
        return redirect(url_for("authorizations.applicant_index"))
    apis = catalogue_apis.list_apis(active_only=True)
    form = forms.NewRequestForm()
    form.api_id.choices = [(api.id, api.name) for api in apis]
    if request.method == "GET":
        # "Demander l'accès" on an API's page of the catalogue preselects that API.
        wanted = request.args.get("api", type=int)
        if any(api.id == wanted for api in apis):
            form.api_id.data = wanted
    if form.validate_on_submit():
        api = next(api for api in apis if api.id == form.api_id.data)
        try:
            created = authorization_sections.create_request(
                current_user, organisation, api, access.current_actor()
            )
        except InvalidRequest as exc:
            form.api_id.errors = [m for ms in exc.errors.values() for m in ms]
        else:
            db.session.commit()
            return redirect(
                url_for("authorizations.edit_section", request_id=created.id, section="projet")
            )
    return render_template(
        "authorizations/new.html", form=form, apis=apis, organisation=organisation
    )


def _section_form(found, section: str):
    form_class = forms.SECTION_FORMS[section]
    if request.method == "POST":
        form = form_class()
    else:
        data = {"terms": found.terms_accepted_at is not None} if section == "conditions" else {}
        form = form_class(obj=found, data=data or None)
    if section == "donnees":
        form.scopes.choices = [
            (s.code, f"{s.label}{' — donnée sensible' if s.sensitive else ''}")
            for s in found.api.scopes
        ]
    if section == "cadre-juridique":
        form.has_document = found.legal_basis_document_id is not None
    if section == "homologation":
        form.has_document = found.homologation_document_id is not None
    return form


def _section_values(form, section: str) -> dict:
    values = {}
    for name in authorization_sections.SECTIONS_BY_SLUG[section].fields:
        field = form[name]
        if field.type == "FileField":
            content = getattr(field, "content", None)
            values[name] = (field.data.filename, content) if content else None
        else:
            values[name] = field.data
    return values


@bp.route("/demandes/<int:request_id>/etapes/<section>", methods=["GET", "POST"])
@access.signed_in
def edit_section(request_id: int, section: str):
    found = _load(request_id)
    if section not in forms.SECTION_FORMS:
        abort(404)
    try:
        authorization_sections.check_editable(found, current_user)
    except states.Conflict as exc:
        return _refused(exc)
    form = _section_form(found, section)
    status = 200
    if form.validate_on_submit():
        try:
            authorization_sections.save_section(
                found, section, _section_values(form, section), access.current_actor()
            )
        except InvalidRequest as exc:
            db.session.rollback()
            for name, messages in exc.errors.items():
                if name in form:
                    form[name].errors = list(form[name].errors) + messages
            status = 422
        else:
            db.session.commit()
            flash("Brouillon enregistré.", "success")
            slugs = [s.slug for s in authorization_sections.SECTIONS]
            index = slugs.index(section)
            if request.form.get("next") == "stay" or index + 1 == len(slugs):
                return redirect(url_for("authorizations.show", request_id=found.id))
            return redirect(
                url_for(
                    "authorizations.edit_section", request_id=found.id, section=slugs[index + 1]
                )
            )
    elif request.method == "POST":
        status = 422
    return render_template(
        "authorizations/section.html",
        req=found,
        form=form,
        section=authorization_sections.SECTIONS_BY_SLUG[section],
        sections=authorization_sections.SECTIONS,
        status_by_section=authorization_sections.section_status(found),
        contact_roles=CONTACT_ROLES,
    ), status


@bp.route("/demandes/<int:request_id>")
@access.signed_in
def show(request_id: int):
    found = _load(request_id)
    return _render_show(found)


def _render_show(
    found,
    status: int = 200,
    submit_errors=None,
    reason_form=None,
    message_form=None,
    reason_event: Event | None = None,
):
    roles = states.roles_of(current_user, found)
    reason_form = reason_form or forms.ReasonForm()
    message_form = message_form or forms.MessageForm()
    templates = []
    if states.Role.INSTRUCTOR in roles:
        templates = authorization_templates.templates_for(current_user, found.api_id)
        chosen = web.query_int("modele")
        template = next((t for t in templates if t.id == chosen), None)
        if template is not None and not reason_form.text.data:
            reason_form.text.data = template.body
            message_form.body.data = template.body
    completion = (
        authorization_sections.completion_errors(found) if states.is_editable(found) else {}
    )
    snap = snapshots.snapshot(found)
    return render_template(
        "authorizations/request.html",
        req=found,
        roles=roles,
        sections=authorization_sections.SECTIONS,
        completion=submit_errors or completion,
        submit_failed=submit_errors is not None,
        labels=authorization_sections.FIELD_LABELS,
        flat=snapshots.flat_fields(snap, found.api.scope_labels()),
        documents=snapshots.document_ids(snap),
        reason_form=reason_form,
        # The decision whose form was sent back: its text and its error only under it.
        reason_event=reason_event,
        message_form=message_form,
        templates=templates,
        events=Event,
        can=lambda event: states.can(event, found, current_user),
        can_edit=states.can_edit(found, current_user),
        can_message=states.can_message(found, current_user),
        can_transfer=states.can_transfer(found, current_user),
        reopening=states.is_reopening(found),
        waiting_days=queue.waiting_days(found),
        asks=authorization_messages.instructor_asks(found)
        if states.Role.APPLICANT in roles
        else None,
    ), status


@bp.route("/demandes/<int:request_id>/actions/<event>", methods=["POST"])
@access.signed_in
def act(request_id: int, event: str):
    found = _load(request_id)
    if event not in Event.__members__.values():
        abort(404)
    event = Event(event)
    form = forms.ReasonForm()
    if not form.validate_on_submit():
        return _render_show(found, 422, reason_form=form, reason_event=event)
    try:
        decisions.transition(found, event, access.current_actor(), form.text.data)
    except InvalidRequest as exc:
        db.session.rollback()
        db.session.refresh(found)
        return _render_show(found, 422, submit_errors=exc.errors)
    except states.ReasonRequired as exc:
        db.session.rollback()
        form.text.errors = [exc.message]
        return _render_show(found, 422, reason_form=form, reason_event=event)
    except states.TransitionError as exc:
        return _refused(exc)
    db.session.commit()
    flash(SUCCESS[event], "success")
    return redirect(url_for("authorizations.show", request_id=found.id))


@bp.route("/demandes/<int:request_id>/messages", methods=["POST"])
@access.signed_in
def post_message(request_id: int):
    found = _load(request_id)
    form = forms.MessageForm()
    if not form.validate_on_submit():
        return _render_show(found, 422, message_form=form)
    try:
        authorization_messages.post_message(found, access.current_actor(), form.body.data)
    except InvalidRequest as exc:
        db.session.rollback()
        form.body.errors = exc.errors.get("body", [])
        return _render_show(found, 422, message_form=form)
    except states.TransitionError as exc:
        return _refused(exc)
    db.session.commit()
    flash("Message envoyé.", "success")
    return redirect(url_for("authorizations.show", request_id=found.id, _anchor="messages"))


@bp.route("/demandes/<int:request_id>/documents/<int:document_id>")
@access.signed_in
def document(request_id: int, document_id: int):
    found = _load(request_id)
    doc = authorization_documents.request_document(found, document_id)
    if doc is None:
        abort(404)
    return Response(
        doc.content,
        mimetype="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="document-{doc.id}.pdf"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@bp.route("/demandes/<int:request_id>/transfert", methods=["GET", "POST"])
@access.signed_in
def transfer(request_id: int):
    found = _load(request_id)
    return _transfer(found, habilitation=None)


def _transfer(found, habilitation):
    if not states.can_transfer(found, current_user):
        return _refused(states.NotAllowed("Vous ne pouvez pas transférer cette demande."))
    candidates = authorization_messages.transfer_candidates(found)
    form = forms.TransferForm()
    form.user_id.choices = [(u.id, f"{u.display_name} ({u.email})") for u in candidates]
    if form.validate_on_submit():
        target = next(u for u in candidates if u.id == form.user_id.data)
        try:
            authorization_messages.transfer(found, target, access.current_actor())
        except InvalidRequest as exc:
            db.session.rollback()
            form.user_id.errors = exc.errors.get("user_id", [])
        else:
            db.session.commit()
            flash(f"Transférée à {target.display_name}.", "success")
            if habilitation is not None:
                return redirect(
                    url_for("authorizations.habilitation", habilitation_id=habilitation.id)
                )
            return redirect(url_for("authorizations.show", request_id=found.id))
    return render_template(
        "authorizations/transfer.html", req=found, habilitation=habilitation, form=form
    ), (422 if request.method == "POST" else 200)


@bp.route("/habilitations/<int:habilitation_id>")
@access.signed_in
def habilitation(habilitation_id: int):
    found = visibility.get_habilitation(habilitation_id, current_user)
    if found is None:
        abort(404)
    return render_template(
        "authorizations/habilitation.html",
        habilitation=found,
        req=found.request,
        labels=authorization_sections.FIELD_LABELS,
        sections=authorization_sections.SECTIONS,
        flat=snapshots.flat_fields(found.snapshot, found.api.scope_labels()),
        documents=snapshots.document_ids(found.snapshot),
        can_transfer=found.is_active and states.can_transfer(found.request, current_user),
        can_revoke=found.is_active and states.can(Event.REVOKE, found.request, current_user),
        reason_form=forms.ReasonForm(),
    )


@bp.route("/habilitations/<int:habilitation_id>/transfert", methods=["GET", "POST"])
@access.signed_in
def transfer_habilitation(habilitation_id: int):
    found = visibility.get_habilitation(habilitation_id, current_user)
    if found is None or not found.is_active:
        abort(404)
    return _transfer(found.request, habilitation=found)


# --- instructor --------------------------------------------------------------------------


def _filters() -> queue.QueueFilters:
    args = request.args
    state = args.get("etat", RequestState.SUBMITTED.value)
    if state not in {s.value for s in RequestState} | {""}:
        state = RequestState.SUBMITTED.value
    return queue.QueueFilters(
        state=state,
        api_id=web.query_int("api"),
        organisation=args.get("organisation", "")[:200],
        text=args.get("q", "")[:200],
        page=web.query_int("page", 1, minimum=1),
    )


@bp.route("/instruction")
@access.role_required("instructor")
def instructor_queue():
    filters = _filters()
    page = queue.instructor_queue(current_user, filters)
    apis = [a for a in catalogue_apis.list_apis() if a.id in current_user.instructed_api_ids()]
    return render_template(
        "authorizations/queue.html",
        page=page,
        filters=filters,
        apis=apis,
        states=RequestState,
        now=clock.now(),
        waiting_days=queue.waiting_days,
        args={k: v for k, v in request.args.items() if k != "page"},
    )


def _queue_csv(user_id: int, filters):
    # Streamed after the view's session is gone: the instructor is loaded again (by id).
    return exports.export_csv(db.session.get(User, user_id), filters)


@bp.route("/instruction/export.csv")
@access.role_required("instructor")
def export_csv():
    stamp = clock.today().isoformat()
    return Response(
        web.stream_lazily(_queue_csv, current_user.id, _filters()),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="demandes-{stamp}.csv"'},
    )


@bp.route("/instruction/export.xlsx")
@access.role_required("instructor")
def export_xlsx():
    stamp = clock.today().isoformat()
    return Response(
        exports.export_xlsx(current_user, _filters()),
        mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="demandes-{stamp}.xlsx"'},
    )


@bp.route("/instruction/statistiques")
@access.role_required("instructor")
def statistics():
    stats = authorization_statistics.decision_statistics(current_user)
    return render_template(
        "authorizations/statistics.html",
        stats=stats,
        per_api=authorization_statistics.decision_charts(stats),
        buckets=authorization_statistics.DECISION_BUCKETS,
    )


def _template_form(template=None):
    form = forms.TemplateForm(obj=template)
    apis = [a for a in catalogue_apis.list_apis() if a.id in current_user.instructed_api_ids()]
    form.api_id.choices = [(a.id, a.name) for a in apis]
    return form


def _save_template(form, template=None):
    """Save a valid submitted form (a new template, or ``template``): the redirect to the
    list, or None with the errors on the form."""
    if not form.validate_on_submit():
        return None
    try:
        authorization_templates.save_template(
            current_user,
            access.current_actor(),
            form.api_id.data,
            form.title.data,
            form.body.data,
            template,
        )
    except InvalidRequest as exc:
        db.session.rollback()
        form.api_id.errors = exc.errors.get("api_id", [])
        return None
    db.session.commit()
    flash("Modèle enregistré.", "success")
    return redirect(url_for("authorizations.message_templates"))


@bp.route("/instruction/modeles", methods=["GET", "POST"])
@access.role_required("instructor")
def message_templates():
    form = _template_form()
    saved = _save_template(form)
    if saved is not None:
        return saved
    return render_template(
        "authorizations/templates.html",
        templates=authorization_templates.templates_for(current_user),
        form=form,
    ), (422 if request.method == "POST" else 200)


@bp.route("/instruction/modeles/<int:template_id>", methods=["GET", "POST"])
@access.role_required("instructor")
def edit_template(template_id: int):
    template = authorization_templates.get_template(template_id, current_user)
    if template is None:
        abort(404)
    form = _template_form(template)
    saved = _save_template(form, template)
    if saved is not None:
        return saved
    return render_template("authorizations/template_edit.html", template=template, form=form), (
        422 if request.method == "POST" else 200
    )


@bp.route("/instruction/modeles/<int:template_id>/suppression", methods=["POST"])
@access.role_required("instructor")
def delete_template(template_id: int):
    template = authorization_templates.get_template(template_id, current_user)
    if template is None:
        abort(404)
    authorization_templates.delete_template(template, access.current_actor())
    db.session.commit()
    flash("Modèle supprimé.", "success")
    return redirect(url_for("authorizations.message_templates"))
