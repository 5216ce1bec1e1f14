"""The sending rules in the console and the evidence bundle."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta

from app.web import api_messages
from tests.sending_helpers import auth, seed_subscribers, send_token
from tests.staff_helpers import signed_in_client

FL = "+13055550100"
BODY = "Demo Alerts: 20% off this week. Reply STOP to cancel."


def batch(app, db, monkeypatch, at):
    monkeypatch.setattr(api_messages, "utcnow", lambda: at)
    client = app.test_client()
    response = client.post(
        "/api/v1/messages",
        json={"program": "demo", "body": BODY, "to": [FL, FL, FL, FL], "idempotency_key": str(at)},
        headers=auth(send_token(db)),
    )
    assert response.status_code == 202


def test_the_sending_rules_page_lists_the_rules_in_force_with_citations(app, db):
    client, _ = signed_in_client(app, db, "viewer")
    page = client.get("/staff/rules").get_data(as_text=True)
    for expected in (
        "47 C.F.R. § 64.1200(c)(1)",
        "Fla. Stat. § 501.616(6)(a)",
        "Tex. Bus. &amp; Com. Code § 301.051",
        "9am–9pm Monday to Saturday, noon–9pm Sunday",
        "at most 3 per rolling 24 h",
        "Va. Code § 59.1-514(A)",
        "64.1200(a)(10)",
        "marketing",  # the demo program's purpose
    ):
        assert expected in page, expected
    assert 'href="/staff/rules"' in page  # in the menu


def test_timeline_dashboard_and_evidence_show_every_decision(app, db, monkeypatch):
    ids = seed_subscribers(db, [FL])
    day = datetime.now(UTC).date() - timedelta(days=2)  # recent: the dashboard shows 30 days
    midday = datetime.combine(day, time(17, 30), tzinfo=UTC)  # 12:30 or 1:30pm in Miami
    batch(app, db, monkeypatch, midday)  # 3 sent, 1 capped
    batch(app, db, monkeypatch, midday + timedelta(hours=10))  # 10:30 or 11:30pm: deferred
    client, _ = signed_in_client(app, db, "compliance")
    timeline = client.get(f"/staff/subscribers/{ids[FL]}").get_data(as_text=True)
    assert timeline.count("frequency_cap:US-FL") == 1
    assert "quiet_hours:US-FL" in timeline and "Send decisions" in timeline
    bundle = json.loads(client.get(f"/staff/subscribers/{ids[FL]}/evidence.json").data)
    decisions = [(d["decision"], d["reason"]) for d in bundle["send_decisions"]]
    assert decisions.count(("send", None)) == 3
    assert ("deferred", "frequency_cap:US-FL") in decisions
    assert all(d["citation"] for d in bundle["send_decisions"] if d["decision"] != "send")
    html = client.get(f"/staff/subscribers/{ids[FL]}/evidence.html").get_data(as_text=True)
    assert "Send decisions" in html and "501.616" in html
    dashboard = client.get("/staff/").get_data(as_text=True)
    assert "Program messages held back by rule" in dashboard
    assert "US-FL.frequency_cap" in dashboard and "US-FL.quiet_hours" in dashboard
