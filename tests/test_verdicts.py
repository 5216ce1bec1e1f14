"""The verdict (app.reports.verdicts) and the plain words (app.reports.labels): pure functions
over evidence bundles and codes, tested directly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.reports import labels
from app.reports.verdicts import Hold, VerdictState, decide_verdict, grounds_for

DEMO = SimpleNamespace(id="demo", name="Demo Alerts")


def event(seq, rule, before, after, *, kind="inbound_text", **extra):
    return {
        "id": 100 + seq,
        "seq": seq,
        "at": f"2026-12-0{seq}T10:00:00Z",
        "kind": kind,
        "rule": rule,
        "program": "demo",
        "status_before": before,
        "status_after": after,
        "changes": [{"program": "demo", "before": before, "after": after}]
        if before != after
        else [],
        **extra,
    }


def bundle(events, status, *, ok=True, agrees=True, may_text=None):
    return {
        "verification": {"ok": ok},
        "events": events,
        "current_status": [
            {
                "program": "demo",
                "status": status,
                "since": events[-1]["at"],
                "confirmed_at": None,
                "may_text": status == "active" if may_text is None else may_text,
                "ledger_agrees": agrees,
            }
        ],
    }


JOIN = event(1, "opt_in.program_keyword:join", "none", "pending")
YES = event(2, "confirm.only_word:yes", "pending", "active")
STOP = event(3, "opt_out.first_word:stop", "active", "opted_out")
START = event(4, "opt_in.restart:start", "opted_out", "active")


def test_a_resumed_subscription_rests_on_its_confirmation_and_its_restart():
    grounds = grounds_for([JOIN, YES, STOP, START], "demo", "active")
    assert [(g.words, g.seq, g.event_id) for g in grounds] == [
        ("confirmed by YES", 2, 102),
        ("resumed by START", 4, 104),
    ]


def test_each_status_names_the_event_it_rests_on():
    assert [g.words for g in grounds_for([JOIN], "demo", "pending")] == [
        "joined by JOIN; no YES since"
    ]
    assert [g.words for g in grounds_for([JOIN, YES, STOP], "demo", "opted_out")] == [
        "opted out by STOP"
    ]
    carrier = event(3, "twilio.error:21610", "active", "opted_out", kind="carrier_opt_out")
    assert grounds_for([JOIN, YES, carrier], "demo", "opted_out")[0].words == (
        "opted out by a carrier block (Twilio error 21610)"
    )
    assert grounds_for([JOIN, YES], "demo", "opted_out") == []  # the row disagrees: no grounds


@pytest.mark.parametrize(
    ("kwargs", "holds", "state", "may_text"),
    [
        ({}, [], VerdictState.ACTIVE, True),
        ({"ok": False}, [], VerdictState.CHAIN_BROKEN, False),
        ({"agrees": False}, [], VerdictState.MISMATCH, False),
        ({}, [Hold(9, "2026-12-05T00:00:00Z", "2026-12-19T23:59:59Z", "demo")], "hold", False),
        ({"ok": False}, [Hold(9, "x", "y", None)], VerdictState.CHAIN_BROKEN, False),
    ],
)
def test_the_most_serious_state_wins(kwargs, holds, state, may_text):
    verdict = decide_verdict(bundle([JOIN, YES], "active", **kwargs), [DEMO], holds=holds)
    [program] = verdict.programs
    assert (program.state, program.may_text, verdict.may_text) == (state, may_text, may_text)


def test_a_hold_does_not_hide_an_opt_out():
    held = [Hold(9, "2026-12-05T00:00:00Z", "2026-12-19T23:59:59Z", None)]
    verdict = decide_verdict(bundle([JOIN, YES, STOP], "opted_out"), [DEMO], holds=held)
    assert verdict.programs[0].state is VerdictState.OPTED_OUT


def test_a_program_never_joined_is_never_subscribed():
    verdict = decide_verdict(bundle([JOIN], "pending"), [DEMO, SimpleNamespace(id="b", name="B")])
    assert [p.state for p in verdict.programs] == [VerdictState.PENDING, VerdictState.NEVER]


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ("opt_out.keywords_only:stop", "opt-out word STOP with nothing else"),
        ("opt_in.program_keyword:join", "program keyword JOIN"),
        ("confirm.only_word:yes", "confirmation word YES"),
        ("twilio.error:21610", "carrier block (Twilio error 21610)"),
        ("staff.review:opt_out", "staff review: treated as opt-out"),
        (
            "opt_out.no_more.es:no quiero mensajes",
            "request to stop (Spanish): “no quiero mensajes”",
        ),
        ("something.new:x", "something.new:x"),
        (None, "—"),
    ],
)
def test_rules_read_as_words(rule, words):
    assert labels.rule_label(rule) == words


def test_codes_read_as_words_and_unknown_codes_show_as_they_are():
    assert labels.label("opted_out", "status") == "opted out"
    assert labels.label("confirm_request", "reply") == "Asked to confirm with YES"
    assert labels.label("brand_new", "kind") == "brand_new"
    assert labels.status_change("none", "none") == "no change"
    assert labels.status_change("pending", "active") == "joined, awaiting YES → subscribed"
    assert labels.reason_label("quiet_hours:US-FL") == "quiet hours (US-FL)"
    assert [labels.plural(n, "event") for n in (0, 1, 2)] == ["0 events", "1 event", "2 events"]
