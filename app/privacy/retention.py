"""Retention: personal data leaves when it is no longer needed; consent evidence stays.

The policy (`RETENTION_BODY_DAYS`, `EVIDENCE_RETENTION_YEARS`):

- After ``RETENTION_BODY_DAYS`` (default 90): the text of inbound messages
  (`consent_events.body`, `body_raw`), the recipient number and Twilio's error
  text of finished replies, Twilio's raw delivery receipts, and staff sessions
  (with their IP addresses) go.
- The minimal consent evidence stays for at least ``EVIDENCE_RETENTION_YEARS``
  (default 5, beyond the US TCPA's 4-year limitation period): every ledger row
  with its intent, rule, statuses, times, program, disclosure and reply hashes
  (the texts stay in `ledger_texts`), actor and the salted commitments to the
  number and the body. The subscriber's number stays too while it has a
  subscription: it is what an opt-out is honoured against.
- After the evidence period, the per-event salt goes as well: the commitments
  can then no longer be tied to a number. Opt-out events keep theirs at least as long
  as any sending rule requires an opt-out to be honoured (Virginia: 10 years,
  `app.core.sending_rules.OPT_OUT_RETENTION`), whatever `EVIDENCE_RETENTION_YEARS` says.
- The sending rules' decisions stay (they are the proof of what was held back and
  why); the number they name goes after ``RETENTION_BODY_DAYS``.

Ledger rows are never deleted, before or after the evidence period: deleting
one would break the hash chain that proves nothing else was removed. Only the
personal columns are set to NULL, which the append-only triggers allow and
nothing else; the hashes cover commitments to those columns, so `ledger verify`
passes after every run. Removing a number altogether is erasure (`app.privacy.erasure`).

Each step works in batches, each its own short transaction, so a large table
never holds a long lock and an interrupted run loses nothing: running again
carries on (every step only picks rows that still hold data, so it is
idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from app.core.keywords import OPT_OUT
from app.core.sending_rules import RuleBook
from app.store.db import Database
from app.store.models import (
    FINAL_MESSAGE_STATUSES,
    ConsentEvent,
    DeliveryReceipt,
    OutboundMessage,
    SendDecisionRecord,
    StaffSession,
)

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True)
class RetentionPolicy:
    """How long personal data and consent evidence are kept."""

    body_days: int = 90
    evidence_years: int = 5
    # An opt-out is honoured, and its evidence kept, at least this long (Virginia: 10 years).
    opt_out_years: int = field(default_factory=lambda: RuleBook().min_opt_out_years())

    def body_cutoff(self, now: datetime) -> datetime:
        """Personal data older than this goes."""
        return now - timedelta(days=self.body_days)

    def evidence_cutoff(self, now: datetime) -> datetime:
        """Events older than this are past the evidence period (calendar years)."""
        return _years_before(now, self.evidence_years)

    def opt_out_cutoff(self, now: datetime) -> datetime:
        """Opt-out events older than this are past both the evidence and the honouring period."""
        return _years_before(now, max(self.evidence_years, self.opt_out_years))


def _years_before(now: datetime, years: int) -> datetime:
    try:
        return now.replace(year=now.year - years)
    except ValueError:  # 29 February
        return now.replace(year=now.year - years, day=28)


@dataclass
class RetentionReport:
    """How many rows each step changed in one run."""

    bodies_redacted: int = 0
    salts_removed: int = 0
    messages_redacted: int = 0
    receipts_deleted: int = 0
    decisions_redacted: int = 0
    staff_sessions_deleted: int = 0
    batches: int = 0

    def lines(self) -> list[str]:
        return [
            f"inbound message bodies removed: {self.bodies_redacted}",
            f"ledger salts removed (past the evidence period): {self.salts_removed}",
            f"reply recipients removed: {self.messages_redacted}",
            f"delivery receipts deleted: {self.receipts_deleted}",
            f"send decisions' numbers removed: {self.decisions_redacted}",
            f"staff sessions deleted: {self.staff_sessions_deleted}",
        ]


def _batch_ids(session: Session, model, conditions: list, batch_size: int) -> list[int]:
    """The ids of the first `batch_size` rows of `model` matching `conditions`.

    Ids first, then one statement by id: the same SQL on both databases (SQLite
    has no UPDATE … LIMIT), and each batch is small enough for a short transaction.
    """
    query = select(model.id).where(*conditions).order_by(model.id).limit(batch_size)
    return list(session.execute(query).scalars())


def _clear_batch(session: Session, model, conditions: list, values: dict, batch_size: int) -> int:
    """One batch: set `values` (personal columns to NULL) on matching rows of `model`."""
    ids = _batch_ids(session, model, conditions, batch_size)
    if ids:
        session.execute(
            update(model)
            .where(model.id.in_(ids))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    return len(ids)


def _delete_batch(session: Session, model, conditions: list, batch_size: int) -> int:
    """One batch: delete matching rows of `model`."""
    ids = _batch_ids(session, model, conditions, batch_size)
    if ids:
        session.execute(delete(model).where(model.id.in_(ids)))
    return len(ids)


def redact_old_bodies(session: Session, cutoff: datetime, batch_size: int) -> int:
    """One batch: remove the text of ledger events older than `cutoff`."""
    return _clear_batch(
        session,
        ConsentEvent,
        [
            ConsentEvent.occurred_at < cutoff,
            or_(ConsentEvent.body.is_not(None), ConsentEvent.body_raw.is_not(None)),
        ],
        {"body": None, "body_raw": None},
        batch_size,
    )


def remove_expired_salts(
    session: Session, cutoff: datetime, batch_size: int, opt_out_cutoff: datetime | None = None
) -> int:
    """One batch: past the evidence period, the salt (and any body left) goes too; an opt-out's
    only past `opt_out_cutoff` (the longest an opt-out must be honoured)."""
    opt_out_cutoff = min(cutoff, opt_out_cutoff or cutoff)
    return _clear_batch(
        session,
        ConsentEvent,
        [
            ConsentEvent.occurred_at < cutoff,
            ConsentEvent.personal_salt.is_not(None),
            or_(ConsentEvent.intent != OPT_OUT, ConsentEvent.occurred_at < opt_out_cutoff),
        ],
        {"body": None, "body_raw": None, "personal_salt": None},
        batch_size,
    )


def redact_old_decisions(session: Session, cutoff: datetime, batch_size: int) -> int:
    """One batch: sending-rules decisions older than `cutoff` lose the number they name."""
    return _clear_batch(
        session,
        SendDecisionRecord,
        [SendDecisionRecord.decided_at < cutoff, SendDecisionRecord.to_number.is_not(None)],
        {"to_number": None},
        batch_size,
    )


def redact_old_messages(session: Session, cutoff: datetime, batch_size: int) -> int:
    """One batch: finished replies older than `cutoff` lose their recipient and error text.

    Their body is the program's own text, not personal data, and stays; so do
    status, SID and error code, for delivery statistics.
    """
    return _clear_batch(
        session,
        OutboundMessage,
        [
            OutboundMessage.created_at < cutoff,
            OutboundMessage.status.in_(FINAL_MESSAGE_STATUSES),
            or_(
                OutboundMessage.to_number.is_not(None),
                OutboundMessage.error_message.is_not(None),
            ),
        ],
        {"to_number": None, "error_message": None},
        batch_size,
    )


def delete_old_receipts(session: Session, cutoff: datetime, batch_size: int) -> int:
    """One batch: Twilio's raw status callbacks, long since applied to their messages."""
    return _delete_batch(
        session, DeliveryReceipt, [DeliveryReceipt.received_at < cutoff], batch_size
    )


