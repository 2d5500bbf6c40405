"""Deliveries under faults (issue 10, points 3–6): webhooks never follow a redirect nor
reconnect to another address than the one checked, and show nothing of what a refused or
redirected answer said; mails survive crashes and outages without repeating by the batch."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from datapass import clock
from datapass.actor import Actor
from datapass.extensions import db
from datapass.notify import http as webhook_http
from datapass.notify import mail as mail_delivery
from datapass.notify import outbox, webhook_delivery, webhooks
from datapass.notify.models import (
    DeliveryStatus,
    EndpointState,
    OutboxMail,
    WebhookAttempt,
    WebhookDelivery,
)
from tests import factories
from tests.conftest import base_config, login
from tests.reliability.peers import HttpPeer, SmtpPeer
from tests.tokens.conftest import make_api, make_provider

ADMIN = Actor.system("test-admin")
INTERNAL = b"SECRET-INTERNE ami-id i-0123456789"


@pytest.fixture(scope="module")
def receiver():
    peer = HttpPeer()
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def internal():
    """What a redirect would reach: an internal service on another loopback port."""
    peer = HttpPeer(body=INTERNAL)
    peer.status = 200
    yield peer
    peer.close()


@pytest.fixture
def webhook_app(app, receiver, internal):
    receiver.reset()
    internal.reset()
    internal.status = 200
    app.config["WEBHOOK_ALLOW_PRIVATE"] = True  # loopback only
    yield app
    app.config["WEBHOOK_ALLOW_PRIVATE"] = False


def _endpoint(url: str):
    provider = make_provider()
    api = make_api(provider)
    endpoint, _ = webhooks.create_endpoint(provider, url, ADMIN)
    endpoint.state = EndpointState.ENABLED
    endpoint.verified_at = clock.now()
    db.session.flush()
    return endpoint, api


def _queue_one(api) -> WebhookDelivery:
    webhooks.queue_webhook_for_api(api.id, "token.revoked", {"jti": "x"})
    return db.session.query(WebhookDelivery).order_by(WebhookDelivery.id.desc()).first()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(webhook_app, receiver, internal, status):
    endpoint, api = _endpoint(receiver.url)
    receiver.status, receiver.body = status, b"<html>moved</html>"
    receiver.location = f"http://127.0.0.1:{internal.port}/latest/meta-data/"
    delivery = _queue_one(api)
    counts = webhook_delivery.deliver_webhooks()
    assert counts == {"sent": 0, "deferred": 1, "failed": 0}
    assert len(receiver.requests) == 1 and internal.requests == []  # not followed
    assert delivery.status == "pending" and delivery.last_status_code == status
    assert "redirection refusée" in delivery.last_error
    attempt = db.session.query(WebhookAttempt).filter_by(delivery_id=delivery.id).one()
    assert not attempt.success and "moved" not in attempt.error


def test_redirect_to_metadata_address_shows_nothing(webhook_app, receiver, internal, login_as):
    endpoint, api = _endpoint(receiver.url)
    receiver.status, receiver.body = 302, INTERNAL
    receiver.location = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    _queue_one(api)
    webhook_delivery.deliver_webhooks()
    result = webhooks.ping_endpoint(endpoint, ADMIN)
    assert not result["success"] and result["status_code"] == 302
    admin = factories.user(roles=("admin",), mfa_enabled_at=clock.now())
    page = login_as(admin).get(f"/admin/webhooks/{endpoint.id}").get_data(as_text=True)
    assert "redirection refusée" in page
    assert "SECRET-INTERNE" not in page and "169.254" not in page and "moved" not in page
    # an error answer's body is not shown either
    receiver.status, receiver.location = 500, None
    clock.advance(timedelta(hours=1))
    webhook_delivery.deliver_webhooks()
    page = login_as(admin).get(f"/admin/webhooks/{endpoint.id}").get_data(as_text=True)
    assert "SECRET-INTERNE" not in page


def test_connects_to_the_checked_address_dns_rebinding(webhook_app, receiver, monkeypatch):
    """The name is resolved once; a second resolution (rebinding to the metadata address)
    would be refused, and the connection goes to the address that was checked."""
    real = socket.getaddrinfo
    calls = []

    def rebinding(host, port, *args, **kwargs):
        if host == "hooks.fournisseur.test":
            calls.append(host)
            address = "127.0.0.1" if len(calls) == 1 else "169.254.169.254"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    endpoint, api = _endpoint(f"http://hooks.fournisseur.test:{receiver.port}/webhooks")
    _queue_one(api)
    assert webhook_delivery.deliver_webhooks()["sent"] == 1
    assert calls == ["hooks.fournisseur.test"]
    (request,) = receiver.requests
    assert request["headers"]["Host"] == f"hooks.fournisseur.test:{receiver.port}"
    assert request["path"] == "/webhooks"


def test_every_resolved_address_is_checked(webhook_app, receiver, monkeypatch):
    real = socket.getaddrinfo

    def mixed(host, port, *args, **kwargs):
        if host == "hooks.fournisseur.test":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", mixed)
    endpoint, api = _endpoint(f"http://hooks.fournisseur.test:{receiver.port}/webhooks")
    delivery = _queue_one(api)
    assert webhook_delivery.deliver_webhooks()["deferred"] == 1
    assert "non publique" in delivery.last_error and "10.0.0.7" in delivery.last_error
    assert receiver.requests == []


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "10.1.2.3", "192.168.1.1", "100.64.0.1", "::ffff:10.0.0.1"]
)
def test_allow_private_lets_only_loopback_through(webhook_app, address):
    endpoint, _ = _endpoint(f"http://[{address}]/x" if ":" in address else f"http://{address}/x")
    result = webhooks.ping_endpoint(endpoint, ADMIN)
    assert not result["success"] and "non publique" in result["error"]


def test_reenabling_needs_a_ping_newer_than_the_disabling(webhook_app, receiver):
    endpoint, _ = _endpoint(receiver.url)
    assert webhooks.ping_endpoint(endpoint, ADMIN)["success"]
    clock.advance(timedelta(minutes=5))
    webhooks.disable_endpoint(endpoint, ADMIN, "5 échecs consécutifs")
    assert not endpoint.can_enable
    with pytest.raises(webhook_http.WebhookError, match="depuis la désactivation"):
        webhooks.enable_endpoint(endpoint, ADMIN)
    assert endpoint.state == EndpointState.DISABLED
    receiver.status = 500
    clock.advance(timedelta(minutes=5))
    assert not webhooks.ping_endpoint(endpoint, ADMIN)["success"]
    assert not endpoint.can_enable
    receiver.status = 204
    assert webhooks.ping_endpoint(endpoint, ADMIN)["success"]
    assert endpoint.can_enable
    webhooks.enable_endpoint(endpoint, ADMIN)
    assert endpoint.state == EndpointState.ENABLED


# --- mails and webhooks: crashes and outages -------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smtp():
    peer = SmtpPeer().start()
    yield peer
    peer.stop()


@pytest.fixture
def smtp_app(app, smtp):
    smtp.delay, smtp.refuse = 0.0, None
    smtp.messages.clear()
    if smtp.controller is None:
        smtp.start()
    app.config.update(
        MAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port, SMTP_TIMEOUT=2
    )
    yield app
    app.config.update(MAIL_BACKEND="file", SMTP_HOST="localhost", SMTP_PORT=25)


def _child_env(app, **extra) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATAPASS_ENV="testing",
        DATAPASS_DATABASE_URL=app.config["DATABASE_URL"],
        DATAPASS_SECRET_KEY=app.config["SECRET_KEY"],
        DATAPASS_MASTER_KEY=base_config("")["MASTER_KEY"],
        DATAPASS_BASE_URL=app.config["BASE_URL"],
        DATAPASS_MAIL_BACKEND="smtp",
        DATAPASS_SMTP_HOST="127.0.0.1",
        DATAPASS_WEBHOOK_ALLOW_PRIVATE="true",
        **extra,
    )
    return env


def _wait(predicate, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    with _CHANGED:
        while not predicate():
            left = deadline - time.monotonic()
            assert left > 0, f"délai dépassé : {what}"
            _CHANGED.wait(min(left, 0.05))


_CHANGED = threading.Condition()


def _kill_mid_batch(command: list[str], env: dict[str, str], received, after: int) -> None:
    """Start a real delivery process, SIGKILL it once ``after`` messages reached the peer."""
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "flask", "--app", "app", "datapass", *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait(
            lambda: len(received()) >= after or process.poll() is not None,
            what=f"{after} envois avant l'arrêt brutal",
        )
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        process.stderr.close()


def _after_the_leases() -> None:
    """The restarted worker runs once the dead one's lease is over."""
    clock.set_frozen(datetime.now(UTC) + outbox.CLAIM_LEASE + timedelta(minutes=1))


