"""Merkle tree construction: spec known answers, a naive RFC 6962 reference, properties.

Oracles (STYLE.md principle 11):
1. Known answers: the empty root and the roots of the first 1..8 leaves of the RFC 6962 test
   inputs, as published in transparency-dev/merkle ``testonly/constants.go`` (``RootHashes``).
2. A naive recursive reference of MTH, PATH and PROOF written straight from RFC 6962 §2.1,
   compared with every (index, size) and (old, new) pair up to 128 leaves.
3. hypothesis: CompactRange and MerkleTree agree with root_from_leaf_hashes on random input.
"""

from __future__ import annotations

import hashlib
from functools import cache

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.errors import ConfigurationError, FormatError
from attest.merkle import (
    BLAKE3,
    LEAF_PREFIX,
    NODE_PREFIX,
    SHA256,
    CompactRange,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    root_from_leaf_hashes,
)
from attest.proof import verify_consistency, verify_inclusion

# RFC 6962 test leaf inputs (hex) and the roots of their prefixes, sizes 0..8. Values from
# transparency-dev/merkle testonly/constants.go (LeafInputs, RootHashes); size 0 is SHA-256("").
RFC6962_INPUTS = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
RFC6962_ROOTS = [
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

# --- naive reference, RFC 6962 §2.1, over D[lo:hi] of a fixed leaf list ------------------------

REF_N = 128
REF_DATA = [b"leaf-%d" % i for i in range(REF_N)]


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@cache
def ref_mth(lo: int, hi: int) -> bytes:
    n = hi - lo
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + REF_DATA[lo])
    k = _k(n)
    return _h(b"\x01" + ref_mth(lo, lo + k) + ref_mth(lo + k, hi))


def ref_path(m: int, lo: int, hi: int) -> list[bytes]:
    n = hi - lo
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, lo, lo + k), ref_mth(lo + k, hi)]
    return [*ref_path(m - k, lo + k, hi), ref_mth(lo, lo + k)]


def ref_subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if b else [ref_mth(lo, hi)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, lo, lo + k, b), ref_mth(lo + k, hi)]
    return [*ref_subproof(m - k, lo + k, hi, False), ref_mth(lo, lo + k)]


def ref_proof(m: int, n: int) -> list[bytes]:
    return ref_subproof(m, 0, n, True)


@pytest.fixture(scope="module")
def ref_tree() -> MerkleTree:
    tree = MerkleTree()
    for data in REF_DATA:
        tree.append(data)
    return tree


# --- known answers ---------------------------------------------------------------------------


def test_prefixes_are_rfc6962() -> None:
    assert LEAF_PREFIX == b"\x00"
    assert NODE_PREFIX == b"\x01"
    assert SHA256.hash_leaf(b"x") == _h(b"\x00x")
    assert SHA256.hash_children(b"a" * 32, b"b" * 32) == _h(b"\x01" + b"a" * 32 + b"b" * 32)


def test_empty_root_is_sha256_of_nothing() -> None:
    assert SHA256.empty_root().hex() == RFC6962_ROOTS[0]
    assert root_from_leaf_hashes([]).hex() == RFC6962_ROOTS[0]
    assert MerkleTree().root().hex() == RFC6962_ROOTS[0]
    assert CompactRange().root().hex() == RFC6962_ROOTS[0]


@pytest.mark.parametrize("size", range(len(RFC6962_ROOTS)))
def test_rfc6962_prefix_roots(size: int) -> None:
    hashes = [SHA256.hash_leaf(bytes.fromhex(x)) for x in RFC6962_INPUTS[:size]]
    expected = RFC6962_ROOTS[size]
    assert root_from_leaf_hashes(hashes).hex() == expected
    tree = MerkleTree()
    for x in RFC6962_INPUTS[:size]:
        tree.append(bytes.fromhex(x))
    assert tree.root().hex() == expected
    rng = CompactRange()
    rng.extend(hashes)
    assert rng.root().hex() == expected


def test_rfc6962_historical_roots_from_full_tree() -> None:
    tree = MerkleTree.from_leaf_hashes([SHA256.hash_leaf(bytes.fromhex(x)) for x in RFC6962_INPUTS])
    assert [tree.root(n).hex() for n in range(9)] == RFC6962_ROOTS


def test_blake3_hasher_matches_blake3_by_hand() -> None:
    leaves = [BLAKE3.hash_leaf(bytes.fromhex(x)) for x in RFC6962_INPUTS[:3]]
    assert leaves[0] == blake3.blake3(b"\x00").digest()
    expected = blake3.blake3(
        b"\x01" + blake3.blake3(b"\x01" + leaves[0] + leaves[1]).digest() + leaves[2]
    ).digest()
    assert root_from_leaf_hashes(leaves, hasher=BLAKE3) == expected
    assert BLAKE3.empty_root() == blake3.blake3(b"").digest()
    assert expected != root_from_leaf_hashes(
        [SHA256.hash_leaf(bytes.fromhex(x)) for x in RFC6962_INPUTS[:3]]
    )


def test_blake3_tree_proofs_verify_with_blake3() -> None:
    tree = MerkleTree(hasher=BLAKE3)
    for i in range(13):
        tree.append(b"%d" % i)
    proof = tree.inclusion_proof(5, 13)
    verify_inclusion(
        index=5, size=13, leaf_hash=tree.leaf_hash(5), proof=proof, root=tree.root(), hasher=BLAKE3
    )
    cproof = tree.consistency_proof(6, 13)
    verify_consistency(
        old_size=6,
        new_size=13,
        old_root=tree.root(6),
        new_root=tree.root(13),
        proof=cproof,
        hasher=BLAKE3,
    )


