"""Staff accounts (app.access.accounts): hashing, lockout, TOTP, server-side sessions."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest

from app.access.accounts import (
    LOCKOUT_AFTER,
    AccountError,
    check_password,
    check_totp,
    create_account,
    load_session,
    reset_credentials,
    start_session,
)
from app.store.db import utcnow
from app.store.models import StaffUser

IDLE, LIFETIME = timedelta(minutes=15), timedelta(hours=12)


def account(db, role="compliance", email="officer@example.com"):
    with db.transaction() as session:
        return create_account(session, email, role, utcnow())


def test_password_is_stored_as_argon2id_and_roles_get_second_factors(db):
    officer = account(db)
    viewer = account(db, "viewer", "viewer@example.com")
    assert officer.user.password_hash.startswith("$argon2id$")
    assert officer.password not in officer.user.password_hash
    assert officer.totp_secret and len(officer.totp_secret) >= 32
    assert viewer.totp_secret is None


@pytest.mark.parametrize(
    ("email", "role", "message"),
    [
        ("not-an-email", "viewer", "not an e-mail"),
        ("a@b", "viewer", "not an e-mail"),
        ("ok@example.com", "superuser", "role must be"),
    ],
)
def test_bad_accounts_are_refused(db, email, role, message):
    with pytest.raises(AccountError, match=message):
        account(db, role, email)


def test_emails_are_unique_whatever_their_case(db):
    account(db, email="Officer@Example.com")
    with pytest.raises(AccountError, match="already exists"):
        account(db, email="officer@example.COM")


def test_password_check(db):
    officer = account(db)
    with db.transaction() as session:
        assert check_password(session, "OFFICER@example.com", officer.password, utcnow()).user
        assert check_password(session, officer.user.email, "wrong", utcnow()).reason == "invalid"
        assert check_password(session, "nobody@example.com", "x", utcnow()).reason == "invalid"


def test_lockout_after_repeated_failures_even_with_the_right_password(db):
    officer = account(db)
    now = utcnow()
    with db.transaction() as session:
        for _ in range(LOCKOUT_AFTER):
            check_password(session, officer.user.email, "wrong", now)
        outcome = check_password(session, officer.user.email, officer.password, now)
        assert outcome.reason == "locked"
        later = now + timedelta(minutes=16)
        assert check_password(session, officer.user.email, officer.password, later).user


def test_disabled_accounts_cannot_sign_in(db):
    officer = account(db)
    with db.transaction() as session:
        session.get(StaffUser, officer.user.id).disabled_at = utcnow()
    with db.transaction() as session:
        assert check_password(session, officer.user.email, officer.password, utcnow()).reason == (
            "disabled"
        )


def test_totp_accepts_the_current_code_once(db):
    officer = account(db)
    now = utcnow()
    code = pyotp.TOTP(officer.totp_secret).at(now)
    with db.transaction() as session:
        user = session.get(StaffUser, officer.user.id)
        assert check_totp(user, code, now)
        assert user.totp_confirmed_at == now
        assert not check_totp(user, code, now + timedelta(seconds=5))  # replayed
        assert not check_totp(user, "12345", now)
        assert not check_totp(user, "abcdef", now)


def test_totp_tolerates_one_step_of_clock_drift(db):
    officer = account(db)
    now = utcnow()
    totp = pyotp.TOTP(officer.totp_secret)
    with db.transaction() as session:
        user = session.get(StaffUser, officer.user.id)
        assert check_totp(user, totp.at(now - timedelta(seconds=30)), now)
        assert not check_totp(user, totp.at(now - timedelta(seconds=95)), now)


def test_wrong_codes_count_toward_the_lockout(db):
    officer = account(db)
    now = utcnow()
    with db.transaction() as session:
        user = session.get(StaffUser, officer.user.id)
        for _ in range(LOCKOUT_AFTER):
            check_totp(user, "000000", now)
        assert not check_totp(user, pyotp.TOTP(officer.totp_secret).at(now), now)


def test_sessions_end_when_idle_expired_or_disabled(db):
    officer = account(db)
    now = utcnow()
    with db.transaction() as session:
        user = session.get(StaffUser, officer.user.id)
        row, token = start_session(session, user, now, "127.0.0.1")
        assert row.second_factor_done is False  # compliance: the code is still to come
        assert load_session(session, token, now, idle=IDLE, lifetime=LIFETIME)
        assert load_session(session, "forged", now, idle=IDLE, lifetime=LIFETIME) is None
        idle = now + IDLE + timedelta(seconds=1)
        assert load_session(session, token, idle, idle=IDLE, lifetime=LIFETIME) is None
        assert row.ended_at == idle
        assert load_session(session, token, now, idle=IDLE, lifetime=LIFETIME) is None  # ended

        row, token = start_session(session, user, now, None)
        row.last_seen_at = now + LIFETIME
        late = now + LIFETIME + timedelta(seconds=1)
        assert load_session(session, token, late, idle=IDLE, lifetime=LIFETIME) is None

        row, token = start_session(session, user, now, None)
        user.disabled_at = now
        assert load_session(session, token, now, idle=IDLE, lifetime=LIFETIME) is None


def test_reset_gives_new_credentials_and_ends_sessions(db):
    officer = account(db)
    now = utcnow()
    with db.transaction() as session:
        user = session.get(StaffUser, officer.user.id)
        _, token = start_session(session, user, now, None)
        fresh = reset_credentials(session, user)
        assert fresh.password != officer.password and fresh.totp_secret != officer.totp_secret
        assert load_session(session, token, now, idle=IDLE, lifetime=LIFETIME) is None
        assert check_password(session, user.email, fresh.password, now).user
        assert check_password(session, user.email, officer.password, now).user is None
