"""Staff accounts: creation, password and TOTP checks, lockout, server-side sessions.

Passwords are hashed with argon2id (argon2-cffi); the second factor is TOTP
(pyotp, RFC 6238). Compliance officers and admins always need the second
factor. Callers own the transaction.

An account locks for `LOCKOUT_MINUTES` after `LOCKOUT_AFTER` failed attempts
in a row (a wrong password or a wrong code). The per-address rate limit on the
login form (flask-limiter, in the staff blueprint) slows guessing across
accounts; the lockout stops it on one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.db import utcnow
from app.store.models import ADMIN, COMPLIANCE, ROLES, StaffSession, StaffUser

LOCKOUT_AFTER = 5
LOCKOUT_MINUTES = 15
ROLES_NEEDING_SECOND_FACTOR = frozenset({COMPLIANCE, ADMIN})
TOTP_ISSUER = "sms-consent-gateway"
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")

# argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane): strong against
# GPU guessing while a sign-in does not cost every web worker 64 MiB (the library default).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@cache
def _dummy_hash() -> str:
    """Verified against when the e-mail is unknown, so both answers take as long."""
    return _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """A request about accounts that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class NewAccount:
    """A created account and its secrets, shown once."""

    user: StaffUser
    password: str
    totp_secret: str | None


def normalize_email(email: str) -> str:
    """E-mail addresses compare case-insensitively."""
    return email.strip().lower()


def needs_second_factor(user: StaffUser) -> bool:
    """Compliance officers and admins always; anyone else who has a TOTP secret."""
    return user.role in ROLES_NEEDING_SECOND_FACTOR or user.totp_secret is not None


def generate_password() -> str:
    """A random password of about 130 bits, easy to copy."""
    return secrets.token_urlsafe(16)


def create_account(session: Session, email: str, role: str, now: datetime) -> NewAccount:
    """Create a staff account with a generated password (and TOTP secret for roles needing one)."""
    address = normalize_email(email)
    if not EMAIL_PATTERN.match(address) or len(address) > 254:
        raise AccountError(f"not an e-mail address: {email!r}")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    exists = session.execute(select(StaffUser.id).where(StaffUser.email == address)).first()
    if exists:
        raise AccountError(f"an account for {address} already exists")
    password = generate_password()
    totp_secret = pyotp.random_base32() if role in ROLES_NEEDING_SECOND_FACTOR else None
    user = StaffUser(
        email=address,
        role=role,
        password_hash=_hasher.hash(password),
        totp_secret=totp_secret,
        failed_logins=0,
        created_at=now,
    )
    session.add(user)
    session.flush()
    return NewAccount(user, password, totp_secret)


def reset_credentials(session: Session, user: StaffUser) -> NewAccount:
    """A new password (and TOTP secret where needed); every open session of the user ends."""
    password = generate_password()
    user.password_hash = _hasher.hash(password)
    user.totp_secret = pyotp.random_base32() if user.role in ROLES_NEEDING_SECOND_FACTOR else None
    user.totp_confirmed_at = None
    user.totp_last_step = None
    user.failed_logins = 0
    user.locked_until = None
    end_all_sessions(session, user.id)
    return NewAccount(user, password, user.totp_secret)


def provisioning_uri(user: StaffUser) -> str | None:
    """The otpauth:// URI an authenticator app scans (as a QR code)."""
    if not user.totp_secret:
        return None
    return pyotp.TOTP(user.totp_secret).provisioning_uri(name=user.email, issuer_name=TOTP_ISSUER)


def find_user(session: Session, email: str) -> StaffUser | None:
    return session.execute(
        select(StaffUser).where(StaffUser.email == normalize_email(email))
    ).scalar_one_or_none()


@dataclass(frozen=True)
class LoginOutcome:
    """The result of a password check: the user when it passed, or why it did not."""

    user: StaffUser | None
    reason: str | None = None  # "invalid", "locked", "disabled"


