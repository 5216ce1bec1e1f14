"""Staff accounts (app.access.accounts): hashes, equal-time checks, TOTP, encrypted seeds."""

from __future__ import annotations

import statistics
import time
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import select, text

from app.access import accounts
from app.access.accounts import (
    AccountError,
    check_password,
    check_totp,
    create_account,
    load_session,
    reencrypt_seeds,
    revoke_credentials,
    rotate_session,
    start_session,
)
from app.access.secrets import SeedCipher, SeedKeyError, generate_key
from app.store.db import utcnow
from app.store.models import StaffUser
from tests.staff_helpers import STAFF_PASSWORD, make_staff

IDLE, LIFETIME = timedelta(minutes=15), timedelta(hours=12)


def cipher(app) -> SeedCipher:
    return app.extensions["seed_cipher"]


def test_a_new_account_has_no_usable_credentials_until_its_owner_enrols(app, db):
    with db.transaction() as session:
        user = create_account(session, "new@example.com", "compliance", utcnow())
        assert user.password_hash.startswith("$argon2id$")
        assert user.totp_seed_encrypted is None and user.enrolled_at is None
    with db.transaction() as session:
        outcome = check_password(session, "new@example.com", "", utcnow())
        assert outcome.user is None and outcome.reason == "not enrolled"


@pytest.mark.parametrize(
    ("email", "role", "message"),
    [
        ("not-an-email", "viewer", "not an e-mail"),
        ("a@b", "viewer", "not an e-mail"),
        ("ok@example.com", "superuser", "role must be"),
    ],
)
def test_bad_accounts_are_refused(db, email, role, message):
    with pytest.raises(AccountError, match=message), db.transaction() as session:
        create_account(session, email, role, utcnow())


def test_emails_are_unique_whatever_their_case(app, db):
    make_staff(db, "viewer", "Officer@Example.com", app=app)
    with pytest.raises(AccountError, match="already exists"), db.transaction() as session:
        create_account(session, "officer@example.COM", "viewer", utcnow())


def test_password_check(app, db):
    officer = make_staff(db, "compliance", app=app)
    with db.transaction() as session:
        assert check_password(session, "Compliance@Example.com", STAFF_PASSWORD, utcnow()).user
        assert check_password(session, officer.email, "wrong", utcnow()).reason == "invalid"
        assert check_password(session, "nobody@example.com", "x", utcnow()).reason == "invalid"


def test_disabled_accounts_cannot_sign_in(app, db):
    officer = make_staff(db, "compliance", app=app)
    with db.transaction() as session:
        session.get(StaffUser, officer.id).disabled_at = utcnow()
    with db.transaction() as session:
        outcome = check_password(session, officer.email, officer.password, utcnow())
        assert outcome.user is None and outcome.reason == "disabled"


def test_there_is_no_lockout_to_abuse(app, db):
    """Finding 6: five wrong passwords locked any account for 15 minutes."""
    officer = make_staff(db, "compliance", app=app)
    now = utcnow()
    with db.transaction() as session:
        for _ in range(50):
            assert check_password(session, officer.email, "wrong", now).reason == "invalid"
        assert check_password(session, officer.email, officer.password, now).user


# --- every path takes as long ------------------------------------------------------------------


def paths(app, db) -> dict[str, tuple[str, str]]:
    """(email, password) for each way a sign-in can end."""
    valid = make_staff(db, "viewer", "valid@example.com", app=app)
    disabled = make_staff(db, "viewer", "disabled@example.com", app=app)
    with db.transaction() as session:
        session.get(StaffUser, disabled.id).disabled_at = utcnow()
        create_account(session, "pending@example.com", "compliance", utcnow())
    return {
        "valid": (valid.email, valid.password),
        "wrong password": (valid.email, "not the password"),
        "unknown": ("nobody@example.com", valid.password),
        "disabled": (disabled.email, disabled.password),
        "not enrolled": ("pending@example.com", valid.password),
    }


def test_every_sign_in_path_runs_argon2_exactly_once(app, db, monkeypatch):
    """Finding 6: locked and disabled accounts answered without argon2 (3 ms against 23 ms)."""
    calls: list[str] = []
    real = accounts._hasher

    class CountingHasher:
        def verify(self, hash_, password):
            calls.append(hash_)
            return real.verify(hash_, password)

        def __getattr__(self, name):
            return getattr(real, name)

    cases = paths(app, db)
    monkeypatch.setattr(accounts, "_hasher", CountingHasher())
    for name, (email, password) in cases.items():
        calls.clear()
        with db.transaction() as session:
            check_password(session, email, password, utcnow())
        assert len(calls) == 1, name
        assert calls[0].startswith("$argon2id$v=19$m=19456,t=2,p=1$"), name


