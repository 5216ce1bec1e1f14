"""Prometheus metrics at `GET /metrics`: counted in the web processes, read from the database.

Two kinds, chosen so every figure is right however many processes and hosts run:

- **Counted where they happen** (web processes only): webhooks by webhook,
  intent and outcome, and webhook latency. gunicorn runs several worker
  processes, so these use prometheus_client's multiprocess mode: gunicorn.conf.py
  points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before any worker
  starts, each process writes its counts there, and a scrape of any worker
  adds them all up. Each web *instance* (dyno, container) reports its own
  counts; Prometheus sums instances with `sum()`. Counting costs a few
  microseconds and no database query, so the webhook hot path stays as fast.
- **Read from the database at scrape time** (`DatabaseCollector`): outbox depth
  and the age of the oldest pending reply, replies by status and Twilio error
  code, replies refused because a subscription disagreed with the ledger, the
  review queue's size, the last `ledger verify` result, and the sender
  heartbeats. The sender worker is a separate process (often on another host),
  so its results are taken from `outbound_messages`, the record it keeps anyway:
  correct across every worker and host, at the price of being a count of
  messages by their current status (a retried message counts once, under its
  latest status), not a count of send attempts.

Access (`METRICS_TOKEN`, `METRICS_ALLOWED_NETWORKS`): with neither set, only
loopback may scrape; with a token, a scrape needs `Authorization: Bearer
<token>`; with networks, the client address must be in one of them; with both,
both apply.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Iterator

from flask import Blueprint, Response, abort, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client import Histogram as PrometheusHistogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from app import context
from app.config import Settings
from app.consent.review import queue_summary
from app.ledger.binding import LEDGER_MISMATCH
from app.outbox.records import send_time_note
from app.store.db import Database, utcnow
from app.store.models import (
    FAILED,
    QUEUED,
    SENDING,
    SUPPRESSED,
    UNDELIVERED,
    LedgerCheckpoint,
    OutboundMessage,
    SenderHeartbeat,
)
from app.web.health import newest_heartbeat_age

logger = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

# Not registered anywhere at import: each scrape builds its own registry (below), so
# many apps in one process (the tests) and multiprocess mode both work.
WEBHOOKS = Counter(
    "scg_webhooks",
    "Twilio webhooks handled, by webhook (sms, status), intent and outcome.",
    ["webhook", "intent", "outcome"],
    registry=None,
)
WEBHOOK_SECONDS = PrometheusHistogram(
    "scg_webhook_duration_seconds",
    "Time from receiving a Twilio webhook to answering it.",
    ["webhook"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)

# What a webhook's HTTP status means, when the handler did not say.
OUTCOME_BY_STATUS = {
    200: "recorded",
    400: "invalid",
    403: "bad_signature",
    413: "too_large",
    503: "unavailable",
}
PENDING_STATUSES = (QUEUED, SENDING)
ERROR_STATUSES = (FAILED, UNDELIVERED)
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def webhook_started() -> None:
    """Note when a webhook request began (its latency is observed when it is answered)."""
    g.webhook_started = time.perf_counter()


def webhook_answered(webhook: str, response: Response) -> Response:
    """Count one answered webhook by intent and outcome, and observe its latency."""
    started = g.get("webhook_started")
    outcome = g.get("webhook_outcome") or OUTCOME_BY_STATUS.get(response.status_code, "error")
    WEBHOOKS.labels(webhook, g.get("webhook_intent") or "none", outcome).inc()
    if started is not None:
        WEBHOOK_SECONDS.labels(webhook).observe(time.perf_counter() - started)
    return response


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time; right across every process and host."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("scg_database_up", "1 when the database answered this scrape.")
        try:
            families = list(self._read())
        except DBAPIError:
            logger.warning("metrics: database unreachable", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> Iterator[GaugeMetricFamily]:
        now = utcnow()
        with self.database.transaction(write=False) as session:
            by_status = dict(
                session.execute(
                    select(OutboundMessage.status, func.count()).group_by(OutboundMessage.status)
                ).all()
            )
            errors = session.execute(
                select(OutboundMessage.status, OutboundMessage.error_code, func.count())
                .where(OutboundMessage.status.in_(ERROR_STATUSES))
                .group_by(OutboundMessage.status, OutboundMessage.error_code)
            ).all()
            oldest_pending = session.execute(
                select(func.min(OutboundMessage.created_at)).where(
                    OutboundMessage.status.in_(PENDING_STATUSES)
                )
            ).scalar()
            ledger_mismatches = session.execute(
                select(func.count()).where(
                    OutboundMessage.status == SUPPRESSED,
                    OutboundMessage.error_message == send_time_note(LEDGER_MISMATCH),
                )
            ).scalar_one()
            review = queue_summary(session)
            checkpoint = session.execute(
                select(LedgerCheckpoint).order_by(LedgerCheckpoint.id.desc()).limit(1)
            ).scalar_one_or_none()
            heartbeat_age = newest_heartbeat_age(session)
            beats = session.execute(select(SenderHeartbeat.beat_at)).scalars().all()

        depth = GaugeMetricFamily(
            "scg_outbox_depth", "Replies waiting to be sent, by status.", labels=["status"]
        )
        for status in PENDING_STATUSES:
            depth.add_metric([status], by_status.get(status, 0))
        yield depth

        age = GaugeMetricFamily(
            "scg_outbox_oldest_pending_age_seconds",
            "Age of the oldest reply not yet handed to Twilio (0 when none waits).",
        )
        if oldest_pending is not None:
            oldest_pending = _aware(oldest_pending)
        age.add_metric(
            [], (now - oldest_pending).total_seconds() if oldest_pending is not None else 0.0
        )
        yield age

        messages = GaugeMetricFamily(
            "scg_outbound_messages",
            "Replies by their current status and, for failed and undelivered ones, Twilio's "
            "error code (the sender's results, read from outbound_messages).",
            labels=["status", "error_code"],
        )
        for status, count in sorted(by_status.items()):
            if status not in ERROR_STATUSES:
                messages.add_metric([status, ""], count)
        for status, error_code, count in sorted(errors, key=lambda row: (row[0], row[1] or 0)):
            messages.add_metric([status, "" if error_code is None else str(error_code)], count)
        yield messages

        mismatches = GaugeMetricFamily(
            "scg_sends_refused_ledger_mismatch",
            "Replies the sender refused because the number's subscription disagreed with the "
            "ledger event it names (changed behind the ledger), read from outbound_messages.",
        )
        mismatches.add_metric([], ledger_mismatches)
        yield mismatches

        queue = GaugeMetricFamily(
            "scg_review_queue_size", "Texts flagged as possible opt-outs awaiting a staff decision."
        )
        queue.add_metric([], review.size)
        yield queue
        if review.oldest_deadline is not None:
            deadline = GaugeMetricFamily(
                "scg_review_queue_oldest_deadline_timestamp_seconds",
                "Deadline (Unix time) of the oldest item in the review queue.",
            )
            deadline.add_metric([], review.oldest_deadline.timestamp())
            yield deadline

        if checkpoint is not None:
            ok = GaugeMetricFamily(
                "scg_ledger_verify_ok", "1 when the last `ledger verify` found the ledger intact."
            )
            ok.add_metric([], 1 if checkpoint.ok else 0)
            yield ok
            when = GaugeMetricFamily(
                "scg_ledger_verify_timestamp_seconds", "When the last `ledger verify` ran."
            )
            when.add_metric([], _aware(checkpoint.checked_at).timestamp())
            yield when
            events = GaugeMetricFamily(
                "scg_ledger_verify_events", "Events the last `ledger verify` checked."
            )
            events.add_metric([], checkpoint.event_count)
            yield events

        max_age = self.settings.ready_sender_max_age_seconds or 60.0
        alive = GaugeMetricFamily(
            "scg_sender_workers_alive",
            "Sender workers whose heartbeat is within READY_SENDER_MAX_AGE_SECONDS.",
        )
        alive.add_metric(
            [], sum(1 for beat in beats if (now - _aware(beat)).total_seconds() <= max_age)
        )
        yield alive
        if heartbeat_age is not None:
            newest = GaugeMetricFamily(
                "scg_sender_heartbeat_age_seconds", "Seconds since the newest sender heartbeat."
            )
            newest.add_metric([], heartbeat_age)
            yield newest


def _aware(value):
    """SQLite's min()/max() bypass the column type and give naive UTC datetimes."""
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)