def delete_old_staff_sessions(session: Session, cutoff: datetime, batch_size: int) -> int:
    """One batch: console sessions (and their IP addresses) long past any possible use."""
    return _delete_batch(session, StaffSession, [StaffSession.last_seen_at < cutoff], batch_size)


def run_retention(
    database: Database,
    policy: RetentionPolicy,
    now: datetime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[str, int], None] | None = None,
) -> RetentionReport:
    """Apply `policy` as of `now`: every step, batch by batch, each batch committed."""
    report = RetentionReport()
    body_cutoff = policy.body_cutoff(now)
    evidence_cutoff = policy.evidence_cutoff(now)
    steps: list[tuple[str, Callable[[Session, datetime, int], int], datetime]] = [
        ("bodies_redacted", redact_old_bodies, body_cutoff),
        (
            "salts_removed",
            lambda session, cutoff, size: remove_expired_salts(
                session, cutoff, size, policy.opt_out_cutoff(now)
            ),
            evidence_cutoff,
        ),
        ("messages_redacted", redact_old_messages, body_cutoff),
        ("receipts_deleted", delete_old_receipts, body_cutoff),
        ("decisions_redacted", redact_old_decisions, body_cutoff),
        ("staff_sessions_deleted", delete_old_staff_sessions, body_cutoff),
    ]
    for name, step, cutoff in steps:
        while True:
            with database.transaction() as session:
                changed = step(session, cutoff, batch_size)
            if not changed:
                break
            report.batches += 1
            setattr(report, name, getattr(report, name) + changed)
            if progress:
                progress(name, getattr(report, name))
            if changed < batch_size:
                break
    logger.info(
        "retention run finished",
        extra={
            "bodies_redacted": report.bodies_redacted,
            "salts_removed": report.salts_removed,
            "messages_redacted": report.messages_redacted,
            "receipts_deleted": report.receipts_deleted,
            "staff_sessions_deleted": report.staff_sessions_deleted,
        },
    )
    return report
