"""Signing in to the staff console: password, TOTP, lockout, rate limit, cookies, CSRF, headers."""

from __future__ import annotations

import time
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import func, select, update

from app.store.db import utcnow
from app.store.models import ApiToken, StaffAuditEntry, StaffSession
from tests.conftest import make_test_app
from tests.staff_helpers import (
    csrf_token,
    https_client,
    make_staff,
    page_csrf,
    sign_in,
    signed_in_client,
)


def test_anonymous_browsers_are_sent_to_sign_in(client):
    response = client.get("/staff/events?phone=1")
    assert response.status_code == 302
    assert response.location.startswith("/staff/login?next=")


def test_viewer_signs_in_with_a_password(app, db):
    client, _ = signed_in_client(app, db, "viewer")
    assert client.get("/staff/").status_code == 200


def test_compliance_needs_the_totp_code_before_any_page(app, db):
    officer = make_staff(db, "compliance", app=app)
    client = https_client(app)
    page = client.get("/staff/login")
    response = client.post(
        "/staff/login",
        data={
            "email": officer.email,
            "password": officer.password,
            "csrf_token": csrf_token(page.get_data(as_text=True)),
        },
    )
    assert response.location == "/staff/login/code"
    assert client.get("/staff/").location == "/staff/login/code"  # no pages yet
    assert client.get("/staff/review").location == "/staff/login/code"
    response = client.post(
        "/staff/login/code",
        data={"code": "000000", "csrf_token": page_csrf(client, "/staff/login/code")},
    )
    assert response.status_code == 401
    response = client.post(
        "/staff/login/code",
        data={
            "code": pyotp.TOTP(officer.totp_secret).now(),
            "csrf_token": page_csrf(client, "/staff/login/code"),
        },
    )
    assert response.status_code == 302
    assert client.get("/staff/review").status_code == 200


def test_wrong_password_says_nothing_about_which_part_was_wrong(app, db):
    officer = make_staff(db, "compliance", app=app)
    client = https_client(app)
    for email in (officer.email, "nobody@example.com"):
        response = client.post(
            "/staff/login",
            data={
                "email": email,
                "password": "wrong",
                "csrf_token": page_csrf(client, "/staff/login"),
            },
        )
        assert response.status_code == 401
        assert "E-mail or password is incorrect" in response.get_data(as_text=True)
        assert response.get_data(as_text=True).count("not set up yet") == 1


def attempt(client, email, password, address):
    return client.post(
        "/staff/login",
        data={
            "email": email,
            "password": password,
            "csrf_token": page_csrf(client, "/staff/login"),
        },
        environ_base={"REMOTE_ADDR": address},
    )


def test_an_attacker_cannot_lock_a_colleague_out(database_url, tmp_path):
    """Finding 6: five wrong passwords locked any account for 15 minutes, from anywhere."""
    app = make_test_app(database_url, tmp_path, staff_login_rate_limit="100 per minute")
    db = app.extensions["db"]
    officer = make_staff(db, "viewer", app=app)
    attacker = https_client(app)
    codes = [attempt(attacker, officer.email, "wrong", "203.0.113.9").status_code for _ in range(8)]
    assert codes[:3] == [401, 401, 401]  # then each further try must wait, growing
    assert set(codes[3:]) == {401, 429} and codes[-1] == 429
    wait = attempt(attacker, officer.email, officer.password, "203.0.113.9")
    assert wait.status_code == 429 and 1 <= int(wait.headers["Retry-After"]) <= 4
    assert "Try again in" in wait.get_data(as_text=True)
    # The owner, elsewhere, signs in at once.
    owner = https_client(app)
    response = attempt(owner, officer.email, officer.password, "198.51.100.7")
    assert response.status_code == 302 and owner.get("/staff/").status_code == 200
    with db.transaction(write=False) as session:
        reasons = set(
            session.execute(
                select(StaffAuditEntry.target).where(StaffAuditEntry.action == "login_failed")
            ).scalars()
        )
    assert reasons == {"invalid", "throttled"}
    db.dispose()


def test_guessing_from_many_addresses_slows_but_never_locks(database_url, tmp_path):
    app = make_test_app(database_url, tmp_path, staff_login_rate_limit="100 per minute")
    db = app.extensions["db"]
    officer = make_staff(db, "viewer", app=app)
    client = https_client(app)
    for i in range(11):  # the 11th failure on the account, from anywhere, earns a 2 s wait
        assert attempt(client, officer.email, "wrong", f"203.0.113.{i}").status_code == 401
    owner = https_client(app)
    refused = attempt(owner, officer.email, officer.password, "198.51.100.7")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) <= 2
    time.sleep(2.1)
    assert attempt(owner, officer.email, officer.password, "198.51.100.7").status_code == 302
    db.dispose()


def test_unknown_accounts_are_throttled_exactly_like_real_ones(database_url, tmp_path):
    app = make_test_app(database_url, tmp_path, staff_login_rate_limit="100 per minute")
    officer = make_staff(app.extensions["db"], "viewer", app=app)
    client = https_client(app)
    answers = {}
    for email in (officer.email, "nobody@example.com"):
        answers[email] = [
            attempt(client, email, "wrong", "203.0.113.9").status_code for _ in range(5)
        ]
    assert answers[officer.email] == answers["nobody@example.com"]
    app.extensions["db"].dispose()


def test_sign_in_is_rate_limited_per_address(database_url, tmp_path):
    app = make_test_app(database_url, tmp_path, staff_login_rate_limit="3 per minute")
    client = https_client(app)
    token = page_csrf(client, "/staff/login")
    codes = [
        client.post(
            "/staff/login", data={"email": "x@example.com", "password": "y", "csrf_token": token}
        ).status_code
        for _ in range(4)
    ]
    assert codes == [401, 401, 401, 429]
    app.extensions["db"].dispose()


