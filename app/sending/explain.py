"""`rules explain`: the decision the send API would make for one number at one moment, and why.

It goes through the very functions a batch does (`app.sending.recipients`,
`app.sending.batches`, `app.core.send_decisions`) for a body that passes the lint, so
its answer is the API's answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from app.consent.holds import HoldPolicy
from app.core.programs import Program
from app.core.send_decisions import ProgramMessage, SendDecider
from app.core.sending_rules import RuleBook
from app.sending.batches import _recipient
from app.sending.recipients import load_recipients


def explain(
    session: Session,
    *,
    program: Program,
    phone: str,
    at: datetime,
    key: bytes,
    book: RuleBook,
    holds: HoldPolicy | None = None,
) -> dict[str, Any]:
    """The contract's JSON for `rules explain`, with the details behind it."""
    facts = load_recipients(session, key, program.id, [phone], at, holds).get(phone)
    recipient = _recipient(phone, facts, {}, at)
    message = ProgramMessage(program.id, program.sending_purpose, program_cap=program.frequency_cap)
    decision = SendDecider(message, at, book).decide(recipient)
    return {
        "decision": decision.decision.value,
        "not_before": _iso(decision.not_before),
        "reason": decision.reason,
        "local_time": decision.local_time.isoformat(),
        "jurisdiction": decision.jurisdiction,
        "rule": decision.rule_id,
        "citation": decision.citation,
        "purpose": program.sending_purpose.value,
        "window": decision.window,
        "cap_count": decision.cap_count,
        "consent": {
            "status": recipient.status,
            "suppressed": recipient.suppressed,
            "held_for_review": recipient.held_until is not None,
            "purchased_on": recipient.purchased_on.isoformat() if recipient.purchased_on else None,
        },
        "location": {
            "source": recipient.location.source,
            "places": [
                {"jurisdiction": place.jurisdiction, "zone": place.zone}
                for place in recipient.location.places
            ],
        },
        "at": _iso(at),
        "ruleset": book.version,
    }


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None
