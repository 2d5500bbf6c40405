"""Prometheus metrics, computed when Prometheus scrapes ``/metrics`` (a custom collector):
a few grouped counts and the heartbeats, read in the scrape's own request. Nothing is
counted per request, so the machine API pays nothing for them (DESIGN §6).

Access: with ``METRICS_TOKEN`` set, the scrape must send ``Authorization: Bearer <token>``;
without it, only a loopback caller (127.0.0.0/8, ::1: Prometheus or an agent on the same
host) is answered. Behind trusted proxies, the caller is the forwarded client.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator

from flask import current_app, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from datapass import clock
from datapass.audit import checkpoints
from datapass.audit.models import AuditHead
from datapass.authorizations.models import AuthorizationRequest
from datapass.extensions import db
from datapass.notify.models import OutboxMail, WebhookDelivery
from datapass.operations import heartbeats, jobs
from datapass.operations.models import SCHEDULER
from datapass.tokens import uses
from datapass.tokens.models import AccessToken

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _grouped(name: str, documentation: str, label: str, column) -> GaugeMetricFamily:
    """One gauge per value of ``column`` (a status), from one GROUP BY."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in db.session.execute(select(column, func.count()).group_by(column)):
        family.add_metric([str(value)], count)
    return family


class DatapassCollector(Collector):
    """Every Datapass gauge, read at scrape time inside the scrape's app context."""

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time: nothing to collect at registration

    def collect(self) -> Iterator[Metric]:
        now = clock.now()
        yield _grouped("datapass_tokens", "Jetons par statut.", "status", AccessToken.status)
        yield _grouped(
            "datapass_authorization_requests",
            "Demandes d'habilitation par état.",
            "state",
            AuthorizationRequest.state,
        )
        yield _grouped(
            "datapass_outbox_mails",
            "Courriels de la file d'envoi par statut (pending : en attente ; failed : abandonnés).",
            "status",
            OutboxMail.status,
        )
        yield _grouped(
            "datapass_webhook_deliveries",
            "Livraisons de webhooks par statut (pending : en attente).",
            "status",
            WebhookDelivery.status,
        )
        yield from self._jobs(now)
        yield from self._audit(now)
        yield GaugeMetricFamily(
            "datapass_consumption_buffered_calls",
            "Appels d'introspection comptés en mémoire par ce processus, pas encore écrits.",
            value=uses.buffered_calls(),
        )

    def _jobs(self, now) -> Iterator[Metric]:
        beats = heartbeats.all_heartbeats()
        age = GaugeMetricFamily(
            "datapass_job_last_start_age_seconds",
            "Âge du dernier démarrage de chaque tâche planifiée, en secondes.",
            labels=["job"],
        )
        success = GaugeMetricFamily(
            "datapass_job_last_success",
            "Issue de la dernière exécution terminée de chaque tâche (1 : réussie, 0 : échec).",
            labels=["job"],
        )
        duration = GaugeMetricFamily(
            "datapass_job_last_duration_seconds",
            "Durée de la dernière exécution de chaque tâche, en secondes.",
            labels=["job"],
        )
        late = GaugeMetricFamily(
            "datapass_job_late",
            "1 quand la tâche n'a pas démarré depuis plus de deux périodes.",
            labels=["job"],
        )
        for status in jobs.statuses(beats):
            name, beat = status.job.name, status.heartbeat
            late.add_metric([name], int(status.late))
            if beat is None:
                continue
            if beat.started_at is not None:
                age.add_metric([name], (now - clock.as_utc(beat.started_at)).total_seconds())
            if beat.outcome in ("ok", "error"):
                success.add_metric([name], int(beat.outcome == "ok"))
            if beat.duration_ms is not None:
                duration.add_metric([name], beat.duration_ms / 1000)
        yield from (age, success, duration, late)
        alive = beats.get(SCHEDULER)
        if alive is not None and alive.ended_at is not None:
            yield GaugeMetricFamily(
                "datapass_scheduler_heartbeat_age_seconds",
                "Âge du dernier signe de vie du planificateur, en secondes.",
                value=(now - clock.as_utc(alive.ended_at)).total_seconds(),
            )

    def _audit(self, now) -> Iterator[Metric]:
        length = db.session.scalar(select(AuditHead.seq).where(AuditHead.id == 1)) or 0
        yield GaugeMetricFamily(
            "datapass_audit_chain_length",
            "Numéro du dernier événement de la chaîne d'audit.",
            value=length,
        )
        last = checkpoints.latest()
        if last is not None:
            yield GaugeMetricFamily(
                "datapass_audit_last_checkpoint_age_seconds",
                "Âge du dernier point de contrôle signé de la chaîne d'audit, en secondes.",
                value=(now - clock.as_utc(last.signed_at)).total_seconds(),
            )
            yield GaugeMetricFamily(
                "datapass_audit_unsigned_events",
                "Événements d'audit postérieurs au dernier point de contrôle.",
                value=max(0, length - last.seq),
            )


def registry() -> CollectorRegistry:
    """This app's registry (one per app: tests build several apps in one process)."""
    found = current_app.extensions.get("datapass.metrics")
    if found is None:
        found = CollectorRegistry(auto_describe=False)
        found.register(DatapassCollector())
        current_app.extensions["datapass.metrics"] = found
    return found


def exposition() -> bytes:
    return generate_latest(registry())


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def token_configured() -> bool:
    return bool(current_app.config.get("METRICS_TOKEN"))


def allowed() -> bool:
    """The scrape carries the configured bearer token, or, none being configured, comes
    from this host."""
    expected = current_app.config.get("METRICS_TOKEN") or ""
    if not expected:
        return _loopback(request.remote_addr)
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())
