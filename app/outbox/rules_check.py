"""The sending rules again, at send time, for program messages (kind ``program_message``).

A program message was decided when it was asked for (`app.sending.batches`); by the
time the sender hands it to Twilio the window may have closed (a large batch paced at
`SENDER_MPS` runs for minutes), the recipient may have opted out, or other messages
may have reached a cap. So, inside the consent hold (`app.outbox.hold`), the message
is decided again: it needs an active subscription to its program, and the windows
and caps must allow it now. If they do not, it is held back: deferred to when they
do (`HeldBack.retry_at`), or suppressed. Replies never come here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.consent.holds import RECHECK as HOLD_RECHECK
from app.consent.holds import HoldPolicy, hold_on
from app.core import flows
from app.core.places import locate
from app.core.programs import Catalog
from app.core.send_decisions import (
    PROGRAM_MESSAGE,
    Decision,
    ProgramMessage,
    Recipient,
    SendDecision,
    decide_send,
)
from app.core.sending_rules import RULESET_VERSION, RuleBook
from app.store.models import SUPPRESSED, OutboundMessage
from app.store.send_models import SEND_TIME_STAGE, RecipientProfile, SendDecisionRecord

# How far back other messages of the program count (the longest cap period, a month, and a day).
HISTORY_DAYS = 32


def message_moment():
    """When a program message went or will go out: sent, else its deferral, else its queuing."""
    return func.coalesce(
        OutboundMessage.sent_at, OutboundMessage.not_before, OutboundMessage.created_at
    )


class HeldBack(str):
    """Why a program message does not go now, as text (the suppression note), with the
    decision behind it and, for a deferral, when to try again."""

    decision: SendDecision | None
    retry_at: datetime | None
    purpose: str
    reason: str | None

    def __new__(
        cls,
        text: str,
        *,
        decision: SendDecision | None = None,
        retry_at: datetime | None = None,
        purpose: str = "",
        reason: str | None = None,
    ) -> HeldBack:
        value = super().__new__(cls, text)
        value.decision = decision
        value.retry_at = retry_at
        value.purpose = purpose
        value.reason = reason or (decision.reason if decision else None)
        return value


def refused_at_send_time(
    text: str, reason: str, rules: SendTimeRules | None, program_id: str | None
) -> HeldBack:
    """A program message the consent check refuses (`reason`: ``opted_out``, ``suppressed``,
    ``no_consent:…``): kept as a send-time decision like the rules' own refusals."""
    program = rules.catalog.get(program_id or "") if rules else None
    purpose = program.sending_purpose.value if program else ""
    return HeldBack(text, reason=reason, purpose=purpose)


@dataclass(frozen=True)
class SendTimeRules:
    """What the re-check needs besides the database: the programs and the rule book."""

    catalog: Catalog
    book: RuleBook
    holds_block: bool = True  # REVIEW_HOLDS_SENDS: a review hold defers program messages


def program_message_held_back(
    session: Session,
    message,
    status: str,
    rules: SendTimeRules,
    now: datetime,
) -> HeldBack | None:
    """None when `message` (an `OutboundMessage` or `ClaimedMessage`) may go now; else why not.

    `status` is the subscriber's status in the message's program, read under the hold.
    """
    program = rules.catalog.get(message.program_id or "")
    if program is None:
        return HeldBack("the program no longer exists")
    profile = session.get(RecipientProfile, message.subscriber_id)
    moment = message_moment()
    history = tuple(
        session.execute(
            select(moment).where(
                OutboundMessage.subscriber_id == message.subscriber_id,
                OutboundMessage.kind == PROGRAM_MESSAGE,
                OutboundMessage.program_id == message.program_id,
                OutboundMessage.id != message.id,
                OutboundMessage.status != SUPPRESSED,
                moment >= now - timedelta(days=HISTORY_DAYS),
            )
        ).scalars()
    )
    hold = hold_on(
        session,
        HoldPolicy(rules.catalog, rules.holds_block),
        message.subscriber_id,
        message.program_id,
    )
    recipient = Recipient(
        phone=message.to_number,
        location=locate(
            message.to_number,
            profile.state if profile else None,
            profile.zip_code if profile else None,
        ),
        status=status,
        purchased_on=profile.purchased_on if profile else None,
        history=history,
        held_until=now + HOLD_RECHECK if hold else None,
    )
    decision = decide_send(
        ProgramMessage(program.id, program.sending_purpose, program_cap=program.frequency_cap),
        recipient,
        now,
        rules.book,
    )
    if decision.decision == Decision.SEND:
        return None
    purpose = program.sending_purpose.value
    if decision.decision == Decision.DEFERRED:
        return HeldBack(
            f"deferred at send time: {decision.reason}",
            decision=decision,
            retry_at=decision.not_before,
            purpose=purpose,
        )
    text = "the recipient has opted out" if status == flows.OPTED_OUT else decision.reason
    return HeldBack(text or "refused", decision=decision, purpose=purpose)


def record_send_time_decision(
    session: Session, message: OutboundMessage, held: HeldBack, now: datetime
) -> None:
    """Keep what the send-time re-check decided about a program message it held back: the
    proof that it did not go out, and why."""
    decision = held.decision
    session.add(
        SendDecisionRecord(
            batch_id=message.batch_id,
            subscriber_id=message.subscriber_id,
            to_number=message.to_number,
            program_id=message.program_id or "",
            purpose=held.purpose or "marketing",
            stage=SEND_TIME_STAGE,
            decision=decision.decision.value if decision else Decision.REFUSED.value,
            reason=(held.reason or str(held))[:120],
            rule_id=decision.rule_id if decision else None,
            citation=decision.citation if decision else None,
            not_before=decision.not_before if decision else None,
            decided_at=now,
            local_time=decision.local_time.isoformat() if decision else None,
            jurisdiction=decision.jurisdiction if decision else None,
            ruleset=RULESET_VERSION,
            outbound_id=message.id,
            detail={"note": str(held)},
        )
    )
