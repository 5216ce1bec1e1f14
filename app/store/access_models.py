"""Typed models of access: staff accounts, sessions, enrolment links, the access audit log,
API tokens, and data keys kept wrapped under a key from the environment.

Apart from `app.store.models` (which re-exports them) only to keep each module short.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.store.db import Base, utcnow
from app.store.types import BigId, UTCDateTime


class ApiToken(Base):
    """A bearer token for /api/v1; only its SHA-256 is stored.

    `scopes` is a space-separated list (`app.access.tokens.SCOPES`); NULL marks a
    token made before scopes existed, which keeps the read scopes. A token past
    `expires_at` or with `revoked_at` set is refused.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scopes: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(254))


# Staff roles, from least to most trusted.
VIEWER = "viewer"
COMPLIANCE = "compliance"
ADMIN = "admin"
ROLES = (VIEWER, COMPLIANCE, ADMIN)


class StaffUser(Base):
    """A staff member who signs in to the console.

    The password is stored as an argon2id hash. Compliance officers and admins
    also need a TOTP second factor, whose seed is kept only encrypted
    (`app.access.secrets.SeedCipher`); `totp_last_step` refuses a code used twice.
    An account is made without usable credentials: its owner sets both through a
    single-use enrolment link (`StaffEnrolment`), so no one else ever sees them;
    `enrolled_at` is None until then.
    """

    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    totp_seed_encrypted: Mapped[str | None] = mapped_column(String(255))
    totp_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The IANA zone the console shows this member's times in (`Europe/Paris`); None: UTC.
    time_zone: Mapped[str | None] = mapped_column(String(64))


# What an enrolment link is for (`StaffEnrolment.purpose`).
ENROL_CREDENTIALS = "credentials"  # set a password (and a second factor): a new or reset account
ENROL_TOTP = "totp"  # a signed-in staff member replaces their own second factor


class StaffEnrolment(Base):
    """A single-use, expiring link with which a staff member sets their own credentials.

    Only the SHA-256 of the link's token is kept. The seed offered for the second
    factor waits here, encrypted, until the owner proves with a code that their
    authenticator app holds it. `ended_at` is set when the link is used or replaced.
    """

    __tablename__ = "staff_enrolments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))
    created_by: Mapped[str | None] = mapped_column(String(254))
    pending_seed_encrypted: Mapped[str | None] = mapped_column(String(255))


class StaffSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored.

    Server-side sessions make logout, idle timeout and disabling an account take
    effect at once, whatever a stolen cookie says.
    """

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"), index=True)
    second_factor_done: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ip: Mapped[str | None] = mapped_column(String(64))


class StaffAuditEntry(Base):
    """Who looked at or took what, and when: append-only (the database refuses changes).

    `query` keeps the search or the target; `row_count` how many rows were shown
    or exported; `sha256` the digest of an exported file; `api_token_id` the API
    token that read, for API requests.
    """

    __tablename__ = "staff_audit"
    __table_args__ = (Index("ix_staff_audit_at", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    staff_id: Mapped[int | None] = mapped_column(BigId)
    staff_email: Mapped[str | None] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str | None] = mapped_column(String(200))
    query: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    row_count: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    api_token_id: Mapped[int | None] = mapped_column(BigId)


class KeyRecord(Base):
    """A data key kept wrapped (AES-GCM) under a key from the environment, with that key's
    fingerprint, so a start with the wrong key is refused instead of silently mismatching.

    One row today: ``suppression``, the key of the suppression list's keyed hashes
    (`app.ledger.suppression_keys`).
    """

    __tablename__ = "key_records"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    wrapped_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
