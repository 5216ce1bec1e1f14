"""Credentials staff set for themselves: enrolment by link, password change, a new second factor.

Nobody but the owner ever sees a password or a TOTP seed. An admin hands on a
single-use link (`app.access.enrolment`); its owner chooses a password and
scans a seed made for them. Changing either later needs the current password
(and code) again, and ends the owner's other sessions.
"""

from __future__ import annotations

from flask import abort, flash, g, redirect, render_template, request, session, url_for
from markupsafe import Markup

from app import context
from app.access import audit
from app.access.accounts import (
    check_password,
    check_totp,
    end_all_sessions,
    needs_second_factor,
    provisioning_uri,
    rotate_session,
    set_password,
)
from app.access.enrolment import (
    EnrolmentError,
    complete_credentials,
    complete_second_factor,
    find_open_link,
    issue_link,
    offered_seed,
)
from app.access.passwords import MIN_LENGTH, PasswordRejected
from app.staff import SESSION_KEY, audit_request, bp, requires
from app.staff.display import zone_names
from app.staff.forms import CodeForm, EnrolForm, PasswordChangeForm, ReauthForm, TimeZoneForm
from app.store.db import utcnow
from app.store.models import ENROL_TOTP, VIEWER, StaffSession, StaffUser

TOTP_LINK_KEY = "totp_enrolment"
TOTP_LINK_HOURS = 0.25  # the new seed waits this long for its confirming code


def qr_svg(uri: str) -> Markup:
    """The otpauth URI as an inline SVG QR code (no script, no external image).

    qrcode is imported here, when someone enrols a second factor, so a web worker that
    never shows a QR code does not carry it (and the imaging library it may pull in).
    """
    import qrcode
    import qrcode.image.svg

    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return Markup(image.to_string(encoding="unicode"))  # made by qrcode from our own URI


def _link_gone():
    return render_template(
        "staff/error.html",
        code=404,
        message="This enrolment link is not valid: it was used, replaced by a newer one, or "
        "has expired. Ask an admin for a new one.",
    ), 404


@bp.route("/enrol/<token>", methods=["GET", "POST"])
def enrol(token: str):
    """A new or reset account: its owner sets a password and enrols their second factor."""
    now = utcnow()
    form = EnrolForm()
    cipher = context.seed_cipher()
    with context.database().transaction() as db_session:
        found = find_open_link(db_session, token, now)
        if found is None:
            return _link_gone()
        email, role = found.user.email, found.user.role
        seed = offered_seed(found.link, cipher) if needs_second_factor(found.user) else None
        error = None
        done = False
        if form.validate_on_submit():
            try:
                complete_credentials(
                    db_session,
                    found,
                    password=form.password.data,
                    confirmation=form.confirmation.data,
                    code=form.code.data,
                    cipher=cipher,
                    now=now,
                )
            except EnrolmentError as rejected:
                error = str(rejected)
            else:
                audit_request(db_session, audit.ENROLLED, staff=found.user, at=now)
                done = True
    if done:
        session.clear()
        flash("Your credentials are set. Sign in with them.", "info")
        return redirect(url_for("staff.login"))
    if error:
        flash(error, "error")
    elif form.errors:
        flash("Fill in both passwords (and the code).", "error")
    uri = provisioning_uri(seed, email) if seed else None
    return render_template(
        "staff/enrol.html",
        form=form,
        email=email,
        role=role,
        uri=uri,
        qr=qr_svg(uri) if uri else None,
        min_length=MIN_LENGTH,
    ), (400 if request.method == "POST" else 200)


@bp.get("/account")
@requires(VIEWER)
def account():
    """The signed-in staff member's own credentials."""
    return render_template(
        "staff/account.html",
        password_form=PasswordChangeForm(formdata=None),
        reauth_form=ReauthForm(formdata=None),
        zone_form=TimeZoneForm(
            formdata=None, zones=zone_names(), data={"time_zone": g.staff.time_zone or ""}
        ),
        has_code=needs_second_factor(g.staff),
        min_length=MIN_LENGTH,
    )


@bp.post("/account/time-zone")
@requires(VIEWER)
def change_time_zone():
    """The zone the console shows the signed-in staff member's times in (no re-sign-in needed:
    it changes how times read, not what may be seen)."""
    form = TimeZoneForm(zones=zone_names())
    if not form.validate_on_submit():
        flash("Choose a time zone from the list.", "error")
        return redirect(url_for("staff.account"))
    zone = form.time_zone.data or None
    now = utcnow()
    with context.database().transaction() as db_session:
        user = db_session.get(StaffUser, g.staff.id)
        user.time_zone = zone
        audit_request(db_session, audit.TIME_ZONE_CHANGE, at=now, query={"time_zone": zone})
    flash(f"Times are now shown in {zone or 'UTC'}.", "info")
    return redirect(url_for("staff.account"))


