"""`flask --app app rules explain`: the contract's JSON, and the send API's very answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from app.web import api_messages
from tests.sending_helpers import auth, seed_subscribers, send_token

BODY = "Demo Alerts: 20% off this week. Reply STOP to cancel."
NUMBERS = {
    "+13055550100": "active",  # Miami, Eastern
    "+18505550100": "active",  # Florida panhandle: Eastern or Central
    "+12125550100": "active",  # New York: federal window only
    "+15125550100": "active",  # Austin, Texas
    "+13055550101": "opted_out",
    "+13055550102": "pending",
}
MOMENTS = [
    datetime(2026, 6, 17, 17, 30, tzinfo=UTC),  # Wednesday midday everywhere
    datetime(2026, 6, 18, 0, 30, tzinfo=UTC),  # 8:30pm Eastern
    datetime(2026, 6, 21, 15, 30, tzinfo=UTC),  # Sunday 10:30am Central: Texas waits for noon
    datetime(2026, 6, 21, 17, 30, tzinfo=UTC),  # Sunday 12:30pm Central
]


def explain(runner, phone, at):
    result = runner.invoke(
        args=["rules", "explain", phone, "--program", "demo", "--at", at.isoformat()]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_explain_prints_the_contracts_json(runner, db):
    seed_subscribers(db, ["+13055550100"])
    answer = explain(runner, "+1 (305) 555-0100", MOMENTS[1])
    assert {"decision", "not_before", "reason", "local_time", "jurisdiction"} <= set(answer)
    assert answer["decision"] == "deferred"
    assert answer["not_before"] == "2026-06-18T12:00:00Z"
    assert answer["reason"] == "quiet_hours:US-FL"
    assert answer["local_time"] == "2026-06-17T20:30:00-04:00"
    assert answer["jurisdiction"] == "US-FL"
    assert answer["consent"]["status"] == "active" and "64.1200" not in answer["citation"]
    assert "501.616" in answer["citation"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-a-number", "--program", "demo"], "not a phone number"),
        (["+13055550100", "--program", "nope"], "no such program"),
        (["+13055550100", "--program", "demo", "--at", "yesterday"], "ISO 8601"),
    ],
)
def test_explain_refuses_bad_arguments(runner, args, message):
    result = runner.invoke(args=["rules", "explain", *args])
    assert result.exit_code != 0 and message in result.output


def test_explain_agrees_with_the_send_api(client, runner, db, monkeypatch):
    """Same numbers, same moments: the same decision, not_before and reason, every time,
    including the caps that earlier batches fill."""
    for status in ("active", "opted_out", "pending"):
        seed_subscribers(db, [p for p, s in NUMBERS.items() if s == status], status=status)
    token = send_token(db)
    compared = 0
    for round_number, at in enumerate(MOMENTS * 2):
        explained = {phone: explain(runner, phone, at) for phone in NUMBERS}
        monkeypatch.setattr(api_messages, "utcnow", lambda at=at: at)
        response = client.post(
            "/api/v1/messages",
            json={
                "program": "demo",
                "body": BODY,
                "to": list(NUMBERS),
                "idempotency_key": f"round-{round_number}",
            },
            headers=auth(token),
        )
        assert response.status_code == 202
        for result in response.get_json()["results"]:
            mine = explained[result["to"]]
            assert (mine["decision"], mine["not_before"], mine["reason"]) == (
                result["decision"],
                result["not_before"],
                result["reason"],
            ), (at, result["to"])
            compared += 1
    decisions = {e["decision"] for e in explained.values()}
    assert compared == len(NUMBERS) * len(MOMENTS) * 2 and decisions >= {"refused"}
