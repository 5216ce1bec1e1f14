"""Logs at INFO and above carry ids, never message bodies or full phone numbers.

One test drives every path that logs: signed webhooks (JOIN, YES, HELP, STOP and
a text flagged for review), the sender through the real twilio client with its
HTTP mocked by `responses`, status callbacks (one a carrier opt-out), the staff
console (sign-in, dashboard, search by number, timeline, unmasking, a review
decision, exports, evidence) and the JSON API. Every record at INFO and above
is captured twice, as pytest's caplog sees it (message and `extra` fields) and
formatted by the app's own `ContextFormatter`, and neither may contain a body
we received, a reply we sent, or a full number in E.164 or national digits.
See docs/reliability.md, "Hostile input".
"""

from __future__ import annotations

import io
import logging

import responses
from sqlalchemy import select

from app import ContextFormatter
from app.access.tokens import create_api_token
from app.outbox.twilio_gateway import TwilioGateway
from app.store.models import OutboundMessage
from tests.staff_helpers import page_csrf, signed_in_client
from tests.test_sender import MESSAGES_URL, make_sender
from tests.twilio_helpers import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    post_signed,
    send_text,
    status_params,
)

PHONES = ["+14155550163", "+447700900461"]
BODIES = [
    "JOIN",
    "YES",
    "HELP quokka-marmalade",
    "We have got to stop this zeppelin-harmonica bill",
    "STOP texting me about the walrus-umbrella",
]


def national_forms(phone: str) -> list[str]:
    digits = phone.lstrip("+")
    return [phone, digits, digits[1:] if phone.startswith("+1") else digits[2:]]


