"""The subscriber status machine and the choice of reply. Pure: no Flask, no database.

Status of one phone number in one program::

               JOIN / keyword              YES within the window
      ┌──────┐ ───────────────▶ ┌─────────┐ ────────────────────▶ ┌────────┐
      │ none │                  │ pending │                       │ active │
      └──────┘                  └─────────┘                       └────────┘
         │                        │     ▲  JOIN again: a new window   │   ▲
         │ opt-out        opt-out │     └─────                opt-out │   │ START / UNSTOP
         ▼                        ▼                                   ▼   │ (had confirmed)
      ┌─────────────────────────────────────────────────────────────────┴──┐
      │ opted_out  (every program on the texted number; one confirmation)  │
      └────────────────────────────────────────────────────────────────────┘
         │ JOIN / keyword, or START with no earlier confirmation on record
         └────────────────────────────────────────────▶ pending (double opt-in again)

JOIN-family words and program keywords always ask for a fresh YES; START and
UNSTOP bring back, without a new YES, a subscription the subscriber had
confirmed before opting out (the CTIA re-opt-in).

There is no way back to ``none``; only an opt-out (the subscriber's, or the carrier's through
Twilio error 21610) reaches ``opted_out``.

- Opt-out moves every program on the texted number to ``opted_out`` with exactly one
  confirmation; when nothing changes (already opted out everywhere) nothing is sent.
- JOIN while ``active`` answers "already subscribed" and changes nothing.
- YES with nothing pending, or after the window, records no consent and tells how to join.
- HELP answers the help text whatever the status; other texts change nothing.
- Consumer-originated texts reach `decide` with their intent; the other paths
  (a carrier opt-out, a staff decision on the review queue, an erasure) only
  ever ask it for an opt-out, so nothing but the subscriber's own texts (or an
  import carrying consent evidence) can move a number towards ``active``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from app.core.keywords import CONFIRM, HELP, OPT_IN, OPT_OUT


class Status(StrEnum):
    """A number's status in one program (the machine above); stored and answered as is."""

    NONE = "none"
    PENDING = "pending"
    ACTIVE = "active"
    OPTED_OUT = "opted_out"


NONE, PENDING, ACTIVE, OPTED_OUT = STATUSES = tuple(Status)


class ReplyKind(StrEnum):
    """Which program text a reply is, as named in the programs file (`TEXT_NAMES`)."""

    CONFIRM_REQUEST = "confirm_request"
    WELCOME = "welcome"
    ALREADY_SUBSCRIBED = "already_subscribed"
    OPT_OUT_CONFIRMATION = "opt_out_confirmation"
    RESUBSCRIBED = "resubscribed"
    HELP = "help"
    HOW_TO_JOIN = "how_to_join"


(
    CONFIRM_REQUEST,
    WELCOME,
    ALREADY_SUBSCRIBED,
    OPT_OUT_CONFIRMATION,
    RESUBSCRIBED,
    HELP_TEXT,
    HOW_TO_JOIN,
) = tuple(ReplyKind)

# The only replies an opted-out number may still receive.
REPLIES_ALLOWED_AFTER_OPT_OUT = frozenset({OPT_OUT_CONFIRMATION, HELP_TEXT})


@dataclass(frozen=True)
class SubscriptionState:
    """What the flow needs to know of one program's subscription."""

    status: Status = NONE
    pending_since: datetime | None = None
    confirmed_at: datetime | None = None


@dataclass(frozen=True)
class StatusChange:
    """One program's status moving because of one event."""

    program_id: str
    before: Status
    after: Status

    def as_record(self) -> dict[str, str]:
        """The change as a ledger event's `changes` list keeps it (and its hash covers)."""
        return {"program": self.program_id, "before": self.before, "after": self.after}


@dataclass(frozen=True)
class Reply:
    """A reply to queue: which program's texts, and which text."""

    program_id: str
    text_name: ReplyKind


@dataclass(frozen=True)
class Decision:
    """What one inbound text does: status changes, replies, and the program it is filed under."""

    primary_program_id: str | None
    changes: tuple[StatusChange, ...] = ()
    replies: tuple[Reply, ...] = ()
    # For an opt-out: which scope rule chose its programs (`app.core.opt_out_scope`), kept
    # as the ledger event's note.
    opt_out_scope: str | None = None

    def change_for(self, program_id: str | None) -> StatusChange | None:
        """The change in `program_id`, if there is one."""
        return next((c for c in self.changes if c.program_id == program_id), None)


def opt_out(
    program_ids: Sequence[str], states: Mapping[str, SubscriptionState], now: datetime
) -> Decision:
    """What an opt-out that is not a text of the subscriber's does (a carrier's, a staff
    decision's): every program in `program_ids` to ``opted_out``, one confirmation."""
    return decide(
        OPT_OUT, programs_on_number=program_ids, states=states, confirmation_windows={}, now=now
    )


def reply_allowed(status: str, text_name: str) -> bool:
    """May a reply of this kind go to a number with this status? Checked again at send time."""
    return status != OPTED_OUT or text_name in REPLIES_ALLOWED_AFTER_OPT_OUT


