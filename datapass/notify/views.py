"""Pages of the notify domain: one-click unsubscribe, the development mailbox, webhook
administration, the mail outbox."""

from __future__ import annotations

import re
from email import policy
from email.parser import BytesParser
from pathlib import Path

from flask import (
    Blueprint,
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
from sqlalchemy.exc import SQLAlchemyError
from wtforms.fields.choices import SelectChoice

from datapass import access, web
from datapass.extensions import csrf, db
from datapass.formatting import plural
from datapass.notify import forms, outbox
from datapass.notify import mail as mail_delivery
from datapass.notify import webhooks as webhook_service
from datapass.notify.models import DeliveryStatus, OutboxMail, WebhookDelivery, WebhookEndpoint

bp = Blueprint("notify", __name__)


@bp.route("/notifications/desabonnement/<token>", methods=["GET", "POST"])
@access.public
@csrf.exempt  # RFC 8058: mail clients POST "List-Unsubscribe=One-Click" without a form token
def unsubscribe(token: str):
    found = outbox.read_unsubscribe_token(token)
    if found is None:
        abort(404)
    recipient, category = found
    if request.method == "POST":
        outbox.unsubscribe(recipient, category)
        db.session.commit()
        return render_template("notify/unsubscribed.html", recipient=recipient, done=True)
    return render_template("notify/unsubscribed.html", recipient=recipient, done=False)


def _mail_files() -> list[Path]:
    folder = Path(current_app.config["MAIL_DIR"])
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.eml"), reverse=True)


def _parse(path: Path):
    with path.open("rb") as handle:
        return BytesParser(policy=policy.default).parse(handle)


@bp.route("/dev/courriels")
@access.development_only
def dev_mails():
    mails = []
    for path in _mail_files()[:200]:
        message = _parse(path)
        mails.append(
            {
                "name": path.stem,
                "to": message["To"],
                "subject": message["Subject"],
                "date": message["Date"],
            }
        )
    return render_template("dev/mails.html", mails=mails)


_MAIL_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


@bp.route("/dev/courriels/<name>")
@access.development_only
def dev_mail(name: str):
    # The file backend's names (stamp-id): anything else names no mail, and a too long name
    # would make the file system raise.
    if _MAIL_NAME.fullmatch(name) is None or ".." in name:
        abort(404)
    path = Path(current_app.config["MAIL_DIR"]) / f"{name}.eml"
    if not path.is_file():
        abort(404)
    message = _parse(path)
    body = message.get_body(preferencelist=("plain",))
    return render_template(
        "dev/mail.html", message=message, text=body.get_content() if body else "", name=name
    )


# --- webhook administration (providers' endpoints) ----------------------------------------

WEBHOOK_ROLES = ("admin", "instructor")


def _endpoint(endpoint_id: int) -> WebhookEndpoint:
    """An endpoint of a provider the current user may manage (otherwise 404)."""
    endpoint = db.session.scalar(
        webhook_service.visible_endpoints_query(current_user).where(
            WebhookEndpoint.id == endpoint_id
        )
    )
    if endpoint is None:
        abort(404)
    return endpoint


def _webhook_show(
    endpoint: WebhookEndpoint,
    status: int = 200,
    secret: str | None = None,
    edit_form: forms.EndpointEditForm | None = None,
):
    deliveries = db.session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id)
        .order_by(WebhookDelivery.id.desc())
        .limit(50)
    ).all()
    if edit_form is None:
        edit_form = forms.EndpointEditForm(url=endpoint.url, events=endpoint.events)
    return render_template(
        "notify/webhook_show.html",
        endpoint=endpoint,
        deliveries=deliveries,
        secret=secret,
        edit_form=edit_form,
        action_form=forms.EmptyForm(),
    ), status


@bp.route("/admin/webhooks")
@access.role_required(*WEBHOOK_ROLES)
def webhooks():

    endpoints = db.session.scalars(
        webhook_service.visible_endpoints_query(current_user).order_by(WebhookEndpoint.id)
    ).all()
    return render_template("notify/webhook_index.html", endpoints=endpoints)


@bp.route("/admin/webhooks/nouveau", methods=["GET", "POST"])
@access.role_required(*WEBHOOK_ROLES)
@access.recent_auth
def webhook_new():

    providers = webhook_service.visible_providers(current_user)
    form = forms.EndpointForm()
    form.provider_id.choices = [SelectChoice(p.id, p.name) for p in providers]
    status = 200
    if form.validate_on_submit():
        provider = next(p for p in providers if p.id == form.provider_id.data)
        with web.acting(form=form) as act:
            endpoint, secret = webhook_service.create_endpoint(
                provider, form.url.data, access.current_actor(), form.events.data
            )
        if act.done:
            return _webhook_show(endpoint, 201, secret=secret)
        status = 422
    elif form.is_submitted():
        status = 422
    return render_template("notify/webhook_new.html", form=form), status


@bp.route("/admin/webhooks/<int:endpoint_id>")
@access.role_required(*WEBHOOK_ROLES)
def webhook_show(endpoint_id: int):
    return _webhook_show(_endpoint(endpoint_id))


