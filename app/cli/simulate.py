"""`flask --app app simulate FROM BODY`: a correctly signed inbound text to a running server."""

from __future__ import annotations

import os
import sys
import time

import click
import requests
from flask.cli import with_appcontext
from sqlalchemy import select

from app import context
from app.store.models import FINAL_MESSAGE_STATUSES, ConsentEvent, OutboundMessage


@click.command("simulate")
@with_appcontext
@click.argument("from_number", metavar="FROM")
@click.argument("body")
@click.option("--to", "to_number", help="The number texted (default: the first program's).")
@click.option("--url", help="The running server (default http://127.0.0.1:$PORT or :5000).")
@click.option("--wait", default=10.0, show_default=True, help="Seconds to wait for replies.")
def simulate_command(
    from_number: str, body: str, to_number: str | None, url: str | None, wait: float
) -> None:
    """Post a correctly signed inbound webhook to a running server and print its replies."""
    _simulate(from_number, body, to_number, url, wait)


def _default_to_number() -> str:
    for program in context.programs().programs:
        if program.numbers:
            return program.numbers[0]
    return "12345"


def _simulate(from_number: str, body: str, to_number: str | None, url: str | None, wait: float):
    import uuid

    from twilio.request_validator import RequestValidator

    settings = context.settings()
    server = (url or f"http://127.0.0.1:{os.environ.get('PORT', '5000')}").rstrip("/")
    to_number = to_number or _default_to_number()
    message_sid = "SM" + uuid.uuid4().hex
    params = {
        "MessageSid": message_sid,
        "SmsMessageSid": message_sid,
        "SmsSid": message_sid,
        "AccountSid": settings.twilio_account_sid or "AC" + "0" * 32,
        "From": from_number,
        "To": to_number,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    signed_url = (settings.public_base_url or server) + "/twilio/sms"
    signature = RequestValidator(settings.twilio_auth_token or "").compute_signature(
        signed_url, params
    )
    click.echo(f"→ POST {server}/twilio/sms  From={from_number} To={to_number} Body={body!r}")
    click.echo(f"  MessageSid {message_sid}, signed for {signed_url}")
    try:
        response = requests.post(
            server + "/twilio/sms",
            data=params,
            headers={"X-Twilio-Signature": signature},
            timeout=15,
        )
    except requests.RequestException as exc:
        raise click.ClickException(f"could not reach {server}: {exc}") from exc
    click.echo(f"← {response.status_code} {response.headers.get('Content-Type', '')}")
    if response.status_code != 200:
        click.echo(response.text[:500])
        sys.exit(1)

    database = context.database()
    deadline = time.monotonic() + wait
    event = None
    replies: list[OutboundMessage] = []
    while time.monotonic() < deadline:
        with database.transaction(write=False) as session:
            event = session.execute(
                select(ConsentEvent).where(ConsentEvent.message_sid == message_sid)
            ).scalar_one_or_none()
            if event is not None:
                replies = list(
                    session.execute(
                        select(OutboundMessage)
                        .where(OutboundMessage.event_id == event.id)
                        .order_by(OutboundMessage.id)
                    ).scalars()
                )
        waiting = [m for m in replies if m.status not in FINAL_MESSAGE_STATUSES | {"sent"}]
        if event is not None and not waiting:
            break
        time.sleep(0.2)
    if event is None:
        raise click.ClickException(
            "the server answered 200 but the event is not in this database; "
            "is the server using the same DATABASE_URL?"
        )
    change = f"{event.status_before} → {event.status_after}"
    click.echo(
        f"  understood: intent={event.intent} rule={event.rule} language={event.language} "
        f"program={event.program_id} status {change}"
        + ("  [flagged: possible opt-out]" if event.possible_opt_out else "")
    )
    if not replies:
        click.echo("  no reply")
    for message in replies:
        click.echo(f"  reply [{message.status}] {message.kind}: {message.body}")
