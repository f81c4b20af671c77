"""Merkle log timings: building, roots, and proofs over a 100k-leaf log.

Run: ``.venv/bin/python bench/merkle.py [--leaves N]``. Prints one line per operation with the
mean time per call; proofs are for random (index, size) / (old, new) pairs, so most are for
historical sizes.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from attest.merkle import (
    BLAKE3,
    SHA256,
    CompactRange,
    MerkleTree,
    inclusion_proof,
    root_from_leaf_hashes,
)
from attest.proof import verify_consistency, verify_inclusion


def timed(label: str, fn: Callable[[], object], repeat: int = 1) -> None:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    per_call = (time.perf_counter() - start) / repeat
    unit, scale = ("ms", 1e3) if per_call >= 1e-3 else ("µs", 1e6)
    print(f"{label:<52} {per_call * scale:10.1f} {unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leaves", type=int, default=100_000)
    n = parser.parse_args().leaves
    rnd = random.Random(1)
    data = [b"record %d" % i for i in range(n)]
    hashes = [SHA256.hash_leaf(d) for d in data]

    timed(f"hash {n} leaves (SHA-256)", lambda: [SHA256.hash_leaf(d) for d in data])
    timed(f"hash {n} leaves (BLAKE3)", lambda: [BLAKE3.hash_leaf(d) for d in data])
    timed(f"root_from_leaf_hashes({n})", lambda: root_from_leaf_hashes(hashes))

    def build() -> MerkleTree:
        t = MerkleTree()
        for h in hashes:
            t.append_hash(h)
        return t

    timed(f"MerkleTree: append_hash x {n}", build)
    timed(f"MerkleTree.from_leaf_hashes({n})", lambda: MerkleTree.from_leaf_hashes(hashes))

    def compact() -> None:
        c = CompactRange()
        c.extend(hashes)

    timed(f"CompactRange: append x {n}", compact)
    tree = MerkleTree.from_leaf_hashes(hashes)
    sizes = [rnd.randrange(1, n + 1) for _ in range(1000)]
    pairs = [(rnd.randrange(s), s) for s in sizes]
    olds = [(rnd.randrange(1, s + 1), s) for s in sizes]

    cycle = iter(range(10**9))

    def pick(items: list[tuple[int, int]]) -> tuple[int, int]:
        return items[next(cycle) % len(items)]

    timed("root(random historical size)", lambda: tree.root(pick(pairs)[1]), 1000)
    timed(
        "inclusion_proof(random index, random size)",
        lambda: tree.inclusion_proof(*pick(pairs)),
        1000,
    )
    timed(
        "consistency_proof(random old, random new)",
        lambda: tree.consistency_proof(*pick(olds)),
        1000,
    )
    i, s = pairs[0]
    proof = tree.inclusion_proof(i, s)
    root = tree.root(s)
    timed(
        "verify_inclusion",
        lambda: verify_inclusion(index=i, size=s, leaf_hash=hashes[i], proof=proof, root=root),
        1000,
    )
    m, s2 = olds[0]
    cproof = tree.consistency_proof(m, s2)
    r1, r2 = tree.root(m), tree.root(s2)
    timed(
        "verify_consistency",
        lambda: verify_consistency(old_size=m, new_size=s2, old_root=r1, new_root=r2, proof=cproof),
        1000,
    )
    timed(
        f"standalone inclusion_proof over {n} leaf hashes",
        lambda: inclusion_proof(hashes, n // 3, n),
        5,
    )


if __name__ == "__main__":
    main()
