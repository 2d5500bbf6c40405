"""Helpers shared by the accounts tests."""

from __future__ import annotations

import html
import json

import pytest
from sqlalchemy import func, select

from datapass.audit.models import AuditEvent
from datapass.extensions import db


@pytest.fixture
def audit_events(app):
    """A function returning the audit events written since the test started."""
    start = db.session.scalar(select(func.max(AuditEvent.seq))) or 0

    def read(tag_prefix: str = "") -> list[AuditEvent]:
        stmt = select(AuditEvent).where(AuditEvent.seq > start).order_by(AuditEvent.seq)
        if tag_prefix:
            stmt = stmt.where(AuditEvent.tag.like(f"{tag_prefix}%"))
        return list(db.session.scalars(stmt))

    return read


@pytest.fixture
def tags(audit_events):
    def read() -> list[str]:
        return [event.tag for event in audit_events()]

    return read


def payload(event: AuditEvent) -> dict:
    return json.loads(event.payload)


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def post_login(client, email: str, password: str, *, ip: str = "203.0.113.10", **extra):
    data = {"email": email, "password": password, **extra}
    return client.post("/connexion", data=data, environ_base={"REMOTE_ADDR": ip})


def signed_in(client) -> bool:
    """Whether the client's session opens a signed-in page."""
    return client.get("/profil").status_code == 200


def text(response) -> str:
    """The page as a person reads it (HTML entities decoded)."""
    return html.unescape(response.get_data(as_text=True))
