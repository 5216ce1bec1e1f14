""" "Verify now": a full `ledger verify` started from the dashboard and run in the background.

A compliance officer without a shell gets the same check as
`flask --app app ledger verify`: every hash, chain, replay and published
checkpoint (`app.ledger.chain.verify_ledger`), its outcome recorded as the CLI
records it (`record_checkpoint`, which the dashboard's Ledger card shows) and in
the access audit log, under the officer's name.

The job's state lives in the database (`LedgerVerifyJob`), never in a process:
the web process that took the click runs the check in a thread and writes its
progress there, and whichever process serves the next page reads it. At most one
job runs (a unique index, so two clicks in two processes start one); a job
whose process died stops beating and is closed by the next click.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.access import audit
from app.ledger.chain import record_checkpoint, verify_ledger
from app.ledger.checkpoints import CheckpointDirectory, LedgerAnchors
from app.ledger.signing import LedgerKey
from app.store.db import Database, utcnow
from app.store.models import LedgerVerifyJob

logger = logging.getLogger(__name__)

RUNNING = 1
# A running job beats at least this often while it reads events; one silent for longer
# lost its process (a restart, a crash) and no longer blocks a new one.
STALE_AFTER = timedelta(minutes=10)
PROGRESS_EVERY_SECONDS = 0.5
INTERRUPTED = "interrupted: the process running it stopped before it finished"


@dataclass(frozen=True)
class JobSettings:
    """What a job needs of the app's settings, passed in: the thread has no app context."""

    checkpoint_dir: str
    ledger_key: LedgerKey | None
    suppression_key: bytes | None


def running_job(session, now: datetime) -> LedgerVerifyJob | None:
    """The job running now, if any; a stale one is closed as interrupted (caller commits)."""
    job = session.execute(
        select(LedgerVerifyJob).where(LedgerVerifyJob.running == RUNNING)
    ).scalar_one_or_none()
    if job is not None and now - job.beat_at > STALE_AFTER:
        job.running = None
        job.finished_at = now
        job.message = INTERRUPTED
        return None
    return job


def latest_job(session) -> LedgerVerifyJob | None:
    """The most recent job, running or finished (the dashboard shows it)."""
    return session.execute(
        select(LedgerVerifyJob).order_by(LedgerVerifyJob.id.desc()).limit(1)
    ).scalar_one_or_none()


def start_job(database: Database, staff, *, now: datetime, ip: str | None) -> tuple[int, bool]:
    """Open a job for `staff` unless one runs; returns (job id, whether this call opened it).

    The caller then runs `run_job(…, job id)` in the background when it opened one.
    """
    try:
        with database.transaction() as session:
            current = running_job(session, now)
            if current is not None:
                return current.id, False
            job = LedgerVerifyJob(
                requested_by=staff.email,
                requested_at=now,
                running=RUNNING,
                beat_at=now,
                done=0,
            )
            session.add(job)
            session.flush()
            audit.record_access(
                session,
                staff=staff,
                action=audit.LEDGER_VERIFY_STARTED,
                at=now,
                target="ledger",
                query={"job": job.id},
                ip=ip,
            )
            return job.id, True
    except IntegrityError:
        # Another process opened one between our look and our insert: that one runs.
        with database.transaction(write=False) as session:
            current = session.execute(
                select(LedgerVerifyJob).where(LedgerVerifyJob.running == RUNNING)
            ).scalar_one()
            return current.id, False


def run_job(
    database: Database,
    job_id: int,
    settings: JobSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Verify the whole ledger for job `job_id`, writing progress and then the outcome."""
    last_beat = [float("-inf")]

    def progress(done: int, total: int) -> None:
        if clock() - last_beat[0] < PROGRESS_EVERY_SECONDS and done < total:
            return
        last_beat[0] = clock()
        with database.transaction() as session:
            job = session.get(LedgerVerifyJob, job_id)
            job.done, job.total, job.beat_at = done, total, utcnow()

    try:
        anchors = LedgerAnchors(CheckpointDirectory(settings.checkpoint_dir), settings.ledger_key)
        with database.transaction(write=False) as session:
            result = verify_ledger(
                session,
                progress=progress,
                anchors=anchors,
                suppression_key=settings.suppression_key,
            )
        with database.transaction() as session:
            checkpoint = record_checkpoint(session, result)
            session.flush()
            job = session.get(LedgerVerifyJob, job_id)
            finished = utcnow()
            job.running, job.finished_at, job.beat_at = None, finished, finished
            job.ok, job.message, job.checkpoint_id = result.ok, result.message, checkpoint.id
            job.done = result.events
            job.total = max(job.total or 0, result.events)
            audit.record_access(
                session,
                staff=None,
                staff_email=job.requested_by,
                action=audit.LEDGER_VERIFY,
                at=finished,
                target="ledger intact" if result.ok else "ledger FAILED",
                query={"job": job_id, "first_bad_event": result.first_bad_event_id},
                row_count=result.events,
            )
    except Exception as error:
        logger.exception("ledger verify job %s could not finish", job_id, extra={"job": job_id})
        with database.transaction() as session:
            job = session.get(LedgerVerifyJob, job_id)
            job.running, job.finished_at = None, utcnow()
            job.message = f"could not finish: {type(error).__name__}"
            audit.record_access(
                session,
                staff=None,
                staff_email=job.requested_by,
                action=audit.LEDGER_VERIFY,
                at=job.finished_at,
                target="ledger check did not finish",
                query={"job": job_id, "error": type(error).__name__},
            )
