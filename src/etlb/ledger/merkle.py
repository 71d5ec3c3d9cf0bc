"""Merkle tree hashes, inclusion proofs and consistency proofs of RFC 9162 (Certificate Transparency 2.0).

No I/O. Trees are read through a `NodeReader`, which returns the hash of a *perfect* subtree: the
2**level leaves starting at leaf `index * 2**level`. A store keeps those hashes insert-only as leaves
are appended, so a root needs one read per set bit of the tree size, and a proof needs at most one
read per set bit of each of its O(log n) elements.

Hashes (RFC 9162 section 2.1.1): a leaf is SHA-256(0x00 || data), an interior node is
SHA-256(0x01 || left || right), and a tree of n > 1 leaves splits at k, the largest power of two
smaller than n.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "HASH_SIZE",
    "CompactRange",
    "NodeReader",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "perfect_nodes_for_append",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

# Returns the hash of the perfect subtree at (level, index); raises if the store does not have it.
NodeReader = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """Return k, the largest power of two smaller than `size` (size > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def perfect_nodes_for_append(index: int, leaf: bytes, read: NodeReader) -> list[tuple[int, int, bytes]]:
    """Return the perfect subtrees completed by appending leaf number `index` with hash `leaf`.

    The first entry is the leaf itself at level 0. While the new node is a right child, its left
    sibling is read and their parent is finished one level up.
    """
    nodes = [(0, index, leaf)]
    level, position, current = 0, index, leaf
    while position % 2 == 1:
        left = read(level, position - 1)
        current = node_hash(left, current)
        level, position = level + 1, position // 2
        nodes.append((level, position, current))
    return nodes


def _range_hash(start: int, size: int, read: NodeReader) -> bytes:
    """Return MTH of the `size` leaves from `start`, for ranges that arise in RFC 9162's recursions.

    Such a range starts at a multiple of every power of two not above `size`, so it decomposes into
    perfect subtrees, one per set bit of `size` from the highest, folded from the right.
    """
    if size == 0:
        return EMPTY_ROOT

    subtrees: list[bytes] = []
    position = start
    for level in reversed(range(size.bit_length())):
        if size & (1 << level):
            subtrees.append(read(level, position >> level))
            position += 1 << level

    result = subtrees[-1]
    for left in reversed(subtrees[:-1]):
        result = node_hash(left, result)
    return result


def root_hash(size: int, read: NodeReader) -> bytes:
    """Return the Merkle tree hash of the first `size` leaves (MTH, RFC 9162 section 2.1.1)."""
    return _range_hash(0, size, read)


def inclusion_proof(index: int, size: int, read: NodeReader) -> list[bytes]:
    """Generate the inclusion proof PATH(m, D[n]) of RFC 9162 section 2.1.3.1."""
    if not 0 <= index < size:
        message = f"leaf index {index} is outside a tree of size {size}"
        raise ValueError(message)

    path: list[bytes] = []
    start, length, target = 0, size, index
    # The recursion descends toward the leaf, and each level adds the sibling subtree's hash. The
    # RFC lists the deepest sibling first, so the hashes are collected top-down and reversed.
    while length > 1:
        k = _split(length)
        if target < k:
            path.append(_range_hash(start + k, length - k, read))
            length = k
        else:
            path.append(_range_hash(start, k, read))
            start, length, target = start + k, length - k, target - k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, read: NodeReader) -> list[bytes]:
    """Generate the consistency proof PROOF(m, D[n]) of RFC 9162 section 2.1.4.1."""
    if not 0 < old_size <= new_size:
        message = f"no consistency proof from size {old_size} to size {new_size}: need 0 < old <= new"
        raise ValueError(message)

    proof: list[bytes] = []
    start, length, target, complete = 0, new_size, old_size, True
    # SUBPROOF(m, D[start:start+length], complete), unrolled; the RFC appends on the way back up,
    # so the hashes are collected top-down and reversed at the end.
    while target != length:
        k = _split(length)
        if target <= k:
            proof.append(_range_hash(start + k, length - k, read))
            length = k
        else:
            proof.append(_range_hash(start, k, read))
            start, length, target, complete = start + k, length - k, target - k, False
    if not complete:
        proof.append(_range_hash(start, length, read))
    proof.reverse()
    return proof


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Verify an inclusion proof by the algorithm of RFC 9162 section 2.1.3.2."""
    if not 0 <= index < size or any(len(item) != HASH_SIZE for item in proof):
        return False

    fn, sn = index, size - 1
    result = leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            if not fn & 1:
                while fn != 0 and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and result == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """Verify a consistency proof by the algorithm of RFC 9162 section 2.1.4.2."""
    if any(len(item) != HASH_SIZE for item in proof) or not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False

    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)

    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1

    first_result = second_result = path[0]
    for item in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first_result = node_hash(item, first_result)
            second_result = node_hash(item, second_result)
            if not fn & 1:
                while fn != 0 and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            second_result = node_hash(second_result, item)
        fn >>= 1
        sn >>= 1
    return sn == 0 and first_result == old_root and second_result == new_root


class CompactRange:
    """The perfect subtrees covering a growing prefix of leaves, for one pass over a whole log.

    Appending costs O(1) amortised and `root()` O(log n), so a verifier can recompute the root at
    every checkpoint of a log in a single streaming pass without storing interior nodes.
    """

    def __init__(self) -> None:
        self.size = 0
        self._peaks: list[tuple[int, bytes]] = []

    def append(self, leaf: bytes) -> None:
        level, current = 0, leaf
        while self._peaks and self._peaks[-1][0] == level:
            _, left = self._peaks.pop()
            current = node_hash(left, current)
            level += 1
        self._peaks.append((level, current))
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        result = self._peaks[-1][1]
        for _, left in reversed(self._peaks[:-1]):
            result = node_hash(left, result)
        return result
