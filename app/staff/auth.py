"""Signing in (password, then a TOTP code where the role needs one) and out."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, session, url_for

from app import context
from app.access import audit
from app.access.accounts import check_password, check_totp, start_session
from app.staff import SESSION_KEY, audit_request, bp, safe_next
from app.staff.forms import CodeForm, LoginForm, PlainForm
from app.store.db import utcnow
from app.store.models import StaffSession, StaffUser

SIGN_IN_FAILED = "E-mail or password is incorrect, or the account is locked or disabled."


@bp.route("/login", methods=["GET", "POST"])
def login():
    """E-mail and password. A wrong answer never says which part was wrong."""
    form = LoginForm()
    next_url = safe_next(request.args.get("next"))
    if not form.validate_on_submit():
        return render_template("staff/login.html", form=form, next_url=next_url), (
            400 if request.method == "POST" else 200
        )
    now = utcnow()
    with context.database().transaction() as db_session:
        outcome = check_password(db_session, form.email.data, form.password.data, now)
        if outcome.user is None:
            audit_request(
                db_session,
                audit.LOGIN_FAILED,
                at=now,
                staff_email=form.email.data.strip().lower()[:254],
                target=outcome.reason,
            )
            token = None
        else:
            row, token = start_session(db_session, outcome.user, now, request.remote_addr)
            if row.second_factor_done:
                audit_request(db_session, audit.LOGIN, staff=outcome.user, at=now)
    if token is None:
        flash(SIGN_IN_FAILED, "error")
        return render_template("staff/login.html", form=form, next_url=next_url), 401
    session.clear()  # a fresh cookie for a fresh session: no fixation
    session[SESSION_KEY] = token
    session["next"] = next_url
    if not row.second_factor_done:
        return redirect(url_for("staff.login_code"))
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
    now = utcnow()
    with context.database().transaction() as db_session:
        user = db_session.get(StaffUser, g.staff.id, with_for_update=True)
        row = db_session.get(StaffSession, g.staff_session.id)
        passed = check_totp(user, form.code.data, now)
        if passed:
            row.second_factor_done = True
            audit_request(db_session, audit.LOGIN, staff=user, at=now)
        else:
            audit_request(
                db_session, audit.LOGIN_FAILED, staff=user, at=now, target="second factor"
            )
            if user.locked_until is not None and user.locked_until > now:
                row.ended_at = now
    if not passed:
        flash("That code is not valid (or was already used). Try the next one.", "error")
        if row.ended_at is not None:
            session.clear()
            flash(SIGN_IN_FAILED, "error")
            return redirect(url_for("staff.login"))
        return render_template("staff/code.html", form=form), 401
    return redirect(safe_next(session.pop("next", None)))


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
