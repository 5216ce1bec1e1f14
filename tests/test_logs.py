"""app/logs.py and app/request_ids.py: JSON lines, request ids, no bodies or numbers at INFO."""

from __future__ import annotations

import io
import json
import logging

import pytest

from app.logs import (
    ContextFormatter,
    GunicornAccessFields,
    JsonLineFormatter,
    RequestContextFilter,
    gunicorn_logconfig,
    log_format,
)
from tests.twilio_helpers import send_text

PHONE = "+14155550100"


@pytest.fixture
def json_log():
    """Capture what the root logger writes as JSON lines, as production does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


def test_a_json_line_has_time_level_logger_message_and_the_ids():
    record = logging.makeLogRecord(
        {
            "name": "app.outbox.worker",
            "msg": "reply sent",
            "levelname": "INFO",
            "levelno": logging.INFO,
            "outbound_id": 7,
            "message_sid": "SM1",
        }
    )
    line = json.loads(JsonLineFormatter().format(record))
    assert line["level"] == "INFO"
    assert line["logger"] == "app.outbox.worker"
    assert line["message"] == "reply sent"
    assert line["outbound_id"] == 7 and line["message_sid"] == "SM1"
    assert line["time"].endswith("Z") and "T" in line["time"]


def test_the_text_format_keeps_key_value_ids():
    record = logging.makeLogRecord({"msg": "reply sent", "levelname": "INFO", "outbound_id": 7})
    assert ContextFormatter("%(levelname)s %(message)s").format(record) == (
        "INFO reply sent outbound_id=7"
    )


def test_log_format_defaults_to_json_and_accepts_text():
    assert log_format({}) == "json"
    assert log_format({"LOG_FORMAT": "TEXT"}) == "text"
    assert log_format({"LOG_FORMAT": "xml"}) == "json"


def test_a_webhook_logs_json_with_request_id_and_ids_but_no_body_or_number(client, json_log):
    response, sid = send_text(client, PHONE, "JOIN secret-body-words")
    assert response.status_code == 200
    lines = json_log()
    recorded = [line for line in lines if line.get("message_sid") == sid]
    assert recorded, lines
    assert all(line["request_id"] == response.headers["X-Request-Id"] for line in recorded)
    assert any(isinstance(line.get("event_id"), int) for line in recorded)
    text = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
    assert "secret-body-words" not in text
    assert PHONE not in text and PHONE[1:] not in text


def test_a_sane_incoming_request_id_is_kept_and_echoed(client, json_log):
    response, sid = send_text(client, PHONE, "HELP", message_sid=None)
    assert len(response.headers["X-Request-Id"]) == 32  # generated when none was sent
    response = client.get("/healthz", headers={"X-Request-Id": "router-4f2a.9"})
    assert response.headers["X-Request-Id"] == "router-4f2a.9"


@pytest.mark.parametrize("hostile", ["a b", "x" * 200, 'id"forged=1', "<script>", "é"])
def test_an_insane_request_id_is_replaced(client, hostile):
    response = client.get("/healthz", headers={"X-Request-Id": hostile})
    assert response.headers["X-Request-Id"] != hostile
    assert len(response.headers["X-Request-Id"]) == 32


def test_twilio_idempotency_token_is_logged_with_the_webhook(client, json_log):
    from tests.twilio_helpers import inbound_params, new_message_sid, post_signed

    sid = new_message_sid()
    post_signed(
        client,
        "/twilio/sms",
        inbound_params(PHONE, "JOIN", message_sid=sid),
        headers={"I-Twilio-Idempotency-Token": "idem-token-1"},
    )
    lines = [line for line in json_log() if line.get("message_sid") == sid]
    assert lines and all(line["twilio_idempotency_token"] == "idem-token-1" for line in lines)


def test_gunicorn_access_lines_become_fields_without_the_query_string():
    atoms = {
        "m": "POST",
        "U": "/twilio/sms",
        "q": "From=%2B14155550100",
        "s": "200",
        "D": 7930,
        "{x-request-id}o": "abc",
    }
    record = logging.makeLogRecord(
        {"name": "gunicorn.access", "msg": "%(m)s %(U)s %(s)s", "args": atoms}
    )
    assert GunicornAccessFields().filter(record)
    line = json.loads(JsonLineFormatter().format(record))
    assert line["message"] == "POST /twilio/sms 200"
    assert line["status"] == 200 and line["duration_ms"] == 7.9 and line["request_id"] == "abc"
    assert "4155550100" not in json.dumps(line)


def test_gunicorn_logconfig_uses_the_chosen_format_on_stdout():
    config = gunicorn_logconfig("json", "INFO")
    assert config["formatters"]["default"]["()"] == "app.logs.JsonLineFormatter"
    assert config["handlers"]["default"]["stream"] == "ext://sys.stdout"
    assert config["loggers"]["gunicorn.access"]["handlers"] == ["access"]
    text = gunicorn_logconfig("text", "INFO")
    assert text["formatters"]["default"]["()"] == "app.logs.ContextFormatter"
