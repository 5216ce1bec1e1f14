"""The console's lookup box: whatever was typed, the number's record, or why there is none.

"May we text +1 415 555 0199?" must have an answer even when the number never
texted us ("No record: no consent held, do not text"), when it was erased (on the
suppression list: do not text), or when what was typed is not a number at all.
The readings (`app.core.phones.number_readings`) are the event log search's, so
the lookup and the search agree on what a typed number means.

Roles (issue 13): a viewer may not confirm whether a given number is in the
ledger, so a viewer's lookup never searches by a full number: it answers the same
whatever the number, and searches only by the last two digits, which every
masked number already shows. Compliance officers look up any number, or the
last one to four digits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.phones import NumberReading, mask_for_display, number_readings
from app.ledger.suppression import phone_hmac, suppressions_for
from app.store.models import Subscriber

SUFFIX_MAX = 4  # at most this many digits are read as "a number ending in …"
VIEWER_SUFFIX_MAX = 2  # what the viewer mask shows
TYPED_MAX = 64
MATCHES_MAX = 50


class LookupOutcome(StrEnum):
    EMPTY = "empty"
    NOT_A_NUMBER = "not_a_number"
    NOT_ALLOWED = "not_allowed"  # a viewer typed more than the mask shows
    NO_RECORD = "no_record"
    FOUND = "found"


@dataclass(frozen=True)
class Match:
    subscriber_id: int
    phone: str
    reading: NumberReading | None  # None for a search by the last digits


@dataclass
class Lookup:
    typed: str
    outcome: LookupOutcome
    readings: list[NumberReading] = field(default_factory=list)
    matches: list[Match] = field(default_factory=list)
    suffix: str | None = None  # set when the digits were read as the end of a number
    erased: dict[str, datetime] = field(default_factory=dict)  # reading -> erased at
    more: bool = False  # more matches than shown

    def audit_query(self, key: bytes) -> dict:
        """What the access audit log keeps: never a number in full (it is append-only)."""
        query: dict = {"lookup": self.outcome.value}
        if self.suffix:
            query["ending"] = "•" * (len(self.suffix) - 2) + self.suffix[-2:]
        if self.readings:
            query["phone"] = mask_for_display(self.readings[0].e164)
            query["phone_hmac"] = [phone_hmac(key, r.e164) for r in self.readings]
        return query


def _digits(typed: str) -> str:
    return "".join(ch for ch in typed if ch.isdigit())


def _is_suffix(typed: str, limit: int) -> bool:
    """Only digits (and spaces), at most `limit` of them, no +: the end of a number."""
    digits = _digits(typed)
    return bool(digits) and len(digits) <= limit and set(typed) <= set("0123456789 ")


def look_up(
    session: Session,
    typed: str,
    *,
    region: str,
    full_numbers: bool,
    suppression_key: bytes,
) -> Lookup:
    """Read `typed` and find the numbers it means.

    `full_numbers`: may this role search by a whole number (compliance and up)?
    """
    typed = typed.strip()[:TYPED_MAX]
    if not typed:
        return Lookup(typed, LookupOutcome.EMPTY)
    if not _digits(typed) or any(ch.isalpha() for ch in typed):
        return Lookup(typed, LookupOutcome.NOT_A_NUMBER)
    limit = SUFFIX_MAX if full_numbers else VIEWER_SUFFIX_MAX
    if _is_suffix(typed, limit):
        return _by_suffix(session, typed, _digits(typed))
    if not full_numbers:
        # The same answer whatever the number: nothing is searched, so nothing is confirmed.
        return Lookup(typed, LookupOutcome.NOT_ALLOWED)
    readings = number_readings(typed, region)
    if not readings:
        return Lookup(typed, LookupOutcome.NOT_A_NUMBER)
    by_phone = {r.e164: r for r in readings}
    rows = session.execute(
        select(Subscriber.id, Subscriber.phone)
        .where(Subscriber.phone.in_(list(by_phone)))
        .order_by(Subscriber.id)
    ).all()
    matches = [Match(row.id, row.phone, by_phone[row.phone]) for row in rows]
    lookup = Lookup(
        typed,
        LookupOutcome.FOUND if matches else LookupOutcome.NO_RECORD,
        readings=readings,
        matches=matches,
    )
    unmatched = [r.e164 for r in readings if all(m.phone != r.e164 for m in matches)]
    lookup.erased = suppressions_for(session, suppression_key, unmatched)
    return lookup


def _by_suffix(session: Session, typed: str, digits: str) -> Lookup:
    rows = session.execute(
        select(Subscriber.id, Subscriber.phone)
        .where(Subscriber.phone.is_not(None), Subscriber.phone.endswith(digits, autoescape=True))
        .order_by(Subscriber.id)
        .limit(MATCHES_MAX + 1)
    ).all()
    matches = [Match(row.id, row.phone, None) for row in rows[:MATCHES_MAX]]
    return Lookup(
        typed,
        LookupOutcome.FOUND if matches else LookupOutcome.NO_RECORD,
        matches=matches,
        suffix=digits,
        more=len(rows) > MATCHES_MAX,
    )
