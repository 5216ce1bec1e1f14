""" "May we text this number for program P, and on what evidence?" for other systems.

Answered from the `subscriptions` cache (a replay of the ledger) joined to the
ledger event that last changed each subscription, which is the evidence, and to
the disclosure text that event records. A row that disagrees with that event
(`app.ledger.binding`: changed behind the ledger's back) is never textable.
Numbers on the suppression list (erased at their owner's request) may only be
texted within a history the owner began again afterwards. A number whose possible
opt-out awaits review is on hold for the programs it would opt out of
(`app.consent.holds`): not textable, and the answer says until when it waits. A
batch of numbers costs three queries, whatever its size.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Select, String, bindparam, select
from sqlalchemy.orm import Session

from app.consent.holds import Hold, HoldPolicy, holds_of_numbers
from app.core import flows
from app.ledger.binding import changed_after, row_agrees
from app.ledger.suppression import history_may_be_texted, suppressions_for
from app.store.models import ConsentEvent, LedgerText, Subscriber, Subscription

IMPORT_KIND = "import"


@dataclass(frozen=True)
class Evidence:
    """The ledger event behind a subscription's current status."""

    event_id: int
    at: datetime
    kind: str
    intent: str
    rule: str | None
    message_sid: str | None
    disclosure_sha256: str | None
    disclosure_text: str | None
    actor: str | None
    note: str | None


@dataclass(frozen=True)
class ProgramConsent:
    """One number's standing in one program."""

    program_id: str
    status: str
    since: datetime | None
    may_text: bool
    evidence: Evidence | None
    ledger_agrees: bool = True  # False: the row disagrees with the ledger event it names
    hold: Hold | None = None  # a possible opt-out awaiting review holds this program


@dataclass
class NumberConsent:
    """One number's standing in every program it has a subscription in."""

    phone: str
    suppressed: bool = False
    programs: dict[str, ProgramConsent] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)

    def for_program(self, program_id: str) -> ProgramConsent:
        """The standing in `program_id`; ``none`` (may not text) when there is no subscription."""
        return self.programs.get(program_id) or ProgramConsent(
            program_id, flows.NONE, None, False, None, hold=self.holds.get(program_id)
        )


@functools.lru_cache(maxsize=4)
def _consent_query(dialect: str, one_program: bool) -> Select:
    """The batch query, built once per backend (building it costs more than a small batch)."""
    joined = Subscription.subscriber_id == Subscriber.id
    if one_program:
        joined = joined & (Subscription.program_id == bindparam("program_id", type_=String))
    return (
        select(
            Subscriber.phone,
            Subscriber.created_at,
            Subscription.subscriber_id,
            Subscription.program_id,
            Subscription.status,
            Subscription.since,
            ConsentEvent.id.label("event_id"),
            ConsentEvent.occurred_at,
            ConsentEvent.kind,
            ConsentEvent.intent,
            ConsentEvent.rule,
            ConsentEvent.message_sid,
            ConsentEvent.disclosure_sha256,
            ConsentEvent.actor,
            ConsentEvent.note,
            LedgerText.body.label("disclosure_text"),
            ConsentEvent.subscriber_id.label("event_subscriber_id"),
            ConsentEvent.changes,
            ConsentEvent.program_id.label("event_program_id"),
            ConsentEvent.status_after,
            changed_after(
                Subscriber.id,
                Subscription.program_id,
                ConsentEvent.seq,
                Subscriber.chain_seq,
                dialect,
            ).label("changed_later"),
        )
        .select_from(Subscriber)
        .join(Subscription, joined)
        .outerjoin(ConsentEvent, ConsentEvent.id == Subscription.last_event_id)
        .outerjoin(LedgerText, LedgerText.sha256 == ConsentEvent.disclosure_sha256)
        .where(Subscriber.phone.in_(bindparam("phones", expanding=True)))
        .order_by(Subscription.id)
    )


def consent_of_numbers(
    session: Session,
    key: bytes,
    phones: Iterable[str],
    program_id: str | None = None,
    *,
    holds: HoldPolicy | None = None,
) -> dict[str, NumberConsent]:
    """Every number's consent (in `program_id` only, when given), keyed by E.164 number.

    With `holds`, a program held by a possible opt-out awaiting review carries its
    `Hold`, and is not textable while holds block sends.
    """
    phones = list(dict.fromkeys(phones))
    answers = {phone: NumberConsent(phone) for phone in phones}
    if not phones:
        return answers
    query = _consent_query(session.get_bind().dialect.name, program_id is not None)
    rows = session.execute(query, {"phones": phones, "program_id": program_id}).all()
    suppressed = suppressions_for(session, key, phones)
    for phone in suppressed:
        answers[phone].suppressed = True
    if holds is not None:
        for phone, held in holds_of_numbers(session, holds.catalog, phones).items():
            answers[phone].holds = held
    for row in rows:
        evidence = None
        if row.event_id is not None:
            evidence = Evidence(
                event_id=row.event_id,
                at=row.occurred_at,
                kind=row.kind,
                intent=row.intent,
                rule=row.rule,
                message_sid=row.message_sid,
                disclosure_sha256=row.disclosure_sha256,
                disclosure_text=row.disclosure_text,
                actor=row.actor,
                note=row.note,
            )
        agrees = row_agrees(
            program_id=row.program_id,
            subscriber_id=row.subscriber_id,
            status=row.status,
            event_subscriber_id=row.event_subscriber_id,
            event_changes=row.changes,
            event_program_id=row.event_program_id,
            event_status_after=row.status_after,
            changed_later=bool(row.changed_later),
        )
        hold = answers[row.phone].holds.get(row.program_id)
        may_text = (
            agrees
            and row.status == flows.ACTIVE
            and history_may_be_texted(row.created_at, suppressed.get(row.phone))
            and not (hold is not None and holds is not None and holds.blocks_sends)
        )
        answers[row.phone].programs[row.program_id] = ProgramConsent(
            row.program_id, row.status, row.since, may_text, evidence, agrees, hold
        )
    return answers
