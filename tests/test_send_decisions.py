"""The sending rules' decision function (app.core.send_decisions): table-driven, pure."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.core import flows
from app.core.places import locate
from app.core.send_decisions import (
    Decision,
    ProgramMessage,
    Recipient,
    SendDecider,
    decide_send,
)
from app.core.sending_rules import ProgramCap, Purpose, RuleBook, hours

BOOK = RuleBook()
MARKETING = ProgramMessage("demo", Purpose.MARKETING)
INFORMATIONAL = ProgramMessage("demo", Purpose.INFORMATIONAL)

# One ZIP code per state, each in a single time zone.
ZIPS = {
    "FL": ("33101", "America/New_York"),
    "OK": ("73101", "America/Chicago"),
    "MD": ("21201", "America/New_York"),
    "OR": ("97201", "America/Los_Angeles"),
    "AL": ("35203", "America/Chicago"),
    "LA": ("70112", "America/Chicago"),
    "MS": ("39201", "America/Chicago"),
    "TN": ("37201", "America/Chicago"),
    "WA": ("98101", "America/Los_Angeles"),
    "CT": ("06103", "America/New_York"),
    "NV": ("89101", "America/Los_Angeles"),
    "TX": ("75201", "America/Chicago"),
    "NY": ("10001", "America/New_York"),
}
# A Wednesday well after every rule took effect, outside daylight-saving changes.
WEDNESDAY = date(2026, 6, 17)


def local(state: str, day: date, clock: time) -> datetime:
    """An aware instant: `clock` on `day` in the state's zone."""
    return datetime.combine(day, clock, tzinfo=ZoneInfo(ZIPS[state][1]))


def recipient(state: str | None = None, *, phone="+14155550100", **fields) -> Recipient:
    zip_code = ZIPS[state][0] if state else None
    defaults = {"status": flows.ACTIVE}
    defaults.update(fields)
    return Recipient(phone=phone, location=locate(phone, zip_code=zip_code), **defaults)


def decide(message, who: Recipient, at: datetime, book: RuleBook = BOOK):
    return decide_send(message, who, at.astimezone(UTC), book)


STATE_WINDOWS = [
    # state, opens, closes (local, Monday to Saturday), jurisdiction named when closed
    ("FL", 8, 20, "US-FL"),
    ("OK", 8, 20, "US-OK"),
    ("MD", 8, 20, "US-MD"),
    ("OR", 8, 20, "US-OR"),
    ("AL", 8, 20, "US-AL"),
    ("LA", 8, 20, "US-LA"),
    ("MS", 8, 20, "US-MS"),
    ("TN", 8, 20, "US-TN"),
    ("WA", 8, 20, "US-WA"),
    ("CT", 9, 20, "US-CT"),
    ("NV", 9, 20, "US-NV"),
    ("TX", 9, 21, "US-TX"),
    ("NY", 8, 21, "US"),  # no state rule: the federal window
]


@pytest.mark.parametrize(("state", "opens", "closes", "jurisdiction"), STATE_WINDOWS)
def test_every_state_window_at_its_edges(state, opens, closes, jurisdiction):
    who = recipient(state)
    open_at = local(state, WEDNESDAY, time(opens))
    close_at = local(state, WEDNESDAY, time(closes))

    just_before = decide(MARKETING, who, open_at - timedelta(seconds=1))
    assert just_before.decision == Decision.DEFERRED
    assert just_before.not_before == open_at
    assert just_before.reason == f"quiet_hours:{jurisdiction}"
    assert just_before.citation

    assert decide(MARKETING, who, open_at).decision == Decision.SEND
    assert decide(MARKETING, who, close_at - timedelta(seconds=1)).decision == Decision.SEND

    at_close = decide(MARKETING, who, close_at)
    assert at_close.decision == Decision.DEFERRED
    assert at_close.not_before == local(state, WEDNESDAY + timedelta(days=1), time(opens))
    assert at_close.reason == f"quiet_hours:{jurisdiction}"


SPRING_FORWARD = date(2026, 3, 8)  # a Sunday: 2am becomes 3am in the US
FALL_BACK = date(2026, 11, 1)  # a Sunday: 2am becomes 1am


