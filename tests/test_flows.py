"""The status machine and reply choice (app.core.flows), tested directly: no app, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core import flows
from app.core.flows import (
    ACTIVE,
    ALREADY_SUBSCRIBED,
    CONFIRM_REQUEST,
    HELP_TEXT,
    HOW_TO_JOIN,
    NONE,
    OPT_OUT_CONFIRMATION,
    OPTED_OUT,
    PENDING,
    RESUBSCRIBED,
    WELCOME,
    Reply,
    StatusChange,
    SubscriptionState,
    decide,
)
from app.core.keywords import CONFIRM, HELP, INTENTS, OPT_IN, OPT_OUT, OTHER

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
WINDOW = timedelta(hours=24)


def run(intent, states=None, *, programs=("demo",), keyword_program_id=None, now=NOW):
    return decide(
        intent,
        programs_on_number=list(programs),
        states=states or {},
        confirmation_windows={pid: WINDOW for pid in programs},
        now=now,
        keyword_program_id=keyword_program_id,
    )


def state(status, *, pending_since=None, confirmed_at=None):
    return SubscriptionState(status, pending_since, confirmed_at)


@pytest.mark.parametrize(
    ("before", "intent", "keyword", "after", "reply"),
    [
        # JOIN / program keyword
        (NONE, OPT_IN, "demo", PENDING, CONFIRM_REQUEST),
        (PENDING, OPT_IN, "demo", PENDING, CONFIRM_REQUEST),
        (ACTIVE, OPT_IN, "demo", ACTIVE, ALREADY_SUBSCRIBED),
        (OPTED_OUT, OPT_IN, "demo", PENDING, CONFIRM_REQUEST),
        # START / UNSTOP without a confirmation on record needs double opt-in
        (NONE, OPT_IN, None, PENDING, CONFIRM_REQUEST),
        (ACTIVE, OPT_IN, None, ACTIVE, ALREADY_SUBSCRIBED),
        # opt-out from anywhere, confirmation once
        (NONE, OPT_OUT, None, OPTED_OUT, OPT_OUT_CONFIRMATION),
        (PENDING, OPT_OUT, None, OPTED_OUT, OPT_OUT_CONFIRMATION),
        (ACTIVE, OPT_OUT, None, OPTED_OUT, OPT_OUT_CONFIRMATION),
        (OPTED_OUT, OPT_OUT, None, OPTED_OUT, None),
        # HELP always answered, never changes status
        (NONE, HELP, None, NONE, HELP_TEXT),
        (ACTIVE, HELP, None, ACTIVE, HELP_TEXT),
        (OPTED_OUT, HELP, None, OPTED_OUT, HELP_TEXT),
        # anything else: nothing
        (ACTIVE, OTHER, None, ACTIVE, None),
        (OPTED_OUT, OTHER, None, OPTED_OUT, None),
        # YES with nothing pending: no consent, tells how to join (not to opted-out numbers)
        (NONE, CONFIRM, None, NONE, HOW_TO_JOIN),
        (ACTIVE, CONFIRM, None, ACTIVE, HOW_TO_JOIN),
        (OPTED_OUT, CONFIRM, None, OPTED_OUT, None),
    ],
)
def test_transition_table(before, intent, keyword, after, reply):
    states = {"demo": state(before)} if before != NONE else {}
    decision = run(intent, states, keyword_program_id=keyword)
    change = decision.change_for("demo")
    assert (change.after if change else before) == after
    assert [r.text_name for r in decision.replies] == ([reply] if reply else [])
    assert decision.primary_program_id == "demo"


def test_yes_within_window_confirms_and_welcomes():
    decision = run(CONFIRM, {"demo": state(PENDING, pending_since=NOW - timedelta(hours=23))})
    assert decision.changes == (StatusChange("demo", PENDING, ACTIVE),)
    assert decision.replies == (Reply("demo", WELCOME),)


def test_yes_after_window_records_no_consent():
    decision = run(CONFIRM, {"demo": state(PENDING, pending_since=NOW - timedelta(hours=25))})
    assert decision.changes == ()
    assert decision.replies == (Reply("demo", HOW_TO_JOIN),)


def test_yes_exactly_at_window_end_still_confirms():
    decision = run(CONFIRM, {"demo": state(PENDING, pending_since=NOW - WINDOW)})
    assert decision.change_for("demo").after == ACTIVE


def test_start_after_confirmed_opt_out_resubscribes_without_new_confirmation():
    states = {"demo": state(OPTED_OUT, confirmed_at=NOW - timedelta(days=3))}
    decision = run(OPT_IN, states)
    assert decision.changes == (StatusChange("demo", OPTED_OUT, ACTIVE),)
    assert decision.replies == (Reply("demo", RESUBSCRIBED),)


def test_program_keyword_after_opt_out_asks_for_confirmation_again():
    states = {"demo": state(OPTED_OUT, confirmed_at=NOW - timedelta(days=3))}
    decision = run(OPT_IN, states, keyword_program_id="demo")
    assert decision.changes == (StatusChange("demo", OPTED_OUT, PENDING),)
    assert decision.replies == (Reply("demo", CONFIRM_REQUEST),)


def test_opt_out_covers_every_program_on_the_number_with_one_confirmation():
    states = {"a": state(ACTIVE), "b": state(PENDING), "c": state(OPTED_OUT)}
    decision = run(OPT_OUT, states, programs=("a", "b", "c"))
    assert {c.program_id: c.after for c in decision.changes} == {"a": OPTED_OUT, "b": OPTED_OUT}
    assert len(decision.replies) == 1
    assert decision.replies[0].text_name == OPT_OUT_CONFIRMATION


def test_keyword_targets_only_its_program():
    states = {"a": state(ACTIVE)}
    decision = run(OPT_IN, states, programs=("a", "b"), keyword_program_id="b")
    assert decision.changes == (StatusChange("b", NONE, PENDING),)
    assert decision.primary_program_id == "b"


def test_help_is_filed_under_the_program_the_subscriber_is_in():
    decision = run(HELP, {"b": state(ACTIVE)}, programs=("a", "b"))
    assert decision.replies == (Reply("b", HELP_TEXT),)


def test_no_programs_on_number_means_no_change_and_no_reply():
    decision = run(OPT_OUT, programs=())
    assert decision == flows.Decision(primary_program_id=None)


@pytest.mark.parametrize(
    ("status", "text_name", "allowed"),
    [
        (OPTED_OUT, OPT_OUT_CONFIRMATION, True),
        (OPTED_OUT, HELP_TEXT, True),
        (OPTED_OUT, WELCOME, False),
        (OPTED_OUT, CONFIRM_REQUEST, False),
        (OPTED_OUT, HOW_TO_JOIN, False),
        (ACTIVE, WELCOME, True),
        (PENDING, CONFIRM_REQUEST, True),
    ],
)
def test_reply_allowed(status, text_name, allowed):
    assert flows.reply_allowed(status, text_name) is allowed


def test_apply_change_keeps_timestamps_in_step_with_status():
    pending = flows.apply_change(SubscriptionState(), StatusChange("d", NONE, PENDING), NOW)
    assert pending == SubscriptionState(PENDING, NOW, None)
    later = NOW + timedelta(hours=1)
    active = flows.apply_change(pending, StatusChange("d", PENDING, ACTIVE), later)
    assert active == SubscriptionState(ACTIVE, None, later)
    out = flows.apply_change(active, StatusChange("d", ACTIVE, OPTED_OUT), later)
    assert out == SubscriptionState(OPTED_OUT, None, later)


intents = st.sampled_from(INTENTS)
statuses = st.sampled_from(flows.STATUSES)


@given(st.lists(st.tuples(intents, st.booleans(), st.integers(0, 48)), max_size=30), statuses)
def test_any_sequence_of_consumer_texts_keeps_the_machine_consistent(texts, _unused):
    """Replaying texts through decide/apply_change never breaks the machine's invariants."""
    current = SubscriptionState()
    now = NOW
    for intent, with_keyword, hours in texts:
        now = now + timedelta(hours=hours)
        decision = run(
            intent, {"demo": current}, keyword_program_id="demo" if with_keyword else None, now=now
        )
        for change in decision.changes:
            assert change.before == current.status
            # Every change moves the status, except JOIN while pending: a fresh window.
            assert change.after != change.before or change.after == PENDING
            current = flows.apply_change(current, change, now)
        # Only an opt-out moves a number to opted_out, and an opt-out always gets it there.
        if intent == OPT_OUT:
            assert current.status == OPTED_OUT
        # Active only through a YES in the window or START after an earlier confirmation.
        if current.status == ACTIVE:
            assert current.confirmed_at is not None
        # Opted-out numbers hear nothing but the opt-out confirmation and HELP.
        if current.status == OPTED_OUT:
            for reply in decision.replies:
                assert reply.text_name in flows.REPLIES_ALLOWED_AFTER_OPT_OUT


