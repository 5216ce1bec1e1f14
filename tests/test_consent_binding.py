"""Consent state bound to the ledger (app/ledger/binding.py, app/ledger/replay.py).

Issue 12, finding 2: one `UPDATE subscriptions SET status='active'` made an
opted-out number textable, and `ledger verify`, the timeline and the evidence
bundle still said "intact". These tests make that change (and its subtler
variants: pointing the row back at the old YES, deleting the row, emptying the
suppression list) and show that verify fails naming the number by its keyed
hash only, that the sender refuses and counts it, that the API does not call
the number textable, and that the console and the bundle do not say yes.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from app.access.tokens import create_api_token
from app.ledger.binding import LEDGER_MISMATCH, recorded_status, row_agrees
from app.ledger.chain import verify_ledger
from app.ledger.suppression import phone_hmac
from app.outbox.twilio_gateway import SendReceipt
from app.store.models import ConsentEvent, OutboundMessage, Subscriber
from tests.ledger_tampering import tamper
from tests.staff_helpers import signed_in_client
from tests.test_metrics import scrape, value
from tests.test_sender import RecordingGateway, make_sender
from tests.twilio_helpers import send_text

PHONE = "+14155550100"


def texted(client, *bodies: str, phone: str = PHONE) -> None:
    for body in bodies:
        response, _ = send_text(client, phone, body)
        assert response.status_code == 200


def subscriber_id(db, phone: str = PHONE) -> int:
    with db.transaction(write=False) as session:
        return session.execute(select(Subscriber.id).where(Subscriber.phone == phone)).scalar_one()


def event_id(db, intent: str, phone: str = PHONE) -> int:
    with db.transaction(write=False) as session:
        return session.execute(
            select(ConsentEvent.id)
            .join(Subscriber, Subscriber.id == ConsentEvent.subscriber_id)
            .where(Subscriber.phone == phone, ConsentEvent.intent == intent)
            .order_by(ConsentEvent.id.desc())
            .limit(1)
        ).scalar_one()


class FreshSidGateway(RecordingGateway):
    """A recording gateway whose SIDs never repeat across instances."""

    def send(self, sms):
        receipt = super().send(sms)
        return SendReceipt(sid="SM" + uuid.uuid4().hex, status=receipt.status)


def send_everything(app) -> RecordingGateway:
    """Let one sender work through the outbox; what reached the (fake) gateway."""
    gateway = FreshSidGateway()
    sender = make_sender(app, gateway)
    while sender.process_one():
        pass
    return gateway


def api_consent(client, db) -> dict:
    with db.transaction() as session:
        _, token = create_api_token(session, "binding-test")
    headers = {"Authorization": f"Bearer {token}"}
    [program] = client.get(f"/api/v1/subscribers/{PHONE}", headers=headers).get_json()["programs"]
    checks = client.post(
        "/api/v1/consent-checks", json={"program": "demo", "phones": [PHONE]}, headers=headers
    ).get_json()["results"]
    assert checks[0]["may_text"] == program["may_text"]
    return program


def verify_cli(app):
    return app.test_cli_runner().invoke(args=["ledger", "verify", "--quiet"])


def opted_out_then_flipped(app, client, db, **changes) -> None:
    """JOIN, YES, STOP, the replies sent; then the row is changed behind the ledger."""
    texted(client, "JOIN", "YES", "STOP")
    send_everything(app)
    assignments = ", ".join(f"{column} = :{column}" for column in changes)
    tamper(
        db,
        f"UPDATE subscriptions SET {assignments} WHERE subscriber_id = :s",
        s=subscriber_id(db),
        **changes,
    )


def test_a_flipped_subscription_is_refused_everywhere(app, client, db):
    """The finding: `UPDATE subscriptions SET status='active'` on an opted-out number."""
    opted_out_then_flipped(app, client, db, status="active")
    key = app.extensions["settings"].suppression_hmac_key

    # ledger verify fails, naming the number by its keyed hash, never in clear.
    result = verify_cli(app)
    assert result.exit_code == 1
    assert f"hmac-sha256:{phone_hmac(key, PHONE)}" in result.output
    assert "changed behind the ledger" in result.output
    assert "4155550100" not in result.output

    # The API does not report it textable.
    program = api_consent(client, db)
    assert program["status"] == "active"
    assert (program["may_text"], program["ledger_agrees"]) == (False, False)

    # The number texts JOIN: the flipped row says active, so the flow answers "already
    # subscribed", a reply an opted-out number may not get. The sender refuses it.
    texted(client, "JOIN")
    gateway = send_everything(app)
    assert gateway.sent == []
    with db.transaction(write=False) as session:
        refused = session.execute(
            select(OutboundMessage).order_by(OutboundMessage.id.desc()).limit(1)
        ).scalar_one()
    assert (refused.kind, refused.status) == ("already_subscribed", "suppressed")
    assert refused.error_message == f"suppressed at send time: {LEDGER_MISMATCH}"

    # Counted in the metrics and on the dashboard.
    assert value(scrape(client), "scg_sends_refused_ledger_mismatch") == 1
    staff, _ = signed_in_client(app, db, "compliance")
    dashboard = staff.get("/staff/").get_data(as_text=True)
    assert 'id="ledger-mismatch-refusals">1<' in dashboard

    # The evidence bundle and the timeline do not say "intact" or "yes".
    bundle = staff.get(f"/staff/subscribers/{subscriber_id(db)}/evidence.json").get_json()
    assert bundle["verification"]["ok"] is False
    assert "changed behind the ledger" in bundle["verification"]["message"]
    [status] = bundle["current_status"]
    assert (status["status"], status["may_text"], status["ledger_agrees"]) == (
        "active",
        False,
        False,
    )
    page = staff.get(f"/staff/subscribers/{subscriber_id(db)}").get_data(as_text=True)
    verdict = page.split("Can we text this number?</h2>", 1)[1].split("</p>", 1)[0]
    assert "No" in verdict and "Yes" not in verdict
    assert "FAILED" in page and "Intact" not in page
    assert "the ledger does not agree" in page


def test_pointing_the_row_back_at_the_old_yes_is_refused(app, client, db):
    """Subtler: the row says active *and* names the YES event, which did record active."""
    texted(client, "JOIN", "YES")
    yes_event = event_id(db, "confirm")
    texted(client, "STOP")
    send_everything(app)
    tamper(
        db,
        "UPDATE subscriptions SET status = 'active', last_event_id = :e WHERE subscriber_id = :s",
        e=yes_event,
        s=subscriber_id(db),
    )
    result = verify_cli(app)
    assert result.exit_code == 1 and "chain ends at opted_out" in result.output
    assert api_consent(client, db)["may_text"] is False
    texted(client, "JOIN")
    assert send_everything(app).sent == []


def test_a_deleted_opt_out_row_is_refused(app, client, db):
    """Without its row the number would read as never subscribed: replies would go again."""
    texted(client, "JOIN", "YES", "STOP")
    send_everything(app)
    with db.transaction() as session:  # a welcome still queued (as if it slipped past the STOP)
        session.add(
            OutboundMessage(
                subscriber_id=subscriber_id(db),
                program_id="demo",
                kind="welcome",
                to_number=PHONE,
                from_number="12345",
                body="Welcome!",
            )
        )
    tamper(db, "DELETE FROM subscriptions WHERE subscriber_id = :s", s=subscriber_id(db))
    assert send_everything(app).sent == []
    result = verify_cli(app)
    assert result.exit_code == 1 and "no subscription row" in result.output


def test_an_honest_ledger_verifies_and_every_status_is_bound(app, client, db):
    """JOIN, YES, HELP, STOP, START, another number, a carrier-free history: all agree."""
    texted(client, "JOIN", "YES", "HELP", "STOP", "START")
    texted(client, "JOIN", phone="+14155550101")
    send_everything(app)
    with db.transaction(write=False) as session:
        assert verify_ledger(session).ok
    assert verify_cli(app).exit_code == 0
    assert api_consent(client, db)["may_text"] is True


def test_erasure_and_the_suppression_list_are_replayed(app, client, db):
    texted(client, "JOIN", "YES")
    runner = app.test_cli_runner()
    erased = runner.invoke(args=["erase", PHONE, "--reason", "ticket 77", "--keep-twilio-copies"])
    assert erased.exit_code == 0, erased.output
    assert verify_cli(app).exit_code == 0
    key = app.extensions["settings"].suppression_hmac_key
    digest = phone_hmac(key, PHONE)

    tamper(db, "DELETE FROM suppressions")  # the number could be imported again
    result = verify_cli(app)
    assert result.exit_code == 1
    assert f"hmac-sha256:{digest}" in result.output and "missing from the suppression list" in (
        result.output
    )


def test_the_pure_rules(app):
    changes = [{"program": "demo", "before": "pending", "after": "active"}]
    assert recorded_status("demo", changes, "demo", "active") == "active"
    assert recorded_status("other", changes, "other", "none") == "none"  # primary program
    assert recorded_status("other", changes, "demo", "active") is None
    agrees = dict(
        program_id="demo",
        subscriber_id=1,
        status="active",
        event_subscriber_id=1,
        event_changes=changes,
        event_program_id="demo",
        event_status_after="active",
        changed_later=False,
    )
    assert row_agrees(**agrees)
    assert not row_agrees(**{**agrees, "status": "opted_out"})
    assert not row_agrees(**{**agrees, "event_subscriber_id": 2})  # another number's event
    assert not row_agrees(**{**agrees, "event_subscriber_id": None})  # no event
    assert not row_agrees(**{**agrees, "changed_later": True})
    assert row_agrees(**{**agrees, "status": None})  # no row, no change in the chain


def test_the_binding_costs_no_query_of_its_own(app, client, db):
    """The sender's check stays one statement: the event is joined, not fetched."""
    from sqlalchemy import event as sa_event

    from app.outbox.hold import consent_refusal

    texted(client, "JOIN")
    with db.transaction(write=False) as session:
        message = session.execute(select(OutboundMessage)).scalar_one()
        statements = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        engine = session.get_bind()
        sa_event.listen(engine, "before_cursor_execute", listener)
        try:
            assert consent_refusal(session, message, b"k") is None
        finally:
            sa_event.remove(engine, "before_cursor_execute", listener)
    assert len(statements) == 1
