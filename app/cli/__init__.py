"""Flask CLI commands (`flask --app app …`): thin edges that parse, call one service, commit."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from app import context
from app.cli.db import db_cli
from app.core.phones import parse_phone
from app.outbox.twilio_gateway import SmsGateway

ledger_cli = AppGroup("ledger", help="The consent ledger.")
programs_cli = AppGroup("programs", help="The programs file.")
retention_cli = AppGroup("retention", help="Remove personal data the policy no longer keeps.")

logger = logging.getLogger(__name__)


def register(app: Flask) -> None:
    """Attach every command group to `app`."""
    from app.cli import ledger as ledger_commands
    from app.cli.access import GROUPS as ACCESS_GROUPS
    from app.cli.rules import rules_cli

    for command in (
        ledger_commands.ledger_verify,
        ledger_commands.ledger_checkpoint,
        ledger_commands.ledger_public_key,
    ):
        ledger_cli.add_command(command)
    for group in (db_cli, ledger_cli, programs_cli, retention_cli, rules_cli, *ACCESS_GROUPS):
        app.cli.add_command(group)
    from app.cli.simulate import simulate_command

    for command in (
        ledger_commands.clock_command,
        ledger_commands.evidence_command,
        worker_command,
        simulate_command,
        erase_command,
        import_command,
    ):
        app.cli.add_command(command)


@click.command("worker")
@with_appcontext
@click.option("--once", is_flag=True, help="Send what is due now, then exit.")
def worker_command(once: bool) -> None:
    """Run the sender until SIGTERM; then finish the messages in hand and exit."""
    from app.outbox.worker import Sender, StopFlag

    settings = context.settings()
    settings.suppression_keyring.check_at_start()  # a wrong SUPPRESSION_KEY stops it here
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
    from app.privacy.erasure import ErasureError, erase
    from app.store.db import utcnow

    e164 = parse_phone(phone)
    if e164 is None or not e164.startswith("+"):
        raise click.ClickException(f"not a phone number: {phone!r}")
    actor = actor or f"cli:{os.environ.get('USER') or os.environ.get('USERNAME') or 'unknown'}"
    database = context.database()
    try:
        result = erase(
            database,
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


def _delete_twilio_copies(gateway: SmsGateway, sids: tuple[str, ...]) -> list[str]:
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
    from app.core.phones import contains_phone_number
    from app.store.db import utcnow

    if contains_phone_number(source, region=context.settings().phone_default_region):
        # The source is every imported event's actor and note, kept in the ledger for good.
        click.echo(
            "import failed, nothing imported: --source must not hold a phone number", err=True
        )
        sys.exit(2)
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
    from app.core.program_lint import lint_catalog

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
