"""Staff accounts and signed-in test clients for the console's tests."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyotp
from flask import current_app
from flask.testing import FlaskClient

from app.access.accounts import (
    create_account,
    needs_second_factor,
    set_password,
    set_second_factor,
)
from app.store.db import utcnow


@dataclass
class Staff:
    email: str
    password: str
    totp_secret: str | None
    role: str
    id: int


STAFF_PASSWORD = "quokka marmalade zeppelin"


def make_staff(db, role: str, email: str | None = None, app=None) -> Staff:
    """A staff account, created and enrolled (the owner's password and, where the role needs
    one, a confirmed TOTP seed), as `staff create` and the enrolment link make it."""
    cipher = (app or current_app).extensions["seed_cipher"]
    now = utcnow()
    with db.transaction() as session:
        user = create_account(session, email or f"{role}@example.com", role, now)
        set_password(user, STAFF_PASSWORD, now)
        seed = pyotp.random_base32() if needs_second_factor(user) else None
        if seed:
            set_second_factor(user, seed, cipher, now, None)
        user.enrolled_at = now
        return Staff(user.email, STAFF_PASSWORD, seed, role, user.id)


class HttpsClient(FlaskClient):
    """A test client whose requests go to https://localhost, as a browser's would in production."""

    def open(self, *args, **kwargs):
        if not args or isinstance(args[0], str):
            kwargs.setdefault("base_url", "https://localhost")
        return super().open(*args, **kwargs)


def https_client(app):
    """A test client that speaks HTTPS, so the Secure session cookie is sent back.

    Like a browser on a same-origin page, it sends a Referer (Flask-WTF checks it on HTTPS).
    """
    client = HttpsClient(app, app.response_class, use_cookies=True)
    client.environ_base["HTTP_REFERER"] = "https://localhost/staff/"
    return client


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "no CSRF token on the page"
    return match.group(1)


def sign_in(client, staff: Staff, *, code: str | None = None):
    """Sign in with password (and the current TOTP code when the role needs one)."""
    page = client.get("/staff/login")
    response = client.post(
        "/staff/login",
        data={
            "email": staff.email,
            "password": staff.password,
            "csrf_token": csrf_token(page.get_data(as_text=True)),
        },
    )
    if staff.totp_secret is None:
        return response
    assert response.status_code == 302 and response.location.endswith("/staff/login/code")
    page = client.get("/staff/login/code")
    return client.post(
        "/staff/login/code",
        data={
            "code": code or pyotp.TOTP(staff.totp_secret).now(),
            "csrf_token": csrf_token(page.get_data(as_text=True)),
        },
    )


def signed_in_client(app, db, role: str, email: str | None = None):
    staff = make_staff(db, role, email, app=app)
    client = https_client(app)
    response = sign_in(client, staff)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client, staff


def page_csrf(client, path: str) -> str:
    return csrf_token(client.get(path).get_data(as_text=True))
