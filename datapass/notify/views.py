"""Pages of the notify domain: one-click unsubscribe, the development mailbox."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from pathlib import Path

from flask import Blueprint, abort, current_app, render_template, request

from datapass import access
from datapass.extensions import csrf, db
from datapass.notify import service

bp = Blueprint("notify", __name__)


@bp.route("/notifications/desabonnement/<token>", methods=["GET", "POST"])
@access.public
@csrf.exempt  # RFC 8058: mail clients POST "List-Unsubscribe=One-Click" without a form token
def unsubscribe(token: str):
    found = service.read_unsubscribe_token(token)
    if found is None:
        abort(404)
    recipient, category = found
    if request.method == "POST":
        service.unsubscribe(recipient, category)
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


@bp.route("/dev/courriels/<name>")
@access.development_only
def dev_mail(name: str):
    path = Path(current_app.config["MAIL_DIR"]) / f"{name}.eml"
    if "/" in name or ".." in name or not path.is_file():
        abort(404)
    message = _parse(path)
    body = message.get_body(preferencelist=("plain",))
    return render_template(
        "dev/mail.html", message=message, text=body.get_content() if body else "", name=name
    )