@pytest.mark.parametrize("state", ["FL", "OR", "CT", "OK"])
@pytest.mark.parametrize("day", [SPRING_FORWARD, FALL_BACK])
def test_windows_open_at_local_wall_time_on_daylight_saving_days(state, day):
    """The evening before, a deferral lands on the local opening hour, 23 or 25 hours later."""
    who = recipient(state)
    opens = next(o for s, o, _c, _j in STATE_WINDOWS if s == state)
    evening = local(state, day - timedelta(days=1), time(22))
    decision = decide(MARKETING, who, evening)
    opening = local(state, day, time(opens))
    assert decision.not_before == opening
    elapsed = opening.astimezone(UTC) - evening.astimezone(UTC)
    shift = timedelta(hours=-1) if day == SPRING_FORWARD else timedelta(hours=1)
    naive_gap = datetime.combine(day, time(opens)) - datetime.combine(day, time(0))
    assert elapsed == timedelta(hours=2) + naive_gap + shift
    assert decide(MARKETING, who, opening).decision == Decision.SEND
    assert decide(MARKETING, who, opening - timedelta(seconds=1)).decision == Decision.DEFERRED


@pytest.mark.parametrize(
    ("day", "clock", "expected", "not_before"),
    [
        (date(2026, 6, 20), time(8, 59, 59), Decision.DEFERRED, time(9)),  # Saturday
        (date(2026, 6, 20), time(9), Decision.SEND, None),
        (date(2026, 6, 20), time(20, 59, 59), Decision.SEND, None),
        (date(2026, 6, 21), time(9), Decision.DEFERRED, time(12)),  # Sunday: noon
        (date(2026, 6, 21), time(11, 59, 59), Decision.DEFERRED, time(12)),
        (date(2026, 6, 21), time(12), Decision.SEND, None),
        (date(2026, 6, 21), time(20, 59, 59), Decision.SEND, None),
        (SPRING_FORWARD, time(11, 59), Decision.DEFERRED, time(12)),  # a DST Sunday
        (FALL_BACK, time(11, 59), Decision.DEFERRED, time(12)),
    ],
)
def test_texas_sundays_open_at_noon(day, clock, expected, not_before):
    decision = decide(MARKETING, recipient("TX"), local("TX", day, clock))
    assert decision.decision == expected
    if not_before is not None:
        assert decision.not_before == local("TX", day, not_before)
        assert decision.reason == "quiet_hours:US-TX"


def test_texas_saturday_night_defers_to_sunday_noon():
    saturday_night = local("TX", date(2026, 6, 20), time(21))
    decision = decide(MARKETING, recipient("TX"), saturday_night)
    assert decision.not_before == local("TX", date(2026, 6, 21), time(12))


def test_a_number_whose_zone_is_ambiguous_keeps_the_most_restrictive_window():
    """850 is Florida's panhandle: Eastern and Central. 8am must have come in both."""
    who = recipient(phone="+18505550100")
    assert {p.zone for p in who.location.places} == {"America/New_York", "America/Chicago"}
    eastern = ZoneInfo("America/New_York")
    at_eight_eastern = datetime.combine(WEDNESDAY, time(8), tzinfo=eastern)
    decision = decide(MARKETING, who, at_eight_eastern)
    assert decision.decision == Decision.DEFERRED  # 7am in Central
    assert decision.not_before == datetime.combine(WEDNESDAY, time(9), tzinfo=eastern)
    assert decision.reason == "quiet_hours:US-FL"
    assert decide(MARKETING, who, at_eight_eastern + timedelta(hours=1)).decision == Decision.SEND
    # 8pm Eastern is 7pm Central: Eastern has closed.
    evening = datetime.combine(WEDNESDAY, time(20), tzinfo=eastern)
    assert decide(MARKETING, who, evening).decision == Decision.DEFERRED
    assert decide(MARKETING, who, evening - timedelta(seconds=1)).decision == Decision.SEND


def test_a_stored_zip_settles_what_the_area_code_leaves_open():
    """The same 850 number with a Pensacola ZIP is Central only: 8am Central is open."""
    who = Recipient("+18505550100", locate("+18505550100", zip_code="32501"), flows.ACTIVE)
    central = ZoneInfo("America/Chicago")
    assert decide(
        MARKETING, who, datetime.combine(WEDNESDAY, time(8), tzinfo=central)
    ).decision == (Decision.SEND)


def times_before(at: datetime, *hours_ago: float) -> tuple[datetime, ...]:
    return tuple(at.astimezone(UTC) - timedelta(hours=h) for h in hours_ago)


