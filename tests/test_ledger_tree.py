"""The ledger's Merkle tree in the database: stored blocks, incremental growth, proofs."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select, text

from app.core.ledger_hashing import NewEvent, seal_event
from app.core.merkle import MerkleTree, inclusion_proof, verify_inclusion
from app.ledger.chain import lock_subscriber, newest_event, verify_ledger
from app.ledger.checkpoints import (
    CheckpointDirectory,
    CheckpointError,
    LedgerAnchors,
    write_checkpoint,
)
from app.ledger.tree import BLOCK_SIZE, StoredTree, TreeBuilder, event_leaf, stored_blocks
from app.store.db import utcnow
from app.store.models import ConsentEvent, LedgerTreeBlock
from tests.ledger_tampering import tamper


def append_events(db, count: int, numbers: int = 50) -> None:
    """`count` events over `numbers` numbers, sealed by the ledger's own code, in one insert."""
    with db.transaction() as session:
        subscribers = [lock_subscriber(session, f"+1415555{n:04d}") for n in range(numbers)]
        witness = newest_event(session)
        next_id = witness[0] + 1 if witness else 1
        rows = []
        for n in range(count):
            subscriber = subscribers[n % numbers]
            sealed = seal_event(
                NewEvent("inbound_text", utcnow(), "other"),
                subscriber_id=subscriber.id,
                phone=subscriber.phone,
                chain_seq=subscriber.chain_seq,
                chain_head_hash=subscriber.chain_head_hash,
                witness=witness,
            )
            rows.append({"id": next_id, **sealed.row()})
            subscriber.chain_seq += 1
            subscriber.chain_head_hash = sealed.event_hash
            witness = (next_id, sealed.event_hash)
            next_id += 1
        session.execute(insert(ConsentEvent), rows)
        if db.is_postgresql:
            session.execute(
                text("SELECT setval(pg_get_serial_sequence('consent_events', 'id'), :last)"),
                {"last": next_id - 1},
            )


def all_hashes(db) -> list[tuple[int, str]]:
    with db.transaction(write=False) as session:
        return list(
            session.execute(
                select(ConsentEvent.id, ConsentEvent.event_hash).order_by(ConsentEvent.id)
            ).all()
        )


def memory_tree(rows) -> MerkleTree:
    tree = MerkleTree()
    tree.extend(event_leaf(h) for _, h in rows)
    return tree


@pytest.fixture
def publish(app):
    key = app.extensions["ledger_key"]
    directory = CheckpointDirectory(app.extensions["settings"].ledger_checkpoint_dir)
    return lambda: write_checkpoint(app.extensions["db"], key, directory)


def test_blocks_are_stored_as_checkpoints_complete_them(app, db, publish):
    append_events(db, BLOCK_SIZE - 1)
    assert publish().new_blocks == 0
    append_events(db, 2)
    first = publish()
    assert first.new_blocks == 1
    append_events(db, 2 * BLOCK_SIZE)
    second = publish()
    assert (second.size, second.new_blocks) == (3 * BLOCK_SIZE + 1, 2)
    rows = all_hashes(db)
    tree = memory_tree(rows)
    assert second.root == tree.root() and first.root == tree.root(BLOCK_SIZE + 1)
    with db.transaction(write=False) as session:
        blocks = stored_blocks(session)
    assert [b.block for b in blocks] == [0, 1, 2]
    for block in blocks:
        assert block.root == tree.perfect(10, block.block)
        assert (block.first_event_id, block.last_event_id) == (
            rows[block.block * BLOCK_SIZE][0],
            rows[block.block * BLOCK_SIZE + BLOCK_SIZE - 1][0],
        )


def test_the_builder_resumes_from_blocks_exactly_as_from_every_leaf(app, db, publish):
    append_events(db, BLOCK_SIZE + 300)
    publish()
    rows = all_hashes(db)
    with db.transaction(write=False) as session:
        resumed = TreeBuilder(stored_blocks(session))
    for event_id, event_hash in rows[BLOCK_SIZE:]:
        resumed.add(event_id, event_hash)
    assert resumed.root() == memory_tree(rows).root()


def test_stored_tree_proves_every_event_to_the_checkpoint_root(app, db, publish):
    append_events(db, 2 * BLOCK_SIZE + 77)
    result = publish()
    rows = all_hashes(db)
    with db.transaction(write=False) as session:
        tree = StoredTree(session, result.size)
        for position in [0, 1, 1023, 1024, 1500, 2047, 2048, 2048 + 76]:
            event_id, event_hash = rows[position]
            assert tree.position_of(event_id) == position
            proof = inclusion_proof(position, result.size, tree.subtree)
            assert verify_inclusion(
                position, result.size, event_leaf(event_hash), proof, result.root
            )
        assert tree.position_of(rows[-1][0] + 1) is None


def test_an_event_after_the_checkpoint_has_no_position_in_it(app, db, publish):
    append_events(db, 10)
    result = publish()
    append_events(db, 1)
    newest = all_hashes(db)[-1][0]
    with db.transaction(write=False) as session:
        assert StoredTree(session, result.size).position_of(newest) is None


def test_verify_notices_an_altered_stored_block(app, db, publish):
    append_events(db, BLOCK_SIZE + 5)
    publish()

    def anchors():
        directory = CheckpointDirectory(app.extensions["settings"].ledger_checkpoint_dir)
        return LedgerAnchors(directory, app.extensions["ledger_key"])

    with db.transaction(write=False) as session:
        assert verify_ledger(session, anchors=anchors()).ok
    tamper(db, "UPDATE ledger_tree_blocks SET root_hash = :h WHERE block = 0", h="ab" * 32)
    with db.transaction(write=False) as session:
        result = verify_ledger(session, anchors=anchors())
    assert not result.ok and "stored tree block 0" in result.message


def test_a_checkpoint_refuses_a_stored_block_that_disagrees_with_the_events(app, db, publish):
    append_events(db, 10)
    publish()
    # A block row for leaves the checkpoints have not covered yet, planted wrong.
    append_events(db, BLOCK_SIZE)
    with db.transaction() as session:
        first = session.execute(select(func.min(ConsentEvent.id))).scalar_one()
        session.add(
            LedgerTreeBlock(
                block=0,
                first_event_id=first,
                last_event_id=first + BLOCK_SIZE - 1,
                root_hash="cd" * 32,
                created_at=utcnow(),
            )
        )
    with pytest.raises(CheckpointError, match="stored tree block 0"):
        publish()
