"""Record one inbound text: dedupe, classify, run the flow, append to the ledger, queue replies.

This is the webhook's hot path, split in three so that it is both fast and easy
to reason about:

1. `InboundStore.load` (SQL, `app.store.inbound_store`) reads what the decision
   needs: is this MessageSid known, the sender's chain head and subscriptions,
   the ledger's newest event (the witness).
2. `plan_inbound` (pure, below) classifies the text, runs the status machine,
   chooses the replies and their language, and seals the ledger event.
3. `InboundStore.write` writes the event, the chain head, the subscriptions and
   the outbox rows in one transaction, one round trip on PostgreSQL; if another
   text from the same number was written first, step 1 runs again.

The text, its consent event and the replies it causes are committed together or
not at all, and the caller answers Twilio only after the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from app.core import flows
from app.core.keywords import OPT_OUT, Classification, classify
from app.core.ledger_hashing import NewEvent, SealedEvent, seal_event, text_sha256
from app.core.opt_out_scope import opt_out_scope
from app.core.programs import Catalog

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


@dataclass(frozen=True)
class LoadedState:
    """What the database told us about the sender, read under the sender's row lock."""

    subscriber_id: int
    chain_seq: int
    chain_head_hash: str | None
    language: str | None
    duplicate: bool
    subscriptions: dict[str, flows.SubscriptionState]
    witness: tuple[int, str] | None
    new_subscriber: bool = False  # the id is reserved; the row is written with the event


@dataclass(frozen=True)
class SubscriptionRow:
    """A subscription as it is after the text (written with an upsert)."""

    program_id: str
    status: str
    since: datetime
    pending_since: datetime | None
    confirmed_at: datetime | None
    language: str | None


@dataclass(frozen=True)
class OutboundRow:
    """A reply to put in the outbox."""

    program_id: str
    kind: str
    language: str
    to_number: str
    from_number: str
    body: str


@dataclass(frozen=True)
class InboundPlan:
    """Everything one text changes, decided before anything is written."""

    event: SealedEvent
    intent: str
    phone: str
    subscriber_language: str | None
    subscriptions: list[SubscriptionRow]
    outbound: list[OutboundRow]
    texts: dict[str, str]  # sha256 -> text, for ledger_texts
    opted_out: bool  # an opt-out happened: quieten what is still queued

    def text_hashes(self) -> list[str]:
        return list(self.texts)


def decide_text(
    catalog: Catalog,
    to_number: str,
    body: str,
    subscriptions: dict[str, flows.SubscriptionState],
    now: datetime,
) -> tuple[Classification, dict[str, flows.SubscriptionState], flows.Decision]:
    """Classify a text sent to `to_number` and decide its status changes and replies.

    Pure. Returns the classification, the subscription states that took part (the
    number's programs and the one a keyword named) and the decision. A replay of the
    ledger calls this too, so it decides exactly as the webhook did.
    """
    programs = [p.id for p in catalog.for_number(to_number)]
    classification = classify(body, catalog.keyword_map(to_number))
    # -- Sending rules (issue 14): an opt-out covers the programs its scope rule names: those
    # on the number texted, or from REVOKE_ALL_FROM every program of the same brand.
    scope = opt_out_scope(catalog, to_number, now) if classification.intent == OPT_OUT else None
    if scope is not None:
        programs = list(scope.program_ids)
    # -- end of the sending-rules change
    program_ids = list(programs)
    if classification.program_id and classification.program_id not in program_ids:
        program_ids.append(classification.program_id)
    states = {pid: s for pid, s in subscriptions.items() if pid in program_ids}
    decision = flows.decide(
        classification.intent,
        programs_on_number=programs,
        states=states,
        confirmation_windows={
            pid: program.confirmation_window
            for pid in program_ids
            if (program := catalog.get(pid)) is not None
        },
        now=now,
        keyword_program_id=classification.program_id,
        restart=classification.restart,
    )
    if scope is not None:  # sending rules (issue 14): the ledger event records the scope rule
        decision = replace(decision, opt_out_scope=scope.note)
    return classification, states, decision


