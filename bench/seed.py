"""Fill a database with a realistic consent ledger: `python -m bench.seed --events N --numbers M`.

A bench command, not a test. Texts (JOIN, YES, HELP, chatter, STOP, START, the
odd possible opt-out) arrive over the last 90 days from M numbers, in time
order; each is decided by the service's own pure core (`app.consent.inbound.plan_inbound`)
and sealed into the hash chains exactly as the webhook would, so `ledger verify`
passes on the result. Rows go in with PostgreSQL's COPY (or executemany on
SQLite): a million events take a couple of minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, pool

from app.config import DEMO_PROGRAMS_FILE
from app.consent.inbound import InboundText, LoadedState, plan_inbound
from app.core import flows
from app.core.programs import load_programs
from app.store.consent_sql import EVENT_COLUMNS, OUTBOX_COLUMNS, SUBSCRIPTION_COLUMNS

SHORT_CODE = "12345"
CHATTER = [
    "Thanks!",
    "What time does the sale start?",
    "Is the store open Sunday?",
    "ok",
    "See you there",
    "¿Dónde está la tienda?",
    "Спасибо",
]
FLAGGED = [
    "We have got to stop this bill",
    "I had to cancel my trip",
    "the end of the month is busy",
]


def phone_of(n: int) -> str:
    return f"+1415{n:07d}"


def script(rng: random.Random, length: int) -> list[str]:
    """What one number texts, in order."""
    texts = ["JOIN", "YES"]
    while len(texts) < length:
        roll = rng.random()
        if roll < 0.30:
            texts.append("HELP")
        elif roll < 0.65:
            texts.append(rng.choice(CHATTER))
        elif roll < 0.80:
            texts.append("STOP")
        elif roll < 0.92:
            texts.append("START")
        elif roll < 0.97:
            texts.append(rng.choice(FLAGGED))
        else:
            texts.append("JOIN")
    return texts[:length]


def generate(events: int, numbers: int, seed: int = 7):
    """Yield (kind, row) in insertion order: subscribers first need ids, so events carry them."""
    rng = random.Random(seed)
    catalog = load_programs(DEMO_PROGRAMS_FILE)
    per_number = max(2, events // numbers)
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=90)
    span = (now - start).total_seconds()
    schedule = []
    for n in range(numbers):
        texts = script(rng, per_number + (1 if n < events - per_number * numbers else 0))
        first = rng.random() * span * 0.9
        offsets = sorted(first + rng.random() * (span - first) for _ in texts)
        offsets[1] = min(offsets[1], offsets[0] + rng.random() * 3600)  # YES soon after JOIN
        offsets.sort()
        schedule.extend(
            (offset, n, i, body)
            for i, (offset, body) in enumerate(zip(offsets, texts, strict=True))
        )
    schedule.sort()
    return catalog, start, schedule[:events], rng


def seed(database_url: str, events: int, numbers: int, *, progress=print) -> dict:
    """Write the ledger; returns counts and timings."""
    started = time.monotonic()
    catalog, start, schedule, rng = generate(events, numbers)
    states: dict[int, dict] = {}
    event_rows: list[tuple] = []
    outbound_rows: list[tuple] = []
    texts: dict[str, str] = {}
    witness = None
    for event_id, (offset, n, _i, body) in enumerate(schedule, start=1):
        state = states.setdefault(
            n, {"seq": 0, "head": None, "language": None, "subs": {}, "created": offset}
        )
        received_at = start + timedelta(seconds=offset)
        text = InboundText(
            message_sid="SM" + secrets.token_hex(16),
            account_sid="AC" + "b" * 32,
            from_number=phone_of(n),
            to_number=SHORT_CODE,
            body=body,
            body_raw=None,
            received_at=received_at,
        )
        plan = plan_inbound(
            catalog,
            text,
            LoadedState(
                subscriber_id=n + 1,
                chain_seq=state["seq"],
                chain_head_hash=state["head"],
                language=state["language"],
                duplicate=False,
                subscriptions=state["subs"],
                witness=witness,
            ),
        )
        row = plan.event.row()
        event_rows.append((event_id, *[row[c] for c in EVENT_COLUMNS]))
        texts.update(plan.texts)
        for o in plan.outbound:
            delivered = rng.random() < 0.97
            outbound_rows.append(
                (
                    event_id,
                    n + 1,
                    o.program_id,
                    o.kind,
                    o.language,
                    o.to_number,
                    o.from_number,
                    o.body,
                    "delivered" if delivered else "undelivered",
                    1,
                    received_at,  # next_attempt_at
                    received_at,  # created_at
                    received_at,  # updated_at
                    "SM" + secrets.token_hex(16),
                    "delivered" if delivered else "undelivered",
                    None if delivered else 30003,
                    received_at,  # sent_at
                )
            )
        state["seq"] += 1
        state["head"] = plan.event.event_hash
        state["language"] = plan.subscriber_language
        for s in plan.subscriptions:
            state["subs"][s.program_id] = flows.SubscriptionState(
                s.status, s.pending_since, s.confirmed_at
            )
            state.setdefault("since", {})[s.program_id] = (s.since, event_id, s.language)
        witness = (event_id, plan.event.event_hash)
        if event_id % 100_000 == 0:
            progress(f"  sealed {event_id:,} events ({time.monotonic() - started:.0f} s)")
    sealed_at = time.monotonic()

    subscriber_rows = [
        (
            n + 1,
            phone_of(n),
            start + timedelta(seconds=s["created"]),
            s["seq"],
            s["head"],
            s["language"],
        )
        for n, s in states.items()
    ]
    subscription_rows = [
        (
            n + 1,
            pid,
            sub.status,
            s["since"][pid][0],
            sub.pending_since,
            sub.confirmed_at,
            s["since"][pid][2],
            s["since"][pid][1],
        )
        for n, s in states.items()
        for pid, sub in s["subs"].items()
    ]
    text_rows = [(sha, body, start) for sha, body in texts.items()]
    _write(database_url, subscriber_rows, text_rows, event_rows, subscription_rows, outbound_rows)
    return {
        "events": len(event_rows),
        "numbers": len(subscriber_rows),
        "outbound_messages": len(outbound_rows),
        "seal_s": round(sealed_at - started, 1),
        "write_s": round(time.monotonic() - sealed_at, 1),
    }


SUBSCRIBER_COLUMNS = ("id", "phone", "created_at", "chain_seq", "chain_head_hash", "language")
TEXT_COLUMNS = ("sha256", "body", "created_at")
# The outbox row as the consent writes insert it, plus what sending it filled in.
OUTBOUND_COLUMNS = (*OUTBOX_COLUMNS, "twilio_sid", "delivery_status", "error_code", "sent_at")
TABLES = (
    ("subscribers", SUBSCRIBER_COLUMNS),
    ("ledger_texts", TEXT_COLUMNS),
    ("consent_events", ("id", *EVENT_COLUMNS)),
    ("subscriptions", SUBSCRIPTION_COLUMNS),
    ("outbound_messages", OUTBOUND_COLUMNS),
)


def _write(url: str, *tables_rows) -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    raw = engine.raw_connection()
    try:
        if url.startswith("postgresql"):
            _write_postgresql(raw.driver_connection, tables_rows)
        else:
            _write_sqlite(raw.driver_connection, tables_rows)
    finally:
        raw.close()
        engine.dispose()


def _write_postgresql(connection, tables_rows) -> None:
    from psycopg.types.json import Json

    changes_at = 1 + EVENT_COLUMNS.index("changes")
    with connection.cursor() as cursor:
        for (table, columns), rows in zip(TABLES, tables_rows, strict=True):
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    if table == "consent_events":
                        row = (*row[:changes_at], Json(row[changes_at]), *row[changes_at + 1 :])
                    copy.write_row(row)
        for table in ("subscribers", "consent_events", "subscriptions", "outbound_messages"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        cursor.execute("ANALYZE")
    connection.commit()


def _sqlite_value(value):
    if isinstance(value, datetime):  # the text SQLAlchemy's DateTime stores: naive UTC
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, list):
        return json.dumps(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _write_sqlite(connection, tables_rows) -> None:
    cursor = connection.cursor()
    cursor.execute("BEGIN")
    for (table, columns), rows in zip(TABLES, tables_rows, strict=True):
        cursor.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            ([_sqlite_value(v) for v in row] for row in rows),
        )
    cursor.execute("COMMIT")
    cursor.execute("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--numbers", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(seed(args.database_url, args.events, args.numbers)))


if __name__ == "__main__":
    main()
