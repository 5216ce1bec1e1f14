"""`ledger verify` beyond the hashes (app/ledger/replay.py): texts re-hashed, chains replayed.

Issue 12, finding 4: a disclosure text edited behind the triggers showed in the
evidence bundle as verified. Disclosure and reply texts are stored once in
`ledger_texts`, addressed by their SHA-256, and events name them by that
address; nothing recomputed it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import select

from app.core.ledger_hashing import text_sha256
from app.ledger.replay import LedgerReplay, chain_disagreement, replay_chain
from app.store.models import ConsentEvent, Subscriber
from tests.ledger_tampering import tamper
from tests.staff_helpers import signed_in_client
from tests.twilio_helpers import send_text

PHONE = "+14155550100"


def join_event(db) -> ConsentEvent:
    with db.transaction(write=False) as session:
        return session.execute(
            select(ConsentEvent).where(ConsentEvent.intent == "opt_in")
        ).scalar_one()


def bundle_and_page(app, db) -> tuple[dict, str]:
    with db.transaction(write=False) as session:
        subscriber_id = session.execute(select(Subscriber.id)).scalar_one()
    staff, _ = signed_in_client(app, db, "compliance", f"officer{uuid.uuid4().hex[:8]}@example.com")
    bundle = staff.get(f"/staff/subscribers/{subscriber_id}/evidence.json").get_json()
    html = staff.get(f"/staff/subscribers/{subscriber_id}/evidence.html").get_data(as_text=True)
    return bundle, html


def test_an_edited_disclosure_fails_verify_and_the_bundle(app, client, db):
    send_text(client, PHONE, "JOIN")
    send_text(client, PHONE, "YES")
    event = join_event(db)
    sha = event.disclosure_sha256
    assert sha is not None
    runner = app.test_cli_runner()
    assert runner.invoke(args=["ledger", "verify", "--quiet"]).exit_code == 0
    bundle, _ = bundle_and_page(app, db)
    assert bundle["verification"]["ok"] and bundle["verification"]["texts_edited"] == []

    tamper(
        db,
        "UPDATE ledger_texts SET body = :body WHERE sha256 = :sha",
        body="Msg&data rates may apply. You agree to receive up to 30 msgs/day.",
        sha=sha,
    )

    result = runner.invoke(args=["ledger", "verify", "--quiet"])
    assert result.exit_code == 1
    assert f"ledger text {sha}" in result.output and "edited" in result.output
    assert f"event {event.id}" in result.output

    bundle, html = bundle_and_page(app, db)
    assert bundle["verification"]["ok"] is False
    assert bundle["verification"]["texts_edited"] == [sha]
    assert bundle["verification"]["first_bad_event_id"] == event.id
    edited = next(e for e in bundle["events"] if e["id"] == event.id)
    assert edited["disclosure_verified"] is False
    assert "This disclosure text was edited" in html and "FAILED" in html


def test_an_edited_reply_text_fails_verify(app, client, db):
    send_text(client, PHONE, "HELP")
    with db.transaction(write=False) as session:
        sha = session.execute(select(ConsentEvent.reply_sha256)).scalar_one()
    tamper(
        db,
        "UPDATE ledger_texts SET body = body || ' Reply YES for prizes.' WHERE sha256 = :s",
        s=sha,
    )
    result = app.test_cli_runner().invoke(args=["ledger", "verify", "--quiet"])
    assert result.exit_code == 1 and f"ledger text {sha}" in result.output
    bundle, _ = bundle_and_page(app, db)
    assert bundle["verification"]["ok"] is False
    assert bundle["events"][0]["reply_text_verified"] is False


def test_a_stored_text_hashes_to_its_address(app, client, db):
    send_text(client, PHONE, "JOIN")
    event = join_event(db)
    with db.transaction(write=False) as session:
        from app.store.models import LedgerText

        body = session.get(LedgerText, event.disclosure_sha256).body
    assert text_sha256(body) == event.disclosure_sha256


@dataclass
class FakeEvent:
    """The fields of an event the replay reads."""

    id: int
    changes: list[dict] = field(default_factory=list)
    subscriber_id: int = 1
    kind: str = "inbound_text"
    note: str | None = None
    occurred_at: object = None
    disclosure_sha256: str | None = None
    reply_sha256: str | None = None


def change(program: str, before: str, after: str) -> dict:
    return {"program": program, "before": before, "after": after}


def test_a_chain_replays_to_its_final_statuses():
    events = [
        FakeEvent(1, [change("demo", "none", "pending")]),
        FakeEvent(2, [change("demo", "pending", "active")]),
        FakeEvent(3),  # HELP: no change
        FakeEvent(4, [change("demo", "active", "opted_out"), change("news", "none", "opted_out")]),
    ]
    programs, problem = replay_chain(events)
    assert problem is None
    assert programs == {"demo": ("opted_out", 4), "news": ("opted_out", 4)}


def test_a_change_that_does_not_start_where_the_chain_stood_fails():
    events = [
        FakeEvent(1, [change("demo", "none", "pending")]),
        FakeEvent(2, [change("demo", "opted_out", "active")]),  # a START from a state never had
    ]
    _, problem = replay_chain(events)
    assert problem and "event 2" in problem and "had reached pending" in problem
    assert LedgerReplay().observe(FakeEvent(9, [change("demo", "none", "bogus")]))


@dataclass
class Row:
    program_id: str
    status: str
    last_event_id: int


def test_rows_are_compared_with_the_replayed_chain():
    events = [
        FakeEvent(1, [change("demo", "none", "pending")]),
        FakeEvent(2, [change("demo", "pending", "active")]),
        FakeEvent(3, [change("demo", "active", "opted_out")]),
    ]
    assert chain_disagreement(events, [Row("demo", "opted_out", 3)], "n") is None
    assert "says active" in chain_disagreement(events, [Row("demo", "active", 3)], "n")
    assert "event 2" in chain_disagreement(events, [Row("demo", "opted_out", 2)], "n")
    assert "no subscription row" in chain_disagreement(events, [], "n")
    assert "no change" in chain_disagreement(events[:0], [Row("demo", "active", 2)], "n")
