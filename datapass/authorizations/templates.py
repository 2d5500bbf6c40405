"""Message templates: reusable texts of the instructors of one API (change requests, refusals,
messages)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from datapass import clock
from datapass.audit import service as audit
from datapass.authorizations.errors import InvalidRequest
from datapass.authorizations.models import MessageTemplate
from datapass.extensions import db

if TYPE_CHECKING:
    from datapass.accounts.models import User
    from datapass.actor import Actor


def templates_for(user: User, api_id: int | None = None) -> list[MessageTemplate]:
    """The message templates of the APIs ``user`` instructs."""
    ids = user.instructed_api_ids()
    if api_id is not None:
        ids = ids & {api_id}
    if not ids:
        return []
    query = select(MessageTemplate).where(MessageTemplate.api_id.in_(ids))
    return list(db.session.scalars(query.order_by(MessageTemplate.api_id, MessageTemplate.title)))


def get_template(template_id: int, user: User) -> MessageTemplate | None:
    ids = user.instructed_api_ids()
    return db.session.scalar(
        select(MessageTemplate).where(
            MessageTemplate.id == template_id, MessageTemplate.api_id.in_(ids or {-1})
        )
    )


def save_template(
    user: User,
    actor: Actor,
    api_id: int,
    title: str,
    body: str,
    template: MessageTemplate | None = None,
) -> MessageTemplate:
    """Create or change a message template of an API ``user`` instructs."""
    if api_id not in user.instructed_api_ids():
        raise InvalidRequest({"api_id": ["Vous n'instruisez pas cette API."]})
    now = clock.now()
    if template is None:
        template = MessageTemplate(api_id=api_id, created_by_id=user.id, created_at=now)
        db.session.add(template)
    template.api_id, template.title, template.body = api_id, title.strip(), body.strip()
    template.updated_at = now
    db.session.flush()
    audit.record(
        "authorizations:template:saved",
        actor,
        subject=template,
        api_id=api_id,
        payload={"title": template.title},
    )
    return template


def delete_template(template: MessageTemplate, actor: Actor) -> None:
    template_id, api_id = template.id, template.api_id
    db.session.delete(template)
    db.session.flush()
    audit.record(
        "authorizations:template:deleted",
        actor,
        subject_type="message_templates",
        subject_id=template_id,
        api_id=api_id,
    )
