"""RFC 9162 Merkle trees: known answers, corrupted proofs, and two independent
implementations from PyPI (sigstore-python's Trillian-derived inclusion check,
pymerkle's tree) checking what ours produces."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InclusionProof as PymerkleInclusion
from pymerkle import InmemoryTree
from pymerkle.core import _inclusion_path_layout
from sigstore.errors import VerificationError

from helpers_audit import ListSource, sigstore_inclusion
from otaguard.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    range_nodes,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from otaguard.errors import AuditConsistencyError, AuditTreeError

# transparency-dev/merkle testonly/constants.go: leaf inputs, every complete node, the
# root of every prefix; and proof/verify_test.go's proof vectors (leaf numbers from 1).
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
NODES = {
    (0, 0): "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    (0, 1): "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    (0, 2): "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    (0, 3): "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    (0, 4): "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    (0, 5): "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    (0, 6): "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    (0, 7): "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    (1, 0): "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    (1, 1): "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    (1, 2): "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    (1, 3): "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    (2, 0): "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    (2, 1): "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    (3, 0): "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
ROOTS = [
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
INCLUSION = [  # (leaf number from 1, tree size, proof)
    (1, 8, [NODES[(0, 1)], NODES[(1, 1)], NODES[(2, 1)]]),
    (6, 8, [NODES[(0, 4)], NODES[(1, 3)], NODES[(2, 0)]]),
    (3, 3, [NODES[(1, 0)]]),
    (2, 5, [NODES[(0, 0)], NODES[(1, 1)], NODES[(0, 4)]]),
]
CONSISTENCY = [  # (size1, size2, proof)
    (1, 8, [NODES[(0, 1)], NODES[(1, 1)], NODES[(2, 1)]]),
    (6, 8, [NODES[(1, 2)], NODES[(1, 3)], NODES[(2, 0)]]),
    (2, 5, [NODES[(1, 1)], NODES[(0, 4)]]),
    (6, 7, [NODES[(1, 2)], NODES[(0, 6)], NODES[(2, 0)]]),
]
SOURCE = ListSource(LEAVES)
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert h(ROOTS[0]) == EMPTY_ROOT
    assert root_hash(SOURCE, 0) == EMPTY_ROOT
    assert CompactRange.empty().root() == EMPTY_ROOT


def test_every_node_and_root_matches_the_reference_vectors() -> None:
    assert {k: v.hex() for k, v in SOURCE.nodes.items()} == NODES
    tree = CompactRange.empty()
    for size, leaf in enumerate(LEAVES, start=1):
        tree, _ = tree.append([leaf_hash(leaf)])
        assert tree.root() == h(ROOTS[size]) == root_hash(SOURCE, size)


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_inclusion_proof_vectors(leaf: int, size: int, proof: list[str]) -> None:
    assert inclusion_proof(SOURCE, leaf - 1, size) == [h(p) for p in proof]
    verify_inclusion(
        leaf_hash(LEAVES[leaf - 1]), leaf - 1, size, [h(p) for p in proof], h(ROOTS[size])
    )


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_consistency_proof_vectors(size1: int, size2: int, proof: list[str]) -> None:
    assert consistency_proof(SOURCE, size1, size2) == [h(p) for p in proof]
    verify_consistency(size1, size2, [h(p) for p in proof], h(ROOTS[size1]), h(ROOTS[size2]))


def _inclusion_probes(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes):
    """transparency-dev's corruptInclusionProof: each must be refused."""
    yield index - 1, size, leaf, proof, root
    yield index + 1, size, leaf, proof, root
    yield index ^ 2, size, leaf, proof, root
    yield index, size * 2, leaf, proof, root
    yield index, size // 2, leaf, proof, root
    yield index, size, leaf_hash(b"WrongLeaf"), proof, root
    yield index, size, leaf, proof, EMPTY_ROOT
    yield index, size, leaf, proof, SOME_HASH
    yield index, size, leaf, [*proof, root], root
    yield index, size, leaf, [root, *proof], root
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        yield index, size, leaf, flipped, root
    if proof:
        yield index, size, leaf, proof[:-1], root
    if len(proof) > 1:
        yield index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root


