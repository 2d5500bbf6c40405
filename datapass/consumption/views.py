"""Consumption pages: an API's daily volume and top consumers, a token's consumption (in the
token page), and their CSV downloads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, abort, render_template, request
from flask_login import current_user
from sqlalchemy import select

from datapass import access, spreadsheet, web
from datapass.accounts.models import Role as AccountRole
from datapass.accounts.models import User
from datapass.catalogue.models import Api
from datapass.consumption import charts, ingest
from datapass.extensions import db
from datapass.tokens import queries as token_queries
from datapass.tokens.models import AccessToken

bp = Blueprint("consumption", __name__, url_prefix="/audit")

OFFICERS = ("security_officer", "admin")


def _me() -> User:
    return current_user._get_current_object()


def _apis() -> list[Api]:
    return list(db.session.scalars(select(Api).order_by(Api.name)))


@bp.app_template_global("token_consumption")
def _token_consumption(token: AccessToken, days: int | None = None) -> charts.Consumption:
    """For templates/consumption/_consumption.html (included in the token page)."""
    if days is None:
        days = web.query_int("jours", 30)
    return charts.token_consumption(token, days)


@bp.app_template_global("consumption_chart")
def _consumption_chart(series: list[dict[str, Any]]) -> dict[str, Any]:
    return charts.bar_chart(series)


def _visible_api_ids() -> list[int]:
    """APIs whose consumption the current person sees: their instructed APIs; every API for a
    security officer or an admin."""
    user = _me()
    if user.has_role(AccountRole.SECURITY_OFFICER) or user.has_role(AccountRole.ADMIN):
        return [api.id for api in _apis()]
    return sorted(user.instructed_api_ids())


def _chosen_apis() -> tuple[list[Api], list[int], int]:
    visible = set(_visible_api_ids())
    apis = [api for api in _apis() if api.id in visible]
    api_id = web.query_int("api")
    chosen = [api_id] if api_id in visible else [a.id for a in apis]
    days = web.query_int("jours", 30)
    days = days if days in charts.PERIODS else 30
    return apis, chosen, days


@bp.route("/consommation")
@access.role_required("instructor", *OFFICERS)
def api_usage():
    apis, chosen, days = _chosen_apis()
    data = charts.api_consumption(chosen, days) if chosen else None
    return render_template(
        "consumption/api_usage.html",
        apis=apis,
        chosen=chosen,
        selected=request.args.get("api", ""),
        days=days,
        data=data,
        periods=charts.PERIODS,
    )


def _csv_response(header: list[str], rows: Iterator[tuple], name: str) -> Response:
    stream = web.stream_lazily(spreadsheet.csv_stream, header, rows, delimiter=",")
    response = Response(stream, mimetype="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


CSV_HEADER = ["jour", "jeton", "point_d_acces", "appels", "erreurs", "latence_moyenne_ms"]


@bp.route("/consommation.csv")
@access.role_required("instructor", *OFFICERS)
def api_usage_csv():
    _apis_, chosen, days = _chosen_apis()
    rows = charts.daily_rows(api_ids=chosen, days=days)
    return _csv_response(CSV_HEADER, rows, f"consommation-{days}j.csv")


@bp.route("/jetons/<int:token_id>/consommation.csv")
@access.signed_in
def token_usage_csv(token_id: int):
    token = token_queries.get_visible(_me(), token_id)
    if token is None:
        abort(404)
    days = web.query_int("jours", 90)
    rows = charts.daily_rows(token_id=token.id, days=days)
    return _csv_response(CSV_HEADER, rows, f"consommation-jeton-{token.id}.csv")


@bp.app_context_processor
def _limits():
    return {"usage_max_events": ingest.MAX_EVENTS}
