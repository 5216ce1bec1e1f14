"""May this program message go to this number now, later, or never? Pure: no Flask, no database.

`SendDecider.decide` answers for one recipient with a `SendDecision`:

- ``refused`` when the number is suppressed (erased), opted out, has no active
  subscription to the program, or when the body fails the lint; these never change
  by waiting;
- ``deferred`` with `not_before` when a quiet-hours window is closed or a
  frequency cap is reached: the earliest moment when every window is open and
  every cap allows it;
- ``send`` otherwise.

Reasons start with one of `REASONS`, then ``:`` and details (``quiet_hours:US-FL``).
Each decision names the rule that decided it and its citation.

Windows and the state caps apply to marketing only (`app.core.sending_rules`). A
program's own disclosed frequency (e.g. "Up to 4 msgs/mo") caps every purpose:
it is a promise made to the subscriber.

Replies to a subscriber's own text never pass through here: they are answers, not
solicitations (`sending_rules.REPLY_EXEMPTION`), and go out at once.

Where a recipient may be in several places (`app.core.places`), the message must
be allowed in all of them: the most restrictive window wins. A decider is made per
batch: every recipient in a batch is decided at the same instant, so a place's
window is worked out once and reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from app.core import flows
from app.core.places import Location, Place
from app.core.sending_rules import (
    FrequencyCap,
    ProgramCap,
    Purpose,
    QuietHours,
    RuleBook,
)

# The outbox kind of a program message sent through the API (replies are named by their text).
PROGRAM_MESSAGE = "program_message"


class Decision(StrEnum):
    SEND = "send"
    DEFERRED = "deferred"
    REFUSED = "refused"


QUIET_HOURS = "quiet_hours"
FREQUENCY_CAP = "frequency_cap"
NO_CONSENT = "no_consent"
OPTED_OUT = "opted_out"
SUPPRESSED = "suppressed"
BODY_LINT = "body_lint"
REASONS = (QUIET_HOURS, FREQUENCY_CAP, NO_CONSENT, OPTED_OUT, SUPPRESSED, BODY_LINT)

PROGRAM_CAP_RULE = "program.frequency_cap"
UNKNOWN_LOCATION_CITATION = (
    "47 C.F.R. § 64.1200(c)(1) and state windows apply in the recipient's local time; with "
    "no time zone known for the number, none can be checked"
)
REVIEW_HOLD = "review_hold"
REVIEW_HOLD_RULE = "consent.review_hold"
REVIEW_HOLD_CITATION = (
    "47 C.F.R. § 64.1200(a)(10): a revocation made by any reasonable means is honoured; "
    "a text that may be one is held until staff decide (within 10 business days)"
)
CONSENT_RULE = "consent"
CONSENT_CITATION = (
    "47 C.F.R. § 64.1200(a)(2)-(3) and (a)(10): prior express (written, for marketing) consent, "
    "revocable by any reasonable means; the program's own subscription in the consent ledger"
)
SUPPRESSION_CITATION = "the suppression list of erased numbers (app.ledger.suppression)"
LINT_CITATION = "CTIA Messaging Principles and Best Practices: sender identified, opt-out stated"
PROGRAM_CAP_CITATION = "the program's disclosed message frequency (its programs file)"

# How far ahead a deferral may look before the message is refused as undeliverable.
HORIZON = timedelta(days=62)
MAX_STEPS = 400


@dataclass(frozen=True)
class ProgramMessage:
    """The message a batch sends: its program, purpose, body problems and disclosed cap."""

    program_id: str
    purpose: Purpose
    body_problems: tuple[str, ...] = ()
    program_cap: ProgramCap | None = None


@dataclass(frozen=True)
class Recipient:
    """What is known of one recipient when deciding.

    `history` holds when this program's earlier messages to the number went or will
    go out (UTC, any order): queued, deferred and sent ones, not suppressed ones.
    `purchased_on` is the last purchase from the brand, for Oregon's exemption.
    """

    phone: str
    location: Location
    status: str
    suppressed: bool = False
    purchased_on: date | None = None
    history: tuple[datetime, ...] = ()
    # A possible opt-out from the number awaits review (`app.consent.holds`): the message
    # waits at least until this re-check, and goes only if the decision releases it.
    held_until: datetime | None = None


@dataclass(frozen=True)
class SendDecision:
    """One recipient's decision, and enough to explain it."""

    decision: Decision
    reason: str | None
    rule_id: str | None
    citation: str | None
    not_before: datetime | None
    local_time: datetime
    jurisdiction: str
    window: str | None = None
    cap_count: int = 0
    places: tuple[Place, ...] = ()
    location_source: str = ""

    @property
    def queued(self) -> bool:
        """Does the message go to the outbox (now or later)?"""
        return self.decision != Decision.REFUSED

    def send_at(self, now: datetime) -> datetime:
        """When the message may first be handed to Twilio."""
        return self.not_before or now


