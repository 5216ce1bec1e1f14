"""Staff accounts: creation, credentials, password and TOTP checks, server-side sessions.

Passwords are hashed with argon2id (argon2-cffi); the second factor is TOTP
(pyotp, RFC 6238) whose seed is stored encrypted (`app.access.secrets`).
Compliance officers and admins always need the second factor. Callers own the
transaction.

An account is created without usable credentials: its owner sets the password
and enrols the second factor through a single-use link
(`app.access.enrolment`), so no one else ever sees either.

Every password check runs argon2 exactly once, whatever the account's state
(unknown, disabled, not yet enrolled, wrong or right password), so the answer
takes as long in each case and its timing tells nothing about which accounts
exist. Guessing is slowed by throttling (`app.access.throttle`), never by
locking an account, so nobody can lock the team out.
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

from app.access.passwords import check_new_password
from app.access.secrets import SeedCipher, is_encrypted
from app.store.db import utcnow
from app.store.models import ADMIN, COMPLIANCE, ROLES, StaffSession, StaffUser

ROLES_NEEDING_SECOND_FACTOR = frozenset({COMPLIANCE, ADMIN})
TOTP_ISSUER = "sms-consent-gateway"
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")

# Sign-in outcomes other than success, as the audit log records them.
INVALID = "invalid"
DISABLED = "disabled"
NOT_ENROLLED = "not enrolled"

# argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane): strong against
# GPU guessing while a sign-in does not cost every web worker 64 MiB (the library default).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@cache
def _dummy_hash() -> str:
    """Verified against when the e-mail is unknown, so every answer takes as long."""
    return _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """A request about accounts that cannot be carried out; the message says why."""


def normalize_email(email: str) -> str:
    """E-mail addresses compare case-insensitively."""
    return email.strip().lower()


def needs_second_factor(user: StaffUser) -> bool:
    """Compliance officers and admins always; anyone else who has enrolled one."""
    return user.role in ROLES_NEEDING_SECOND_FACTOR or user.totp_seed_encrypted is not None


def unusable_password_hash() -> str:
    """The hash of a random secret nobody knows: an account before its owner enrols."""
    return _hasher.hash(secrets.token_urlsafe(32))


def create_account(session: Session, email: str, role: str, now: datetime) -> StaffUser:
    """Create a staff account without usable credentials (its owner enrols by link)."""
    address = normalize_email(email)
    if not EMAIL_PATTERN.match(address) or len(address) > 254:
        raise AccountError(f"not an e-mail address: {email!r}")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    exists = session.execute(select(StaffUser.id).where(StaffUser.email == address)).first()
    if exists:
        raise AccountError(f"an account for {address} already exists")
    user = StaffUser(
        email=address, role=role, password_hash=unusable_password_hash(), created_at=now
    )
    session.add(user)
    session.flush()
    return user


def set_password(user: StaffUser, password: str, now: datetime) -> None:
    """Give `user` a new password; `PasswordRejected` when it is too short or too common."""
    check_new_password(password, email=user.email)
    user.password_hash = _hasher.hash(password)
    user.password_changed_at = now


def set_second_factor(
    user: StaffUser, seed: str, cipher: SeedCipher, now: datetime, used_step: int | None
) -> None:
    """Store `seed` (encrypted) as the user's second factor, confirmed by a code of `used_step`."""
    user.totp_seed_encrypted = cipher.encrypt(seed)
    user.totp_confirmed_at = now
    user.totp_last_step = used_step


def revoke_credentials(session: Session, user: StaffUser) -> None:
    """Reset: the password and second factor stop working and every session ends.

    The owner sets new ones through a fresh enrolment link.
    """
    user.password_hash = unusable_password_hash()
    user.totp_seed_encrypted = None
    user.totp_confirmed_at = None
    user.totp_last_step = None
    user.enrolled_at = None
    end_all_sessions(session, user.id)


