"""Signed checkpoints of the ledger, published outside the database.

`write_checkpoint` signs the root of the tree of every settled event and appends
it to `LEDGER_CHECKPOINT_DIR` as a new file (never overwriting one), with an
RFC 3161 timestamp beside it when `LEDGER_TSA_URL` is set. Before it signs, it
checks that the database still holds the tree the newest published checkpoint
signed, so the log never signs two views of history that disagree.

`LedgerAnchors` is what `ledger verify` checks the database against: every
published checkpoint must be signed by our key, the tree of the events as they
are now must have that checkpoint's root at its size, and a consistency proof
must lead from it to the current tree. Whoever rewrites the database, even with
the triggers off and every hash recomputed, cannot also rewrite what was
published, so any change to a covered event fails verification.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.core.merkle import MerkleTree, verify_consistency
from app.core.signed_note import Checkpoint, NoteError, SignedCheckpoint, open_checkpoint
from app.core.signed_note import sign_checkpoint as sign_note
from app.ledger.signing import LedgerKey
from app.ledger.timestamping import TimestampError, describe_timestamp, request_timestamp
from app.ledger.tree import (
    BLOCK_LEVEL,
    BLOCK_SIZE,
    TreeBuilder,
    TreeError,
    iter_event_hashes,
    save_blocks,
    settled_horizon,
    stored_blocks,
)
from app.store.db import Database

_sha256 = hashlib.sha256
CHECKPOINT_SUFFIX = ".checkpoint"
TIMESTAMP_SUFFIX = ".tsr"


class CheckpointError(RuntimeError):
    """No checkpoint may be written or read: the message says why."""


@dataclass(frozen=True)
class Published:
    """One checkpoint file whose signature verified, and its timestamp response if any."""

    path: Path
    signed: SignedCheckpoint
    timestamp_response: bytes | None

    @property
    def size(self) -> int:
        return self.signed.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.signed.checkpoint.root_hash

    @property
    def signed_at(self) -> datetime | None:
        stamp = self.signed.timestamp
        return None if stamp is None else datetime.fromtimestamp(stamp, UTC)

    def describe(self) -> str:
        when = f", signed {self.signed_at:%Y-%m-%d %H:%M:%SZ}" if self.signed_at else ""
        return f"checkpoint {self.path.name} ({self.size:,} events{when})"


class CheckpointDirectory:
    """The directory of published checkpoints: files are added, never changed."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def paths(self) -> list[Path]:
        """Checkpoint files by name: by tree size, then by time."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"*{CHECKPOINT_SUFFIX}"))

    def read(self, path: Path, key: Ed25519PublicKey) -> Published:
        """The checkpoint in `path`, verified against `key`; CheckpointError naming the file."""
        try:
            note = path.read_bytes()
            signed = open_checkpoint(note, key)
        except (OSError, NoteError) as error:
            raise CheckpointError(f"checkpoint {path.name}: {error}") from error
        stamp_path = path.with_suffix(TIMESTAMP_SUFFIX)
        stamp = stamp_path.read_bytes() if stamp_path.exists() else None
        return Published(path, signed, stamp)

    def latest(self, key: Ed25519PublicKey) -> Published | None:
        """The checkpoint of the largest tree (names sort by size, then time)."""
        paths = self.paths()
        return self.read(paths[-1], key) if paths else None

    def all(self, key: Ed25519PublicKey) -> list[Published]:
        return [self.read(path, key) for path in self.paths()]

    def _create(self, path: Path, data: bytes) -> None:
        # O_EXCL: a file that exists is never replaced, whoever wrote it.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def add(self, note: bytes, size: int, signed_at: datetime) -> Path:
        """Write a new checkpoint file, named so that names sort by size, then time."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = f"{size:016d}-{signed_at:%Y%m%dT%H%M%S%fZ}"
        for attempt in range(100):
            path = self.directory / f"{stem}{f'-{attempt}' if attempt else ''}{CHECKPOINT_SUFFIX}"
            try:
                self._create(path, note)
            except FileExistsError:
                continue
            self._sync_directory()
            return path
        raise CheckpointError(f"no free checkpoint file name in {self.directory}")

    def add_timestamp(self, checkpoint_path: Path, response: bytes) -> Path:
        path = checkpoint_path.with_suffix(TIMESTAMP_SUFFIX)
        self._create(path, response)
        self._sync_directory()
        return path

    def _sync_directory(self) -> None:
        try:
            descriptor = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return  # some mounts cannot be opened as a directory; the files are synced
        try:
            os.fsync(descriptor)
        except OSError:
            pass
        finally:
            os.close(descriptor)


