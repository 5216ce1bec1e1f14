"""Benchmark 2: reply latency, from the webhook's 200 to the moment the reply reaches Twilio.

gunicorn and one sender worker run for real against a local fake of Twilio's
Messages API that answers after 50 ms. Texts arrive at a steady 100 per second
(open loop), each from a new number asking for HELP, so each causes one reply.
The latency of a text is the fake's arrival time of its reply minus the time
its webhook answered 200.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from twilio.request_validator import RequestValidator

from bench.common import (
    AUTH_TOKEN,
    PROJECT,
    app_env,
    fresh_database,
    gunicorn,
    per_backend,
    percentile,
)
from bench.webhooks import webhook_params
from tests.fake_twilio import FakeTwilio
from tests.servers import free_port, stop

RATE = 100.0


def _drive(base: str, count: int, rate: float) -> dict[str, float]:
    """Send `count` HELP texts at `rate`/s; returns phone -> time its 200 came back."""
    url = base + "/twilio/sms"
    validator = RequestValidator(AUTH_TOKEN)
    answered: dict[str, float] = {}
    failures = []
    lock = threading.Lock()
    session_local = threading.local()
    start = time.time() + 0.5

    def send(i: int) -> None:
        session = getattr(session_local, "session", None) or requests.Session()
        session_local.session = session
        phone = f"+1628{i:07d}"
        params = webhook_params(phone, "HELP", f"SM{i:032x}")
        headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        response = session.post(url, data=params, headers=headers, timeout=10)
        done = time.time()
        with lock:
            if response.status_code == 200:
                answered[phone] = done
            else:
                failures.append(response.status_code)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(send, range(count)))
    if failures:
        raise RuntimeError(f"{len(failures)} webhooks failed: {failures[:5]}")
    return answered


def _measure(backend: str, pg_admin_url: str, seconds: float, workdir: Path) -> dict:
    fake = FakeTwilio(latency=0.05).start()
    try:
        with fresh_database(backend, pg_admin_url, "reply") as database:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = app_env(
                database.url,
                base,
                SMS_BACKEND="twilio",
                TWILIO_API_BASE_URL=fake.base_url,
                SENDER_MPS="500",
                LOG_LEVEL="WARNING",
            )
            with gunicorn("app:create_app()", env, port, workdir / f"reply-{backend}.log"):
                worker = subprocess.Popen(
                    [sys.executable, "-m", "flask", "--app", "app", "worker"],
                    cwd=PROJECT,
                    env=env,
                    stdout=open(workdir / f"worker-{backend}.log", "w"),
                    stderr=subprocess.STDOUT,
                )
                try:
                    time.sleep(2)  # the worker is up and idle, as in production
                    count = int(RATE * seconds)
                    answered = _drive(base, count, RATE)
                    fake.wait_for(lambda f: len(f.received) >= count, timeout=60)
                finally:
                    stop(worker)
    finally:
        fake.stop()
    arrivals = {m.form.get("To"): m.arrived for m in fake.received}
    latencies = [
        (arrivals[phone] - done) * 1000 for phone, done in answered.items() if phone in arrivals
    ]
    return {
        "texts": len(answered),
        "replies_seen": len(arrivals),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
    }


def run(pg_admin_url: str, quick: bool, backends=("postgresql", "sqlite")) -> dict:
    seconds = 10.0 if quick else 30.0
    return per_backend(
        "reply_latency",
        backends,
        {"rate_per_s": RATE, "seconds": seconds, "fake_twilio_latency_ms": 50},
        lambda backend, workdir: _measure(backend, pg_admin_url, seconds, workdir),
        lambda backend, measured: (
            backend,
            measured["texts"],
            measured["replies_seen"],
            f"{measured['p50_ms']:.0f}",
            f"{measured['p99_ms']:.0f}",
            f"{measured['max_ms']:.0f}",
        ),
        f"Reply latency at {RATE:.0f} texts/s (webhook 200 → request at fake Twilio, 50 ms)",
        ("backend", "texts", "replies", "p50 ms", "p99 ms", "max ms"),
    )
