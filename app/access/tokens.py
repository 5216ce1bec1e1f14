"""API bearer tokens: created once, shown once, stored only as a SHA-256.

Tokens carry 256 bits of randomness, so a fast hash is enough (no salt or
stretching is needed, unlike for passwords), and a lookup by hash never
compares the secret itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.db import utcnow
from app.store.models import ApiToken

TOKEN_PREFIX = "scg_"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_token(session: Session, name: str) -> tuple[ApiToken, str]:
    """Create a token named `name`; returns the row and the plain token (shown once)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_sha256=token_sha256(token), created_at=utcnow())
    session.add(row)
    session.flush()
    return row, token


def authenticate_api_token(session: Session, token: str) -> ApiToken | None:
    """The live token matching `token`, or None."""
    if not token or len(token) > 200:
        return None
    digest = token_sha256(token)
    row = session.execute(
        select(ApiToken).where(ApiToken.token_sha256 == digest, ApiToken.revoked_at.is_(None))
    ).scalar_one_or_none()
    if row is None or not hmac.compare_digest(row.token_sha256, digest):
        return None
    return row