@dataclass(frozen=True)
class _Block:
    """Why the message cannot go at some instant: a reason, its rule and its citation."""

    reason: str
    rule_id: str
    citation: str


@dataclass(frozen=True)
class _WindowConstraint:
    rule: QuietHours
    zone: ZoneInfo
    specific: bool  # a state's or country's own rule, not the federal one


@dataclass
class SendDecider:
    """Decides a batch of recipients for one message at one instant (`now`, aware)."""

    message: ProgramMessage
    now: datetime
    book: RuleBook
    _windows: dict[tuple[Place, ...], tuple[datetime | None, _Block | None]] = field(
        default_factory=dict
    )
    _constraint_memo: dict[tuple[Place, ...], list[_WindowConstraint]] = field(default_factory=dict)
    _labels: dict[tuple[tuple[Place, ...], date], str | None] = field(default_factory=dict)

    def decide(self, recipient: Recipient) -> SendDecision:
        """The decision for one recipient (see the module docstring)."""
        location = recipient.location
        zone = _zone(location.places[0].zone) if location.places else UTC_ZONE
        local_now = self.now.astimezone(zone)
        base = {
            "local_time": local_now,
            "jurisdiction": location.jurisdiction or "unknown",
            "places": location.places,
            "location_source": location.source,
            "window": self._window_label(location, local_now.date()),
            "cap_count": _count_within(recipient.history, self.now - timedelta(hours=24), self.now),
        }
        refusal = self._refusal(recipient)
        if refusal is not None:
            return SendDecision(
                Decision.REFUSED,
                refusal.reason,
                refusal.rule_id,
                refusal.citation,
                None,
                **base,
            )
        if recipient.held_until is not None:
            return SendDecision(
                Decision.DEFERRED,
                f"{NO_CONSENT}:{REVIEW_HOLD}",
                REVIEW_HOLD_RULE,
                REVIEW_HOLD_CITATION,
                recipient.held_until,
                **base,
            )
        if self.message.purpose == Purpose.MARKETING and not location.places:
            # Nowhere known: no window can be checked, so no marketing message can be sent.
            return SendDecision(
                Decision.REFUSED,
                f"{QUIET_HOURS}:unknown_location",
                "location",
                UNKNOWN_LOCATION_CITATION,
                None,
                **base,
            )
        at, first_block = self._earliest(recipient)
        if at is None:
            block = first_block or _Block(f"{QUIET_HOURS}:no_common_window", "", "")
            return SendDecision(
                Decision.REFUSED, block.reason, block.rule_id, block.citation, None, **base
            )
        if first_block is None:
            return SendDecision(Decision.SEND, None, None, None, None, **base)
        return SendDecision(
            Decision.DEFERRED,
            first_block.reason,
            first_block.rule_id,
            first_block.citation,
            at,
            **base,
        )

    # -- refusals -------------------------------------------------------------------------

    def _refusal(self, recipient: Recipient) -> _Block | None:
        if recipient.suppressed:
            return _Block(SUPPRESSED, "suppression", SUPPRESSION_CITATION)
        if recipient.status == flows.OPTED_OUT:
            return _Block(OPTED_OUT, CONSENT_RULE, CONSENT_CITATION)
        if recipient.status != flows.ACTIVE:
            return _Block(f"{NO_CONSENT}:{recipient.status}", CONSENT_RULE, CONSENT_CITATION)
        if self.message.body_problems:
            reason = f"{BODY_LINT}:{','.join(self.message.body_problems)}"
            return _Block(reason, "body_lint", LINT_CITATION)
        return None

    # -- the earliest allowed instant ---------------------------------------------------------

    def _earliest(self, recipient: Recipient) -> tuple[datetime | None, _Block | None]:
        """The first instant ≥ now every window and cap allows, and what blocked `now` (if any)."""
        marketing = self.message.purpose == Purpose.MARKETING
        places = recipient.location.places
        first_block: _Block | None = None
        at = self.now
        for _step in range(MAX_STEPS):
            if marketing:
                opened, block = self._window_opening(places, at)
                if opened is None:
                    return None, first_block or block
                first_block = first_block or block  # None when the windows are open at `at`
                at = opened
            later, block = self._cap_release(recipient, at, marketing)
            if later is None:
                return at, first_block  # no block at all: send now
            first_block = first_block or block
            at = later
            if at - self.now > HORIZON:
                break
        return None, first_block

    def _window_opening(
        self, places: tuple[Place, ...], at: datetime
    ) -> tuple[datetime | None, _Block | None]:
        """When every window of `places` is open, from `at` on, and what blocks `at` itself."""
        if at == self.now and places in self._windows:
            return self._windows[places]
        constraints = self._constraints(places)
        moment = at
        first_block: _Block | None = None
        result: tuple[datetime | None, _Block | None] = (None, None)
        for _step in range(MAX_STEPS):
            blocking = [(c, _next_open(c, moment)) for c in constraints if not _allows(c, moment)]
            if not blocking:
                result = (moment, first_block)
                break
            if first_block is None:
                # Name the binding rule: the one that opens last, a state's before the federal.
                binding = max(blocking, key=_binding_order)[0].rule
                first_block = _Block(
                    f"{QUIET_HOURS}:{binding.jurisdiction}", binding.id, binding.citation
                )
            openings = [opening for _c, opening in blocking]
            if any(opening is None for opening in openings):
                result = (None, first_block)
                break
            moment = max(openings)  # type: ignore[type-var]
            if moment - at > HORIZON:
                result = (None, first_block)
                break
        if at == self.now:
            self._windows[places] = result
        return result

    def _constraints(self, places: tuple[Place, ...]) -> list[_WindowConstraint]:
        memo = self._constraint_memo.get(places)
        if memo is None:
            memo = self._constraint_memo[places] = self._build_constraints(places)
        return memo

    def _build_constraints(self, places: tuple[Place, ...]) -> list[_WindowConstraint]:
        seen: set[tuple[str, str]] = set()
        constraints: list[_WindowConstraint] = []
        for place in places:
            for rule in self.book.windows_for(place.jurisdiction):
                if self.message.purpose not in rule.purposes:
                    continue
                key = (rule.id, place.zone)
                if key not in seen:
                    seen.add(key)
                    specific = rule.jurisdiction != "US"
                    constraints.append(_WindowConstraint(rule, _zone(place.zone), specific))
        return constraints

    def _cap_release(
        self, recipient: Recipient, at: datetime, marketing: bool
    ) -> tuple[datetime | None, _Block | None]:
        """None when the caps allow a message at `at`; else a later instant to try, and why."""
        history = recipient.history
        if not history:
            return None, None
        if marketing:
            for cap in self._caps(recipient, at):
                if not _cap_allows(history, at, cap.limit, cap.period):
                    later = _next_release(history, at, cap.period)
                    block = _Block(f"{FREQUENCY_CAP}:{cap.jurisdiction}", cap.id, cap.citation)
                    return later, block
        program_cap = self.message.program_cap
        if program_cap is not None:
            zone = _zone(recipient.location.places[0].zone) if recipient.location.places else None
            start, end = _calendar_period(at, program_cap.period, zone or UTC_ZONE)
            if _count_in(history, start, end) >= program_cap.limit:
                block = _Block(f"{FREQUENCY_CAP}:program", PROGRAM_CAP_RULE, PROGRAM_CAP_CITATION)
                return end, block
        return None, None

    def _caps(self, recipient: Recipient, at: datetime) -> list[FrequencyCap]:
        caps: list[FrequencyCap] = []
        seen: set[str] = set()
        for place in recipient.location.places:
            zone = _zone(place.zone)
            local_day = at.astimezone(zone).date()
            for cap in self.book.caps_for(place.jurisdiction):
                if cap.id in seen or not cap.in_force(local_day):
                    continue
                if self.message.purpose not in cap.purposes:
                    continue
                if _exempt(cap, recipient.purchased_on, local_day):
                    continue
                seen.add(cap.id)
                caps.append(cap)
        return caps

    def _window_label(self, location: Location, day: date) -> str | None:
        if self.message.purpose != Purpose.MARKETING or not location.places:
            return None
        key = (location.places, day)
        if key not in self._labels:
            self._labels[key] = self._build_label(location, day)
        return self._labels[key]

    def _build_label(self, location: Location, day: date) -> str | None:
        labels = []
        for constraint in self._constraints(location.places):
            if not constraint.rule.in_force(day):
                continue
            window = constraint.rule.window_on(day)
            labels.append(
                f"{constraint.rule.jurisdiction} {window.label() if window else 'closed'} "
                f"{constraint.zone.key}"
            )
        return "; ".join(sorted(set(labels))) or None


