"""The console's pages through the Flask test client: roles, masking, audit, exports, review."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re

import pytest
from sqlalchemy import func, select

from app.ledger.chain import verify_ledger
from app.ledger.suppression import phone_hmac
from app.store.models import ApiToken, ConsentEvent, OutboundMessage, StaffAuditEntry, StaffUser
from tests.staff_helpers import page_csrf, signed_in_client
from tests.twilio_helpers import send_text

PHONE = "+14155550100"
MASKED = "+1 •••• 00"
XSS = ['<script>alert("x")</script>', '"><img src=x onerror=alert(1)>']


@pytest.fixture
def history(client):
    """One subscriber who joined, confirmed, said something odd, then something hostile."""
    for body in ["JOIN", "YES", "We have got to stop this bill", *XSS, '=HYPERLINK("x")']:
        response, _ = send_text(client, PHONE, body)
        assert response.status_code == 200
    send_text(client, "+14155550111", "HELP")


def audit_actions(db) -> list[tuple[str, str | None, int | None, str | None]]:
    with db.transaction(write=False) as session:
        return [
            (e.action, e.target, e.row_count, e.sha256)
            for e in session.execute(select(StaffAuditEntry).order_by(StaffAuditEntry.id)).scalars()
        ]


def subscriber_id(db, phone=PHONE) -> int:
    with db.transaction(write=False) as session:
        return session.execute(
            select(ConsentEvent.subscriber_id).where(ConsentEvent.body == "JOIN")
        ).scalar_one()


# --- dashboard ---------------------------------------------------------------------------------


def test_dashboard_shows_the_figures(app, db, history):
    client, _ = signed_in_client(app, db, "viewer")
    html = client.get("/staff/").get_data(as_text=True)
    assert "Subscribers by program" in html and "<svg" in html
    assert "Review queue" in html and ">1<" in html  # one flagged text waits
    assert "Not checked yet" in html
    client.application.test_cli_runner().invoke(args=["ledger", "verify"])
    html = client.get("/staff/").get_data(as_text=True)
    assert "Intact" in html
    assert app.extensions["ledger_key"].fingerprint in html  # the checkpoint key's


# --- event log ---------------------------------------------------------------------------------


def test_viewers_see_masked_numbers_and_no_exports(app, db, history):
    client, _ = signed_in_client(app, db, "viewer")
    html = client.get("/staff/events").get_data(as_text=True)
    assert MASKED in html and PHONE not in html and PHONE[1:] not in html
    assert "export" not in html.lower().replace("numbers are masked", "")
    assert client.get("/staff/events?unmask=1").get_data(as_text=True).count(PHONE) == 0
    assert client.get("/staff/events/export.csv").status_code == 403
    sid = subscriber_id(db)
    timeline = client.get(f"/staff/subscribers/{sid}?unmask=1").get_data(as_text=True)
    assert MASKED in timeline and PHONE not in timeline
    assert client.get(f"/staff/subscribers/{sid}/evidence.json").status_code == 403


def test_search_filters(app, db, history):
    client, _ = signed_in_client(app, db, "compliance")

    def rows(query):
        html = client.get("/staff/events?" + query).get_data(as_text=True)
        return html.count('<td class="nowrap"><a href=')  # one link to a timeline per row

    assert rows("") == 7
    assert rows("phone=(415) 555-0100") == 6  # any format, national too
    assert rows("phone=14155550111") == 1
    assert rows("intent=help") == 1
    assert rows("intent=confirm") == 1
    assert rows("change=active") == 1 and rows("change=pending") == 1
    assert rows("change=any") == 2
    assert rows("text=stop+THIS") == 1
    assert rows("text=100%25") == 0  # LIKE wildcards are literal
    assert rows("flagged=1") == 1
    assert rows("since=2000-01-01&until=2000-01-02") == 0
    assert rows("program=demo") == 7
    response = client.get("/staff/events?intent=nonsense")
    assert "intent must be one of" in response.get_data(as_text=True)


def test_searches_and_unmasking_are_audited(app, db, history):
    client, _ = signed_in_client(app, db, "compliance")
    client.get("/staff/events?intent=help")
    html = client.get("/staff/events?intent=opt_in&unmask=1").get_data(as_text=True)
    assert PHONE in html
    entries = [e for e in audit_actions(db) if e[0] in ("search", "unmask")]
    assert entries == [("search", "event log", 1, None), ("unmask", "event log", 1, None)]
    with db.transaction(write=False) as session:
        queries = session.execute(
            select(StaffAuditEntry.query).where(StaffAuditEntry.action == "unmask")
        ).scalar_one()
    assert queries == {"intent": "opt_in"}


def test_a_searched_number_is_audited_masked_with_its_keyed_hash(app, db, history):
    """The audit log is append-only: a number kept there in full would outlive its erasure."""
    client, _ = signed_in_client(app, db, "compliance")
    client.get("/staff/events?phone=(415) 555-0100")
    with db.transaction(write=False) as session:
        query = session.execute(
            select(StaffAuditEntry.query).where(StaffAuditEntry.action == "search")
        ).scalar_one()
    key = app.extensions["settings"].suppression_hmac_key
    assert query["phone"] == MASKED
    assert phone_hmac(key, PHONE) in query["phone_hmac"]
    assert "4155550100" not in json.dumps(query, ensure_ascii=False)


def test_keyset_pages_walk_every_event_once(app, db, client):
    for i in range(120):
        send_text(client, f"+1415555{i:04d}", "HELP")
    staff_client, _ = signed_in_client(app, db, "viewer")
    seen, url = 0, "/staff/events"
    while url:
        html = staff_client.get(url).get_data(as_text=True)
        seen += html.count('<td class="nowrap"><a href=')
        found = re.search(r'rel="next" href="([^"]+)"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert seen == 120


# --- timeline ----------------------------------------------------------------------------------


def test_timeline_shows_everything_about_one_number(app, db, history):
    client, _ = signed_in_client(app, db, "compliance")
    sid = subscriber_id(db)
    html = client.get(f"/staff/subscribers/{sid}").get_data(as_text=True)
    assert MASKED in html
    # Subscribed, but "We have got to stop this bill" awaits review: on hold (issue 11).
    assert "Can we text this number?" in html and ">Hold<" in html and "awaits review" in html
    assert "Reply YES to confirm" not in html or "reply YES to confirm" in html
    assert "Msg &amp; data rates may apply" in html  # the disclosure shown
    # Issue 15: plain words first, the codes in small type beside them.
    assert "Opt-in" in html and "Confirmation" in html
    assert "joined, awaiting YES → subscribed" in html
    assert 'rule program keyword JOIN <span class="code">opt_in.program_keyword:join</span>' in html
    assert "Intact: 6 events verified" in html
    assert ("timeline_view", f"subscriber {sid}", 6, None) in audit_actions(db)
    assert client.get("/staff/subscribers/99999").status_code == 404


@pytest.mark.parametrize("role", ["viewer", "compliance", "admin"])
def test_hostile_bodies_render_as_inert_text_everywhere(app, db, history, role):
    client, _ = signed_in_client(app, db, role)
    sid = subscriber_id(db)
    pages = ["/staff/events", f"/staff/subscribers/{sid}", "/staff/"]
    if role != "viewer":
        pages += ["/staff/review", f"/staff/subscribers/{sid}/evidence.html"]
    for path in pages:
        html = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html, path
    html = client.get(f"/staff/subscribers/{sid}").get_data(as_text=True)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    digits = "•••" if role == "viewer" else "1"  # viewers see no digits in texts
    assert f"&#34;&gt;&lt;img src=x onerror=alert({digits})&gt;" in html


# --- exports and evidence -----------------------------------------------------------------------


def test_csv_export_is_streamed_neutralised_and_audited(app, db, history):
    client, _ = signed_in_client(app, db, "compliance")
    response = client.get("/staff/events/export.csv?phone=%2B14155550100")
    assert response.status_code == 200 and response.is_streamed
    assert response.headers["Content-Disposition"].startswith("attachment;")
    data = response.get_data()
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert len(rows) == 6
    # Issue 15: numbers as E.164 digits, which no spreadsheet reads as a formula (not "'+1…")
    assert {row["phone_e164_digits"] for row in rows} == {"14155550100"}
    assert "phone" not in rows[0]
    bodies = {row["body"] for row in rows}
    assert '\'=HYPERLINK("x")' in bodies and XSS[0] in bodies
    welcome = next(row for row in rows if row["intent"] == "confirm")
    assert welcome["reply_status"] == "queued" and "subscribed" in welcome["reply_body"]
    [started] = [e for e in audit_actions(db) if e[0] == "export_started"]
    [entry] = [e for e in audit_actions(db) if e[0] == "export"]
    assert started == ("export_started", "events.csv", None, None)
    assert entry == ("export", "events.csv", 6, hashlib.sha256(data).hexdigest())


def test_json_export(app, db, history):
    client, _ = signed_in_client(app, db, "compliance")
    response = client.get("/staff/events/export.json?intent=other")
    document = json.loads(response.get_data())
    assert document["query"] == {"intent": "other"}
    assert len(document["events"]) == 4
    assert all(e["intent"] == "other" for e in document["events"])
    assert document["events"][-1]["body"] == "We have got to stop this bill"  # newest first


def test_evidence_download_is_audited_with_its_digest(app, db, history):
    client, _ = signed_in_client(app, db, "compliance")
    sid = subscriber_id(db)
    response = client.get(f"/staff/subscribers/{sid}/evidence.json")
    bundle = json.loads(response.get_data())
    assert bundle["phone"] == PHONE and bundle["verification"]["ok"]
    digest = hashlib.sha256(response.get_data()).hexdigest()
    assert response.headers["X-Content-SHA256"] == digest
    assert ("evidence_download", f"subscriber {sid} evidence.json", 6, digest) in audit_actions(db)
    html = client.get(f"/staff/subscribers/{sid}/evidence.html").get_data(as_text=True)
    assert "Consent evidence" in html


def test_downloaded_evidence_carries_proofs_once_a_checkpoint_covers_it(app, db, history):
    client, _ = signed_in_client(app, db, "compliance")
    sid = subscriber_id(db)
    before = json.loads(client.get(f"/staff/subscribers/{sid}/evidence.json").get_data())
    assert before["transparency"]["anchored"] == 0
    assert "ledger checkpoint" in before["transparency"]["message"]
    assert app.test_cli_runner().invoke(args=["ledger", "checkpoint"]).exit_code == 0
    after = json.loads(client.get(f"/staff/subscribers/{sid}/evidence.json").get_data())
    assert after["transparency"]["anchored"] == len(after["events"]) == 6
    assert all(event["anchor"]["inclusion_proof"] is not None for event in after["events"])
    timeline = client.get(f"/staff/subscribers/{sid}").get_data(as_text=True)
    assert "Anchored: leaf" not in timeline  # proofs are for downloads, not every page view


# --- review queue ------------------------------------------------------------------------------


def flagged_event_id(db) -> int:
    with db.transaction(write=False) as session:
        return session.execute(
            select(ConsentEvent.id).where(ConsentEvent.possible_opt_out.is_(True))
        ).scalar_one()


def decide(client, event_id, decision, reason):
    token = page_csrf(client, "/staff/review")
    return client.post(
        f"/staff/review/{event_id}",
        data={
            f"e{event_id}-decision": decision,
            f"e{event_id}-reason": reason,
            "csrf_token": token,
        },
    )


def test_treat_as_opt_out_records_a_ledger_event_and_confirms(app, db, history):
    client, staff = signed_in_client(app, db, "compliance")
    event_id = flagged_event_id(db)
    html = client.get("/staff/review").get_data(as_text=True)
    assert "We have got to stop this bill" in html and "due by" in html
    response = decide(client, event_id, "opt_out", "Reads as a request to stop")
    assert response.status_code == 302
    with db.transaction(write=False) as session:
        decision = session.execute(
            select(ConsentEvent).where(ConsentEvent.subject_event_id == event_id)
        ).scalar_one()
        assert (decision.kind, decision.intent, decision.actor) == (
            "staff_decision",
            "opt_out",
            staff.email,
        )
        # The officer's reason, then the opt-out scope rule that applied (issue 14).
        reason, scope = decision.note.split(" (", 1)
        assert reason == "Reads as a request to stop"
        assert scope.startswith("opt-out scope: number (the programs on the number texted")
        assert (decision.status_before, decision.status_after) == ("active", "opted_out")
        confirmation = session.execute(
            select(OutboundMessage).where(OutboundMessage.event_id == decision.id)
        ).scalar_one()
        assert confirmation.kind == "opt_out_confirmation" and confirmation.to_number == PHONE
        assert verify_ledger(session).ok
    assert "Nothing waits for review" in client.get("/staff/review").get_data(as_text=True)
    again = decide(client, event_id, "not_opt_out", "second thoughts")
    assert again.status_code == 302
    with db.transaction(write=False) as session:
        count = select(func.count()).where(ConsentEvent.subject_event_id == event_id)
        assert session.execute(count).scalar_one() == 1


def test_not_an_opt_out_changes_nothing_but_is_recorded(app, db, history):
    client, staff = signed_in_client(app, db, "compliance")
    event_id = flagged_event_id(db)
    decide(client, event_id, "not_opt_out", "About a bill in Congress")
    with db.transaction(write=False) as session:
        decision = session.execute(
            select(ConsentEvent).where(ConsentEvent.subject_event_id == event_id)
        ).scalar_one()
        assert (decision.intent, decision.status_before, decision.status_after) == (
            "other",
            "active",
            "active",
        )
        assert (
            session.execute(
                select(func.count()).where(OutboundMessage.event_id == decision.id)
            ).scalar_one()
            == 0
        )


@pytest.mark.parametrize(("decision", "reason"), [("opt_out", ""), ("opt_out", "x"), ("", "ok ok")])
def test_a_decision_needs_a_choice_and_a_reason(app, db, history, decision, reason):
    client, _ = signed_in_client(app, db, "compliance")
    event_id = flagged_event_id(db)
    response = decide(client, event_id, decision, reason)
    # Issue 15: refused in place (400), the error beside the item, the reason as typed.
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    item = html[html.index(f'id="review-{event_id}"') :]
    assert 'class="field-error"' in item[: item.index("</article>")]
    assert re.search(rf">\s*{re.escape(reason)}</textarea>", item)
    with db.transaction(write=False) as session:
        assert (
            session.execute(
                select(func.count()).where(ConsentEvent.subject_event_id == event_id)
            ).scalar_one()
            == 0
        )


def test_only_flagged_texts_can_be_decided(app, db, history):
    client, _ = signed_in_client(app, db, "compliance")
    with db.transaction(write=False) as session:
        join_id = session.execute(
            select(ConsentEvent.id).where(ConsentEvent.body == "JOIN")
        ).scalar_one()
    response = decide(client, join_id, "opt_out", "not in the queue")
    follow = client.get(response.location).get_data(as_text=True)
    assert "not in the review queue" in follow


# --- admin -------------------------------------------------------------------------------------


def test_admin_creates_staff_and_hands_on_a_link_never_a_secret(app, db):
    """Finding 7: an admin saw every new account's password and TOTP seed."""
    client, _ = signed_in_client(app, db, "admin")
    token = page_csrf(client, "/staff/admin/staff")
    html = client.post(
        "/staff/admin/staff",
        data={"email": "new@example.com", "role": "compliance", "csrf_token": token},
    ).get_data(as_text=True)
    link = re.search(r'id="enrol-link">([^<]+)</code>', html).group(1)
    assert "/staff/enrol/" in link and "otpauth://" not in html and "<svg" not in html
    assert "Password" not in html and "secret=" not in html
    with db.transaction(write=False) as session:
        user = session.execute(
            select(StaffUser).where(StaffUser.email == "new@example.com")
        ).scalar_one()
        assert user.enrolled_at is None and user.totp_seed_encrypted is None
    listing = client.get("/staff/admin/staff").get_data(as_text=True)
    assert "new@example.com" in listing and "waiting for enrolment" in listing
    assert "enrol_link" in [a[0] for a in audit_actions(db)]