def test_kill_9_mid_batch_resends_at_most_the_mail_in_flight(committed_app, smtp):
    from datapass.notify import tasks

    smtp.delay, smtp.refuse = 0.03, None
    smtp.messages.clear()
    total = 25
    outbox.queue_mails(
        [([f"agent{i}@mairie.fr"], "test_message", {"name": "C"}) for i in range(total)]
    )
    db.session.commit()
    db.session.remove()
    env = _child_env(committed_app, DATAPASS_SMTP_PORT=str(smtp.port))
    _kill_mid_batch(["deliver"], env, smtp.message_ids, after=13)
    killed_at = len(smtp.message_ids())
    assert killed_at < total
    smtp.delay = 0.0
    committed_app.config.update(MAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port)
    try:
        _after_the_leases()
        tasks.deliver_mails()
    finally:
        committed_app.config.update(MAIL_BACKEND="file", SMTP_HOST="localhost", SMTP_PORT=25)
    ids = smtp.message_ids()
    assert len(set(ids)) == total  # every mail arrived
    assert len(ids) <= total + 1  # at most the one in flight twice, with its Message-ID
    statuses = db.session.scalars(select(OutboxMail.status)).all()
    assert statuses == ["sent"] * total


def test_kill_9_mid_batch_redelivers_at_most_the_webhook_in_flight(committed_app, receiver):
    from datapass.tokens import tasks

    receiver.reset()
    receiver.delay = 0.03
    total = 25
    endpoint, api = _endpoint(receiver.url)
    for i in range(total):
        webhooks.queue_webhook_for_api(api.id, "token.revoked", {"jti": f"j{i}"})
    db.session.commit()
    db.session.remove()

    def received():
        return [r["headers"]["X-Datapass-Delivery"] for r in receiver.requests]

    _kill_mid_batch(["sweep"], _child_env(committed_app), received, after=13)
    assert len(received()) < total
    receiver.delay = 0.0
    committed_app.config["WEBHOOK_ALLOW_PRIVATE"] = True
    try:
        _after_the_leases()
        tasks.deliver_webhooks()
    finally:
        committed_app.config["WEBHOOK_ALLOW_PRIVATE"] = False
    ids = received()
    assert len(set(ids)) == total and len(ids) <= total + 1
    assert db.session.scalars(select(WebhookDelivery.status)).all() == ["sent"] * total


