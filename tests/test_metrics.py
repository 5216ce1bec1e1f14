"""app/metrics.py: /metrics access, webhook counters and latency, gauges read from the database."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from app.ledger.chain import record_checkpoint, verify_ledger
from app.outbox.records import record_heartbeat
from app.store.db import utcnow
from app.store.models import OutboundMessage
from tests.conftest import make_test_app
from tests.twilio_helpers import inbound_params, new_message_sid, send_text

PHONE = "+14155550100"


def scrape(client, **kwargs) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.data
    assert response.content_type.startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_webhooks_are_counted_by_intent_and_outcome(client):
    before = scrape(client)
    send_text(client, PHONE, "JOIN")
    _, sid = send_text(client, PHONE, "YES")
    send_text(client, PHONE, "YES", message_sid=sid)  # Twilio's retry: a duplicate
    client.post("/twilio/sms", data=inbound_params(PHONE, "STOP", message_sid=new_message_sid()))
    after = scrape(client)

    def delta(**labels) -> float:
        return value(after, "scg_webhooks_total", **labels) - value(
            before, "scg_webhooks_total", **labels
        )

    assert delta(webhook="sms", intent="opt_in", outcome="recorded") == 1
    assert delta(webhook="sms", intent="confirm", outcome="recorded") == 1
    assert delta(webhook="sms", intent="none", outcome="duplicate") == 1
    assert delta(webhook="sms", intent="none", outcome="bad_signature") == 1
    count = "scg_webhook_duration_seconds_count"
    assert value(after, count, webhook="sms") - value(before, count, webhook="sms") == 4


def test_outbox_depth_oldest_age_and_results_by_error_code(client, db):
    send_text(client, PHONE, "JOIN")
    send_text(client, "+14155550101", "JOIN")
    with db.transaction() as session:
        first = session.get(OutboundMessage, 1)
        first.status, first.error_code = "failed", 30007
        first.created_at = utcnow()
        second = session.get(OutboundMessage, 2)
        second.created_at = utcnow() - timedelta(minutes=5)
    samples = scrape(client)
    assert value(samples, "scg_database_up") == 1
    assert value(samples, "scg_outbox_depth", status="queued") == 1
    assert value(samples, "scg_outbox_depth", status="sending") == 0
    assert 299 <= value(samples, "scg_outbox_oldest_pending_age_seconds") < 600
    assert value(samples, "scg_outbound_messages", status="failed", error_code="30007") == 1
    assert value(samples, "scg_outbound_messages", status="queued", error_code="") == 1


def test_review_queue_ledger_verify_and_sender_heartbeat(client, db):
    send_text(client, PHONE, "We have got to stop this bill")
    samples = scrape(client)
    assert value(samples, "scg_review_queue_size") == 1
    assert ("scg_ledger_verify_ok", ()) not in samples  # never verified yet
    assert value(samples, "scg_sender_workers_alive") == 0

    with db.transaction() as session:
        record_checkpoint(session, verify_ledger(session))
        record_heartbeat(session, "host:1", utcnow())
    samples = scrape(client)
    assert value(samples, "scg_ledger_verify_ok") == 1
    assert value(samples, "scg_ledger_verify_events") == 1
    assert value(samples, "scg_ledger_verify_timestamp_seconds") > 0
    assert value(samples, "scg_sender_workers_alive") == 1
    assert 0 <= value(samples, "scg_sender_heartbeat_age_seconds") < 60


def test_by_default_only_loopback_may_scrape(client):
    assert client.get("/metrics").status_code == 200
    refused = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert refused.status_code == 403
    assert b"METRICS_TOKEN" in refused.data


def test_a_token_is_required_when_set(database_url, tmp_path):
    app = make_test_app(database_url, tmp_path, metrics_token="s3cret-metrics")
    try:
        client = app.test_client()
        remote = {"REMOTE_ADDR": "203.0.113.9"}
        missing = client.get("/metrics", environ_base=remote)
        assert missing.status_code == 401 and "Bearer" in missing.headers["WWW-Authenticate"]
        wrong = client.get(
            "/metrics", environ_base=remote, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        good = {"Authorization": "Bearer s3cret-metrics"}
        assert scrape(client, environ_base=remote, headers=good)
    finally:
        app.extensions["db"].dispose()


def test_allowed_networks_limit_who_may_scrape(database_url, tmp_path):
    app = make_test_app(database_url, tmp_path, metrics_allowed_networks=("10.0.0.0/8",))
    try:
        client = app.test_client()
        assert scrape(client, environ_base={"REMOTE_ADDR": "10.1.2.3"})
        assert client.get("/metrics").status_code == 403  # loopback is not in the list
    finally:
        app.extensions["db"].dispose()


def test_an_unreachable_database_is_reported_not_fatal(tmp_path):
    app = make_test_app("postgresql+psycopg://nobody@127.0.0.1:9/none", tmp_path)
    try:
        samples = scrape(app.test_client())
        assert value(samples, "scg_database_up") == 0
        assert ("scg_outbox_oldest_pending_age_seconds", ()) not in samples
    finally:
        app.extensions["db"].dispose()
