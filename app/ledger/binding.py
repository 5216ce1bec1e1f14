"""Consent state bound to the ledger: a subscription row counts only when its event agrees.

The `subscriptions` rows are a cache of the ledger, and whoever can write to the
database can change a cache: one ``UPDATE subscriptions SET status='active'``
made an opted-out number textable while every hash still verified (issue 12,
finding 2). So every decision to text (the sender, the consent API, the staff
timeline and the evidence bundle) reads the row *together with* the ledger event
it names (`last_event_id`, written in the same transaction) and trusts it only when

1. that event belongs to the same subscriber's chain;
2. it records this status for this program: its ``changes`` entry for the
   program, or else ``status_after`` when the program is its primary one;
3. no later event of the chain records a change of this program (so the row
   cannot be pointed back at an older consent). A program with no row at all
   must have no change anywhere in the chain (a deleted opt-out row).

That is one join and one index range scan on `consent_events (subscriber_id, seq)`,
not a replay: the events are hash-chained, so what they record is what
`ledger verify` checks. The full replay of every chain against the rows is
`app.ledger.replay`, run by `ledger verify`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Text, case, cast, exists, false, func, literal_column, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from app.store.models import ConsentEvent

# The sender's reason when it refuses a reply for this; metrics and the dashboard count it.
LEDGER_MISMATCH = "the subscription disagrees with the consent ledger"


def recorded_status(
    program_id: str,
    changes: Sequence[Mapping[str, Any]] | None,
    event_program_id: str | None,
    status_after: str | None,
) -> str | None:
    """The status an event records for `program_id`, or None when it records none."""
    for change in changes or ():
        if change.get("program") == program_id:
            return change.get("after")
    if event_program_id == program_id:
        return status_after
    return None


def row_agrees(
    *,
    program_id: str,
    subscriber_id: int,
    status: str | None,
    event_subscriber_id: int | None,
    event_changes: Sequence[Mapping[str, Any]] | None,
    event_program_id: str | None,
    event_status_after: str | None,
    changed_later: bool,
) -> bool:
    """Does a subscription row (or its absence, `status` None) agree with the ledger?"""
    if changed_later:
        return False
    if status is None:
        return True  # no row, and no event of the chain changes this program
    if event_subscriber_id != subscriber_id:
        return False  # no event, or another number's
    return recorded_status(program_id, event_changes, event_program_id, event_status_after) == (
        status
    )


def _changes_program(event, program_id: ColumnElement, dialect: str) -> ColumnElement[bool]:
    """SQL: does `event`'s ``changes`` list hold an entry for `program_id`?"""
    if dialect == "postgresql":
        wanted = func.jsonb_build_array(func.jsonb_build_object("program", cast(program_id, Text)))
        return cast(event.changes, JSONB).op("@>")(wanted)
    entries = func.json_each(event.changes).table_valued("value").alias("entry")
    return exists(
        select(literal_column("1"))
        .select_from(entries)
        .where(func.json_extract(entries.c.value, "$.program") == program_id)
    )


def changed_after(
    subscriber_id: ColumnElement,
    program_id: ColumnElement,
    after_seq: ColumnElement,
    chain_seq: ColumnElement,
    dialect: str,
) -> ColumnElement[bool]:
    """SQL: does an event of the chain after `after_seq` (NULL: any) change `program_id`?

    `chain_seq` is the subscriber's recorded chain length: when the named event is the
    chain's last, the events are not read at all (PostgreSQL and SQLite evaluate a
    CASE lazily).
    """
    later = aliased(ConsentEvent, name="later_event")
    any_later = exists(
        select(literal_column("1"))
        .select_from(later)
        .where(
            later.subscriber_id == subscriber_id,
            later.seq > func.coalesce(after_seq, 0),
            _changes_program(later, program_id, dialect),
        )
    )
    return case((func.coalesce(after_seq, 0) >= chain_seq, false()), else_=any_later)
