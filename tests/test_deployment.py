"""The deployment as operators run it: gunicorn with gunicorn.conf.py, sender workers, one database.

Real processes on loopback (tests/servers.py), Twilio faked (tests/fake_twilio.py):
JSON logs from every process, /metrics adding up several gunicorn workers,
/readyz following a real sender worker, gunicorn finishing a request in flight
on SIGTERM, and the scale-out of docs/deployment.md (two web servers, three
sender workers on one database: one reply per text, the shared rate limit held).
"""

from __future__ import annotations

import fcntl
import json
import threading
import time
from collections import Counter
from contextlib import contextmanager

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, pool, select, text

from app.store.models import ConsentEvent, OutboundMessage
from tests.fake_twilio import FakeTwilio
from tests.servers import free_port, gunicorn, sender_worker, service_env, stop
from tests.twilio_helpers import SHORT_CODE, inbound_params, new_message_sid, sign

pytestmark = pytest.mark.e2e


@pytest.fixture
def fake_twilio():
    fake = FakeTwilio(latency=0.02).start()
    yield fake
    fake.stop()


def post_text(base: str, phone: str, body: str, **headers: str) -> requests.Response:
    params = inbound_params(phone, body, to=SHORT_CODE, message_sid=new_message_sid())
    url = base + "/twilio/sms"
    return requests.post(
        url, data=params, headers={"X-Twilio-Signature": sign(url, params), **headers}, timeout=15
    )


def json_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def webhook_count(base: str) -> float:
    body = requests.get(base + "/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "scg_webhooks_total"
    )


def test_json_logs_and_metrics_across_gunicorn_workers(database_url, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(database_url, base, tmp_path, LOG_FORMAT="json")
    log = tmp_path / "web.out"
    with gunicorn(env, port, log, "--workers", "2"):
        phones = [f"+1415555{n:04d}" for n in range(6)]
        for phone in phones:
            response = post_text(base, phone, "JOIN secret-body-words", **{"X-Request-Id": "rq-1"})
            assert response.status_code == 200
            assert response.headers["X-Request-Id"] == "rq-1"
        # Each scrape is answered by either worker; each must see all six webhooks.
        assert [webhook_count(base) for _ in range(4)] == [6.0] * 4
    lines = json_lines(log)
    assert {line["logger"] for line in lines} >= {
        "gunicorn.error",
        "gunicorn.access",
        "app.consent.inbound",
    }
    access = [line for line in lines if line.get("path") == "/twilio/sms"]
    assert len(access) == 6 and all(line["request_id"] == "rq-1" for line in access)
    recorded = [line for line in lines if line["message"] == "inbound text recorded"]
    assert len(recorded) == 6
    assert all(line["request_id"] == "rq-1" and line["message_sid"] for line in recorded)
    everything = log.read_text()
    assert "secret-body-words" not in everything
    assert not any(phone[2:] in everything for phone in phones)


def test_readyz_follows_a_real_sender_worker(database_url, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(database_url, base, tmp_path, SENDER_HEARTBEAT_SECONDS="1")
    with gunicorn(env, port, tmp_path / "web.out", "--workers", "1"):
        before = requests.get(base + "/readyz", timeout=5)
        assert before.status_code == 503
        assert before.json()["checks"]["sender"] == "no sender worker has reported"
        worker = sender_worker(env, tmp_path / "worker.out")
        try:
            deadline = time.monotonic() + 10  # its first heartbeat follows its start-up line
            while (ready := requests.get(base + "/readyz", timeout=5)).status_code != 200:
                assert time.monotonic() < deadline, ready.json()
                time.sleep(0.1)
            alive = requests.get(base + "/metrics", timeout=5).text
            assert "scg_sender_workers_alive 1.0" in alive
        finally:
            stop(worker)
        assert worker.returncode == 0
        after = requests.get(base + "/readyz", timeout=5)
        assert after.status_code == 503  # a cleanly stopped worker removes its heartbeat


@contextmanager
def writers_blocked(database_url: str):
    """Hold the database so that recording a text waits until the block ends."""
    if database_url.startswith("sqlite"):
        path = database_url[len("sqlite:///") :] + ".writer-lock"
        with open(path, "a+b") as lock:
            fcntl.flock(
                lock, fcntl.LOCK_EX
            )  # the writers' turn (app.store.db.Database.writer_lock)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("LOCK TABLE subscribers, consent_events IN ACCESS EXCLUSIVE MODE")
            )
            yield
    finally:
        engine.dispose()


def test_gunicorn_finishes_a_request_in_flight_on_sigterm(database_url, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(database_url, base, tmp_path)
    answers: list[requests.Response] = []
    with gunicorn(env, port, tmp_path / "web.out", "--workers", "1") as web:
        with writers_blocked(database_url):
            sender = threading.Thread(
                target=lambda: answers.append(post_text(base, "+14155550123", "JOIN"))
            )
            sender.start()
            time.sleep(1.0)  # the request is now waiting for the database
            web.terminate()  # SIGTERM, as a platform sends on deploy or scale-down
            time.sleep(1.0)
            assert not answers and web.poll() is None  # still finishing the request
        sender.join(timeout=20)
        assert web.wait(timeout=20) == 0
    assert [a.status_code for a in answers] == [200]
    engine = create_engine(database_url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        assert connection.execute(select(ConsentEvent.id)).all()  # recorded, not lost
    engine.dispose()


def test_scale_out_two_web_servers_three_workers_one_database(database_url, tmp_path, fake_twilio):
    texts, mps = 30, 10
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    env = service_env(
        database_url,
        bases[0],
        tmp_path,
        SMS_BACKEND="twilio",
        TWILIO_API_BASE_URL=fake_twilio.base_url,
        SENDER_MPS=str(mps),
        SENDER_THREADS="4",
    )
    env_second = {**env, "PUBLIC_BASE_URL": bases[1]}
    with (
        gunicorn(env, ports[0], tmp_path / "web0.out", "--workers", "2"),
        gunicorn(env_second, ports[1], tmp_path / "web1.out", "--workers", "2"),
    ):
        workers = [sender_worker(env, tmp_path / f"worker{n}.out") for n in range(3)]
        try:
            phones = [f"+1415556{n:04d}" for n in range(texts)]
            for n, phone in enumerate(phones):
                assert post_text(bases[n % 2], phone, "JOIN").status_code == 200
            fake_twilio.wait_for(lambda fake: len(fake.received) >= texts, timeout=30)
            time.sleep(0.5)  # any duplicate send would arrive now
        finally:
            stop(*workers)
    received = sorted(fake_twilio.received, key=lambda m: m.arrived)
    per_phone = Counter(m.form["To"] for m in received)
    assert per_phone == Counter(phones)  # one reply per text: claims are at most once
    arrivals = [m.arrived for m in received]
    # Handoffs are paced; arrivals at the fake add the machine's scheduling jitter, so the
    # window is 50 ms short of a second (slots are 103 ms apart; without a shared budget three
    # workers would put about 30 in it).
    window = 1.0 - 0.05
    busiest = max(sum(1 for t in arrivals if start <= t < start + window) for start in arrivals)
    assert busiest <= mps  # the shared SENDER_MPS budget holds across three workers
    engine = create_engine(database_url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        claimed_by = connection.execute(select(OutboundMessage.claimed_by)).scalars().all()
    engine.dispose()
    assert len(set(claimed_by)) >= 2  # the work was shared, not done by one worker
