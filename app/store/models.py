"""Typed SQLAlchemy models.

Personal data (phone numbers, message bodies, the per-event salt) lives only in
columns that may be set to NULL by retention or erasure; the ledger's hashes
commit to salted digests of them, so the ledger still verifies after they go.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.store.db import Base, utcnow
from app.store.types import BigId, UTCDateTime


class Subscriber(Base):
    """One phone number (or verbatim sender) that has texted us.

    Its ledger events form one hash chain; `chain_seq` and `chain_head_hash`
    record the chain's head, updated in the same transaction as each append, so
    `ledger verify` notices a chain whose events were all removed. The row is
    locked (`FOR UPDATE`) while one of its texts is recorded, which serialises
    texts from the same number without making different numbers wait.
    """

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    phone: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    language: Mapped[str | None] = mapped_column(String(8))
    chain_seq: Mapped[int] = mapped_column(Integer, default=0)
    chain_head_hash: Mapped[str | None] = mapped_column(String(64))


class Subscription(Base):
    """The current status of one subscriber in one program.

    A cache of the ledger: replaying a subscriber's events gives the same status.
    `last_event_id` names the event that set it, written in the same transaction;
    a decision to text is taken only when the row agrees with that event
    (`app.ledger.binding`), and `ledger verify` replays every chain against the
    rows (`app.ledger.replay`). The status machine is drawn in `app.core.flows`.
    """

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("subscriber_id", "program_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Looked up through UNIQUE (subscriber_id, program_id).
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id"))
    program_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    language: Mapped[str | None] = mapped_column(String(8))
    last_event_id: Mapped[int] = mapped_column(
        ForeignKey("consent_events.id", name="fk_subscriptions_last_event_id")
    )


class LedgerText(Base):
    """A disclosure or reply text, stored once and referenced by its SHA-256."""

    __tablename__ = "ledger_texts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConsentEvent(Base):
    """One entry of the append-only consent ledger.

    Kinds: an inbound text, a carrier opt-out (Twilio error 21610), a staff
    decision on a text flagged as a possible opt-out (`subject_event_id`), an
    imported consent (`app.consent.importer`, the source as `actor`) and an erasure
    (`app.privacy.erasure`).
    `event_hash` covers every column except the personal ones (`body`,
    `body_raw`, `personal_salt`), which are covered through `phone_commitment`
    and `body_commitment` instead. Triggers (PostgreSQL and SQLite) refuse
    DELETE and TRUNCATE, and any UPDATE other than setting those personal
    columns to NULL.

    Tamper evidence:
    - `prev_hash` links each event to the previous one of the same subscriber
      (`seq` counts from 1), so chains append without a global lock;
    - `witness_id`/`witness_hash` name the newest event in the whole ledger when
      this one was written, so removing a whole chain breaks later events;
    - the subscriber row keeps its chain head, and `ledger verify` keeps
      checkpoints, which catch removal at the tail.
    """

    __tablename__ = "consent_events"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "seq"),
        # The event log, newest first by (occurred_at, id), and date-range searches.
        Index("ix_consent_events_occurred_at", "occurred_at", "id"),
        Index("ix_consent_events_program_occurred", "program_id", "occurred_at"),
        # The review queue: the few flagged events among millions, and their decisions.
        # Partial indexes cost nothing on the millions of ordinary inserts.
        Index(
            "ix_consent_events_flagged",
            "id",
            postgresql_where=text("possible_opt_out"),
            sqlite_where=text("possible_opt_out"),
        ),
        Index(
            "ix_consent_events_subject_event_id",
            "subject_event_id",
            postgresql_where=text("subject_event_id IS NOT NULL"),
            sqlite_where=text("subject_event_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Looked up through UNIQUE (subscriber_id, seq): no index of its own to maintain.
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id"))
    seq: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    witness_id: Mapped[int | None] = mapped_column(BigId)
    witness_hash: Mapped[str | None] = mapped_column(String(64))
    event_hash: Mapped[str] = mapped_column(String(64))

    kind: Mapped[str] = mapped_column(String(24))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    message_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    account_sid: Mapped[str | None] = mapped_column(String(64))
    to_number: Mapped[str | None] = mapped_column(String(64))

    intent: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(String(80))
    language: Mapped[str | None] = mapped_column(String(8))
    program_id: Mapped[str | None] = mapped_column(String(64))
    status_before: Mapped[str | None] = mapped_column(String(16))
    status_after: Mapped[str | None] = mapped_column(String(16))
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    possible_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    disclosure_sha256: Mapped[str | None] = mapped_column(ForeignKey("ledger_texts.sha256"))
    reply_sha256: Mapped[str | None] = mapped_column(ForeignKey("ledger_texts.sha256"))
    actor: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    # A staff decision names the flagged event it decides.
    subject_event_id: Mapped[int | None] = mapped_column(ForeignKey("consent_events.id"))

    phone_commitment: Mapped[str] = mapped_column(String(64))
    body_commitment: Mapped[str | None] = mapped_column(String(64))

    # Personal data: may only ever be set to NULL after insert.
    body: Mapped[str | None] = mapped_column(Text)
    body_raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    personal_salt: Mapped[str | None] = mapped_column(String(32))


class Suppression(Base):
    """A number erased at its owner's request, kept only as a keyed hash so it is never texted
    again by mistake (regulators advise keeping such a suppression list).

    `phone_hmac` is HMAC-SHA256 of the E.164 number under `SUPPRESSION_KEY`; the
    number itself is not kept. A history the consumer starts again by texting
    (JOIN, then YES) lives on a new subscriber row created after `suppressed_at`,
    and only such a history may be texted (`app.ledger.suppression.history_may_be_texted`).
    `event_id` is the ledger event recording the (latest) erasure.
    """

    __tablename__ = "suppressions"

    phone_hmac: Mapped[str] = mapped_column(String(64), primary_key=True)
    suppressed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("consent_events.id"))


class ImportedRow(Base):
    """One imported subscriber-list row, by a keyed hash of its content: importing the same
    row again (the same file twice) finds it here and adds no second ledger event."""

    __tablename__ = "imported_rows"

    row_hmac: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("consent_events.id"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id"), index=True)
    source: Mapped[str] = mapped_column(String(200))
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MessageStatus(StrEnum):
    """Where an outbound message is (`OutboundMessage.status`; the machine is drawn there)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"


