"""The sending rules' tables: where recipients are, the send API's batches, every decision.

Decision rows are the proof the console and the evidence bundle show: that nothing
went out in quiet hours, over a cap or after an opt-out. Each names its rule, the
rule's citation and the rule-set version it was made under. `to_number` is
personal data: retention (after `RETENTION_BODY_DAYS`) and erasure set it to NULL;
the row, linked to its subscriber, stays with the rest of the evidence.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.store.db import Base, utcnow
from app.store.types import BigId, UTCDateTime


class RecipientProfile(Base):
    """Where a subscriber is, and when they last bought, as far as we were told.

    `state`/`zip_code` come from an import, the API, or the ``FromState``/``FromZip``
    fields Twilio sends with an inbound text (`location_source` says which; the
    latest wins). `purchased_on` is the last purchase from the brand (Oregon exempts
    a recipient who bought within 18 months from its frequency cap).
    """

    __tablename__ = "recipient_profiles"

    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id"), primary_key=True)
    state: Mapped[str | None] = mapped_column(String(2))
    zip_code: Mapped[str | None] = mapped_column(String(5))
    location_source: Mapped[str | None] = mapped_column(String(24))
    purchased_on: Mapped[date | None] = mapped_column(Date)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SendBatch(Base):
    """One `POST /api/v1/messages` request, by its idempotency key.

    The same key with the same request (`request_sha256`) answers the same decisions
    again and queues nothing; the same key with another request is refused (409).
    Keys are per API token.
    """

    __tablename__ = "send_batches"
    __table_args__ = (UniqueConstraint("api_token_id", "idempotency_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    api_token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_sha256: Mapped[str] = mapped_column(String(64))
    program_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    recipients: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Where a decision was made: when the message was asked for, or again just before sending.
REQUEST_STAGE = "request"
SEND_TIME_STAGE = "send_time"


class SendDecisionRecord(Base):
    """One sending-rules decision on one program message to one number.

    ``request`` decisions answer the send API (``send``, ``deferred`` or ``refused``);
    ``send_time`` decisions record what the sender's re-check found when it held a
    message back (deferred again, or refused after an opt-out).
    """

    __tablename__ = "send_decisions"
    __table_args__ = (
        Index("ix_send_decisions_batch_position", "batch_id", "position"),
        Index("ix_send_decisions_subscriber", "subscriber_id", "id"),
        Index("ix_send_decisions_decided_at", "decided_at", "decision"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("send_batches.id"))
    position: Mapped[int | None] = mapped_column(Integer)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id"))
    to_number: Mapped[str | None] = mapped_column(String(64))
    program_id: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(120))
    rule_id: Mapped[str | None] = mapped_column(String(64))
    citation: Mapped[str | None] = mapped_column(Text)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    local_time: Mapped[str | None] = mapped_column(String(40))
    jurisdiction: Mapped[str | None] = mapped_column(String(200))
    ruleset: Mapped[str] = mapped_column(String(32))
    outbound_id: Mapped[int | None] = mapped_column(ForeignKey("outbound_messages.id"), index=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
