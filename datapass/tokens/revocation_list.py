"""The signed revocation list (``GET /api/v1/revocations``): revoked and suspended tokens not
yet expired, so that a provider verifying offline keeps working from its last copy."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import and_, or_, select

from datapass import clock
from datapass.extensions import db
from datapass.keys.jws import sign_jws
from datapass.keys.models import KeyUsage
from datapass.tokens.models import AccessToken
from datapass.tokens.states import TokenStatus

REVOCATIONS_TYPE = "datapass-revocations+jwt"


@dataclass(frozen=True)
class RevocationList:
    jws: str
    etag: str
    max_age: int


def revocation_list() -> RevocationList:
    """The signed list of revoked, unexpired tokens (and, separately, the suspended ones), so
    that a provider verifying offline keeps working from its last copy."""
    now = clock.now()
    max_age = current_app.config["REVOCATIONS_MAX_AGE"]
    rows = db.session.execute(
        select(
            AccessToken.jti,
            AccessToken.status,
            AccessToken.revoked_at,
            AccessToken.grace_ends_at,
            AccessToken.expires_at,
        )
        .where(
            AccessToken.expires_at > now,
            or_(
                AccessToken.status.in_([TokenStatus.REVOKED, TokenStatus.SUSPENDED]),
                and_(
                    AccessToken.status == TokenStatus.SUPERSEDED,
                    AccessToken.grace_ends_at <= now,
                ),
            ),
        )
        .order_by(AccessToken.jti)
    ).all()
    revoked, suspended = [], []
    for row in rows:
        if row.status == TokenStatus.SUSPENDED:
            suspended.append({"jti": row.jti, "exp": int(row.expires_at.timestamp())})
            continue
        at = row.revoked_at or row.grace_ends_at
        revoked.append(
            {
                "jti": row.jti,
                "revoked_at": int(at.timestamp()),
                "exp": int(row.expires_at.timestamp()),
            }
        )
    content = json.dumps([revoked, suspended], separators=(",", ":"), sort_keys=True)
    etag = hashlib.sha256(content.encode()).hexdigest()[:32]
    iat = int(now.timestamp())
    payload = {
        "iss": current_app.config["BASE_URL"].rstrip("/"),
        "iat": iat,
        "next_update": iat + max_age,
        "revoked": revoked,
        "suspended": suspended,
    }
    return RevocationList(sign_jws(payload, KeyUsage.TOKEN, REVOCATIONS_TYPE), etag, max_age)
