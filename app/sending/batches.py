"""A batch of program messages: decide every recipient, queue what may go, keep every decision.

`submit_batch` is the send API's one service call, in the caller's transaction:

1. The idempotency key: a batch already made with this key (per API token) answers
   again from its stored decisions and queues nothing; a different request under
   the same key is `IdempotencyConflict` (409).
2. What is known of the recipients (`app.sending.recipients`), a few queries per
   2,000 numbers.
3. One decision per recipient, in order (`app.core.send_decisions`): a number given
   twice counts its first message against the caps of its second.
4. Accepted and deferred messages go into the outbox (`outbound_messages`, kind
   ``program_message``; a deferred one with `next_attempt_at` = `not_before`), so
   they share the replies' pacing, their send-time consent check and the sending
   rules' re-check (`app.outbox.rules_check`); every decision goes into
   `send_decisions`, refusals included.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, func, select, text
from sqlalchemy.orm import Session

from app.consent.holds import RECHECK as HOLD_RECHECK
from app.consent.holds import HoldPolicy
from app.core.places import locate
from app.core.program_lint import lint_message_body
from app.core.programs import Program
from app.core.send_decisions import (
    PROGRAM_MESSAGE,
    ProgramMessage,
    Recipient,
    SendDecider,
    SendDecision,
)
from app.core.sending_rules import RuleBook
from app.outbox.records import notify_outbox
from app.sending.recipients import RecipientFacts, load_recipients
from app.store.models import QUEUED, OutboundMessage
from app.store.send_models import REQUEST_STAGE, SendBatch, SendDecisionRecord

logger = logging.getLogger(__name__)

MAX_RECIPIENTS = 10_000


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different request."""


@dataclass(frozen=True)
class BatchResult:
    """One recipient's answer, as the API returns it."""

    to: str | None
    decision: str
    not_before: datetime | None
    reason: str | None
    message_id: int | None
    rule: str | None = None
    citation: str | None = None


@dataclass(frozen=True)
class BatchAnswer:
    """The answer to a batch: its public id and one result per recipient, in order."""

    batch: str
    results: list[BatchResult]
    replayed: bool = False

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.decision] = counts.get(result.decision, 0) + 1
        return counts


