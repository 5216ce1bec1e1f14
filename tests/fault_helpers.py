"""Helpers for the fault-injection suite (tests/test_faults.py).

- `Deployment`: gunicorn plus any number of sender worker processes, talking to a
  `FakeTwilio`, with retry settings short enough for a test.
- `post_text` / `post_until_answered`: signed inbound webhooks over HTTP, the
  latter retrying on 503 and connection errors the way Twilio does.
- `reply_figures`: what reached the fake Twilio, counted per outbox row: sent,
  lost, duplicated, suppressed.
- `replay_ledger`: each subscriber's ledger decided again with the pure core
  (`app.consent.inbound.decide_text`, as the webhook decides); it must give the stored
  changes and the stored subscriptions.
- `FaultReport`: the figures of one run, printed and written as JSON under
  pytest's temporary directory (`<basetemp>/fault-results/`), where
  docs/reliability.md's numbers come from.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests
from sqlalchemy import select

from app.consent.inbound import decide_text
from app.core import flows
from app.core.programs import Catalog
from app.store.db import Database
from app.store.models import (
    DELIVERED,
    FAILED,
    QUEUED,
    SENDING,
    SENT,
    SUPPRESSED,
    UNDELIVERED,
    ConsentEvent,
    OutboundMessage,
    Subscriber,
    Subscription,
)
from tests.fake_twilio import FakeTwilio, ReceivedMessage
from tests.servers import PROJECT, free_port, gunicorn, sender_worker, service_env, stop
from tests.twilio_helpers import SHORT_CODE, inbound_params, new_message_sid, sign

# Retries in seconds rather than minutes; a lease that runs out quickly after a kill.
FAST_RETRIES = {
    "SENDER_MPS": "100",
    "SENDER_LEASE_SECONDS": "2",
    "TWILIO_HTTP_TIMEOUT": "1",
    "SENDER_BACKOFF_BASE": "0.2",
    "SENDER_BACKOFF_MAX": "1",
    "SENDER_MAX_ATTEMPTS": "5",
    "SENDER_POLL_INTERVAL": "0.05",
    "SENDER_THREADS": "4",
}
UNFINISHED = (QUEUED, SENDING)
WENT_OUT = (SENT, DELIVERED, UNDELIVERED)


@dataclass
class Deployment:
    """A running gunicorn and its sender workers, on one database."""

    base: str
    env: dict[str, str]
    logs: Path
    web: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)

    def start_worker(self, name: str = "worker") -> subprocess.Popen:
        worker = sender_worker(self.env, self.logs / f"{name}-{len(self.workers)}.out")
        self.workers.append(worker)
        return worker

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", *args],
            cwd=PROJECT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )


@contextmanager
def deployment(database_url: str, tmp_path: Path, fake: FakeTwilio, *, web_workers=2, **env):
    """gunicorn (`web_workers`) on a free port, sending through `fake`; workers on demand."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = service_env(
        database_url,
        base,
        tmp_path,
        SMS_BACKEND="twilio",
        TWILIO_API_BASE_URL=fake.base_url,
        **{**FAST_RETRIES, **env},
    )
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    with gunicorn(environment, port, logs / "web.out", "--workers", str(web_workers)) as web:
        running = Deployment(base, environment, logs, web)
        try:
            yield running
        finally:
            stop(*running.workers)


def post_text(base: str, phone: str, body: str, sid: str | None = None) -> requests.Response:
    """One signed inbound text, posted once."""
    params = inbound_params(phone, body, to=SHORT_CODE, message_sid=sid or new_message_sid())
    url = base + "/twilio/sms"
    return requests.post(
        url, data=params, headers={"X-Twilio-Signature": sign(url, params)}, timeout=10
    )


@dataclass
class Delivery:
    """How one inbound text got through: every answer until a 200 (or giving up)."""

    phone: str
    body: str
    sid: str
    answers: list[str] = field(default_factory=list)  # "200", "503", "connection error"
    answered_at: list[float] = field(default_factory=list)  # time.time() of each answer
    acknowledged_at: float | None = None

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None


def post_until_answered(
    base: str, phone: str, body: str, *, give_up_after: float = 30.0, pause: float = 0.2
) -> Delivery:
    """Post like Twilio does: the same MessageSid again after a 5xx or a connection error."""
    delivery = Delivery(phone, body, new_message_sid())
    deadline = time.monotonic() + give_up_after
    while time.monotonic() < deadline:
        try:
            status = post_text(base, phone, body, delivery.sid).status_code
        except requests.RequestException:
            delivery.answers.append("connection error")
            delivery.answered_at.append(time.time())
        else:
            delivery.answers.append(str(status))
            delivery.answered_at.append(time.time())
            if status == 200:
                delivery.acknowledged_at = time.time()
                return delivery
            if status < 500:
                return delivery  # a refusal is final; Twilio would not retry it either
        time.sleep(pause)
    return delivery


