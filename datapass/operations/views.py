"""Operations' routes: ``/healthz`` and ``/readyz`` (public, for load balancers and
orchestrators), ``/metrics`` (Prometheus, token or loopback) and the scheduled jobs' page
(administrators)."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, render_template

from datapass import access
from datapass.operations import health, heartbeats, jobs, metrics

bp = Blueprint("operations", __name__)


@bp.route("/healthz")
@access.public
def healthz():
    """The process answers (no database access)."""
    return jsonify({"status": "ok", "message": "Le processus web répond."})


@bp.route("/readyz")
@access.public
def readyz():
    """Ready to serve: every check passes (200), else 503 with what fails."""
    ready, checks = health.readiness()
    body = {
        "status": "ok" if ready else "indisponible",
        "message": "Datapass est prêt." if ready else "Datapass n'est pas prêt.",
        "checks": checks,
    }
    return jsonify(body), 200 if ready else 503


@bp.route("/metrics")
@access.public  # restricted below: a bearer token (METRICS_TOKEN), or loopback without one
def prometheus_metrics():
    if not metrics.allowed():
        if metrics.token_configured():
            abort(401, "Jeton de métriques absent ou invalide (Authorization: Bearer …).")
        abort(403, "Les métriques ne sont servies qu'en local tant que METRICS_TOKEN est vide.")
    return metrics.exposition(), 200, {"Content-Type": metrics.CONTENT_TYPE}


@bp.route("/admin/taches", endpoint="jobs")
@access.role_required("admin")
def jobs_page():
    beats = heartbeats.all_heartbeats()
    return render_template(
        "operations/jobs.html",
        statuses=jobs.statuses(beats),
        scheduler=health.check_scheduler(),
        late_after=jobs.LATE_AFTER_PERIODS,
    )