def test_admin_disables_an_account_and_its_sessions_end(app, db):
    viewer_client, viewer = signed_in_client(app, db, "viewer")
    client, _ = signed_in_client(app, db, "admin")
    token = page_csrf(client, "/staff/admin/staff")
    client.post(
        f"/staff/admin/staff/{viewer.id}",
        data={f"u{viewer.id}-action": "disable", "csrf_token": token},
    )
    assert viewer_client.get("/staff/").status_code == 302


def test_the_last_admin_cannot_be_demoted(app, db):
    client, admin = signed_in_client(app, db, "admin")
    token = page_csrf(client, "/staff/admin/staff")
    response = client.post(
        f"/staff/admin/staff/{admin.id}",
        data={f"u{admin.id}-action": "role:viewer", "csrf_token": token},
    )
    assert "last admin" in client.get(response.location).get_data(as_text=True)


def test_admin_manages_api_tokens(app, db):
    client, _ = signed_in_client(app, db, "admin")
    token = page_csrf(client, "/staff/admin/tokens")
    html = client.post(
        "/staff/admin/tokens",
        data={"name": "crm", "scopes": ["events:read"], "csrf_token": token},
    ).get_data(as_text=True)
    plain = re.search(r'id="new-token">(scg_[^<]+)</code>', html).group(1)
    api = app.test_client()
    assert (
        api.get("/api/v1/events", headers={"Authorization": f"Bearer {plain}"}).status_code == 200
    )
    with db.transaction(write=False) as session:
        token_id = session.execute(select(ApiToken.id)).scalar_one()
    client.post(
        f"/staff/admin/tokens/{token_id}/revoke",
        data={"csrf_token": page_csrf(client, "/staff/admin/tokens")},
    )
    assert (
        api.get("/api/v1/events", headers={"Authorization": f"Bearer {plain}"}).status_code == 401
    )
    actions = [a[0] for a in audit_actions(db)]
    assert "api_token_create" in actions and "api_token_revoke" in actions