def decide_send(
    message: ProgramMessage, recipient: Recipient, now: datetime, book: RuleBook
) -> SendDecision:
    """One decision (for `rules explain` and the send-time re-check)."""
    return SendDecider(message, now, book).decide(recipient)


UTC_ZONE = ZoneInfo("UTC")


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


_NEVER = datetime.max.replace(tzinfo=UTC)


def _binding_order(item: tuple[_WindowConstraint, datetime | None]) -> tuple[datetime, bool]:
    """The rule that binds: the one that opens last, and a state's before the federal one."""
    constraint, opening = item
    return opening or _NEVER, constraint.specific


def _allows(constraint: _WindowConstraint, moment: datetime) -> bool:
    local = moment.astimezone(constraint.zone)
    if not constraint.rule.in_force(local.date()):
        return True
    window = constraint.rule.window_on(local.date())
    return window is not None and window.contains(local.time())


def _next_open(constraint: _WindowConstraint, moment: datetime) -> datetime | None:
    """The next instant after `moment` at which the constraint's window opens (None: in 8 days
    it never does)."""
    local = moment.astimezone(constraint.zone)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        if not constraint.rule.in_force(day):
            if offset:
                return datetime.combine(day, time(0), tzinfo=constraint.zone).astimezone(UTC)
            continue
        window = constraint.rule.window_on(day)
        if window is None:
            continue
        opening = datetime.combine(day, window.opens, tzinfo=constraint.zone)
        if opening > local:
            return opening.astimezone(UTC)
    return None


