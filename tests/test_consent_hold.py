"""The sender's consent hold: no opt-out, by any path, commits while a reply to the number is
in flight (app.outbox.hold `ConsentHold.held`, app.store.db `Database.number_guard`).

Each test parks a reply inside the gateway's `send` (Twilio has not answered yet) and starts
an opt-out by one path in another thread: a STOP text, a carrier opt-out reported by a status
callback (error 21610), an erasure, or a staff member's review decision. The opt-out must not
commit before Twilio answers, and must commit right after. On PostgreSQL the sender holds the
subscriber row FOR SHARE; on SQLite a shared lock on the number that every opt-out path takes
exclusively. Without the hold, the opt-out commits at once and the assertion below fails.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from app.outbox.twilio_gateway import SendReceipt
from app.store.models import ConsentEvent
from tests.staff_helpers import signed_in_client
from tests.test_sender import PHONE, RecordingGateway, make_sender, status_of
from tests.test_staff_views import decide as decide_in_console
from tests.twilio_helpers import post_signed, send_text, status_params

# How long the opt-out is given to (wrongly) commit while the reply is in flight. Not a speed
# target: an unguarded opt-out commits within milliseconds, a guarded one never does.
GRACE_SECONDS = 0.5


class ParkedGateway(RecordingGateway):
    """A gateway whose first send waits, inside the call, until the test lets it go."""

    def __init__(self):
        super().__init__()
        self.inside = threading.Event()
        self.release = threading.Event()

    def send(self, sms):
        self.inside.set()
        assert self.release.wait(15), "the test never released the send"
        self.sent.append(sms)
        return SendReceipt(sid="SM" + "f" * 32, status="queued")


def _text_stop(app, db, runner):
    send_text(app.test_client(), PHONE, "STOP")


def _carrier_opt_out(app, db, runner):
    first_sid = "SM" + f"{1:032x}"  # the confirmation request, sent by the RecordingGateway
    response = post_signed(
        app.test_client(), "/twilio/status", status_params(first_sid, "undelivered", "21610")
    )
    assert response.status_code == 200


def _erasure(app, db, runner):
    result = runner.invoke(args=["erase", PHONE, "--reason", "ticket 7"])
    assert result.exit_code == 0, result.output


def _staff_decision(app, db, runner):
    client, _ = signed_in_client(app, db, "compliance")
    with db.transaction(write=False) as session:
        flagged = session.execute(
            select(ConsentEvent.id).where(ConsentEvent.possible_opt_out.is_(True))
        ).scalar_one()
    assert decide_in_console(client, flagged, "opt_out", "they asked to stop").status_code == 302


@pytest.mark.parametrize(
    "opt_out",
    [_text_stop, _carrier_opt_out, _erasure, _staff_decision],
    ids=["stop-text", "carrier-21610", "erasure", "staff-decision"],
)
def test_an_opt_out_waits_for_the_reply_in_flight(app, client, db, runner, opt_out):
    send_text(client, PHONE, "JOIN")
    first = make_sender(app, RecordingGateway())
    assert first.deliver(first.claim(1)[0]) == "sent"  # the confirmation request, SID ...01
    send_text(client, PHONE, "YES")
    send_text(client, PHONE, "We have got to stop this bill")  # flagged for review
    assert status_of(db) == "active"

    gateway = ParkedGateway()
    sender = make_sender(app, gateway)
    [welcome] = sender.claim(1)
    delivered: list[str] = []
    sending = threading.Thread(target=lambda: delivered.append(sender.deliver(welcome)))
    sending.start()
    assert gateway.inside.wait(10)

    errors: list[BaseException] = []

    def run_opt_out():
        try:
            opt_out(app, db, runner)
        except BaseException as error:  # reported on the test's thread below
            errors.append(error)

    opting_out = threading.Thread(target=run_opt_out)
    opting_out.start()
    opting_out.join(GRACE_SECONDS)
    still_active = status_of(db)
    gateway.release.set()
    sending.join(15)
    opting_out.join(15)

    assert errors == []
    assert still_active == "active"  # the opt-out waited for Twilio's answer
    assert delivered == ["sent"] and len(gateway.sent) == 1  # the reply went out once ...
    assert status_of(db) == "opted_out"  # ... and the opt-out committed right after
