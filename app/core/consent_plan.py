"""What one consent change writes, decided before anything is written. Pure: no I/O.

Every change of a number's consent (an inbound text, a carrier opt-out, a staff
decision, an import, an erasure) is made the same way, by
`app.consent.service`: under the number's lock a `ConsentStore` loads the
number's `LoadedState`, a pure planner turns it into a `ConsentPlan`, and the
store writes the plan in one transaction. The plan is the one definition of
what a change writes:

- the sealed ledger event (hash-chained to the number's chain head, witnessing
  the ledger's newest event) and the texts it references;
- the chain head and the subscriber's language (and number: an erasure clears it);
- each program's subscription row that changed, naming the event;
- after an opt-out, the outbox quietened (`OutboxQuieting`);
- the replies to queue.

The stores (`app.store`) differ only in how they move these rows: raw driver
SQL on the inbound hot path, SQLAlchemy Core elsewhere; a parity test runs the
same plans through each and compares the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, Protocol, runtime_checkable

from app.core import flows
from app.core.ledger_hashing import NewEvent, SealedEvent, seal_event, text_sha256


@dataclass(frozen=True)
class LoadedState:
    """What the store read of one number, under its lock, before deciding."""

    subscriber_id: int
    chain_seq: int
    chain_head_hash: str | None
    language: str | None
    duplicate: bool  # the MessageSid is already in the ledger (inbound texts only)
    subscriptions: dict[str, flows.SubscriptionState]
    witness: tuple[int, str] | None  # (id, hash) of the newest event in the ledger
    new_subscriber: bool = False  # no row yet: the id is reserved, the row written with the event
    existed: bool = True  # the number had a subscriber row before this change


@dataclass(frozen=True)
class SubscriptionRow:
    """A subscription as it is after the change (written with an upsert).

    `language` None keeps the language the row had.
    """

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
    from_number: str | None
    body: str


class OutboxQuieting(StrEnum):
    """What the change does to messages still queued for the number."""

    NONE = "none"
    # An opt-out: everything queued but the replies an opted-out number may still get.
    OPT_OUT = "opt_out"
    # An erasure: everything queued, replies included; there is no number left to text.
    ERASURE = "erasure"


@dataclass(frozen=True)
class ConsentPlan:
    """Everything one consent change writes, decided before anything is written."""

    event: SealedEvent
    intent: str
    phone: str | None  # the number the subscriber row keeps (None: erased)
    subscriber_language: str | None
    subscriptions: list[SubscriptionRow]
    outbound: list[OutboundRow]
    texts: dict[str, str]  # sha256 -> text, for ledger_texts
    quieting: OutboxQuieting = OutboxQuieting.NONE
    # When the change is recorded, when that differs from the event's time (an import of
    # consent given earlier): the time of the stored texts and the queued replies.
    recorded_at: datetime | None = None

    @property
    def written_at(self) -> datetime:
        return self.recorded_at or self.event.fields["occurred_at"]

    @property
    def opted_out(self) -> bool:
        """An opt-out happened: what is still queued is quietened."""
        return self.quieting is not OutboxQuieting.NONE

    def text_hashes(self) -> list[str]:
        return list(self.texts)


class Written(NamedTuple):
    """What a store wrote: the event's id and the outbox rows' ids."""

    event_id: int
    outbound_ids: list[int]


@runtime_checkable
class ConsentStore(Protocol):
    """Loads a number's state and writes a plan, in one transaction of its own.

    `load` locks the number for the rest of the transaction or, on the
    PostgreSQL hot path, notes where its chain head was; `write` returns None
    when another change of the number was written in between (the caller
    decides again on fresh state), else the ids written, and commits.
    """

    def load(self, phone: str, message_sid: str | None, now: datetime) -> LoadedState: ...

    def write(self, plan: ConsentPlan, state: LoadedState) -> Written | None: ...

    def abandon(self) -> None: ...


MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class Duplicate:
    """The MessageSid is in the ledger already: nothing was written."""


DUPLICATE = Duplicate()


def plan_and_write(
    store: ConsentStore,
    phone: str,
    decide: Callable[[LoadedState], ConsentPlan | None],
    *,
    now: datetime,
    message_sid: str | None = None,
) -> tuple[LoadedState, ConsentPlan, Written] | Duplicate | None:
    """Load the number's state, decide a plan, write it; decide again if the state moved.

    Returns what was loaded, planned and written; `DUPLICATE` for a MessageSid
    seen before; None when `decide` found nothing to change. When another change
    of the same number was written between our load and our write (the
    PostgreSQL hot path does not lock), the change is decided again on the new
    state, so changes of one number are decided one after another while
    different numbers never wait for each other.
    """
    for _attempt in range(MAX_ATTEMPTS):
        state = store.load(phone, message_sid, now)
        if state.duplicate:
            store.abandon()
            return DUPLICATE
        plan = decide(state)
        if plan is None:
            store.abandon()
            return None
        written = store.write(plan, state)
        if written is not None:
            return state, plan, Written(*written)
    raise RuntimeError(f"gave up after {MAX_ATTEMPTS} concurrent changes of one number")


# ----------------------------------------------------------------------------------------------
# Building plans


def seal(state: LoadedState, new: NewEvent, phone: str | None) -> SealedEvent:
    """Seal `new` as the next event of the loaded number's chain."""
    return seal_event(
        new,
        subscriber_id=state.subscriber_id,
        phone=phone,
        chain_seq=state.chain_seq,
        chain_head_hash=state.chain_head_hash,
        witness=state.witness,
    )


def subscription_rows(
    changes: Iterable[flows.StatusChange],
    states: Mapping[str, flows.SubscriptionState],
    now: datetime,
    language: str | None = None,
) -> list[SubscriptionRow]:
    """The rows the changes leave, timestamps following statuses (`flows.apply_change`)."""
    rows = []
    for change in changes:
        after = flows.apply_change(
            states.get(change.program_id) or flows.SubscriptionState(), change, now
        )
        rows.append(
            SubscriptionRow(
                program_id=change.program_id,
                status=after.status,
                since=now,
                pending_since=after.pending_since,
                confirmed_at=after.confirmed_at,
                language=language,
            )
        )
    return rows


def primary_statuses(
    decision: flows.Decision, states: Mapping[str, flows.SubscriptionState], primary: str | None
) -> tuple[str | None, str | None]:
    """(before, after) of the program an event is filed under, changed or not.

    A program with no subscription counts as ``none``; no program at all as None.
    """
    change = decision.change_for(primary)
    if change:
        return change.before, change.after
    current = states.get(primary) if primary else None
    status = current.status if current else (flows.NONE if primary else None)
    return status, status


def texts_of(*texts: str | None) -> dict[str, str]:
    """`{sha256: text}` of the texts an event references (None skipped)."""
    return {text_sha256(text): text for text in texts if text is not None}