@dataclass
class CheckpointResult:
    """What `write_checkpoint` did."""

    size: int
    root: bytes
    path: Path | None  # None: nothing new since `previous`, so nothing was written
    previous: Published | None
    new_blocks: int = 0
    timestamp_path: Path | None = None
    timestamp_error: str | None = None
    seconds: float = 0.0


def grow_tree(session, previous: Published | None, horizon: int) -> TreeBuilder:
    """The tree of every event up to `horizon`, checked against `previous` on the way.

    Starts from the stored blocks the previous checkpoint covers; every block it
    completes is compared with a stored one when there is one.
    """
    blocks = stored_blocks(session)
    covered = previous.size // BLOCK_SIZE if previous else 0
    builder = TreeBuilder(blocks[:covered])
    stored_after = {block.block: block for block in blocks[covered:]}

    def check_previous() -> None:
        if previous and builder.size == previous.size and builder.root() != previous.root:
            raise CheckpointError(
                f"the ledger's first {previous.size:,} events no longer match "
                f"{previous.describe()}: refusing to sign; run `flask --app app ledger verify`"
            )

    check_previous()
    size, previous_size = builder.size, previous.size if previous else -1
    for event_id, event_hash in iter_event_hashes(
        session, after_id=builder.last_event_id, up_to_id=horizon
    ):
        completed = builder.add(event_id, event_hash)
        size += 1
        if completed is not None and completed.block in stored_after:
            if stored_after[completed.block] != completed:
                raise CheckpointError(
                    f"stored tree block {completed.block} does not match the events it covers"
                )
        if size == previous_size:
            check_previous()
    if previous and builder.size < previous.size:
        raise CheckpointError(
            f"the ledger holds {builder.size:,} events but {previous.describe()} covers "
            f"{previous.size:,}: events were deleted; refusing to sign"
        )
    builder.completed = [b for b in builder.completed if b.block not in stored_after]
    return builder


def write_checkpoint(
    database: Database,
    key: LedgerKey,
    directory: CheckpointDirectory,
    *,
    tsa_url: str | None = None,
    now: datetime | None = None,
) -> CheckpointResult:
    """Sign the tree of every settled event and append it to `directory`.

    Nothing is written when no event was added since the newest checkpoint.
    """
    started = time.monotonic()
    previous = directory.latest(key.public)
    try:
        with database.transaction(write=False) as session:
            builder = grow_tree(session, previous, settled_horizon(session))
    except TreeError as error:
        raise CheckpointError(str(error)) from error
    root = builder.root()
    result = CheckpointResult(builder.size, root, None, previous, len(builder.completed))
    if builder.completed:
        with database.transaction() as session:
            save_blocks(session, builder.completed)
    if previous is None or builder.size > previous.size:
        signed_at = (now or datetime.now(UTC)).astimezone(UTC)
        checkpoint = Checkpoint(key.origin, builder.size, root)
        note = sign_note(checkpoint, key.private, int(signed_at.timestamp()))
        result.path = directory.add(note, builder.size, signed_at)
        if tsa_url:
            try:
                response = request_timestamp(tsa_url, note)
                result.timestamp_path = directory.add_timestamp(result.path, response)
            except TimestampError as error:
                result.timestamp_error = str(error)
    result.seconds = time.monotonic() - started
    return result