def test_smtp_down_for_days_abandons_nothing(smtp_app, smtp):
    """Walk three days of an unreachable server, running the job whenever a mail is due."""
    from datapass.notify import tasks

    smtp.stop()
    mails = [outbox.queue_mail(f"a{i}@mairie.fr", "test_message", {"name": "C"}) for i in range(3)]
    end = clock.now() + timedelta(days=3)
    runs = 0
    while clock.now() < end:
        assert tasks.deliver_mails()["sent"] == 0
        runs += 1
        due = db.session.scalar(select(func.min(OutboxMail.next_attempt_at)))
        clock.set_frozen(max(clock.as_utc(due), clock.now() + timedelta(minutes=1)))
    assert runs > 12  # more attempts than the old limit of 12
    for mail in mails:
        db.session.refresh(mail)
        assert mail.status == DeliveryStatus.PENDING and mail.attempts == runs
        assert "SMTP" in mail.last_error
        assert mail.next_attempt_at - clock.now() <= outbox.MAX_BACKOFF
    smtp.start()
    clock.advance(outbox.MAX_BACKOFF)
    assert tasks.deliver_mails()["sent"] == 3
    assert len(smtp.messages) == 3


def test_a_permanent_refusal_abandons_a_temporary_one_defers(smtp_app, smtp):
    mail = outbox.queue_mail("inconnu@mairie.fr", "test_message", {"name": "C"})
    smtp.refuse = "451 4.3.0 Réessayez plus tard"
    assert mail_delivery.deliver_due() == {"sent": 0, "failed": 0, "deferred": 1}
    assert mail.status == DeliveryStatus.PENDING and "451" in mail.last_error
    smtp.refuse = "550 5.1.1 Destinataire inconnu"
    clock.advance(timedelta(minutes=1))
    assert mail_delivery.deliver_due() == {"sent": 0, "failed": 1, "deferred": 0}
    assert mail.status == DeliveryStatus.FAILED and "550" in mail.last_error
    assert smtp.messages == []


