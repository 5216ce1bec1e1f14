"""The console's pages: dashboard, event log, subscriber timeline, review queue, exports.

Each view parses its request, calls the domain modules (`app.reports.search`,
`app.consent.review`, `app.reports.evidence`, `app.reports.dashboard`), records what
was looked at in the access audit log, commits, and renders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import timedelta

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
from app.consent.holds import HoldPolicy
from app.consent.review import ReviewError, open_items, record_decision
from app.core.flows import ACTIVE, OPTED_OUT, PENDING, STATUSES
from app.core.keywords import INTENTS
from app.core.phones import mask_digits, mask_for_display
from app.ledger.inclusion import anchoring_for
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
from app.reports.send_reports import counts_by_rule, rules_in_force
from app.staff import audit_request, bp, can, requires, safe_next
from app.staff.forms import ReviewDecisionForm
from app.store.db import utcnow
from app.store.models import COMPLIANCE, VIEWER, Subscriber


def wants_unmasked() -> bool:
    """Full numbers only for compliance and up, and only when asked for (audited)."""
    return request.args.get("unmask") == "1" and can(COMPLIANCE)


def phone_shown(phone: str | None, unmasked: bool) -> str:
    return (phone or "—") if unmasked else mask_for_display(phone)


@bp.app_template_filter("text_shown")
def text_shown(text: str | None) -> str | None:
    """A message text, note or reply as the signed-in role may see it: viewers see no digits."""
    return text if can(COMPLIANCE) else mask_digits(text)


def viewer_filter(event_filter: EventFilter) -> EventFilter:
    """What a viewer may search: no number, no digits in the text search.

    A search by number, or by digits in the texts, would confirm whether a given
    number is in the ledger, a digit at a time if need be; viewers see statuses,
    counts and classifications, not numbers.
    """
    refused = []
    if event_filter.phone:
        refused.append("a number")
        event_filter = dataclasses.replace(event_filter, phone=None)
    if event_filter.text and any(ch.isdigit() for ch in event_filter.text):
        refused.append("digits in the text")
        event_filter = dataclasses.replace(event_filter, text=None)
    if refused:
        flash(f"Searching by {' or '.join(refused)} needs the compliance role.", "error")
    return event_filter


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
        held_back = counts_by_rule(session, now - timedelta(days=figures_for.DAYS))
    chart = Markup(figures_for.daily_chart_svg(figures.days, figures.daily))  # built escaped
    return render_template(
        "staff/dashboard.html",
        figures=figures,
        held_back=held_back,
        chart=chart,
        now=now,
        programs=context.programs().programs,
        statuses=STATUSES,
        ledger_key=context.ledger_key(),
    )


@bp.get("/rules")
@requires(VIEWER)
def sending_rules():
    """The sending rules in force today, with their citations and dates."""
    today = utcnow().date()
    rows = rules_in_force(context.sending_rules(), today, context.programs().revoke_all_from)
    return render_template(
        "staff/sending_rules.html",
        rows=rows,
        today=today,
        ruleset=context.sending_rules().version,
        programs=context.programs().programs,
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
    if not can(COMPLIANCE):
        event_filter = viewer_filter(event_filter)
    with context.database().transaction(write=False) as session:
        page = search_events(session, event_filter, before=before)
    searched = bool(event_filter.as_query())
    # Every page is recorded, searched or not: each one shows texts (ASVS 7.1.3, 8.3.5).
    audit_query = event_filter.as_audit_query(context.settings().suppression_hmac_key)
    _record(
        audit.UNMASK if unmasked else audit.SEARCH if searched else audit.EVENT_LOG_VIEW,
        target="event log",
        query={**audit_query, "page": before},
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
    audit_query = event_filter.as_audit_query(context.settings().suppression_hmac_key)
    started = utcnow()
    database = context.database()
    stream = DigestingStream()
    # The row is written before the first byte leaves: a client that takes part of the
    # file and hangs up is on record all the same.
    with database.transaction() as session:
        opening = audit.record_access(
            session,
            staff=staff,
            action=audit.EXPORT_STARTED,
            at=started,
            target=f"events.{fmt}",
            query=audit_query,
            ip=ip,
        )
        session.flush()
        opening_id = opening.id

    def generate():
        try:
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
        finally:
            # Runs on completion and when the client disconnects (GeneratorExit) alike.
            with database.transaction() as session:
                audit.record_access(
                    session,
                    staff=staff,
                    action=audit.EXPORT,
                    at=utcnow(),
                    target=f"events.{fmt}" + ("" if stream.finished else " (interrupted)"),
                    query={**audit_query, "started": opening_id},
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


def _hold_policy() -> HoldPolicy:
    return HoldPolicy(context.programs(), context.settings().review_holds_sends)


@bp.get("/subscribers/<int:subscriber_id>")
@requires(VIEWER)
def timeline(subscriber_id: int):
    """Everything one number did and was told, in order, with its verification."""
    unmasked = wants_unmasked()
    subscriber = _subscriber_or_404(subscriber_id)
    with context.database().transaction(write=False) as session:
        bundle = build_evidence(session, subscriber.phone, holds=_hold_policy())
    _record(
        audit.UNMASK if unmasked else audit.TIMELINE_VIEW,
        target=f"subscriber {subscriber_id}",
        row_count=len(bundle["events"]),
    )
    statuses = {row["program"]: row for row in bundle["current_status"]}
    holds = {hold["program"]: hold for hold in bundle["holds"]}
    programs = [
        {
            "program": program,
            "status": statuses.get(program.id, {}).get("status", "none"),
            "since": statuses.get(program.id, {}).get("since"),
            "may_text": statuses.get(program.id, {}).get("may_text", False),
            "ledger_agrees": statuses.get(program.id, {}).get("ledger_agrees", True),
            "hold": holds.get(program.id),
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
        # Yes only for an active row that agrees with the ledger, in a chain that verifies,
        # and that no possible opt-out awaiting review holds.
        may_text=bundle["verification"]["ok"] and any(p["may_text"] for p in programs),
        held=bundle["holds"],
        decision_forms={
            hold["event_id"]: ReviewDecisionForm(prefix=f"e{hold['event_id']}")
            for hold in bundle["holds"]
        },
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
        bundle = build_evidence(
            session, subscriber.phone, anchoring=anchoring, holds=_hold_policy()
        )
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
        return redirect(_back_to())
    now = utcnow()
    treat_as_opt_out = form.decision.data == "opt_out"
    try:
        event = record_decision(
            context.database(),
            context.programs(),
            event_id=event_id,
            treat_as_opt_out=treat_as_opt_out,
            reason=form.reason.data,
            staff_email=g.staff.email,
            now=now,
            also=lambda session, event: audit_request(
                session,
                audit.REVIEW_DECISION,
                at=now,
                target=f"event {event_id}",
                query={"decision": form.decision.data, "ledger_event": event.id},
            ),
        )
    except ReviewError as error:
        flash(f"Not recorded: {error}", "error")
        return redirect(_back_to())
    flash(
        f"Recorded as {'an opt-out' if treat_as_opt_out else 'not an opt-out'} "
        f"(ledger event {event.id}).",
        "info",
    )
    return redirect(_back_to())


def _back_to() -> str:
    """Where a review form was sent from: the timeline (`?next=`), else the queue."""
    target = request.args.get("next")
    return (safe_next(target) if target else None) or url_for("staff.review_queue")