# ----------------------------------------------------------------------------------------------
# Verification against what was published


@dataclass
class AnchorReport:
    """The outcome of checking the database against the published checkpoints."""

    ok: bool = True
    message: str = ""
    checkpoints: int = 0
    newest: Published | None = None
    problems: list[str] = field(default_factory=list)


class LedgerAnchors:
    """Fed every event as `ledger verify` reads it; then checks the published checkpoints."""

    def __init__(self, directory: CheckpointDirectory, key: LedgerKey | None) -> None:
        self.directory = directory
        self.key = key
        self.tree = MerkleTree()
        self.block_ids: list[tuple[int, int]] = []
        self._leaves = bytearray()  # read as verify goes; the tree is built once, in bulk
        self._count = 0
        self._block_first_id = 0

    def add(self, event_id: int, event_hash: str) -> None:
        if not self._count % BLOCK_SIZE:
            self._block_first_id = event_id
        self._leaves += _sha256(b"\x00" + bytes.fromhex(event_hash)).digest()
        self._count += 1
        if not self._count % BLOCK_SIZE:
            self.block_ids.append((self._block_first_id, event_id))

    def check(self, session) -> AnchorReport:
        """Check every published checkpoint and the stored tree blocks; the first failure wins."""
        leaves = memoryview(self._leaves)
        self.tree.extend(bytes(leaves[i : i + 32]) for i in range(0, len(leaves), 32))
        self._leaves = bytearray()
        report = AnchorReport()
        paths = self.directory.paths()
        if paths and self.key is None:
            return _failed(
                report,
                f"{len(paths)} published checkpoints cannot be checked: LEDGER_SIGNING_KEY "
                "is not set in this process",
            )
        size, current_root = self.tree.size, self.tree.root()
        matched = 0
        for path in paths:
            try:
                published = self.directory.read(path, self.key.public)
            except CheckpointError as error:
                return _failed(report, f"{error} (forged or altered)")
            if published.size > size:
                return _failed(
                    report,
                    f"{published.describe()} covers {published.size:,} events but the ledger "
                    f"holds {size:,}: events were deleted",
                )
            if self.tree.root(published.size) != published.root:
                return _failed(
                    report,
                    f"the ledger no longer matches {published.describe()}: an event among "
                    f"the ledger's events {matched + 1:,} to {published.size:,} (in id order) "
                    "was changed, deleted or inserted since it was signed",
                )
            proof = self.tree.consistency_proof(published.size, size)
            if not verify_consistency(published.size, size, published.root, current_root, proof):
                return _failed(report, f"no consistency proof from {published.describe()}")
            if published.timestamp_response is not None:
                problem = _timestamp_problem(published)
                if problem:
                    return _failed(report, problem)
            matched = published.size
            report.checkpoints += 1
            report.newest = published
        for block in stored_blocks(session):
            if (block.block + 1) * BLOCK_SIZE > size:
                break
            expected = self.tree.perfect(BLOCK_LEVEL, block.block)
            if (
                block.root != expected
                or (block.first_event_id, block.last_event_id) != (self.block_ids[block.block])
            ):
                return _failed(
                    report,
                    f"stored tree block {block.block} does not match the events it covers "
                    "(the proof cache was altered; evidence proofs from it would fail)",
                )
        return report


def _timestamp_problem(published: Published) -> str | None:
    try:
        info = describe_timestamp(published.timestamp_response, published.signed.note)
    except TimestampError as error:
        return f"timestamp of {published.path.name}: {error}"
    if not info.covers_data:
        return f"timestamp of {published.path.name} is not about that checkpoint"
    return None


def _failed(report: AnchorReport, message: str) -> AnchorReport:
    report.ok = False
    report.message = message
    return report