def _reauthenticate(db_session, form: ReauthForm, now) -> StaffUser | None:
    """The current password (and code, where enrolled) again; failures are throttled."""
    throttle = context.signin_throttle()
    if throttle.wait_seconds(g.staff.email, request.remote_addr):
        flash("Too many failed attempts. Wait a little and try again.", "error")
        return None
    outcome = check_password(db_session, g.staff.email, form.current_password.data, now)
    user = db_session.get(StaffUser, g.staff.id, with_for_update=True)
    passed = outcome.user is not None and (
        not needs_second_factor(user)
        or check_totp(user, form.code.data or "", now, context.seed_cipher())
    )
    if not passed:
        throttle.failed(g.staff.email, request.remote_addr)
        audit_request(db_session, audit.LOGIN_FAILED, at=now, target="re-authentication")
        flash("The current password or the code is not right.", "error")
        return None
    return user


def _rotate_current_session(db_session) -> str:
    row = db_session.get(StaffSession, g.staff_session.id)
    return rotate_session(row)


def _keep_signed_in(token: str) -> None:
    session.clear()
    session[SESSION_KEY] = token


@bp.post("/account/password")
@requires(VIEWER)
def change_password():
    """A new password, after the current one (and code); other sessions end."""
    form = PasswordChangeForm()
    if not form.validate_on_submit():
        flash("Fill in every field.", "error")
        return redirect(url_for("staff.account"))
    if form.new_password.data != form.confirmation.data:
        flash("The two new passwords differ.", "error")
        return redirect(url_for("staff.account"))
    now = utcnow()
    token = None
    with context.database().transaction() as db_session:
        user = _reauthenticate(db_session, form, now)
        if user is not None:
            try:
                set_password(user, form.new_password.data, now)
            except PasswordRejected as rejected:
                flash(str(rejected), "error")
            else:
                end_all_sessions(db_session, user.id, keep=g.staff_session.id)
                token = _rotate_current_session(db_session)
                audit_request(db_session, audit.PASSWORD_CHANGE, staff=user, at=now)
    if token is None:
        return redirect(url_for("staff.account"))
    _keep_signed_in(token)
    flash("Your password is changed; your other sessions are signed out.", "info")
    return redirect(url_for("staff.account"))


@bp.post("/account/totp")
@requires(VIEWER)
def start_totp_enrolment():
    """After the current password (and code): a new seed to scan, waiting for its first code."""
    form = ReauthForm()
    if not form.validate_on_submit():
        flash("Give your current password (and code).", "error")
        return redirect(url_for("staff.account"))
    now = utcnow()
    with context.database().transaction() as db_session:
        user = _reauthenticate(db_session, form, now)
        if user is None:
            return redirect(url_for("staff.account"))
        link_token = issue_link(
            db_session,
            user,
            purpose=ENROL_TOTP,
            now=now,
            hours=TOTP_LINK_HOURS,
            created_by=user.email,
        )
    session[TOTP_LINK_KEY] = link_token
    return redirect(url_for("staff.confirm_totp_enrolment"))


@bp.route("/account/totp/new", methods=["GET", "POST"])
@requires(VIEWER)
def confirm_totp_enrolment():
    """Scan the new seed and confirm it with a code; the old second factor then stops working."""
    now = utcnow()
    form = CodeForm()
    cipher = context.seed_cipher()
    token = None
    error = None
    with context.database().transaction() as db_session:
        found = find_open_link(db_session, session.get(TOTP_LINK_KEY), now, purpose=ENROL_TOTP)
        if found is None or found.user.id != g.staff.id:
            abort(404)
        seed = offered_seed(found.link, cipher)
        if form.validate_on_submit():
            try:
                complete_second_factor(
                    db_session,
                    found,
                    code=form.code.data,
                    cipher=cipher,
                    now=now,
                    keep_session=g.staff_session.id,
                )
            except EnrolmentError as rejected:
                error = str(rejected)
            else:
                token = _rotate_current_session(db_session)
                audit_request(db_session, audit.TOTP_REENROL, staff=found.user, at=now)
    if token is not None:
        _keep_signed_in(token)
        flash("Your new second factor is enrolled; the old one no longer works.", "info")
        return redirect(url_for("staff.account"))
    if error:
        flash(error, "error")
    uri = provisioning_uri(seed, g.staff.email)
    return render_template("staff/account_totp.html", form=form, uri=uri, qr=qr_svg(uri))