def provisioning_uri(seed: str, email: str) -> str:
    """The otpauth:// URI an authenticator app scans (as a QR code)."""
    return pyotp.TOTP(seed).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def find_user(session: Session, email: str) -> StaffUser | None:
    return session.execute(
        select(StaffUser).where(StaffUser.email == normalize_email(email))
    ).scalar_one_or_none()


@dataclass(frozen=True)
class LoginOutcome:
    """The result of a password check: the user when it passed, or why it did not."""

    user: StaffUser | None
    reason: str | None = None  # INVALID, DISABLED, NOT_ENROLLED


def check_password(session: Session, email: str, password: str, now: datetime) -> LoginOutcome:
    """Check an e-mail and password, running argon2 exactly once on every path."""
    user = find_user(session, email)
    try:
        _hasher.verify(user.password_hash if user is not None else _dummy_hash(), password)
        matched = True
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        matched = False
    if user is None:
        return LoginOutcome(None, INVALID)
    if user.disabled_at is not None:
        return LoginOutcome(None, DISABLED)
    if user.enrolled_at is None:
        return LoginOutcome(None, NOT_ENROLLED)
    if not matched:
        return LoginOutcome(None, INVALID)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    if not needs_second_factor(user):
        user.last_login_at = now
    return LoginOutcome(user)


def matching_step(seed: str, code: str, now: datetime, last_step: int | None) -> int | None:
    """The time step whose code `code` is (one step of clock drift either way), or None.

    A step at or before `last_step` does not count: a code works only once.
    """
    code = re.sub(r"\s+", "", code or "")
    totp = pyotp.TOTP(seed)
    if not code.isdigit() or len(code) != totp.digits:
        return None
    timestamp = now.timestamp()
    for drift in (0, -1, 1):
        at = timestamp + drift * totp.interval
        if secrets.compare_digest(totp.at(at), code):
            step = int(at // totp.interval)
            return None if last_step is not None and step <= last_step else step
    return None


def check_totp(user: StaffUser, code: str, now: datetime, cipher: SeedCipher) -> bool:
    """Check a TOTP code against the user's (decrypted) seed; a code works only once."""
    if not user.totp_seed_encrypted:
        return False
    step = matching_step(cipher.decrypt(user.totp_seed_encrypted), code, now, user.totp_last_step)
    if step is None:
        return False
    user.totp_last_step = step
    user.last_login_at = now
    return True


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


def rotate_session(row: StaffSession) -> str:
    """A new token for a session that gained privilege (second factor, new credentials).

    The old token stops working at once, so a token seen before the step (a
    fixed or sniffed cookie) is worthless after it.
    """
    token = secrets.token_urlsafe(32)
    row.token_sha256 = token_sha256(token)
    return token


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


def end_all_sessions(session: Session, staff_id: int, *, keep: int | None = None) -> None:
    """Sign a user out everywhere (but session `keep`): on disabling, reset, new password."""
    now = utcnow()
    for row in session.execute(
        select(StaffSession).where(
            StaffSession.staff_id == staff_id, StaffSession.ended_at.is_(None)
        )
    ).scalars():
        if row.id != keep:
            row.ended_at = now


def count_admins(session: Session) -> int:
    return session.execute(
        select(func.count(StaffUser.id)).where(
            StaffUser.role == ADMIN, StaffUser.disabled_at.is_(None)
        )
    ).scalar_one()


def reencrypt_seeds(session: Session, cipher: SeedCipher, *, only_clear: bool = False) -> int:
    """Every stored seed encrypted under the current key; with `only_clear`, only seeds
    still in clear (stored before encryption: `db upgrade` encrypts them).

    `staff rekey-totp` runs it after a new TOTP_ENCRYPTION_KEY. Returns how many changed.
    """
    changed = 0
    for user in session.execute(
        select(StaffUser).where(StaffUser.totp_seed_encrypted.is_not(None))
    ).scalars():
        if only_clear and is_encrypted(user.totp_seed_encrypted):
            continue
        user.totp_seed_encrypted = cipher.rotate(user.totp_seed_encrypted)
        changed += 1
    return changed