def test_forms_need_a_csrf_token(app, db):
    officer = make_staff(db, "viewer", app=app)
    client = https_client(app)
    response = client.post(
        "/staff/login", data={"email": officer.email, "password": officer.password}
    )
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)


def test_session_cookie_is_secure_httponly_and_same_site(app, db):
    officer = make_staff(db, "viewer", app=app)
    client = https_client(app)
    response = sign_in(client, officer)
    cookie = response.headers["Set-Cookie"]
    assert "scg_session=" in cookie
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_logout_ends_the_server_side_session(app, db):
    client, _ = signed_in_client(app, db, "viewer")
    stolen = client.get_cookie("scg_session").value
    response = client.post("/staff/logout", data={"csrf_token": page_csrf(client, "/staff/")})
    assert response.location == "/staff/login"
    assert client.get("/staff/").status_code == 302
    thief = https_client(app)
    thief.set_cookie("scg_session", stolen)
    assert thief.get("/staff/").status_code == 302  # the old cookie no longer works


def test_idle_sessions_time_out(app, db):
    client, _ = signed_in_client(app, db, "viewer")
    with db.transaction() as session:
        session.execute(update(StaffSession).values(last_seen_at=utcnow() - timedelta(minutes=16)))
    assert client.get("/staff/").status_code == 302


def test_after_sign_in_only_console_paths_are_followed(app, db):
    viewer = make_staff(db, "viewer", app=app)
    client = https_client(app)
    token = page_csrf(client, "/staff/login")
    response = client.post(
        "/staff/login?next=/staff/events?intent=help",
        data={"email": viewer.email, "password": viewer.password, "csrf_token": token},
    )
    assert response.location == "/staff/events?intent=help"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example.com/staff/",
        "//evil.example.com/staff/",
        "/elsewhere",
        "/staff/%0d%0aSet-Cookie:x=1",
        "/staff/\r\nLocation: https://evil.example.com",
        "/staff/\\evil.example.com",
        "/staff/../elsewhere",
        "/staff/" + "a" * 3000,
    ],
)
def test_a_bad_next_is_a_400_not_a_500_or_a_redirect(app, db, target):
    """Finding 10: a next with CR/LF gave a 500 after sign-in."""
    viewer = make_staff(db, "viewer", app=app)
    client = https_client(app)
    token = page_csrf(client, "/staff/login")
    target = target.replace("%0d%0a", "\r\n")
    response = client.post(
        "/staff/login",
        query_string={"next": target},
        data={"email": viewer.email, "password": viewer.password, "csrf_token": token},
    )
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert client.get("/staff/login", query_string={"next": target}).status_code == 400


def test_the_session_token_changes_at_each_privilege_step(app, db):
    """Finding 10: the session id was not rotated after the TOTP step (ASVS 3.2.1)."""
    officer = make_staff(db, "compliance", app=app)
    client = https_client(app)
    anonymous = client.get("/staff/login") and client.get_cookie("scg_session").value
    client.post(
        "/staff/login",
        data={
            "email": officer.email,
            "password": officer.password,
            "csrf_token": page_csrf(client, "/staff/login"),
        },
    )
    after_password = client.get_cookie("scg_session").value
    response = client.post(
        "/staff/login/code",
        data={
            "code": pyotp.TOTP(officer.totp_secret).now(),
            "csrf_token": page_csrf(client, "/staff/login/code"),
        },
    )
    assert response.status_code == 302
    after_code = client.get_cookie("scg_session").value
    assert len({anonymous, after_password, after_code}) == 3
    assert client.get("/staff/review").status_code == 200
    # A cookie captured between the steps (or fixed before them) opens nothing afterwards.
    thief = https_client(app)
    thief.set_cookie("scg_session", after_password)
    assert thief.get("/staff/review").status_code == 302
    with db.transaction(write=False) as session:
        assert session.execute(select(func.count()).select_from(StaffSession)).scalar_one() == 1


@pytest.mark.parametrize("path", ["/staff/login", "/staff/"])
def test_security_headers(app, db, path):
    client, _ = signed_in_client(app, db, "viewer")
    headers = client.get(path).headers
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Strict-Transport-Security"].startswith("max-age=")


def test_sign_ins_are_audited(app, db):
    signed_in_client(app, db, "compliance")
    with db.transaction(write=False) as session:
        actions = session.execute(select(StaffAuditEntry.action, StaffAuditEntry.staff_email)).all()
    assert ("login", "compliance@example.com") in actions


def test_the_webhooks_stay_csrf_exempt(client):
    from tests.twilio_helpers import send_text

    response, _ = send_text(client, "+14155550100", "HELP")
    assert response.status_code == 200


@pytest.mark.parametrize("token", ["", "not-a-token", "forged.token.value"])
def test_signed_in_posts_with_a_missing_or_wrong_csrf_token_are_rejected(app, db, token):
    client, _ = signed_in_client(app, db, "admin")
    data = {"name": "crm"} | ({"csrf_token": token} if token else {})
    response = client.post("/staff/admin/tokens", data=data)
    assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)
    other, _ = signed_in_client(app, db, "compliance", "other@example.com")
    stolen = page_csrf(other, "/staff/")  # another session's valid token is no good either
    response = client.post("/staff/admin/tokens", data={"name": "crm", "csrf_token": stolen})
    assert response.status_code == 400
    with db.transaction(write=False) as session:
        assert session.execute(select(ApiToken)).first() is None
