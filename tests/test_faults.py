"""Fault injection: no acknowledged text is lost, no reply goes out twice or after an opt-out.

Each scenario runs real processes where it needs them (gunicorn, sender workers,
a private PostgreSQL cluster) against the local fake of Twilio's REST API, counts
what happened, asserts on the counts, and writes them to
`<pytest basetemp>/fault-results/<scenario>[<backend>].json` (and prints them;
`pytest -rP` shows them). docs/reliability.md, section "Fault injection",
describes each scenario and the figures of a recorded run.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from app.core import flows
from app.core.programs import load_programs
from app.store.db import Database
from app.store.migrate import upgrade
from app.store.models import (
    DELIVERED,
    FAILED,
    SENT,
    SUPPRESSED,
    UNDELIVERED,
    ConsentEvent,
    DeliveryReceipt,
    OutboundMessage,
    Subscription,
)
from tests.fake_twilio import FakeTwilio, Fault
from tests.fault_helpers import (
    FaultReport,
    at_once,
    deployment,
    outbox,
    outbox_id,
    outbox_settled,
    post_text,
    post_until_answered,
    replay_ledger,
    reply_figures,
    wait_until,
)
from tests.servers import PROJECT, free_port
from tests.twilio_helpers import (
    TEST_AUTH_TOKEN,
    new_message_sid,
    post_signed,
    send_text,
    status_params,
)


@pytest.fixture
def report(request, tmp_path_factory):
    """`report(scenario)` -> a FaultReport for this test's backend, written at the end."""
    made: list[FaultReport] = []

    def make(scenario: str) -> FaultReport:
        callspec = getattr(request.node, "callspec", None)
        backend = callspec.params.get("database_url", "postgresql") if callspec else "postgresql"
        directory = tmp_path_factory.getbasetemp() / "fault-results"
        made.append(FaultReport(directory, scenario, backend))
        return made[-1]

    yield make
    for one in made:
        one.write()


@pytest.fixture
def catalog():
    return load_programs(PROJECT / "programs" / "demo.toml")


@pytest.fixture
def database(database_url):
    handle = Database(database_url)
    yield handle
    handle.dispose()


# ----------------------------------------------------------------------------------------------
# 1. The worker is killed after Twilio accepted a message and before it was recorded


@pytest.mark.e2e
@pytest.mark.parametrize("recovery", ["status_callback", "twilio_list", "neither"])
def test_worker_killed_between_twilio_accepting_and_recording(
    database_url, tmp_path, database, report, recovery
):
    """SIGKILL while Twilio holds its answer; a new worker sends the rest, duplicating nothing.

    `status_callback`: Twilio's "sent" callback (its URL names the outbox row)
    attaches the SID the worker never stored. `twilio_list`: no callback; the new
    worker finds the message in Twilio's Messages list before sending again.
    `neither`: no callback and a list that does not show the message: the measured
    cost without the two safeguards is one duplicate per message in the window.
    """
    texts, hold_from = 10, 3
    fake = FakeTwilio(
        auth_token=TEST_AUTH_TOKEN,
        callbacks=["sent"] if recovery == "status_callback" else [],
        list_hides_messages=recovery != "twilio_list",
    ).start()
    held, release = threading.Event(), threading.Event()
    accepted_so_far = itertools.count(1)

    def hold_the_answer(_message):
        if next(accepted_so_far) >= hold_from:
            held.set()
            release.wait(30)

    fake.on_accept = hold_the_answer
    phones = [f"+1415555{1000 + i}" for i in range(texts)]
    try:
        with deployment(database_url, tmp_path, fake) as stack:
            acknowledged = sum(post_text(stack.base, p, "JOIN").status_code == 200 for p in phones)
            first = stack.start_worker("first")
            assert held.wait(20), "no message reached the fake Twilio"
            time.sleep(0.5)  # let the worker's other threads reach the held answer too
            in_window = [m for m in fake.accepted()][hold_from - 1 :]
            if recovery == "status_callback":
                wait_until(
                    lambda: (
                        {sid for sid, _, code in fake.callbacks_posted if code == 200}
                        >= {m.sid for m in in_window}
                    ),
                    10,
                    "Twilio's status callbacks answered",
                )
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            rows_unrecorded = sum(1 for r in outbox(database) if r.twilio_sid is None)
            release.set()
            fake.on_accept = None

            stack.start_worker("after-restart")
            wait_until(lambda: outbox_settled(database), 30, "every reply sent after the restart")
            figures = reply_figures(database, fake)
    finally:
        release.set()
        fake.stop()

    result = report(f"worker-killed-{recovery}")
    result.add(
        **{
            "texts sent": texts,
            "acknowledged": acknowledged,
            "accepted by Twilio, answer held, worker SIGKILLed": len(in_window),
            "rows without a SID at the kill": rows_unrecorded,
        },
        **figures,
    )
    assert acknowledged == texts
    assert len(in_window) >= 1
    assert figures["lost"] == 0
    assert figures["replies queued"] == texts
    if recovery == "neither":
        assert figures["duplicated"] == len(in_window)
    else:
        assert figures["duplicated"] == 0
        assert figures["SID recorded matches Twilio's"] == texts


