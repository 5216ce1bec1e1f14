"""API bearer tokens: created once, shown once, stored only as a SHA-256.

Tokens carry 256 bits of randomness, so a fast hash is enough (no salt or
stretching is needed, unlike for passwords), and a lookup by hash never
compares the secret itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.db import utcnow
from app.store.models import ApiToken

TOKEN_PREFIX = "scg_"

CONSENT_READ = "consent:read"
EVENTS_READ = "events:read"
MESSAGES_SEND = "messages:send"
SCOPES = (CONSENT_READ, EVENTS_READ, MESSAGES_SEND)
DEFAULT_SCOPES = (CONSENT_READ, EVENTS_READ)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_token(
    session: Session, name: str, scopes: Iterable[str] | None = None
) -> tuple[ApiToken, str]:
    """Create a token named `name` with `scopes` (default: the read scopes); returns the row
    and the plain token (shown once)."""
    scopes = tuple(scopes or DEFAULT_SCOPES)
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        token_sha256=token_sha256(token),
        created_at=utcnow(),
        may_send=MESSAGES_SEND in scopes,
    )
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


def token_has_scope(row: ApiToken, scope: str) -> bool:
    """May this token do `scope`?

    Interim, until tokens carry their scopes: ``messages:send`` is the token's
    `may_send` flag and every live token may read. The one function to swap when
    scopes land.
    """
    if scope == MESSAGES_SEND:
        return bool(row.may_send)
    return scope in SCOPES
