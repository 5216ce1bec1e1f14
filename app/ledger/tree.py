"""The Merkle tree over the ledger, in the database: one leaf per event hash, in id order.

The tree itself is never stored, only `ledger_tree_blocks`: the root of every complete
block of 1,024 consecutive events. From those and the events of the last, partial
block, a checkpoint extends the tree (`TreeBuilder`) and an evidence bundle proves
any event (`StoredTree`), each reading at most a couple of thousand rows. The rows
are derived data: every use checks them against a signed checkpoint or the events.

Which events a checkpoint may cover (`settled_horizon`): on PostgreSQL ids are
handed out when a row is inserted but become visible when its transaction commits,
so event 101 can appear after event 102 was read. A checkpoint must never skip an
id it might later have to put before a covered one, so it waits for the
transactions still writing events when it starts.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.core.merkle import (
    CompactRange,
    leaf_hash,
    node_hash,
    perfect_root,
    subtree_from_perfect,
)
from app.ledger.chain import insert_ignoring_conflicts
from app.store.db import utcnow
from app.store.models import ConsentEvent, LedgerTreeBlock

_sha256 = hashlib.sha256
BLOCK_LEVEL = 10
BLOCK_SIZE = 1 << BLOCK_LEVEL
HORIZON_TIMEOUT_SECONDS = 30.0


class TreeError(RuntimeError):
    """The tree cannot be built or proven from what the database holds."""


def event_leaf(event_hash: str) -> bytes:
    """The leaf hash of one event: its 32-byte event hash as the leaf's data."""
    return leaf_hash(bytes.fromhex(event_hash))


def iter_event_hashes(
    session: Session, *, after_id: int, up_to_id: int | None = None, batch_size: int = 10000
) -> Iterator[tuple[int, str]]:
    """(id, event_hash) of the events after `after_id` (up to `up_to_id`), in id order."""
    if session.get_bind().dialect.name == "postgresql":
        yield from _iter_event_hashes_psycopg(session, after_id, up_to_id, batch_size)
        return
    last_id = after_id
    while True:
        query = select(ConsentEvent.id, ConsentEvent.event_hash).where(ConsentEvent.id > last_id)
        if up_to_id is not None:
            query = query.where(ConsentEvent.id <= up_to_id)
        batch = session.execute(query.order_by(ConsentEvent.id).limit(batch_size)).all()
        if not batch:
            return
        for row in batch:
            yield row[0], row[1]
        last_id = batch[-1][0]


def _iter_event_hashes_psycopg(session, after_id, up_to_id, batch_size):
    # Straight from the driver: a million rows through SQLAlchemy's result layer cost seconds.
    limit = "" if up_to_id is None else " AND id <= %(up_to)s"
    sql = (
        f"SELECT id, event_hash FROM consent_events WHERE id > %(last)s{limit} "
        "ORDER BY id LIMIT %(batch)s"
    )
    connection = session.connection().connection.driver_connection
    params = {"last": after_id, "up_to": up_to_id, "batch": batch_size}
    with connection.cursor() as cursor:
        while True:
            batch = cursor.execute(sql, params).fetchall()
            if not batch:
                return
            yield from batch
            params["last"] = batch[-1][0]


def settled_horizon(session: Session, timeout: float | None = None) -> int:
    """The largest event id such that no event with a smaller id can still appear.

    SQLite has one writer at a time, so ids become visible in order. On PostgreSQL
    an INSERT takes its table lock before it draws an id, so every transaction
    that may hold an uncommitted smaller id is among those holding a lock on
    `consent_events` right after the newest id is read; wait until they end.
    """
    timeout = HORIZON_TIMEOUT_SECONDS if timeout is None else timeout
    newest = session.execute(select(func.coalesce(func.max(ConsentEvent.id), 0))).scalar_one()
    if session.get_bind().dialect.name != "postgresql":
        return newest
    writers_sql = text(
        "SELECT DISTINCT virtualtransaction, pid FROM pg_locks WHERE locktype = 'relation' "
        "AND relation = 'consent_events'::regclass AND mode = 'RowExclusiveLock' "
        "AND pid <> pg_backend_pid()"
    )
    writers = {row.virtualtransaction: row.pid for row in session.execute(writers_sql)}
    deadline = time.monotonic() + timeout
    while writers:
        still = {
            row.virtualtransaction: row.pid
            for row in session.execute(writers_sql)
            if row.virtualtransaction in writers
        }
        if not still:
            break
        if time.monotonic() > deadline:
            pids = ", ".join(str(pid) for pid in sorted(set(still.values())))
            raise TreeError(
                f"transactions writing ledger events (backend pid {pids}) stayed open for "
                f"{timeout:g} s; the checkpoint cannot know their events' place in the ledger"
            )
        writers = still
        time.sleep(0.02)
    return newest


@dataclass(frozen=True)
class StoredBlock:
    """A complete block of the tree: leaves [block * 1024, block * 1024 + 1024)."""

    block: int
    first_event_id: int
    last_event_id: int
    root: bytes


def stored_blocks(session: Session) -> list[StoredBlock]:
    """The stored blocks from block 0 on, as far as they run without a gap."""
    blocks: list[StoredBlock] = []
    for row in session.execute(select(LedgerTreeBlock).order_by(LedgerTreeBlock.block)).scalars():
        if row.block != len(blocks):
            break
        blocks.append(
            StoredBlock(
                row.block, row.first_event_id, row.last_event_id, bytes.fromhex(row.root_hash)
            )
        )
    return blocks


