"""A 10,000-recipient batch through gunicorn and a sender worker to the fake Twilio, per backend.

The decisions depend on the real clock here (separate processes), so the recipients
are numbers of countries whose windows the test configures around the current time
(`NON_US_SENDING_WINDOWS`): one country's window is open for hours, another's opens an
hour or more from now. Checked: the counts per decision; a retry with the same key
answers the same and queues nothing; the same key for another request is 409; the
sends hold `SENDER_MPS` (busiest one-second window at the fake); a STOP texted while
the batch is being sent stops that number's message.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
import requests
from sqlalchemy import func, select

from app.store.db import Database
from app.store.models import OutboundMessage
from tests.fake_twilio import FakeTwilio
from tests.fault_helpers import deployment, post_text, wait_until
from tests.sending_helpers import auth, seed_subscribers, send_token

pytestmark = pytest.mark.e2e

BODY = "Demo Alerts: 20% off this week. Reply STOP to cancel."
MPS = 100
# country -> (zone, a mobile number prefix, how many digits complete a valid number);
# which two countries a run uses depends on the hour, so every one must hold valid numbers
# (test_every_country_of_the_batch_has_valid_mobile_numbers).
COUNTRIES = {
    "GB": ("Europe/London", "+447911", 6),
    "JP": ("Asia/Tokyo", "+8190123", 5),
    "BR": ("America/Sao_Paulo", "+5511912", 6),
    "IN": ("Asia/Kolkata", "+9198123", 5),
}
SENDS, DEFERRED, OPTED_OUT, PENDING, UNKNOWN = 2_000, 5_000, 1_500, 1_000, 500


def two_countries_in_daytime(now: datetime | None = None) -> tuple[str, str, dict[str, str]]:
    """Two countries whose local hour is between 3 and 19 now, and the windows that make the
    first open and the second closed for at least an hour."""
    now = now or datetime.now(UTC)
    daytime = [
        c
        for c, (zone, _p, _w) in COUNTRIES.items()
        if 3 <= now.astimezone(ZoneInfo(zone)).hour <= 19
    ]
    open_country, closed_country = daytime[:2]
    opens_later = now.astimezone(ZoneInfo(COUNTRIES[closed_country][0])).hour + 2
    windows = {
        "*": "08:00-21:00",
        open_country: "00:00-23:59",
        closed_country: f"{opens_later:02d}:00-23:59",
    }
    return open_country, closed_country, windows


def numbers(country: str, start: int, count: int) -> list[str]:
    _zone, prefix, width = COUNTRIES[country]
    return [f"{prefix}{n:0{width}d}" for n in range(start, start + count)]


def nothing_due(db) -> bool:
    """No message is being sent or due now (the deferred ones wait for their window)."""
    with db.transaction(write=False) as session:
        return not session.execute(
            select(func.count())
            .select_from(OutboundMessage)
            .where(
                OutboundMessage.status.in_(["queued", "sending"]),
                OutboundMessage.next_attempt_at <= datetime.now(UTC),
            )
        ).scalar()


@pytest.fixture
def db(database_url):
    """The database, without an app of the tests' own: the service under test (gunicorn and
    the worker) is the only app, so its SUPPRESSION_KEY is the one the database records."""
    database = Database(database_url)
    yield database
    database.dispose()


def test_every_country_the_batch_may_use_has_valid_mobile_numbers():
    """The batch's countries depend on the hour the suite runs, so each must give numbers
    the gateway accepts; an invalid range would be refused and fail only at some hours."""
    for country in COUNTRIES:
        for start, count in (
            (0, DEFERRED),
            (5_000, OPTED_OUT),
            (8_000, UNKNOWN),
            (20_000, PENDING),
        ):
            for number in numbers(country, start, count):
                parsed = phonenumbers.parse(number)
                assert phonenumbers.is_valid_number(parsed), number
                assert phonenumbers.region_code_for_number(parsed) == country, number


@pytest.mark.parametrize("day", ["2026-01-15", "2026-07-15"])  # winter and summer time
def test_two_countries_are_in_daytime_at_every_hour(day):
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    for minute in range(0, 24 * 60, 15):
        now = start + timedelta(minutes=minute)
        open_country, closed_country, windows = two_countries_in_daytime(now)
        assert open_country != closed_country
        opens = int(windows[closed_country][:2])
        assert opens - now.astimezone(ZoneInfo(COUNTRIES[closed_country][0])).hour == 2


def test_a_10000_recipient_batch_end_to_end(database_url, tmp_path, db):
    open_country, closed_country, windows = two_countries_in_daytime()
    sends = numbers(open_country, 0, SENDS)
    deferred = numbers(closed_country, 0, DEFERRED)
    opted_out = numbers(open_country, 5_000, OPTED_OUT)
    pending = numbers(closed_country, 20_000, PENDING)
    unknown = numbers(open_country, 8_000, UNKNOWN)
    seed_subscribers(db, sends + deferred)
    seed_subscribers(db, opted_out, status="opted_out")
    seed_subscribers(db, pending, status="pending")
    token = send_token(db)
    to = [n for group in zip(sends, deferred[: len(sends)], strict=True) for n in group]
    to += deferred[len(sends) :] + opted_out + pending + unknown
    assert len(to) == 10_000
    request = {"program": "demo", "body": BODY, "to": to, "idempotency_key": "campaign-1"}
    stopper = sends[-1]  # the last to be sent: its STOP arrives while the batch is going out

    fake = FakeTwilio().start()
    environment = {
        "SENDER_MPS": str(MPS),
        "SENDER_THREADS": "8",
        "TWILIO_FROM_NUMBER": "+15005550006",
        "NON_US_SENDING_WINDOWS": ",".join(f"{c}={w}" for c, w in windows.items()),
    }
    with deployment(database_url, tmp_path, fake, **environment) as stack:
        url = stack.base + "/api/v1/messages"
        answer = requests.post(url, json=request, headers=auth(token), timeout=300)
        assert answer.status_code == 202, answer.text
        results = answer.json()["results"]
        assert [r["to"] for r in results] == to
        counts = Counter(r["decision"] for r in results)
        reasons = Counter((r["reason"] or "").split(":")[0] for r in results)
        assert counts == {"send": SENDS, "deferred": DEFERRED, "refused": 3_000}
        assert reasons == {
            "": SENDS,
            "quiet_hours": DEFERRED,
            "opted_out": OPTED_OUT,
            "no_consent": PENDING + UNKNOWN,
        }
        deferred_until = {r["not_before"] for r in results if r["decision"] == "deferred"}
        assert len(deferred_until) == 1 and deferred_until.pop() > datetime.now(UTC).isoformat()

        # The same request again: the same answer, nothing more queued.
        again = requests.post(url, json=request, headers=auth(token), timeout=300)
        assert again.status_code == 202 and again.json() == answer.json()
        with db.transaction(write=False) as session:
            queued = session.execute(select(func.count()).select_from(OutboundMessage)).scalar()
        assert queued == SENDS + DEFERRED
        other = requests.post(url, json={**request, "to": to[:-1]}, headers=auth(token), timeout=60)
        assert other.status_code == 409

        stack.start_worker()
        assert post_text(stack.base, stopper, "STOP").status_code == 200
        wait_until(
            lambda: sum(1 for m in fake.received if m.form.get("Body") == BODY) >= SENDS - 1,
            timeout=SENDS / MPS * 3 + 30,
            what="the batch's sends to reach the fake Twilio",
        )
        wait_until(lambda: nothing_due(db), timeout=30, what="nothing left to send now")

    campaign = [m for m in fake.received if m.form.get("Body") == BODY]
    recipients = Counter(m.form["To"] for m in campaign)
    assert len(campaign) == SENDS - 1 and max(recipients.values()) == 1  # no duplicate
    assert stopper not in recipients and set(recipients) == set(sends) - {stopper}
    assert not set(recipients) & set(deferred)
    arrivals = sorted(m.arrived for m in campaign)
    # Handoffs are paced (slots 1/97 s apart); an arrival at the fake, a thread of this
    # busy test process, also carries the machine's scheduling jitter, which can bunch a
    # few arrivals together (101 in a second was seen once on a loaded 2-core machine, with
    # 97 handoffs). As in test_deployment, the window is 50 ms short of a second; unpaced,
    # eight threads would put several hundred in it.
    window = 1.0 - 0.05
    busiest = max(
        sum(1 for t in arrivals[i : i + MPS + 1] if t - start < window)
        for i, start in enumerate(arrivals)
    )
    assert busiest <= MPS
    with db.transaction(write=False) as session:
        stopped = session.execute(
            select(OutboundMessage.status).where(
                OutboundMessage.to_number == stopper, OutboundMessage.kind == "program_message"
            )
        ).scalar_one()
        waiting = session.execute(
            select(func.count())
            .select_from(OutboundMessage)
            .where(OutboundMessage.status == "queued", OutboundMessage.decision == "deferred")
        ).scalar()
    assert stopped == "suppressed" and waiting == DEFERRED
    fake.stop()
