"""API bearer tokens: scoped, optionally expiring, created once, shown once, stored as a SHA-256.

Tokens carry 256 bits of randomness, so a fast hash is enough (no salt or
stretching is needed, unlike for passwords), and a lookup by hash never
compares the secret itself.

A token may do only what its scopes name (`SCOPES`); each API route declares
the scope it needs (`app.web.api.requires_scope`). A token made before scopes
existed keeps working with the read scopes, the only ones there were.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.db import utcnow
from app.store.models import ApiToken

TOKEN_PREFIX = "scg_"

CONSENT_READ = "consent:read"  # a number's consent status and evidence, consent checks
EVENTS_READ = "events:read"  # consent events and outbound messages, with bodies
MESSAGES_SEND = "messages:send"  # queue messages to numbers (POST /api/v1/messages)
SCOPES = (CONSENT_READ, EVENTS_READ, MESSAGES_SEND)
DEFAULT_SCOPES = (CONSENT_READ, EVENTS_READ)
MAX_EXPIRY_DAYS = 3650


class TokenError(ValueError):
    """A token cannot be made as asked; the message says why."""


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def scopes_of(row: ApiToken) -> frozenset[str]:
    """The scopes a token holds (a token from before scopes: the read scopes)."""
    if row.scopes is None:
        return frozenset(DEFAULT_SCOPES)
    return frozenset(row.scopes.split())


def create_api_token(
    session: Session,
    name: str,
    scopes: Iterable[str] | None = None,
    *,
    expires_in_days: float | None = None,
    created_by: str | None = None,
    now: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Create a token named `name`; returns the row and the plain token (shown once)."""
    now = now or utcnow()
    chosen = set(scopes or DEFAULT_SCOPES)
    unknown = sorted(scope for scope in chosen if scope not in SCOPES)
    if unknown:
        raise TokenError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not name.strip() or len(name) > 200:
        raise TokenError("a token needs a name of at most 200 characters")
    if expires_in_days is not None and not 0 < expires_in_days <= MAX_EXPIRY_DAYS:
        raise TokenError(f"expiry must be between 0 and {MAX_EXPIRY_DAYS} days")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name.strip(),
        token_sha256=token_sha256(token),
        created_at=now,
        scopes=" ".join(scope for scope in SCOPES if scope in chosen),
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
        created_by=(created_by or None) and created_by[:254],
    )
    session.add(row)
    session.flush()
    return row, token


def authenticate_api_token(
    session: Session, token: str, now: datetime | None = None
) -> ApiToken | None:
    """The live (not revoked, not expired) token matching `token`, or None."""
    if not token or len(token) > 200:
        return None
    digest = token_sha256(token)
    row = session.execute(
        select(ApiToken).where(ApiToken.token_sha256 == digest, ApiToken.revoked_at.is_(None))
    ).scalar_one_or_none()
    if row is None or not hmac.compare_digest(row.token_sha256, digest):
        return None
    if row.expires_at is not None and row.expires_at <= (now or utcnow()):
        return None
    return row
