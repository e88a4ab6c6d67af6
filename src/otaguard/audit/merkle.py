"""RFC 9162 Merkle trees: hashes, tree heads, proofs and incremental append.

Why these shapes:

* Proof *generation* reads complete-subtree hashes through :class:`HashSource`
  (``node(level, index)``), so a log stored as hash tiles, in a database table
  or in memory answers a proof with O(log n) reads, never by rehashing the
  entries. Only complete subtrees are ever stored; the single incomplete
  ("ephemeral") subtree a proof may need is folded from O(log n) complete ones.
* *Verification* follows the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2 step
  by step, and takes nothing but hashes, sizes and the proof: it never needs
  the source, so an auditor checks a proof with nothing of the log's.
* :class:`CompactRange` is the right edge of a tree (one hash per set bit of its
  size). Appending leaves to it yields the new tree head and every new complete
  node, which is what a server stores, in its own transaction, with O(log n)
  work per entry (amortised O(1) hashes).

Node coordinates: ``(level, index)`` is the complete subtree of ``2**level``
leaves starting at leaf ``index << level``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from otaguard.errors import AuditConsistencyError, AuditTreeError

HASH_SIZE = 32
#: RFC 9162 §2.1.1: the hash of an empty list is the hash of an empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()
#: A tree of at most 2**63 leaves has proofs of at most 2 * 63 hashes.
MAX_TREE_SIZE = (1 << 63) - 1
MAX_PROOF_HASHES = 2 * 64

_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 §2.1.1: ``MTH({d(0)}) = HASH(0x00 || d(0))``."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: ``HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))``.

    The 0x00/0x01 prefixes keep a leaf from ever being read as an inner node
    (second-preimage attack on the tree).
    """
    return _sha256(b"\x01" + left + right).digest()


@dataclass(frozen=True, slots=True)
class Node:
    """A complete subtree: ``2**level`` leaves from leaf ``index << level``."""

    level: int
    index: int
    hash: bytes


class HashSource(Protocol):
    """Where proof generation reads the hashes of complete subtrees."""

    def node(self, level: int, index: int) -> bytes:
        """The hash of complete subtree ``(level, index)``; it must lie inside the tree."""
        ...


def split_point(width: int) -> int:
    """RFC 9162 §2.1.1: k, the largest power of two smaller than ``width`` (> 1)."""
    return 1 << ((width - 1).bit_length() - 1)


def range_nodes(begin: int, end: int) -> list[tuple[int, int]]:
    """The complete subtrees that exactly cover leaves ``[begin, end)``, left to right.

    Each is the largest aligned subtree that starts where the previous ended and fits.
    """
    nodes = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range given its complete subtrees in decreasing size, left to right.

    RFC 9162 §2.1.1 splits at the largest power of two, i.e. the first subtree, and
    recurses on the rest: folding from the right computes exactly that.
    """
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def _range_hash(source: HashSource, begin: int, end: int) -> bytes:
    """MTH(D[begin:end]) where ``begin`` is aligned to a power of two >= end - begin."""
    return fold_right([source.node(level, index) for level, index in range_nodes(begin, end)])


def _subtree(source: HashSource, begin: int, width: int) -> bytes:
    level = width.bit_length() - 1
    return source.node(level, begin >> level)


def root_hash(source: HashSource, size: int) -> bytes:
    """The tree head MTH(D[0:size]) from at most log2(size) + 1 stored hashes."""
    if not 0 <= size <= MAX_TREE_SIZE:
        raise ValueError(f"tree size {size} out of range")
    return _range_hash(source, 0, size) if size else EMPTY_ROOT


def inclusion_proof(source: HashSource, index: int, size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), bottom-up.

    The recursion is walked top-down: the left siblings are complete subtrees;
    only the first right sibling, before the path turns left, can be incomplete,
    so the proof costs O(log n) reads.
    """
    if not 0 <= index < size <= MAX_TREE_SIZE:
        raise ValueError(f"no leaf {index} in a tree of size {size}")
    path = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index < lo + k:  # PATH(m, D[0:k]) : MTH(D[k:n])
            path.append(_range_hash(source, lo + k, hi))
            hi = lo + k
        else:  # PATH(m - k, D[k:n]) : MTH(D[0:k])
            path.append(_subtree(source, lo, k))
            lo += k
    path.reverse()
    return path


