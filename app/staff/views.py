"""The console's pages: dashboard, event log, subscriber timeline, review queue, exports.

Each view parses its request, calls the domain modules (`app.reports.search`,
`app.consent.review`, `app.reports.evidence`, `app.reports.dashboard`), records what
was looked at in the access audit log, commits, and renders.
"""

from __future__ import annotations

import hashlib
import json

from flask import (
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from markupsafe import Markup

from app import context
from app.access import audit
from app.consent.review import ReviewError, decide, open_items, subject_phone
from app.core.flows import ACTIVE, OPTED_OUT, PENDING, STATUSES
from app.core.keywords import INTENTS
from app.core.phones import mask_for_display
from app.ledger.inclusion import anchoring_for
from app.outbox import records
from app.reports import dashboard as figures_for
from app.reports.evidence import build_evidence, render_evidence_html
from app.reports.exports import DigestingStream, csv_chunks, json_chunks
from app.reports.search import (
    CHANGE_CHOICES,
    EXPORT_COLUMNS,
    EventFilter,
    SearchError,
    decode_cursor,
    iter_export_rows,
    search_events,
)
from app.staff import audit_request, bp, can, requires
from app.staff.forms import ReviewDecisionForm
from app.store.db import utcnow
from app.store.models import COMPLIANCE, VIEWER, Subscriber


def wants_unmasked() -> bool:
    """Full numbers only for compliance and up, and only when asked for (audited)."""
    return request.args.get("unmask") == "1" and can(COMPLIANCE)


def phone_shown(phone: str | None, unmasked: bool) -> str:
    return (phone or "—") if unmasked else mask_for_display(phone)


@bp.app_template_filter("when")
def format_when(value) -> str:
    """A timestamp as staff read it: UTC, to the second."""
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("iso_when")
def format_iso(value: str | None) -> str:
    """An ISO 8601 string from an evidence bundle, shown like `when`."""
    if not value:
        return "—"
    return value.replace("T", " ").split(".")[0].rstrip("Z") + " UTC"


def _record(action: str, **fields) -> None:
    with context.database().transaction() as session:
        audit_request(session, action, **fields)


@bp.get("/")
@requires(VIEWER)
def dashboard():
    """Who is subscribed, what changed lately, how replies fare, what waits for review."""
    now = utcnow()
    with context.database().transaction(write=False) as session:
        figures = figures_for.collect(session, now)
    chart = Markup(figures_for.daily_chart_svg(figures.days, figures.daily))  # built escaped
    return render_template(
        "staff/dashboard.html",
        figures=figures,
        chart=chart,
        now=now,
        programs=context.programs().programs,
        statuses=STATUSES,
        ledger_key=context.ledger_key(),
    )


@bp.get("/events")
@requires(VIEWER)
def events():
    """The event log: search, newest first, keyset pages."""
    unmasked = wants_unmasked()
    try:
        event_filter = EventFilter.from_args(request.args, context.settings().phone_default_region)
        before = request.args.get("before") or None
        if before:
            decode_cursor(before)
    except SearchError as error:
        flash(str(error), "error")
        event_filter, before = EventFilter(), None
    with context.database().transaction(write=False) as session:
        page = search_events(session, event_filter, before=before)
    searched = bool(event_filter.as_query())
    if searched or unmasked:
        _record(
            audit.UNMASK if unmasked else audit.SEARCH,
            target="event log",
            query=event_filter.as_audit_query(context.settings().suppression_hmac_key),
            row_count=len(page.rows),
        )
    return render_template(
        "staff/events.html",
        page=page,
        filter=event_filter,
        query=event_filter.as_query(),
        unmasked=unmasked,
        phone_shown=phone_shown,
        programs=context.programs().programs,
        intents=INTENTS,
        changes=CHANGE_CHOICES,
    )


@bp.get("/events/export.<any(csv, json):fmt>")
@requires(COMPLIANCE)
def export_events(fmt: str):
    """The current search as CSV or JSON, streamed; its SHA-256 goes into the audit log."""
    try:
        event_filter = EventFilter.from_args(request.args, context.settings().phone_default_region)
    except SearchError as error:
        abort(400, description=str(error))
    staff, ip = g.staff, request.remote_addr
    audit_key = context.settings().suppression_hmac_key
    started = utcnow()
    database = context.database()
    stream = DigestingStream()

    def generate():
        with database.transaction(write=False) as session:
            rows = iter_export_rows(session, event_filter)
            if fmt == "csv":
                yield from csv_chunks(rows, EXPORT_COLUMNS, stream)
            else:
                header = {
                    "exported_at": started.isoformat().replace("+00:00", "Z"),
                    "query": event_filter.as_query(),
                }
                yield from json_chunks(rows, stream, header=header)
        with database.transaction() as session:
            audit.record_access(
                session,
                staff=staff,
                action=audit.EXPORT,
                at=utcnow(),
                target=f"events.{fmt}" + ("" if stream.finished else " (interrupted)"),
                query=event_filter.as_audit_query(audit_key),
                row_count=stream.rows,
                sha256=stream.hexdigest,
                ip=ip,
            )

    filename = f"consent-events-{started.strftime('%Y%m%dT%H%M%SZ')}.{fmt}"
    mimetype = "text/csv" if fmt == "csv" else "application/json"
    response = Response(stream_with_context(generate()), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _subscriber_or_404(subscriber_id: int) -> Subscriber:
    with context.database().transaction(write=False) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None or subscriber.phone is None:
            abort(404)
        return subscriber


@bp.get("/subscribers/<int:subscriber_id>")
@requires(VIEWER)
def timeline(subscriber_id: int):
    """Everything one number did and was told, in order, with its verification."""
    unmasked = wants_unmasked()
    subscriber = _subscriber_or_404(subscriber_id)
    with context.database().transaction(write=False) as session:
        bundle = build_evidence(session, subscriber.phone)
    _record(
        audit.UNMASK if unmasked else audit.TIMELINE_VIEW,
        target=f"subscriber {subscriber_id}",
        row_count=len(bundle["events"]),
    )
    statuses = {row["program"]: row for row in bundle["current_status"]}
    programs = [
        {
            "program": program,
            "status": statuses.get(program.id, {}).get("status", "none"),
            "since": statuses.get(program.id, {}).get("since"),
        }
        for program in context.programs().programs
    ]
    return render_template(
        "staff/timeline.html",
        subscriber=subscriber,
        bundle=bundle,
        phone=phone_shown(subscriber.phone, unmasked),
        unmasked=unmasked,
        programs=programs,
        may_text=any(p["status"] == ACTIVE for p in programs),
        ACTIVE=ACTIVE,
        PENDING=PENDING,
        OPTED_OUT=OPTED_OUT,
    )


@bp.get("/subscribers/<int:subscriber_id>/evidence.<any(json, html):fmt>")
@requires(COMPLIANCE)
def evidence(subscriber_id: int, fmt: str):
    """The number's evidence bundle as a download; its SHA-256 goes into the audit log.

    Events are proven against the newest published checkpoint; newer ones are marked
    not yet anchored (the clock's next checkpoint covers them).
    """
    subscriber = _subscriber_or_404(subscriber_id)
    anchoring = anchoring_for(context.settings().ledger_checkpoint_dir, context.ledger_key())
    with context.database().transaction(write=False) as session:
        bundle = build_evidence(session, subscriber.phone, anchoring=anchoring)
    if fmt == "json":
        content = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
        mimetype = "application/json"
    else:
        content = render_evidence_html(bundle)
        mimetype = "text/html"
    data = content.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    _record(
        audit.EVIDENCE_DOWNLOAD,
        target=f"subscriber {subscriber_id} evidence.{fmt}",
        row_count=len(bundle["events"]),
        sha256=digest,
    )
    response = Response(data, mimetype=mimetype)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="evidence-subscriber-{subscriber_id}.{fmt}"'
    )
    response.headers["X-Content-SHA256"] = digest
    return response


@bp.get("/review")
@requires(COMPLIANCE)
def review_queue():
    """Texts flagged as possible opt-outs, most urgent first."""
    unmasked = wants_unmasked()
    with context.database().transaction(write=False) as session:
        items = open_items(session)
    _record(
        audit.UNMASK if unmasked else audit.REVIEW_QUEUE_VIEW,
        target="review queue",
        row_count=len(items),
    )
    return render_template(
        "staff/review.html",
        items=items,
        now=utcnow(),
        forms={item.event.id: ReviewDecisionForm(prefix=f"e{item.event.id}") for item in items},
        phone_shown=phone_shown,
        unmasked=unmasked,
    )


@bp.post("/review/<int:event_id>")
@requires(COMPLIANCE)
def review_decide(event_id: int):
    """Record a decision on one flagged text; it becomes a ledger event naming the staff member."""
    form = ReviewDecisionForm(prefix=f"e{event_id}")
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for error in errors:
                flash(f"Not recorded: {error}", "error")
        return redirect(url_for("staff.review_queue"))
    now = utcnow()
    treat_as_opt_out = form.decision.data == "opt_out"
    database = context.database()
    try:
        # A decision may opt the number out: on SQLite it waits for a reply in flight to it.
        with database.transaction(write=False) as session:
            phone = subject_phone(session, event_id)
        with database.number_guard(phone, exclusive=True), database.transaction() as session:
            event = decide(
                session,
                context.programs(),
                event_id=event_id,
                treat_as_opt_out=treat_as_opt_out,
                reason=form.reason.data,
                staff_email=g.staff.email,
                now=now,
            )
            audit_request(
                session,
                audit.REVIEW_DECISION,
                at=now,
                target=f"event {event_id}",
                query={"decision": form.decision.data, "ledger_event": event.id},
            )
            records.notify_outbox(session)
    except ReviewError as error:
        flash(f"Not recorded: {error}", "error")
        return redirect(url_for("staff.review_queue"))
    flash(
        f"Recorded as {'an opt-out' if treat_as_opt_out else 'not an opt-out'} "
        f"(ledger event {event.id}).",
        "info",
    )
    return redirect(url_for("staff.review_queue"))
