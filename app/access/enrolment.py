"""Single-use, expiring enrolment links: staff set their own credentials.

An admin (or `flask --app app staff create`) never sees a password or a TOTP
seed. Creating or resetting an account issues a link instead; with it the
staff member chooses a password (`app.access.passwords`) and, where the role
needs one, scans a freshly made seed and proves with a code that their
authenticator app holds it. The link works once, and only until it expires
(`STAFF_ENROL_HOURS`, 24 by default); issuing a new one ends the old.

The same mechanism, without a link to hand on, lets a signed-in staff member
replace their own second factor after re-authenticating (`ENROL_TOTP`).
Callers own the transaction.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.access.accounts import (
    end_all_sessions,
    matching_step,
    needs_second_factor,
    set_password,
    set_second_factor,
    token_sha256,
)
from app.access.passwords import PasswordRejected, check_new_password
from app.access.secrets import SeedCipher
from app.store.models import (
    ENROL_CREDENTIALS,
    ROLES,
    StaffEnrolment,
    StaffUser,
)

USED = "used"
REPLACED = "replaced"
ENROL_PATH = "/staff/enrol/"


class EnrolmentError(ValueError):
    """The enrolment cannot be completed as given; the message says why, for its owner."""


@dataclass(frozen=True)
class OpenLink:
    link: StaffEnrolment
    user: StaffUser


def enrol_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{ENROL_PATH}{token}"


def issue_link(
    session: Session,
    user: StaffUser,
    *,
    purpose: str,
    now: datetime,
    hours: float,
    created_by: str,
) -> str:
    """A new link for `user` (its token, shown once); any earlier open link of the user ends."""
    for earlier in session.execute(
        select(StaffEnrolment).where(
            StaffEnrolment.staff_id == user.id, StaffEnrolment.ended_at.is_(None)
        )
    ).scalars():
        earlier.ended_at = now
        earlier.outcome = REPLACED
    token = secrets.token_urlsafe(32)
    session.add(
        StaffEnrolment(
            staff_id=user.id,
            token_sha256=token_sha256(token),
            purpose=purpose,
            created_at=now,
            expires_at=now + timedelta(hours=hours),
            created_by=created_by[:254],
        )
    )
    session.flush()
    return token


def find_open_link(
    session: Session, token: str | None, now: datetime, *, purpose: str = ENROL_CREDENTIALS
) -> OpenLink | None:
    """The unused, unexpired link for `token` whose account is not disabled; else None."""
    if not token or len(token) > 200:
        return None
    found = session.execute(
        select(StaffEnrolment, StaffUser)
        .join(StaffUser, StaffUser.id == StaffEnrolment.staff_id)
        .where(StaffEnrolment.token_sha256 == token_sha256(token))
    ).first()
    if found is None:
        return None
    link, user = found
    if (
        link.purpose != purpose
        or link.ended_at is not None
        or link.expires_at <= now
        or user.disabled_at is not None
        or user.role not in ROLES
    ):
        return None
    return OpenLink(link, user)


def offered_seed(link: StaffEnrolment, cipher: SeedCipher) -> str:
    """The seed this link offers for the second factor: made once, kept encrypted meanwhile."""
    if link.pending_seed_encrypted is None:
        link.pending_seed_encrypted = cipher.encrypt(pyotp.random_base32())
    return cipher.decrypt(link.pending_seed_encrypted)


def complete_credentials(
    session: Session,
    found: OpenLink,
    *,
    password: str,
    confirmation: str,
    code: str | None,
    cipher: SeedCipher,
    now: datetime,
) -> None:
    """Set the password (and second factor) the owner chose; the link is used up."""
    link, user = found.link, found.user
    if password != confirmation:
        raise EnrolmentError("The two passwords differ.")
    try:
        check_new_password(password, email=user.email)
    except PasswordRejected as rejected:
        raise EnrolmentError(str(rejected)) from rejected
    seed = step = None
    if needs_second_factor(user):
        seed = offered_seed(link, cipher)
        step = matching_step(seed, code or "", now, None)
        if step is None:
            raise EnrolmentError(
                "That code does not match: scan the QR code again and type the current code."
            )
    # Checked in full above: nothing is changed unless everything is right.
    set_password(user, password, now)
    if seed is not None:
        set_second_factor(user, seed, cipher, now, step)
    user.enrolled_at = now
    _use(link, now)
    end_all_sessions(session, user.id)


def complete_second_factor(
    session: Session,
    found: OpenLink,
    *,
    code: str,
    cipher: SeedCipher,
    now: datetime,
    keep_session: int | None,
) -> None:
    """Replace the owner's second factor with the seed the link offered, proven by `code`."""
    link, user = found.link, found.user
    seed = offered_seed(link, cipher)
    step = matching_step(seed, code, now, None)
    if step is None:
        raise EnrolmentError(
            "That code does not match: scan the QR code again and type the current code."
        )
    set_second_factor(user, seed, cipher, now, step)
    _use(link, now)
    end_all_sessions(session, user.id, keep=keep_session)


def _use(link: StaffEnrolment, now: datetime) -> None:
    link.ended_at = now
    link.outcome = USED
    link.pending_seed_encrypted = None
