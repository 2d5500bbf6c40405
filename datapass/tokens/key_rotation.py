"""The signing keys' rotation, and the audit events of every key's life (created, activated,
retired, unpublished, compromised). The keys themselves live in ``datapass.keys``."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from datapass import clock, signals
from datapass.actor import Actor
from datapass.audit import service as audit
from datapass.audit.tags import EventTag
from datapass.extensions import db
from datapass.keys.jws import forget_signers
from datapass.keys.models import KeyState, KeyUsage, SigningKey
from datapass.keys.service import RETIRED_MIN_PUBLISHED, create_key, current_key, next_key
from datapass.tokens.models import AccessToken


@signals.signing_key_created.connect
def _record_key_created(key: SigningKey, *, actor: Actor) -> None:
    audit.record(
        EventTag.Tokens.KeyCreated,
        actor,
        subject=key,
        payload={
            "kid": key.kid,
            "usage": key.usage,
            "algorithm": key.algorithm,
            "state": key.state,
            "activates_at": key.activates_at.isoformat(),
        },
    )


def rotate_keys(
    usage: str, actor: Actor, *, immediately: bool = False, compromised: bool = False
) -> SigningKey:
    """Prepare the next key (published now, signs after ``KEY_PUBLISH_DAYS``), or, with
    ``immediately``, make a new key current at once. ``compromised`` also takes the old key
    out of the JWKS at once: tokens it signed no longer verify offline (forgeries neither)
    and must be rotated by their holders; introspection still knows them."""
    now = clock.now()
    if compromised:
        old = current_key(usage, create=False)
        new = rotate_keys(usage, actor, immediately=True)
        if old is not None:
            old.unpublished_at = now
            db.session.flush()
            audit.record(
                EventTag.Tokens.KeyCompromised, actor, subject=old, payload={"kid": old.kid}
            )
        return new
    if immediately:
        # The prepared next key never signed and its private half never left the vault:
        # it can take over at once; otherwise a fresh one does.
        new = next_key(usage) or create_key(usage, actor, state=KeyState.NEXT, activates_at=now)
        new.activates_at = now
        _promote(new, actor)
        return new
    existing = next_key(usage)
    if existing is not None:
        return existing
    days = current_app.config["KEY_PUBLISH_DAYS"]
    return create_key(usage, actor, activates_at=now + timedelta(days=days))


def _promote(new: SigningKey, actor: Actor) -> None:
    now = clock.now()
    old = current_key(new.usage, create=False)
    if old is not None:
        old.state = KeyState.RETIRED
        old.retired_at = now
        db.session.flush()
        audit.record(EventTag.Tokens.KeyRetired, actor, subject=old, payload={"kid": old.kid})
    new.state = KeyState.CURRENT
    new.activated_at = now
    db.session.flush()
    forget_signers()
    audit.record(EventTag.Tokens.KeyActivated, actor, subject=new, payload={"kid": new.kid})


def rotate_keys_if_due(actor: Actor | None = None) -> dict[str, list[str]]:
    """The scheduled rotation (idempotent): bootstrap a missing key, publish the next key
    ``KEY_PUBLISH_DAYS`` before the current one is ``KEY_ROTATION_MONTHS`` old, promote it
    when its time comes, and take out of the JWKS the retired keys nothing needs any more."""
    actor = actor or Actor.system("tokens.rotate_keys_if_due")
    config = current_app.config
    now = clock.now()
    done: dict[str, list[str]] = {"created": [], "activated": [], "unpublished": []}
    for usage in KeyUsage:
        current = current_key(usage, create=False)
        upcoming = next_key(usage)
        if current is None:
            if upcoming is not None:
                _promote(upcoming, actor)
                done["activated"].append(upcoming.kid)
            else:
                key = current_key(usage)
                done["created"].append(key.kid)
            continue
        due_at = clock.add_months(current.activated_at, config["KEY_ROTATION_MONTHS"])
        publish = timedelta(days=config["KEY_PUBLISH_DAYS"])
        if upcoming is None and now >= due_at - publish:
            try:
                with db.session.begin_nested():
                    upcoming = create_key(usage, actor, activates_at=max(due_at, now + publish))
            except IntegrityError:  # another scheduler prepared it at the same moment
                continue
            done["created"].append(upcoming.kid)
        if upcoming is not None and upcoming.activates_at <= now:
            _promote(upcoming, actor)
            done["activated"].append(upcoming.kid)
    live = set(_retired_keys_with_live_tokens())
    for key in db.session.scalars(
        select(SigningKey).where(
            SigningKey.state == KeyState.RETIRED,
            SigningKey.usage == KeyUsage.TOKEN,
            SigningKey.unpublished_at.is_(None),
        )
    ):
        if key.kid not in live and key.retired_at + RETIRED_MIN_PUBLISHED <= now:
            key.unpublished_at = now
            db.session.flush()
            audit.record(
                EventTag.Tokens.KeyUnpublished, actor, subject=key, payload={"kid": key.kid}
            )
            done["unpublished"].append(key.kid)
    return done


def _retired_keys_with_live_tokens() -> list[str]:
    retired = select(SigningKey.kid).where(
        SigningKey.state == KeyState.RETIRED, SigningKey.usage == KeyUsage.TOKEN
    )
    return list(
        db.session.scalars(
            select(AccessToken.signing_kid)
            .where(AccessToken.signing_kid.in_(retired), AccessToken.expires_at > clock.now())
            .distinct()
        )
    )
