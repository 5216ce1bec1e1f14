"""CLI commands of the consent ledger: verify, checkpoint, public key, evidence; and the clock.

`ledger verify`, `ledger checkpoint` and `ledger public-key` join the `ledger`
group in `app.cli.register`; `evidence` and `clock` are top-level commands.
Thin edges: settings in, one service call, a report out.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path

import click
from flask.cli import with_appcontext

from app import context
from app.consent.holds import HoldPolicy
from app.core.phones import normalize_sender, parse_phone
from app.ledger.chain import record_checkpoint, verify_ledger
from app.ledger.checkpoints import (
    CheckpointDirectory,
    CheckpointError,
    CheckpointResult,
    LedgerAnchors,
    write_checkpoint,
)
from app.ledger.inclusion import anchoring_for
from app.ledger.signing import LedgerKey
from app.reports.evidence import build_evidence, render_evidence_html

logger = logging.getLogger(__name__)

# `ledger checkpoint` wrote the checkpoint but the timestamp authority gave no token.
EXIT_TIMESTAMP_MISSING = 3


def require_key() -> LedgerKey:
    key = context.ledger_key()
    if key is None:
        raise click.ClickException(
            "LEDGER_SIGNING_KEY is not set: checkpoints are signed with it (see docs/deployment.md)"
        )
    return key


def checkpoint_once() -> CheckpointResult:
    """Write one checkpoint with the app's settings."""
    settings = context.settings()
    return write_checkpoint(
        context.database(),
        require_key(),
        CheckpointDirectory(settings.ledger_checkpoint_dir),
        tsa_url=settings.ledger_tsa_url,
    )


@click.command("checkpoint")
@with_appcontext
def ledger_checkpoint() -> None:
    """Sign the ledger's Merkle tree head and append it to LEDGER_CHECKPOINT_DIR.

    The last line is `checkpoint: <tree size> <root hash hex>`. Exit 1 when no
    checkpoint may be signed (the database disagrees with the last one); exit 3
    when it was written but LEDGER_TSA_URL gave no timestamp.
    """
    try:
        result = checkpoint_once()
    except CheckpointError as error:
        raise click.ClickException(str(error)) from error
    if result.path is None:
        click.echo(f"no new events since {result.previous.describe()}")
    else:
        since = f" since {result.previous.size:,}" if result.previous else ""
        click.echo(
            f"appended {result.path} ({result.size:,} events, "
            f"{result.size - (result.previous.size if result.previous else 0):,} new{since}) "
            f"in {result.seconds:.2f}s"
        )
    if result.timestamp_path:
        click.echo(f"timestamp: {result.timestamp_path}")
    if result.timestamp_error:
        click.echo(f"warning: no timestamp from LEDGER_TSA_URL: {result.timestamp_error}", err=True)
    click.echo(f"checkpoint: {result.size} {result.root.hex()}")
    if result.timestamp_error:
        sys.exit(EXIT_TIMESTAMP_MISSING)


@click.command("public-key")
@with_appcontext
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["pem", "note"]),
    default="pem",
    show_default=True,
    help="pem: SubjectPublicKeyInfo; note: the signed-note verifier key (name+id+key).",
)
def ledger_public_key(fmt: str) -> None:
    """Print the key that verifies the ledger's checkpoints (give it to whoever checks them)."""
    key = require_key()
    click.echo(key.public_pem() if fmt == "pem" else key.note_verifier_key(), nl=fmt != "pem")
    click.echo(f"fingerprint (SHA-256): {key.fingerprint}; log origin: {key.origin}", err=True)


@click.command("clock")
@with_appcontext
@click.option(
    "--retention-every",
    "retention_hours",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    help="Hours between retention runs.",
)
@click.option(
    "--checkpoint-every",
    "checkpoint_minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Minutes between ledger checkpoints (default: LEDGER_CHECKPOINT_MINUTES).",
)
def clock_command(retention_hours: float, checkpoint_minutes: float | None) -> None:
    """The Procfile's clock: retention and ledger checkpoints on their schedules, until SIGTERM."""
    from app.cli import run_retention_once
    from app.clock import Job, run_clock
    from app.outbox.worker import StopFlag

    settings = context.settings()
    minutes = checkpoint_minutes or settings.ledger_checkpoint_minutes
    jobs = [Job("retention", retention_hours * 3600, lambda: run_retention_once(1000))]
    if context.ledger_key() is None:
        logger.warning("LEDGER_SIGNING_KEY is not set: the clock writes no ledger checkpoints")
    else:
        jobs.append(Job("checkpoint", minutes * 60, _clock_checkpoint))
    stop = StopFlag()

    def _stop(_signum, _frame):
        stop.set()  # a flag only: the job in hand finishes on its own

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logger.info(
        "clock: retention every %g h, checkpoints every %g min",
        retention_hours,
        minutes,
    )
    run_clock(jobs, stop)
    logger.info("clock: stopped")


