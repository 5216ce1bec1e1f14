"""The staff console: `/staff/…`, server-rendered, for staff and compliance officers.

Every request passes `load_staff` first: it finds the server-side session named
by the cookie, ends it when idle or expired, and sends anyone not fully signed
in (password and, where needed, TOTP) to the sign-in page. Each view then states
the least role it needs with `@requires(...)`, checked on the server.

Roles: viewer (statuses, counts and classifications; numbers masked to the last
two digits, digits in texts masked, no search by number) < compliance (full
numbers and texts, search by number, export, evidence, review queue) < admin
(also staff accounts, API tokens, audit log). Everyone manages their own
password and second factor (`/staff/account`); nobody sees anyone else's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, g, redirect, render_template, request, session, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect

from app import context
from app.access import audit
from app.access.accounts import load_session
from app.store.db import utcnow
from app.store.models import ADMIN, COMPLIANCE, ROLES, VIEWER

logger = logging.getLogger(__name__)
bp = Blueprint(
    "staff",
    __name__,
    url_prefix="/staff",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

SESSION_KEY = "staff_token"
# Endpoints open to a browser that has not signed in.
PUBLIC_ENDPOINTS = frozenset({"staff.login", "staff.static", "staff.enrol"})
# Endpoints open between the password and the second factor.
SECOND_FACTOR_ENDPOINTS = frozenset({"staff.login_code", "staff.logout"})
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def requires(role: str) -> Callable:
    """The view needs at least `role`; anyone below gets 403."""
    if role not in ROLE_RANK:
        raise ValueError(role)

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args, **kwargs):
            staff = g.get("staff")
            if staff is None:
                abort(401)
            if ROLE_RANK[staff.role] < ROLE_RANK[role]:
                logger.warning(
                    "console access denied",
                    extra={"staff_id": staff.id, "endpoint": request.endpoint, "needs": role},
                )
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_role = role  # read by the route-inventory test
        return wrapped

    return decorate


def audit_request(session, action: str, *, staff=None, at=None, **fields) -> None:
    """Record `action` in the access audit log, by the signed-in staff member unless `staff`
    is given, from this request's address; within the caller's transaction."""
    audit.record_access(
        session,
        staff=staff or g.get("staff"),
        action=action,
        at=at or utcnow(),
        ip=request.remote_addr,
        **fields,
    )


def can(role: str) -> bool:
    """Has the signed-in staff member at least `role`? (for templates)"""
    staff = g.get("staff")
    return staff is not None and ROLE_RANK[staff.role] >= ROLE_RANK[role]


NEXT_MAX = 2000


def safe_next(target: str | None) -> str | None:
    """The console path to go to after sign-in; None for anything else (no open redirect).

    Only a path under /staff/, made of printable ASCII without backslashes: no
    scheme or host, and nothing (CR, LF) that could split a Location header.
    """
    if not target:
        return url_for("staff.dashboard")
    if len(target) > NEXT_MAX or any(not 33 <= ord(ch) <= 126 or ch == "\\" for ch in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/staff/"):
        return None
    if "/../" in parts.path or parts.path.endswith("/.."):
        return None
    return target


def checked_next(target: str | None) -> str:
    """`safe_next`, answering 400 for a `next` that is not a console path."""
    url = safe_next(target)
    if url is None:
        abort(400, description="The page to return to is not a console page.")
    return url


@bp.before_request
def load_staff():
    """Attach the signed-in staff member to `g`, or send the browser to sign in."""
    g.staff = None
    g.staff_session = None
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    settings = context.settings()
    token = session.get(SESSION_KEY)
    found = None
    if token:
        with context.database().transaction() as db_session:
            found = load_session(
                db_session,
                token,
                utcnow(),
                idle=timedelta(minutes=settings.staff_idle_minutes),
                lifetime=timedelta(hours=settings.staff_session_hours),
            )
            if found is not None:
                row, user = found
                now = utcnow()
                if now - row.last_seen_at > timedelta(seconds=30):
                    row.last_seen_at = now
                db_session.expunge_all()
    if found is None:
        session.pop(SESSION_KEY, None)
        return redirect(url_for("staff.login", next=request.full_path.rstrip("?")))
    g.staff_session, g.staff = found
    if not g.staff_session.second_factor_done and request.endpoint not in SECOND_FACTOR_ENDPOINTS:
        return redirect(url_for("staff.login_code"))
    return None


@bp.app_context_processor
def template_helpers():
    return {"can": can, "VIEWER": VIEWER, "COMPLIANCE": COMPLIANCE, "ADMIN": ADMIN}


def add_security_headers(response):
    """The usual security headers on every answer; staff pages are never cached."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")  # CSRF checks the Referer
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    if request.path.startswith("/staff/") and request.endpoint != "staff.static":
        headers["Cache-Control"] = "no-store"
    return response


def register(app: Flask, csrf: CSRFProtect) -> None:
    """Attach the console to `app`: routes, sign-in rate limit, error pages, headers."""
    from app.staff import (  # noqa: F401  (routes and template filters register on import)
        admin,
        auth,
        credentials,
        display,
        event_log,
        review_views,
        subscribers,
        views,
    )

    app.register_blueprint(bp)
    settings = app.extensions["settings"]
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=settings.ratelimit_storage_uri,
        key_prefix=settings.ratelimit_key_prefix,
        default_limits=[],
        headers_enabled=False,  # our 429s say themselves how long to wait (Retry-After)
    )
    app.extensions["staff_limiter"] = limiter
    _confine_to_console(app, limiter)
    for endpoint in ("staff.login", "staff.login_code", "staff.enrol"):
        app.view_functions[endpoint] = limiter.limit(
            settings.staff_login_rate_limit, methods=["POST"]
        )(app.view_functions[endpoint])
    app.after_request(add_security_headers)

    @app.errorhandler(CSRFError)
    def csrf_failed(error):
        return render_template("staff/error.html", code=400, message=error.description), 400

    for code, message in (
        (400, "That request is not valid."),
        (403, "Your role does not allow this."),
        (404, "There is nothing here."),
        (429, "Too many attempts. Wait a minute and try again."),
    ):
        _register_error_page(app, code, message)


def _confine_to_console(app: Flask, limiter: Limiter) -> None:
    """Run the limiter's request hooks for the console only.

    flask-limiter hooks every request of the app; only the console's sign-in is
    rate limited, and Twilio's webhooks (the hot path) should not pay for the
    check. The hooks move from the app to this blueprint (Flask's documented
    per-blueprint registries), so they still run for every console request.
    """
    for registry in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
        hooks = registry.get(None, [])
        owned = [f for f in hooks if getattr(f, "__self__", None) is limiter or _wraps(f, limiter)]
        for hook in owned:
            hooks.remove(hook)
            registry.setdefault(bp.name, []).append(hook)


def _wraps(function, limiter: Limiter) -> bool:
    """Is `function` a functools.partial bound to `limiter` (flask-limiter's header hook)?"""
    return any(arg is limiter for arg in getattr(function, "args", ()))


def _register_error_page(app: Flask, code: int, message: str) -> None:
    @app.errorhandler(code)
    def error_page(error):
        if request.path.startswith("/staff/"):
            return render_template("staff/error.html", code=code, message=message), code
        return error