def test_logs_at_info_carry_no_bodies_and_no_full_numbers(app, client, db, caplog):
    formatted = io.StringIO()
    handler = logging.StreamHandler(formatted)
    handler.setFormatter(ContextFormatter("%(levelname)s %(name)s %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with (
            caplog.at_level(logging.INFO),
            responses.RequestsMock(assert_all_requests_are_fired=False) as mocked,
        ):
            drive_every_logging_path(app, client, db, mocked)
    finally:
        root.removeHandler(handler)

    with db.transaction(write=False) as session:
        replies = set(session.execute(select(OutboundMessage.body)).scalars())
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    captured = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    output = formatted.getvalue()
    assert len(records) > 20 and "message_sid=" in output  # the run really logged ids
    secrets = [b for b in BODIES if len(b) > 4] + sorted(replies) + ["zeppelin", "walrus"]
    secrets += [form for phone in PHONES for form in national_forms(phone)]
    for secret in secrets:
        assert secret not in captured, secret
        assert secret not in output, secret


def drive_every_logging_path(app, client, db, mocked):
    # Inbound texts, every flow.
    for phone in PHONES:
        for body in BODIES:
            response, _ = send_text(client, phone, body)
            assert response.status_code == 200

    # The sender, through the real twilio client; the first send is refused (invalid To).
    sids = iter(f"SM{i:032x}" for i in range(1, 100))
    mocked.post(
        MESSAGES_URL,
        json={"code": 21211, "message": "The 'To' number is not valid", "status": 400},
        status=400,
    )
    for _ in range(20):
        mocked.post(MESSAGES_URL, json={"sid": next(sids), "status": "queued"}, status=201)
    gateway = TwilioGateway(
        TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, api_base_url="https://api.twilio.com", timeout=5
    )
    sender = make_sender(app, gateway)
    while sender.process_one():
        pass

    # Status callbacks: delivered, undelivered, and a carrier opt-out.
    with db.transaction(write=False) as session:
        sent = list(
            session.execute(
                select(OutboundMessage.twilio_sid).where(OutboundMessage.twilio_sid.is_not(None))
            ).scalars()
        )
    assert len(sent) >= 3
    for sid, (status, code) in zip(
        sent, [("delivered", None), ("undelivered", "30003"), ("failed", "21610")], strict=False
    ):
        assert post_signed(client, "/twilio/status", status_params(sid, status, code)).status_code
    assert post_signed(client, "/twilio/status", status_params("SMunknown", "sent")).status_code

    # The staff console, compliance officer and admin.
    officer, _ = signed_in_client(app, db, "compliance")
    for path in (
        "/staff/",
        f"/staff/events?phone={PHONES[0]}",
        "/staff/events?phone=4155550163&text=zeppelin",
        "/staff/events/export.csv?phone=4155550163",
        "/staff/events/export.json",
        "/staff/review",
    ):
        assert officer.get(path).status_code == 200, path
    html = officer.get(f"/staff/events?phone={PHONES[0]}").get_data(as_text=True)
    subscriber_path = html.split('href="/staff/subscribers/')[1].split('"')[0]
    for suffix in ("", "?unmask=1", "/evidence.json", "/evidence.html"):
        officer.get(f"/staff/subscribers/{subscriber_path}{suffix}")
    review = officer.get("/staff/review").get_data(as_text=True)
    event_id = review.split('action="/staff/review/')[1].split('"')[0]
    officer.post(
        f"/staff/review/{event_id}",
        data={
            f"e{event_id}-decision": "opt_out",
            f"e{event_id}-reason": "zeppelin reads as a stop",
            "csrf_token": page_csrf(officer, "/staff/review"),
        },
    )
    admin, _ = signed_in_client(app, db, "admin")
    assert admin.get("/staff/admin/audit").status_code == 200

    # The JSON API.
    with db.transaction() as session:
        _, token = create_api_token(session, "log-test")
    headers = {"Authorization": f"Bearer {token}"}
    for path in (
        f"/api/v1/subscribers/{PHONES[1]}",
        f"/api/v1/events?phone={PHONES[0]}",
        f"/api/v1/messages?phone={PHONES[1]}",
        "/api/v1/subscribers/not-a-phone",
    ):
        assert client.get(path, headers=headers).status_code in (200, 400), path
    app.test_cli_runner().invoke(args=["ledger", "verify"])


def test_gunicorns_access_log_carries_no_numbers_and_no_enrolment_tokens(database_url, tmp_path):
    """Finding 8: `GET /api/v1/subscribers/<phone>` put the full number in the access log, beyond
    erasure's reach. gunicorn runs for real with gunicorn.conf.py; its access lines must keep the
    route but not the number (in any form), the query string, or an enrolment link's token."""
    import json
    import subprocess
    import sys

    import requests

    from tests.servers import PROJECT, free_port, gunicorn, service_env

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(database_url, base, tmp_path, LOG_FORMAT="json", WEB_CONCURRENCY="1")
    token = (
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", "api-token", "create", "log-test"],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    enrol = (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "app",
                "staff",
                "create",
                "v@example.com",
                "--role",
                "viewer",
            ],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
        .removeprefix("enrol: ")
    )
    log = tmp_path / "web.log"
    headers = {"Authorization": f"Bearer {token}"}
    with gunicorn(env, port, log):
        for path in (
            f"/api/v1/subscribers/{PHONES[0]}",
            "/api/v1/subscribers/1%20(415)%20555-0163",
            f"/api/v1/subscribers/{PHONES[1].lstrip('+')}",
            f"/api/v1/events?phone={PHONES[0]}",
            f"/staff/events?phone={PHONES[1]}",
        ):
            requests.get(base + path, headers=headers, timeout=10)
        requests.get(enrol, timeout=10)
    access = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if line.startswith("{") and '"gunicorn.access"' in line
    ]
    assert len(access) >= 6, log.read_text()
    paths = {entry["path"] for entry in access}
    assert "/api/v1/subscribers/<redacted>" in paths and "/staff/enrol/<redacted>" in paths
    text = log.read_text()
    enrol_token = enrol.rsplit("/", 1)[-1]
    for secret in [form for phone in PHONES for form in national_forms(phone)] + [
        "555-0163",
        "%20555",
        enrol_token,
        token,
    ]:
        assert secret not in text, secret