def test_a_generic_join_word_always_asks_for_a_fresh_yes():
    states = {"demo": state(OPTED_OUT, confirmed_at=NOW - timedelta(days=3))}
    decision = run(OPT_IN, states, programs=("demo",))
    assert decision.change_for("demo").after == ACTIVE  # START: the earlier YES stands
    fresh = decide(
        OPT_IN,
        programs_on_number=["demo"],
        states=states,
        confirmation_windows={"demo": WINDOW},
        now=NOW,
        restart=False,
    )
    assert fresh.changes == (StatusChange("demo", OPTED_OUT, PENDING),)
    assert fresh.replies == (Reply("demo", CONFIRM_REQUEST),)


def test_start_brings_back_only_what_was_opted_out():
    states = {
        "a": state(OPTED_OUT, confirmed_at=NOW - timedelta(days=1)),
        "b": state(ACTIVE, confirmed_at=NOW - timedelta(days=1)),
    }
    decision = run(OPT_IN, states, programs=("a", "b", "c"))
    assert decision.changes == (StatusChange("a", OPTED_OUT, ACTIVE),)
    assert decision.replies == (Reply("a", RESUBSCRIBED),)


# --- hostile-input properties (docs/reliability.md, "Hostile input") ---------------------------
# Consumer events are the subscriber's own texts, as `app.consent.inbound` hands them to `decide`.
# Non-consumer events are everything else that can touch consent: a carrier opt-out (Twilio
# error 21610, `app.consent.service`) and a staff decision on the review queue
# (`app.consent.review`), which call `decide` exactly as below: an opt-out with no
# confirmation windows, or nothing at all.