def test_stuck_outbox_banner_and_bulk_replay(smtp_app, smtp, csrf_app, login_as):
    from datapass.audit.models import AuditEvent

    admin = factories.user(roles=("admin",), mfa_enabled_at=clock.now())
    instructor = factories.user(roles=("security_officer",), mfa_enabled_at=clock.now())
    smtp.stop()
    waiting = outbox.queue_mail("a@mairie.fr", "test_message", {"name": "C"})
    mail_delivery.deliver_due()
    smtp.start()
    smtp.refuse = "550 5.7.1 Refusé"
    refused = outbox.queue_mail("b@mairie.fr", "test_message", {"name": "C"})
    mail_delivery.deliver_due()
    assert refused.status == DeliveryStatus.FAILED
    smtp.refuse = None
    client = login_as(admin)
    assert "alerte-envois" not in client.get("/admin/envois").get_data(as_text=True)
    clock.advance(mail_delivery.STUCK_AFTER)
    client = login_as(admin)  # a fresh authentication for the replay
    home = client.get("/").get_data(as_text=True)
    assert "alerte-envois" in home and "L'envoi des courriels est bloqué" in home
    page = client.get("/admin/envois").get_data(as_text=True)
    assert "La file d'envoi est bloquée" in page and "connexion SMTP impossible" in page
    other = csrf_app.test_client()
    login(other, instructor)
    assert "alerte-envois" not in other.get("/").get_data(as_text=True)
    # bulk replay: CSRF required, then both mails go out at the next run
    assert client.post("/admin/envois/renvoyer").status_code == 400
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/admin/envois/renvoyer", data={"csrf_token": token})
    assert response.status_code == 302 and response.location.endswith("/admin/envois")
    assert db.session.query(AuditEvent).filter_by(tag="notify:mail:replayed_all").count() == 1
    assert mail_delivery.deliver_due()["sent"] == 2
    assert {waiting.status, refused.status} == {DeliveryStatus.SENT}
    assert "alerte-envois" not in client.get("/").get_data(as_text=True)


# --- no transaction, no SQLite write lock, while talking to a peer ---------------------------


def _lock_probe(app):
    """A function telling, from another connection, whether the database is free: on SQLite
    the write lock can be taken at once; on PostgreSQL no session is idle in a transaction."""
    url = app.config["DATABASE_URL"]
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")

        def free() -> bool:
            connection = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("ROLLBACK")
                return True
            except sqlite3.OperationalError:
                return False
            finally:
                connection.close()

        return free, None
    engine = create_engine(url, poolclass=NullPool)

    def free() -> bool:
        with engine.connect() as connection:
            return not connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                )
            )

    return free, engine


def test_no_transaction_is_held_while_talking_to_peers(committed_app, smtp, receiver):
    from datapass.notify import tasks as notify_tasks
    from datapass.tokens import tasks as token_tasks

    free, engine = _lock_probe(committed_app)
    seen: list[bool] = []
    smtp.messages.clear()
    smtp.delay, smtp.refuse, smtp.on_message = 0.0, None, lambda: seen.append(free())
    receiver.reset()
    receiver.on_request = lambda: seen.append(free())
    _, api = _endpoint(receiver.url)
    for i in range(3):
        outbox.queue_mail(f"a{i}@mairie.fr", "test_message", {"name": "C"})
        webhooks.queue_webhook_for_api(api.id, "token.revoked", {"jti": f"j{i}"})
    db.session.commit()
    committed_app.config.update(
        MAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port, WEBHOOK_ALLOW_PRIVATE=True
    )
    try:
        assert token_tasks.deliver_webhooks()["sent"] == 3
        assert notify_tasks.deliver_mails()["sent"] == 3
    finally:
        smtp.on_message = None
        receiver.on_request = None
        committed_app.config.update(
            MAIL_BACKEND="file", SMTP_HOST="localhost", SMTP_PORT=25, WEBHOOK_ALLOW_PRIVATE=False
        )
        if engine is not None:
            engine.dispose()
    assert seen == [True] * 6


