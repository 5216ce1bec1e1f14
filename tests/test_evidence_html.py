"""The printable evidence bundle (app.reports.evidence.render_evidence_html, app/templates/
evidence.html) and its download: the number texted, readable UTC times, plain words, correct
plurals, how to verify it, and a file name that does not give the number away."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.store.db import utcnow
from app.store.models import Subscriber
from tests.staff_helpers import signed_in_client
from tests.twilio_helpers import SHORT_CODE, send_text

PHONE = "+14155550123"


def download(app, db, client, bodies, fmt="html"):
    for body in bodies:
        send_text(client, PHONE, body)
    staff, _ = signed_in_client(app, db, "compliance", email=f"officer-{fmt}@example.com")
    with db.transaction(write=False) as session:
        sid = session.execute(select(Subscriber.id).where(Subscriber.phone == PHONE)).scalar_one()
    return staff.get(f"/staff/subscribers/{sid}/evidence.{fmt}")


def test_the_bundle_reads_as_a_document(app, db, client):
    response = download(app, db, client, ["JOIN"])
    html = response.get_data(as_text=True)
    assert f"They texted {SHORT_CODE}:" in html and f"Number texted: {SHORT_CODE}" in html
    assert "1 event checked" in html and "1 events" not in html  # plurals
    assert re.search(r"#1 · \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · Text from the subscriber", html)
    assert not re.search(r"\d\d:\d\d:\d\d\.\d+Z", html)  # no raw ISO times
    assert "Every time in this bundle is in UTC" in html
    assert "never subscribed → joined, awaiting YES" in html
    assert "Disclosure in force" in html and "Disclosure shown" not in html


def test_the_bundle_says_how_to_verify_it(app, db, client):
    html = download(app, db, client, ["JOIN", "YES"]).get_data(as_text=True)
    section = html[html.index('id="how-to-verify"') :]
    assert "python3 tools/verify_bundle.py BUNDLE.json --key ledger-public-key.pem" in section
    assert "flask --app app ledger public-key" in section
    assert app.extensions["ledger_key"].fingerprint in section


def test_the_file_is_named_after_the_masked_number_and_the_day(app, db, client):
    for fmt in ("html", "json"):
        response = download(app, db, client, [] if fmt == "json" else ["JOIN"], fmt)
        name = re.search(r'filename="([^"]+)"', response.headers["Content-Disposition"])[1]
        assert name == f"evidence-1-xxxx-23-{utcnow().date().isoformat()}.{fmt}"
        assert "0123" not in name


def test_timeline_and_bundle_use_one_word_for_the_disclosure(app, db, client):
    send_text(client, PHONE, "HELP")
    staff, _ = signed_in_client(app, db, "compliance")
    with db.transaction(write=False) as session:
        sid = session.execute(select(Subscriber.id).where(Subscriber.phone == PHONE)).scalar_one()
    timeline = staff.get(f"/staff/subscribers/{sid}").get_data(as_text=True)
    bundle = staff.get(f"/staff/subscribers/{sid}/evidence.html").get_data(as_text=True)
    assert "Disclosure shown" not in timeline and "Disclosure shown" not in bundle
    assert ("Disclosure in force" in timeline) == ("Disclosure in force" in bundle)
