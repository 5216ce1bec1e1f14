"""The answer to "may we text this number, and why?", in plain words, with its grounds.

Built from an evidence bundle (`app.reports.evidence.build_evidence`), so the
console's verdict and the bundle a lawyer receives cannot disagree. Each
program's verdict names the events it rests on: "confirmed by YES at … (#2);
resumed by START at … (#6)". Confirmation and "since" are kept apart: a number
that confirmed in March, opted out in May and came back with START in June is
*confirmed* since March and *subscribed* since June.

A hold (a possible opt-out awaiting staff review, `app.consent.holds`) outranks
everything but a broken ledger: nothing is sent while it stands. Pure: dicts
in, dataclasses out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app.reports.labels import STAFF_DECISIONS

# Rules whose word is the keyword the subscriber texted ("by YES", "by START").
KEYWORD_RULES = (
    "opt_in.program_keyword",
    "opt_in.restart",
    "opt_in.join",
    "confirm.only_word",
    "opt_out.first_word",
    "opt_out.keywords_only",
    "opt_out.strong_word",
)


class VerdictState(StrEnum):
    """Why a program's answer is what it is, most serious first."""

    MISMATCH = "mismatch"  # the subscription row disagrees with its ledger event
    CHAIN_BROKEN = "chain_broken"  # this number's ledger does not verify
    HOLD = "hold"  # a possible opt-out awaits review
    OPTED_OUT = "opted_out"
    PENDING = "pending"
    NEVER = "never"
    ACTIVE = "active"


@dataclass(frozen=True)
class Ground:
    """One event a verdict rests on: what it did, when, and where it is in the chain."""

    words: str  # "confirmed by YES"
    at: str | None  # ISO 8601, UTC
    seq: int
    event_id: int


@dataclass(frozen=True)
class Hold:
    """A possible opt-out awaiting review: nothing but replies goes to the number until decided."""

    flagged_event_id: int
    flagged_at: str  # ISO 8601, UTC
    due: str  # the review deadline, ISO 8601
    program_id: str | None = None  # None: every program on the number


@dataclass(frozen=True)
class ProgramVerdict:
    program_id: str
    program_name: str
    state: VerdictState
    may_text: bool
    status: str
    since: str | None
    confirmed_at: str | None
    grounds: list[Ground] = field(default_factory=list)
    hold: Hold | None = None


@dataclass(frozen=True)
class NumberVerdict:
    may_text: bool
    programs: list[ProgramVerdict]
    chain_ok: bool
    holds: list[Hold] = field(default_factory=list)
    # Flagged texts awaiting review that do not (yet) stop sends: shown as a warning.
    open_reviews: list[Hold] = field(default_factory=list)


def trigger(event: dict[str, Any]) -> str:
    """What made an event happen, in a few words: "YES", "a carrier block", "a staff decision"."""
    kind = event.get("kind")
    if kind == "staff_decision":
        return f"a staff decision ({event.get('actor') or 'staff'})"
    if kind == "carrier_opt_out":
        return "a carrier block (Twilio error 21610)"
    if kind == "import":
        return "imported consent evidence"
    if kind == "erasure":
        return "an erasure"
    family, _, word = (event.get("rule") or "").partition(":")
    if family in KEYWORD_RULES and word:
        return word.upper()
    if family.startswith("opt_out."):
        return "a request to stop"
    return "a text"


def _changes_of(event: dict[str, Any], program_id: str) -> list[tuple[str, str]]:
    """(before, after) of `program_id` in this event, if it changed it."""
    found = [
        (c.get("before"), c.get("after"))
        for c in event.get("changes") or ()
        if c.get("program") == program_id and c.get("before") != c.get("after")
    ]
    if not found and event.get("program") == program_id and not event.get("changes"):
        before, after = event.get("status_before"), event.get("status_after")
        if after and before != after:
            found.append((before or "none", after))
    return found


