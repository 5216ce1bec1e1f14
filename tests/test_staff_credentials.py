"""Credentials staff set for themselves (app.staff.credentials): enrolment links, password change,
a new second factor. Nobody but the owner ever sees a password or a seed (finding 7)."""

from __future__ import annotations

import html as html_lib
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from sqlalchemy import select, update

from app.store.db import utcnow
from app.store.models import StaffEnrolment, StaffUser
from tests.staff_helpers import (
    csrf_token,
    https_client,
    page_csrf,
    sign_in,
    signed_in_client,
)

NEW_PASSWORD = "walrus umbrella harmonica"


def create_by_admin(app, db, email="new@example.com", role="compliance") -> str:
    """An admin creates the account in the console; returns the enrolment link's path."""
    admin, _ = signed_in_client(app, db, "admin")
    page = admin.post(
        "/staff/admin/staff",
        data={"email": email, "role": role, "csrf_token": page_csrf(admin, "/staff/admin/staff")},
    ).get_data(as_text=True)
    return urlsplit(re.search(r'id="enrol-link">([^<]+)</code>', page).group(1)).path


def seed_on(page: str) -> str:
    uri = html_lib.unescape(re.search(r'id="otpauth-uri" href="([^"]+)"', page).group(1))
    assert uri.startswith("otpauth://totp/")
    return parse_qs(urlsplit(uri).query)["secret"][0]


def enrol(client, path, password=NEW_PASSWORD, confirmation=None, code=None):
    page = client.get(path).get_data(as_text=True)
    seed = seed_on(page) if "otpauth-uri" in page else None
    data = {
        "password": password,
        "confirmation": password if confirmation is None else confirmation,
        "csrf_token": csrf_token(page),
    }
    if seed:
        data["code"] = code or pyotp.TOTP(seed).now()
    return client.post(path, data=data), seed


def test_a_new_compliance_officer_enrols_from_the_link_and_signs_in(app, db):
    path = create_by_admin(app, db)
    client = https_client(app)
    page = client.get(path).get_data(as_text=True)
    assert "<svg" in page and "new@example.com" in page  # the QR code, for its owner only
    response, seed = enrol(client, path)
    assert response.status_code == 302 and response.location == "/staff/login"
    with db.transaction(write=False) as session:
        user = session.execute(
            select(StaffUser).where(StaffUser.email == "new@example.com")
        ).scalar_one()
        assert user.enrolled_at is not None
        assert seed not in user.totp_seed_encrypted
        link = session.execute(select(StaffEnrolment)).scalar_one()
        assert link.outcome == "used" and link.pending_seed_encrypted is None
    officer = type("Officer", (), {})()
    officer.email, officer.password, officer.totp_secret = "new@example.com", NEW_PASSWORD, seed
    signed = https_client(app)
    # The enrolment's own code is used up; the next one signs in.
    assert sign_in(signed, officer, code=later_code(seed)).status_code == 302
    assert signed.get("/staff/review").status_code == 200


def password_step(app, email: str, password: str) -> int:
    client = https_client(app)
    return client.post(
        "/staff/login",
        data={
            "email": email,
            "password": password,
            "csrf_token": page_csrf(client, "/staff/login"),
        },
    ).status_code


def test_a_link_works_once(app, db):
    path = create_by_admin(app, db)
    client = https_client(app)
    assert enrol(client, path)[0].status_code == 302
    assert client.get(path).status_code == 404
    assert "not valid" in client.get(path).get_data(as_text=True)