# --- differential against the reference --------------------------------------------------------


def test_roots_equal_reference_for_every_size(ref_tree: MerkleTree) -> None:
    hashes = [ref_tree.leaf_hash(i) for i in range(REF_N)]
    for n in range(REF_N + 1):
        expected = ref_mth(0, n)
        assert ref_tree.root(n) == expected, n
        assert root_from_leaf_hashes(hashes[:n]) == expected, n


def test_inclusion_proofs_equal_reference(ref_tree: MerkleTree) -> None:
    for n in range(1, REF_N + 1):
        root = ref_mth(0, n)
        for m in range(n):
            proof = ref_tree.inclusion_proof(m, n)
            assert proof == ref_path(m, 0, n), (m, n)
            verify_inclusion(index=m, size=n, leaf_hash=ref_mth(m, m + 1), proof=proof, root=root)


def test_consistency_proofs_equal_reference(ref_tree: MerkleTree) -> None:
    for n in range(1, REF_N + 1):
        for m in range(1, n + 1):
            proof = ref_tree.consistency_proof(m, n)
            assert proof == ref_proof(m, n), (m, n)
            verify_consistency(
                old_size=m, new_size=n, old_root=ref_mth(0, m), new_root=ref_mth(0, n), proof=proof
            )


def test_standalone_proofs_equal_tree_proofs(ref_tree: MerkleTree) -> None:
    hashes = [ref_tree.leaf_hash(i) for i in range(REF_N)]
    for n in (1, 2, 3, 7, 8, 9, 64, 100, 128):
        for m in range(n):
            assert inclusion_proof(hashes, m, n) == ref_tree.inclusion_proof(m, n)
        for m in range(1, n + 1):
            assert consistency_proof(hashes, m, n) == ref_tree.consistency_proof(m, n)


def test_append_and_from_leaf_hashes_build_the_same_tree(ref_tree: MerkleTree) -> None:
    hashes = [ref_tree.leaf_hash(i) for i in range(REF_N)]
    bulk = MerkleTree.from_leaf_hashes(hashes)
    assert bulk.size == REF_N
    for n in range(REF_N + 1):
        assert bulk.root(n) == ref_tree.root(n)
    # appending after a bulk load keeps levels consistent
    bulk.append(b"one more")
    grown = MerkleTree.from_leaf_hashes([*hashes, SHA256.hash_leaf(b"one more")])
    assert bulk.root() == grown.root()
    assert bulk.inclusion_proof(3, 129) == grown.inclusion_proof(3, 129)


def test_append_returns_index() -> None:
    tree = MerkleTree()
    assert [tree.append(b"%d" % i) for i in range(5)] == [0, 1, 2, 3, 4]
    assert tree.append_hash(SHA256.hash_leaf(b"x")) == 5
    assert tree.size == 6


# --- compact range -----------------------------------------------------------------------------


def test_compact_range_state_round_trip() -> None:
    rng = CompactRange()
    hashes = [SHA256.hash_leaf(b"%d" % i) for i in range(11)]
    rng.extend(hashes)
    assert rng.size == 11
    assert len(rng.hashes) == 3  # 11 = 0b1011
    restored = CompactRange.from_state(size=rng.size, hashes=rng.hashes)
    restored.append(SHA256.hash_leaf(b"11"))
    assert restored.root() == root_from_leaf_hashes([*hashes, SHA256.hash_leaf(b"11")])


def test_compact_range_rejects_inconsistent_state() -> None:
    with pytest.raises(FormatError, match="one hash per set bit"):
        CompactRange.from_state(size=11, hashes=[b"\x00" * 32] * 2)
    with pytest.raises(FormatError, match="32-byte"):
        CompactRange.from_state(size=1, hashes=[b"\x00" * 31])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=300))
def test_compact_range_root_equals_batch_root(hashes: list[bytes]) -> None:
    rng = CompactRange()
    for i, h in enumerate(hashes):
        rng.append(h)
        assert rng.size == i + 1
    assert rng.root() == root_from_leaf_hashes(hashes)
    assert rng.root() == MerkleTree.from_leaf_hashes(hashes).root()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=200), st.data())
def test_historical_roots_equal_prefix_roots(hashes: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree()
    for h in hashes:
        tree.append_hash(h)
    n = data.draw(st.integers(0, len(hashes)))
    assert tree.root(n) == root_from_leaf_hashes(hashes[:n])


# --- bad input -------------------------------------------------------------------------------


def test_wrong_length_hashes_are_refused() -> None:
    with pytest.raises(FormatError, match=r"leaf_hashes\[1\]"):
        root_from_leaf_hashes([b"\x00" * 32, b"\x00" * 31])
    with pytest.raises(FormatError):
        MerkleTree().append_hash(b"\x00" * 33)
    with pytest.raises(FormatError):
        CompactRange().append(b"")


def test_out_of_range_requests_are_refused(ref_tree: MerkleTree) -> None:
    with pytest.raises(ConfigurationError, match="not below size"):
        ref_tree.inclusion_proof(5, 5)
    with pytest.raises(ConfigurationError, match="exceeds"):
        ref_tree.inclusion_proof(0, REF_N + 1)
    with pytest.raises(ConfigurationError, match="size 0"):
        ref_tree.consistency_proof(0, 5)
    with pytest.raises(ConfigurationError, match="larger than"):
        ref_tree.consistency_proof(6, 5)
    with pytest.raises(ConfigurationError):
        ref_tree.root(REF_N + 1)
    with pytest.raises(ConfigurationError):
        ref_tree.root(-1)
    with pytest.raises(ConfigurationError):
        ref_tree.leaf_hash(REF_N)