def _clock_checkpoint() -> None:
    result = checkpoint_once()
    extra = {"tree_size": result.size, "root_hash": result.root.hex()}
    if result.path is None:
        logger.info("ledger checkpoint: no new events", extra=extra)
    else:
        extra["file"] = str(result.path)
        logger.info("ledger checkpoint written: %s", result.path.name, extra=extra)
    if result.timestamp_error:
        logger.warning("ledger checkpoint without timestamp: %s", result.timestamp_error)


@click.command("verify")
@with_appcontext
@click.option("--quiet", is_flag=True, help="No progress display.")
def ledger_verify(quiet: bool) -> None:
    """Exit 0 when the consent ledger is intact; else exit 1 naming the first bad event.

    Also checks the ledger against every checkpoint published in LEDGER_CHECKPOINT_DIR.
    """
    database = context.database()
    checkpoint_dir = context.settings().ledger_checkpoint_dir
    anchors = LedgerAnchors(CheckpointDirectory(checkpoint_dir), context.ledger_key())
    started = time.monotonic()
    show_progress = not quiet

    def progress(done: int, total: int) -> None:
        if show_progress and total:
            rate = done / max(time.monotonic() - started, 1e-6)
            click.echo(
                f"\rverified {done:,}/{total:,} events ({done * 100 // total}%, {rate:,.0f}/s)",
                err=True,
                nl=done >= total,
            )

    with database.transaction(write=False) as session:
        result = verify_ledger(
            session,
            progress=progress,
            anchors=anchors,
            suppression_key=context.settings().suppression_hmac_key,
        )
    with database.transaction() as session:
        record_checkpoint(session, result)
    elapsed = time.monotonic() - started
    if result.ok:
        click.echo(
            f"ledger intact: {result.events:,} events in {result.subscribers:,} chains "
            f"verified in {elapsed:.1f}s ({result.redacted:,} with personal data removed)"
        )
        report = result.anchors
        if report and report.newest:
            click.echo(
                f"matches all {report.checkpoints:,} published checkpoints; the newest is "
                f"{report.newest.describe()}"
            )
        else:
            click.echo(
                f"no published checkpoint in {checkpoint_dir} yet: "
                "run `flask --app app ledger checkpoint`"
            )
        return
    click.echo(f"LEDGER VERIFICATION FAILED: {result.message}", err=True)
    if result.first_bad_event_id is not None:
        click.echo(f"first bad event: {result.first_bad_event_id}", err=True)
    sys.exit(1)


@click.command("evidence")
@with_appcontext
@click.argument("phone")
@click.option("--format", "fmt", type=click.Choice(["json", "html"]), default="json")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--checkpoint/--no-checkpoint",
    "checkpoint_first",
    default=True,
    show_default=True,
    help="First write a ledger checkpoint when some of the number's events are not yet in one.",
)
def evidence_command(phone: str, fmt: str, output: Path | None, checkpoint_first: bool) -> None:
    """The consent evidence bundle of one number, with inclusion proofs to a signed checkpoint."""
    settings = context.settings()
    e164 = parse_phone(phone) or normalize_sender(phone)

    def build():
        anchoring = anchoring_for(settings.ledger_checkpoint_dir, context.ledger_key())
        with context.database().transaction(write=False) as session:
            return build_evidence(
                session,
                e164,
                anchoring=anchoring,
                holds=HoldPolicy(context.programs(), context.settings().review_holds_sends),
            )

    bundle = build()
    if bundle is None:
        raise click.ClickException(f"no consent history for {phone}")
    if checkpoint_first and bundle["transparency"]["not_anchored"] and context.ledger_key():
        try:
            checkpoint_once()
        except CheckpointError as error:
            click.echo(f"warning: no checkpoint written: {error}", err=True)
        bundle = build()
    if bundle["transparency"]["message"]:
        click.echo(f"note: {bundle['transparency']['message']}", err=True)
    if fmt == "json":
        content = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    else:
        content = render_evidence_html(bundle)
    if output:
        output.write_text(content, encoding="utf-8")
        click.echo(f"wrote {output} ({len(bundle['events'])} events)", err=True)
    else:
        click.echo(content, nl=False)
    if not bundle["verification"]["ok"]:
        click.echo(f"warning: {bundle['verification']['message']}", err=True)
        sys.exit(1)
