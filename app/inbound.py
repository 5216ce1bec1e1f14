"""Record one inbound text: dedupe, classify, run the flow, append to the ledger, queue replies.

Everything here runs inside the caller's transaction, so the text, its consent
event and the replies it causes are committed together or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import flows
from app.consent import (
    apply_status_change,
    load_subscriptions,
    states_of,
    suppress_queued_after_opt_out,
)
from app.keywords import classify
from app.ledger import NewEvent, append_event, lock_subscriber, store_text
from app.models import QUEUED, ConsentEvent, OutboundMessage
from app.programs import Catalog, Program

logger = logging.getLogger(__name__)

INBOUND_TEXT = "inbound_text"


@dataclass(frozen=True)
class InboundText:
    """An inbound SMS as Twilio reported it, after validation and normalisation."""

    message_sid: str
    account_sid: str | None
    from_number: str
    to_number: str
    body: str
    body_raw: bytes | None
    received_at: datetime


@dataclass
class InboundResult:
    """What recording a text did."""

    duplicate: bool
    event_id: int | None = None
    intent: str | None = None
    outbound_ids: list[int] = field(default_factory=list)


def record_inbound_text(session: Session, catalog: Catalog, text: InboundText) -> InboundResult:
    """Record `text` exactly once and queue the replies it causes.

    A MessageSid seen before changes nothing. The subscriber row is locked first,
    so texts from one number are decided one after another against a current
    status, while texts from different numbers proceed side by side.
    """
    subscriber = lock_subscriber(session, text.from_number)
    if session.execute(
        select(ConsentEvent.id).where(ConsentEvent.message_sid == text.message_sid)
    ).first():
        return InboundResult(duplicate=True)

    programs = catalog.for_number(text.to_number)
    classification = classify(text.body, catalog.keyword_map(text.to_number))
    keyword_program = catalog.get(classification.program_id) if classification.program_id else None
    program_ids = [p.id for p in programs]
    if keyword_program and keyword_program.id not in program_ids:
        program_ids.append(keyword_program.id)

    rows = load_subscriptions(session, subscriber.id, program_ids)
    states = states_of(rows)
    decision = flows.decide(
        classification.intent,
        programs_on_number=[p.id for p in programs],
        states=states,
        confirmation_windows={
            pid: catalog.get(pid).confirmation_window for pid in program_ids if catalog.get(pid)
        },
        now=text.received_at,
        keyword_program_id=classification.program_id,
        restart=classification.restart,
    )

    language = _reply_language(classification.languages, subscriber.language)
    if classification.languages:
        subscriber.language = language

    primary = catalog.get(decision.primary_program_id) if decision.primary_program_id else None
    disclosure_sha = None
    event_language = None
    if primary is not None:
        texts = primary.texts_for([language] if language else [])
        event_language = texts.language
        disclosure_sha = store_text(session, texts.disclosure)

    replies: list[tuple[flows.Reply, Program, str, str]] = []
    after = {pid: state.status for pid, state in states.items()}
    for change in decision.changes:
        after[change.program_id] = change.after
    for reply in decision.replies:
        program = catalog.get(reply.program_id)
        if program is None or not flows.reply_allowed(
            after.get(reply.program_id, flows.NONE), reply.text_name
        ):
            continue
        texts = program.texts_for([language] if language else [])
        replies.append((reply, program, getattr(texts, reply.text_name), texts.language))

    reply_sha = store_text(session, replies[0][2]) if replies else None
    primary_change = decision.change_for(decision.primary_program_id)
    current = states.get(decision.primary_program_id) if decision.primary_program_id else None
    status_before = (
        primary_change.before
        if primary_change
        else (current.status if current else (flows.NONE if primary else None))
    )
    status_after = primary_change.after if primary_change else status_before

    event = append_event(
        session,
        subscriber,
        NewEvent(
            kind=INBOUND_TEXT,
            occurred_at=text.received_at,
            intent=classification.intent,
            message_sid=text.message_sid,
            account_sid=text.account_sid,
            to_number=text.to_number,
            rule=classification.rule,
            language=event_language,
            program_id=decision.primary_program_id,
            status_before=status_before,
            status_after=status_after,
            changes=[
                {"program": c.program_id, "before": c.before, "after": c.after}
                for c in decision.changes
            ],
            possible_opt_out=classification.possible_opt_out,
            disclosure_sha256=disclosure_sha,
            reply_sha256=reply_sha,
            body=text.body,
            body_raw=text.body_raw,
        ),
    )

    for change in decision.changes:
        apply_status_change(
            session, rows, subscriber.id, change, text.received_at, event.id, language
        )

    if any(c.after == flows.OPTED_OUT for c in decision.changes):
        suppress_queued_after_opt_out(session, subscriber.id)

    outbound_ids = []
    for reply, program, body, reply_language in replies:
        message = OutboundMessage(
            event_id=event.id,
            subscriber_id=subscriber.id,
            program_id=program.id,
            kind=reply.text_name,
            language=reply_language,
            to_number=text.from_number,
            from_number=text.to_number,
            body=body,
            status=QUEUED,
            next_attempt_at=text.received_at,
        )
        session.add(message)
        session.flush()
        outbound_ids.append(message.id)

    logger.info(
        "inbound text recorded",
        extra={
            "message_sid": text.message_sid,
            "event_id": event.id,
            "intent": classification.intent,
            "outbound_ids": outbound_ids,
        },
    )
    return InboundResult(
        duplicate=False,
        event_id=event.id,
        intent=classification.intent,
        outbound_ids=outbound_ids,
    )


def _reply_language(languages: tuple[str, ...], known: str | None) -> str | None:
    """The language to answer in: the one the subscriber used, preferring what we knew of them.

    A word shared by several languages (СТОП is Russian and Bulgarian) keeps the
    subscriber's earlier language when it is one of them.
    """
    if not languages:
        return known
    if known in languages:
        return known
    return languages[0]
