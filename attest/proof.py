"""Pure verification of RFC 9162 Merkle inclusion and consistency proofs.

Functions over bytes and integers only: no I/O, no clock, no tree. Construction lives in
:mod:`attest.merkle`; this module depends on it only for the :class:`~attest.merkle.Hasher`
protocol and the default :data:`~attest.merkle.SHA256` hasher.

- :func:`root_from_inclusion_proof` / :func:`verify_inclusion` follow RFC 9162 §2.1.3.2.
- :func:`verify_consistency` follows RFC 9162 §2.1.4.2.

Before running the RFC algorithm each function checks the arguments and the proof's *length*
(the only length that can verify for the given index and sizes), so a wrong proof is reported
as exactly what is wrong. Every failure raises :class:`attest.errors.ProofError` carrying
``expected`` and ``got``: a root mismatch carries the expected root and the calculated root in
hex. Edge cases handled on purpose: hashes of the wrong length, ``index >= size``, consistency
from size 0 (rejected, even 0 → 0), ``old_size > new_size``, equal sizes (empty proof and equal
roots), and an old size that is a power of two (the old root is the proof's implicit first node).
"""

from __future__ import annotations

from collections.abc import Sequence

from attest.errors import ProofError
from attest.merkle import SHA256, Hasher

__all__ = [
    "consistency_proof_length",
    "inclusion_proof_length",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
]


def _check_int(label: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProofError(f"{label} must be a non-negative integer", got=value)
    return value


def _check_hash(label: str, value: object, hasher: Hasher) -> bytes:
    size = hasher.digest_size
    if not isinstance(value, bytes) or len(value) != size:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise ProofError(
            f"{label} is not a {size}-byte {hasher.name} hash", expected=f"{size} bytes", got=got
        )
    return value


def _check_proof(proof: Sequence[bytes], expected_length: int, hasher: Hasher, what: str) -> None:
    if len(proof) != expected_length:
        raise ProofError(
            f"{what} has {len(proof)} hashes; {expected_length} are expected for these sizes",
            expected=expected_length,
            got=len(proof),
        )
    for i, h in enumerate(proof):
        _check_hash(f"proof[{i}]", h, hasher)


def inclusion_proof_length(index: int, size: int) -> int:
    """The number of hashes in the inclusion proof for ``index < size``.

    The paths to ``index`` and ``size - 1`` share all levels above ``inner``; below it each
    level contributes a sibling, above it only levels where ``index`` is a right child do.
    """
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def consistency_proof_length(old_size: int, new_size: int) -> int:
    """The number of hashes in the consistency proof for ``0 < old_size <= new_size``.

    Counts the nodes SUBPROOF of RFC 9162 §2.1.4.1 emits, running the recursion on sizes only.
    """
    m, n, length, complete = old_size, new_size, 0, True
    while m != n:
        k = 1 << ((n - 1).bit_length() - 1)
        length += 1
        if m <= k:
            n = k
        else:
            m, n, complete = m - k, n - k, False
    return length + (0 if complete else 1)


def root_from_inclusion_proof(
    *,
    index: int,
    size: int,
    leaf_hash: bytes,
    proof: Sequence[bytes],
    hasher: Hasher = SHA256,
) -> bytes:
    """The root implied by ``proof`` for ``leaf_hash`` at ``index`` (RFC 9162 §2.1.3.2, 1–5)."""
    index = _check_int("index", index)
    size = _check_int("size", size)
    if index >= size:
        raise ProofError(
            f"leaf index {index} is not below tree size {size}", expected=f"< {size}", got=index
        )
    _check_hash("leaf_hash", leaf_hash, hasher)
    _check_proof(proof, inclusion_proof_length(index, size), hasher, "inclusion proof")

    hc = hasher.hash_children
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:  # unreachable after the length check; kept as the RFC states it
            raise ProofError("inclusion proof is longer than the path", got=len(proof))
        if fn & 1 or fn == sn:
            r = hc(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hc(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # unreachable after the length check
        raise ProofError("inclusion proof is shorter than the path", got=len(proof))
    return r


def verify_inclusion(
    *,
    index: int,
    size: int,
    leaf_hash: bytes,
    proof: Sequence[bytes],
    root: bytes,
    hasher: Hasher = SHA256,
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    Raises :class:`ProofError`; a root mismatch carries the expected and calculated roots (hex).
    """
    _check_hash("root", root, hasher)
    calculated = root_from_inclusion_proof(
        index=index, size=size, leaf_hash=leaf_hash, proof=proof, hasher=hasher
    )
    if calculated != root:
        raise ProofError(
            f"inclusion proof for leaf {index} of {size} leads to a different root",
            expected=root.hex(),
            got=calculated.hex(),
        )


def verify_consistency(
    *,
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
    hasher: Hasher = SHA256,
) -> None:
    """Check that the tree of ``new_size`` leaves extends the tree of ``old_size`` leaves.

    RFC 9162 §2.1.4.2. A proof from size 0 is rejected: the empty tree is consistent with every
    tree, so such a proof would prove nothing.
    """
    old_size = _check_int("old_size", old_size)
    new_size = _check_int("new_size", new_size)
    _check_hash("old_root", old_root, hasher)
    _check_hash("new_root", new_root, hasher)
    if old_size == 0:
        raise ProofError(
            "a consistency proof from tree size 0 proves nothing", expected="> 0", got=old_size
        )
    if old_size > new_size:
        raise ProofError(
            f"old tree size {old_size} is larger than new tree size {new_size}",
            expected=f"<= {new_size}",
            got=old_size,
        )
    if old_size == new_size:
        _check_proof(proof, 0, hasher, "consistency proof between equal sizes")
        if old_root != new_root:
            raise ProofError(
                f"two different roots for the same tree size {old_size}",
                expected=old_root.hex(),
                got=new_root.hex(),
            )
        return
    _check_proof(proof, consistency_proof_length(old_size, new_size), hasher, "consistency proof")

    hc = hasher.hash_children
    path = list(proof)
    # 2. An old size that is a power of two is a complete subtree: its root starts the path.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3.–4. Walk up past the levels where the old tree's last leaf is a right child.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.–6.
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # unreachable after the length check
            raise ProofError("consistency proof is longer than the path", got=len(proof))
        if fn & 1 or fn == sn:
            fr = hc(c, fr)
            sr = hc(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = hc(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:  # unreachable after the length check
        raise ProofError("consistency proof is shorter than the path", got=len(proof))
    if fr != old_root:
        raise ProofError(
            f"consistency proof {old_size} -> {new_size} does not reproduce the old root",
            expected=old_root.hex(),
            got=fr.hex(),
        )
    if sr != new_root:
        raise ProofError(
            f"consistency proof {old_size} -> {new_size} does not reproduce the new root",
            expected=new_root.hex(),
            got=sr.hex(),
        )