def test_admin_reads_the_audit_log(app, db, history):
    client, _ = signed_in_client(app, db, "admin")
    client.get("/staff/events?intent=help")
    html = client.get("/staff/admin/audit").get_data(as_text=True)
    assert "search" in html and "admin@example.com" in html and "intent" in html


SQL_BODIES = [
    "'; DROP TABLE consent_events; --",
    "Robert'); DELETE FROM subscribers;--",
    "1' OR '1'='1",
    "100% off_today \\ back",
]


@pytest.mark.parametrize("query", SQL_BODIES + ["%", "_", "' OR 1=1 --"])
def test_sql_in_bodies_and_searches_is_stored_and_found_literally(app, db, client, query):
    for body in SQL_BODIES:
        send_text(client, PHONE, body)
    staff, _ = signed_in_client(app, db, "compliance")
    response = staff.get("/staff/events/export.json", query_string={"text": query})
    assert response.status_code == 200
    found = {event["body"] for event in json.loads(response.get_data())["events"]}
    assert found == {body for body in SQL_BODIES if query.casefold() in body.casefold()}
    with db.transaction(write=False) as session:
        stored = set(session.execute(select(ConsentEvent.body)).scalars())
        assert stored == set(SQL_BODIES)
        assert verify_ledger(session).ok
    html = staff.get("/staff/events", query_string={"text": query}).get_data(as_text=True)
    assert html.count('<td class="body">') == len(found)