def at_once(calls: list, threads: int) -> list:
    """Run the callables from `threads` threads, started together; their results in order."""
    results: list = [None] * len(calls)
    barrier = threading.Barrier(threads)
    lock = threading.Lock()
    pending = list(enumerate(calls))

    def run() -> None:
        barrier.wait()
        while True:
            with lock:
                if not pending:
                    return
                index, call = pending.pop(0)
            results[index] = call()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


def wait_until(predicate, timeout: float, what: str):
    """Poll `predicate` until it is truthy (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def outbox(database: Database) -> list[OutboundMessage]:
    with database.transaction(write=False) as session:
        return list(session.execute(select(OutboundMessage).order_by(OutboundMessage.id)).scalars())


def outbox_settled(database: Database) -> bool:
    """Nothing queued or in flight any more."""
    rows = outbox(database)
    return bool(rows) and all(row.status not in UNFINISHED for row in rows)


def outbox_id(message: ReceivedMessage) -> int:
    """The outbox row a request at the fake was for (from its StatusCallback URL)."""
    return int(parse_qs(urlsplit(message.form["StatusCallback"]).query)["outbox"][0])


def reply_figures(database: Database, fake: FakeTwilio) -> dict:
    """Per outbox row: did it reach Twilio once, never, or more than once?"""
    rows = outbox(database)
    accepted = Counter(outbox_id(m) for m in fake.accepted())
    sid_at_fake = {outbox_id(m): m.sid for m in fake.accepted()}
    meant_to_go = [r for r in rows if r.status not in (SUPPRESSED, FAILED)]
    return {
        "replies queued": len(rows),
        "send requests at Twilio": len(fake.received),
        "accepted by Twilio": sum(accepted.values()),
        "lost": sum(1 for r in meant_to_go if accepted[r.id] == 0),
        "duplicated": sum(n - 1 for n in accepted.values() if n > 1),
        "suppressed": sum(1 for r in rows if r.status == SUPPRESSED),
        "failed": sum(1 for r in rows if r.status == FAILED),
        "SID recorded matches Twilio's": sum(
            1 for r in rows if r.twilio_sid and sid_at_fake.get(r.id) == r.twilio_sid
        ),
        "status callbacks posted": len(fake.callbacks_posted),
    }


def replay_ledger(database: Database, catalog: Catalog) -> dict:
    """Decide every subscriber's ledger again with the pure core; compare with what is stored.

    Each inbound text is classified and decided again on the state replayed from
    the events before it; its stored changes must be exactly those, and the final
    replayed status of every program must be the stored subscription's. Other
    events (a carrier opt-out) apply their stored changes.
    """
    mismatches: list[str] = []
    events = subscribers = 0
    with database.transaction(write=False) as session:
        for subscriber in session.execute(select(Subscriber)).scalars():
            subscribers += 1
            states: dict[str, flows.SubscriptionState] = {}
            chain = session.execute(
                select(ConsentEvent)
                .where(ConsentEvent.subscriber_id == subscriber.id)
                .order_by(ConsentEvent.seq)
            ).scalars()
            for event in chain:
                events += 1
                changes = [
                    flows.StatusChange(c["program"], c["before"], c["after"]) for c in event.changes
                ]
                if event.kind == "inbound_text":
                    changes = _decide_again(catalog, event, states, mismatches)
                for change in changes:
                    current = states.get(change.program_id) or flows.SubscriptionState()
                    states[change.program_id] = flows.apply_change(
                        current, change, event.occurred_at
                    )
            stored = {
                s.program_id: s.status
                for s in session.execute(
                    select(Subscription).where(Subscription.subscriber_id == subscriber.id)
                ).scalars()
            }
            replayed = {pid: state.status for pid, state in states.items()}
            if stored != replayed:
                mismatches.append(f"subscriber {subscriber.id}: stored {stored} != {replayed}")
    return {"subscribers": subscribers, "events": events, "mismatches": mismatches}


def _decide_again(catalog: Catalog, event: ConsentEvent, states, mismatches: list[str]):
    number = event.to_number or SHORT_CODE
    classification, _, decision = decide_text(
        catalog, number, event.body or "", states, event.occurred_at
    )
    stored = [(c["program"], c["before"], c["after"]) for c in event.changes]
    decided = [(c.program_id, c.before, c.after) for c in decision.changes]
    if classification.intent != event.intent or stored != decided:
        mismatches.append(
            f"event {event.id} (seq {event.seq}): stored {event.intent} {stored}, "
            f"decided again {classification.intent} {decided}"
        )
    return decision.changes


class FaultReport:
    """The measured figures of one scenario run: printed, and written as JSON."""

    def __init__(self, directory: Path, scenario: str, backend: str) -> None:
        self.path = directory / f"{scenario}[{backend}].json"
        self.figures: dict = {"scenario": scenario, "backend": backend}

    def add(self, **figures) -> None:
        self.figures.update(figures)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.figures, indent=2, default=str) + "\n")
        print(f"FAULT-INJECTION {json.dumps(self.figures, default=str)}")
