"""The review queue: texts that might be opt-outs, a decision on each, and what was decided.

Each waiting item shows the number's status when it texted and now, its
deadline, and a form that says what each choice does to the subscriber ("treat
as opt-out" sends them the opt-out confirmation, quoted). A decision that cannot
be recorded comes back on the same item, with the reason as typed. The Decided
tab lists who decided what, when and why, linking to the decision's ledger event.
"""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for

from app import context
from app.access import audit
from app.consent.review import ReviewError, open_items, preview_opt_out, record_decision
from app.reports.review_history import decided_items, with_status_now
from app.staff import audit_request, bp, requires, safe_next
from app.staff.display import phone_shown, wants_unmasked
from app.staff.forms import ReviewDecisionForm
from app.staff.subscribers import timeline_page
from app.staff.views import record_access
from app.store.db import utcnow
from app.store.models import COMPLIANCE, ConsentEvent


def queue_page(forms: dict | None = None, status: int = 200):
    """The waiting items; `forms` carries a refused decision back with its errors."""
    unmasked = wants_unmasked()
    now = utcnow()
    catalog = context.programs()
    with context.database().transaction(write=False) as session:
        items = open_items(session)
        status_now = with_status_now(session, items)
        previews = {
            item.event.id: preview_opt_out(session, catalog, item.event, now) for item in items
        }
    record_access(
        audit.UNMASK if unmasked else audit.REVIEW_QUEUE_VIEW,
        target="review queue",
        row_count=len(items),
    )
    forms = forms or {}
    for item in items:
        forms.setdefault(
            item.event.id, ReviewDecisionForm(prefix=f"e{item.event.id}", formdata=None)
        )
    return render_template(
        "staff/review.html",
        items=items,
        now=now,
        forms=forms,
        status_now=status_now,
        previews=previews,
        programs_by_id={p.id: p for p in catalog.programs},
        phone_shown=phone_shown,
        unmasked=unmasked,
        tab="waiting",
    ), status


@bp.get("/review")
@requires(COMPLIANCE)
def review_queue():
    """Texts flagged as possible opt-outs, most urgent first."""
    return queue_page()


@bp.get("/review/decided")
@requires(COMPLIANCE)
def review_decided():
    """Decided texts, latest decision first: who, when, why, and the decision's ledger event."""
    unmasked = wants_unmasked()
    before = request.args.get("before", "")
    with context.database().transaction(write=False) as session:
        items, older = decided_items(session, before=int(before) if before.isdigit() else None)
    record_access(
        audit.UNMASK if unmasked else audit.REVIEW_QUEUE_VIEW,
        target="review decisions",
        row_count=len(items),
    )
    return render_template(
        "staff/review_decided.html",
        items=items,
        older=older,
        phone_shown=phone_shown,
        unmasked=unmasked,
        programs_by_id={p.id: p for p in context.programs().programs},
        tab="decided",
    )


def _came_from() -> str | None:
    """The console page a decision form was on (`?next=`, a number's page), if any."""
    target = request.args.get("next")
    return safe_next(target) if target else None


def _refused(event_id: int, form: ReviewDecisionForm, back_to_number: bool):
    """The page the decision came from, again, with the error beside the item."""
    if back_to_number:
        with context.database().transaction(write=False) as session:
            flagged = session.get(ConsentEvent, event_id)
        if flagged is not None:
            return timeline_page(flagged.subscriber_id, forms={event_id: form}, status=400)
    return queue_page(forms={event_id: form}, status=400)


@bp.post("/review/<int:event_id>")
@requires(COMPLIANCE)
def review_decide(event_id: int):
    """Record a decision on one flagged text; it becomes a ledger event naming the staff member."""
    form = ReviewDecisionForm(prefix=f"e{event_id}")
    came_from = _came_from()
    back_to_number = bool(came_from and came_from.startswith("/staff/subscribers/"))
    if not form.validate_on_submit():
        return _refused(event_id, form, back_to_number)
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
        if not error.about_reason:  # decided meanwhile, or never in the queue
            flash(f"Not recorded: {error}", "error")
            return redirect(url_for("staff.review_queue"))
        form.reason.errors = [*form.reason.errors, f"Not recorded: {error}"]
        return _refused(event_id, form, back_to_number)
    flash(
        f"Recorded as {'an opt-out' if treat_as_opt_out else 'not an opt-out'} "
        f"(ledger event {event.id}).",
        "info",
    )
    if came_from:
        return redirect(came_from.split("#")[0] + f"#event-{event.id}")
    return redirect(url_for("staff.review_queue"))
