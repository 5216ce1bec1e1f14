"""The lookup box and the number's page: any format in, the verdict first, with its grounds
(app.staff.subscribers, app.reports.lookup, app.reports.verdicts)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app.store.models import ConsentEvent, StaffAuditEntry, Subscriber
from tests.staff_helpers import signed_in_client
from tests.twilio_helpers import send_text

PHONE = "+14155550123"


@pytest.fixture
def resumed(client):
    """JOIN, YES, HELP, STOP, HELP, START: confirmed at #2, resumed by START at #6."""
    for body in ["JOIN", "YES", "HELP", "STOP", "HELP", "START"]:
        assert send_text(client, PHONE, body)[0].status_code == 200


def subscriber_id(db, phone=PHONE) -> int:
    with db.transaction(write=False) as session:
        return session.execute(select(Subscriber.id).where(Subscriber.phone == phone)).scalar_one()


def event_ids(db, phone=PHONE) -> dict[int, int]:
    """{seq: event id} of the number's chain."""
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(ConsentEvent.seq, ConsentEvent.id)
            .join(Subscriber, Subscriber.id == ConsentEvent.subscriber_id)
            .where(Subscriber.phone == phone)
        )
        return dict(rows.all())


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.mark.parametrize(
    "typed",
    ["+1 415 555 0123", "(415) 555-0123", "14155550123", "415.555.0123", "+1-415-555-0123"],
)
def test_any_format_opens_the_numbers_page(app, db, resumed, typed):
    client, _ = signed_in_client(app, db, "compliance")
    response = client.get("/staff/lookup", query_string={"q": typed})
    assert response.status_code == 302
    assert response.location.startswith(f"/staff/subscribers/{subscriber_id(db)}?q=")
    page = client.get(response.location).get_data(as_text=True)
    assert "You typed" in page and "+1 415 555 0123" in page


def test_a_national_number_says_how_it_was_read(app, db, resumed):
    client, _ = signed_in_client(app, db, "compliance")
    page = client.get("/staff/lookup?q=(415)+555-0123", follow_redirects=True)
    html = page.get_data(as_text=True)
    reading = text_of(re.search(r'id="lookup-reading">(.*?)</p>', html, re.S)[1])
    assert "(415) 555-0123" in reading and "read as +1 415 555 0123" in reading
    assert "a national number in US ( PHONE_DEFAULT_REGION )" in reading


def test_the_verdict_comes_first_and_names_its_events(app, db, resumed):
    client, _ = signed_in_client(app, db, "compliance")
    html = client.get(f"/staff/subscribers/{subscriber_id(db)}").get_data(as_text=True)
    ids = event_ids(db)
    verdict = html[
        html.index('id="verdict"') : html.index("</section>", html.index('id="verdict"'))
    ]
    assert html.index('id="verdict"') < html.index('class="timeline"')  # the answer first
    words = text_of(verdict)
    assert "Yes" in words
    # "confirmed" and "since" are two facts: confirmed by YES at #2, subscribed since START (#6).
    assert re.search(r"confirmed \(double opt-in\) on \d{4}-\d\d-\d\d [\d:]+ UTC", words)
    assert re.search(r"confirmed by YES at [\d:\- ]+UTC \( #2 \); resumed by START at", words)
    assert words.index("confirmed by YES") < words.index("resumed by START")
    assert f'href="/staff/subscribers/{subscriber_id(db)}#event-{ids[2]}">#2</a>' in verdict
    assert f'#event-{ids[6]}">#6</a>' in verdict


def test_an_opted_out_number_rests_on_its_stop(app, db, client):
    for body in ["JOIN", "YES", "STOP"]:
        send_text(client, PHONE, body)
    staff, _ = signed_in_client(app, db, "viewer")
    words = text_of(staff.get(f"/staff/subscribers/{subscriber_id(db)}").get_data(as_text=True))
    assert "No: opted out on" in words and "opted out by STOP at" in words


def test_a_never_seen_number_has_no_record_and_must_not_be_texted(app, db, resumed):
    client, _ = signed_in_client(app, db, "compliance")
    response = client.get("/staff/lookup", query_string={"q": "+1 (415) 555-0199"})
    assert response.status_code == 200
    words = text_of(response.get_data(as_text=True))
    assert "No record of +1 415 555 0199: no consent held, do not text" in words