def is_locked(user: StaffUser, now: datetime) -> bool:
    return user.locked_until is not None and user.locked_until > now


def _fail(user: StaffUser, now: datetime) -> None:
    user.failed_logins += 1
    if user.failed_logins >= LOCKOUT_AFTER:
        user.locked_until = now + timedelta(minutes=LOCKOUT_MINUTES)
        user.failed_logins = 0


def check_password(session: Session, email: str, password: str, now: datetime) -> LoginOutcome:
    """Check an e-mail and password, counting failures toward the lockout."""
    user = find_user(session, email)
    if user is None:
        try:
            _hasher.verify(_dummy_hash(), password)
        except VerificationError:
            pass
        return LoginOutcome(None, "invalid")
    if user.disabled_at is not None:
        return LoginOutcome(None, "disabled")
    if is_locked(user, now):
        return LoginOutcome(None, "locked")
    try:
        _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        _fail(user, now)
        return LoginOutcome(None, "locked" if is_locked(user, now) else "invalid")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    if not needs_second_factor(user):
        _succeed(user, now)
    return LoginOutcome(user)


def check_totp(user: StaffUser, code: str, now: datetime) -> bool:
    """Check a TOTP code (one step of clock drift either way); a code works only once."""
    if not user.totp_secret or is_locked(user, now):
        return False
    code = re.sub(r"\s+", "", code or "")
    totp = pyotp.TOTP(user.totp_secret)
    if not code.isdigit() or len(code) != totp.digits:
        _fail(user, now)
        return False
    timestamp = now.timestamp()
    for drift in (0, -1, 1):
        at = timestamp + drift * totp.interval
        step = int(at // totp.interval)
        if secrets.compare_digest(totp.at(at), code):
            if user.totp_last_step is not None and step <= user.totp_last_step:
                break  # replayed
            user.totp_last_step = step
            if user.totp_confirmed_at is None:
                user.totp_confirmed_at = now
            _succeed(user, now)
            return True
    _fail(user, now)
    return False


def _succeed(user: StaffUser, now: datetime) -> None:
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now


# ----------------------------------------------------------------------------------------------
# Sessions


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(
    session: Session, user: StaffUser, now: datetime, ip: str | None
) -> tuple[StaffSession, str]:
    """A new server-side session; returns it and the token for the cookie."""
    token = secrets.token_urlsafe(32)
    row = StaffSession(
        token_sha256=token_sha256(token),
        staff_id=user.id,
        second_factor_done=not needs_second_factor(user),
        created_at=now,
        last_seen_at=now,
        ip=(ip or "")[:64] or None,
    )
    session.add(row)
    session.flush()
    return row, token


def load_session(
    session: Session,
    token: str | None,
    now: datetime,
    *,
    idle: timedelta,
    lifetime: timedelta,
) -> tuple[StaffSession, StaffUser] | None:
    """The live session for `token` and its user; an idle, expired or ended one is closed."""
    if not token or len(token) > 200:
        return None
    found = session.execute(
        select(StaffSession, StaffUser)
        .join(StaffUser, StaffUser.id == StaffSession.staff_id)
        .where(StaffSession.token_sha256 == token_sha256(token))
    ).first()
    if found is None:
        return None
    row, user = found
    if row.ended_at is not None:
        return None
    if (
        user.disabled_at is not None
        or now - row.last_seen_at > idle
        or now - row.created_at > lifetime
    ):
        row.ended_at = now
        return None
    return row, user


def end_all_sessions(session: Session, staff_id: int) -> None:
    """Sign a user out everywhere (used when an account is disabled or reset)."""
    now = utcnow()
    for row in session.execute(
        select(StaffSession).where(
            StaffSession.staff_id == staff_id, StaffSession.ended_at.is_(None)
        )
    ).scalars():
        row.ended_at = now


def count_admins(session: Session) -> int:
    return session.execute(
        select(func.count(StaffUser.id)).where(
            StaffUser.role == ADMIN, StaffUser.disabled_at.is_(None)
        )
    ).scalar_one()