def test_a_link_expires(app, db):
    path = create_by_admin(app, db)
    with db.transaction() as session:
        session.execute(update(StaffEnrolment).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert https_client(app).get(path).status_code == 404


def test_a_new_link_ends_the_old_one(app, db):
    path = create_by_admin(app, db, role="viewer")
    admin, _ = signed_in_client(app, db, "admin", "second-admin@example.com")
    with db.transaction(write=False) as session:
        user_id = session.execute(
            select(StaffUser.id).where(StaffUser.email == "new@example.com")
        ).scalar_one()
    admin.post(
        f"/staff/admin/staff/{user_id}",
        data={f"u{user_id}-action": "reset", "csrf_token": page_csrf(admin, "/staff/admin/staff")},
    )
    assert https_client(app).get(path).status_code == 404


@pytest.mark.parametrize(
    ("password", "confirmation", "message"),
    [
        ("short pass", None, "at least 12 characters"),
        ("password1234", None, "too easy to guess"),  # in every breach list
        ("qwertyuiop123", None, "too easy to guess"),  # a keyboard walk
        ("Password12345", None, "too easy to guess"),
        (NEW_PASSWORD, NEW_PASSWORD + "!", "differ"),
    ],
)
def test_weak_or_mistyped_passwords_are_refused(app, db, password, confirmation, message):
    path = create_by_admin(app, db)
    client = https_client(app)
    response, _ = enrol(client, path, password, confirmation)
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    with db.transaction(write=False) as session:
        assert (
            session.execute(
                select(StaffUser.enrolled_at).where(StaffUser.email == "new@example.com")
            ).scalar_one()
            is None
        )
    assert enrol(client, path)[0].status_code == 302  # the link still works after a refusal


def test_a_wrong_code_does_not_enrol_and_changes_nothing(app, db):
    path = create_by_admin(app, db)
    with db.transaction(write=False) as session:
        before = session.execute(
            select(StaffUser.password_hash).where(StaffUser.email == "new@example.com")
        ).scalar_one()
    client = https_client(app)
    response, _ = enrol(client, path, code="000000")
    assert response.status_code == 400 and "does not match" in response.get_data(as_text=True)
    with db.transaction(write=False) as session:
        user = session.execute(
            select(StaffUser).where(StaffUser.email == "new@example.com")
        ).scalar_one()
    assert user.password_hash == before and user.password_changed_at is None


def test_the_offered_seed_waits_encrypted(app, db):
    path = create_by_admin(app, db)
    seed = seed_on(https_client(app).get(path).get_data(as_text=True))
    with db.transaction(write=False) as session:
        pending = session.execute(select(StaffEnrolment.pending_seed_encrypted)).scalar_one()
    assert seed not in pending and pending.startswith("gAAAAA")


def test_an_admin_reset_stops_the_old_credentials_and_sessions(app, db):
    officer_client, officer = signed_in_client(app, db, "compliance")
    admin, _ = signed_in_client(app, db, "admin")
    page = admin.post(
        f"/staff/admin/staff/{officer.id}",
        data={
            f"u{officer.id}-action": "reset",
            "csrf_token": page_csrf(admin, "/staff/admin/staff"),
        },
    ).get_data(as_text=True)
    assert "/staff/enrol/" in page and officer.password not in page and "otpauth" not in page
    assert officer_client.get("/staff/").status_code == 302
    assert password_step(app, officer.email, officer.password) == 401


# --- the signed-in staff member's own credentials ----------------------------------------------


def change_password(client, current, new, code=None, confirmation=None):
    data = {
        "current_password": current,
        "new_password": new,
        "confirmation": new if confirmation is None else confirmation,
        "csrf_token": page_csrf(client, "/staff/account"),
    }
    if code:
        data["code"] = code
    return client.post("/staff/account/password", data=data)


def later_code(secret: str) -> str:
    """A code of the next time step (the current one was used to sign in)."""
    totp = pyotp.TOTP(secret)
    return totp.at(utcnow() + timedelta(seconds=totp.interval))


def forget_used_codes(db, staff_id: int) -> None:
    """Let the current code work again (a test signs in and re-authenticates within 30 s)."""
    with db.transaction() as session:
        session.get(StaffUser, staff_id).totp_last_step = None


def test_staff_change_their_password_after_giving_the_current_one(app, db):
    client, officer = signed_in_client(app, db, "compliance")
    other = https_client(app)
    forget_used_codes(db, officer.id)
    assert sign_in(other, officer).status_code == 302
    before = client.get_cookie("scg_session").value
    code = pyotp.TOTP(officer.totp_secret)

    forget_used_codes(db, officer.id)
    refused = change_password(client, "not my password", NEW_PASSWORD, code=code.now())
    assert "not right" in client.get(refused.location).get_data(as_text=True)
    forget_used_codes(db, officer.id)
    no_code = change_password(client, officer.password, NEW_PASSWORD)
    assert "not right" in client.get(no_code.location).get_data(as_text=True)
    forget_used_codes(db, officer.id)
    weak = change_password(client, officer.password, "password1234", code=code.now())
    assert "too easy to guess" in client.get(weak.location).get_data(as_text=True)

    forget_used_codes(db, officer.id)
    done = change_password(client, officer.password, NEW_PASSWORD, code=code.now())
    assert "password is changed" in client.get(done.location).get_data(as_text=True)
    assert client.get_cookie("scg_session").value != before  # rotated, still signed in
    assert client.get("/staff/review").status_code == 200
    assert other.get("/staff/").status_code == 302  # the other session ended
    old_password = officer.password
    officer.password = NEW_PASSWORD
    forget_used_codes(db, officer.id)
    assert sign_in(https_client(app), officer).status_code == 302
    assert password_step(app, officer.email, old_password) == 401


def test_staff_replace_their_second_factor_after_reauthenticating(app, db):
    client, officer = signed_in_client(app, db, "compliance")
    forget_used_codes(db, officer.id)
    response = client.post(
        "/staff/account/totp",
        data={
            "current_password": officer.password,
            "code": pyotp.TOTP(officer.totp_secret).now(),
            "csrf_token": page_csrf(client, "/staff/account"),
        },
    )
    assert response.location == "/staff/account/totp/new"
    page = client.get("/staff/account/totp/new").get_data(as_text=True)
    new_seed = seed_on(page)
    assert new_seed != officer.totp_secret
    confirmed = client.post(
        "/staff/account/totp/new",
        data={"code": pyotp.TOTP(new_seed).now(), "csrf_token": csrf_token(page)},
    )
    assert confirmed.location == "/staff/account"
    assert client.get("/staff/review").status_code == 200
    with db.transaction(write=False) as session:
        stored = session.get(StaffUser, officer.id).totp_seed_encrypted
    assert app.extensions["seed_cipher"].decrypt(stored) == new_seed
    old = https_client(app)
    forget_used_codes(db, officer.id)
    assert sign_in(old, officer, code=pyotp.TOTP(officer.totp_secret).now()).status_code == 401


def test_a_new_second_factor_needs_the_password_first(app, db):
    client, officer = signed_in_client(app, db, "compliance")
    response = client.post(
        "/staff/account/totp",
        data={
            "current_password": "wrong password",
            "code": "123456",
            "csrf_token": page_csrf(client, "/staff/account"),
        },
    )
    assert response.location == "/staff/account"
    assert client.get("/staff/account/totp/new").status_code == 404
