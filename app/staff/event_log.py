"""The event log: search the ledger, newest first, a page at a time; export the search.

A filter that cannot be understood is answered in place: the error beside its
field, what was typed kept in the form, and no results (a list that ignores the
filter would look like an answer to it). Results are counted, pages go both
ways, and dates are days in the reader's display zone.
"""

from __future__ import annotations

import dataclasses

from flask import Response, abort, flash, g, render_template, request, stream_with_context

from app import context
from app.access import audit
from app.core.flows import STATUSES
from app.core.keywords import INTENTS
from app.reports.exports import DigestingStream, csv_chunks, csv_row, json_chunks
from app.reports.review_history import decisions_for
from app.reports.search import (
    CHANGE_CHOICES,
    CSV_COLUMNS,
    REPLY_STATUSES,
    EventFilter,
    EventPage,
    SearchError,
    count_matches,
    decode_cursor,
    iter_export_rows,
    search_events,
)
from app.staff import bp, can, requires
from app.staff.display import display_zone_name, phone_shown, wants_unmasked
from app.staff.views import record_access
from app.store.db import utcnow
from app.store.models import COMPLIANCE, VIEWER

# The fields a search form has, for putting back what was typed.
FORM_FIELDS = (
    "phone",
    "program",
    "intent",
    "change",
    "status_now",
    "reply_status",
    "error_code",
    "since",
    "until",
    "text",
    "flagged",
)


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


def _parse(args) -> EventFilter:
    settings = context.settings()
    return EventFilter.from_args(args, settings.phone_default_region, display_zone_name())


@bp.get("/events")
@requires(VIEWER)
def events():
    """The event log: search, newest first, keyset pages both ways."""
    unmasked = wants_unmasked()
    typed = {name: request.args.get(name, "") for name in FORM_FIELDS}
    errors: dict[str, str] = {}
    before = request.args.get("before") or None
    after = request.args.get("after") or None
    try:
        event_filter = _parse(request.args)
        for cursor in (before, after):
            if cursor:
                decode_cursor(cursor)
    except SearchError as error:
        errors = error.errors
        event_filter = None
    if event_filter is not None and not can(COMPLIANCE):
        event_filter = viewer_filter(event_filter)
        typed["phone"] = ""
        if event_filter.text is None:
            typed["text"] = ""
    page, counted, decisions = EventPage([], None), None, {}
    if event_filter is not None:
        with context.database().transaction(write=False) as session:
            page = search_events(session, event_filter, before=before, after=after)
            counted = count_matches(session, event_filter)
            flagged = [row.event.id for row in page.rows if row.event.possible_opt_out]
            decisions = decisions_for(session, flagged)
        searched = bool(event_filter.as_query())
        # Every page is recorded, searched or not: each one shows texts (ASVS 7.1.3, 8.3.5).
        audit_query = event_filter.as_audit_query(context.settings().suppression_hmac_key)
        record_access(
            audit.UNMASK if unmasked else audit.SEARCH if searched else audit.EVENT_LOG_VIEW,
            target="event log",
            query={**audit_query, "page": before or after},
            row_count=len(page.rows),
        )
    query = event_filter.as_query() if event_filter is not None else {}
    return render_template(
        "staff/events.html",
        page=page,
        counted=counted,
        decisions=decisions,
        typed=typed,
        errors=errors,
        query=query,
        paged=bool(before or after),
        unmasked=unmasked,
        phone_shown=phone_shown,
        programs=context.programs().programs,
        intents=INTENTS,
        changes=CHANGE_CHOICES,
        statuses=STATUSES,
        reply_statuses=REPLY_STATUSES,
        zone=display_zone_name(),
        region=context.settings().phone_default_region,
    ), (400 if errors else 200)


@bp.get("/events/export.<any(csv, json):fmt>")
@requires(COMPLIANCE)
def export_events(fmt: str):
    """The current search as CSV or JSON, streamed; its SHA-256 goes into the audit log."""
    try:
        event_filter = _parse(request.args)
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
                    yield from csv_chunks((csv_row(row) for row in rows), CSV_COLUMNS, stream)
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
