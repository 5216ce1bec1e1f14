"""The event log's search (app.staff.event_log): filters that answer in place, result counts,
pages both ways, plain labels, and times in the staff member's own zone."""

from __future__ import annotations

import re
from datetime import UTC
from zoneinfo import ZoneInfo

from sqlalchemy import select

from app.store.models import ConsentEvent, StaffUser
from tests.staff_helpers import page_csrf, signed_in_client
from tests.twilio_helpers import send_text

ROW = '<td class="nowrap"><a href='


def words(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_a_bad_filter_is_answered_beside_its_field_with_no_results(app, db, client):
    for body in ["JOIN", "YES", "HELP"]:
        send_text(client, "+14155550100", body)
    staff, _ = signed_in_client(app, db, "compliance")
    response = staff.get("/staff/events?since=2026-11-02&until=2026-11-01&text=bill")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert html.count(ROW) == 0 and "No events match" not in html  # no list that ignores it
    assert 'id="f-until" type="date" name="until" value="2026-11-01" aria-invalid="true"' in html
    field = html[html.index('id="f-until"') :]
    assert field.index('id="until-error"') < field.index("</div>")  # the error is by the field
    assert "start date is after the end date" in field[: field.index("</div>")]
    assert 'value="2026-11-02"' in html and 'name="text" value="bill"' in html  # input kept


def test_a_bad_date_in_the_url_lists_nothing_and_keeps_what_was_typed(app, db, client):
    send_text(client, "+14155550100", "HELP")
    staff, _ = signed_in_client(app, db, "viewer")
    response = staff.get("/staff/events?since=yesterday")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert html.count(ROW) == 0
    assert 'value="yesterday"' in html and "From must be a date like 2026-11-23" in html


def test_results_are_counted_and_pages_go_both_ways(app, db, client):
    for i in range(120):
        send_text(client, f"+1415555{i:04d}", "HELP")
    staff, _ = signed_in_client(app, db, "viewer")
    first = staff.get("/staff/events").get_data(as_text=True)
    assert "120 events match, from 120 numbers" in words(first)
    assert 'rel="prev"' not in first
    older = re.search(r'rel="next" href="([^"]+)"', first)[1].replace("&amp;", "&")
    second = staff.get(older).get_data(as_text=True)
    newer = re.search(r'rel="prev" href="([^"]+)"', second)[1].replace("&amp;", "&")
    third = staff.get(re.search(r'rel="next" href="([^"]+)"', second)[1].replace("&amp;", "&"))
    back = staff.get(newer).get_data(as_text=True)

    def times(html):
        return re.findall(r'<td class="nowrap">([^<]+)</td>', html)

    assert re.findall(r'href="/staff/subscribers/(\d+)"', back) == re.findall(
        r'href="/staff/subscribers/(\d+)"', first
    )  # "newer" from page 2 is page 1 again
    assert times(back) == times(first)
    assert third.get_data(as_text=True).count(ROW) == 20
    one = staff.get("/staff/events?intent=help&since=2000-01-01&until=2000-01-02")
    assert "0 events match." in words(one.get_data(as_text=True))


def test_codes_read_as_plain_words_with_the_code_beside(app, db, client):
    send_text(client, "+14155550100", "JOIN")
    staff, _ = signed_in_client(app, db, "viewer")
    html = staff.get("/staff/events").get_data(as_text=True)
    assert 'Text from the subscriber <span class="code">inbound_text</span>' in html
    assert 'Opt-in <span class="code">opt_in</span>' in html
    assert "never subscribed → joined, awaiting YES" in html
    assert 'Asked to confirm with YES <span class="code">confirm_request</span>' in html
    assert "none → none" not in html


def test_the_status_change_choices_are_each_listed_once(app, db):
    staff, _ = signed_in_client(app, db, "viewer")
    html = staff.get("/staff/events").get_data(as_text=True)
    select_ = html[
        html.index('name="change"') : html.index("</select>", html.index('name="change"'))
    ]
    labels = re.findall(r"<option[^>]*>([^<]+)</option>", select_)
    assert labels.count("unchanged") == 1 and len(labels) == len(set(labels))


def test_times_are_shown_and_searched_in_the_staff_members_zone(app, db, client):
    send_text(client, "+14155550100", "HELP")
    with db.transaction(write=False) as session:
        at = session.execute(select(ConsentEvent.occurred_at)).scalar_one().astimezone(UTC)
    # A zone whose date differs from UTC's at this hour (UTC-11 before 11:00, else UTC+14).
    zone = "Pacific/Pago_Pago" if at.hour < 11 else "Pacific/Kiritimati"
    local = at.astimezone(ZoneInfo(zone))
    assert local.date() != at.date()
    staff, member = signed_in_client(app, db, "viewer")
    html = staff.get("/staff/events").get_data(as_text=True)
    assert at.strftime("%Y-%m-%d %H:%M:%S UTC") in html
    assert "Times are shown in UTC" in words(html)
    response = staff.post(
        "/staff/account/time-zone",
        data={"time_zone": zone, "csrf_token": page_csrf(staff, "/staff/account")},
    )
    assert response.status_code == 302
    with db.transaction(write=False) as session:
        assert session.get(StaffUser, member.id).time_zone == zone
    html = staff.get("/staff/events").get_data(as_text=True)
    assert local.strftime("%Y-%m-%d %H:%M:%S ") + local.tzname() in html
    assert f"Times are shown in {zone}" in words(html) and f"From ({zone})" in html

    def rows(day):
        query = f"/staff/events?since={day.isoformat()}&until={day.isoformat()}"
        return staff.get(query).get_data(as_text=True).count(ROW)

    assert rows(local.date()) == 1  # the day in the reader's zone
    assert rows(at.date()) == 0  # not the UTC day
    bad = staff.post(
        "/staff/account/time-zone",
        data={"time_zone": "Mars/Olympus", "csrf_token": page_csrf(staff, "/staff/account")},
    )
    assert "Choose a time zone" in staff.get(bad.location).get_data(as_text=True)


def test_status_now_and_reply_filters(app, db, client):
    send_text(client, "+14155550100", "JOIN")
    send_text(client, "+14155550100", "YES")
    send_text(client, "+14155550111", "HELP")
    staff, _ = signed_in_client(app, db, "compliance")

    def rows(query):
        return staff.get("/staff/events?" + query).get_data(as_text=True).count(ROW)

    assert rows("status_now=active&program=demo") == 2
    assert rows("status_now=none&program=demo") == 1
    assert rows("reply_status=queued") == 3
    assert rows("reply_status=delivered") == 0


def test_the_phone_search_is_labelled_with_the_default_region(app, db):
    staff, _ = signed_in_client(app, db, "compliance")
    html = staff.get("/staff/events").get_data(as_text=True)
    assert "Phone (E.164, or national in US)" in html
