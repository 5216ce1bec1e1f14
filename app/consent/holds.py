"""Review holds: a number whose possible opt-out awaits a staff decision is held.

A text the keyword reader could not fully read as a request to stop ("Ya no quiero
mensajes, ALTO por favor" read only in part, "we have got to stop this") is flagged
`possible_opt_out` and goes to the review queue, where a compliance officer has 10
business days to decide (`app.consent.review`). Until then the subscriber who may
have said "stop" must not be treated like one who never wrote: the FCC asks that a
revocation made by "any reasonable means" be honoured, and opt-out wins.

So, for the programs the text would opt out of if it were one (its opt-out scope,
`app.core.opt_out_scope`), the number is on hold from the flagged text until the
decision:

- the sender gives it nothing but replies to its own texts: HELP answers,
  confirmations and the opt-out confirmation still go, program messages wait
  (`app.outbox.hold`), and the send API defers them (`app.sending`);
- the consent API answers `may_text: false` with the hold's reason and deadline;
- the console's verdict and the evidence bundle show it;
- the decision, a ledger event, releases it ("not an opt-out") or confirms it
  ("treat as opt-out": the number is opted out, with the one confirmation).

`REVIEW_HOLDS_SENDS=0` turns the effect off (the hold is still reported): see the
README for why one would not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from app.consent.review import review_deadline
from app.core.opt_out_scope import opt_out_scope
from app.core.programs import Catalog
from app.store.models import ConsentEvent, Subscriber

HOLD_REASON = "awaiting review of a possible opt-out"
# Up to this many numbers, their flagged texts are looked up by number (an index look-up
# each); for more (a send batch of up to 10,000), every undecided flagged text is read
# once instead. It covers the consent-check API's largest batch (1,000 numbers): on a
# ledger of 1M events with 40,000 flagged texts awaiting review, reading them all took
# 390 ms of a 590 ms request, looking up the batch's numbers 20 ms.
FEW = 1_000
# How often a held program message is looked at again (the decision may come any time).
RECHECK = timedelta(minutes=15)


@dataclass(frozen=True)
class Hold:
    """One program of one number held by one flagged text, until the decision on it."""

    program_id: str
    flagged_event_id: int
    flagged_at: datetime
    due: datetime  # the review deadline (10 business days after the text)
    reason: str = HOLD_REASON

    def json(self) -> dict:
        """The contract's `hold`: `{"reason": "…", "due": "<ISO 8601>"}` (and where from)."""
        return {
            "reason": self.reason,
            "due": _iso(self.due),
            "since": _iso(self.flagged_at),
            "event_id": self.flagged_event_id,
        }


@dataclass(frozen=True)
class HoldPolicy:
    """What holds need to know: the programs (for opt-out scopes) and whether they block."""

    catalog: Catalog
    blocks_sends: bool = True


def holds_of(
    session: Session, catalog: Catalog, subscriber_ids: Iterable[int]
) -> dict[int, dict[str, Hold]]:
    """`{subscriber_id: {program_id: Hold}}`: each program's oldest undecided flagged text."""
    wanted = set(subscriber_ids)
    if not wanted:
        return {}
    query = _flagged_query()
    if len(wanted) <= FEW:
        query = query.where(ConsentEvent.subscriber_id.in_(sorted(wanted)))
    rows = [row for row in session.execute(query) if row.subscriber_id in wanted]
    return _by_key(catalog, rows, lambda row: row.subscriber_id)


def holds_of_numbers(
    session: Session, catalog: Catalog, phones: Iterable[str]
) -> dict[str, dict[str, Hold]]:
    """`{phone: {program_id: Hold}}` for the numbers among `phones` that are held; one query."""
    wanted = set(phones)
    if not wanted:
        return {}
    query = _flagged_query().join(Subscriber, Subscriber.id == ConsentEvent.subscriber_id)
    if len(wanted) <= FEW:
        query = query.where(Subscriber.phone.in_(sorted(wanted)))
    rows = [row for row in session.execute(query.add_columns(Subscriber.phone))]
    return _by_key(catalog, [r for r in rows if r.phone in wanted], lambda row: row.phone)


def _flagged_query():
    """The flagged texts still without a decision, oldest first (the partial index on flagged
    events finds them, whatever the ledger's size)."""
    decision = aliased(ConsentEvent)
    return (
        select(
            ConsentEvent.id,
            ConsentEvent.subscriber_id,
            ConsentEvent.to_number,
            ConsentEvent.program_id,
            ConsentEvent.occurred_at,
        )
        .where(
            ConsentEvent.possible_opt_out.is_(True),
            ~select(decision.id).where(decision.subject_event_id == ConsentEvent.id).exists(),
        )
        .order_by(ConsentEvent.id)
    )


def _by_key(catalog: Catalog, rows, key) -> dict:
    holds: dict = {}
    for row in rows:
        scope = opt_out_scope(catalog, row.to_number, row.occurred_at, also=[row.program_id])
        due = review_deadline(row.occurred_at)
        held = holds.setdefault(key(row), {})
        for program_id in scope.program_ids:
            held.setdefault(program_id, Hold(program_id, row.id, row.occurred_at, due))
    return holds


def hold_on(
    session: Session, policy: HoldPolicy | None, subscriber_id: int, program_id: str | None
) -> Hold | None:
    """The hold on one number's program, when holds block sends and there is one."""
    if policy is None or not policy.blocks_sends or program_id is None:
        return None
    return holds_of(session, policy.catalog, [subscriber_id]).get(subscriber_id, {}).get(program_id)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
