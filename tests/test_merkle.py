"""The Merkle tree against RFC 6962's known vectors, and its proofs under hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from app.core import merkle
from app.core.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

# The test vectors of RFC 6962's reference code, as used by transparency-dev/merkle
# (proof/verify_test.go) and certificate-transparency-go: eight leaves, the root of
# every prefix, and proofs. Inclusion vectors are (leaf index, tree size, path).
LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [
    (0, 8, ["96a296d2", "5f083f0a", "6b47aaf2"]),
    (5, 8, ["bc1a0643", "ca854ea1", "d37ee418"]),
    (2, 3, ["fac54203"]),
    (1, 5, ["6e340b9c", "5f083f0a", "bc1a0643"]),
]
INCLUSION_FULL = {
    "96a296d2": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f083f0a": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47aaf2": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    "bc1a0643": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "ca854ea1": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37ee418": ROOTS[3],
    "fac54203": ROOTS[1],
    "6e340b9c": ROOTS[0],
    "0ebc5d34": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "b08693ec": "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
}
CONSISTENCY = [
    (1, 8, ["96a296d2", "5f083f0a", "6b47aaf2"]),
    (6, 8, ["0ebc5d34", "ca854ea1", "d37ee418"]),
    (2, 5, ["5f083f0a", "bc1a0643"]),
    (6, 7, ["0ebc5d34", "b08693ec", "d37ee418"]),
]


def full(prefixes: list[str]) -> list[bytes]:
    return [bytes.fromhex(INCLUSION_FULL[p]) for p in prefixes]


@pytest.fixture
def vector_tree() -> MerkleTree:
    tree = MerkleTree(cache_level=1)
    tree.extend(leaf_hash(leaf) for leaf in LEAVES)
    return tree


def test_roots_of_every_prefix_match_the_vectors(vector_tree):
    assert merkle.root_of([]) == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    for size, expected in enumerate(ROOTS, start=1):
        assert vector_tree.root(size).hex() == expected
        frontier = CompactRange()
        frontier.extend(leaf_hash(leaf) for leaf in LEAVES[:size])
        assert frontier.root().hex() == expected


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_the_vectors(vector_tree, index, size, path):
    proof = vector_tree.inclusion_proof(index, size)
    assert proof == full(path)
    root = bytes.fromhex(ROOTS[size - 1])
    assert verify_inclusion(index, size, leaf_hash(LEAVES[index]), proof, root)


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_consistency_proofs_match_the_vectors(vector_tree, old, new, path):
    proof = vector_tree.consistency_proof(old, new)
    assert proof == full(path)
    old_root, new_root = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])
    assert verify_consistency(old, new, old_root, new_root, proof)


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_corrupted_inclusion_proofs_fail(index, size, path):
    """The corruptions transparency-dev/merkle probes: index, size, leaf, root, proof."""
    proof, leaf = full(path), leaf_hash(LEAVES[index])
    root = bytes.fromhex(ROOTS[size - 1])
    some_hash = bytes.fromhex("abacaba0" + "0" * 48 + "60061e00123456")
    probes = [
        (index - 1, size, leaf, proof, root),
        (index + 1, size, leaf, proof, root),
        (index ^ 2, size, leaf, proof, root),
        (index, size * 2, leaf, proof, root),
        (index, size // 2, leaf, proof, root),
        (index, size, leaf_hash(b"WrongLeaf"), proof, root),
        (index, size, leaf, proof, EMPTY_ROOT),
        (index, size, leaf, proof, some_hash),
        (index, size, leaf, [*proof, b""], root),
        (index, size, leaf, [*proof, root], root),
        (index, size, leaf, [b"", *proof], root),
        (index, size, leaf, [root, *proof], root),
        (index, size, leaf, proof[:-1], root),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((index, size, leaf, flipped, root))
    for probe in probes:
        assert not verify_inclusion(*probe), probe[:2]


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_corrupted_consistency_proofs_fail(old, new, path):
    proof = full(path)
    old_root, new_root = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])
    probes = [
        (old - 1, new, old_root, new_root, proof),
        (old + 1, new, old_root, new_root, proof),
        (old ^ 2, new, old_root, new_root, proof),
        (old, new * 2, old_root, new_root, proof),
        (old, new // 2, old_root, new_root, proof),
        (old, new, leaf_hash(b"WrongRoot"), new_root, proof),
        (old, new, old_root, leaf_hash(b"WrongRoot"), proof),
        (old, new, new_root, old_root, proof),
        (old, new, old_root, new_root, []),
        (old, new, old_root, new_root, [*proof, b""]),
        (old, new, old_root, new_root, [*proof, old_root]),
        (old, new, old_root, new_root, [*proof, new_root]),
        (old, new, old_root, new_root, [b"", *proof]),
        (old, new, old_root, new_root, [old_root, *proof]),
        (old, new, old_root, new_root, [new_root, *proof]),
        (old, new, old_root, new_root, [proof[0], *proof]),
        (old, new, old_root, new_root, proof[:-1]),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((old, new, old_root, new_root, flipped))
    for probe in probes:
        assert not verify_consistency(*probe), probe[:2]


def test_trivial_consistency_cases():
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, a, [])  # the empty tree is a prefix of any
    assert verify_consistency(3, 3, a, a, [])
    assert not verify_consistency(3, 3, a, b, [])
    assert not verify_consistency(3, 3, a, a, [EMPTY_ROOT])
    assert not verify_consistency(4, 3, a, b, [a])  # time running backwards


def test_a_single_leaf_tree_proves_its_leaf_with_an_empty_path():
    leaf = leaf_hash(b"data")
    assert verify_inclusion(0, 1, leaf, [], leaf)
    assert not verify_inclusion(0, 1, leaf, [], b"")
    assert not verify_inclusion(0, 0, leaf, [], EMPTY_ROOT)


def test_append_subtree_equals_appending_its_leaves():
    leaves = [leaf_hash(bytes([i])) for i in range(40)]
    by_leaf = CompactRange()
    by_leaf.extend(leaves)
    by_block = CompactRange()
    for start in range(0, 32, 8):
        by_block.append_subtree(3, merkle.root_of(leaves[start : start + 8]))
    by_block.extend(leaves[32:])
    assert (by_block.size, by_block.hashes) == (by_leaf.size, by_leaf.hashes)
    with pytest.raises(ValueError):
        by_block.append_subtree(4, leaves[0])  # 16 leaves cannot start at leaf 40


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1's recursive definition, literally."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = merkle.split_point(len(leaves))
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def tree_of(size: int, cache_level: int = 2) -> MerkleTree:
    tree = MerkleTree(cache_level=cache_level)
    tree.extend(leaf_hash(n.to_bytes(4, "big")) for n in range(size))
    return tree


@given(st.integers(1, 300), st.integers(1, 4))
def test_roots_follow_the_recursive_definition(size, cache_level):
    tree = tree_of(size, cache_level)
    leaves = [tree.leaf(i) for i in range(size)]
    assert tree.root() == reference_root(leaves)
    assert tree.root(size // 2) == reference_root(leaves[: size // 2])


@given(st.data())
def test_every_inclusion_proof_verifies_and_any_change_fails(data):
    """(A different tree size alone need not fail: a size is only meaningful signed with its
    root, as in a checkpoint; see the vector probes above for the sizes that must.)"""
    size = data.draw(st.integers(1, 300))
    index = data.draw(st.integers(0, size - 1))
    tree = tree_of(size)
    root, leaf = tree.root(), tree.leaf(index)
    proof = tree.inclusion_proof(index)
    assert verify_inclusion(index, size, leaf, proof, root)

    other = data.draw(st.integers(0, size - 1))
    assume(other != index)
    assert not verify_inclusion(other, size, leaf, proof, root)
    assert not verify_inclusion(index, size, tree.leaf(other), proof, root)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        changed = list(proof)
        changed[position] = (
            changed[position][: bit // 8]
            + bytes([changed[position][bit // 8] ^ (1 << (bit % 8))])
            + changed[position][bit // 8 + 1 :]
        )
        assert not verify_inclusion(index, size, leaf, changed, root)
        assert not verify_inclusion(index, size, leaf, proof[:-1], root)
        assert not verify_inclusion(index, size, leaf, [*proof, proof[0]], root)


@given(st.data())
def test_every_consistency_proof_verifies_and_any_change_fails(data):
    new_size = data.draw(st.integers(1, 300))
    old_size = data.draw(st.integers(1, new_size))
    tree = tree_of(new_size)
    old_root, new_root = tree.root(old_size), tree.root()
    proof = tree.consistency_proof(old_size)
    assert verify_consistency(old_size, new_size, old_root, new_root, proof)
    if old_size == new_size:
        assert proof == []
        return
    assert not verify_consistency(old_size, new_size, new_root, new_root, proof)
    other_old = data.draw(st.integers(1, new_size - 1).filter(lambda n: n != old_size))
    assert not verify_consistency(other_old, new_size, old_root, new_root, proof)
    # A history that differs in one leaf before old_size is inconsistent with the old root.
    changed_leaf = data.draw(st.integers(0, old_size - 1))
    forked = MerkleTree(cache_level=2)
    forked.extend(
        leaf_hash(b"forged") if i == changed_leaf else tree.leaf(i) for i in range(new_size)
    )
    assert not verify_consistency(
        old_size, new_size, old_root, forked.root(), forked.consistency_proof(old_size)
    )
    position = data.draw(st.integers(0, len(proof) - 1))
    changed = list(proof)
    changed[position] = bytes([changed[position][0] ^ 1]) + changed[position][1:]
    assert not verify_consistency(old_size, new_size, old_root, new_root, changed)
    assert not verify_consistency(old_size, new_size, old_root, new_root, proof[:-1])


def test_a_million_leaf_shape_without_a_million_hashes_in_the_frontier():
    frontier = CompactRange()
    for n in range(1_000_003 % 4096):
        frontier.append(leaf_hash(n.to_bytes(4, "big")))
    assert len(frontier.hashes) == bin(frontier.size).count("1")
    assert len(CompactRange(1_000_000, [EMPTY_ROOT] * 7).hashes) == 7  # 11110100001001000000b


@given(st.integers(0, 200), st.integers(0, 200), st.integers(1, 4))
def test_extending_in_bulk_equals_appending_one_by_one(first, second, cache_level):
    leaves = [leaf_hash(n.to_bytes(4, "big")) for n in range(first + second)]
    one_by_one, bulk = MerkleTree(cache_level), MerkleTree(cache_level)
    for leaf in leaves:
        one_by_one.append(leaf)
    bulk.extend(leaves[:first])
    bulk.extend(leaves[first:])
    assert bulk.frontier.hashes == one_by_one.frontier.hashes
    assert bulk._levels == one_by_one._levels and bulk._leaves == one_by_one._leaves