def test_an_erased_number_says_so(app, db, client):
    send_text(client, PHONE, "JOIN")
    result = app.test_cli_runner().invoke(args=["erase", PHONE, "--reason", "owner asked"])
    assert result.exit_code == 0, result.output
    staff, _ = signed_in_client(app, db, "compliance")
    words = text_of(staff.get("/staff/lookup", query_string={"q": PHONE}).get_data(as_text=True))
    assert "was erased at its owner's request" in words and "do not text" in words


@pytest.mark.parametrize("typed", ["hello", "JOIN", "---", "call me"])
def test_input_that_is_not_a_number_says_so(app, db, resumed, typed):
    client, _ = signed_in_client(app, db, "compliance")
    response = client.get("/staff/lookup", query_string={"q": typed})
    assert response.status_code == 400
    assert "is not a phone number" in text_of(response.get_data(as_text=True))


def test_a_national_number_of_another_country_says_how_to_type_it(app, db, resumed):
    client, _ = signed_in_client(app, db, "compliance")
    words = text_of(client.get("/staff/lookup?q=020+7946+0958").get_data(as_text=True))
    assert "not a valid number in international form, nor a national number of US" in words
    assert "+44 20 7946 0958" in words


def test_the_last_digits_list_the_numbers_ending_in_them(app, db, resumed, client):
    send_text(client, "+14155559923", "HELP")
    staff, _ = signed_in_client(app, db, "compliance")
    html = staff.get("/staff/lookup?q=0123").get_data(as_text=True)
    assert "Numbers ending in 0123" in html and PHONE in html and "+14155559923" not in html
    html = staff.get("/staff/lookup?q=23").get_data(as_text=True)
    assert PHONE in html and "+14155559923" in html


def test_lookups_are_audited_without_the_number(app, db, resumed):
    client, _ = signed_in_client(app, db, "compliance")
    client.get("/staff/lookup?q=(415)+555-0199")
    with db.transaction(write=False) as session:
        entry = session.execute(
            select(StaffAuditEntry).where(StaffAuditEntry.action == "lookup")
        ).scalar_one()
    assert entry.query["lookup"] == "no_record" and entry.query["phone"] == "+1 •••• 99"
    assert "4155550199" not in str(entry.query)


# --- viewers: a lookup must not become an unmasking oracle (issue 13) ---------------------------


@pytest.mark.parametrize("probe", ["+14155550123", "(415) 555-0123", "+14155550199", "0123", "123"])
def test_a_viewer_lookup_of_a_number_answers_the_same_whether_it_exists_or_not(
    app, db, resumed, probe
):
    client, _ = signed_in_client(app, db, "viewer")
    response = client.get("/staff/lookup", query_string={"q": probe})
    missing = client.get("/staff/lookup", query_string={"q": "+19995550000"})
    assert response.status_code == missing.status_code == 400

    def answer(r):
        html = r.get_data(as_text=True)
        return text_of(html[html.index('id="lookup-answer"') : html.index("</section>")])

    assert answer(response) == answer(missing)
    assert "needs the compliance role" in answer(response) and "Nothing was searched" in answer(
        response
    )
    assert "0123" not in response.get_data(as_text=True).replace(probe, "")


def test_a_viewer_may_look_up_the_two_digits_every_mask_shows(app, db, resumed):
    client, _ = signed_in_client(app, db, "viewer")
    html = client.get("/staff/lookup?q=23").get_data(as_text=True)
    assert "+1 •••• 23" in html and PHONE not in html and "0123" not in html
    assert f"/staff/subscribers/{subscriber_id(db)}" in html


def test_a_viewer_reads_the_verdict_masked(app, db, resumed):
    client, _ = signed_in_client(app, db, "viewer")
    html = client.get(f"/staff/subscribers/{subscriber_id(db)}?q=4155550123").get_data(as_text=True)
    assert "You typed" not in html and PHONE not in html and "0123" not in html
    assert "confirmed by YES" in html