def request_fingerprint(program_id: str, body: str, recipients: list[str]) -> str:
    """The SHA-256 of a request as given: the same key must come with the same request."""
    canonical = json.dumps(
        {"program": program_id, "body": body, "to": recipients},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def submit_batch(
    session: Session,
    *,
    program: Program,
    body: str,
    phones: list[str],
    fingerprint: str,
    idempotency_key: str,
    api_token_id: int | None,
    key: bytes,
    book: RuleBook,
    now: datetime,
    holds: HoldPolicy | None = None,
) -> BatchAnswer:
    """Decide and queue one batch (module docstring); `phones` are E.164, in request order.

    With `holds`, a number whose possible opt-out awaits review is deferred (not sent).
    """
    earlier = session.execute(
        select(SendBatch).where(
            SendBatch.api_token_id == api_token_id, SendBatch.idempotency_key == idempotency_key
        )
    ).scalar_one_or_none()
    if earlier is not None:
        if earlier.request_sha256 != fingerprint:
            raise IdempotencyConflict(idempotency_key)
        return stored_answer(session, earlier)

    batch = SendBatch(
        public_id="b_" + secrets.token_urlsafe(12),
        api_token_id=api_token_id,
        idempotency_key=idempotency_key,
        request_sha256=fingerprint,
        program_id=program.id,
        body=body,
        recipients=len(phones),
        created_at=now,
    )
    session.add(batch)
    session.flush()  # a concurrent twin with the same key fails here, on the unique index

    message = ProgramMessage(
        program.id,
        program.sending_purpose,
        body_problems=lint_message_body(program, body),
        program_cap=program.frequency_cap,
    )
    facts = load_recipients(session, key, program.id, phones, now, holds)
    decider = SendDecider(message, now, book)
    history: dict[int, list[datetime]] = {}
    decisions: list[tuple[str, RecipientFacts | None, SendDecision]] = []
    for phone in phones:
        known = facts.get(phone)
        decision = decider.decide(_recipient(phone, known, history, now))
        if known is not None and decision.queued:
            history.setdefault(known.subscriber_id, list(known.history)).append(
                decision.send_at(now)
            )
        decisions.append((phone, known, decision))

    outbound_ids = _queue(session, batch, program, body, decisions, now)
    _record(session, batch, program, decisions, outbound_ids, book, now)
    if outbound_ids:
        notify_outbox(session)
    answer = BatchAnswer(
        batch.public_id,
        [
            BatchResult(
                to=phone,
                decision=decision.decision.value,
                not_before=decision.not_before,
                reason=decision.reason,
                message_id=outbound_ids.get(position),
                rule=decision.rule_id,
                citation=decision.citation,
            )
            for position, (phone, _known, decision) in enumerate(decisions)
        ],
    )
    logger.info(
        "send batch decided",
        extra={"batch": batch.public_id, "program": program.id, **answer.counts()},
    )
    return answer


def _recipient(
    phone: str, known: RecipientFacts | None, history: dict[int, list[datetime]], now: datetime
) -> Recipient:
    if known is None:
        return Recipient(phone=phone, location=locate(phone), status="none")
    return Recipient(
        phone=phone,
        location=locate(phone, known.state, known.zip_code),
        status=known.status,
        suppressed=known.suppressed,
        purchased_on=known.purchased_on,
        history=tuple(history.get(known.subscriber_id, known.history)),
        held_until=now + HOLD_RECHECK if known.held else None,
    )


def _queue(
    session: Session,
    batch: SendBatch,
    program: Program,
    body: str,
    decisions: list[tuple[str, RecipientFacts | None, SendDecision]],
    now: datetime,
) -> dict[int, int]:
    """Insert the accepted and deferred messages; `{position: outbound id}`."""
    rows: list[dict[str, Any]] = []
    positions: list[int] = []
    for position, (phone, known, decision) in enumerate(decisions):
        if not decision.queued or known is None:
            continue
        positions.append(position)
        rows.append(
            {
                "subscriber_id": known.subscriber_id,
                "program_id": program.id,
                "kind": PROGRAM_MESSAGE,
                "to_number": phone,
                "from_number": program.numbers[0] if program.numbers else known.last_number_texted,
                "body": body,
                "status": QUEUED,
                "attempts": 0,
                "next_attempt_at": decision.send_at(now),
                "created_at": now,
                "updated_at": now,
                "decision": decision.decision.value,
                "not_before": decision.not_before,
                "reason": decision.reason,
                "batch_id": batch.id,
            }
        )
    if not rows:
        return {}
    ids = allocate_ids(session, OutboundMessage.__table__, len(rows))
    for row, row_id in zip(rows, ids, strict=True):
        row["id"] = row_id
    bulk_insert(session, OutboundMessage.__table__, rows)
    return dict(zip(positions, ids, strict=True))


def bulk_insert(session: Session, table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows: PostgreSQL's COPY, else a multi-row INSERT."""
    if session.get_bind().dialect.name != "postgresql":
        session.execute(table.insert(), rows)
        return
    columns = list(rows[0])
    json_columns = {c.name for c in table.columns if isinstance(c.type, JSON)}
    cursor = session.connection().connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(
                [
                    json.dumps(row[c]) if c in json_columns and row[c] is not None else row[c]
                    for c in columns
                ]
            )


def allocate_ids(session: Session, table, count: int) -> list[int]:
    """`count` new ids for `table`, taken before inserting (one round trip).

    Inserting many rows and reading their ids back (RETURNING, in order) cost several
    times the inserts themselves; ids taken first let the rows go in as plain multi-row
    INSERTs. PostgreSQL: from the table's sequence. SQLite: after the largest id, under the
    write lock this transaction already holds.
    """
    if session.get_bind().dialect.name == "postgresql":
        return list(
            session.execute(
                text(
                    f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) "
                    "FROM generate_series(1, :count)"
                ),
                {"count": count},
            ).scalars()
        )
    largest = session.execute(select(func.max(table.c.id))).scalar() or 0
    return list(range(largest + 1, largest + 1 + count))


def _record(
    session: Session,
    batch: SendBatch,
    program: Program,
    decisions: list[tuple[str, RecipientFacts | None, SendDecision]],
    outbound_ids: dict[int, int],
    book: RuleBook,
    now: datetime,
) -> None:
    """Keep every decision, refusals included."""
    purpose = program.sending_purpose.value
    rows = [
        {
            "batch_id": batch.id,
            "position": position,
            "subscriber_id": known.subscriber_id if known else None,
            "to_number": phone,
            "program_id": program.id,
            "purpose": purpose,
            "stage": REQUEST_STAGE,
            "decision": decision.decision.value,
            "reason": decision.reason,
            "rule_id": decision.rule_id,
            "citation": decision.citation,
            "not_before": decision.not_before,
            "decided_at": now,
            "local_time": decision.local_time.isoformat(),
            "jurisdiction": decision.jurisdiction[:200],
            "ruleset": book.version,
            "outbound_id": outbound_ids.get(position),
            "detail": {
                "location": decision.location_source,
                "window": decision.window,
                "cap_count": decision.cap_count,
            },
        }
        for position, (phone, known, decision) in enumerate(decisions)
    ]
    bulk_insert(session, SendDecisionRecord.__table__, rows)


def stored_answer(session: Session, batch: SendBatch) -> BatchAnswer:
    """The answer a batch gave, rebuilt from its decisions (an idempotent retry)."""
    rows = session.execute(
        select(SendDecisionRecord)
        .where(
            SendDecisionRecord.batch_id == batch.id,
            SendDecisionRecord.stage == REQUEST_STAGE,
        )
        .order_by(SendDecisionRecord.position)
    ).scalars()
    return BatchAnswer(
        batch.public_id,
        [
            BatchResult(
                to=row.to_number,
                decision=row.decision,
                not_before=row.not_before,
                reason=row.reason,
                message_id=row.outbound_id,
                rule=row.rule_id,
                citation=row.citation,
            )
            for row in rows
        ],
        replayed=True,
    )


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None