def decide(
    intent: str,
    *,
    programs_on_number: Sequence[str],
    states: Mapping[str, SubscriptionState],
    confirmation_windows: Mapping[str, timedelta],
    now: datetime,
    keyword_program_id: str | None = None,
    restart: bool = True,
) -> Decision:
    """Decide the status changes and replies for one classified inbound text.

    `programs_on_number` are the ids of the programs running on the number that
    was texted, in configuration order; `states` holds the subscriber's current
    state in each (missing means ``none``). For an opt-in, `keyword_program_id`
    names the program whose keyword was texted; without one, `restart` tells a
    START-family word (brings back what was confirmed before) from a generic
    JOIN-family word (always a fresh double opt-in).
    """
    programs = list(programs_on_number)
    if keyword_program_id and keyword_program_id not in programs:
        programs.append(keyword_program_id)
    if not programs:
        return Decision(primary_program_id=None)

    def state(pid: str) -> SubscriptionState:
        return states.get(pid) or SubscriptionState()

    if intent == OPT_OUT:
        changes = tuple(
            StatusChange(pid, state(pid).status, OPTED_OUT)
            for pid in programs
            if state(pid).status != OPTED_OUT
        )
        primary = changes[0].program_id if changes else _primary(programs, state)
        replies = (Reply(primary, OPT_OUT_CONFIRMATION),) if changes else ()
        return Decision(primary, changes, replies)

    if intent == OPT_IN:
        if keyword_program_id:
            targets = [keyword_program_id]
        elif restart:
            targets = _restart_targets(programs, state)
        else:
            targets = [_primary(programs, state)]
        changes: list[StatusChange] = []
        replies: list[Reply] = []
        for pid in targets:
            current = state(pid)
            if current.status == ACTIVE:
                replies.append(Reply(pid, ALREADY_SUBSCRIBED))
            elif (
                current.status == OPTED_OUT
                and restart
                and keyword_program_id is None
                and current.confirmed_at is not None
            ):
                changes.append(StatusChange(pid, OPTED_OUT, ACTIVE))
                replies.append(Reply(pid, RESUBSCRIBED))
            else:
                # none, pending (a fresh window) or opted out without a confirmation on record.
                changes.append(StatusChange(pid, current.status, PENDING))
                replies.append(Reply(pid, CONFIRM_REQUEST))
        primary = targets[0]
        return Decision(primary, tuple(changes), _dedupe_replies(replies))

    if intent == CONFIRM:
        changes = []
        replies = []
        for pid in programs:
            current = state(pid)
            window = confirmation_windows.get(pid, timedelta(0))
            if (
                current.status == PENDING
                and current.pending_since is not None
                and now - current.pending_since <= window
            ):
                changes.append(StatusChange(pid, PENDING, ACTIVE))
                replies.append(Reply(pid, WELCOME))
        if changes:
            return Decision(changes[0].program_id, tuple(changes), tuple(replies))
        primary = _primary(programs, state)
        if reply_allowed(state(primary).status, HOW_TO_JOIN):
            return Decision(primary, (), (Reply(primary, HOW_TO_JOIN),))
        return Decision(primary)

    primary = _primary(programs, state)
    if intent == HELP:
        return Decision(primary, (), (Reply(primary, HELP_TEXT),))
    return Decision(primary)


def _primary(programs: Sequence[str], state) -> str:
    """The program an event without a program keyword is filed under.

    The first program the subscriber is in (active or pending), else the first
    they opted out of, else the first program on the number.
    """
    for wanted in ((ACTIVE, PENDING), (OPTED_OUT,)):
        for pid in programs:
            if state(pid).status in wanted:
                return pid
    return programs[0]


def _restart_targets(programs: Sequence[str], state) -> list[str]:
    """What START brings back: the programs opted out of, else those joined, else all."""
    for wanted in ((OPTED_OUT,), (ACTIVE, PENDING)):
        chosen = [pid for pid in programs if state(pid).status in wanted]
        if chosen:
            return chosen
    return list(programs)


def _dedupe_replies(replies: list[Reply]) -> tuple[Reply, ...]:
    """One "already subscribed" is enough when START hits several active programs."""
    seen: set[str] = set()
    kept: list[Reply] = []
    for reply in replies:
        if reply.text_name == ALREADY_SUBSCRIBED:
            if reply.text_name in seen:
                continue
            seen.add(reply.text_name)
        kept.append(reply)
    return tuple(kept)


def apply_change(
    state: SubscriptionState, change: StatusChange, now: datetime
) -> SubscriptionState:
    """The subscription state after `change`: the one place timestamps follow statuses."""
    pending_since = now if change.after == PENDING else state.pending_since
    confirmed_at = state.confirmed_at
    if change.before == PENDING and change.after == ACTIVE:
        confirmed_at = now
    if change.after != PENDING:
        pending_since = None
    return SubscriptionState(change.after, pending_since, confirmed_at)