# ----------------------------------------------------------------------------------------------
# 2. PostgreSQL restarts under a stream of webhooks


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


@contextmanager
def private_postgres():
    """A PostgreSQL cluster of this test's own (the machine's shared one is never touched)."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="faults-pg-"))
    root.chmod(0o755)
    if as_postgres:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
        "-c fsync=off -c max_connections=60"
    )

    def pg_ctl(*args: str) -> None:
        subprocess.run(
            [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log")]
            + list(args),
            check=True,
            capture_output=True,
            timeout=60,
        )

    subprocess.run(
        [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
        + ["--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pg_ctl("start", "-w", "-o", options)
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        yield url, pg_ctl, options
    finally:
        subprocess.run(
            [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "stop", "-m", "immediate"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.e2e
def test_postgresql_restart_during_a_stream_of_webhooks(tmp_path, report):
    """Every 200 is in the ledger; 503s during the outage succeed on retry; no app restart."""
    numbers_per_client, clients = 10, 2
    with private_postgres() as (url, pg_ctl, options):
        upgrade(url)
        fake = FakeTwilio().start()
        database = Database(url)
        deliveries = []
        lock = threading.Lock()
        try:
            with deployment(url, tmp_path, fake) as stack:
                stack.start_worker()
                web_pid = stack.web.pid

                def client(index: int) -> None:
                    for n in range(numbers_per_client):
                        phone = f"+1415556{index}{n:03d}"
                        for body in ("JOIN", "YES", "HELP"):
                            delivery = post_until_answered(stack.base, phone, body)
                            with lock:
                                deliveries.append(delivery)

                threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
                for thread in threads:
                    thread.start()
                wait_until(lambda: len(deliveries) >= 15, 30, "the stream under way")
                outage_started = time.monotonic()
                pg_ctl("stop", "-m", "fast", "-w")
                time.sleep(1.5)
                pg_ctl("start", "-w", "-o", options)
                back_at = time.time()
                outage = time.monotonic() - outage_started
                for thread in threads:
                    thread.join(120)
                wait_until(lambda: outbox_settled(database), 60, "every reply sent after it")

                # Restarted again while idle: each web worker's pooled connection is dead.
                pg_ctl("restart", "-m", "fast", "-w", "-o", options)
                after_idle_restart = at_once(
                    [
                        lambda i=i: post_text(stack.base, f"+14155569{i:03d}", "HELP").status_code
                        for i in range(8)
                    ],
                    4,
                )
                deliveries_after_idle = len(after_idle_restart)
                wait_until(lambda: outbox_settled(database), 60, "the replies after it")
                same_web_serves = (
                    stack.web.poll() is None
                    and stack.web.pid == web_pid
                    and requests.get(stack.base + "/healthz", timeout=5).status_code == 200
                )
                with database.transaction(write=False) as session:
                    per_sid = Counter(
                        session.execute(
                            select(ConsentEvent.message_sid).where(
                                ConsentEvent.message_sid.in_([d.sid for d in deliveries])
                            )
                        ).scalars()
                    )
                figures = reply_figures(database, fake)
        finally:
            fake.stop()
            database.dispose()

    acknowledged = [d for d in deliveries if d.acknowledged]
    result = report("postgresql-restart")
    result.add(
        **{
            "outage (s)": round(outage, 2),
            "texts sent": len(deliveries),
            "acknowledged (200)": len(acknowledged),
            "answered 503": sum(d.answers.count("503") for d in deliveries),
            "connection errors": sum(d.answers.count("connection error") for d in deliveries),
            "retried then 200": sum(1 for d in acknowledged if len(d.answers) > 1),
            "errors after the database was back": sum(
                1
                for d in deliveries
                for answer, at in zip(d.answers, d.answered_at, strict=True)
                if answer != "200" and at > back_at
            ),
            "in ledger": sum(1 for d in deliveries if per_sid[d.sid]),
            "lost (200 but not in ledger)": sum(1 for d in acknowledged if not per_sid[d.sid]),
            "duplicated in ledger": sum(n - 1 for n in per_sid.values() if n > 1),
            "same gunicorn serves after": same_web_serves,
            "texts right after an idle restart": deliveries_after_idle,
            "of them answered 200 at once": after_idle_restart.count(200),
        },
        **{f"replies: {k}": v for k, v in figures.items()},
    )
    assert len(deliveries) == clients * numbers_per_client * 3
    assert len(acknowledged) == len(deliveries)
    assert result.figures["lost (200 but not in ledger)"] == 0
    assert result.figures["duplicated in ledger"] == 0
    assert result.figures["answered 503"] + result.figures["connection errors"] > 0
    assert same_web_serves
    assert after_idle_restart == [200] * deliveries_after_idle
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["replies queued"] == len(deliveries) + deliveries_after_idle


# ----------------------------------------------------------------------------------------------
# 3. Twilio's API misbehaves: rate limits, server errors, timeouts, resets, refusals

# recipient -> (what Twilio does to its reply, the outbox status expected, requests expected)
TWILIO_FAULTS = {
    "+14155552001": ("429 twice", [(429, 20429), (429, 20429)], SENT, 3),
    "+14155552002": ("500 then 503", [(500, None), (503, None)], SENT, 3),
    "+14155552003": ("accepted, answer after the timeout", [Fault.ACCEPT_THEN_HANG], SENT, 1),
    "+14155552004": ("connection reset before accepting", [Fault.RESET], SENT, 2),
    "+14155552005": ("accepted, then connection reset", [Fault.ACCEPT_THEN_RESET], SENT, 1),
    "+14155552006": ("21610 carrier opt-out", [(400, 21610)], FAILED, 1),
    "+14155552007": ("21211 invalid number", [(400, 21211)], FAILED, 1),
    "+14155552008": ("429 on every attempt", [(429, 20429)] * 10, FAILED, 5),
}
OPTS_OUT_WHILE_RETRIED = "+14155552009"


@pytest.mark.e2e
def test_twilio_api_faults_end_as_sent_or_failed(database_url, tmp_path, database, report):
    """Two workers against scripted faults: retries end as sent or failed, never twice, and
    nothing but the opt-out confirmation reaches a number once its STOP is committed."""
    fake = FakeTwilio(
        script={phone: list(faults) for phone, (_, faults, _, _) in TWILIO_FAULTS.items()},
        hang_seconds=2.0,
    )
    fake.script[OPTS_OUT_WHILE_RETRIED] = [(500, None)]
    fake.start()
    try:
        with deployment(
            database_url, tmp_path, fake, SENDER_BACKOFF_BASE="1", SENDER_BACKOFF_MAX="1"
        ) as stack:
            stack.start_worker("a")
            stack.start_worker("b")
            for phone in TWILIO_FAULTS:
                assert post_text(stack.base, phone, "HELP").status_code == 200
            assert post_text(stack.base, OPTS_OUT_WHILE_RETRIED, "JOIN").status_code == 200
            # The confirmation request met a 500 and waits for its retry (0.5 s at least,
            # SENDER_BACKOFF_BASE=1); STOP comes now. (A STOP that finds the request in
            # flight waits for Twilio's answer instead; the concurrency scenario has those.)
            wait_until(
                lambda: any(
                    r.to_number == OPTS_OUT_WHILE_RETRIED
                    and r.attempts == 1
                    and r.error_code is None
                    and r.status == "queued"
                    and r.error_message
                    for r in outbox(database)
                ),
                20,
                "the confirmation request refused once",
            )
            assert post_text(stack.base, OPTS_OUT_WHILE_RETRIED, "STOP").status_code == 200
            stop_committed = time.time()
            wait_until(lambda: outbox_settled(database), 45, "every reply sent or failed")
            time.sleep(0.5)  # anything still on its way to the fake arrives now
            figures = reply_figures(database, fake)
            rows = {r.to_number: r for r in outbox(database) if r.to_number in TWILIO_FAULTS}
            with database.transaction(write=False) as session:
                carrier_opt_out = session.execute(
                    select(Subscription.status)
                    .join(
                        OutboundMessage, OutboundMessage.subscriber_id == Subscription.subscriber_id
                    )
                    .where(OutboundMessage.to_number == "+14155552006")
                ).scalar_one()
                carrier_events = session.execute(
                    select(func.count()).where(ConsentEvent.kind == "carrier_opt_out")
                ).scalar_one()
            opt_out_rows = [r for r in outbox(database) if r.to_number == OPTS_OUT_WHILE_RETRIED]
    finally:
        fake.stop()

    requests_by_phone = Counter(m.form["To"] for m in fake.received)
    accepted_by_phone = Counter(m.form["To"] for m in fake.accepted())
    after_stop = [
        m
        for m in fake.received
        if m.form["To"] == OPTS_OUT_WHILE_RETRIED and m.arrived > stop_committed
    ]
    confirmation = next(r for r in opt_out_rows if r.kind == "opt_out_confirmation")
    cases = {
        name: {
            "status": rows[phone].status,
            "attempts": rows[phone].attempts,
            "requests at Twilio": requests_by_phone[phone],
            "accepted": accepted_by_phone[phone],
        }
        for phone, (name, _, _, _) in TWILIO_FAULTS.items()
    }
    result = report("twilio-api-faults")
    result.add(
        cases=cases,
        **{
            "opt-out during retries: requests after STOP committed": len(after_stop),
            "opt-out during retries: of them the confirmation": sum(
                m.form["Body"] == confirmation.body for m in after_stop
            ),
            "opt-out during retries: confirm request": next(
                r.status for r in opt_out_rows if r.kind == "confirm_request"
            ),
            "carrier opt-out events": carrier_events,
        },
        **figures,
    )
    for phone, (name, _, expected_status, expected_requests) in TWILIO_FAULTS.items():
        assert rows[phone].status == expected_status, name
        assert requests_by_phone[phone] == expected_requests, name
        assert accepted_by_phone[phone] == (1 if expected_status == SENT else 0), name
    assert carrier_opt_out == "opted_out" and carrier_events == 1
    assert [m.form["Body"] for m in after_stop] == [confirmation.body]
    assert {r.kind: r.status for r in opt_out_rows} == {
        "confirm_request": SUPPRESSED,
        "opt_out_confirmation": SENT,
    }
    assert figures["duplicated"] == 0 and figures["lost"] == 0


# ----------------------------------------------------------------------------------------------
# 4. Status callbacks: duplicated, out of order, concurrent

# What Twilio reports for one message (each callback posted twice, all shuffled), and the
# status the message must end in. Failure outranks delivery, so the order cannot matter.
CALLBACK_SEQUENCES = [
    (["delivered", "sent"], DELIVERED),
    (["sent", "queued", "delivered"], DELIVERED),
    (["delivered", "failed"], FAILED),
    (["sent", "delivered", "undelivered"], UNDELIVERED),
    (["sending", "sent"], SENT),
    (["read", "delivered", "sent"], DELIVERED),
]


@pytest.mark.parametrize("rounds", [3])
def test_status_callbacks_duplicated_out_of_order_and_concurrent(app, db, report, rounds):
    """Each message's callbacks twice over, shuffled, from eight threads at once; some arrive
    before the worker stored the SID, some name only the outbox row. The end is the same."""
    from app.outbox.records import record_sent
    from app.outbox.twilio_gateway import SendReceipt

    rng = random.Random(20261123)
    wrong: list[str] = []
    posted = answered_200 = 0
    for round_number in range(rounds):
        client = app.test_client()
        cases = []  # (outbox id, sid, expected, how the SID becomes known)
        for index, (statuses, expected) in enumerate(CALLBACK_SEQUENCES * 3):
            phone = f"+1415557{round_number}{index:03d}"
            send_text(client, phone, "HELP")
            with db.transaction(write=False) as session:
                message_id = session.execute(
                    select(OutboundMessage.id).where(OutboundMessage.to_number == phone)
                ).scalar_one()
            how = ("stored before", "stored after", "outbox id only")[index % 3]
            sid = "SM" + f"{round_number:02d}{index:030x}"
            if how == "stored before":
                with db.transaction() as session:
                    record_sent(session, message_id, SendReceipt(sid, "queued"), _now())
            cases.append((message_id, sid, statuses, expected, how))

        posts = []
        for message_id, sid, statuses, _expected, how in cases:
            path = f"/twilio/status?outbox={message_id}" if how == "outbox id only" else None
            for status in statuses * 2:
                error_code = "30003" if status in ("failed", "undelivered") else None
                posts.append((path or "/twilio/status", status_params(sid, status, error_code)))
        rng.shuffle(posts)

        def post(path, form):
            return post_signed(app.test_client(), path, form).status_code

        codes = at_once([lambda p=p, f=f: post(p, f) for p, f in posts], threads=8)
        posted += len(codes)
        answered_200 += codes.count(200)
        with db.transaction() as session:  # the worker records its SIDs late
            for message_id, sid, _statuses, _expected, how in cases:
                if how == "stored after":
                    record_sent(session, message_id, SendReceipt(sid, "queued"), _now())
        with db.transaction(write=False) as session:
            for message_id, sid, statuses, expected, how in cases:
                message = session.get(OutboundMessage, message_id)
                if (message.status, message.twilio_sid) != (expected, sid):
                    wrong.append(f"{statuses} ({how}): {message.status} {message.twilio_sid}")
            receipts = session.execute(select(func.count(DeliveryReceipt.id))).scalar_one()

    result = report("status-callbacks")
    result.add(
        **{
            "messages": len(CALLBACK_SEQUENCES) * 3 * rounds,
            "callbacks posted": posted,
            "answered 200": answered_200,
            "receipts kept": receipts,
            "final status wrong": len(wrong),
        }
    )
    assert answered_200 == posted
    assert receipts == posted
    assert wrong == []


def _now():
    from app.store.db import utcnow

    return utcnow()


# ----------------------------------------------------------------------------------------------
# 5. Concurrency: one MessageSid many times, one number's keywords at once, several workers


@pytest.mark.e2e
def test_concurrent_texts_and_workers_keep_ledger_and_outbox_consistent(
    database_url, tmp_path, database, report, catalog
):
    """Sixteen copies of one webhook at once; eight threads of JOIN/YES/STOP/START/HELP from
    four numbers; three sender workers. The ledger replays to the stored statuses and
    verifies; each reply reached Twilio at most once; after a STOP only its confirmation."""
    rng = random.Random(5)
    fake = FakeTwilio(latency=0.02).start()
    phones = [f"+1415558{i:04d}" for i in range(4)]
    try:
        with deployment(database_url, tmp_path, fake, web_workers=3) as stack:
            for name in ("a", "b", "c"):
                stack.start_worker(name)

            # One MessageSid posted sixteen times at once (Twilio retrying a slow answer).
            sid = new_message_sid()
            copies = at_once(
                [lambda: post_text(stack.base, phones[0], "JOIN", sid).status_code] * 16, 16
            )

            # A burst of keywords from four numbers at once.
            burst = [
                (phone, rng.choice(["JOIN", "YES", "STOP", "START", "HELP"]))
                for phone in phones
                for _ in range(10)
            ]
            rng.shuffle(burst)
            burst_codes = at_once(
                [lambda p=p, b=b: post_text(stack.base, p, b).status_code for p, b in burst], 8
            )
            # Then each number stops for good.
            stopped_at = {}
            for phone in phones:
                assert post_text(stack.base, phone, "STOP").status_code == 200
                stopped_at[phone] = time.time()
            wait_until(lambda: outbox_settled(database), 45, "every reply sent or suppressed")
            time.sleep(0.5)
            verify = stack.cli("ledger", "verify")
            figures = reply_figures(database, fake)
            replay = replay_ledger(database, catalog)
            rows = outbox(database)
            with database.transaction(write=False) as session:
                copies_recorded = session.execute(
                    select(func.count()).where(ConsentEvent.message_sid == sid)
                ).scalar_one()
    finally:
        fake.stop()

    went_out = Counter((r.to_number, r.body) for r in rows if r.status in (SENT, DELIVERED))
    at_twilio = Counter((m.form["To"], m.form["Body"]) for m in fake.accepted())
    # The opt-out confirmation and HELP answers may still reach an opted-out number.
    allowed_bodies = {r.body for r in rows if r.kind in flows.REPLIES_ALLOWED_AFTER_OPT_OUT}
    after_opt_out = [
        (m.form["Body"][:40], round(m.arrived - stopped_at[m.form["To"]], 3))
        for m in fake.received
        if m.arrived > stopped_at[m.form["To"]] and m.form["Body"] not in allowed_bodies
    ]
    result = report("concurrency")
    result.add(
        **{
            "copies of one MessageSid posted": len(copies),
            "copies answered 200": copies.count(200),
            "copies recorded": copies_recorded,
            "burst texts": len(burst),
            "burst answered 200": burst_codes.count(200),
            "ledger events replayed": replay["events"],
            "replay mismatches": len(replay["mismatches"]),
            "ledger verify exit code": verify.returncode,
            "sent after the final STOP, other than its confirmation or HELP": len(after_opt_out),
            "more at Twilio than in the outbox (by number and text)": sum(
                max(0, n - went_out[key]) for key, n in at_twilio.items()
            ),
        },
        **figures,
    )
    assert copies == [200] * 16 and copies_recorded == 1
    assert burst_codes == [200] * len(burst)
    assert replay["mismatches"] == [], replay["mismatches"]
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert figures["duplicated"] == 0 and figures["lost"] == 0
    assert result.figures["more at Twilio than in the outbox (by number and text)"] == 0
    assert after_opt_out == [], after_opt_out
    assert {outbox_id(m) for m in fake.accepted()} <= {r.id for r in rows}
