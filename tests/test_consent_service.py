"""The consent service (app.consent.service): one lock, one pipeline, for every consent change.

- Every opt-out path, started from its real edge (a STOP text, a staff decision in the
  console, a carrier opt-out from a status callback or from a send, an erasure, an
  import), takes the number's lock through the one function that takes it, and records
  its change while holding it.
- No module but the service takes the lock (`number_guard(..., exclusive=True)`).
- The pipeline (`plan_and_write`) against a fake store: decided again on a lost race,
  nothing written for a duplicate, nothing for a planner with nothing to change.
- The planners are pure: a carrier opt-out or an erasure is planned without a database.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

import app.consent.service as service
from app.core import flows
from app.core.consent_plan import (
    DUPLICATE,
    LoadedState,
    OutboxQuieting,
    Written,
    plan_and_write,
)
from app.outbox.twilio_gateway import SmsSendError
from app.privacy.erasure import plan_erasure
from app.store.models import ConsentEvent
from tests.test_consent_hold import _carrier_opt_out, _erasure, _staff_decision, _text_stop
from tests.test_importer import GOOD, run_import, write
from tests.test_sender import PHONE, RecordingGateway, make_sender, status_of
from tests.twilio_helpers import send_text

APP_DIR = Path(__file__).resolve().parent.parent / "app"


@pytest.fixture
def lock_spy(monkeypatch, db):
    """Record each number the lock is taken for, and how many events exist while it is held."""
    taken: list[tuple[str | None, int, int]] = []
    real = service._number_locked

    def count() -> int:
        with db.transaction(write=False) as session:
            return session.execute(select(func.count(ConsentEvent.id))).scalar_one()

    @contextmanager
    def spy(database, phone):
        with real(database, phone):
            before = count()
            yield
            taken.append((phone, before, count()))  # committed, the lock not yet released

    monkeypatch.setattr(service, "_number_locked", spy)
    return taken, count


def _carrier_send_failure(app, db, runner):
    unsubscribed = SmsSendError("unsubscribed", retryable=False, code=21610, http_status=400)
    sender = make_sender(app, RecordingGateway(unsubscribed))
    [welcome] = sender.claim(1)
    assert sender.deliver(welcome) == "failed"


OPT_OUT_PATHS = [_text_stop, _staff_decision, _carrier_opt_out, _carrier_send_failure, _erasure]


@pytest.mark.parametrize(
    "opt_out",
    OPT_OUT_PATHS,
    ids=["stop-text", "staff-decision", "carrier-callback", "carrier-send", "erasure"],
)
def test_every_opt_out_path_goes_through_the_one_lock(app, client, db, runner, lock_spy, opt_out):
    taken, count = lock_spy
    send_text(client, PHONE, "JOIN")
    assert make_sender(app, RecordingGateway()).process_one()  # the request, SID ...01
    send_text(client, PHONE, "YES")
    send_text(client, PHONE, "We have got to stop this bill")  # flagged for review
    assert status_of(db) == "active"
    before = count()
    taken.clear()

    opt_out(app, db, runner)

    assert status_of(db) == "opted_out"
    # The lock was taken for this number before the opt-out's event was written, and was
    # still held when it committed.
    assert any(
        phone == PHONE and entered == before and left > entered for phone, entered, left in taken
    ), taken


def test_an_import_takes_the_lock_of_each_number_it_imports(db, runner, tmp_path, lock_spy):
    taken, _count = lock_spy
    result = run_import(runner, write(tmp_path, *GOOD))
    assert result.exit_code == 0, result.output
    assert [phone for phone, _, _ in taken] == ["+14155550100", "+14155550101"]


def test_no_module_but_the_consent_service_takes_the_lock_itself():
    """Callers never take the opt-out lock: `exclusive=True` appears in the service alone."""
    takers = sorted(
        str(path.relative_to(APP_DIR.parent))
        for path in APP_DIR.rglob("*.py")
        if "exclusive=True" in path.read_text(encoding="utf-8")
    )
    assert takers == ["app/consent/service.py"]


# ----------------------------------------------------------------------------------------------
# The pipeline against a fake store (no database)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


class FakeStore:
    """An in-memory `ConsentStore`: scripted loads, recorded writes."""

    def __init__(self, states, results):
        self.states, self.results = list(states), list(results)
        self.written, self.abandoned = [], 0

    def load(self, phone, message_sid, now):
        return self.states.pop(0)

    def write(self, plan, state):
        self.written.append((plan, state))
        return self.results.pop(0)

    def abandon(self):
        self.abandoned += 1


def state(seq=0, subscriptions=None, duplicate=False) -> LoadedState:
    return LoadedState(7, seq, None, None, duplicate, subscriptions or {}, None)


def test_a_lost_race_is_decided_again_on_the_state_that_won():
    store = FakeStore([state(0), state(1)], [None, Written(9, [])])
    decided = []
    outcome = plan_and_write(store, PHONE, lambda s: decided.append(s.chain_seq) or "plan", now=NOW)
    assert decided == [0, 1]
    assert outcome == (state(1), "plan", Written(9, []))


def test_a_duplicate_or_nothing_to_change_writes_nothing():
    store = FakeStore([state(duplicate=True)], [])
    assert plan_and_write(store, PHONE, lambda s: "plan", now=NOW) is DUPLICATE
    store = FakeStore([state()], [])
    assert plan_and_write(store, PHONE, lambda s: None, now=NOW) is None
    assert store.written == [] and store.abandoned == 1


def carrier_plan(loaded: LoadedState):
    return service.plan_carrier_opt_out(
        loaded,
        phone=PHONE,
        program_ids=["demo"],
        occurred_at=NOW,
        error_code=21610,
        number_texted="12345",
        message_sid=None,
    )


def test_a_carrier_opt_out_is_planned_without_a_database():
    active = {"demo": flows.SubscriptionState(flows.ACTIVE), "other": flows.SubscriptionState()}
    plan = carrier_plan(state(3, active))
    assert [(r.program_id, r.status) for r in plan.subscriptions] == [("demo", "opted_out")]
    assert plan.outbound == [] and plan.quieting is OutboxQuieting.OPT_OUT
    assert plan.event.fields["seq"] == 4 and plan.event.fields["rule"] == "twilio.error:21610"
    assert carrier_plan(state(4, {"demo": flows.SubscriptionState(flows.OPTED_OUT)})) is None


def test_an_erasure_plan_clears_the_number_and_every_queued_message():
    subscriptions = {
        "b": flows.SubscriptionState(flows.PENDING, NOW, None),
        "a": flows.SubscriptionState(flows.ACTIVE),
    }
    plan = plan_erasure(
        state(2, subscriptions), actor="cli:x", reason="t-7", digest="0" * 64, now=NOW
    )
    assert plan.phone is None and plan.subscriber_language is None
    assert plan.quieting is OutboxQuieting.ERASURE
    assert [(r.program_id, r.status) for r in plan.subscriptions] == [
        ("a", "opted_out"),
        ("b", "opted_out"),
    ]
    assert "t-7" in plan.event.fields["note"] and plan.event.fields["kind"] == "erasure"


def test_every_hot_path_store_is_a_consent_store(app):
    from app.core.consent_plan import ConsentStore
    from app.store.consent_sql import SessionConsentStore
    from app.store.hot_path import open_hot_store

    with open_hot_store(app.extensions["db"]) as store:
        assert isinstance(store, ConsentStore)
    with app.extensions["db"].transaction() as session:
        assert isinstance(SessionConsentStore(session), ConsentStore)
