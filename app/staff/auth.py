"""Signing in (password, then a TOTP code where the role needs one) and out.

Each step that grants more (the password, then the second factor) gives the
browser a new session token and a new cookie, so a token fixed or seen before
the step is worthless after it. Failures slow further attempts on that account
(`app.access.throttle`); they never lock it.
"""

from __future__ import annotations

import math

from flask import flash, g, redirect, render_template, request, session, url_for

from app import context
from app.access import audit
from app.access.accounts import (
    check_password,
    check_totp,
    normalize_email,
    rotate_session,
    start_session,
)
from app.staff import SESSION_KEY, audit_request, bp, checked_next, safe_next
from app.staff.forms import CodeForm, LoginForm, PlainForm
from app.store.db import utcnow
from app.store.models import StaffSession, StaffUser

SIGN_IN_FAILED = "E-mail or password is incorrect, or the account is disabled or not set up yet."
CODE_FAILURES_PER_SESSION = 5


def throttled(email: str, template: str, **page):
    """429 with the wait, when this account may not be tried again from here yet."""
    wait = context.signin_throttle().wait_seconds(email, request.remote_addr)
    if not wait:
        return None
    with context.database().transaction() as db_session:
        audit_request(db_session, audit.LOGIN_FAILED, staff_email=email[:254], target="throttled")
    seconds = math.ceil(wait)
    flash(f"Too many failed attempts. Try again in {seconds} seconds.", "error")
    return render_template(template, **page), 429, {"Retry-After": str(seconds)}


def begin_session(token: str, next_url: str) -> None:
    """A fresh cookie for a fresh token: nothing from before the step carries over."""
    session.clear()
    session[SESSION_KEY] = token
    session["next"] = next_url


@bp.route("/login", methods=["GET", "POST"])
def login():
    """E-mail and password. A wrong answer never says which part was wrong."""
    form = LoginForm()
    next_url = checked_next(request.args.get("next"))
    if not form.validate_on_submit():
        return render_template("staff/login.html", form=form, next_url=next_url), (
            400 if request.method == "POST" else 200
        )
    email = normalize_email(form.email.data)
    wait_page = throttled(email, "staff/login.html", form=form, next_url=next_url)
    if wait_page is not None:
        return wait_page
    now = utcnow()
    throttle = context.signin_throttle()
    with context.database().transaction() as db_session:
        outcome = check_password(db_session, email, form.password.data, now)
        if outcome.user is None:
            audit_request(
                db_session,
                audit.LOGIN_FAILED,
                at=now,
                staff_email=email[:254],
                target=outcome.reason,
            )
            token = None
        else:
            row, token = start_session(db_session, outcome.user, now, request.remote_addr)
            if row.second_factor_done:
                audit_request(db_session, audit.LOGIN, staff=outcome.user, at=now)
    if token is None:
        throttle.failed(email, request.remote_addr)
        flash(SIGN_IN_FAILED, "error")
        return render_template("staff/login.html", form=form, next_url=next_url), 401
    begin_session(token, next_url)
    if not row.second_factor_done:
        return redirect(url_for("staff.login_code"))
    throttle.succeeded(email, request.remote_addr)
    return redirect(session.pop("next", next_url))


@bp.route("/login/code", methods=["GET", "POST"])
def login_code():
    """The second factor: a TOTP code from the staff member's authenticator app."""
    if g.staff_session.second_factor_done:
        return redirect(url_for("staff.dashboard"))
    form = CodeForm()
    if not form.validate_on_submit():
        return render_template("staff/code.html", form=form), (
            400 if request.method == "POST" else 200
        )
    wait_page = throttled(g.staff.email, "staff/code.html", form=form)
    if wait_page is not None:
        return wait_page
    now = utcnow()
    throttle = context.signin_throttle()
    failures = session.get("code_failures", 0)
    token = None
    with context.database().transaction() as db_session:
        user = db_session.get(StaffUser, g.staff.id, with_for_update=True)
        row = db_session.get(StaffSession, g.staff_session.id)
        passed = check_totp(user, form.code.data, now, context.seed_cipher())
        if passed:
            row.second_factor_done = True
            token = rotate_session(row)
            audit_request(db_session, audit.LOGIN, staff=user, at=now)
        else:
            audit_request(
                db_session, audit.LOGIN_FAILED, staff=user, at=now, target="second factor"
            )
            failures += 1
            if failures >= CODE_FAILURES_PER_SESSION:
                row.ended_at = now  # start again from the password
    if not passed:
        throttle.failed(g.staff.email, request.remote_addr)
        if row.ended_at is not None:
            session.clear()
            flash(SIGN_IN_FAILED, "error")
            return redirect(url_for("staff.login"))
        session["code_failures"] = failures
        flash("That code is not valid (or was already used). Try the next one.", "error")
        return render_template("staff/code.html", form=form), 401
    throttle.succeeded(g.staff.email, request.remote_addr)
    next_url = safe_next(session.get("next")) or url_for("staff.dashboard")
    begin_session(token, next_url)
    return redirect(session.pop("next"))


@bp.post("/logout")
def logout():
    """End the server-side session and drop the cookie."""
    form = PlainForm()
    if form.validate_on_submit():
        now = utcnow()
        with context.database().transaction() as db_session:
            row = db_session.get(StaffSession, g.staff_session.id)
            row.ended_at = now
            audit_request(db_session, audit.LOGOUT, at=now)
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("staff.login"))