@pytest.mark.parametrize("size", range(1, 9))
def test_every_corrupted_inclusion_proof_is_refused(size: int) -> None:
    root = h(ROOTS[size])
    for index in range(size):
        proof = inclusion_proof(SOURCE, index, size)
        leaf = leaf_hash(LEAVES[index])
        verify_inclusion(leaf, index, size, proof, root)
        for probe in _inclusion_probes(index, size, proof, root, leaf):
            with pytest.raises(AuditTreeError):
                verify_inclusion(probe[2], probe[0], probe[1], probe[3], probe[4])


@pytest.mark.parametrize("size2", range(2, 9))
def test_every_corrupted_consistency_proof_is_refused(size2: int) -> None:
    for size1 in range(1, size2):
        proof = consistency_proof(SOURCE, size1, size2)
        r1, r2 = h(ROOTS[size1]), h(ROOTS[size2])
        verify_consistency(size1, size2, proof, r1, r2)
        probes = [
            (size1 - 1, size2, r1, r2, proof),
            (size1 + 1, size2, r1, r2, proof),
            (size1 ^ 2, size2, r1, r2, proof),
            (size1, size2 * 2, r1, r2, proof),
            (size1, size2 // 2, r1, r2, proof),
            (size1, size2, SOME_HASH, r2, proof),
            (size1, size2, r1, SOME_HASH, proof),
            (size1, size2, r2, r1, proof),
            (size1, size2, r1, r2, []),
            (size1, size2, r1, r2, [*proof, r1]),
            (size1, size2, r1, r2, [*proof, r2]),
            (size1, size2, r1, r2, [r1, *proof]),
            (size1, size2, r1, r2, [r2, *proof]),
            (size1, size2, r1, r2, [proof[0], *proof]),
            (size1, size2, r1, r2, proof[:-1]),
        ]
        for i in range(len(proof)):
            flipped = list(proof)
            flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
            probes.append((size1, size2, r1, r2, flipped))
        for s1, s2, a, b, p in probes:
            with pytest.raises(AuditConsistencyError):
                verify_consistency(s1, s2, p, a, b)


def test_trivial_consistency_cases() -> None:
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    verify_consistency(0, 5, [], EMPTY_ROOT, h(ROOTS[5]))
    verify_consistency(3, 3, [], h(ROOTS[3]), h(ROOTS[3]))
    for args in [
        (1, 0, [], h(ROOTS[1]), EMPTY_ROOT),  # time travel to the past
        (3, 3, [], h(ROOTS[3]), h(ROOTS[4])),  # same size, two roots
        (3, 3, [EMPTY_ROOT], h(ROOTS[3]), h(ROOTS[3])),  # same size, a proof
        (0, 1, [EMPTY_ROOT], EMPTY_ROOT, h(ROOTS[1])),
        (1, 2, [], h(ROOTS[1]), h(ROOTS[2])),  # empty proof
        (1, 2, [b"short"], h(ROOTS[1]), h(ROOTS[2])),  # not a hash
    ]:
        with pytest.raises(AuditConsistencyError):
            verify_consistency(*args)


def _pymerkle_tree(n: int) -> InmemoryTree:
    tree = InmemoryTree(algorithm="sha256")  # security on: 0x00 / 0x01 prefixes (RFC 9162)
    for i in range(n):
        tree.append_entry(b"entry %d" % i)
    return tree


PYMERKLE_SIZE = 70
PYMERKLE = _pymerkle_tree(PYMERKLE_SIZE)
OURS = ListSource([b"entry %d" % i for i in range(PYMERKLE_SIZE)])


def test_roots_agree_with_pymerkle_at_every_size() -> None:
    for size in range(1, PYMERKLE_SIZE + 1):
        assert root_hash(OURS, size) == PYMERKLE.get_root(size)


def test_inclusion_proofs_verify_with_sigstore_and_pymerkle() -> None:
    for size in range(1, PYMERKLE_SIZE + 1, 3):
        root = root_hash(OURS, size)
        for index in range(size):
            proof = inclusion_proof(OURS, index, size)
            entry = b"entry %d" % index
            sigstore_inclusion(entry, index, size, proof, root)
            rule, _ = _inclusion_path_layout(index + 1, size)
            theirs = PymerkleInclusion(
                "sha256", True, size, index + 1, rule, [leaf_hash(entry), *proof]
            )
            theirs.verify(leaf_hash(entry), root, index=index + 1, size=size)
            # and pymerkle's own proof carries the same sibling hashes, bottom-up
            assert PYMERKLE.prove_inclusion(index + 1, size).path[1:] == proof


def test_sigstore_refuses_what_we_refuse() -> None:
    root = root_hash(OURS, 37)
    proof = inclusion_proof(OURS, 11, 37)
    bad = [proof[0], bytes(32), *proof[2:]]
    with pytest.raises(VerificationError):
        sigstore_inclusion(b"entry 11", 11, 37, bad, root)
    with pytest.raises(AuditTreeError):
        verify_inclusion(leaf_hash(b"entry 11"), 11, 37, bad, root)
    with pytest.raises(VerificationError):
        sigstore_inclusion(b"entry 12", 11, 37, proof, root)


def _rfc_subproof(m: int, lo: int, hi: int, b: bool) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.4.1 SUBPROOF, transcribed literally, as the ranges it hashes."""
    n = hi - lo
    if m == n:
        return [] if b else [(lo, hi)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*_rfc_subproof(m, lo, lo + k, b), (lo + k, hi)]
    return [*_rfc_subproof(m - k, lo + k, hi, False), (lo, lo + k)]


def test_consistency_proofs_are_the_rfc_ranges_hashed_by_pymerkle() -> None:
    """Each hash of our proof is pymerkle's hash of the range RFC 9162's SUBPROOF names,
    and the proof links pymerkle's two roots through our RFC §2.1.4.2 verifier."""
    for new in range(2, PYMERKLE_SIZE + 1):
        for old in range(1, new):
            proof = consistency_proof(OURS, old, new)
            ranges = _rfc_subproof(old, 0, new, True)
            assert proof == [PYMERKLE._get_root(a, b) for a, b in ranges]
            verify_consistency(old, new, proof, PYMERKLE.get_root(old), PYMERKLE.get_root(new))
            # pymerkle's own consistency proof agrees that these two states are consistent
            PYMERKLE.prove_consistency(old, new).verify(
                PYMERKLE.get_root(old), PYMERKLE.get_root(new)
            )


@given(st.integers(min_value=1, max_value=5000), st.data())
@settings(max_examples=60, deadline=None)
def test_compact_range_agrees_with_range_nodes(size: int, data: st.DataObject) -> None:
    leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(size)]
    tree, created = CompactRange.empty().append(leaves)
    nodes = {(n.level, n.index): n.hash for n in created}
    assert tree.hashes == tuple(nodes[k] for k in range_nodes(0, size))
    split = data.draw(st.integers(min_value=0, max_value=size))
    first, _ = CompactRange.empty().append(leaves[:split])
    second, _ = first.append(leaves[split:])
    assert second == tree


class _Counting:
    def __init__(self, nodes: dict[tuple[int, int], bytes]) -> None:
        self.nodes = nodes
        self.reads = 0

    def node(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.nodes[(level, index)]


@given(st.integers(min_value=1, max_value=3000), st.data())
@settings(max_examples=80, deadline=None)
def test_proofs_verify_and_cost_logarithmic_reads(size: int, data: st.DataObject) -> None:
    leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(size)]
    tree, created = CompactRange.empty().append(leaves)
    source = _Counting({(n.level, n.index): n.hash for n in created})
    root = tree.root()
    bound = 2 * size.bit_length() + 2
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = inclusion_proof(source, index, size)
    assert source.reads <= bound
    verify_inclusion(leaves[index], index, size, proof, root)
    old = data.draw(st.integers(min_value=0, max_value=size))
    source.reads = 0
    cproof = consistency_proof(source, old, size)
    assert source.reads <= bound
    verify_consistency(old, size, cproof, root_hash(source, old), root)
