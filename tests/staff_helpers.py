"""Staff accounts and signed-in test clients for the console's tests."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyotp
from flask.testing import FlaskClient

from app.access.accounts import create_account
from app.store.db import utcnow


@dataclass
class Staff:
    email: str
    password: str
    totp_secret: str | None
    role: str
    id: int


def make_staff(db, role: str, email: str | None = None) -> Staff:
    """A staff account created the way `flask --app app staff create` does."""
    with db.transaction() as session:
        account = create_account(session, email or f"{role}@example.com", role, utcnow())
        return Staff(
            account.user.email, account.password, account.totp_secret, role, account.user.id
        )


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
    staff = make_staff(db, role, email)
    client = https_client(app)
    response = sign_in(client, staff)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client, staff


def page_csrf(client, path: str) -> str:
    return csrf_token(client.get(path).get_data(as_text=True))
