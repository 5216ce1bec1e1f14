"""Benchmark 3: sender pacing. SENDER_MPS=100, two worker processes, fake Twilio at 100 ms.

The outbox is filled with replies to distinct numbers, then two `flask --app app
worker` processes start together. From the times the requests reach the fake
Twilio: the achieved rate, the busiest 1-second window (which must never exceed
the cap), and messages sent twice (which must be zero).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine, insert, pool

from app.store.db import utcnow
from app.store.models import OutboundMessage, Subscriber
from bench.common import PROJECT, app_env, fresh_database, per_backend
from tests.fake_twilio import FakeTwilio
from tests.servers import stop

CAP = 100


def busiest_window(times: list[float], width: float = 1.0) -> int:
    """The most arrivals in any window [t, t + width)."""
    ordered = sorted(times)
    best, left = 0, 0
    for right, t in enumerate(ordered):
        while ordered[left] <= t - width:
            left += 1
        best = max(best, right - left + 1)
    return best


def _fill_outbox(url: str, count: int) -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            insert(Subscriber),
            [{"phone": f"+1650{i:07d}", "created_at": now, "chain_seq": 0} for i in range(count)],
        )
        ids = dict(connection.exec_driver_sql("SELECT phone, id FROM subscribers").all())
        connection.execute(
            insert(OutboundMessage),
            [
                {
                    "subscriber_id": ids[f"+1650{i:07d}"],
                    "program_id": "demo",
                    "kind": "help",
                    "language": "en",
                    "to_number": f"+1650{i:07d}",
                    "from_number": "12345",
                    "body": f"Demo Alerts: help reply {i}",
                    "status": "queued",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(count)
            ],
        )
    engine.dispose()


def _measure(backend: str, pg_admin_url: str, seconds: float, workdir: Path) -> dict:
    count = int(CAP * seconds)
    fake = FakeTwilio(latency=0.1).start()
    try:
        with fresh_database(backend, pg_admin_url, "pacing") as database:
            _fill_outbox(database.url, count)
            env = app_env(
                database.url,
                "http://127.0.0.1:9",
                SMS_BACKEND="twilio",
                TWILIO_API_BASE_URL=fake.base_url,
                SENDER_MPS=str(CAP),
                LOG_LEVEL="WARNING",
            )
            workers = [
                subprocess.Popen(
                    [sys.executable, "-m", "flask", "--app", "app", "worker"],
                    cwd=PROJECT,
                    env=env,
                    stdout=open(workdir / f"pacing-{backend}-{n}.log", "w"),
                    stderr=subprocess.STDOUT,
                )
                for n in range(2)
            ]
            try:
                fake.wait_for(lambda f: len(f.received) >= count, timeout=seconds * 3 + 30)
                time.sleep(1.0)  # anything sent twice would show up now
            finally:
                for worker in workers:
                    stop(worker)
    finally:
        fake.stop()
    arrivals = sorted(m.arrived for m in fake.received)
    per_number = Counter(m.form.get("To") for m in fake.received)
    span = arrivals[-1] - arrivals[0]
    return {
        "messages": count,
        "requests_at_fake": len(arrivals),
        "achieved_per_s": (len(arrivals) - 1) / span if span else None,
        "busiest_1s_window": busiest_window(arrivals),
        "sent_twice": sum(n - 1 for n in per_number.values() if n > 1),
        "never_sent": count - len(per_number),
    }


def run(pg_admin_url: str, quick: bool, backends=("postgresql", "sqlite")) -> dict:
    seconds = 10.0 if quick else 30.0
    return per_backend(
        "pacing",
        backends,
        {"cap": CAP, "workers": 2, "fake_twilio_latency_ms": 100},
        lambda backend, workdir: _measure(backend, pg_admin_url, seconds, workdir),
        lambda backend, measured: (
            backend,
            measured["messages"],
            f"{measured['achieved_per_s']:.1f}",
            measured["busiest_1s_window"],
            measured["sent_twice"],
            measured["never_sent"],
        ),
        f"Sender pacing (SENDER_MPS={CAP}, 2 workers, fake Twilio at 100 ms)",
        ("backend", "messages", "achieved msg/s", "busiest 1-s window", "sent twice", "unsent"),
    )
