"""Event search (app.reports.search): filters, phone formats, keyset cursors."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from werkzeug.datastructures import MultiDict

from app.core.phones import phone_candidates
from app.reports.search import EventFilter, SearchError, decode_cursor, search_events
from tests.twilio_helpers import send_text


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("+14155550100", ["+14155550100"]),
        ("4155550100", ["+14155550100"]),
        ("(415) 555-0100", ["+14155550100"]),
        ("1 415 555 0100", ["+14155550100"]),
        ("12345", ["12345"]),
        ("ACME", ["ACME"]),
        ("ACME2", ["ACME2"]),  # not the short code "2"
        ("<img src=x onerror=alert(7)>", ["<img src=x onerror=alert(7)>"]),
    ],
)
def test_phone_candidates(typed, expected):
    assert phone_candidates(typed) == expected


def test_filter_from_request_arguments():
    args = MultiDict(
        {"phone": " +1 415 555 0100 ", "intent": "opt_out", "since": "2026-11-01", "flagged": "1"}
    )
    event_filter = EventFilter.from_args(args)
    assert event_filter.since == date(2026, 11, 1) and event_filter.flagged
    assert event_filter.as_query() == {
        "phone": "+1 415 555 0100",
        "intent": "opt_out",
        "since": "2026-11-01",
        "flagged": "1",
    }


@pytest.mark.parametrize(
    ("args", "field", "message"),
    [
        ({"intent": "maybe"}, "intent", "intent must be one of"),
        ({"change": "sideways"}, "change", "status change must be one of"),
        # Issue 15: the error names the field as the form labels it ("From", "Text contains").
        ({"since": "yesterday"}, "since", "From must be a date"),
        (
            {"since": "2026-11-02", "until": "2026-11-01"},
            "until",
            "start date is after the end date",
        ),
        ({"text": "x" * 201}, "text", "Text contains is too long"),
        ({"status_now": "maybe"}, "status_now", "status now must be one of"),
        ({"error_code": "x1"}, "error_code", "Error code must be a number"),
    ],
)
def test_bad_filters_say_what_is_wrong(args, field, message):
    with pytest.raises(SearchError, match=message) as raised:
        EventFilter.from_args(MultiDict(args))
    assert list(raised.value.errors) == [field]  # the error belongs beside that field


def test_every_bad_field_is_named_at_once():
    with pytest.raises(SearchError) as raised:
        EventFilter.from_args(MultiDict({"intent": "maybe", "since": "soon", "until": "later"}))
    assert set(raised.value.errors) == {"intent", "since", "until"}


@pytest.mark.parametrize("cursor", ["garbage", "2026-11-01T00:00:00+00:00~x", "~12"])
def test_tampered_cursors_are_refused(cursor):
    with pytest.raises(SearchError):
        decode_cursor(cursor)


def test_pages_follow_time_then_id_without_gaps_or_repeats(client, db):
    for i in range(7):
        send_text(client, f"+1415555{i:04d}", "HELP")
    with db.transaction(write=False) as session:
        seen, cursor = [], None
        while True:
            page = search_events(session, EventFilter(), before=cursor, limit=3)
            seen += [row.event.id for row in page.rows]
            cursor = page.next_cursor
            if cursor is None:
                break
        times = [
            e.occurred_at for e in (row.event for row in search_events(session, EventFilter()).rows)
        ]
    assert sorted(seen, reverse=True) == seen and len(set(seen)) == 7
    assert times == sorted(times, reverse=True)
    assert all(t.tzinfo is not None and t <= datetime.now(UTC) for t in times)
