""" "Verify now" (app.reports.ledger_jobs, app.staff.views.verify_now): a full ledger verify run
in the background from the dashboard, its progress and result read from the database, one
job at a time."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.reports.ledger_jobs import STALE_AFTER, start_job
from app.store.db import utcnow
from app.store.models import (
    ConsentEvent,
    LedgerCheckpoint,
    LedgerVerifyJob,
    StaffAuditEntry,
    StaffUser,
)
from tests.ledger_tampering import tamper
from tests.staff_helpers import page_csrf, signed_in_client
from tests.twilio_helpers import send_text


def wait_for_job(db, timeout: float = 30) -> LedgerVerifyJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.transaction(write=False) as session:
            job = session.execute(select(LedgerVerifyJob)).scalar_one_or_none()
            if job is not None and job.finished_at is not None:
                return job
        time.sleep(0.05)
    raise AssertionError("the verification job did not finish")


def staff_user(db, email) -> StaffUser:
    with db.transaction(write=False) as session:
        return session.execute(select(StaffUser).where(StaffUser.email == email)).scalar_one()


def test_verify_now_runs_in_the_background_and_reports_on_the_dashboard(app, db, client):
    for body in ["JOIN", "YES", "HELP"]:
        send_text(client, "+14155550100", body)
    officer, staff = signed_in_client(app, db, "compliance")
    html = officer.get("/staff/").get_data(as_text=True)
    assert "Not checked yet" in html and "Verify now" in html
    response = officer.post(
        "/staff/ledger/verify", data={"csrf_token": page_csrf(officer, "/staff/")}
    )
    assert response.status_code == 302 and response.location.endswith("/staff/#ledger")
    job = wait_for_job(db)  # the request returned before the check ended; a thread ran it
    assert job.ok is True and job.done == 3 and job.requested_by == staff.email
    assert job.running is None and job.checkpoint_id is not None
    html = officer.get("/staff/").get_data(as_text=True)
    assert 'id="ledger-state">Intact' in html
    assert "intact, 3 events checked" in html and staff.email in html
    with db.transaction(write=False) as session:
        checkpoint = session.get(LedgerCheckpoint, job.checkpoint_id)
        assert checkpoint.ok and checkpoint.event_count == 3  # as `ledger verify` records it
        audit = session.execute(
            select(StaffAuditEntry).where(StaffAuditEntry.action.like("ledger_verify%"))
        ).scalars()
        entries = [(e.action, e.staff_email, e.target, e.row_count) for e in audit]
    assert entries == [
        ("ledger_verify_started", staff.email, "ledger", None),
        ("ledger_verify", staff.email, "ledger intact", 3),
    ]
    admin, _ = signed_in_client(app, db, "admin")
    assert "ledger intact" in admin.get("/staff/admin/audit").get_data(as_text=True)


def test_a_failed_verification_shows_as_failed_with_the_first_bad_event(app, db, client):
    for body in ["JOIN", "YES"]:
        send_text(client, "+14155550100", body)
    with db.transaction(write=False) as session:
        first = session.execute(select(ConsentEvent.id).order_by(ConsentEvent.id)).scalars().first()
    tamper(db, "UPDATE consent_events SET intent = 'confirm' WHERE id = :id", id=first)
    officer, _ = signed_in_client(app, db, "compliance")
    officer.post("/staff/ledger/verify", data={"csrf_token": page_csrf(officer, "/staff/")})
    job = wait_for_job(db)
    assert job.ok is False and f"event {first}" in job.message
    html = officer.get("/staff/").get_data(as_text=True)
    assert 'id="ledger-state">FAILED' in html and f"FAILED: event {first}" in html
    with db.transaction(write=False) as session:
        entry = session.execute(
            select(StaffAuditEntry).where(StaffAuditEntry.action == "ledger_verify")
        ).scalar_one()
    assert entry.target == "ledger FAILED" and entry.query["first_bad_event"] == first


def test_progress_is_read_from_the_database(app, db):
    officer, staff = signed_in_client(app, db, "compliance")
    with db.transaction() as session:
        session.add(
            LedgerVerifyJob(
                requested_by=staff.email,
                requested_at=utcnow(),
                running=1,
                beat_at=utcnow(),
                done=40_000,
                total=100_000,
            )
        )
    html = officer.get("/staff/").get_data(as_text=True)
    assert "Verification running" in html and "40,000 of 100,000 events checked" in html
    assert '<progress value="40000" max="100000"' in html
    assert '<button type="submit" disabled>Verify now</button>' in html
    viewer, _ = signed_in_client(app, db, "viewer", email="viewer@example.com")
    viewer_html = viewer.get("/staff/").get_data(as_text=True)
    assert "Verification running" in viewer_html and "Verify now</button>" not in viewer_html


def test_concurrent_clicks_start_one_job(app, db):
    signed_in_client(app, db, "compliance")
    staff = staff_user(db, "compliance@example.com")
    started = []
    barrier = threading.Barrier(4)

    def click():
        barrier.wait()
        started.append(start_job(db, staff, now=utcnow(), ip=None))

    threads = [threading.Thread(target=click) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(opened for _, opened in started) == [False, False, False, True]
    assert len({job_id for job_id, _ in started}) == 1
    with db.transaction(write=False) as session:
        assert len(session.execute(select(LedgerVerifyJob)).all()) == 1


def test_the_database_refuses_a_second_running_job(app, db):
    with db.transaction() as session:
        session.add(LedgerVerifyJob(requested_by="a", running=1, done=0))
    with pytest.raises(IntegrityError), db.transaction() as session:
        session.add(LedgerVerifyJob(requested_by="b", running=1, done=0))


def test_a_job_whose_process_died_no_longer_blocks(app, db):
    signed_in_client(app, db, "compliance")
    staff = staff_user(db, "compliance@example.com")
    long_ago = utcnow() - STALE_AFTER - timedelta(seconds=1)
    with db.transaction() as session:
        session.add(
            LedgerVerifyJob(
                requested_by="gone@example.com",
                requested_at=long_ago,
                running=1,
                beat_at=long_ago,
                done=5,
            )
        )
    job_id, opened = start_job(db, staff, now=utcnow(), ip=None)
    assert opened
    with db.transaction(write=False) as session:
        jobs = session.execute(select(LedgerVerifyJob).order_by(LedgerVerifyJob.id)).scalars()
        old, new = list(jobs)
        assert old.running is None and old.message.startswith("interrupted")
        assert new.id == job_id and new.running == 1
