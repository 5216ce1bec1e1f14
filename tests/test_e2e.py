"""End to end: gunicorn and the worker as real processes, Twilio faked on loopback.

The webhook is posted over HTTP with real signatures; replies must arrive at the
fake Twilio's REST endpoint with the right sender and StatusCallback; a status
callback is posted back; the CLI's `simulate`, `ledger verify` and `evidence`
run as subprocesses against the same database.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.fake_twilio import FakeTwilio
from tests.servers import PROJECT, free_port, gunicorn, sender_worker, service_env, stop
from tests.twilio_helpers import (
    SHORT_CODE,
    TEST_ACCOUNT_SID,
    inbound_params,
    new_message_sid,
    sign,
)

pytestmark = pytest.mark.e2e

PHONE = "+14155550123"


@pytest.fixture
def fake_twilio():
    fake = FakeTwilio(latency=0.05).start()
    yield fake
    fake.stop()


@pytest.fixture
def stack(database_url, tmp_path, fake_twilio):
    """gunicorn (2 workers) and one sender worker, both talking to the fake Twilio."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(
        database_url,
        base,
        tmp_path,
        SMS_BACKEND="twilio",
        TWILIO_API_BASE_URL=fake_twilio.base_url,
        SENDER_MPS="50",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    with gunicorn(env, port, logs / "web.out", "--workers", "2") as web:
        worker = sender_worker(env, logs / "worker.out")
        try:
            yield {"base": base, "env": env, "worker": worker, "web": web, "logs": logs}
        finally:
            stop(worker)


def post_text(base: str, body: str, phone: str = PHONE) -> requests.Response:
    params = inbound_params(phone, body, to=SHORT_CODE, message_sid=new_message_sid())
    url = base + "/twilio/sms"
    return requests.post(
        url, data=params, headers={"X-Twilio-Signature": sign(url, params)}, timeout=10
    )


def flask_cli(stack, *args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=PROJECT,
        env=stack["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_flows_reach_twilio_and_status_comes_back(stack, fake_twilio):
    base = stack["base"]

    assert post_text(base, "JOIN").status_code == 200
    [confirm] = fake_twilio.wait_for(lambda f: f.messages_to(PHONE))
    assert confirm.form["From"] == SHORT_CODE
    assert confirm.form["StatusCallback"].startswith(base + "/twilio/status?outbox=")
    assert "YES" in confirm.form["Body"]
    assert confirm.account_sid == TEST_ACCOUNT_SID

    for body, count in (("YES", 2), ("STOP", 3), ("STOP", 3), ("HELP", 4)):
        assert post_text(base, body).status_code == 200
        fake_twilio.wait_for(lambda f, n=count: len(f.messages_to(PHONE)) >= n)
    time.sleep(0.5)  # a second STOP must not produce a second confirmation
    sent = fake_twilio.messages_to(PHONE)
    assert len(sent) == 4

    # Twilio reports delivery; the status callback is signed like every webhook.
    callback = {
        "MessageSid": sent[0].sid,
        "MessageStatus": "delivered",
        "AccountSid": TEST_ACCOUNT_SID,
    }
    url = base + "/twilio/status"
    response = requests.post(
        url, data=callback, headers={"X-Twilio-Signature": sign(url, callback)}, timeout=10
    )
    assert response.status_code == 200

    token = flask_cli(stack, "api-token", "create", "e2e").stdout.strip().splitlines()[-1]
    messages = requests.get(
        f"{base}/api/v1/messages?phone={PHONE}",
        timeout=10,
        headers={"Authorization": f"Bearer {token}"},
    ).json()["messages"]
    by_sid = {m["sid"]: m for m in messages}
    assert by_sid[sent[0].sid]["status"] == "delivered"
    assert {m["status"] for m in messages if m["sid"] != sent[0].sid} == {"sent"}

    subscriber = requests.get(
        f"{base}/api/v1/subscribers/{PHONE}",
        timeout=10,
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    assert subscriber["programs"][0]["status"] == "opted_out"

    verify = flask_cli(stack, "ledger", "verify")
    assert verify.returncode == 0, verify.stderr
    evidence = flask_cli(stack, "evidence", PHONE, "--format", "json")
    assert evidence.returncode == 0, evidence.stderr
    assert [e["intent"] for e in json.loads(evidence.stdout)["events"]] == [
        "opt_in",
        "confirm",
        "opt_out",
        "opt_out",
        "help",
    ]


def test_simulate_prints_the_replies(stack, fake_twilio):
    result = flask_cli(stack, "simulate", "+14155550177", "JOIN", "--url", stack["base"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "← 200" in result.stdout
    assert "intent=opt_in" in result.stdout
    assert "reply [sent] confirm_request:" in result.stdout


def test_worker_exits_cleanly_on_sigterm(stack):
    worker = stack["worker"]
    time.sleep(0.3)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0


def test_worker_survives_a_storm_of_signals_and_exits(database_url, tmp_path):
    """Many SIGTERMs at once (a shell's `kill 0` loop) must not deadlock the stop."""
    env = service_env(database_url, "http://127.0.0.1:9", tmp_path)
    worker = sender_worker(env, tmp_path / "worker.out")
    try:
        until = time.monotonic() + 1.5
        while time.monotonic() < until and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
    finally:
        stop(worker)


def test_sender_stop_flag_is_a_plain_flag():
    from app.outbox.worker import StopFlag

    flag = StopFlag()
    started = time.monotonic()
    assert flag.wait(0.1) is False and time.monotonic() - started >= 0.1
    flag.set()
    assert flag.is_set() and flag.wait(5) is True