def _exempt(cap: FrequencyCap, purchased_on: date | None, day: date) -> bool:
    months = cap.exempt_if_purchase_within_months
    if not months or purchased_on is None or purchased_on > day:
        return False
    return _add_months(purchased_on, months) > day


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    for last in (31, 30, 29, 28):
        try:
            return date(year, month, min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _count_within(history: Sequence[datetime], after: datetime, until: datetime) -> int:
    """Messages in the half-open interval (after, until]."""
    return sum(1 for moment in history if after < moment <= until)


def _count_in(history: Sequence[datetime], start: datetime, end: datetime) -> int:
    """Messages in [start, end)."""
    return sum(1 for moment in history if start <= moment < end)


def _cap_allows(history: Sequence[datetime], at: datetime, limit: int, period: timedelta) -> bool:
    """Would a message at `at` keep every `period`-long interval at `limit` messages or fewer?

    The busiest interval containing `at` starts at one of the messages; only intervals
    that contain `at` are checked (an older excess is not this message's doing).
    """
    times = sorted([*history, at])
    for start in times:
        if not start <= at < start + period:
            continue
        if sum(1 for moment in times if start <= moment < start + period) > limit:
            return False
    return True


def _next_release(history: Sequence[datetime], at: datetime, period: timedelta) -> datetime:
    """The next instant after `at` when an earlier message leaves the rolling window."""
    releases = [moment + period for moment in history if moment + period > at]
    return min(releases) if releases else at + period


def _calendar_period(at: datetime, period: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The calendar day, week (Monday first) or month containing `at`, in `zone`, as UTC bounds."""
    local = at.astimezone(zone)
    if period == "day":
        start_day = local.date()
        end_day = start_day + timedelta(days=1)
    elif period == "week":
        start_day = local.date() - timedelta(days=local.weekday())
        end_day = start_day + timedelta(days=7)
    else:
        start_day = local.date().replace(day=1)
        end_day = (start_day + timedelta(days=32)).replace(day=1)
    start = datetime.combine(start_day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(end_day, time(0), tzinfo=zone).astimezone(UTC)
    return start, end
