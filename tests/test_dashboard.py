"""Dashboard figures and the server-drawn chart (app.reports.dashboard)."""

from __future__ import annotations

from datetime import date, timedelta
from xml.etree import ElementTree

from sqlalchemy import update

from app.reports.dashboard import collect, daily_chart_svg
from app.store.db import utcnow
from app.store.models import OutboundMessage
from tests.twilio_helpers import send_text


def test_figures_count_subscribers_changes_and_deliveries(client, db):
    for phone in ("+14155550100", "+14155550101", "+14155550102"):
        send_text(client, phone, "JOIN")
    send_text(client, "+14155550100", "YES")
    send_text(client, "+14155550101", "STOP")
    send_text(client, "+14155550102", "the bill must stop")
    with db.transaction() as session:
        session.execute(
            update(OutboundMessage).where(OutboundMessage.id == 1).values(status="delivered")
        )
        session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.id == 3)
            .values(status="undelivered", error_code=30003)
        )
    with db.transaction(write=False) as session:
        figures = collect(session, utcnow())
    assert figures.subscribers == {"demo": {"active": 1, "opted_out": 1, "pending": 1}}
    assert figures.daily["Opt-ins"][-1] == 3
    assert figures.daily["Confirmations"][-1] == 1
    assert figures.daily["Opt-outs"][-1] == 1
    assert sum(figures.daily["Opt-ins"][:-1]) == 0 and len(figures.days) == 30
    assert figures.delivery_rate == 0.5
    assert figures.failures_by_code == [("30003", 1)]
    assert figures.queue.size == 1


def test_chart_is_valid_svg_with_one_line_per_series():
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(30)]
    svg = daily_chart_svg(days, {"Opt-ins": [i for i in range(30)], "Opt-outs": [0] * 30})
    root = ElementTree.fromstring(svg)
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2 and len(lines[0].get("points").split()) == 30
    assert "Opt-ins: 435" in root.get("aria-label")
    assert "style=" not in svg and "<script" not in svg  # holds under the strict CSP