def save_blocks(session: Session, blocks: list[StoredBlock]) -> None:
    """Keep newly completed blocks (another checkpoint may have stored them first)."""
    for block in blocks:
        insert_ignoring_conflicts(
            session,
            LedgerTreeBlock,
            {
                "block": block.block,
                "first_event_id": block.first_event_id,
                "last_event_id": block.last_event_id,
                "root_hash": block.root.hex(),
                "created_at": utcnow(),
            },
            ["block"],
        )


class TreeBuilder:
    """The tree's frontier, grown event by event from a prefix of stored blocks.

    Complete blocks enter as one subtree each; the leaves of the current block are
    kept apart until it completes, when its root becomes a new `StoredBlock`.
    """

    def __init__(self, blocks: list[StoredBlock] = ()) -> None:
        self._complete = CompactRange()
        for block in blocks:
            self._complete.append_subtree(BLOCK_LEVEL, block.root)
        self._leaves: list[bytes] = []
        self._first_id = 0
        self.last_event_id = blocks[-1].last_event_id if blocks else 0
        self.completed: list[StoredBlock] = []

    @property
    def size(self) -> int:
        return self._complete.size + len(self._leaves)

    def add(self, event_id: int, event_hash: str) -> StoredBlock | None:
        """Append one event; return the block it completed, if any."""
        if event_id <= self.last_event_id:
            raise TreeError(f"event {event_id} arrived after event {self.last_event_id}")
        leaves = self._leaves
        if not leaves:
            self._first_id = event_id
        leaves.append(_sha256(b"\x00" + bytes.fromhex(event_hash)).digest())
        self.last_event_id = event_id
        if len(leaves) < BLOCK_SIZE:
            return None
        block = StoredBlock(
            self._complete.size >> BLOCK_LEVEL, self._first_id, event_id, perfect_root(leaves)
        )
        self._complete.append_subtree(BLOCK_LEVEL, block.root)
        self._leaves = []
        self.completed.append(block)
        return block

    def frontier(self) -> CompactRange:
        partial = CompactRange()
        partial.extend(self._leaves)
        return CompactRange(self.size, self._complete.hashes + partial.hashes)

    def root(self) -> bytes:
        return self.frontier().root()


class StoredTree:
    """Proofs about the first `size` events, from stored blocks and the events' hashes."""

    def __init__(self, session: Session, size: int) -> None:
        self.session = session
        self.size = size
        blocks = stored_blocks(session)
        if len(blocks) < size // BLOCK_SIZE:
            raise TreeError(
                f"the tree's blocks are stored up to event {len(blocks) * BLOCK_SIZE}, "
                f"not {size}: run `flask --app app ledger checkpoint`"
            )
        self.blocks = blocks[: size // BLOCK_SIZE]
        self._first_ids = [block.first_event_id for block in self.blocks]
        self._leaves: dict[int, tuple[list[int], list[bytes]]] = {}
        self._perfect_cache: dict[tuple[int, int], bytes] = {}
        self.subtree = subtree_from_perfect(self._perfect)

    def _block_leaves(self, block: int) -> tuple[list[int], list[bytes]]:
        """The ids and leaf hashes of one block (the last one may be partial)."""
        if block in self._leaves:
            return self._leaves[block]
        if block < len(self.blocks):
            stored = self.blocks[block]
            after, up_to, expected = stored.first_event_id - 1, stored.last_event_id, BLOCK_SIZE
        else:
            after = self.blocks[-1].last_event_id if self.blocks else 0
            up_to, expected = None, self.size - block * BLOCK_SIZE
        rows = []
        for row in iter_event_hashes(self.session, after_id=after, up_to_id=up_to):
            rows.append(row)
            if len(rows) == expected:
                break
        if len(rows) != expected:
            raise TreeError(f"block {block} of the tree has {len(rows)} events, not {expected}")
        leaves = ([event_id for event_id, _ in rows], [event_leaf(h) for _, h in rows])
        self._leaves[block] = leaves
        return leaves

    def _perfect(self, level: int, index: int) -> bytes:
        key = (level, index)
        if key in self._perfect_cache:
            return self._perfect_cache[key]
        if level == BLOCK_LEVEL and index < len(self.blocks):
            result = self.blocks[index].root
        elif level == 0:
            block, offset = divmod(index, BLOCK_SIZE)
            result = self._block_leaves(block)[1][offset]
        else:
            left = self._perfect(level - 1, 2 * index)
            result = node_hash(left, self._perfect(level - 1, 2 * index + 1))
        self._perfect_cache[key] = result
        return result

    def position_of(self, event_id: int) -> int | None:
        """The event's leaf index in this tree, or None if it is not among its leaves."""
        block = bisect.bisect_right(self._first_ids, event_id) - 1
        if block < 0 or event_id > self.blocks[block].last_event_id:
            block = len(self.blocks)  # after every complete block: the partial one, if any
            if block * BLOCK_SIZE >= self.size:
                return None
            if self.blocks and event_id <= self.blocks[-1].last_event_id:
                return None
        ids = self._block_leaves(block)[0]
        offset = bisect.bisect_left(ids, event_id)
        if offset < len(ids) and ids[offset] == event_id:
            return block * BLOCK_SIZE + offset
        return None

    def leaf(self, position: int) -> bytes:
        return self._perfect(0, position)
