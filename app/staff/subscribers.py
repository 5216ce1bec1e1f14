"""One number: the lookup box, the number's page (verdict first, then its timeline), and
its evidence bundle.

The lookup box in every page's header takes a number in any format and answers
with the number's page, or with why there is none ("No record of +1 415 555 0199:
no consent held, do not text"). The page answers "may we text this number, and
why?" before anything else, naming the events the answer rests on.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC

from flask import Response, abort, redirect, render_template, request, url_for

from app import context
from app.access import audit
from app.consent.holds import HoldPolicy
from app.consent.review import preview_opt_out
from app.core.phones import mask_for_display, number_readings
from app.ledger.inclusion import anchoring_for
from app.reports.evidence import build_evidence, render_evidence_html
from app.reports.lookup import LookupOutcome, look_up
from app.reports.review_history import decisions_for, open_reviews_of, statuses_now
from app.reports.verdicts import Hold, decide_verdict
from app.staff import bp, can, requires
from app.staff.display import phone_shown, wants_unmasked
from app.staff.forms import ReviewDecisionForm
from app.staff.views import record_access
from app.store.db import utcnow
from app.store.models import COMPLIANCE, VIEWER, ConsentEvent, Subscriber


@bp.get("/lookup")
@requires(VIEWER)
def lookup():
    """Whatever was typed in the header's box: the number's page, or why there is none."""
    settings = context.settings()
    typed = request.args.get("q", "")
    with context.database().transaction(write=False) as session:
        found = look_up(
            session,
            typed,
            region=settings.phone_default_region,
            full_numbers=can(COMPLIANCE),
            suppression_key=settings.suppression_hmac_key,
        )
        statuses = statuses_now(session, [m.subscriber_id for m in found.matches])
    if found.outcome is not LookupOutcome.EMPTY:
        record_access(
            audit.LOOKUP,
            target="lookup",
            query=found.audit_query(settings.suppression_hmac_key),
            row_count=len(found.matches),
        )
    if found.outcome is LookupOutcome.FOUND and len(found.matches) == 1 and not found.suffix:
        return redirect(
            url_for("staff.timeline", subscriber_id=found.matches[0].subscriber_id, q=typed)
        )
    status = 200 if found.outcome in (LookupOutcome.FOUND, LookupOutcome.NO_RECORD) else 400
    if found.outcome is LookupOutcome.EMPTY:
        status = 200
    return render_template(
        "staff/lookup.html",
        found=found,
        statuses=statuses,
        region=settings.phone_default_region,
        programs=context.programs().programs,
        masked=mask_for_display,
    ), status


def _subscriber_or_404(subscriber_id: int) -> Subscriber:
    with context.database().transaction(write=False) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None or subscriber.phone is None:
            abort(404)
        return subscriber


def hold_policy() -> HoldPolicy:
    """Review holds as configured (`REVIEW_HOLDS_SENDS`): they block sends, or are reported."""
    return HoldPolicy(context.programs(), context.settings().review_holds_sends)


def _verdict_holds(bundle: dict) -> list[Hold]:
    """The bundle's holds (`app.consent.holds`) as the verdict takes them, one per program."""
    return [
        Hold(
            flagged_event_id=hold["event_id"],
            flagged_at=hold["since"],
            due=hold["due"],
            program_id=hold["program"],
        )
        for hold in bundle["holds"]
    ]


def timeline_page(subscriber_id: int, *, forms: dict | None = None, status: int = 200):
    """The number's page; `forms` carries decision forms back with their errors."""
    unmasked = wants_unmasked()
    subscriber = _subscriber_or_404(subscriber_id)
    catalog = context.programs()
    now = utcnow()
    policy = hold_policy()
    with context.database().transaction(write=False) as session:
        bundle = build_evidence(session, subscriber.phone, holds=policy)
        open_reviews = open_reviews_of(session, subscriber.id)
        flagged_ids = [e["id"] for e in bundle["events"] if e["possible_opt_out"]]
        decisions = decisions_for(session, flagged_ids)
        previews = {}
        if can(COMPLIANCE):
            for review in open_reviews:
                flagged = session.get(ConsentEvent, review.flagged_event_id)
                previews[review.flagged_event_id] = preview_opt_out(session, catalog, flagged, now)
    record_access(
        audit.UNMASK if unmasked else audit.TIMELINE_VIEW,
        target=f"subscriber {subscriber_id}",
        row_count=len(bundle["events"]),
    )
    holds = _verdict_holds(bundle) if policy.blocks_sends else []
    held = {hold.flagged_event_id for hold in holds}
    verdict = decide_verdict(
        bundle,
        catalog.programs,
        holds=holds,
        open_reviews=[r for r in open_reviews if r.flagged_event_id not in held],
    )
    typed = request.args.get("q", "").strip()[:64]
    readings = number_readings(typed, context.settings().phone_default_region) if typed else []
    forms = forms or {}
    if can(COMPLIANCE):
        for review in open_reviews:
            prefix = f"e{review.flagged_event_id}"
            forms.setdefault(
                review.flagged_event_id, ReviewDecisionForm(prefix=prefix, formdata=None)
            )
    return render_template(
        "staff/timeline.html",
        subscriber=subscriber,
        bundle=bundle,
        phone=phone_shown(subscriber.phone, unmasked),
        masked_phone=mask_for_display(subscriber.phone),
        unmasked=unmasked,
        verdict=verdict,
        decisions=decisions,
        open_reviews={r.flagged_event_id: r for r in open_reviews},
        previews=previews,
        forms=forms,
        typed=typed if can(COMPLIANCE) else "",
        lookup_typed=typed if can(COMPLIANCE) else "",
        reading=next((r for r in readings if r.e164 == subscriber.phone), None),
        region=context.settings().phone_default_region,
        programs_by_id={p.id: p for p in catalog.programs},
    ), status


@bp.get("/subscribers/<int:subscriber_id>")
@requires(VIEWER)
def timeline(subscriber_id: int):
    """The number's page: may we text it and why, then everything it did and was told."""
    return timeline_page(subscriber_id)


def evidence_filename(phone: str, fmt: str) -> str:
    """`evidence-1-xxxx-23-2026-12-16.html`: the masked number and the day, never the number."""
    masked = mask_for_display(phone).replace("•", "x").replace("+", "").replace(" ", "-")
    safe = "".join(ch if ch.isalnum() or ch == "-" else "_" for ch in masked)
    return f"evidence-{safe}-{utcnow().astimezone(UTC).date().isoformat()}.{fmt}"


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
        bundle = build_evidence(session, subscriber.phone, anchoring=anchoring, holds=hold_policy())
    if fmt == "json":
        content = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
        mimetype = "application/json"
    else:
        content = render_evidence_html(bundle)
        mimetype = "text/html"
    data = content.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    record_access(
        audit.EVIDENCE_DOWNLOAD,
        target=f"subscriber {subscriber_id} evidence.{fmt}",
        row_count=len(bundle["events"]),
        sha256=digest,
    )
    response = Response(data, mimetype=mimetype)
    filename = evidence_filename(subscriber.phone, fmt)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Content-SHA256"] = digest
    return response
