"""The ledger commands: checkpoint, public-key, verify against checkpoints, evidence; the clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import select

from app.clock import Job, run_clock
from app.core.signed_note import open_checkpoint
from app.ledger.checkpoints import CheckpointDirectory
from app.outbox.worker import StopFlag
from app.store.models import ConsentEvent, Subscriber
from tests.conftest import make_test_app
from tests.ledger_tampering import rewrite_history_without, tamper
from tests.tsa_server import running_tsa
from tests.twilio_helpers import send_text

PHONE = "+14155550100"


def texts(client, *bodies, phone=PHONE):
    for body in bodies:
        assert send_text(client, phone, body)[0].status_code == 200


def checkpoint_files(app):
    return CheckpointDirectory(app.extensions["settings"].ledger_checkpoint_dir).paths()


def test_checkpoint_prints_size_and_root_last(runner, client, app):
    texts(client, "JOIN", "YES")
    result = runner.invoke(args=["ledger", "checkpoint"])
    assert result.exit_code == 0, result.output
    size, root = result.output.strip().splitlines()[-1].removeprefix("checkpoint: ").split()
    (path,) = checkpoint_files(app)
    signed = open_checkpoint(path.read_bytes(), app.extensions["ledger_key"].public)
    assert (int(size), root) == (2, signed.checkpoint.root_hash.hex())
    again = runner.invoke(args=["ledger", "checkpoint"])
    assert "no new events since" in again.output
    assert again.output.strip().splitlines()[-1] == f"checkpoint: 2 {root}"
    assert len(checkpoint_files(app)) == 1


def test_checkpoint_without_a_signing_key_fails(database_url, tmp_path):
    app = make_test_app(database_url, tmp_path, sms_backend="twilio")
    try:
        result = app.test_cli_runner().invoke(args=["ledger", "checkpoint"])
        assert result.exit_code == 1 and "LEDGER_SIGNING_KEY is not set" in result.output
    finally:
        app.extensions["db"].dispose()


def test_checkpoint_exits_3_when_the_timestamp_authority_fails(database_url, tmp_path):
    with running_tsa() as tsa:
        tsa.mode = "error"
        app = make_test_app(database_url, tmp_path, ledger_tsa_url=tsa.url)
        try:
            texts(app.test_client(), "JOIN")
            result = app.test_cli_runner().invoke(args=["ledger", "checkpoint"])
        finally:
            app.extensions["db"].dispose()
    assert result.exit_code == 3
    assert "warning: no timestamp from LEDGER_TSA_URL: the TSA answered HTTP 500" in result.output
    assert result.stdout.strip().splitlines()[-1].startswith("checkpoint: 1 ")


def test_public_key_prints_the_pem_that_verifies_checkpoints(runner, client, app):
    texts(client, "JOIN")
    runner.invoke(args=["ledger", "checkpoint"])
    result = runner.invoke(args=["ledger", "public-key"])
    assert result.exit_code == 0
    assert result.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    key = load_pem_public_key(result.stdout.encode())
    (path,) = checkpoint_files(app)
    assert open_checkpoint(path.read_bytes(), key).checkpoint.size == 1
    assert app.extensions["ledger_key"].fingerprint in result.stderr
    note = runner.invoke(args=["ledger", "public-key", "--format", "note"]).stdout
    assert note.startswith(app.extensions["ledger_key"].origin + "+")


def test_verify_reports_the_checkpoints_then_fails_after_the_owner_rewrites(runner, client, db):
    texts(client, "JOIN", "YES", "STOP")
    texts(client, "JOIN", phone="+14155550101")
    first = runner.invoke(args=["ledger", "verify", "--quiet"])
    assert first.exit_code == 0
    assert "no published checkpoint" in first.output
    runner.invoke(args=["ledger", "checkpoint"])
    second = runner.invoke(args=["ledger", "verify", "--quiet"])
    assert second.exit_code == 0 and "matches all 1 published checkpoints" in second.output

    with db.transaction(write=False) as session:
        stop, yes = (
            session.execute(
                select(ConsentEvent.id)
                .join(Subscriber, Subscriber.id == ConsentEvent.subscriber_id)
                .where(Subscriber.phone == PHONE, ConsentEvent.intent == intent)
            ).scalar_one()
            for intent in ("opt_out", "confirm")
        )
    rewrite_history_without(db, stop)
    # The owner rewrites everything, the subscription too, so that nothing in the database
    # disagrees with anything else: only the published checkpoint can tell.
    tamper(
        db,
        "UPDATE subscriptions SET status = 'active', last_event_id = :yes "
        "WHERE last_event_id IS NULL OR last_event_id = :stop",
        yes=yes,
        stop=stop,
    )
    texts(client, "HELP", phone="+14155550101")
    result = runner.invoke(args=["ledger", "verify", "--quiet"])
    assert result.exit_code == 1
    assert "LEDGER VERIFICATION FAILED: the ledger no longer matches checkpoint" in result.output


def test_evidence_writes_a_checkpoint_first_so_every_event_is_anchored(runner, client, app):
    texts(client, "JOIN", "YES")
    result = runner.invoke(args=["evidence", PHONE, "--format", "html"])
    assert result.exit_code == 0
    assert len(checkpoint_files(app)) == 1
    assert "Anchored: leaf 0 of 2" in result.stdout
    assert "Transparency log" in result.stdout


def test_evidence_without_checkpoint_says_how_to_anchor(runner, client, app):
    texts(client, "JOIN")
    result = runner.invoke(args=["evidence", PHONE, "--no-checkpoint", "--format", "html"])
    assert result.exit_code == 0
    assert "flask --app app ledger checkpoint" in result.output
    assert "Not yet anchored" in result.stdout
    assert checkpoint_files(app) == []


def test_the_clock_runs_each_job_on_its_own_schedule_until_stopped():
    clock = [0.0]
    runs: list[str] = []
    stop = StopFlag()

    class FakeStop:
        def is_set(self):
            return stop.is_set()

        def wait(self, timeout):
            clock[0] += timeout
            if clock[0] > 7200:
                stop.set()
            return stop.is_set()

    def failing():
        runs.append("checkpoint")
        raise RuntimeError("TSA down")

    jobs = [
        Job("retention", 24 * 3600, lambda: runs.append("retention")),
        Job("checkpoint", 3600, failing),
    ]
    run_clock(jobs, FakeStop(), now=lambda: clock[0])
    # Both at start, then the checkpoint hourly; a failure does not stop the clock.
    assert runs == ["retention", "checkpoint", "checkpoint", "checkpoint"]


def test_the_clock_command_writes_checkpoints_and_runs_retention(runner, client, app, monkeypatch):
    texts(client, "JOIN")
    waits: list[float] = []

    def first_wait_stops(self, timeout):
        # SIGTERM sets the flag in production; here the first idle wait does.
        waits.append(timeout)
        self.set()
        return True

    monkeypatch.setattr(StopFlag, "wait", first_wait_stops)
    result = runner.invoke(args=["clock", "--checkpoint-every", "30"])
    assert result.exit_code == 0, result.output
    assert "retention: message bodies kept" in result.output
    assert len(checkpoint_files(app)) == 1
    assert 1790 < waits[0] <= 1800  # the next turn is the checkpoint's, 30 minutes on


@pytest.mark.e2e
def test_the_clock_process_checkpoints_and_stops_on_sigterm(tmp_path):
    """The Procfile's `clock:` as a real process: retention and a checkpoint at once, then
    it waits; SIGTERM ends it with exit 0."""
    from app.store.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'clock.sqlite3'}"
    upgrade(url)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "INSTANCE_DIR": str(tmp_path / "instance"),
        "SMS_BACKEND": "console",
        "SECRET_KEY": "clock-test",
        "LOG_FORMAT": "text",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "clock"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "ledger checkpoint written" in line:
                break
        assert any("staff sessions deleted" in line for line in lines), lines
        assert any("ledger checkpoint written" in line for line in lines), lines
        assert len(list((tmp_path / "instance" / "checkpoints").glob("*.checkpoint"))) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