# --- what viewers see, and the complete access audit (issue 13) ---------------------------------


def test_a_viewer_cannot_use_the_event_log_as_an_unmasking_oracle(app, db, history):
    """Finding 1: a viewer saw all but 3 digits and could search by full number: at most
    1,000 searches unmasked anyone. Now the mask keeps 2 digits and no viewer search takes a
    number, or digits from the texts."""
    client, _ = signed_in_client(app, db, "viewer")
    everything = client.get("/staff/events").get_data(as_text=True)
    count = everything.count('<td class="nowrap"><a href=')
    for probe in ("+14155550100", "4155550100", "+14155550199", "(415) 555-0100"):
        page = client.get("/staff/events", query_string={"phone": probe}).get_data(as_text=True)
        assert "needs the compliance role" in page
        assert page.count('<td class="nowrap"><a href=') == count  # the same rows, whatever typed
    send_text(app.test_client(), "+14155550122", "call me on 415 555 0187")
    texts = client.get("/staff/events", query_string={"text": "0187"}).get_data(as_text=True)
    assert "needs the compliance role" in texts
    html = client.get("/staff/events").get_data(as_text=True)
    assert "call me on ••• ••• •••" in html and "0187" not in html
    assert "415" not in re.sub(r"<[^>]+>", "", html).replace("+1 •••• 00", "")
    officer, _ = signed_in_client(app, db, "compliance")
    found = officer.get("/staff/events", query_string={"phone": PHONE}).get_data(as_text=True)
    assert found.count('<td class="nowrap"><a href=') == 6  # compliance keeps today's rights