def test_sign_in_answers_take_as_long_for_every_kind_of_account(app, db):
    """Timing, measured: medians within a factor of two of each other (argon2 dominates).

    Before, a disabled or locked account answered in about an eighth of the time.
    """
    cases = paths(app, db)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(9):
        for name, (email, password) in cases.items():  # interleaved: load hits every case alike
            started = time.perf_counter()
            with db.transaction() as session:
                check_password(session, email, password, utcnow())
            samples[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    assert max(medians.values()) < 2 * min(medians.values()), medians


# --- TOTP --------------------------------------------------------------------------------------


def test_totp_accepts_the_current_code_once(app, db):
    officer = make_staff(db, "compliance", app=app)
    now = utcnow()
    code = pyotp.TOTP(officer.totp_secret).at(now)
    with db.transaction() as session:
        user = session.get(StaffUser, officer.id)
        assert check_totp(user, code, now, cipher(app))
        assert not check_totp(user, code, now + timedelta(seconds=5), cipher(app))  # replayed
        assert not check_totp(user, "12345", now, cipher(app))
        assert not check_totp(user, "abcdef", now, cipher(app))


def test_totp_tolerates_one_step_of_clock_drift(app, db):
    officer = make_staff(db, "compliance", app=app)
    now = utcnow()
    totp = pyotp.TOTP(officer.totp_secret)
    with db.transaction() as session:
        user = session.get(StaffUser, officer.id)
        assert check_totp(user, totp.at(now - timedelta(seconds=30)), now, cipher(app))
        assert not check_totp(user, totp.at(now - timedelta(seconds=95)), now, cipher(app))


def test_totp_seeds_are_stored_encrypted(app, db):
    """Finding 7: seeds were stored in clear, so the database alone gave every code."""
    officer = make_staff(db, "compliance", app=app)
    with db.transaction(write=False) as session:
        stored = session.execute(
            text("SELECT totp_seed_encrypted FROM staff_users WHERE id = :id"), {"id": officer.id}
        ).scalar_one()
    assert officer.totp_secret not in stored and stored.startswith("gAAAAA")
    assert cipher(app).decrypt(stored) == officer.totp_secret
    with pytest.raises(SeedKeyError):
        SeedCipher([generate_key()]).decrypt(stored)  # another key opens nothing
    tampered = stored[:-6] + ("A" if stored[-6] != "A" else "B") + stored[-5:]
    with pytest.raises(SeedKeyError):
        cipher(app).decrypt(tampered)  # authenticated: a changed ciphertext is refused


def test_seeds_are_reencrypted_under_a_new_key_and_seeds_in_clear_get_encrypted(app, db):
    officer = make_staff(db, "compliance", app=app)
    legacy = make_staff(db, "admin", app=app)
    with db.transaction() as session:  # a seed from before encryption
        session.get(StaffUser, legacy.id).totp_seed_encrypted = legacy.totp_secret
    old_key = app.extensions["settings"].totp_encryption_key
    new_key = generate_key()
    rotating = SeedCipher([new_key, old_key])
    with db.transaction() as session:
        assert reencrypt_seeds(session, rotating, only_clear=True) == 1
    with db.transaction() as session:
        assert reencrypt_seeds(session, rotating) == 2
    with db.transaction(write=False) as session:
        users = {u.id: u for u in session.execute(select(StaffUser)).scalars()}
    only_new = SeedCipher([new_key])
    assert only_new.decrypt(users[officer.id].totp_seed_encrypted) == officer.totp_secret
    assert only_new.decrypt(users[legacy.id].totp_seed_encrypted) == legacy.totp_secret


# --- sessions ----------------------------------------------------------------------------------


def test_sessions_end_when_idle_expired_or_disabled(app, db):
    officer = make_staff(db, "compliance", app=app)
    now = utcnow()
    with db.transaction() as session:
        user = session.get(StaffUser, officer.id)
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


def test_a_rotated_session_token_replaces_the_old_one(app, db):
    officer = make_staff(db, "viewer", app=app)
    now = utcnow()
    with db.transaction() as session:
        row, old = start_session(session, session.get(StaffUser, officer.id), now, None)
        new = rotate_session(row)
        session.flush()
        assert new != old
        assert load_session(session, old, now, idle=IDLE, lifetime=LIFETIME) is None
        assert load_session(session, new, now, idle=IDLE, lifetime=LIFETIME)


def test_revoking_credentials_stops_them_and_ends_sessions(app, db):
    officer = make_staff(db, "compliance", app=app)
    now = utcnow()
    with db.transaction() as session:
        user = session.get(StaffUser, officer.id)
        _, token = start_session(session, user, now, None)
        revoke_credentials(session, user)
        assert load_session(session, token, now, idle=IDLE, lifetime=LIFETIME) is None
        assert user.totp_seed_encrypted is None
        assert check_password(session, user.email, officer.password, now).reason == "not enrolled"