def consistency_proof(source: HashSource, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(m, D[0:n]) = SUBPROOF(m, D[0:n], true).

    Walked top-down like :func:`inclusion_proof`: once the walk turns left the
    remaining range is a complete subtree, so at most one right sibling is incomplete.
    """
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    proof = []
    lo, hi = 0, new_size
    from_start = True  # SUBPROOF's b: the subtree is still the old tree's leftmost
    while old_size != hi:  # m (relative: old_size - lo) < n (relative: hi - lo)
        k = split_point(hi - lo)
        if old_size - lo <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            proof.append(_range_hash(source, lo + k, hi))
            hi = lo + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            proof.append(_subtree(source, lo, k))
            lo += k
            from_start = False
    if not from_start:  # m == n and b is false: the old subtree's own hash
        proof.append(_subtree(source, lo, hi - lo))
    proof.reverse()
    return proof


def _check_hashes(
    hashes: Sequence[bytes], error: type[AuditTreeError | AuditConsistencyError]
) -> None:
    if len(hashes) > MAX_PROOF_HASHES:
        raise error(f"proof of {len(hashes)} hashes is longer than any tree allows")
    if any(len(h) != HASH_SIZE for h in hashes):
        raise error("proof holds a hash that is not 32 bytes")


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2: raise :class:`AuditTreeError` unless ``proof`` puts ``leaf``
    (a leaf hash) at ``index`` in the tree of ``size`` leaves whose head is ``root``."""
    _check_hashes([leaf, root, *proof], AuditTreeError)
    # 1. leaf_index >= tree_size fails.
    if not 0 <= index < size <= MAX_TREE_SIZE:
        raise AuditTreeError(f"no leaf {index} in a tree of size {size}", index=index)
    # 2.-3.
    fn, sn = index, size - 1
    r = leaf
    # 4.
    for p in proof:
        if sn == 0:  # 4a.
            raise AuditTreeError("inclusion proof is too long", index=index)
        if fn & 1 or fn == sn:  # 4b.
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1  # 4c.
        sn >>= 1
    # 5.
    if sn != 0:
        raise AuditTreeError("inclusion proof is too short", index=index)
    if r != root:
        raise AuditTreeError(
            f"inclusion proof of entry {index} does not lead to the root hash", index=index
        )


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """RFC 9162 §2.1.4.2: raise :class:`AuditConsistencyError` unless the tree of
    ``new_size`` leaves (head ``new_root``) extends the one of ``old_size`` (``old_root``)."""
    _check_hashes([old_root, new_root, *proof], AuditConsistencyError)
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise AuditConsistencyError(f"a tree of {new_size} cannot extend one of {old_size}")
    if old_size == new_size:
        if proof or old_root != new_root:
            raise AuditConsistencyError(f"two different root hashes for tree size {old_size}")
        return
    if old_size == 0:
        if proof or old_root != EMPTY_ROOT:
            raise AuditConsistencyError("the empty tree has no proof and the empty root")
        return
    # 1. An empty proof fails.
    if not proof:
        raise AuditConsistencyError("empty consistency proof")
    path = list(proof)
    # 2. first an exact power of 2: prepend first_hash.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3.
    fn, sn = old_size - 1, new_size - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:  # 6a.
            raise AuditConsistencyError("consistency proof is too long")
        if fn & 1 or fn == sn:  # 6b.
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1  # 6c.
        sn >>= 1
    # 7.
    if sn != 0:
        raise AuditConsistencyError("consistency proof is too short")
    if fr != old_root:
        raise AuditConsistencyError(
            f"consistency proof does not lead to the root hash of size {old_size}"
        )
    if sr != new_root:
        raise AuditConsistencyError(
            f"consistency proof does not lead to the root hash of size {new_size}"
        )


@dataclass(frozen=True)
class CompactRange:
    """The right edge of a tree of ``size`` leaves: the hashes of the complete
    subtrees of :func:`range_nodes` ``(0, size)``, largest first.

    It is all a log needs to append (O(log n) hashes), and its fold is the tree head.
    """

    size: int
    hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.hashes) != self.size.bit_count() or not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError("a compact range holds one hash per set bit of its size")

    @classmethod
    def empty(cls) -> CompactRange:
        return cls(0, ())

    @classmethod
    def from_source(cls, source: HashSource, size: int) -> CompactRange:
        """The right edge of a stored tree, from at most log2(size) + 1 reads."""
        return cls(size, tuple(source.node(lvl, idx) for lvl, idx in range_nodes(0, size)))

    def root(self) -> bytes:
        return fold_right(self.hashes) if self.hashes else EMPTY_ROOT

    def append(self, leaf_hashes: Iterable[bytes]) -> tuple[CompactRange, list[Node]]:
        """The tree with ``leaf_hashes`` appended, and every complete node they
        created (each leaf, and each inner node that became complete), in order.

        A log stores what it needs of the nodes (hash tiles keep levels 0, 8, 16...).
        """
        size = self.size
        stack = list(self.hashes)
        created: list[Node] = []
        for leaf in leaf_hashes:
            if len(leaf) != HASH_SIZE:
                raise ValueError("a leaf hash is 32 bytes")
            created.append(Node(0, size, leaf))
            h = leaf
            level, index, carry = 0, size, size
            while carry & 1:  # one merge per trailing one bit of the old size
                h = node_hash(stack.pop(), h)
                carry >>= 1
                level += 1
                index >>= 1
                created.append(Node(level, index, h))
            stack.append(h)
            size += 1
        return CompactRange(size, tuple(stack)), created
