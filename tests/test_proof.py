"""Proof verification: honest proofs pass; every named mutation is caught by ProofError.

Proofs come from attest.merkle (itself checked against a naive RFC 6962 reference in
test_merkle.py). Inclusion proofs are also recomputed with sigstore-python's independent RFC 6962
helpers. Mutations are named after what they do (wrong-leaf, flipped-proof-bit, truncated-proof,
extra-hash, index-plus-one, ...), following the transparency-dev/merkle test vector style.
"""

from __future__ import annotations

import random

import pytest
from sigstore._internal import merkle as sigstore_merkle

from attest.errors import ProofError, VerificationError
from attest.merkle import SHA256, MerkleTree
from attest.proof import (
    consistency_proof_length,
    inclusion_proof_length,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

N = 128


@pytest.fixture(scope="module")
def tree() -> MerkleTree:
    t = MerkleTree()
    for i in range(N):
        t.append(b"entry %d" % i)
    return t


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# --- inclusion -------------------------------------------------------------------------------


def test_inclusion_known_answer_rfc6962_inputs() -> None:
    leaves = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657"]
    t = MerkleTree()
    for x in [*leaves, "606162636465666768696a6b6c6d6e6f"]:
        t.append(bytes.fromhex(x))
    root = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    for i in range(8):
        verify_inclusion(
            index=i, size=8, leaf_hash=t.leaf_hash(i), proof=t.inclusion_proof(i, 8), root=root
        )


@pytest.mark.slow
def test_every_inclusion_mutation_is_caught(tree: MerkleTree) -> None:
    rnd = random.Random(6962)
    for size in range(1, N + 1):
        root = tree.root(size)
        for index in range(size):
            leaf = tree.leaf_hash(index)
            proof = tree.inclusion_proof(index, size)
            assert len(proof) == inclusion_proof_length(index, size)
            verify_inclusion(index=index, size=size, leaf_hash=leaf, proof=proof, root=root)

            honest = {"index": index, "size": size, "leaf_hash": leaf, "proof": proof, "root": root}

            def rejects(honest: dict[str, object] = honest, **change: object) -> None:
                with pytest.raises(ProofError):
                    verify_inclusion(**{**honest, **change})  # type: ignore[arg-type]

            rejects(leaf_hash=flip(leaf, rnd.randrange(256)))  # wrong-leaf
            rejects(root=flip(root, rnd.randrange(256)))  # wrong-root
            for j in range(len(proof)):  # flipped-proof-bit
                bad = list(proof)
                bad[j] = flip(bad[j], rnd.randrange(256))
                rejects(proof=bad)
            rejects(proof=[*proof, leaf])  # extra-hash
            rejects(proof=[leaf, *proof])  # preceding-garbage
            if proof:
                rejects(proof=proof[:-1])  # truncated-proof
            rejects(index=index + 1)  # index-plus-one
            if index > 0:
                rejects(index=index - 1)  # index-minus-one
            # size-plus/minus-one, against the root published for that size
            if size < N:
                rejects(size=size + 1, root=tree.root(size + 1))
            if size > 1 and index < size - 1:
                rejects(size=size - 1, root=tree.root(size - 1))


def test_every_bit_of_a_proof_matters(tree: MerkleTree) -> None:
    proof = tree.inclusion_proof(37, 100)
    root = tree.root(100)
    for j in range(len(proof)):
        for bit in range(256):
            bad = list(proof)
            bad[j] = flip(bad[j], bit)
            with pytest.raises(ProofError):
                verify_inclusion(
                    index=37, size=100, leaf_hash=tree.leaf_hash(37), proof=bad, root=root
                )


def test_root_mismatch_carries_expected_and_calculated_roots(tree: MerkleTree) -> None:
    wrong_root = bytes(32)
    with pytest.raises(ProofError) as info:
        verify_inclusion(
            index=3,
            size=10,
            leaf_hash=tree.leaf_hash(3),
            proof=tree.inclusion_proof(3, 10),
            root=wrong_root,
        )
    assert info.value.expected == wrong_root.hex()
    assert info.value.got == tree.root(10).hex()
    assert isinstance(info.value, VerificationError)


def test_wrong_proof_length_names_expected_length(tree: MerkleTree) -> None:
    proof = tree.inclusion_proof(3, 10)
    with pytest.raises(ProofError, match="4 are expected") as info:
        verify_inclusion(
            index=3, size=10, leaf_hash=tree.leaf_hash(3), proof=proof[:-1], root=tree.root(10)
        )
    assert (info.value.expected, info.value.got) == (4, 3)


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("index-equals-size", {"index": 10}, "not below tree size"),
        ("index-beyond-size", {"index": 11}, "not below tree size"),
        ("size-zero", {"size": 0, "index": 0}, "not below tree size"),
        ("negative-index", {"index": -1}, "non-negative"),
        ("bool-index", {"index": True}, "non-negative"),
        ("short-leaf-hash", {"leaf_hash": b"\x00" * 31}, "leaf_hash is not a 32-byte"),
        ("long-root", {"root": b"\x00" * 33}, "root is not a 32-byte"),
        ("str-root", {"root": "00" * 32}, "root is not a 32-byte"),
    ],
)
def test_inclusion_bad_arguments(
    tree: MerkleTree, name: str, change: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {
        "index": 3,
        "size": 10,
        "leaf_hash": tree.leaf_hash(3),
        "proof": tree.inclusion_proof(3, 10),
        "root": tree.root(10),
    }
    args.update(change)
    with pytest.raises(ProofError, match=message):
        verify_inclusion(**args)  # type: ignore[arg-type]


def test_short_hash_inside_proof_is_refused(tree: MerkleTree) -> None:
    proof = tree.inclusion_proof(3, 10)
    proof[1] = proof[1][:31]
    with pytest.raises(ProofError, match=r"proof\[1\]"):
        verify_inclusion(
            index=3, size=10, leaf_hash=tree.leaf_hash(3), proof=proof, root=tree.root(10)
        )


def test_single_leaf_tree_has_empty_proof() -> None:
    leaf = SHA256.hash_leaf(b"only")
    verify_inclusion(index=0, size=1, leaf_hash=leaf, proof=[], root=leaf)
    with pytest.raises(ProofError):
        verify_inclusion(index=0, size=1, leaf_hash=leaf, proof=[leaf], root=leaf)


# --- independent implementation: sigstore-python ---------------------------------------------


def sigstore_root(index: int, size: int, leaf_hash: bytes, proof: list[bytes]) -> bytes:
    """Root computed with sigstore-python's private RFC 6962 helpers (a thin adapter)."""
    inner, border = sigstore_merkle._decomp_inclusion_proof(index, size)
    assert len(proof) == inner + border
    seed = sigstore_merkle._chain_inner(leaf_hash, proof[:inner], index)
    return sigstore_merkle._chain_border_right(seed, proof[inner:])


def test_inclusion_proofs_verify_with_sigstore(tree: MerkleTree) -> None:
    for size in range(1, N + 1):
        root = tree.root(size)
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            leaf = tree.leaf_hash(index)
            assert sigstore_root(index, size, leaf, proof) == root, (index, size)
            assert (
                root_from_inclusion_proof(index=index, size=size, leaf_hash=leaf, proof=proof)
                == root
            )


def test_leaf_hash_agrees_with_sigstore() -> None:
    assert sigstore_merkle._hash_leaf(b"entry 0") == SHA256.hash_leaf(b"entry 0")


# --- consistency -----------------------------------------------------------------------------


@pytest.mark.slow
def test_every_consistency_mutation_is_caught(tree: MerkleTree) -> None:
    rnd = random.Random(9162)
    for new in range(1, N + 1):
        new_root = tree.root(new)
        for old in range(1, new + 1):
            old_root = tree.root(old)
            proof = tree.consistency_proof(old, new)
            assert len(proof) == (consistency_proof_length(old, new) if old < new else 0)
            verify_consistency(
                old_size=old, new_size=new, old_root=old_root, new_root=new_root, proof=proof
            )

            honest = {
                "old_size": old,
                "new_size": new,
                "old_root": old_root,
                "new_root": new_root,
                "proof": proof,
            }

            def rejects(honest: dict[str, object] = honest, **change: object) -> None:
                with pytest.raises(ProofError):
                    verify_consistency(**{**honest, **change})  # type: ignore[arg-type]

            rejects(old_root=flip(old_root, rnd.randrange(256)))  # wrong-old-root
            rejects(new_root=flip(new_root, rnd.randrange(256)))  # wrong-new-root
            for j in range(len(proof)):  # flipped-proof-bit
                bad = list(proof)
                bad[j] = flip(bad[j], rnd.randrange(256))
                rejects(proof=bad)
            rejects(proof=[*proof, old_root])  # extra-hash
            rejects(proof=[old_root, *proof])  # preceding-garbage
            if proof:
                rejects(proof=proof[:-1])  # truncated-proof
                rejects(proof=proof[1:])  # dropped-first-hash
            if old > 1:  # old-size-minus-one, against that size's root
                rejects(old_size=old - 1, old_root=tree.root(old - 1))
            if old < new:  # old-size-plus-one
                rejects(old_size=old + 1, old_root=tree.root(old + 1))
            if new < N:  # new-size-plus-one
                rejects(new_size=new + 1, new_root=tree.root(new + 1))
            if new > old:  # new-size-minus-one
                rejects(new_size=new - 1, new_root=tree.root(new - 1))


def test_consistency_from_zero_is_rejected(tree: MerkleTree) -> None:
    empty = SHA256.empty_root()
    with pytest.raises(ProofError, match="size 0"):
        verify_consistency(old_size=0, new_size=0, old_root=empty, new_root=empty, proof=[])
    with pytest.raises(ProofError, match="size 0"):
        verify_consistency(old_size=0, new_size=5, old_root=empty, new_root=tree.root(5), proof=[])


def test_consistency_old_larger_than_new_is_rejected(tree: MerkleTree) -> None:
    with pytest.raises(ProofError, match="larger than new"):
        verify_consistency(
            old_size=6, new_size=5, old_root=tree.root(6), new_root=tree.root(5), proof=[]
        )


def test_equal_sizes_need_empty_proof_and_equal_roots(tree: MerkleTree) -> None:
    root = tree.root(7)
    verify_consistency(old_size=7, new_size=7, old_root=root, new_root=root, proof=[])
    with pytest.raises(ProofError, match="0 are expected"):
        verify_consistency(old_size=7, new_size=7, old_root=root, new_root=root, proof=[root])
    with pytest.raises(ProofError, match="two different roots") as info:
        verify_consistency(old_size=7, new_size=7, old_root=root, new_root=tree.root(8), proof=[])
    assert info.value.expected == root.hex()


def test_power_of_two_old_size_uses_old_root_as_first_node(tree: MerkleTree) -> None:
    # For old = 4, new = 8 the proof is the single sibling subtree [4, 8); the old root is
    # implicit, so a forged old root shows up as a new-root mismatch.
    proof = tree.consistency_proof(4, 8)
    assert len(proof) == 1
    verify_consistency(
        old_size=4, new_size=8, old_root=tree.root(4), new_root=tree.root(8), proof=proof
    )
    with pytest.raises(ProofError, match="new root"):
        verify_consistency(
            old_size=4, new_size=8, old_root=tree.root(3), new_root=tree.root(8), proof=proof
        )


def test_consistency_root_mismatch_carries_evidence(tree: MerkleTree) -> None:
    proof = tree.consistency_proof(5, 9)
    with pytest.raises(ProofError, match="new root") as info:
        verify_consistency(
            old_size=5, new_size=9, old_root=tree.root(5), new_root=tree.root(10), proof=proof
        )
    assert info.value.expected == tree.root(10).hex()
    assert info.value.got == tree.root(9).hex()


def test_consistency_bad_hash_length(tree: MerkleTree) -> None:
    with pytest.raises(ProofError, match="old_root is not a 32-byte"):
        verify_consistency(
            old_size=3, new_size=5, old_root=b"\x00", new_root=tree.root(5), proof=[]
        )