def scrape(database: Database, settings: Settings) -> bytes:
    """The metrics text: this process's (or, in multiprocess mode, all) counts plus the DB's."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(WEBHOOKS)
        registry.register(WEBHOOK_SECONDS)
    registry.register(DatabaseCollector(database, settings))
    return generate_latest(registry)


def _scraper_allowed(settings: Settings) -> None:
    """401 without the right bearer token, 403 from outside the allowed networks."""
    if settings.metrics_token:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.metrics_token.encode()
        ):
            response = Response("a bearer token is required\n", 401, mimetype="text/plain")
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            abort(response)
    networks = (
        [ipaddress.ip_network(n, strict=False) for n in settings.metrics_allowed_networks]
        if settings.metrics_allowed_networks
        else (None if settings.metrics_token else list(LOOPBACK))
    )
    if networks is None:
        return
    try:
        address = ipaddress.ip_address((request.remote_addr or "").split("%")[0])
    except ValueError:
        address = None
    if address is None or not any(address in network for network in networks):
        abort(
            Response(
                "this address may not read the metrics (by default only loopback may; "
                "see METRICS_TOKEN and METRICS_ALLOWED_NETWORKS)\n",
                403,
                mimetype="text/plain",
            )
        )


@bp.get("/metrics")
def metrics():
    """The Prometheus exposition text."""
    settings = context.settings()
    _scraper_allowed(settings)
    return Response(scrape(context.database(), settings), content_type=CONTENT_TYPE_LATEST)
