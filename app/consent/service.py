"""The consent service: the one way a number's consent changes.

Every status change (a subscriber's text, a carrier opt-out reported by Twilio's
error 21610, a staff decision on the review queue, an import, an erasure) runs
the same steps, here:

1. **Lock the number** (`_number_locked`, the only place that takes it). On
   SQLite an exclusive lock on the number (`Database.number_guard`), which the
   sender holds shared from its send-time consent check until Twilio has
   answered; on PostgreSQL the subscriber row, locked by the store's load (or,
   on the hot path, moved only if nothing moved it meanwhile) while the sender
   holds it ``FOR SHARE``. An opt-out therefore commits either before a reply's
   consent check (the reply is suppressed) or after Twilio took it, never between.
2. **Load** the number's state through a `ConsentStore`.
3. **Decide**, purely: the path's planner runs `app.core.flows` and builds a
   `ConsentPlan` (`app.core.consent_plan`), sealing the ledger event.
4. **Write** the plan: append the event, apply the status changes, quieten the
   outbox after an opt-out, queue the replies; commit.

Callers never take the lock themselves: the web, staff and CLI edges call
`record_text`, `change_consent` or `run_locked`. The in-transaction helpers
(`change_in_session`, and the review and callback functions built on it) are
for code already inside `run_locked`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.consent import inbound
from app.core import flows
from app.core.consent_plan import (
    DUPLICATE,
    ConsentPlan,
    LoadedState,
    OutboxQuieting,
    Written,
    plan_and_write,
    seal,
    subscription_rows,
)
from app.core.keywords import Intent
from app.core.ledger_hashing import EventKind, NewEvent
from app.core.opt_out_scope import opt_out_scope
from app.core.programs import Catalog
from app.store.consent_sql import SessionConsentStore
from app.store.db import Database
from app.store.errors import ConnectionLost, DatabaseUnavailable, translate_errors
from app.store.hot_path import open_hot_store
from app.store.models import ConsentEvent

logger = logging.getLogger(__name__)

CARRIER_OPT_OUT = EventKind.CARRIER_OPT_OUT
T = TypeVar("T")


@contextmanager
def _number_locked(database: Database, phone: str | None) -> Iterator[None]:
    """The opt-out lock: every consent change of `phone` holds it until it commits.

    The one place it is taken (a test holds every path to it). On PostgreSQL the
    subscriber row is the lock, taken by the store; this adds nothing there.
    """
    with database.number_guard(phone or "", exclusive=True):
        yield


# ----------------------------------------------------------------------------------------------
# Entry points: they take the lock and own the transaction


def record_text(database: Database, catalog: Catalog, text: inbound.InboundText):
    """Record an inbound text on the hot path (`app.consent.inbound`); commits.

    Returns the `InboundResult`. A pooled connection that died (the database
    restarted) fails once: the text is tried once more on a new connection, which
    is safe because a MessageSid is recorded at most once. Errors leave as
    `app.store.errors` exceptions.
    """
    for attempt in (1, 2):
        try:
            with _number_locked(database, text.from_number), open_hot_store(database) as store:
                return inbound.record_inbound_text(store, catalog, text)
        except ConnectionLost:
            if attempt == 2:
                raise
            logger.info(
                "database connection lost; trying once more on a new one",
                extra={"message_sid": text.message_sid},
            )
    raise AssertionError("unreachable")


def message_recorded(database: Database, message_sid: str) -> bool:
    """Is this MessageSid in the ledger? (False when the database cannot say.)"""
    try:
        with translate_errors(), database.transaction(write=False) as session:
            return (
                session.execute(
                    select(ConsentEvent.id).where(ConsentEvent.message_sid == message_sid)
                ).first()
                is not None
            )
    except DatabaseUnavailable:
        return False


def run_locked(database: Database, phone: str | None, work: Callable[[Session], T]) -> T:
    """Run `work` in one transaction holding `phone`'s lock; commits.

    For work that may end in a consent change of that number through
    `change_in_session`: a delivery receipt or a send failure that turns out to
    be a carrier opt-out, a staff decision, an erasure, an import row.
    """
    with _number_locked(database, phone), database.transaction() as session:
        return work(session)


def change_consent(
    database: Database,
    phone: str,
    decide: Callable[[LoadedState, Session], ConsentPlan | None],
    *,
    now: datetime,
) -> ConsentChange | None:
    """Lock `phone`, load it, decide, write the plan; commits. None when nothing changed."""
    return run_locked(
        database, phone, lambda session: change_in_session(session, phone, decide, now=now)
    )


# ----------------------------------------------------------------------------------------------
# Inside a locked transaction


@dataclass(frozen=True)
class ConsentChange:
    """What one consent change loaded, planned and wrote."""

    state: LoadedState
    plan: ConsentPlan
    written: Written

    @property
    def event_id(self) -> int:
        return self.written.event_id


def change_in_session(
    session: Session,
    phone: str | None,
    decide: Callable[[LoadedState, Session], ConsentPlan | None],
    *,
    now: datetime,
    subscriber_id: int | None = None,
) -> ConsentChange | None:
    """Load, decide and write one change in the caller's transaction.

    The caller holds the number's lock (`run_locked`). A number already erased
    has no phone: its subscriber row is named by `subscriber_id` instead.
    """
    store = SessionConsentStore(session, subscriber_id=subscriber_id)
    outcome = plan_and_write(store, phone or "", lambda state: decide(state, session), now=now)
    if outcome is None or outcome is DUPLICATE:
        return None
    return ConsentChange(*outcome)


# ----------------------------------------------------------------------------------------------
# Carrier opt-outs (Twilio error 21610)


def plan_carrier_opt_out(
    state: LoadedState,
    *,
    phone: str,
    program_ids: list[str],
    occurred_at: datetime,
    error_code: int,
    number_texted: str | None,
    message_sid: str | None,
    scope_note: str | None = None,
) -> ConsentPlan | None:
    """Every program concerned moves to ``opted_out``, with no reply (the carrier blocks it).

    None when the number was already opted out everywhere: nothing new to record.
    """
    program_ids = program_ids or sorted(state.subscriptions)
    states = {pid: s for pid, s in state.subscriptions.items() if pid in program_ids}
    decision = flows.opt_out(program_ids, states, occurred_at)
    if not decision.changes:
        return None
    primary = decision.change_for(decision.primary_program_id) or decision.changes[0]
    event = seal(
        state,
        NewEvent(
            kind=CARRIER_OPT_OUT,
            occurred_at=occurred_at,
            intent=Intent.OPT_OUT,
            to_number=number_texted,
            rule=f"twilio.error:{error_code}",
            program_id=primary.program_id,
            status_before=primary.before,
            status_after=primary.after,
            changes=[c.as_record() for c in decision.changes],
            note=f"Twilio refused a reply ({message_sid or 'no SID'}) with error {error_code}: "
            "the recipient has opted out at the carrier"
            + (f"; {scope_note}" if scope_note else ""),
        ),
        phone,
    )
    return ConsentPlan(
        event=event,
        intent=Intent.OPT_OUT,
        phone=phone,
        subscriber_language=state.language,
        subscriptions=subscription_rows(decision.changes, states, occurred_at),
        outbound=[],
        texts={},
        quieting=OutboxQuieting.OPT_OUT,
    )


def record_carrier_opt_out(
    session: Session,
    catalog: Catalog,
    *,
    phone: str,
    number_texted: str | None,
    program_id: str | None,
    occurred_at: datetime,
    error_code: int,
    message_sid: str | None = None,
) -> int | None:
    """Twilio says the recipient opted out at the carrier: record it and stop texting them.

    Every program its opt-out scope covers (`app.core.opt_out_scope`: those on the
    number they texted and the message's own, or from REVOKE_ALL_FROM every program
    of the brand) moves to ``opted_out``. Runs inside `run_locked` for `phone`. Returns the
    ledger event's id, or None when there was nothing new to record.
    """
    scope = opt_out_scope(catalog, number_texted, occurred_at, also=[program_id])

    def decide(state: LoadedState, _session: Session) -> ConsentPlan | None:
        return plan_carrier_opt_out(
            state,
            phone=phone,
            program_ids=list(scope.program_ids),
            occurred_at=occurred_at,
            error_code=error_code,
            number_texted=number_texted,
            message_sid=message_sid,
            scope_note=scope.note,
        )

    change = change_in_session(session, phone, decide, now=occurred_at)
    if change is None:
        return None
    logger.info(
        "carrier opt-out recorded",
        extra={"event_id": change.event_id, "error_code": error_code, "message_sid": message_sid},
    )
    return change.event_id


__all__ = [
    "CARRIER_OPT_OUT",
    "ConsentChange",
    "change_consent",
    "change_in_session",
    "plan_carrier_opt_out",
    "record_carrier_opt_out",
    "record_text",
    "run_locked",
]
