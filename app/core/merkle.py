"""A Merkle tree with RFC 6962 / RFC 9162 hashing, as transparency logs use. Pure.

One leaf per consent ledger event, in ledger id order; the leaf's data is the
event's hash (32 bytes). Hashes:

- leaf: SHA-256(0x00 || data)
- node: SHA-256(0x01 || left || right)
- the root of n > 1 leaves: node(root of the first k, root of the rest), where k
  is the largest power of two smaller than n (RFC 6962 §2.1); the empty tree's
  root is SHA-256 of nothing.

The tree is kept as a *compact range* (the frontier): the roots of the perfect
subtrees that make up the leaves so far, at most one per bit of the size. That
is all a log needs to append and to compute the next root, so a checkpoint over
a million events never holds a million hashes at once. Proofs need the hashes of
other subtrees; the functions that make them ask for those through a
`SubtreeHashes` callable, which `MerkleTree` (in memory) or the ledger's
database store (`app.ledger.transparency`) provide.

Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency)
step by step, so the standalone `tools/verify_bundle.py` can mirror it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

# The hash of the leaves [start, end) of the tree: a perfect subtree (end - start a power
# of two and start a multiple of it) or the right edge of a tree of size `end`.
SubtreeHashes = Callable[[int, int], bytes]

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """The hash of one leaf."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()


def split_point(size: int) -> int:
    """The largest power of two smaller than `size` (size > 1): where RFC 6962 splits a tree."""
    return 1 << ((size - 1).bit_length() - 1)


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


