"""Signed checkpoints published outside the database, and `ledger verify` against them."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from rfc3161_client import (
    HashAlgorithm,
    TimestampRequestBuilder,
    VerifierBuilder,
    decode_timestamp_response,
)
from sqlalchemy import select, text

from app.core.merkle import root_of
from app.core.signed_note import Checkpoint, open_checkpoint, origin_for, sign_checkpoint
from app.ledger.chain import verify_ledger
from app.ledger.checkpoints import (
    CheckpointDirectory,
    CheckpointError,
    LedgerAnchors,
    write_checkpoint,
)
from app.ledger.signing import LedgerKey
from app.ledger.tree import event_leaf
from app.store.models import ConsentEvent, Subscriber
from tests.ledger_tampering import rewrite_history_without, tamper
from tests.tsa_server import running_tsa
from tests.twilio_helpers import send_text

VICTIM, OTHER, THIRD = "+14155550100", "+14155550101", "+14155550102"


def key_of(app) -> LedgerKey:
    return app.extensions["ledger_key"]


def directory_of(app) -> CheckpointDirectory:
    return CheckpointDirectory(app.extensions["settings"].ledger_checkpoint_dir)


def checkpoint(app, **kwargs):
    return write_checkpoint(app.extensions["db"], key_of(app), directory_of(app), **kwargs)


def verify(app, *, published: bool = True):
    """`ledger verify`: with the published checkpoints, or as the code before them did."""
    anchors = LedgerAnchors(directory_of(app), key_of(app)) if published else None
    with app.extensions["db"].transaction(write=False) as session:
        return verify_ledger(session, anchors=anchors)


def event_hashes(db) -> list[str]:
    with db.transaction(write=False) as session:
        return list(
            session.execute(select(ConsentEvent.event_hash).order_by(ConsentEvent.id)).scalars()
        )


@pytest.fixture
def texts(client):
    """Three numbers; the victim opts in, then opts out, and others keep texting after."""

    def send(phone, body):
        response, _ = send_text(client, phone, body)
        assert response.status_code == 200

    for phone, body in [
        (VICTIM, "JOIN"),
        (VICTIM, "YES"),
        (OTHER, "JOIN"),
        (VICTIM, "STOP"),
        (OTHER, "YES"),
        (THIRD, "JOIN"),
        (THIRD, "YES"),
        (OTHER, "HELP"),
    ]:
        send(phone, body)
    return send


def test_a_checkpoint_signs_the_merkle_root_of_every_event(app, db, texts):
    result = checkpoint(app)
    hashes = event_hashes(db)
    assert result.size == len(hashes) == 8
    signed = open_checkpoint(result.path.read_bytes(), key_of(app).public)
    assert signed.checkpoint.size == 8
    # Recomputed here from the events, independently of the code under test's tree.
    assert signed.checkpoint.root_hash == root_of(event_leaf(h) for h in hashes) == result.root
    assert signed.checkpoint.origin == key_of(app).origin
    assert abs(signed.timestamp - result.path.stat().st_mtime) < 60
    assert result.path.parent == app.extensions["settings"].ledger_checkpoint_dir


def test_checkpoints_only_append_and_grow(app, db, texts):
    first = checkpoint(app)
    again = checkpoint(app)
    assert again.path is None and again.size == 8  # nothing new: nothing written
    texts(THIRD, "STOP")
    second = checkpoint(app)
    assert second.size == 9 and second.previous.path == first.path
    assert first.path.read_bytes() == open(first.path, "rb").read()  # untouched
    assert [p.name for p in directory_of(app).paths()] == sorted(
        [first.path.name, second.path.name]
    )
    assert verify(app).ok


def test_a_checkpoint_file_is_never_overwritten(tmp_path):
    directory = CheckpointDirectory(tmp_path / "cps")
    at = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    first = directory.add(b"first\n", 5, at)
    second = directory.add(b"second\n", 5, at)
    assert first != second
    assert first.read_bytes() == b"first\n" and second.read_bytes() == b"second\n"


def test_a_rewrite_by_the_database_owner_fails_verify_against_the_published_checkpoint(
    app, db, texts
):
    """Issue 12, finding 3: triggers off, a STOP deleted, every later hash recomputed,
    chain heads fixed, a fresh "ok" verification row; the number is textable again."""
    published = checkpoint(app)
    with db.transaction(write=False) as session:
        victim = session.execute(select(Subscriber).where(Subscriber.phone == VICTIM)).scalar_one()
        stop_id, yes_id = session.execute(
            select(ConsentEvent.id)
            .where(ConsentEvent.subscriber_id == victim.id)
            .where(ConsentEvent.intent.in_(["opt_out", "confirm"]))
            .order_by(ConsentEvent.intent.desc())  # opt_out, then confirm
        ).scalars()
    rewrite_history_without(db, stop_id)
    tamper(
        db,
        "UPDATE subscriptions SET status = 'active', last_event_id = :yes "
        "WHERE subscriber_id = :victim",
        yes=yes_id,
        victim=victim.id,
    )

    # What the code before published checkpoints saw: an intact ledger.
    blind = verify(app, published=False)
    assert blind.ok, blind.message
    assert blind.events == 7

    result = verify(app)
    assert not result.ok
    assert published.path.name in result.message
    assert "covers 8 events but the ledger holds 7: events were deleted" in result.message

    # Once the ledger has grown past the checkpoint again, the root itself differs.
    texts(OTHER, "HELP")
    texts(THIRD, "HELP")
    assert verify(app, published=False).ok
    result = verify(app)
    assert not result.ok and "no longer matches" in result.message

    # Nor will the log sign the rewritten history.
    with pytest.raises(CheckpointError, match="no longer match"):
        checkpoint(app)


def test_deleting_events_at_the_tail_fails_verify(app, db, texts):
    checkpoint(app)
    with db.transaction(write=False) as session:
        last_id, phone = session.execute(
            select(ConsentEvent.id, Subscriber.phone)
            .join(Subscriber, Subscriber.id == ConsentEvent.subscriber_id)
            .order_by(ConsentEvent.id.desc())
            .limit(1)
        ).one()
    rewrite_history_without(db, last_id)
    assert verify(app, published=False).ok  # the fake "ok" row now ends one event earlier
    result = verify(app)
    assert not result.ok and "events were deleted" in result.message


def test_growth_after_a_checkpoint_is_consistent(app, db, texts):
    checkpoint(app)
    texts(VICTIM, "START")
    texts(OTHER, "STOP")
    result = verify(app)
    assert result.ok, result.message
    assert result.anchors.checkpoints == 1 and result.anchors.newest.size == 8


def test_a_forged_checkpoint_file_fails_verify(app, db, texts):
    checkpoint(app)
    forger = Ed25519PrivateKey.generate()
    # The forger cannot sign under our origin with our key: they sign their own root
    # under our origin's name with theirs, and put it where we publish.
    note = sign_checkpoint(
        Checkpoint(origin_for(forger.public_key()), 8, hashlib.sha256(b"x").digest()), forger, 1
    )
    note = note.replace(origin_for(forger.public_key()).encode(), key_of(app).origin.encode())
    directory_of(app).add(note, 8, datetime.now(UTC))
    result = verify(app)
    assert not result.ok and "forged or altered" in result.message


def test_an_altered_checkpoint_file_fails_verify(app, db, texts):
    path = checkpoint(app).path
    note = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(note.replace(b"\n8\n", b"\n7\n", 1))
    result = verify(app)
    assert not result.ok and path.name in result.message


def test_published_checkpoints_without_the_key_fail_verify(app, db, texts):
    checkpoint(app)
    anchors = LedgerAnchors(directory_of(app), None)
    with db.transaction(write=False) as session:
        result = verify_ledger(session, anchors=anchors)
    assert not result.ok and "LEDGER_SIGNING_KEY" in result.message


def test_no_published_checkpoint_yet_verifies(app, db, texts):
    result = verify(app)
    assert result.ok and result.anchors.checkpoints == 0


def test_a_timestamp_authority_stamps_each_checkpoint(app, db, texts):
    with running_tsa() as tsa:
        result = checkpoint(app, tsa_url=tsa.url)
    assert result.timestamp_error is None
    response = decode_timestamp_response(result.timestamp_path.read_bytes())
    verifier = VerifierBuilder().add_root_certificate(tsa.ca_cert).build()
    assert verifier.verify_message(response, result.path.read_bytes())
    assert verify(app).ok
    if shutil.which("openssl"):  # the command docs/deployment.md gives a relying party
        ca = result.path.parent.parent / "tsa-ca.pem"
        ca.write_bytes(tsa.ca_cert.public_bytes(Encoding.PEM))
        command = ["openssl", "ts", "-verify", "-data", str(result.path)]
        command += ["-in", str(result.timestamp_path), "-CAfile", str(ca)]
        checked = subprocess.run(command, capture_output=True, text=True)
        assert "Verification: OK" in checked.stdout, checked.stderr

    # A token about something else beside a checkpoint fails verify.
    with running_tsa() as tsa:
        tsa.mode = "wrong-imprint"
        request = TimestampRequestBuilder(b"something else", HashAlgorithm.SHA256).build()
        other = tsa.respond(request.as_bytes())
    result.timestamp_path.write_bytes(other)
    outcome = verify(app)
    assert not outcome.ok and "timestamp" in outcome.message


@pytest.mark.parametrize("mode", ["error", "reject", "wrong-imprint"])
def test_an_unusable_timestamp_authority_still_leaves_the_checkpoint(app, db, texts, mode):
    with running_tsa() as tsa:
        tsa.mode = mode
        result = checkpoint(app, tsa_url=tsa.url)
    assert result.path.exists() and result.timestamp_path is None
    assert result.timestamp_error
    assert not result.path.with_suffix(".tsr").exists()
    assert verify(app).ok


def test_the_checkpoint_waits_for_events_still_being_written(app, db):
    """PostgreSQL hands out ids at insert and shows rows at commit: a checkpoint taken while
    an older id is uncommitted must wait for it, or it would skip it for ever."""
    if not db.is_postgresql:
        pytest.skip("SQLite has one writer at a time: ids become visible in order")
    import threading
    import time

    from app.core.ledger_hashing import NewEvent
    from app.ledger.chain import append_event, lock_subscriber
    from app.store.db import utcnow

    def append(session, phone):
        subscriber = lock_subscriber(session, phone)
        return append_event(session, subscriber, NewEvent("inbound_text", utcnow(), "other"))

    slow = db.session()
    early = append(slow, VICTIM).id  # drawn, not committed
    with db.transaction() as session:
        late = append(session, OTHER).id
    assert early < late
    threading.Timer(0.5, slow.commit).start()
    started = time.monotonic()
    result = checkpoint(app)
    slow.close()
    assert time.monotonic() - started >= 0.4
    assert result.size == 2 and verify(app).ok


def test_a_transaction_left_open_stops_the_checkpoint_with_its_pid(app, db, monkeypatch):
    if not db.is_postgresql:
        pytest.skip("SQLite has one writer at a time")
    from app.core.ledger_hashing import NewEvent
    from app.ledger import tree
    from app.ledger.chain import append_event, lock_subscriber
    from app.store.db import utcnow

    monkeypatch.setattr(tree, "HORIZON_TIMEOUT_SECONDS", 0.3)
    stuck = db.session()
    subscriber = lock_subscriber(stuck, VICTIM)
    append_event(stuck, subscriber, NewEvent("inbound_text", utcnow(), "other"))
    pid = stuck.execute(text("SELECT pg_backend_pid()")).scalar_one()
    try:
        with pytest.raises(CheckpointError, match=str(pid)):
            checkpoint(app)
    finally:
        stuck.rollback()
        stuck.close()