def plan_inbound(catalog: Catalog, text: InboundText, state: LoadedState) -> InboundPlan:
    """Decide what `text` does, given the sender's state. Pure: no I/O."""
    classification, states, decision = decide_text(
        catalog, text.to_number, text.body, state.subscriptions, text.received_at
    )

    language = _reply_language(classification.languages, state.language)
    texts: dict[str, str] = {}
    primary = catalog.get(decision.primary_program_id) if decision.primary_program_id else None
    disclosure_sha = None
    event_language = None
    if primary is not None:
        program_texts = primary.texts_for([language] if language else [])
        event_language = program_texts.language
        disclosure_sha = text_sha256(program_texts.disclosure)
        texts[disclosure_sha] = program_texts.disclosure

    after = {pid: s.status for pid, s in states.items()}
    for change in decision.changes:
        after[change.program_id] = change.after
    outbound: list[OutboundRow] = []
    for reply in decision.replies:
        program = catalog.get(reply.program_id)
        if program is None or not flows.reply_allowed(
            after.get(reply.program_id, flows.NONE), reply.text_name
        ):
            continue
        program_texts = program.texts_for([language] if language else [])
        outbound.append(
            OutboundRow(
                program_id=program.id,
                kind=reply.text_name,
                language=program_texts.language,
                to_number=text.from_number,
                from_number=text.to_number,
                body=getattr(program_texts, reply.text_name),
            )
        )
    reply_sha = None
    if outbound:
        reply_sha = text_sha256(outbound[0].body)
        texts[reply_sha] = outbound[0].body

    primary_change = decision.change_for(decision.primary_program_id)
    current = states.get(decision.primary_program_id) if decision.primary_program_id else None
    if primary_change:
        status_before, status_after = primary_change.before, primary_change.after
    else:
        status_before = current.status if current else (flows.NONE if primary else None)
        status_after = status_before

    event = seal_event(
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
            changes=[c.as_record() for c in decision.changes],
            possible_opt_out=classification.possible_opt_out,
            disclosure_sha256=disclosure_sha,
            reply_sha256=reply_sha,
            note=decision.opt_out_scope,  # sending rules (issue 14): the opt-out's scope rule
            body=text.body,
            body_raw=text.body_raw,
        ),
        subscriber_id=state.subscriber_id,
        phone=text.from_number,
        chain_seq=state.chain_seq,
        chain_head_hash=state.chain_head_hash,
        witness=state.witness,
    )

    subscriptions = []
    for change in decision.changes:
        new_state = flows.apply_change(
            states.get(change.program_id) or flows.SubscriptionState(), change, text.received_at
        )
        subscriptions.append(
            SubscriptionRow(
                program_id=change.program_id,
                status=new_state.status,
                since=text.received_at,
                pending_since=new_state.pending_since,
                confirmed_at=new_state.confirmed_at,
                language=language,
            )
        )
    return InboundPlan(
        event=event,
        intent=classification.intent,
        phone=text.from_number,
        subscriber_language=language if classification.languages else state.language,
        subscriptions=subscriptions,
        outbound=outbound,
        texts=texts,
        opted_out=any(c.after == flows.OPTED_OUT for c in decision.changes),
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


MAX_ATTEMPTS = 20


def record_inbound_text(store: Any, catalog: Catalog, text: InboundText) -> InboundResult:
    """Record `text` exactly once and queue the replies it causes; commits.

    `store` is an `app.store.inbound_store.InboundStore` on a connection of its own.
    A MessageSid seen before changes nothing. When another text from the same
    number is written between our read and our write, ours is decided again on
    the new state, so texts from one number are decided one after another while
    texts from different numbers never wait for each other.
    """
    for _attempt in range(MAX_ATTEMPTS):
        state = store.load(text.from_number, text.message_sid, text.received_at)
        if state.duplicate:
            store.abandon()
            return InboundResult(duplicate=True)
        plan = plan_inbound(catalog, text, state)
        written = store.write(plan, state)
        if written is not None:
            break
    else:
        raise RuntimeError(f"gave up after {MAX_ATTEMPTS} concurrent writes from one number")
    event_id, outbound_ids = written
    logger.info(
        "inbound text recorded",
        extra={
            "message_sid": text.message_sid,
            "event_id": event_id,
            "intent": plan.intent,
            "outbound_ids": outbound_ids,
        },
    )
    return InboundResult(
        duplicate=False, event_id=event_id, intent=plan.intent, outbound_ids=outbound_ids
    )
