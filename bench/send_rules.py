"""Benchmark 5: the sending rules. PostgreSQL.

1. Deciding a batch of 100,000 recipients (`app.sending.batches.submit_batch`, the
   send API's one service call, called directly: the API takes 10,000 at a time):
   load what is known of them, decide each, queue the accepted and deferred
   messages and keep every decision, in one transaction. Target: 10 s or less.
   The recipients mix US area codes (some with two zones), stored ZIP codes,
   opted-out, pending and unknown numbers, decided at an instant when some
   windows are open and some closed.
2. Releasing 10,000 deferred messages when their window opens: the outbox holds
   10,000 program messages deferred to one instant a few seconds ahead; two worker
   processes at SENDER_MPS=100 send them to the fake Twilio (100 ms), each message
   re-checked by the sending rules at send time. Checked: the busiest one-second
   window at the fake stays at or under the cap, and nothing is sent twice.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, pool

from app.core.programs import load_programs
from app.core.sending_rules import RuleBook
from app.store.db import Database
from app.store.models import OutboundMessage
from app.store.send_models import RecipientProfile
from bench.common import PROJECT, app_env, fresh_database, table, write_result
from bench.consents import seed_consents
from bench.pacing import busiest_window
from tests.fake_twilio import FakeTwilio
from tests.servers import stop

BODY = "Demo Alerts: 20% off this week. Reply STOP to cancel."
AREA_CODES = ("212", "305", "415", "512", "850", "915", "503", "206", "860", "702", "205")
ZIPS = ("32501", "33101", "73101", "97201", "75201", "10001", "06103", None, None, None)
RELEASE_CAP = 100


def _phones(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    phones = set()
    while len(phones) < count:
        phones.add(f"+1{rng.choice(AREA_CODES)}{rng.randint(2_000_000, 9_999_999)}")
    return sorted(phones)


def _seed(url: str, phones: list[str]) -> None:
    """Most numbers active (some with a stored ZIP code), some opted out or pending; a tenth
    are not in the database at all."""
    engine = create_engine(url, poolclass=pool.NullPool)
    now = datetime.now(UTC)
    known = phones[: int(len(phones) * 0.9)]
    rng = random.Random(7)
    with engine.begin() as connection:
        statuses = rng.choices(
            ["active", "opted_out", "pending"], weights=[85, 10, 5], k=len(known)
        )
        ids = seed_consents(
            connection, list(zip(known, statuses, strict=True)), program="demo", at=now
        )
        profiles = [
            {"subscriber_id": ids[p], "zip_code": z, "location_source": "import", "updated_at": now}
            for p in known
            if (z := rng.choice(ZIPS))
        ]
        connection.execute(insert(RecipientProfile), profiles)
    engine.dispose()


def decide_batch(pg_admin_url: str, recipients: int) -> dict:
    from app.sending.batches import submit_batch

    catalog = load_programs(PROJECT / "programs" / "demo.toml")
    program = catalog.get("demo")
    phones = _phones(recipients, seed=1)
    with fresh_database("postgresql", pg_admin_url, "send_rules") as fresh:
        _seed(fresh.url, phones)
        database = Database(fresh.url)
        # 8:30pm in New York (open: 9pm), closed in Florida and Connecticut (8pm), open in
        # Texas and California: a mix of sends and deferrals.
        now = datetime(2026, 12, 15, 1, 30, tzinfo=UTC)
        started = time.perf_counter()
        with database.transaction() as session:
            answer = submit_batch(
                session,
                program=program,
                body=BODY,
                phones=phones,
                fingerprint="bench",
                idempotency_key="bench-100k",
                api_token_id=None,
                key=b"bench-suppression-key",
                book=RuleBook(),
                now=now,
            )
        elapsed = time.perf_counter() - started
        database.dispose()
    return {
        "recipients": recipients,
        "seconds": round(elapsed, 2),
        "per_recipient_us": round(elapsed / recipients * 1e6, 1),
        "decisions": answer.counts(),
        "target_seconds": 10,
    }


def _fill_deferred(url: str, count: int, release_at: datetime) -> None:
    """`count` program messages deferred to `release_at`, to active GB numbers (whose window
    the run opens all day), as a batch that quiet hours held back overnight would leave."""
    engine = create_engine(url, poolclass=pool.NullPool)
    now = datetime.now(UTC)
    phones = [f"+4477009{i:05d}" for i in range(count)]
    with engine.begin() as connection:
        ids = seed_consents(connection, [(p, "active") for p in phones], program="demo", at=now)
        connection.execute(
            insert(OutboundMessage),
            [
                {
                    "subscriber_id": ids[p],
                    "program_id": "demo",
                    "kind": "program_message",
                    "to_number": p,
                    "from_number": "12345",
                    "body": BODY,
                    "status": "queued",
                    "attempts": 0,
                    "next_attempt_at": release_at,
                    "not_before": release_at,
                    "decision": "deferred",
                    "reason": "quiet_hours:GB",
                    "created_at": now,
                    "updated_at": now,
                }
                for p in phones
            ],
        )
    engine.dispose()


def release_deferred(pg_admin_url: str, count: int, workdir: Path) -> dict:
    fake = FakeTwilio(latency=0.1).start()
    try:
        with fresh_database("postgresql", pg_admin_url, "send_release") as fresh:
            release_at = datetime.now(UTC) + timedelta(seconds=8)
            _fill_deferred(fresh.url, count, release_at)
            env = app_env(
                fresh.url,
                "http://127.0.0.1:9",
                SMS_BACKEND="twilio",
                TWILIO_API_BASE_URL=fake.base_url,
                SENDER_MPS=str(RELEASE_CAP),
                SENDER_THREADS="8",
                SENDER_LEASE_SECONDS="10",
                NON_US_SENDING_WINDOWS="*=00:00-23:59",
                LOG_LEVEL="WARNING",
            )
            workers = [
                subprocess.Popen(
                    [sys.executable, "-m", "flask", "--app", "app", "worker"],
                    cwd=PROJECT,
                    env=env,
                    stdout=open(workdir / f"release-{n}.log", "w"),
                    stderr=subprocess.STDOUT,
                )
                for n in range(2)
            ]
            try:
                fake.wait_for(
                    lambda f: len(f.received) >= count, timeout=count / RELEASE_CAP * 3 + 60
                )
                time.sleep(1.0)  # anything sent twice would show up now
            finally:
                for worker in workers:
                    stop(worker)
    finally:
        fake.stop()
    arrivals = sorted(m.arrived for m in fake.received)
    per_number = Counter(m.form.get("To") for m in fake.received)
    span = arrivals[-1] - arrivals[0]
    early = sum(1 for t in arrivals if t < release_at.timestamp())
    return {
        "messages": count,
        "cap": RELEASE_CAP,
        "achieved_per_s": round((len(arrivals) - 1) / span, 1) if span else None,
        "busiest_1s_window": busiest_window(arrivals),
        "sent_twice": sum(n - 1 for n in per_number.values() if n > 1),
        "never_sent": count - len(per_number),
        "sent_before_release": early,
        "first_after_release_s": round(arrivals[0] - release_at.timestamp(), 3),
    }


def run(pg_admin_url: str, quick: bool) -> dict:
    recipients = 20_000 if quick else 100_000
    released = 2_000 if quick else 10_000
    decided = decide_batch(pg_admin_url, recipients)
    with tempfile.TemporaryDirectory(prefix="bench-send-rules-") as tmp:
        release = release_deferred(pg_admin_url, released, Path(tmp))
    results = {"decide": decided, "release": release}
    results["table"] = table(
        "Sending rules (PostgreSQL)",
        [
            (
                f"decide a {recipients:,}-recipient batch",
                f"{decided['seconds']} s ({decided['per_recipient_us']} µs each)",
                ", ".join(f"{k} {v:,}" for k, v in sorted(decided["decisions"].items())),
            ),
            (
                f"release {released:,} deferred at SENDER_MPS={RELEASE_CAP}, 2 workers",
                f"{release['achieved_per_s']} msg/s, busiest 1-s window "
                f"{release['busiest_1s_window']}",
                f"sent twice {release['sent_twice']}, unsent {release['never_sent']}, "
                f"early {release['sent_before_release']}",
            ),
        ],
        ("what", "figure", "details"),
    )
    write_result("send_rules", results)
    return results


if __name__ == "__main__":
    import os

    print(
        run(
            os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
            "--quick" in sys.argv,
        )["table"]
    )
