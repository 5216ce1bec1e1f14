"""Record one inbound text: dedupe, classify, run the flow, append to the ledger, queue replies.

This is the webhook's hot path, and the first kind of consent change
(`app.consent.service.record_text` takes the number's lock and opens the
store). It runs in three steps, so that it is both fast and easy to reason about:

1. `ConsentStore.load` (`app.store`) reads what the decision needs: is this
   MessageSid known, the sender's chain head and subscriptions, the ledger's
   newest event (the witness).
2. `plan_inbound` (pure, below) classifies the text, runs the status machine,
   chooses the replies and their language, and seals the ledger event.
3. `ConsentStore.write` writes the event, the chain head, the subscriptions and
   the outbox rows in one transaction, one round trip on PostgreSQL; if another
   change of the same number was written first, step 1 runs again.

The text, its consent event and the replies it causes are committed together or
not at all, and the caller answers Twilio only after the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

from app.core import flows
from app.core.consent_plan import (
    DUPLICATE,
    ConsentPlan,
    ConsentStore,
    LoadedState,
    OutboundRow,
    OutboxQuieting,
    plan_and_write,
    primary_statuses,
    seal,
    subscription_rows,
)
from app.core.keywords import OPT_OUT, Classification, Intent, classify
from app.core.ledger_hashing import EventKind, NewEvent, text_sha256
from app.core.opt_out_scope import opt_out_scope
from app.core.programs import Catalog

__all__ = [
    "INBOUND_TEXT",
    "InboundResult",
    "InboundText",
    "LoadedState",
    "decide_text",
    "plan_inbound",
    "record_inbound_text",
]

logger = logging.getLogger(__name__)

INBOUND_TEXT = EventKind.INBOUND_TEXT


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
    intent: Intent | None = None
    outbound_ids: list[int] = field(default_factory=list)


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
    classification = classify(body, catalog.keyword_map(to_number))
    # An opt-out covers the programs its scope rule names (`app.core.opt_out_scope`): those on
    # the number texted, or, from REVOKE_ALL_FROM, every program of the same brand.
    scope = opt_out_scope(catalog, to_number, now) if classification.intent == OPT_OUT else None
    if scope is not None:
        programs = program_ids = list(scope.program_ids)
    else:
        programs = catalog.programs_touched(to_number)
        program_ids = catalog.programs_touched(to_number, classification.program_id)
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
    if scope is not None:  # the ledger event records the scope rule that applied
        decision = replace(decision, opt_out_scope=scope.note)
    return classification, states, decision


def plan_inbound(catalog: Catalog, text: InboundText, state: LoadedState) -> ConsentPlan:
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

    status_before, status_after = primary_statuses(decision, states, decision.primary_program_id)
    event = seal(
        state,
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
            note=decision.opt_out_scope,  # the opt-out's scope rule
            body=text.body,
            body_raw=text.body_raw,
        ),
        text.from_number,
    )
    opted_out = any(c.after == flows.OPTED_OUT for c in decision.changes)
    return ConsentPlan(
        event=event,
        intent=classification.intent,
        phone=text.from_number,
        subscriber_language=language if classification.languages else state.language,
        subscriptions=subscription_rows(decision.changes, states, text.received_at, language),
        outbound=outbound,
        texts=texts,
        quieting=OutboxQuieting.OPT_OUT if opted_out else OutboxQuieting.NONE,
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


def record_inbound_text(store: ConsentStore, catalog: Catalog, text: InboundText) -> InboundResult:
    """Record `text` exactly once and queue the replies it causes, through `store`; commits.

    A MessageSid seen before changes nothing. The caller holds the number's lock
    and opened the store (`app.consent.service.record_text`).
    """
    outcome = plan_and_write(
        store,
        text.from_number,
        lambda state: plan_inbound(catalog, text, state),
        now=text.received_at,
        message_sid=text.message_sid,
    )
    if outcome is DUPLICATE or outcome is None:
        return InboundResult(duplicate=True)
    _state, plan, written = outcome
    logger.info(
        "inbound text recorded",
        extra={
            "message_sid": text.message_sid,
            "event_id": written.event_id,
            "intent": plan.intent,
            "outbound_ids": written.outbound_ids,
        },
    )
    return InboundResult(
        duplicate=False,
        event_id=written.event_id,
        intent=plan.intent,
        outbound_ids=written.outbound_ids,
    )
