"""RFC 9162 Merkle trees: published CT vectors, two independent oracles, rejected proofs and properties."""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from etlb.ledger.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    perfect_nodes_for_append,
    root_hash,
    verify_consistency,
    verify_inclusion,
)


class NodeStore:
    """Perfect-subtree hashes in a dict, filled by `perfect_nodes_for_append` one leaf at a time."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.size = 0
        for data in leaves:
            self.append(data)

    def append(self, data: bytes) -> None:
        for level, index, digest in perfect_nodes_for_append(self.size, leaf_hash(data), self.read):
            self.nodes[(level, index)] = digest
        self.size += 1

    def read(self, level: int, index: int) -> bytes:
        # A KeyError here means the code under test read a subtree that is not complete yet.
        return self.nodes[(level, index)]


def unhex(hashes: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(digest) for digest in hashes]


def hexes(hashes: Sequence[bytes]) -> list[str]:
    return [digest.hex() for digest in hashes]


def flip_bit(digest: bytes, byte: int = 0, bit: int = 0) -> bytes:
    changed = bytearray(digest)
    changed[byte] ^= 1 << bit
    return bytes(changed)


# ---------------------------------------------------------------------------------------------------
# Published Certificate Transparency vectors.
#
# Copied from github.com/transparency-dev/merkle: the leaves, node hashes and roots from
# testonly/constants.go (commit 582a6ad190b6848f1d26f8bf08ddef29955d9db1), the proofs from
# proof/verify_test.go (commit 02194e9afb6c1d95b5381350007963aa70fff472). That file numbers leaves
# from 1, and the indices below count from 0.

CT_LEAVES = unhex(
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
)

# CT_NODE_HASHES[level][index] is the hash of the perfect subtree of 2**level leaves from index * 2**level.
CT_NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    [
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ],
]

# CT_ROOTS[size] is the root of the first `size` leaves, and CT_ROOTS[0] is SHA-256 of the empty string.
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# (leaf index, tree size, audit path)
CT_INCLUSION_PROOFS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        [
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        ],
    ),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# (old size, new size, consistency proof)
CT_CONSISTENCY_PROOFS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

CT_INCLUSION_CASES = [
    pytest.param(index, size, path, id=f"leaf-{index}-size-{size}") for index, size, path in CT_INCLUSION_PROOFS
]
CT_CONSISTENCY_CASES = [
    pytest.param(old, new, path, id=f"size-{old}-to-{new}") for old, new, path in CT_CONSISTENCY_PROOFS
]
CT_SIZES = [pytest.param(size, id=f"size-{size}") for size in range(len(CT_ROOTS))]


@pytest.fixture(scope="module")
def ct_store() -> NodeStore:
    return NodeStore(CT_LEAVES)


@pytest.mark.parametrize("index", range(len(CT_LEAVES)))
def test_leaf_hash_ct_vectors(index: int) -> None:
    assert leaf_hash(CT_LEAVES[index]).hex() == CT_NODE_HASHES[0][index]


def test_store_nodes_ct_vectors(ct_store: NodeStore) -> None:
    expected = {
        (level, index): digest for level, hashes in enumerate(CT_NODE_HASHES) for index, digest in enumerate(hashes)
    }

    stored = {key: digest.hex() for key, digest in ct_store.nodes.items()}

    assert stored == expected


@pytest.mark.parametrize("size", CT_SIZES)
def test_root_ct_vectors(ct_store: NodeStore, size: int) -> None:
    exact_store = NodeStore(CT_LEAVES[:size])

    assert root_hash(size, ct_store.read).hex() == CT_ROOTS[size]
    assert root_hash(size, exact_store.read).hex() == CT_ROOTS[size]


@pytest.mark.parametrize("size", CT_SIZES)
def test_compact_range_ct_vectors(size: int) -> None:
    compact = CompactRange()
    compact.extend(leaf_hash(data) for data in CT_LEAVES[:size])

    assert compact.size == size
    assert compact.root().hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION_CASES)
def test_inclusion_proof_ct_vectors(ct_store: NodeStore, index: int, size: int, path: list[str]) -> None:
    assert hexes(inclusion_proof(index, size, ct_store.read)) == path


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION_CASES)
def test_verify_inclusion_ct_vectors(index: int, size: int, path: list[str]) -> None:
    leaf = leaf_hash(CT_LEAVES[index])
    root = bytes.fromhex(CT_ROOTS[size])

    assert verify_inclusion(leaf, index, size, unhex(path), root) is True


@pytest.mark.parametrize(("old_size", "new_size", "path"), CT_CONSISTENCY_CASES)
def test_consistency_proof_ct_vectors(ct_store: NodeStore, old_size: int, new_size: int, path: list[str]) -> None:
    assert hexes(consistency_proof(old_size, new_size, ct_store.read)) == path


@pytest.mark.parametrize(("old_size", "new_size", "path"), CT_CONSISTENCY_CASES)
def test_verify_consistency_ct_vectors(old_size: int, new_size: int, path: list[str]) -> None:
    old_root = bytes.fromhex(CT_ROOTS[old_size])
    new_root = bytes.fromhex(CT_ROOTS[new_size])

    assert verify_consistency(old_size, new_size, old_root, new_root, unhex(path)) is True


# ---------------------------------------------------------------------------------------------------
# Independent oracles.
#
# pymerkle's InmemoryTree with SHA-256 and its default security mode prefixes leaves with 0x00 and
# nodes with 0x01, so its roots equal RFC 9162 roots, and an inclusion proof's `path` is the leaf
# hash followed by the RFC 9162 audit path. Its consistency proofs use another layout. Where the old
# size equals the left subtree's size, pymerkle 7.0.0 descends right and RFC 9162 descends left.
# pymerkle's paths then contain other subtrees, such as the old root when the old size is a power of
# two. So consistency proofs are checked against ReferenceTree, which writes out RFC 9162's
# definitions and is itself checked against pymerkle and the published vectors.


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def largest_power_of_two_below(size: int) -> int:
    k = 1
    while k * 2 < size:
        k *= 2
    return k


class ReferenceTree:
    """MTH, PATH and SUBPROOF of RFC 9162 section 2.1, recursive and memoised, over a list of leaves.

    Each proof element comes with the side its subtree joins the others on: "left" or "right" of
    the hash built so far, or "start" for the subtree a consistency proof starts from.
    """

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaf_hashes = [sha256(b"\x00" + data) for data in leaves]
        self._hashes: dict[tuple[int, int], bytes] = {}

    def mth(self, start: int, end: int) -> bytes:
        """Return MTH(D[start:end])."""
        if end == start:
            return sha256(b"")
        if end - start == 1:
            return self.leaf_hashes[start]
        cached = self._hashes.get((start, end))
        if cached is None:
            k = largest_power_of_two_below(end - start)
            cached = sha256(b"\x01" + self.mth(start, start + k) + self.mth(start + k, end))
            self._hashes[(start, end)] = cached
        return cached

    def path(self, index: int, start: int, end: int) -> list[tuple[bytes, str]]:
        """Return PATH(index, D[start:end]), where `index` counts from `start`."""
        if end - start == 1:
            return []
        k = largest_power_of_two_below(end - start)
        if index < k:
            return [*self.path(index, start, start + k), (self.mth(start + k, end), "right")]
        return [*self.path(index - k, start + k, end), (self.mth(start, start + k), "left")]

    def subproof(self, old_size: int, start: int, end: int, complete: bool) -> list[tuple[bytes, str]]:
        """Return SUBPROOF(old_size, D[start:end], complete), where `old_size` counts from `start`."""
        if old_size == end - start:
            return [] if complete else [(self.mth(start, end), "start")]
        k = largest_power_of_two_below(end - start)
        if old_size <= k:
            return [*self.subproof(old_size, start, start + k, complete), (self.mth(start + k, end), "right")]
        return [*self.subproof(old_size - k, start + k, end, False), (self.mth(start, start + k), "left")]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return [digest for digest, _ in self.path(index, 0, size)]

    def inclusion_sides(self, index: int, size: int) -> list[str]:
        return [side for _, side in self.path(index, 0, size)]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return [digest for digest, _ in self.subproof(old_size, 0, new_size, True)]

    def consistency_sides(self, old_size: int, new_size: int) -> list[str]:
        return [side for _, side in self.subproof(old_size, 0, new_size, True)]


def make_leaves(count: int, seed: int) -> list[bytes]:
    """Return `count` leaves of random bytes, each prefixed with its index so that no two are equal."""
    rng = random.Random(seed)
    return [b"%d:" % index + rng.randbytes(rng.randrange(40)) for index in range(count)]


@dataclass
class Oracle:
    leaves: list[bytes]
    store: NodeStore
    pymerkle: InmemoryTree
    reference: ReferenceTree

    def root(self, size: int) -> bytes:
        return root_hash(size, self.store.read)


@functools.cache
def oracle(size: int) -> Oracle:
    """Build a store, a pymerkle tree and a reference tree of exactly `size` leaves."""
    leaves = make_leaves(size, seed=size)
    tree = InmemoryTree(algorithm="sha256", disable_security=False)
    tree.append_entries(leaves)
    return Oracle(leaves, NodeStore(leaves), tree, ReferenceTree(leaves))


SMALL_SIZES = list(range(1, 65))
RANDOM_SIZES = sorted(random.Random(9162).sample(range(65, 2049), 4))
ORACLE_SIZES = [pytest.param(size, id=f"size-{size}") for size in SMALL_SIZES + RANDOM_SIZES]


def test_pymerkle_hashes_rfc_9162() -> None:
    tree = InmemoryTree(algorithm="sha256", disable_security=False)
    tree.append_entries(CT_LEAVES)

    assert [tree.get_root(size).hex() for size in range(1, 9)] == CT_ROOTS[1:]


@pytest.mark.parametrize(("old_size", "new_size", "path"), CT_CONSISTENCY_CASES)
def test_reference_ct_vectors(old_size: int, new_size: int, path: list[str]) -> None:
    assert hexes(ReferenceTree(CT_LEAVES).consistency_proof(old_size, new_size)) == path


@pytest.mark.parametrize("size", ORACLE_SIZES)
def test_reference_matches_pymerkle(size: int) -> None:
    case = oracle(size)

    assert case.reference.mth(0, size) == case.pymerkle.get_root(size)
    for index in range(size):
        expected = case.pymerkle.prove_inclusion(index + 1, size).path[1:]
        assert case.reference.inclusion_proof(index, size) == expected, f"leaf {index}"


@pytest.mark.parametrize("size", ORACLE_SIZES)
def test_root_matches_pymerkle(size: int) -> None:
    case = oracle(size)
    compact = CompactRange()
    compact.extend(leaf_hash(data) for data in case.leaves)

    assert case.root(size) == case.pymerkle.get_root(size)
    assert compact.root() == case.pymerkle.get_root(size)


@pytest.mark.parametrize("size", ORACLE_SIZES)
def test_inclusion_matches_pymerkle(size: int) -> None:
    case = oracle(size)
    root = case.root(size)

    for index in range(size):
        leaf = leaf_hash(case.leaves[index])
        expected = case.pymerkle.prove_inclusion(index + 1, size).path
        proof = inclusion_proof(index, size, case.store.read)
        assert leaf == expected[0], f"leaf {index}"
        assert proof == expected[1:], f"leaf {index}"
        assert verify_inclusion(leaf, index, size, proof, root) is True, f"leaf {index}"


@pytest.mark.parametrize("size", ORACLE_SIZES)
def test_consistency_matches_reference(size: int) -> None:
    case = oracle(size)
    new_root = case.root(size)

    for old_size in range(1, size + 1):
        proof = consistency_proof(old_size, size, case.store.read)
        assert proof == case.reference.consistency_proof(old_size, size), f"old size {old_size}"
        assert verify_consistency(old_size, size, case.root(old_size), new_root, proof) is True, f"old size {old_size}"


@pytest.mark.parametrize("size", [pytest.param(size, id=f"size-{size}") for size in SMALL_SIZES])
def test_proofs_from_larger_store(size: int) -> None:
    """A store that has grown past `size` must still give the proofs of the tree of `size` leaves."""
    exact = oracle(size)
    leaves = make_leaves(100, seed=size)
    assert leaves[:size] == exact.leaves
    larger = NodeStore(leaves)

    assert root_hash(size, larger.read) == exact.root(size)
    for index in range(size):
        expected = inclusion_proof(index, size, exact.store.read)
        assert inclusion_proof(index, size, larger.read) == expected, f"leaf {index}"
    for old_size in range(1, size + 1):
        expected = consistency_proof(old_size, size, exact.store.read)
        assert consistency_proof(old_size, size, larger.read) == expected, f"old size {old_size}"


# ---------------------------------------------------------------------------------------------------
# Wrong proofs: every probe below must make the verifier return False, and none may raise.

MUTATION_SIZES = [pytest.param(size, id=f"size-{size}") for size in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 33, 64)]
OTHER_HASH = sha256(b"not a node of any tree here")


@functools.cache
def mutation_oracle() -> Oracle:
    """An oracle with leaves past the largest mutation size, for the roots of size + 1."""
    return oracle(66)


def proof_mutations(proof: list[bytes]) -> list[tuple[str, list[bytes]]]:
    """Return each element with one bit flipped (first and last byte), and truncated and extended copies."""
    mutations = []
    for position in range(len(proof)):
        for byte, bit in ((0, 0), (31, 7)):
            flipped = list(proof)
            flipped[position] = flip_bit(proof[position], byte, bit)
            mutations.append((f"bit {bit} of byte {byte} of element {position} flipped", flipped))
    if proof:
        mutations.append(("last element removed", proof[:-1]))
        mutations.append(("first element removed", proof[1:]))
    mutations.append(("hash appended", [*proof, OTHER_HASH]))
    mutations.append(("hash prepended", [OTHER_HASH, *proof]))
    mutations.append(("short element appended", [*proof, OTHER_HASH[:31]]))
    return mutations


@pytest.mark.parametrize("size", MUTATION_SIZES)
def test_verify_inclusion_rejects_wrong_proofs(size: int) -> None:
    case = mutation_oracle()
    root = case.root(size)

    for index in range(size):
        data = case.leaves[index]
        leaf = leaf_hash(data)
        proof = inclusion_proof(index, size, case.store.read)
        assert verify_inclusion(leaf, index, size, proof, root) is True

        probes = [(name, (leaf, index, size, mutated, root)) for name, mutated in proof_mutations(proof)]
        probes += [
            ("flipped leaf hash", (flip_bit(leaf), index, size, proof, root)),
            ("leaf hash of other data", (leaf_hash(data + b"x"), index, size, proof, root)),
            ("leaf data in place of its hash", (data, index, size, proof, root)),
            ("index - 1", (leaf, index - 1, size, proof, root)),
            ("index + 1", (leaf, index + 1, size, proof, root)),
            ("size - 1 with its root", (leaf, index, size - 1, proof, case.root(size - 1))),
            ("size + 1 with its root", (leaf, index, size + 1, proof, case.root(size + 1))),
            ("flipped root", (leaf, index, size, proof, flip_bit(root))),
            ("empty-tree root", (leaf, index, size, proof, bytes.fromhex(CT_ROOTS[0]))),
            ("root of size + 1", (leaf, index, size, proof, case.root(size + 1))),
        ]
        for name, arguments in probes:
            assert verify_inclusion(*arguments) is False, f"leaf {index}: {name}"


@pytest.mark.parametrize("size", MUTATION_SIZES)
def test_verify_inclusion_wrong_size_same_root(size: int) -> None:
    """With its own root, a proof verifies at a wrong size exactly when both sizes give every sibling the same side.

    RFC 9162's verifier uses the tree size only for the sibling sides and the path length. Where those
    match, it rebuilds the same root, so the proof for leaf 0 of 3 leaves also verifies as leaf 0 of
    4 leaves against the 3-leaf root. A signed tree head binds each size to its own root, and
    against that root the wrong size fails (the "with its root" probes above).
    """
    case = mutation_oracle()
    root = case.root(size)

    for index in range(size):
        leaf = leaf_hash(case.leaves[index])
        proof = inclusion_proof(index, size, case.store.read)
        expected_sides = case.reference.inclusion_sides(index, size)
        for wrong_size in (size - 1, size + 1):
            same_sides = index < wrong_size and case.reference.inclusion_sides(index, wrong_size) == expected_sides
            accepted = verify_inclusion(leaf, index, wrong_size, proof, root)
            assert accepted is same_sides, f"leaf {index}, size {wrong_size}"


def test_verify_inclusion_wrong_size_example() -> None:
    case = mutation_oracle()
    proof = inclusion_proof(0, 3, case.store.read)

    assert verify_inclusion(leaf_hash(case.leaves[0]), 0, 4, proof, case.root(3)) is True
    assert verify_inclusion(leaf_hash(case.leaves[0]), 0, 4, proof, case.root(4)) is False


@pytest.mark.parametrize("size", MUTATION_SIZES)
def test_verify_consistency_rejects_wrong_proofs(size: int) -> None:
    case = mutation_oracle()
    new_root = case.root(size)

    for old_size in range(1, size):
        old_root = case.root(old_size)
        proof = consistency_proof(old_size, size, case.store.read)
        assert verify_consistency(old_size, size, old_root, new_root, proof) is True

        probes = [(name, (old_size, size, old_root, new_root, mutated)) for name, mutated in proof_mutations(proof)]
        probes += [
            ("old root prepended", (old_size, size, old_root, new_root, [old_root, *proof])),
            ("new root appended", (old_size, size, old_root, new_root, [*proof, new_root])),
            ("empty proof", (old_size, size, old_root, new_root, [])),
            ("flipped old root", (old_size, size, flip_bit(old_root), new_root, proof)),
            ("flipped new root", (old_size, size, old_root, flip_bit(new_root), proof)),
            ("swapped roots", (old_size, size, new_root, old_root, proof)),
            ("swapped sizes", (size, old_size, old_root, new_root, proof)),
            ("swapped sizes and roots", (size, old_size, new_root, old_root, proof)),
            ("old size - 1", (old_size - 1, size, old_root, new_root, proof)),
            ("old size + 1", (old_size + 1, size, old_root, new_root, proof)),
            ("old size - 1 with its root", (old_size - 1, size, case.root(old_size - 1), new_root, proof)),
            ("old size + 1 with its root", (old_size + 1, size, case.root(old_size + 1), new_root, proof)),
            ("new size - 1 with its root", (old_size, size - 1, old_root, case.root(size - 1), proof)),
            ("new size + 1 with its root", (old_size, size + 1, old_root, case.root(size + 1), proof)),
        ]
        for name, arguments in probes:
            assert verify_consistency(*arguments) is False, f"old size {old_size}: {name}"


@pytest.mark.parametrize("size", MUTATION_SIZES)
def test_verify_consistency_wrong_new_size_same_root(size: int) -> None:
    """As for inclusion proofs, with its own roots a proof verifies at a wrong new size exactly when the sides match."""
    case = mutation_oracle()
    new_root = case.root(size)

    for old_size in range(1, size):
        old_root = case.root(old_size)
        proof = consistency_proof(old_size, size, case.store.read)
        expected_sides = case.reference.consistency_sides(old_size, size)
        for wrong_size in (size - 1, size + 1):
            same_sides = (
                old_size < wrong_size and case.reference.consistency_sides(old_size, wrong_size) == expected_sides
            )
            accepted = verify_consistency(old_size, wrong_size, old_root, new_root, proof)
            assert accepted is same_sides, f"old size {old_size}, new size {wrong_size}"


@pytest.mark.parametrize("size", MUTATION_SIZES)
def test_verify_consistency_same_size(size: int) -> None:
    case = mutation_oracle()
    root = case.root(size)

    assert consistency_proof(size, size, case.store.read) == []
    assert verify_consistency(size, size, root, root, []) is True
    assert verify_consistency(size, size, root, flip_bit(root), []) is False
    assert verify_consistency(size, size, root, root, [root]) is False


@pytest.mark.parametrize(
    ("index", "size"),
    [
        pytest.param(-1, 5, id="negative-index"),
        pytest.param(5, 5, id="index-equals-size"),
        pytest.param(6, 5, id="index-past-size"),
        pytest.param(0, 0, id="empty-tree"),
    ],
)
def test_inclusion_proof_out_of_range(index: int, size: int) -> None:
    with pytest.raises(ValueError, match="outside a tree"):
        inclusion_proof(index, size, NodeStore(CT_LEAVES).read)


@pytest.mark.parametrize(
    ("old_size", "new_size"),
    [
        pytest.param(0, 5, id="old-size-zero"),
        pytest.param(-1, 5, id="negative-old-size"),
        pytest.param(6, 5, id="old-size-above-new"),
        pytest.param(0, 0, id="both-zero"),
    ],
)
def test_consistency_proof_out_of_range(old_size: int, new_size: int) -> None:
    with pytest.raises(ValueError, match="need 0 < old <= new"):
        consistency_proof(old_size, new_size, NodeStore(CT_LEAVES).read)


@pytest.mark.parametrize(
    ("index", "size"),
    [
        pytest.param(-1, 5, id="negative-index"),
        pytest.param(5, 5, id="index-equals-size"),
        pytest.param(0, 0, id="empty-tree"),
        pytest.param(0, -1, id="negative-size"),
    ],
)
def test_verify_inclusion_out_of_range(index: int, size: int) -> None:
    leaf = leaf_hash(CT_LEAVES[0])

    assert verify_inclusion(leaf, index, size, [], leaf) is False


@pytest.mark.parametrize(
    ("old_size", "new_size"),
    [
        pytest.param(0, 0, id="both-zero"),
        pytest.param(0, 5, id="old-size-zero"),
        pytest.param(-1, 5, id="negative-old-size"),
        pytest.param(6, 5, id="old-size-above-new"),
    ],
)
def test_verify_consistency_out_of_range(old_size: int, new_size: int) -> None:
    root = bytes.fromhex(CT_ROOTS[5])

    assert verify_consistency(old_size, new_size, root, root, []) is False


# ---------------------------------------------------------------------------------------------------
# Properties.

LEAF_LISTS = st.lists(st.binary(max_size=24), max_size=40)
NON_EMPTY_LEAF_LISTS = st.lists(st.binary(min_size=1, max_size=24), min_size=1, max_size=40)


def root_of(leaves: Sequence[bytes]) -> bytes:
    return root_hash(len(leaves), NodeStore(leaves).read)


@settings(max_examples=100, deadline=None)
@given(leaves=LEAF_LISTS)
def test_compact_range_matches_root_hash(leaves: list[bytes]) -> None:
    store = NodeStore(leaves)
    compact = CompactRange()
    assert compact.root() == root_hash(0, store.read)

    for size, data in enumerate(leaves, start=1):
        compact.append(leaf_hash(data))
        assert compact.root() == root_hash(size, store.read), f"size {size}"


@settings(max_examples=100, deadline=None)
@given(leaves=NON_EMPTY_LEAF_LISTS, data=st.data())
def test_byte_change_changes_root(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1), label="leaf index")
    position = data.draw(st.integers(0, len(leaves[index]) - 1), label="byte position")
    mask = data.draw(st.integers(1, 255), label="xor mask")
    changed = bytearray(leaves[index])
    changed[position] ^= mask
    tampered = [*leaves[:index], bytes(changed), *leaves[index + 1 :]]

    assert root_of(tampered) != root_of(leaves)


@settings(max_examples=100, deadline=None)
@given(leaves=NON_EMPTY_LEAF_LISTS, data=st.data())
def test_consistency_between_prefixes(leaves: list[bytes], data: st.DataObject) -> None:
    new_size = data.draw(st.integers(1, len(leaves)), label="new size")
    old_size = data.draw(st.integers(1, new_size), label="old size")
    changed_index = data.draw(st.integers(0, old_size - 1), label="changed leaf")
    store = NodeStore(leaves)
    tampered_leaves = list(leaves)
    tampered_leaves[changed_index] += b"!"
    tampered = NodeStore(tampered_leaves)

    old_root = root_hash(old_size, store.read)
    new_root = root_hash(new_size, store.read)
    proof = consistency_proof(old_size, new_size, store.read)
    tampered_old_root = root_hash(old_size, tampered.read)
    tampered_new_root = root_hash(new_size, tampered.read)
    tampered_proof = consistency_proof(old_size, new_size, tampered.read)

    assert verify_consistency(old_size, new_size, old_root, new_root, proof) is True
    assert verify_consistency(old_size, new_size, tampered_old_root, new_root, proof) is False
    assert verify_consistency(old_size, new_size, old_root, tampered_new_root, tampered_proof) is False
