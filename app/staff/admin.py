"""Admin pages: staff accounts, API tokens, and the access audit log."""

from __future__ import annotations

from datetime import timedelta

from flask import flash, g, redirect, render_template, request, url_for
from sqlalchemy import select

from app import context
from app.access import audit
from app.access.accounts import (
    AccountError,
    count_admins,
    create_account,
    end_all_sessions,
    needs_second_factor,
    revoke_credentials,
)
from app.access.enrolment import enrol_url, issue_link
from app.access.tokens import TokenError, create_api_token, scopes_of
from app.staff import audit_request, bp, requires
from app.staff.forms import PlainForm, StaffCreateForm, StaffUpdateForm, TokenCreateForm
from app.store.db import utcnow
from app.store.models import (
    ADMIN,
    ENROL_CREDENTIALS,
    ROLES,
    VIEWER,
    ApiToken,
    StaffAuditEntry,
    StaffUser,
)

AUDIT_PAGE = 100


def _issue_enrolment(session, user: StaffUser, now) -> str:
    """A fresh single-use link for `user`; the admin passes it on and never sees credentials."""
    hours = context.settings().staff_enrol_hours
    token = issue_link(
        session,
        user,
        purpose=ENROL_CREDENTIALS,
        now=now,
        hours=hours,
        created_by=g.staff.email,
    )
    audit_request(
        session,
        audit.ENROL_LINK,
        at=now,
        target=user.email,
        query={"expires_in_hours": hours},
    )
    return token


def _link_page(user: StaffUser, token: str, now, title: str):
    return render_template(
        "staff/enrol_link.html",
        title=title,
        email=user.email,
        role=user.role,
        needs_code=needs_second_factor(user),
        link=enrol_url(context.settings().public_base_url or request.host_url, token),
        expires_at=now + timedelta(hours=context.settings().staff_enrol_hours),
    )


@bp.route("/admin/staff", methods=["GET", "POST"])
@requires(ADMIN)
def staff_accounts():
    """List accounts; create one (its owner sets their credentials through the link shown)."""
    form = StaffCreateForm()
    if form.validate_on_submit():
        now = utcnow()
        try:
            with context.database().transaction() as session:
                user = create_account(session, form.email.data, form.role.data, now)
                audit_request(
                    session,
                    audit.STAFF_CREATE,
                    at=now,
                    target=user.email,
                    query={"role": user.role},
                )
                token = _issue_enrolment(session, user, now)
        except AccountError as error:
            flash(str(error), "error")
        else:
            return _link_page(user, token, now, "Account created")
    with context.database().transaction(write=False) as session:
        users = list(session.execute(select(StaffUser).order_by(StaffUser.email)).scalars())
    return render_template(
        "staff/admin_staff.html",
        form=form,
        users=users,
        update_forms={u.id: StaffUpdateForm(prefix=f"u{u.id}") for u in users},
        now=utcnow(),
    )


@bp.post("/admin/staff/<int:staff_id>")
@requires(ADMIN)
def staff_update(staff_id: int):
    """Change a role, disable or enable an account, or reset it (a new enrolment link)."""
    form = StaffUpdateForm(prefix=f"u{staff_id}")
    if not form.validate_on_submit():
        flash("Choose a change.", "error")
        return redirect(url_for("staff.staff_accounts"))
    action = form.action.data
    now = utcnow()
    token = None
    with context.database().transaction() as session:
        user = session.get(StaffUser, staff_id, with_for_update=True)
        if user is None:
            flash("No such account.", "error")
            return redirect(url_for("staff.staff_accounts"))
        losing_admin = user.role == ADMIN and (
            action == "disable" or (action.startswith("role:") and action != "role:admin")
        )
        if losing_admin and user.disabled_at is None and count_admins(session) <= 1:
            flash("The last admin cannot be demoted or disabled.", "error")
            return redirect(url_for("staff.staff_accounts"))
        if action.startswith("role:") and action[5:] in ROLES:
            user.role = action[5:]
            end_all_sessions(session, user.id)  # the new role applies from the next sign-in
            if user.role != VIEWER and user.totp_seed_encrypted is None:
                revoke_credentials(session, user)  # the new role needs a second factor
                token = _issue_enrolment(session, user, now)
        elif action == "disable":
            user.disabled_at = now
            end_all_sessions(session, user.id)
        elif action == "enable":
            user.disabled_at = None
        elif action == "reset":
            revoke_credentials(session, user)
            token = _issue_enrolment(session, user, now)
        audit_request(
            session, audit.STAFF_UPDATE, at=now, target=user.email, query={"change": action}
        )
    if token is not None:
        return _link_page(user, token, now, "Enrolment link")
    flash(f"{user.email}: done ({action}).", "info")
    return redirect(url_for("staff.staff_accounts"))


@bp.route("/admin/tokens", methods=["GET", "POST"])
@requires(ADMIN)
def api_tokens():
    """API tokens: create one (shown once, with its scopes and expiry) or see which exist."""
    form = TokenCreateForm()
    new_token = None
    if form.validate_on_submit():
        now = utcnow()
        days = float(form.expires_days.data) if form.expires_days.data else None
        try:
            with context.database().transaction() as session:
                row, new_token = create_api_token(
                    session,
                    form.name.data,
                    form.scopes.data,
                    expires_in_days=days,
                    created_by=g.staff.email,
                    now=now,
                )
                audit_request(
                    session,
                    audit.API_TOKEN_CREATE,
                    at=now,
                    target=f"token {row.id} ({row.name})",
                    query={"scopes": row.scopes, "expires_in_days": days},
                )
        except TokenError as error:
            flash(str(error), "error")
    elif form.is_submitted():
        for errors in form.errors.values():
            for error in errors:
                flash(str(error), "error")
    with context.database().transaction(write=False) as session:
        tokens = list(session.execute(select(ApiToken).order_by(ApiToken.id.desc())).scalars())
    return render_template(
        "staff/admin_tokens.html",
        form=TokenCreateForm(formdata=None),
        tokens=tokens,
        scopes_of=scopes_of,
        new_token=new_token,
        revoke_form=PlainForm(),
        now=utcnow(),
    )


@bp.post("/admin/tokens/<int:token_id>/revoke")
@requires(ADMIN)
def api_token_revoke(token_id: int):
    form = PlainForm()
    if form.validate_on_submit():
        now = utcnow()
        with context.database().transaction() as session:
            token = session.get(ApiToken, token_id)
            if token is not None and token.revoked_at is None:
                token.revoked_at = now
                audit_request(
                    session,
                    audit.API_TOKEN_REVOKE,
                    at=now,
                    target=f"token {token.id} ({token.name})",
                )
                flash(f"Token {token.name} revoked.", "info")
    return redirect(url_for("staff.api_tokens"))


@bp.get("/admin/audit")
@requires(ADMIN)
def audit_log():
    """The access audit log, newest first, a page at a time."""
    before = request.args.get("before", "")
    query = select(StaffAuditEntry).order_by(StaffAuditEntry.id.desc()).limit(AUDIT_PAGE + 1)
    if before.isdigit():
        query = query.where(StaffAuditEntry.id < int(before))
    with context.database().transaction() as session:
        entries = list(session.execute(query).scalars())
        audit_request(
            session,
            audit.AUDIT_VIEW,
            target="audit log",
            row_count=min(len(entries), AUDIT_PAGE),
        )
    next_cursor = entries[AUDIT_PAGE - 1].id if len(entries) > AUDIT_PAGE else None
    return render_template(
        "staff/audit.html", entries=entries[:AUDIT_PAGE], next_cursor=next_cursor
    )