CONSUMER_EVENTS = [
    ("text", OPT_IN, "keyword"),  # JOIN / a program keyword
    ("text", OPT_IN, "restart"),  # START / UNSTOP
    ("text", OPT_IN, "join_word"),  # SUBSCRIBE, UNIRME… without a program keyword
    ("text", CONFIRM, None),
    ("text", OPT_OUT, None),
    ("text", HELP, None),
    ("text", OTHER, None),
]
NON_CONSUMER_EVENTS = [
    ("carrier", OPT_OUT, None),
    ("staff", OPT_OUT, None),  # "treat as opt-out"
    ("staff", None, None),  # "not an opt-out": records a decision, changes nothing
]
PROGRAMS = ("a", "b")


def apply_event(event, states, now):
    """One event through `decide`, as the app's code path for that source runs it."""
    source, intent, variant = event
    if intent is None:
        return flows.Decision(primary_program_id="a")
    if source != "text":
        return decide(
            OPT_OUT, programs_on_number=PROGRAMS, states=states, confirmation_windows={}, now=now
        )
    return decide(
        intent,
        programs_on_number=PROGRAMS,
        states=states,
        confirmation_windows={pid: WINDOW for pid in PROGRAMS},
        now=now,
        keyword_program_id="b" if variant == "keyword" else None,
        restart=variant != "join_word",
    )


@given(
    st.lists(
        st.tuples(st.sampled_from(CONSUMER_EVENTS + NON_CONSUMER_EVENTS), st.integers(0, 30)),
        max_size=40,
    )
)
def test_each_status_is_reached_only_through_the_events_that_may_reach_it(events):
    """pending only by a consumer opt-in; active only by a consumer YES (or START after one)."""
    states = {pid: SubscriptionState() for pid in PROGRAMS}
    confirmed_by_consumer = dict.fromkeys(PROGRAMS, False)  # a YES of theirs moved it to active
    now = NOW
    for event, hours in events:
        now = now + timedelta(hours=hours)
        source, intent, variant = event
        decision = apply_event(event, states, now)
        for change in decision.changes:
            if change.after == PENDING:
                assert (source, intent) == ("text", OPT_IN), event
            if change.after == ACTIVE:
                assert source == "text", event
                if change.before == PENDING:
                    assert intent == CONFIRM, event
                    confirmed_by_consumer[change.program_id] = True
                else:  # START bringing back a subscription: only one the consumer confirmed
                    assert (change.before, intent, variant) == (OPTED_OUT, OPT_IN, "restart")
                    assert confirmed_by_consumer[change.program_id], event
            if source != "text":
                assert change.after == OPTED_OUT, event
            states[change.program_id] = flows.apply_change(states[change.program_id], change, now)
        for pid, current in states.items():
            if current.status == ACTIVE:
                assert confirmed_by_consumer[pid]


@given(
    st.lists(st.sampled_from(NON_CONSUMER_EVENTS), max_size=20),
    st.sampled_from(flows.STATUSES),
    st.sampled_from(flows.STATUSES),
)
def test_no_sequence_of_non_consumer_events_opts_anyone_in(events, status_a, status_b):
    """Carrier opt-outs and staff decisions only ever leave a number where it is or opt it out."""
    states = {"a": SubscriptionState(status_a), "b": SubscriptionState(status_b)}
    for event in events:
        decision = apply_event(event, states, NOW)
        for change in decision.changes:
            assert change.after == OPTED_OUT
            states[change.program_id] = flows.apply_change(states[change.program_id], change, NOW)
        for pid, current in states.items():
            original = {"a": status_a, "b": status_b}[pid]
            assert current.status in (original, OPTED_OUT)
        for reply in decision.replies:
            assert reply.text_name == OPT_OUT_CONFIRMATION