QUEUED, SENDING, SENT, DELIVERED, UNDELIVERED, FAILED, SUPPRESSED = tuple(MessageStatus)

FINAL_MESSAGE_STATUSES = frozenset({DELIVERED, UNDELIVERED, FAILED, SUPPRESSED})

# The note on a queued message quietened because its recipient opted out.
SUPPRESSED_NOTE = "suppressed: recipient opted out"
# PostgreSQL NOTIFY channel that wakes the sender workers when a message is queued.
NOTIFY_CHANNEL = "outbox"


class OutboundMessage(Base):
    """A reply in the outbox, and what became of it.

    ::

        queued ──claim──▶ sending ──Twilio accepted──▶ sent ──callback──▶ delivered
          ▲  │                │                         │                undelivered
          │  │                │ 429 / 5xx / timeout     └──callback──▶  failed
          │  │                ▼ (attempts left)
          │  │             queued (next_attempt_at = now + backoff with jitter)
          │  │                │ no attempts left, invalid number, 21610, other 4xx
          │  │                ▼
          │  │              failed
          │  └─consent check fails at send time──▶ suppressed
          ├── a program message the sending rules defer at send time (`not_before`)
          └── a claim whose lease expired (worker died) is claimed again

    Status callbacks only move a message forward (see `app.outbox.records.STATUS_RANK`).
    """

    __tablename__ = "outbound_messages"
    __table_args__ = (
        Index("ix_outbound_messages_due", "status", "next_attempt_at"),
        Index("ix_outbound_messages_subscriber", "subscriber_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("consent_events.id"), index=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id"))
    program_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    language: Mapped[str | None] = mapped_column(String(8))
    to_number: Mapped[str | None] = mapped_column(String(64))
    from_number: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)

    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    twilio_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    delivery_status: Mapped[str | None] = mapped_column(String(24))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A program message sent through the API (kind ``program_message``): the sending rules'
    # decision when it was queued (``send`` or ``deferred`` until `not_before`, with its reason)
    # and its batch. Replies leave them empty: they are never deferred.
    decision: Mapped[str | None] = mapped_column(String(16))
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(String(120))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("send_batches.id"), index=True)


