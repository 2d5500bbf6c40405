"""The mail outbox against a real SMTP server (aiosmtpd)."""

import socket
from datetime import timedelta
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler

from datapass.actor import Actor
from datapass.extensions import db
from datapass.notify import mail as mail_delivery
from datapass.notify import outbox
from datapass.notify.models import DeliveryStatus


class Inbox(MessageHandler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def handle_message(self, message):
        self.messages.append(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_port():
    return _free_port()


@pytest.fixture
def smtp_app(app, smtp_port):
    app.config.update(
        MAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_port, SMTP_TIMEOUT=2
    )
    yield app
    app.config.update(MAIL_BACKEND="file", SMTP_HOST="localhost", SMTP_PORT=25)


def _start(inbox, port):
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


def test_queued_mail_is_delivered_over_smtp(smtp_app, smtp_port):
    inbox = Inbox()
    controller = _start(inbox, smtp_port)
    try:
        mail = outbox.queue_mail("agent@mairie.fr", "test_message", {"name": "Camille"})
        assert mail.subject == "Message de test Datapass"
        counts = mail_delivery.deliver_due()
    finally:
        controller.stop()
    assert counts["sent"] == 1
    assert len(inbox.messages) == 1
    received = inbox.messages[0]
    assert received["To"].endswith("agent@mairie.fr")
    assert received["Subject"] == "Message de test Datapass"
    assert "Bonjour Camille" in received.get_payload()[0].get_payload(decode=True).decode()
    assert "jamais votre jeton" in received.get_payload()[0].get_payload(decode=True).decode()
    assert db.session.get(type(mail), mail.id).status == DeliveryStatus.SENT
    # delivered once: another run sends nothing
    assert mail_delivery.deliver_due()["sent"] == 0


def test_mail_waits_while_the_server_is_down_then_goes_out(smtp_app, smtp_port, frozen_clock):
    mail = outbox.queue_mail("agent@mairie.fr", "test_message", {"name": "Camille"})
    counts = mail_delivery.deliver_due()  # nobody listens on the port
    assert counts == {"sent": 0, "failed": 0, "deferred": 1}
    assert mail.status == DeliveryStatus.PENDING and mail.attempts == 1
    assert "SMTP" in mail.last_error
    # not retried before its backoff
    assert mail_delivery.deliver_due()["deferred"] == 0

    inbox = Inbox()
    controller = _start(inbox, smtp_port)
    try:
        frozen_clock.advance(timedelta(minutes=2))
        counts = mail_delivery.deliver_due()
    finally:
        controller.stop()
    assert counts["sent"] == 1
    assert len(inbox.messages) == 1
    assert mail.status == DeliveryStatus.SENT


def test_backoff_grows_and_is_capped():
    assert outbox.backoff(1) == timedelta(minutes=1)
    assert outbox.backoff(4) == timedelta(minutes=8)
    assert outbox.backoff(30) == timedelta(hours=6)


def test_mail_is_abandoned_only_when_refused_and_can_be_replayed(smtp_app, smtp_port):
    """Deliberately changed (issue 10, point 4): no maximum number of attempts any more (an
    unreachable server never abandons a mail); a permanent refusal (5xx) does."""

    class Refusing(Inbox):
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            return "550 5.1.1 Boîte inconnue"

    controller = _start(Refusing(), smtp_port)
    try:
        mail = outbox.queue_mail("agent@mairie.fr", "test_message", {"name": "C"})
        assert mail_delivery.deliver_due() == {"sent": 0, "failed": 1, "deferred": 0}
    finally:
        controller.stop()
    assert mail.status == DeliveryStatus.FAILED and "550" in mail.last_error
    mail_delivery.replay(mail, Actor.system("test"))
    assert mail.status == DeliveryStatus.PENDING and mail.attempts == 0


def test_development_backend_writes_eml_files_listed_on_a_dev_page(app, client, mail_dir):
    outbox.queue_mail("agent@mairie.fr", "test_message", {"name": "Camille"})
    assert mail_delivery.deliver_due()["sent"] == 1
    files = list(mail_dir.glob("*.eml"))
    assert len(files) == 1
    parsed = message_from_bytes(files[0].read_bytes())
    assert parsed["Subject"] == "Message de test Datapass"
    listing = client.get("/dev/courriels")
    assert "Message de test Datapass" in listing.get_data(as_text=True)
    detail = client.get(f"/dev/courriels/{files[0].stem}")
    assert "Bonjour Camille" in detail.get_data(as_text=True)
    assert client.get("/dev/courriels/..%2F..%2Fetc").status_code == 404


def test_optional_mail_carries_one_click_unsubscribe(csrf_app):
    client = csrf_app.test_client()  # RFC 8058: the mail client posts no CSRF token
    mail = outbox.queue_mail("agent@mairie.fr", "test_message", {"name": "C"}, category="digest")
    message = mail_delivery.build_message(mail)
    link = message["List-Unsubscribe"].strip("<>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    path = link.split("datapass.test", 1)[1]
    assert client.post(path).status_code == 200
    assert (
        outbox.queue_mail("agent@mairie.fr", "test_message", {"name": "C"}, category="digest")
        is None
    )
    # mandatory mails still go out
    assert outbox.queue_mail("agent@mairie.fr", "test_message", {"name": "C"}) is not None
    assert client.post("/notifications/desabonnement/falsifie").status_code == 404


def test_admin_sees_failed_mails_and_replays_them(app, client, login_as, frozen_clock):
    from datapass.notify.models import OutboxMail
    from tests import factories

    admin = factories.user(roles=("admin",))
    factories.enable_totp(admin)
    mail = outbox.queue_mail("agent@mairie.fr", "test_message", {"name": "C"})
    mail.status = DeliveryStatus.FAILED
    mail.last_error = "connexion SMTP impossible"
    db.session.commit()
    login_as(admin)
    page = client.get("/admin/envois?statut=failed").get_data(as_text=True)
    assert "Message de test Datapass" in page and "connexion SMTP impossible" in page
    response = client.post(f"/admin/envois/{mail.id}/renvoyer")
    assert response.status_code == 302
    assert db.session.get(OutboxMail, mail.id).status == DeliveryStatus.PENDING
    # replaying a mail that is not abandoned is refused and changes nothing
    assert client.post(f"/admin/envois/{mail.id}/renvoyer").status_code == 409
    applicant = factories.user()
    login_as(applicant)
    assert client.get("/admin/envois").status_code == 403


def test_bulk_queued_message_stores_one_body_for_its_recipients(app, client, login_as, mail_dir):
    """A message to three people is rendered and stored once; each recipient still gets
    their own outbox row, delivery, failure and replay."""
    from email import policy

    from sqlalchemy import func, select

    from datapass.notify.models import MailBody, OutboxMail
    from tests import factories

    single = outbox.queue_mail("seul@mairie.fr", "test_message", {"name": "Seul"})
    recipients = ["a@mairie.fr", "b@mairie.fr", "c@mairie.fr"]
    queued = outbox.queue_mails(
        [
            (recipients + ["a@mairie.fr"], "test_message", {"name": "Camille"}),
            (["d@mairie.fr"], "test_message", {"name": "Dominique"}),
            ([], "test_message", {"name": "Personne"}),
        ]
    )
    after = outbox.queue_mail("apres@mairie.fr", "test_message", {"name": "Après"})
    assert queued == 4
    rows = db.session.scalars(
        select(OutboxMail).where(OutboxMail.recipient.in_(recipients)).order_by(OutboxMail.id)
    ).all()
    assert [m.recipient for m in rows] == recipients
    assert len({m.body_id for m in rows}) == 1
    assert "Bonjour Camille" in rows[0].body_text and "Camille" in rows[0].body_html
    assert len({m.message_id for m in rows}) == 3
    # one body per message: the single mails, the shared one, Dominique's
    assert db.session.scalar(select(func.count()).select_from(MailBody)) == 4
    assert len({single.body_id, rows[0].body_id, after.body_id}) == 3
    assert "Bonjour Après" in after.body_text

    rows[1].status = DeliveryStatus.FAILED
    rows[1].last_error = "boîte pleine"
    db.session.commit()
    assert mail_delivery.deliver_due()["sent"] == 5
    sent = [
        message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in sorted(mail_dir.glob("*.eml"))
    ]
    to_shared = [m for m in sent if m["To"] in ("a@mairie.fr", "c@mairie.fr")]
    assert len(to_shared) == 2
    assert all("Bonjour Camille" in m.get_body(("plain",)).get_content() for m in to_shared)
    admin = factories.user(roles=("admin",))
    factories.enable_totp(admin)
    login_as(admin)
    page = client.get("/admin/envois?statut=failed").get_data(as_text=True)
    assert "b@mairie.fr" in page and "boîte pleine" in page
    assert client.post(f"/admin/envois/{rows[1].id}/renvoyer").status_code == 302
    assert mail_delivery.deliver_due()["sent"] == 1
    replayed = [
        message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in mail_dir.glob("*.eml")
        if message_from_bytes(path.read_bytes(), policy=policy.default)["To"] == "b@mairie.fr"
    ]
    assert (
        len(replayed) == 1 and "Bonjour Camille" in replayed[0].get_body(("plain",)).get_content()
    )