@bp.route("/admin/webhooks/<int:endpoint_id>/modifier", methods=["POST"])
@access.role_required(*WEBHOOK_ROLES)
@access.recent_auth
def webhook_edit(endpoint_id: int):

    endpoint = _endpoint(endpoint_id)
    form = forms.EndpointEditForm()
    if not form.validate_on_submit():
        return _webhook_show(endpoint, 422, edit_form=form)
    with web.acting(form=form, success="Webhook modifié.") as act:
        webhook_service.update_endpoint(
            endpoint, form.url.data, form.events.data, access.current_actor()
        )
    if act.refused:
        return _webhook_show(endpoint, 422, edit_form=form)
    return redirect(url_for("notify.webhook_show", endpoint_id=endpoint.id))


def _webhook_act(endpoint_id: int, act) -> tuple:

    endpoint = _endpoint(endpoint_id)
    if not forms.EmptyForm().validate_on_submit():
        abort(400)
    with web.acting() as outcome:
        message, category = act(endpoint)
    if outcome.done:
        flash(message, category)
    return redirect(url_for("notify.webhook_show", endpoint_id=endpoint.id))


@bp.route("/admin/webhooks/<int:endpoint_id>/test", methods=["POST"])
@access.role_required(*WEBHOOK_ROLES)
def webhook_ping(endpoint_id: int):
    def act(endpoint):
        result = webhook_service.ping_endpoint(endpoint, access.current_actor())
        if result["success"]:
            return f"Test signé réussi (HTTP {result['status_code']}).", "success"
        outcome = result["status_code"] or result["error"]
        return f"Échec du test signé : {outcome}.", "error"

    return _webhook_act(endpoint_id, act)


@bp.route("/admin/webhooks/<int:endpoint_id>/activer", methods=["POST"])
@access.role_required(*WEBHOOK_ROLES)
@access.recent_auth
def webhook_enable(endpoint_id: int):
    def act(endpoint):
        webhook_service.enable_endpoint(endpoint, access.current_actor())
        return "Webhook activé.", "success"

    return _webhook_act(endpoint_id, act)


@bp.route("/admin/webhooks/<int:endpoint_id>/desactiver", methods=["POST"])
@access.role_required(*WEBHOOK_ROLES)
@access.recent_auth
def webhook_disable(endpoint_id: int):
    def act(endpoint):
        webhook_service.disable_endpoint(endpoint, access.current_actor(), "Désactivé à la main")
        return "Webhook désactivé : les événements sont conservés.", "success"

    return _webhook_act(endpoint_id, act)


@bp.route("/admin/webhooks/<int:endpoint_id>/secret", methods=["POST"])
@access.role_required(*WEBHOOK_ROLES)
@access.recent_auth
def webhook_secret(endpoint_id: int):
    endpoint = _endpoint(endpoint_id)
    if not forms.EmptyForm().validate_on_submit():
        abort(400)
    secret = webhook_service.rotate_endpoint_secret(endpoint, access.current_actor())
    db.session.commit()
    return _webhook_show(endpoint, secret=secret)


@bp.route(
    "/admin/webhooks/<int:endpoint_id>/livraisons/<int:delivery_id>/rejouer", methods=["POST"]
)
@access.role_required(*WEBHOOK_ROLES)
def webhook_replay(endpoint_id: int, delivery_id: int):
    def act(endpoint):
        delivery = db.session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.endpoint_id != endpoint.id:
            abort(404)
        webhook_service.replay_delivery(delivery, access.current_actor())
        return "Livraison remise en file : elle partira au prochain passage.", "success"

    return _webhook_act(endpoint_id, act)


@bp.route("/admin/envois")
@access.role_required("admin")
def admin_outbox():
    status = request.args.get("statut") or None
    if status not in {None, *DeliveryStatus}:
        abort(404)
    mails, counts = mail_delivery.outbox_page(status)
    return render_template(
        "notify/outbox.html",
        mails=mails,
        counts=counts,
        status=status,
        statuses=DeliveryStatus,
        health=mail_delivery.outbox_health(),
        stuck_after_minutes=int(mail_delivery.STUCK_AFTER.total_seconds() // 60),
    )


@bp.route("/admin/envois/renvoyer", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def admin_outbox_replay_all():

    if not forms.EmptyForm().validate_on_submit():
        abort(400)
    replayed = mail_delivery.replay_all(access.current_actor())
    db.session.commit()
    failed = plural(replayed["failed"], "courriel abandonné remis", "courriels abandonnés remis")
    waiting = plural(
        replayed["waiting"], "courriel en attente avancé", "courriels en attente avancés"
    )
    flash(
        f"{failed} en file et {waiting} : ils partent au prochain passage.",
        "success",
    )
    return redirect(url_for("notify.admin_outbox"))


@bp.app_template_global()
def outbox_alert():
    """The outbox's health for the banner of administrators' pages, when it is stuck."""

    if not current_user.is_authenticated or not current_user.has_role("admin"):
        return None
    try:
        health = mail_delivery.outbox_health()
    except SQLAlchemyError:  # an error page after a database failure still renders
        return None
    return health if health.stuck else None


@bp.route("/admin/envois/<int:mail_id>/renvoyer", methods=["POST"])
@access.role_required("admin")
@access.recent_auth
def admin_outbox_replay(mail_id: int):

    mail = db.session.get(OutboxMail, mail_id)
    if mail is None:
        abort(404)
    try:
        mail_delivery.replay(mail, access.current_actor())
    except mail_delivery.ReplayRefused as refused:
        abort(409, description=str(refused))
    db.session.commit()
    flash("Le courriel est de nouveau en file d'envoi.", "success")
    return redirect(url_for("notify.admin_outbox", statut="failed"))