@pytest.mark.parametrize("state", ["FL", "OK", "MD", "OR"])
def test_the_third_message_in_24_hours_goes_and_the_fourth_waits(state):
    noon = local(state, WEDNESDAY, time(12))
    third = decide(MARKETING, recipient(state, history=times_before(noon, 5, 3)), noon)
    assert third.decision == Decision.SEND
    assert third.cap_count == 2

    history = times_before(noon, 3, 2, 1)  # 9, 10 and 11am
    fourth = decide(MARKETING, recipient(state, history=history), noon)
    assert fourth.decision == Decision.DEFERRED
    assert fourth.reason == f"frequency_cap:US-{state}"
    assert fourth.not_before == history[0] + timedelta(hours=24)  # 9am, when the oldest leaves
    assert fourth.cap_count == 3
    assert fourth.citation


def test_the_cap_counts_only_the_rolling_24_hours():
    noon = local("FL", WEDNESDAY, time(12))
    old = times_before(noon, 24, 25, 30)  # exactly 24 h ago has left the window
    assert decide(MARKETING, recipient("FL", history=old), noon).decision == Decision.SEND


def test_a_deferred_fourth_message_still_respects_the_window():
    """The cap releases at 6am local; the window opens at 8am: the later one wins."""
    morning = local("FL", WEDNESDAY, time(6))
    history = (morning.astimezone(UTC),) + times_before(morning, -1, -2)  # 6, 7, 8am
    evening = local("FL", WEDNESDAY, time(10))
    decision = decide(MARKETING, recipient("FL", history=history), evening)
    assert decision.decision == Decision.DEFERRED
    assert decision.not_before == local("FL", WEDNESDAY + timedelta(days=1), time(8))


def test_states_without_a_cap_do_not_cap():
    noon = local("NY", WEDNESDAY, time(12))
    history = times_before(noon, 4, 3, 2, 1)
    assert decide(MARKETING, recipient("NY", history=history), noon).decision == Decision.SEND


@pytest.mark.parametrize(
    ("months_ago", "expected"),
    [(None, Decision.DEFERRED), (17, Decision.SEND), (19, Decision.DEFERRED)],
)
def test_oregon_exempts_a_recent_buyer_from_its_cap(months_ago, expected):
    noon = local("OR", WEDNESDAY, time(12))
    purchased = None
    if months_ago is not None:
        year, month = divmod(WEDNESDAY.month - 1 - months_ago, 12)
        purchased = date(WEDNESDAY.year + year, month + 1, 1)
    who = recipient("OR", history=times_before(noon, 5, 3, 1), purchased_on=purchased)
    decision = decide(MARKETING, who, noon)
    assert decision.decision == expected
    # The exemption lifts the cap only: Oregon's window still holds.
    night = local("OR", WEDNESDAY, time(20, 30))
    assert decide(MARKETING, recipient("OR", purchased_on=purchased), night).decision == (
        Decision.DEFERRED
    )


def test_the_oregon_exemption_does_not_lift_floridas_cap():
    noon = local("FL", WEDNESDAY, time(12))
    who = recipient("FL", history=times_before(noon, 5, 3, 1), purchased_on=date(2026, 5, 1))
    assert decide(MARKETING, who, noon).decision == Decision.DEFERRED


@pytest.mark.parametrize("state", ["FL", "TX", "CT", "NY"])
def test_windows_and_state_caps_apply_to_marketing_only(state):
    late = local(state, WEDNESDAY, time(23, 30))
    assert decide(MARKETING, recipient(state), late).decision == Decision.DEFERRED
    assert decide(INFORMATIONAL, recipient(state), late).decision == Decision.SEND
    noon = local(state, WEDNESDAY, time(12))
    busy = recipient(state, history=times_before(noon, 5, 4, 3, 2, 1))
    assert decide(INFORMATIONAL, busy, noon).decision == Decision.SEND


