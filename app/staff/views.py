"""The dashboard, the sending rules, and "Verify now".

Each view parses its request, calls the domain modules (`app.reports.dashboard`,
`app.reports.ledger_jobs`, `app.reports.send_reports`), records what was looked
at in the access audit log, commits, and renders. The other pages live beside
this module, one module per page: `event_log`, `subscribers` (lookup, the
number's page, evidence), `review_views`.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from flask import current_app, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup

from app import context
from app.core.flows import STATUSES
from app.reports import dashboard as figures_for
from app.reports.ledger_jobs import JobSettings, latest_job, run_job, start_job
from app.reports.send_reports import counts_by_rule, rules_in_force
from app.staff import audit_request, bp, requires
from app.staff.forms import PlainForm
from app.store.db import utcnow
from app.store.models import COMPLIANCE, VIEWER


def record_access(action: str, **fields) -> None:
    """One entry in the access audit log, in its own transaction."""
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
        job = latest_job(session)
    chart = Markup(figures_for.daily_chart_svg(figures.days, figures.daily))  # built escaped
    since = figures.days[0].isoformat()
    return render_template(
        "staff/dashboard.html",
        figures=figures,
        held_back=held_back,
        chart=chart,
        now=now,
        since=since,
        programs=context.programs().programs,
        statuses=STATUSES,
        ledger_key=context.ledger_key(),
        job=job,
        verify_form=PlainForm(),
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


def start_in_background(database, job_id: int, settings: JobSettings) -> None:
    """Run the job in a thread of this process: it outlives the request, and writes its
    progress to the database, where any process reads it."""
    runner = current_app.extensions.get("ledger_job_runner")
    if runner is not None:  # tests may run it in the foreground
        runner(database, job_id, settings)
        return
    threading.Thread(
        target=run_job,
        args=(database, job_id, settings),
        name=f"ledger-verify-{job_id}",
        daemon=True,
    ).start()


@bp.post("/ledger/verify")
@requires(COMPLIANCE)
def verify_now():
    """Start a full ledger verification unless one runs; the dashboard shows its progress."""
    form = PlainForm()
    if not form.validate_on_submit():
        flash("That request is not valid: try again.", "error")
        return redirect(url_for("staff.dashboard"))
    database = context.database()
    job_id, started = start_job(database, g.staff, now=utcnow(), ip=request.remote_addr)
    if started:
        settings = context.settings()
        start_in_background(
            database,
            job_id,
            JobSettings(
                checkpoint_dir=settings.ledger_checkpoint_dir,
                ledger_key=context.ledger_key(),
                suppression_key=settings.suppression_hmac_key,
            ),
        )
        flash("Ledger verification started: its progress shows below.", "info")
    else:
        flash("A ledger verification is already running: its progress shows below.", "info")
    return redirect(url_for("staff.dashboard") + "#ledger")