def _ground(words: str, event: dict[str, Any]) -> Ground:
    return Ground(words, event.get("at"), event["seq"], event["id"])


def grounds_for(events: Sequence[dict[str, Any]], program_id: str, status: str) -> list[Ground]:
    """The events the current `status` in `program_id` rests on, oldest first."""
    moves = [(event, change) for event in events for change in _changes_of(event, program_id)]
    if not moves:
        return []
    last_event, (before, after) = moves[-1]
    if after != status:
        return []  # the row says otherwise: the verdict is a mismatch, no grounds to name
    if status == "active":
        if before == "pending" or last_event.get("kind") == "import":
            verb = "consent imported" if last_event.get("kind") == "import" else "confirmed by"
            words = verb if verb == "consent imported" else f"{verb} {trigger(last_event)}"
            return [_ground(words, last_event)]
        confirmed = next(
            (
                (event, change)
                for event, change in reversed(moves[:-1])
                if change == ("pending", "active") or event.get("kind") == "import"
            ),
            None,
        )
        grounds = []
        if confirmed is not None:
            grounds.append(_ground(f"confirmed by {trigger(confirmed[0])}", confirmed[0]))
        grounds.append(_ground(f"resumed by {trigger(last_event)}", last_event))
        return grounds
    if status == "pending":
        return [_ground(f"joined by {trigger(last_event)}; no YES since", last_event)]
    if status == "opted_out":
        grounds = [_ground(f"opted out by {trigger(last_event)}", last_event)]
        subject = last_event.get("subject_event_id")
        if last_event.get("kind") == "staff_decision" and subject:
            decided = next((e for e in events if e["id"] == subject), None)
            if decided is not None:
                grounds.insert(0, _ground("possible opt-out texted", decided))
        return grounds
    return []


def decide_verdict(
    bundle: dict[str, Any],
    programs: Iterable[Any],
    *,
    holds: Sequence[Hold] = (),
    open_reviews: Sequence[Hold] = (),
) -> NumberVerdict:
    """The verdict for every program in `programs` (objects with `id` and `name`).

    `holds` stop sends (the review-holds rule); `open_reviews` are flagged texts
    awaiting review that do not, shown as a warning only.
    """
    chain_ok = bool(bundle["verification"]["ok"])
    rows = {row["program"]: row for row in bundle["current_status"]}
    events = bundle["events"]
    verdicts = []
    for program in programs:
        row = rows.get(program.id, {})
        status = row.get("status", "none")
        agrees = row.get("ledger_agrees", True)
        hold = next((h for h in holds if h.program_id in (None, program.id)), None)
        if not agrees:  # the most specific: this row was changed behind the ledger
            state = VerdictState.MISMATCH
        elif not chain_ok:
            state = VerdictState.CHAIN_BROKEN
        elif hold is not None and status != "opted_out":
            state = VerdictState.HOLD
        else:
            state = {
                "active": VerdictState.ACTIVE,
                "pending": VerdictState.PENDING,
                "opted_out": VerdictState.OPTED_OUT,
            }.get(status, VerdictState.NEVER)
        verdicts.append(
            ProgramVerdict(
                program_id=program.id,
                program_name=program.name,
                state=state,
                may_text=state is VerdictState.ACTIVE and bool(row.get("may_text")),
                status=status,
                since=row.get("since"),
                confirmed_at=row.get("confirmed_at"),
                grounds=grounds_for(events, program.id, status) if agrees else [],
                hold=hold if state is VerdictState.HOLD else None,
            )
        )
    return NumberVerdict(
        may_text=any(v.may_text for v in verdicts),
        programs=verdicts,
        chain_ok=chain_ok,
        holds=list(holds),
        open_reviews=[r for r in open_reviews if r not in holds],
    )


def decision_words(event: dict[str, Any]) -> str:
    """A staff decision in words: "treated as opt-out" or "not an opt-out"."""
    _, _, code = (event.get("rule") or "").partition(":")
    return STAFF_DECISIONS.get(code, code or "decided")
