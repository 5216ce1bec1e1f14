"""Flask CLI commands (`flask --app app …`): thin edges that parse, call one service, commit."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import click
import requests
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from app import cli_ledger, context
from app.core.phones import parse_phone
from app.store.models import FINAL_MESSAGE_STATUSES, ConsentEvent, OutboundMessage

db_cli = AppGroup("db", help="Database schema.")
ledger_cli = AppGroup("ledger", help="The consent ledger.")
programs_cli = AppGroup("programs", help="The programs file.")
api_token_cli = AppGroup("api-token", help="API bearer tokens.")
staff_cli = AppGroup("staff", help="Staff accounts for the console.")
retention_cli = AppGroup("retention", help="Remove personal data the policy no longer keeps.")

logger = logging.getLogger(__name__)


def register(app: Flask) -> None:
    """Attach every command group to `app`."""
    for command in (
        cli_ledger.ledger_verify,
        cli_ledger.ledger_checkpoint,
        cli_ledger.ledger_public_key,
    ):
        ledger_cli.add_command(command)
    for group in (db_cli, ledger_cli, programs_cli, api_token_cli, staff_cli, retention_cli):
        app.cli.add_command(group)
    for command in (
        cli_ledger.clock_command,
        cli_ledger.evidence_command,
        worker_command,
        simulate_command,
        erase_command,
        import_command,
    ):
        app.cli.add_command(command)


@db_cli.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema."""
    from app.store.migrate import upgrade

    url = context.settings().database_url
    click.echo(f"Migrating {_redact_url(url)} to {revision} …")
    upgrade(url, revision)
    click.echo("Database is up to date.")


def _redact_url(url: str) -> str:
    """A database URL without its password, for output."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return (
            f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"
        )
    return url


@click.command("worker")
@with_appcontext
@click.option("--once", is_flag=True, help="Send what is due now, then exit.")
def worker_command(once: bool) -> None:
    """Run the sender until SIGTERM; then finish the messages in hand and exit."""
    from app.outbox.worker import Sender, StopFlag

    settings = context.settings()
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    sender = Sender(
        context.database(),
        context.sms_gateway(),
        settings,
        context.programs(),
        worker_id=worker_id,
    )
    if once:
        sent = 0
        while sender.process_one():
            sent += 1
        click.echo(f"processed {sent} message(s)")
        return

    stop = StopFlag()

    def _stop(_signum, _frame):
        # Only a flag: a signal handler must take no lock and write nothing, or a second
        # signal arriving inside it deadlocks the worker (threading.Event.set takes a lock).
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # Through the log, so these lines are JSON like every other one (LOG_FORMAT).
    logger.info(
        "worker %s: sending through the %s backend at up to %g msg/s with %d thread(s)",
        worker_id,
        settings.sms_backend,
        settings.sender_mps,
        settings.sender_threads,
        extra={"worker_id": worker_id},
    )
    if settings.sms_backend == "twilio" and not settings.public_base_url:
        logger.warning(
            "PUBLIC_BASE_URL is not set, so replies go out without a StatusCallback "
            "and delivery statuses will not be recorded"
        )
    sender.run(stop)
    # Stopped: more signals (a shell's `kill 0` may send a stream of them) change nothing
    # now, and must not kill the interpreter while it shuts down.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logger.info("worker %s: stopped", worker_id, extra={"worker_id": worker_id})


@retention_cli.command("run")
@click.option(
    "--every",
    "every_hours",
    type=click.FloatRange(min=0, min_open=True),
    help="Run again every HOURS until SIGTERM (a Procfile `clock:` process); default: once.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True)
def retention_run(every_hours: float | None, batch_size: int) -> None:
    """Apply the retention policy (RETENTION_BODY_DAYS, EVIDENCE_RETENTION_YEARS) and report.

    `flask --app app clock` runs it daily together with the ledger checkpoints.
    """
    from app.outbox.worker import StopFlag

    stop = StopFlag()
    if every_hours:

        def _stop(_signum, _frame):
            stop.set()  # a flag only; the batch in hand commits or rolls back on its own

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    while True:
        run_retention_once(batch_size)
        if not every_hours or stop.wait(every_hours * 3600):
            return


def run_retention_once(batch_size: int) -> None:
    """One retention pass with the app's settings, its report echoed."""
    from app.privacy.retention import RetentionPolicy, run_retention
    from app.store.db import utcnow

    settings = context.settings()
    policy = RetentionPolicy(settings.retention_body_days, settings.evidence_retention_years)
    click.echo(
        f"retention: message bodies kept {policy.body_days} days, consent evidence "
        f"{policy.evidence_years} years; ledger rows are never deleted"
    )
    report = run_retention(context.database(), policy, utcnow(), batch_size=batch_size)
    for line in report.lines():
        click.echo(line)