class CompactRange:
    """The frontier of a tree: the roots of its perfect subtrees, largest (leftmost) first.

    `append` costs one leaf hash plus, on average, one node hash; `root` folds at
    most 64 hashes. `hashes[i]` covers 2**k leaves, where k is the i-th set bit of
    `size` counted from the top.
    """

    __slots__ = ("size", "hashes")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a compact range of {size} leaves has {size.bit_count()} hashes")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        """Add the next leaf, given as its leaf hash."""
        hashes = self.hashes
        hashes.append(leaf)
        self.size += 1
        merges = (self.size & -self.size).bit_length() - 1  # trailing zero bits of the new size
        for _ in range(merges):
            right = hashes.pop()
            hashes[-1] = _sha256(b"\x01" + hashes[-1] + right).digest()

    def append_subtree(self, level: int, subtree_root: bytes) -> None:
        """Add the next 2**level leaves at once, given as the root of their perfect subtree."""
        if self.size % (1 << level):
            raise ValueError(f"a subtree of 2**{level} leaves cannot follow {self.size} leaves")
        hashes = self.hashes
        hashes.append(subtree_root)
        self.size += 1 << level
        merges = (self.size & -self.size).bit_length() - 1 - level
        for _ in range(merges):
            right = hashes.pop()
            hashes[-1] = _sha256(b"\x01" + hashes[-1] + right).digest()

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """The root hash of the leaves so far."""
        if not self.hashes:
            return EMPTY_ROOT
        result = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            result = node_hash(left, result)
        return result

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)


def perfect_subtree_sizes(size: int) -> list[int]:
    """The sizes of the perfect subtrees that make up `size` leaves, largest first."""
    return [1 << bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]


def root_of(leaves: Iterable[bytes]) -> bytes:
    """The root hash of leaves given as leaf hashes."""
    frontier = CompactRange()
    frontier.extend(leaves)
    return frontier.root()


def perfect_root(leaves: list[bytes]) -> bytes:
    """The root of a perfect subtree (a power of two of leaf hashes), hashed level by level."""
    level = leaves
    while len(level) > 1:
        level = [
            _sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)
        ]
    return level[0]


def subtree_from_perfect(perfect: Callable[[int, int], bytes]) -> SubtreeHashes:
    """Turn a source of perfect subtree hashes into a `SubtreeHashes`.

    `perfect(level, index)` is the hash of leaves [index * 2**level, (index+1) * 2**level).
    A range that is not perfect is the right edge of a tree: its hash is folded from
    the perfect subtrees it is made of, as RFC 6962's definition unrolls.
    """

    def subtree(start: int, end: int) -> bytes:
        parts: list[bytes] = []
        for size in perfect_subtree_sizes(end - start):
            level = size.bit_length() - 1
            parts.append(perfect(level, start >> level))
            start += size
        result = parts[-1]
        for left in reversed(parts[:-1]):
            result = node_hash(left, result)
        return result

    return subtree


# ----------------------------------------------------------------------------------------------
# Proofs (RFC 6962 §2.1.1 PATH and §2.1.2 SUBPROOF)


def inclusion_proof(index: int, size: int, subtree: SubtreeHashes) -> list[bytes]:
    """The audit path of leaf `index` in the tree of the first `size` leaves, leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, subtree: SubtreeHashes) -> list[bytes]:
    """The proof that the tree of `old_size` leaves is a prefix of the tree of `new_size`."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size} leaves")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    start, end, complete = 0, new_size, True
    m = old_size  # relative to `start`, as SUBPROOF recurses
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            proof.append(subtree(start + k, end))
            end = start + k
        else:
            proof.append(subtree(start, start + k))
            start += k
            m -= k
            complete = False
    if not complete:
        proof.append(subtree(start, end))
    proof.reverse()
    return proof


# ----------------------------------------------------------------------------------------------
# Verification (RFC 9162 §2.1.3.2 and §2.1.4.2)


def _hashes_ok(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def root_from_inclusion_proof(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes]
) -> bytes | None:
    """The root that `proof` leads to from `leaf` at `index`, or None if the proof is malformed."""
    if not 0 <= index < size or not _hashes_ok(leaf, *proof):
        return None
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """Does `proof` show that `leaf` (a leaf hash) is leaf `index` of the tree with `root`?"""
    computed = root_from_inclusion_proof(index, size, leaf, proof)
    return computed is not None and _hashes_ok(root) and computed == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Does `proof` show that the tree (`new_size`, `new_root`) extends (`old_size`, `old_root`)?"""
    if not 0 <= old_size <= new_size or not _hashes_ok(*proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root and _hashes_ok(old_root)
    if old_size == 0:
        return not proof
    if not proof or not _hashes_ok(old_root, new_root):
        return False
    path = list(proof)
    if is_power_of_two(old_size):
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


# ----------------------------------------------------------------------------------------------
# A tree held in memory


class MerkleTree:
    """An append-only tree in memory that can prove anything about any of its prefixes.

    Keeps every leaf hash (32 bytes each) and the perfect subtrees of `2**cache_level`
    leaves and more, so a proof reads stored hashes and hashes at most a few dozen
    leaves. A million leaves take about 33 MB.
    """

    def __init__(self, cache_level: int = 6) -> None:
        self.cache_level = cache_level
        self.frontier = CompactRange()
        self._leaves = bytearray()
        self._levels: dict[int, bytearray] = {}

    @property
    def size(self) -> int:
        return self.frontier.size

    def append(self, leaf: bytes) -> None:
        """Add the next leaf, given as its leaf hash."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash has 32 bytes")
        self._leaves += leaf
        self._push(0, leaf)

    def _push(self, level: int, subtree_root: bytes) -> None:
        """Add a perfect subtree of 2**level leaves to the frontier, caching what completes."""
        frontier = self.frontier
        hashes = frontier.hashes
        hashes.append(subtree_root)
        frontier.size += 1 << level
        if level >= self.cache_level:
            self._levels.setdefault(level, bytearray()).extend(subtree_root)
        # Each merge completes the perfect subtree one level up: keep those worth caching.
        merges = (frontier.size & -frontier.size).bit_length() - 1 - level
        for step in range(1, merges + 1):
            right = hashes.pop()
            hashes[-1] = _sha256(b"\x01" + hashes[-1] + right).digest()
            if level + step >= self.cache_level:
                self._levels.setdefault(level + step, bytearray()).extend(hashes[-1])

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Add many leaves: whole chunks of 2**cache_level are hashed level by level at once."""
        chunk_size = 1 << self.cache_level
        pending: list[bytes] = []
        for leaf in leaves:
            if len(leaf) != HASH_SIZE:
                raise ValueError("a leaf hash has 32 bytes")
            if not pending and self.size % chunk_size:
                self.append(leaf)  # up to the next chunk boundary one by one
                continue
            pending.append(leaf)
            if len(pending) == chunk_size:
                self._leaves += b"".join(pending)
                self._push(self.cache_level, perfect_root(pending))
                pending = []
        for leaf in pending:
            self.append(leaf)

    def leaf(self, index: int) -> bytes:
        return bytes(self._leaves[index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def root(self, size: int | None = None) -> bytes:
        """The root of the first `size` leaves (default: all)."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"the tree has {self.size} leaves, not {size}")
        if size == 0:
            return EMPTY_ROOT
        return self.subtree(0, size)

    def perfect(self, level: int, index: int) -> bytes:
        """The root of leaves [index * 2**level, (index + 1) * 2**level), all of them present."""
        if (index + 1) << level > self.size:
            raise ValueError(f"no complete subtree {index} of level {level} yet")
        return self._perfect(level, index)

    def _perfect(self, level: int, index: int) -> bytes:
        if level >= self.cache_level:
            store = self._levels[level]
            return bytes(store[index * HASH_SIZE : (index + 1) * HASH_SIZE])
        if level == 0:
            return self.leaf(index)
        first = index << level
        frontier = CompactRange()
        frontier.extend(self.leaf(i) for i in range(first, first + (1 << level)))
        return frontier.hashes[0]

    def subtree(self, start: int, end: int) -> bytes:
        """The hash of leaves [start, end): see `SubtreeHashes`."""
        if not 0 <= start < end <= self.size:
            raise ValueError(f"no subtree [{start}, {end}) in a tree of {self.size} leaves")
        return subtree_from_perfect(self._perfect)(start, end)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self.size if size is None else size, self.subtree)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new_size = self.size if new_size is None else new_size
        return consistency_proof(old_size, new_size, self.subtree)