def test_a_programs_disclosed_frequency_caps_every_purpose():
    capped = ProgramMessage("demo", Purpose.INFORMATIONAL, program_cap=ProgramCap(4, "month"))
    noon = local("NY", WEDNESDAY, time(12))
    this_month = tuple(local("NY", date(2026, 6, d), time(12)).astimezone(UTC) for d in (1, 2, 3))
    assert decide(capped, recipient("NY", history=this_month), noon).decision == Decision.SEND
    full = this_month + (local("NY", date(2026, 6, 4), time(12)).astimezone(UTC),)
    decision = decide(capped, recipient("NY", history=full), noon)
    assert decision.decision == Decision.DEFERRED
    assert decision.reason == "frequency_cap:program"
    assert decision.not_before == local("NY", date(2026, 7, 1), time(0))
    marketing = ProgramMessage("demo", Purpose.MARKETING, program_cap=ProgramCap(4, "month"))
    decision = decide(marketing, recipient("NY", history=full), noon)
    assert decision.not_before == local("NY", date(2026, 7, 1), time(8))  # then the window


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"suppressed": True}, "suppressed"),
        ({"status": flows.OPTED_OUT}, "opted_out"),
        ({"status": flows.PENDING}, "no_consent:pending"),
        ({"status": flows.NONE}, "no_consent:none"),
    ],
)
def test_no_consent_is_refused_whatever_the_hour(fields, reason):
    for clock in (time(3), time(12)):
        decision = decide(MARKETING, recipient("FL", **fields), local("FL", WEDNESDAY, clock))
        assert (decision.decision, decision.reason, decision.not_before) == (
            Decision.REFUSED,
            reason,
            None,
        )
        assert decision.citation


def test_a_body_that_fails_the_lint_is_refused():
    bad = ProgramMessage("demo", Purpose.MARKETING, body_problems=("missing_stop",))
    decision = decide(bad, recipient("FL"), local("FL", WEDNESDAY, time(12)))
    assert (decision.decision, decision.reason) == (Decision.REFUSED, "body_lint:missing_stop")


def test_rules_apply_from_their_dates_in_force():
    """Oregon's 8pm close started on 1 January 2026; the night before, 9pm still held."""
    before = local("OR", date(2025, 12, 31), time(20, 30))
    after = local("OR", date(2026, 1, 2), time(20, 30))
    assert decide(MARKETING, recipient("OR"), before).decision == Decision.SEND
    assert decide(MARKETING, recipient("OR"), after).decision == Decision.DEFERRED


def test_numbers_outside_the_us_keep_the_configured_country_window():
    paris = ZoneInfo("Europe/Paris")
    french = Recipient("+33612345678", locate("+33612345678"), flows.ACTIVE)
    at_seven = datetime.combine(WEDNESDAY, time(7, 30), tzinfo=paris)
    default = decide(MARKETING, french, at_seven)
    assert (default.reason, default.not_before) == (
        "quiet_hours:FR",
        datetime.combine(WEDNESDAY, time(8), tzinfo=paris),
    )
    book = RuleBook(country_windows={"*": hours(8, 21), "FR": hours(10, 19)})
    configured = decide(MARKETING, french, at_seven, book)
    assert configured.not_before == datetime.combine(WEDNESDAY, time(10), tzinfo=paris)


def test_a_batch_decider_reuses_a_places_window_and_keeps_each_recipients_own_facts():
    noon = local("FL", WEDNESDAY, time(12)).astimezone(UTC)
    decider = SendDecider(MARKETING, noon, BOOK)
    first = decider.decide(recipient("FL"))
    second = decider.decide(recipient("FL", status=flows.OPTED_OUT))
    third = decider.decide(recipient("FL", history=times_before(noon, 3, 2, 1)))
    assert [d.decision for d in (first, second, third)] == [
        Decision.SEND,
        Decision.REFUSED,
        Decision.DEFERRED,
    ]
    assert first.local_time == noon.astimezone(ZoneInfo("America/New_York"))
    assert first.jurisdiction == "US-FL"


def test_marketing_to_a_number_placed_nowhere_is_refused():
    """No time zone known at all: no window can be checked, so the message cannot go."""
    from app.core.places import Location

    nowhere = Recipient(phone="+99912345678", location=Location((), "unknown"), status="active")
    decision = decide(MARKETING, nowhere, datetime(2026, 6, 17, 16, 0, tzinfo=UTC))
    assert decision.decision == Decision.REFUSED
    assert decision.reason == "quiet_hours:unknown_location"


def test_a_held_number_is_deferred_to_its_review_re_check():
    """A possible opt-out awaits review (app.consent.holds): not sent, looked at again later."""
    at = datetime(2026, 6, 17, 16, 0, tzinfo=UTC)
    held = recipient("FL", held_until=at + timedelta(minutes=15))
    decision = decide(MARKETING, held, at)
    assert (decision.decision, decision.reason) == (Decision.DEFERRED, "no_consent:review_hold")
    assert decision.not_before == at + timedelta(minutes=15)