def test_sqlite_introspection_does_not_wait_for_the_write_lock(committed_app):
    """A writer holds SQLite's write lock (a sweep's chunk, a job) for the whole call: the
    introspection, a read, answers from its snapshot (it used to wait 10 s, then 500)."""
    if committed_app.config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("le verrou d'écriture global est propre à SQLite")
    from tests.tokens.conftest import make_client, make_habilitation
    from tests.tokens.test_machine_api import basic, issue

    provider = make_provider()
    api = make_api(provider)
    machine, secret = make_client(provider)
    habilitation = make_habilitation(api)

    class World:
        pass

    world = World()
    world.habilitation = habilitation
    token, raw = issue(world)
    db.session.commit()
    client = committed_app.test_client()
    headers = basic(machine.client_id, secret)
    first = client.post("/api/v1/introspect", data={"token": raw}, headers=headers)
    assert first.get_json()["active"] is True  # its use is written now: not at the next call
    db.session.remove()
    saved = {k: committed_app.config[k] for k in ("INTROSPECTION_CACHE_SECONDS",)}
    committed_app.config["INTROSPECTION_CACHE_SECONDS"] = 0  # read the database each time
    from datapass.catalogue import clients as catalogue_clients

    catalogue_clients._AUTH_CACHE.clear()
    writer = sqlite3.connect(
        committed_app.config["DATABASE_URL"].removeprefix("sqlite:///"), isolation_level=None
    )
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE providers SET name = name")
        response = client.post("/api/v1/introspect", data={"token": raw}, headers=headers)
        assert response.status_code == 200 and response.get_json()["active"] is True
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        committed_app.config.update(saved)


def test_two_workers_never_send_the_same_mail(committed_app, smtp):
    """Two delivery workers at once (two schedulers, or a run that overlaps the next): each
    mail is claimed by one of them (SKIP LOCKED on PostgreSQL, the write lock on SQLite)."""
    from datapass.notify import tasks

    smtp.messages.clear()
    smtp.delay, smtp.refuse = 0.005, None
    total = 30
    outbox.queue_mails(
        [([f"agent{i}@mairie.fr"], "test_message", {"name": "C"}) for i in range(total)]
    )
    db.session.commit()
    db.session.remove()
    committed_app.config.update(MAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port)
    sent: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with committed_app.app_context():
                sent.append(tasks.deliver_mails()["sent"])
                db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        committed_app.config.update(MAIL_BACKEND="file", SMTP_HOST="localhost", SMTP_PORT=25)
    assert not errors and sum(sent) == total
    ids = smtp.message_ids()
    assert len(ids) == len(set(ids)) == total


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` (its own CA), and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_checks_the_receivers_name_on_the_checked_address(webhook_app, monkeypatch, tmp_path):
    """HTTPS to the checked address: SNI and the certificate's name are the receiver's (a
    certificate for another name is refused), the Host header too."""
    import ssl as ssl_module

    cert, key = _certificate(tmp_path, "hooks.fournisseur.test")
    peer = HttpPeer()
    server_context = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    seen_sni: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    peer.server.socket = server_context.wrap_socket(peer.server.socket, server_side=True)
    real_getaddrinfo, real_context = socket.getaddrinfo, ssl_module.create_default_context

    def resolve(host, port, *args, **kwargs):
        if host.endswith(".fournisseur.test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(
        ssl_module, "create_default_context", lambda *a, **k: real_context(cafile=str(cert))
    )
    try:
        endpoint, _ = _endpoint(f"https://hooks.fournisseur.test:{peer.port}/recepteur")
        result = webhooks.ping_endpoint(endpoint, ADMIN)
        assert result["success"], result
        assert seen_sni == ["hooks.fournisseur.test"]
        assert peer.requests[0]["headers"]["Host"] == f"hooks.fournisseur.test:{peer.port}"
        other, _ = _endpoint(f"https://autre.fournisseur.test:{peer.port}/recepteur")
        refused = webhooks.ping_endpoint(other, ADMIN)
        assert not refused["success"] and "certificate" in refused["error"].lower()
        assert len(peer.requests) == 1
    finally:
        peer.close()
