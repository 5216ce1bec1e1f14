"""Which programs an opt-out covers (app.core.opt_out_scope), before and after REVOKE_ALL_FROM."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from datetime import UTC, date, datetime, timedelta

import pytest

from app.config import DEMO_PROGRAMS_FILE
from app.consent.inbound import decide_text
from app.core import flows
from app.core.opt_out_scope import NUMBER, REVOKE_ALL_SCOPE, opt_out_scope
from app.core.programs import parse_programs

ALERTS_NUMBER = "11111"
DEALS_NUMBER = "22222"


@pytest.fixture
def catalog():
    """Demo Co runs "alerts" on one short code and "deals" on another; Other Co runs "news" on
    the first one too."""
    raw = tomllib.loads(DEMO_PROGRAMS_FILE.read_text(encoding="utf-8"))
    demo = raw["programs"][0]
    alerts = copy.deepcopy(demo) | {"id": "alerts", "numbers": [ALERTS_NUMBER]}
    deals = copy.deepcopy(demo) | {"id": "deals", "numbers": [DEALS_NUMBER], "keywords": ["DEAL"]}
    news = copy.deepcopy(demo) | {
        "id": "news",
        "brand": "Other Co",
        "numbers": [ALERTS_NUMBER],
        "keywords": ["NEWS"],
    }
    return parse_programs({"programs": [alerts, deals, news]})


EVE = datetime(2027, 1, 30, 23, 59, 59, tzinfo=UTC)
DAY = datetime(2027, 1, 31, 0, 0, tzinfo=UTC)


def test_before_the_date_an_opt_out_covers_the_programs_on_the_number_texted(catalog):
    scope = opt_out_scope(catalog, ALERTS_NUMBER, EVE)
    assert (scope.program_ids, scope.rule) == (("alerts", "news"), NUMBER)
    assert "2027-01-31" in scope.note and NUMBER in scope.note


def test_from_the_date_it_covers_every_program_of_the_same_brand(catalog):
    scope = opt_out_scope(catalog, ALERTS_NUMBER, DAY)
    assert (scope.program_ids, scope.rule) == (("alerts", "news", "deals"), REVOKE_ALL_SCOPE)
    assert "Demo Co" in scope.note and "Other Co" in scope.note and "64.1200(a)(10)" in scope.note
    # From the other number: Demo Co only, because only Demo Co runs there.
    scope = opt_out_scope(catalog, DEALS_NUMBER, DAY)
    assert scope.program_ids == ("deals", "alerts")


def test_the_date_is_configurable(catalog):
    earlier = dataclasses.replace(catalog, revoke_all_from=date(2026, 6, 1))
    assert opt_out_scope(earlier, DEALS_NUMBER, datetime(2026, 6, 1, tzinfo=UTC)).rule == (
        REVOKE_ALL_SCOPE
    )
    assert (
        opt_out_scope(earlier, DEALS_NUMBER, datetime(2026, 5, 31, 23, tzinfo=UTC)).rule == NUMBER
    )


def test_named_programs_are_always_covered(catalog):
    scope = opt_out_scope(catalog, None, EVE, also=["deals", None])
    assert scope.program_ids == ("deals",)


ACTIVE = flows.SubscriptionState(flows.ACTIVE, confirmed_at=datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("now", "opted_out", "kept_active", "rule"),
    [
        (EVE, {"deals"}, {"alerts"}, NUMBER),
        (DAY, {"deals", "alerts"}, set(), REVOKE_ALL_SCOPE),
        (DAY + timedelta(days=400), {"deals", "alerts"}, set(), REVOKE_ALL_SCOPE),
    ],
)
def test_a_stop_texted_to_one_number_before_and_after_the_date(
    catalog, now, opted_out, kept_active, rule
):
    """The inbound decision (`decide_text`) applies the scope, with one confirmation."""
    states = {"alerts": ACTIVE, "deals": ACTIVE}
    _classification, _states, decision = decide_text(catalog, DEALS_NUMBER, "STOP", states, now)
    assert {c.program_id for c in decision.changes} == opted_out
    assert all(c.after == flows.OPTED_OUT for c in decision.changes)
    assert len(decision.replies) == 1 and decision.replies[0].text_name == (
        flows.OPT_OUT_CONFIRMATION
    )
    assert decision.opt_out_scope.startswith(f"opt-out scope: {rule} ")
    untouched = set(states) - {c.program_id for c in decision.changes}
    assert untouched == kept_active


def test_after_the_date_everything_stays_revoked_until_the_subscriber_answers(catalog):
    """Joining one program again (its keyword, then YES) brings back that program only."""
    states = {"alerts": ACTIVE, "deals": ACTIVE}
    _c, _s, stop = decide_text(catalog, DEALS_NUMBER, "STOP", states, DAY)
    after_stop = {
        pid: flows.apply_change(states[pid], change, DAY)
        for pid in states
        for change in stop.changes
        if change.program_id == pid
    }
    _c, _s, join = decide_text(
        catalog, DEALS_NUMBER, "DEAL", after_stop, DAY + timedelta(minutes=1)
    )
    assert [(c.program_id, c.after) for c in join.changes] == [("deals", flows.PENDING)]
    assert after_stop["alerts"].status == flows.OPTED_OUT


def test_other_texts_keep_the_programs_on_the_number(catalog):
    """Only an opt-out widens: a YES after the date confirms nothing on another number."""
    pending = flows.SubscriptionState(flows.PENDING, pending_since=DAY)
    _c, _s, decision = decide_text(catalog, DEALS_NUMBER, "YES", {"alerts": pending}, DAY)
    assert decision.changes == () and decision.opt_out_scope is None


@pytest.mark.parametrize(
    ("now", "opted_out", "rule"),
    [(EVE, {"deals"}, NUMBER), (DAY, {"deals", "alerts"}, REVOKE_ALL_SCOPE)],
)
def test_a_carrier_opt_out_before_and_after_the_date(catalog, now, opted_out, rule):
    """Twilio 21610 on a reply from the deals number: the same scope rule as a STOP."""
    from app.consent.service import plan_carrier_opt_out
    from app.core.consent_plan import LoadedState

    scope = opt_out_scope(catalog, DEALS_NUMBER, now, also=["deals"])
    state = LoadedState(1, 2, None, None, False, {"alerts": ACTIVE, "deals": ACTIVE}, None)
    plan = plan_carrier_opt_out(
        state,
        phone="+14155550100",
        program_ids=list(scope.program_ids),
        occurred_at=now,
        error_code=21610,
        number_texted=DEALS_NUMBER,
        message_sid=None,
        scope_note=scope.note,
    )
    assert {row.program_id for row in plan.subscriptions} == opted_out
    assert f"opt-out scope: {rule} " in plan.event.fields["note"]


@pytest.mark.parametrize(
    ("texted_at", "opted_out", "rule"),
    [(EVE, {"deals"}, NUMBER), (DAY, {"deals", "alerts"}, REVOKE_ALL_SCOPE)],
)
def test_a_staff_decision_takes_the_scope_of_the_flagged_text(catalog, texted_at, opted_out, rule):
    """ "Treat as opt-out" covers what the text would have covered when it came."""
    from types import SimpleNamespace

    from app.consent.review import plan_decision
    from app.core.consent_plan import LoadedState

    flagged = SimpleNamespace(id=9, to_number=DEALS_NUMBER, program_id="deals")
    scope = opt_out_scope(catalog, DEALS_NUMBER, texted_at, also=["deals"])
    state = LoadedState(1, 2, None, None, False, {"alerts": ACTIVE, "deals": ACTIVE}, None)
    plan = plan_decision(
        catalog,
        state,
        flagged,
        phone="+14155550100",
        program_ids=list(scope.program_ids),
        treat_as_opt_out=True,
        reason="asked us to stop",
        staff_email="officer@example.com",
        now=DAY + timedelta(days=3),  # decided later: the scope is the text's
        scope_note=scope.note,
    )
    assert {row.program_id for row in plan.subscriptions} == opted_out
    assert plan.event.fields["note"].startswith("asked us to stop (opt-out scope: " + rule)
    assert [row.kind for row in plan.outbound] == ["opt_out_confirmation"]  # one confirmation