@click.command("erase")
@with_appcontext
@click.argument("phone")
@click.option("--reason", required=True, help="Why (e.g. the request's ticket); no phone numbers.")
@click.option("--actor", default=None, help="Who carries out the request; default: the OS user.")
@click.option(
    "--keep-twilio-copies",
    is_flag=True,
    help="Do not delete Twilio's copies of the number's messages (done by default).",
)
def erase_command(phone: str, reason: str, actor: str | None, keep_twilio_copies: bool) -> None:
    """Erase a number's personal data at its owner's request; keep a suppression entry.

    Then, with the Twilio backend, delete Twilio's copies of the number's texts and
    of our replies. Exit 0 when all is done; 3 when the erasure is done here but some
    copies remain at Twilio (their SIDs are printed: delete them in Twilio's console).
    """
    from app.privacy.erasure import ErasureError, erase_number
    from app.store.db import utcnow

    e164 = parse_phone(phone)
    if e164 is None or not e164.startswith("+"):
        raise click.ClickException(f"not a phone number: {phone!r}")
    actor = actor or f"cli:{os.environ.get('USER') or os.environ.get('USERNAME') or 'unknown'}"
    database = context.database()
    try:
        # An erasure is an opt-out: on SQLite it waits for a reply in flight to the number.
        with database.number_guard(e164, exclusive=True), database.transaction() as session:
            result = erase_number(
                session,
                phone=e164,
                reason=reason,
                actor=actor,
                key=context.settings().suppression_hmac_key,
                now=utcnow(),
            )
    except ErasureError as error:
        raise click.ClickException(str(error)) from error
    if not result.known:
        click.echo("the number had no history here; it is now on the suppression list")
    click.echo(
        f"erased: ledger event {result.event_id} records it; personal data removed from "
        f"{result.events_redacted} ledger event(s) and {result.messages_redacted} reply(ies); "
        f"suppression entry {result.phone_hmac[:12]}…"
    )
    if keep_twilio_copies or not result.twilio_sids:
        return
    if context.settings().sms_backend != "twilio":
        click.echo("Twilio's copies: not deleted (the SMS backend is not twilio)")
        return
    remaining = _delete_twilio_copies(context.sms_gateway(), result.twilio_sids)
    if remaining:
        click.echo(
            f"Twilio's copies: {len(remaining)} could not be deleted; delete them in Twilio's "
            "console: " + ", ".join(remaining),
            err=True,
        )
        raise SystemExit(3)


def _delete_twilio_copies(gateway, sids: tuple[str, ...]) -> list[str]:
    """Delete each message at Twilio; print the counts; return the SIDs still there."""
    from app.outbox.twilio_gateway import SmsSendError

    deleted = absent = 0
    remaining: list[str] = []
    for sid in sids:
        try:
            if gateway.delete_message(sid):
                deleted += 1
            else:
                absent += 1
        except SmsSendError as error:
            logger.warning(
                "Twilio's copy of a message not deleted",
                extra={
                    "message_sid": sid,
                    "error_code": error.code,
                    "http_status": error.http_status,
                },
            )
            remaining.append(sid)
    click.echo(
        f"Twilio's copies: {deleted} deleted, {absent} already gone, {len(remaining)} not deleted"
    )
    return remaining


@click.command("import")
@with_appcontext
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--source", required=True, help="Where the list and its evidence came from.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the per-row report to this CSV file.",
)
def import_command(file: Path, source: str, report_path: Path | None) -> None:
    """Import a subscriber list with its consent evidence (CSV; see the README).

    Exit 0 when every row was imported or already there, 1 when any row was
    rejected (the others are imported), 2 when the file cannot be read at all.
    """
    import csv

    from app.consent.importer import REJECTED, ImportFileError, import_file
    from app.store.db import utcnow

    try:
        data = file.read_bytes()
        report = import_file(
            context.database(),
            data,
            context.programs(),
            source=source,
            key=context.settings().suppression_hmac_key,
            now=utcnow(),
            region=context.settings().phone_default_region,
        )
    except (OSError, ImportFileError) as error:
        click.echo(f"import failed, nothing imported: {error}", err=True)
        sys.exit(2)
    for row in report.rows:
        detail = f" (event {row.event_id})" if row.event_id else ""
        reason = f": {row.reason}" if row.reason and row.outcome == REJECTED else ""
        click.echo(f"line {row.line}: {row.outcome}{detail}{reason}")
    if report_path:
        with report_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["line", "outcome", "event_id", "reason"])
            for row in report.rows:
                writer.writerow([row.line, row.outcome, row.event_id or "", row.reason or ""])
    click.echo(report.summary())
    if report.rejected:
        sys.exit(1)


@programs_cli.command("check")
def programs_check() -> None:
    """Lint every program text against the carrier rules; exit 1 on a violation."""
    from app.core.programs import lint_catalog

    settings = context.settings()
    catalog = context.programs()
    issues = lint_catalog(catalog)
    click.echo(f"{settings.programs_file}: {len(catalog.programs)} program(s)")
    for issue in issues:
        click.echo(f"  violation: {issue}")
    if issues:
        click.echo(f"{len(issues)} violation(s)", err=True)
        sys.exit(1)
    click.echo("all texts pass the carrier rules")


@api_token_cli.command("create")
@click.argument("name")
def api_token_create(name: str) -> None:
    """Create an API token; it is printed once, as the last line."""
    from app.access.tokens import create_api_token

    with context.database().transaction() as session:
        row, token = create_api_token(session, name)
    click.echo(f"created API token {row.id} ({name}); store it now, it is not shown again:")
    click.echo(token)


@staff_cli.command("create")
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice(["viewer", "compliance", "admin"]),
    required=True,
    help="viewer: masked numbers, no export; compliance: unmask, export, review; "
    "admin: also accounts and tokens.",
)
def staff_create(email: str, role: str) -> None:
    """Create a staff account; its password (and TOTP secret) are printed once, last."""
    from app.access.accounts import AccountError, create_account, provisioning_uri
    from app.access.audit import STAFF_CREATE, record_access
    from app.store.db import utcnow

    now = utcnow()
    try:
        with context.database().transaction() as session:
            account = create_account(session, email, role, now)
            record_access(
                session,
                staff=None,
                staff_email="cli",
                action=STAFF_CREATE,
                at=now,
                target=account.user.email,
                query={"role": role},
            )
    except AccountError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"created {role} account {account.user.email}; store these now, they are not shown again"
    )
    if account.totp_secret:
        click.echo(
            f"authenticator app URI (or scan it as a QR code): {provisioning_uri(account.user)}"
        )
    click.echo(f"password: {account.password}")
    if account.totp_secret:
        click.echo(f"totp-secret: {account.totp_secret}")


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