def test_the_viewer_mask_keeps_at_most_the_last_two_digits(app, db, history):
    client, _ = signed_in_client(app, db, "viewer")
    sid = subscriber_id(db)
    page = client.get(f"/staff/subscribers/{sid}").get_data(as_text=True)
    digits_shown = re.findall(r"\+1 •••• (\d+)", page)
    assert digits_shown and all(len(d) <= 2 for d in digits_shown)


def test_every_page_of_the_event_log_is_audited_searched_or_not(app, db, client):
    """Finding 2: browsing or paging the log without a filter showed texts, unaudited."""
    for i in range(60):
        send_text(client, f"+1415555{i:04d}", "HELP")
    viewer, _ = signed_in_client(app, db, "viewer")
    first = viewer.get("/staff/events").get_data(as_text=True)
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    viewer.get(older)
    with db.transaction(write=False) as session:
        views = list(
            session.execute(
                select(StaffAuditEntry).where(StaffAuditEntry.action == "event_log_view")
            ).scalars()
        )
    assert [(v.staff_email, v.row_count) for v in views] == [
        ("viewer@example.com", 50),
        ("viewer@example.com", 10),
    ]
    assert views[0].query is None and views[1].query["page"]


def test_an_interrupted_export_is_audited_before_and_after(app, db, client):
    """Finding 2: the audit row came after the last chunk; a client that hung up kept the
    data and left no row, and the "(interrupted)" branch could never run."""
    from app.reports import exports

    for i in range(3 * exports.CHUNK_ROWS):
        send_text(client, f"+1415556{i:04d}", "HELP")
    officer, _ = signed_in_client(app, db, "compliance")
    response = officer.get("/staff/events/export.csv")
    chunks = iter(response.response)
    taken = next(chunks) + next(chunks)  # the client reads a little of the file…
    assert b"HELP" in taken
    with db.transaction(write=False) as session:  # …and is on record before the end
        started = session.execute(
            select(StaffAuditEntry).where(StaffAuditEntry.action == "export_started")
        ).scalar_one()
    assert started.target == "events.csv" and started.staff_email == "compliance@example.com"
    response.close()  # …then hangs up (the server closes the generator)
    with db.transaction(write=False) as session:
        finished = session.execute(
            select(StaffAuditEntry).where(StaffAuditEntry.action == "export")
        ).scalar_one()
    assert finished.target == "events.csv (interrupted)"
    assert finished.query["started"] == started.id
    assert 0 < finished.row_count < 3 * exports.CHUNK_ROWS


def test_timeline_views_are_audited_for_every_role(app, db, history):
    sid = subscriber_id(db)
    for role in ("viewer", "compliance"):
        client, _ = signed_in_client(app, db, role)
        client.get(f"/staff/subscribers/{sid}")
    with db.transaction(write=False) as session:
        viewers = session.execute(
            select(StaffAuditEntry.staff_email).where(StaffAuditEntry.action == "timeline_view")
        ).scalars()
        assert set(viewers) == {"viewer@example.com", "compliance@example.com"}
