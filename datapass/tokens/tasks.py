"""Scheduled jobs of the tokens domain. Each is idempotent, commits once, and is safe to run
again (or from two schedulers: state changes are checked transitions)."""

from __future__ import annotations

from datapass.actor import Actor
from datapass.extensions import db
from datapass.notify import webhook_delivery
from datapass.tokens import key_rotation


def rotate_keys_if_due() -> dict[str, list[str]]:
    """Daily: bootstrap, publish the next key 7 days ahead, promote it, unpublish dead keys."""
    done = key_rotation.rotate_keys_if_due(Actor.system("tokens.rotate_keys_if_due"))
    db.session.commit()
    return done


def deliver_webhooks() -> dict[str, int]:
    """Every minute: send the due webhook deliveries (commits)."""
    return webhook_delivery.deliver_webhooks()
