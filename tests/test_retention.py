"""Retention (`flask --app app retention run`): old personal data goes, consent evidence stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.ledger.chain import NewEvent, append_event, lock_subscriber, verify_ledger
from app.privacy.retention import RetentionPolicy, run_retention
from app.store.db import utcnow
from app.store.models import (
    DELIVERED,
    QUEUED,
    ConsentEvent,
    DeliveryReceipt,
    OutboundMessage,
    Subscriber,
)
from tests.ledger_tampering import tamper
from tests.twilio_helpers import send_text

PHONE = "+14155550100"


def old_text(db, days_ago: float, body: str, phone: str = PHONE) -> int:
    """A ledger event `days_ago` days old, as if the text had come in then."""
    with db.transaction() as session:
        subscriber = lock_subscriber(session, phone)
        event = append_event(
            session,
            subscriber,
            NewEvent(
                kind="inbound_text",
                occurred_at=utcnow() - timedelta(days=days_ago),
                intent="other",
                body=body,
                body_raw=body.encode(),
            ),
        )
        return event.id


def event(db, event_id: int) -> ConsentEvent:
    with db.transaction(write=False) as session:
        return session.get(ConsentEvent, event_id)


def test_retention_run_removes_old_bodies_keeps_evidence_and_the_ledger_verifies(
    db, client, runner
):
    ancient = old_text(db, 6 * 366, "hello from long ago")
    old = old_text(db, 100, "an old text")
    send_text(client, PHONE, "JOIN")

    result = runner.invoke(args=["retention", "run"])
    assert result.exit_code == 0, result.output
    assert "inbound message bodies removed: 2" in result.output
    assert "ledger salts removed (past the evidence period): 1" in result.output

    gone = event(db, ancient)
    assert (gone.body, gone.body_raw, gone.personal_salt) == (None, None, None)
    kept_evidence = event(db, old)
    assert kept_evidence.body is None and kept_evidence.body_raw is None
    assert kept_evidence.personal_salt is not None  # still ties the event to the number
    assert kept_evidence.phone_commitment and kept_evidence.body_commitment
    with db.transaction(write=False) as session:
        recent = (
            session.execute(
                select(ConsentEvent)
                .where(ConsentEvent.kind == "inbound_text")
                .order_by(ConsentEvent.id.desc())
            )
            .scalars()
            .first()
        )
        assert recent.body == "JOIN" and recent.status_after == "pending"
        assert session.execute(select(Subscriber.phone)).scalar_one() == PHONE

    verify = runner.invoke(args=["ledger", "verify"])
    assert verify.exit_code == 0, verify.output
    assert "2 with personal data removed" in verify.output
    for fmt in ("json", "html"):
        bundle = runner.invoke(args=["evidence", PHONE, "--format", fmt])
        assert bundle.exit_code == 0, bundle.output  # the number's chain still verifies
        assert "an old text" not in bundle.output and "JOIN" in bundle.output

    again = runner.invoke(args=["retention", "run"])
    assert "inbound message bodies removed: 0" in again.output
    assert "ledger salts removed (past the evidence period): 0" in again.output


def test_phone_commitments_are_still_checked_within_the_evidence_period(db, runner):
    old_text(db, 100, "an old text")
    assert runner.invoke(args=["retention", "run"]).exit_code == 0
    tamper(db, "UPDATE subscribers SET phone = '+14155550199'")
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1 and "phone number was changed" in result.output


def test_tampering_after_retention_is_still_detected(db, runner):
    first = old_text(db, 100, "an old text")
    old_text(db, 99, "another")
    assert runner.invoke(args=["retention", "run"]).exit_code == 0
    tamper(db, "UPDATE consent_events SET intent = 'opt_in' WHERE id = :id", id=first)
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1 and f"event {first}" in result.output


def test_retention_works_in_batches_and_counts_them(db):
    ids = [old_text(db, 100 + n, f"text {n}", phone=f"+1415555010{n}") for n in range(5)]
    report = run_retention(db, RetentionPolicy(body_days=90), utcnow(), batch_size=2)
    assert report.bodies_redacted == 5 and report.batches == 3
    assert all(event(db, i).body is None for i in ids)
    with db.transaction(write=False) as session:
        assert verify_ledger(session).ok


def test_the_evidence_period_is_configurable(app, db):
    two_years = old_text(db, 2 * 366, "two years ago")
    run_retention(db, RetentionPolicy(body_days=90, evidence_years=5), utcnow())
    assert event(db, two_years).personal_salt is not None
    run_retention(db, RetentionPolicy(body_days=90, evidence_years=1), utcnow())
    assert event(db, two_years).personal_salt is None
    with db.transaction(write=False) as session:
        assert verify_ledger(session).ok
        # Ledger rows are never deleted, whatever their age.
        assert session.execute(select(func.count()).select_from(ConsentEvent)).scalar_one() == 1


def test_old_finished_replies_lose_their_recipient_and_receipts_go(db, client):
    send_text(client, PHONE, "HELP")
    long_ago = utcnow() - timedelta(days=120)
    with db.transaction() as session:
        subscriber_id = session.execute(select(Subscriber.id)).scalar_one()
        finished = OutboundMessage(
            subscriber_id=subscriber_id,
            kind="help",
            to_number=PHONE,
            body="help text",
            status=DELIVERED,
            error_message="Twilio said something about +14155550100",
            created_at=long_ago,
        )
        waiting = OutboundMessage(
            subscriber_id=subscriber_id,
            kind="help",
            to_number=PHONE,
            body="help text",
            status=QUEUED,
            created_at=long_ago,
        )
        session.add_all(
            [
                finished,
                waiting,
                DeliveryReceipt(message_sid="SMold", status="delivered", received_at=long_ago),
                DeliveryReceipt(message_sid="SMnew", status="delivered"),
            ]
        )
    report = run_retention(db, RetentionPolicy(body_days=90), utcnow())
    assert report.messages_redacted == 1 and report.receipts_deleted == 1
    with db.transaction(write=False) as session:
        finished_row = session.get(OutboundMessage, finished.id)
        assert finished_row.to_number is None and finished_row.error_message is None
        assert finished_row.body == "help text" and finished_row.status == DELIVERED
        assert session.get(OutboundMessage, waiting.id).to_number == PHONE  # still to be sent
        recent = session.execute(
            select(OutboundMessage).where(OutboundMessage.created_at > long_ago)
        ).scalar_one()
        assert recent.to_number == PHONE
        assert session.execute(select(DeliveryReceipt.message_sid)).scalars().all() == ["SMnew"]


def test_retention_settings_are_validated():
    from app.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="RETENTION_BODY_DAYS"):
        Settings.from_env({"RETENTION_BODY_DAYS": "0", "SECRET_KEY": "x"})
    with pytest.raises(ConfigError, match="EVIDENCE_RETENTION_YEARS"):
        Settings.from_env({"EVIDENCE_RETENTION_YEARS": "soon", "SECRET_KEY": "x"})
    settings = Settings.from_env({"SECRET_KEY": "x"})
    assert (settings.retention_body_days, settings.evidence_retention_years) == (90, 5)


def test_evidence_cutoff_handles_29_february():
    from datetime import UTC, datetime

    leap = datetime(2028, 2, 29, 12, tzinfo=UTC)
    assert RetentionPolicy(evidence_years=5).evidence_cutoff(leap) == datetime(
        2023, 2, 28, 12, tzinfo=UTC
    )


@pytest.mark.e2e
def test_every_runs_until_sigterm(tmp_path):
    """The Procfile's `clock:` process: runs at once, then waits; SIGTERM ends it cleanly."""
    from app.store.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'clock.sqlite3'}"
    upgrade(url)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "INSTANCE_DIR": str(tmp_path),
        "SMS_BACKEND": "console",
        "SECRET_KEY": "clock-test",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "retention", "run", "--every", "24"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.startswith("staff sessions deleted"):
                break
        assert any(line.startswith("staff sessions deleted") for line in lines), lines
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_an_opt_outs_evidence_is_kept_ten_years_whatever_the_evidence_period(db):
    """Virginia honours an opt-out for 10 years (Va. Code § 59.1-514(A)): its ledger event keeps
    the salt that ties it to the number that long, even with EVIDENCE_RETENTION_YEARS=5."""

    def old_event(years: float, intent: str) -> int:
        with db.transaction() as session:
            subscriber = lock_subscriber(session, f"+1415555{int(years * 10):04d}")
            return append_event(
                session,
                subscriber,
                NewEvent(
                    kind="inbound_text",
                    occurred_at=utcnow() - timedelta(days=365.25 * years),
                    intent=intent,
                    body="STOP",
                ),
            ).id

    opt_out_six = old_event(6, "opt_out")
    opt_in_six = old_event(6.1, "opt_in")
    opt_out_eleven = old_event(11, "opt_out")
    report = run_retention(db, RetentionPolicy(body_days=90, evidence_years=5), utcnow())
    assert report.salts_removed == 2
    assert event(db, opt_out_six).personal_salt is not None
    assert event(db, opt_in_six).personal_salt is None
    assert event(db, opt_out_eleven).personal_salt is None
    assert RetentionPolicy().opt_out_years == 10