class DeliveryReceipt(Base):
    """A status callback from Twilio, kept as received.

    Callbacks can arrive before the worker has stored the message's SID; keeping
    them lets the worker apply them when it does.
    """

    __tablename__ = "delivery_receipts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_sid: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(24))
    error_code: Mapped[int | None] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SenderPace(Base):
    """A single row: the next free send slot, shared by every worker (`SENDER_MPS`)."""

    __tablename__ = "sender_pace"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_slot: Mapped[float] = mapped_column(default=0.0)


class SenderHeartbeat(Base):
    """One row per running sender worker, refreshed every `SENDER_HEARTBEAT_SECONDS`.

    `/readyz` and `/metrics` read the newest `beat_at` to tell whether anything is
    sending the outbox; a worker deletes its row when it stops cleanly, and a
    crashed worker's row simply goes stale.
    """

    __tablename__ = "sender_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class LedgerCheckpoint(Base):
    """The outcome of one `ledger verify` run, kept so the next run can spot tail removal."""

    __tablename__ = "ledger_checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)
    event_count: Mapped[int] = mapped_column(BigInteger)
    last_event_id: Mapped[int | None] = mapped_column(BigId)
    last_event_hash: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)


class LedgerVerifyJob(Base):
    """A full `ledger verify` started from the console ("Verify now"), run in the background.

    The web process runs it in a thread and writes its progress here, so any
    process serving the dashboard reads the same progress. One job at a time:
    `running` is 1 while a job runs and NULL once it ends, under a unique index, so
    two clicks at the same instant (even in two processes) start one job. A job
    whose `beat_at` went stale (its process died) is closed by the next click.
    """

    __tablename__ = "ledger_verify_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    requested_by: Mapped[str] = mapped_column(String(254))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    running: Mapped[int | None] = mapped_column(Integer, unique=True)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ok: Mapped[bool | None] = mapped_column(Boolean)
    message: Mapped[str | None] = mapped_column(Text)
    checkpoint_id: Mapped[int | None] = mapped_column(BigId)


class LedgerTreeBlock(Base):
    """One block of 1,024 consecutive ledger events (in id order) and its Merkle root.

    A cache for the transparency log (`app.ledger.transparency`): with the roots of
    complete blocks, the next checkpoint extends the tree from its last block, and
    an inclusion proof for any event reads one block of event hashes. Everything
    here is derived from `consent_events` and checked against signed checkpoints
    (`ledger verify` recomputes it), so a changed row can make a proof fail, never
    make a false one pass.
    """

    __tablename__ = "ledger_tree_blocks"

    block: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    first_event_id: Mapped[int] = mapped_column(BigId)
    last_event_id: Mapped[int] = mapped_column(BigId)
    root_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# The sending rules' tables (recipient profiles, batches, decisions) live beside these.
# Who may do what: staff accounts, their sessions and enrolments, the access audit, API
# tokens and the wrapped data keys.
from app.store.access_models import (  # noqa: E402
    ADMIN,
    COMPLIANCE,
    ENROL_CREDENTIALS,
    ENROL_TOTP,
    ROLES,
    VIEWER,
    ApiToken,
    KeyRecord,
    StaffAuditEntry,
    StaffEnrolment,
    StaffSession,
    StaffUser,
)
from app.store.send_models import RecipientProfile, SendBatch, SendDecisionRecord  # noqa: E402

__all__ = [
    "ADMIN",
    "COMPLIANCE",
    "ENROL_CREDENTIALS",
    "ENROL_TOTP",
    "ROLES",
    "VIEWER",
    "ApiToken",
    "KeyRecord",
    "RecipientProfile",
    "SendBatch",
    "SendDecisionRecord",
    "StaffAuditEntry",
    "StaffEnrolment",
    "StaffSession",
    "StaffUser",
]
