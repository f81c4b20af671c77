"""Merkle tree *construction* for RFC 6962 / RFC 9162 §2.1 logs.

The Merkle Tree Hash of a list of ``n`` leaves (RFC 9162 §2.1.1) is::

    MTH({})        = HASH()
    MTH({d0})      = HASH(0x00 || d0)                      (a leaf hash)
    MTH(D[0:n])    = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   k = largest power of two < n

The hash function is *injected* through the :class:`Hasher` protocol, with the two domain
separation prefixes named :data:`LEAF_PREFIX` and :data:`NODE_PREFIX`. :data:`SHA256` is the
RFC 6962 hasher; :data:`BLAKE3` keeps the same structure with 32-byte BLAKE3.

Design:

- Everything here works on *leaf hashes*; hashing leaf data is the caller's one call to
  :meth:`Hasher.hash_leaf`. Pure verification lives in :mod:`attest.proof`, apart from this code.
- :func:`root_from_leaf_hashes` reduces level by level, promoting an unpaired last node: for the
  split rule above this gives the same root as the recursion, without recursion. A level is
  hashed by C-level ``map`` when the hasher is one of this module's (:func:`_parents`).
- :class:`CompactRange` keeps one hash per set bit of the size (the perfect subtrees covering
  ``[0, size)``): O(log n) state that a server can persist, O(1) amortised append.
- :class:`MerkleTree` keeps every *complete* subtree hash, level by level (about 2n hashes).
  The hash of any range a proof needs is then assembled from O(log n) stored nodes, so roots at
  historical sizes and inclusion (RFC 9162 §2.1.3.1) and consistency (§2.1.4.1) proofs cost
  O(log² n) look-ups and hash computations (about 20 µs per proof at 100k leaves here).
- The standalone :func:`inclusion_proof` / :func:`consistency_proof` take a plain sequence of leaf
  hashes (say, read from SQL) and cost O(n) hashing per proof.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Sequence
from typing import Protocol

from attest.errors import ConfigurationError, FormatError

__all__ = [
    "BLAKE3",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "SHA256",
    "CompactRange",
    "Hasher",
    "MerkleTree",
    "consistency_proof",
    "inclusion_proof",
    "root_from_leaf_hashes",
]

LEAF_PREFIX = b"\x00"
"""Domain separation byte hashed before a leaf's data (RFC 9162 §2.1.1)."""
NODE_PREFIX = b"\x01"
"""Domain separation byte hashed before two child hashes (RFC 9162 §2.1.1)."""


class Hasher(Protocol):
    """The hash function of a Merkle tree, with RFC 6962 domain separation."""

    @property
    def name(self) -> str:
        """Short algorithm name (``sha256``, ``blake3``)."""
        ...

    @property
    def digest_size(self) -> int:
        """Length of every hash in bytes."""
        ...

    def empty_root(self) -> bytes:
        """Root of the tree with no leaves: HASH of the empty string."""
        ...

    def hash_leaf(self, data: bytes) -> bytes:
        """HASH(0x00 || data)."""
        ...

    def hash_children(self, left: bytes, right: bytes) -> bytes:
        """HASH(0x01 || left || right)."""
        ...


class _PrefixHasher:
    """A :class:`Hasher` over any hashlib-style constructor."""

    __slots__ = ("_empty", "_new", "digest_size", "name")

    def __init__(self, name: str, new: Callable[[bytes], _Digest], digest_size: int) -> None:
        self.name = name
        self.digest_size = digest_size
        self._new = new
        self._empty = new(b"").digest()

    def empty_root(self) -> bytes:
        return self._empty

    def hash_leaf(self, data: bytes) -> bytes:
        return self._new(LEAF_PREFIX + data).digest()

    def hash_children(self, left: bytes, right: bytes) -> bytes:
        return self._new(NODE_PREFIX + left + right).digest()

    def __repr__(self) -> str:
        return f"Hasher({self.name!r})"


class _Digest(Protocol):
    def digest(self) -> bytes: ...


def _blake3_new(data: bytes) -> _Digest:
    import blake3

    digest: _Digest = blake3.blake3(data)
    return digest


_DIGEST = operator.methodcaller("digest")

SHA256: Hasher = _PrefixHasher("sha256", hashlib.sha256, 32)
"""The RFC 6962 hasher: SHA-256 with 0x00 / 0x01 prefixes."""
BLAKE3: Hasher = _PrefixHasher("blake3", _blake3_new, 32)
"""The RFC 6962 structure over BLAKE3 (32-byte output)."""


def _check_hashes(hashes: Sequence[bytes], hasher: Hasher, what: str) -> None:
    size = hasher.digest_size
    if set(map(type, hashes)) <= {bytes} and set(map(len, hashes)) <= {size}:
        return  # the usual case, checked at C speed; the loop names the first bad hash
    for i, h in enumerate(hashes):
        if not isinstance(h, bytes) or len(h) != size:
            got = len(h) if isinstance(h, bytes) else type(h).__name__
            raise FormatError(
                f"{what}[{i}] is not a {size}-byte {hasher.name} hash", expected=size, got=got
            )


def _parents(level: Sequence[bytes], hasher: Hasher) -> list[bytes]:
    """The level above ``level``: ``hash_children`` of each pair ``level[2i], level[2i+1]``
    (an unpaired last node is the caller's). With a :class:`_PrefixHasher` the pairs are
    joined and hashed by C-level ``map`` with no Python call per node (about 100k nodes for a
    log of 100k records)."""
    if type(hasher) is _PrefixHasher:
        pairs = map(operator.add, map(NODE_PREFIX.__add__, level[0::2]), level[1::2])
        return list(map(_DIGEST, map(hasher._new, pairs)))
    hc = hasher.hash_children
    return [hc(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]


def root_from_leaf_hashes(hashes: Sequence[bytes], *, hasher: Hasher = SHA256) -> bytes:
    """The Merkle Tree Hash over ``hashes`` (leaf hashes, already prefixed with 0x00).

    Iterative: each pass pairs neighbours and carries an unpaired last node up unchanged, which
    gives the RFC 9162 §2.1.1 root for every size, including 0 (``HASH()``) and 1 (the leaf).
    """
    _check_hashes(hashes, hasher, "leaf_hashes")
    if not hashes:
        return hasher.empty_root()
    level = list(hashes)
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        level = _parents(level, hasher)
        if odd is not None:
            level.append(odd)
    return level[0]


class CompactRange:
    """The O(log n) summary of a log's leaves ``[0, size)``: one hash per set bit of ``size``.

    ``hashes`` lists the perfect subtrees from the largest (leftmost) to the smallest, which is
    all a server must persist to keep appending and computing the current root.
    """

    __slots__ = ("_hasher", "_hashes", "_size")

    def __init__(self, *, hasher: Hasher = SHA256) -> None:
        self._hasher = hasher
        self._hashes: list[bytes] = []
        self._size = 0

    @classmethod
    def from_state(
        cls, *, size: int, hashes: Sequence[bytes], hasher: Hasher = SHA256
    ) -> CompactRange:
        """Rebuild a range from its persisted ``size`` and ``hashes``."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise FormatError("compact range size must be a non-negative integer", got=size)
        if len(hashes) != size.bit_count():
            raise FormatError(
                f"a compact range of size {size} has one hash per set bit of the size",
                expected=size.bit_count(),
                got=len(hashes),
            )
        _check_hashes(hashes, hasher, "compact_range.hashes")
        rng = cls(hasher=hasher)
        rng._hashes = list(hashes)
        rng._size = size
        return rng

    @property
    def size(self) -> int:
        """Number of leaves covered."""
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        """The perfect-subtree hashes, largest first (a copy)."""
        return list(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash, merging equal-sized subtrees (O(1) amortised)."""
        _check_hashes((leaf_hash,), self._hasher, "leaf_hash")
        hc = self._hasher.hash_children
        stack = self._hashes
        stack.append(leaf_hash)
        carry = self._size
        while carry & 1:
            right = stack.pop()
            stack[-1] = hc(stack[-1], right)
            carry >>= 1
        self._size += 1

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append several leaf hashes in order."""
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        """The tree's root: the subtree hashes folded from the right (O(log n))."""
        if not self._hashes:
            return self._hasher.empty_root()
        hc = self._hasher.hash_children
        acc = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            acc = hc(h, acc)
        return acc

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, hasher={self._hasher.name})"


# --- proof construction over a "range hash" oracle -------------------------------------------
#
# Both proofs need MTH(D[a:b]) only for ranges whose start is aligned to the largest power of
# two not smaller than their length. ``subtree(a, b)`` supplies those hashes; the two back ends
# are MerkleTree (stored complete nodes) and a plain list of leaf hashes (recomputed).

_RangeHash = Callable[[int, int], bytes]


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162 §2.1.1: the largest power of two strictly smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_index(index: int, size: int, available: int) -> None:
    for label, value in (("index", index), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(f"{label} must be a non-negative integer", got=value)
    if size > available:
        raise ConfigurationError(
            f"size {size} exceeds the tree's {available} leaves", expected=available, got=size
        )
    if index >= size:
        raise ConfigurationError(
            f"index {index} is not below size {size}", expected=f"< {size}", got=index
        )


def _inclusion_path(index: int, size: int, subtree: _RangeHash) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, ordered from the leaf upward.

    Below the level where the paths to ``index`` and ``size - 1`` part, every sibling is
    aligned (the last may be cut short by the tree's edge); above it, the path runs along the
    right border and the proof holds the left siblings where ``index`` has a one bit.
    """
    proof: list[bytes] = []
    inner = (index ^ (size - 1)).bit_length()
    for level in range(inner):
        start = ((index >> level) ^ 1) << level
        proof.append(subtree(start, min(start + (1 << level), size)))
    for level in range(inner, size.bit_length()):
        if (index >> level) & 1:
            start = ((index >> level) ^ 1) << level
            proof.append(subtree(start, start + (1 << level)))
    return proof


def _consistency_path(old: int, new: int, subtree: _RangeHash) -> list[bytes]:
    """PROOF(old, D[0:new]) of RFC 9162 §2.1.4.1 (SUBPROOF unrolled into a loop)."""
    nodes: list[bytes] = []
    offset = 0
    complete = True  # the "b" flag of SUBPROOF: D[offset:offset+m] is a subtree of old tree
    m, n = old, new
    while m != n:
        k = _largest_power_of_two_below(n)
        if m <= k:
            nodes.append(subtree(offset + k, offset + n))
            n = k
        else:
            nodes.append(subtree(offset, offset + k))
            offset += k
            m -= k
            n -= k
            complete = False
    if not complete:
        nodes.append(subtree(offset, offset + m))
    nodes.reverse()
    return nodes


def _check_sizes(old: int, new: int, available: int) -> None:
    for label, value in (("old_size", old), ("new_size", new)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(f"{label} must be a non-negative integer", got=value)
    if new > available:
        raise ConfigurationError(
            f"new_size {new} exceeds the tree's {available} leaves", expected=available, got=new
        )
    if old == 0:
        raise ConfigurationError("a consistency proof from size 0 is meaningless", got=old)
    if old > new:
        raise ConfigurationError(
            f"old_size {old} is larger than new_size {new}", expected=f"<= {new}", got=old
        )


def inclusion_proof(
    leaf_hashes: Sequence[bytes], index: int, size: int, *, hasher: Hasher = SHA256
) -> list[bytes]:
    """Inclusion proof for leaf ``index`` in the tree of the first ``size`` of ``leaf_hashes``.

    O(size) hashing; for repeated proofs over one log use :class:`MerkleTree`.
    """
    _check_index(index, size, len(leaf_hashes))

    def subtree(a: int, b: int) -> bytes:
        return root_from_leaf_hashes(leaf_hashes[a:b], hasher=hasher)

    return _inclusion_path(index, size, subtree)


def consistency_proof(
    leaf_hashes: Sequence[bytes], old_size: int, new_size: int, *, hasher: Hasher = SHA256
) -> list[bytes]:
    """Consistency proof between the trees of the first ``old_size`` and ``new_size`` leaves."""
    _check_sizes(old_size, new_size, len(leaf_hashes))

    def subtree(a: int, b: int) -> bytes:
        return root_from_leaf_hashes(leaf_hashes[a:b], hasher=hasher)

    return _consistency_path(old_size, new_size, subtree)


class MerkleTree:
    """An in-memory append-only log storing every complete subtree hash.

    ``_levels[h][i]`` is the hash of leaves ``[i·2^h, (i+1)·2^h)``; level 0 holds the leaf
    hashes. Appending is O(1) amortised; roots at any size and proofs are O(log² n) look-ups.
    """

    __slots__ = ("_hasher", "_levels", "_root_cache")

    def __init__(self, *, hasher: Hasher = SHA256) -> None:
        self._hasher = hasher
        self._levels: list[list[bytes]] = [[]]
        self._root_cache: tuple[int, bytes] | None = None

    @classmethod
    def from_leaf_hashes(cls, hashes: Sequence[bytes], *, hasher: Hasher = SHA256) -> MerkleTree:
        """A tree over existing leaf hashes (for instance, reloaded from storage)."""
        _check_hashes(hashes, hasher, "leaf_hashes")
        tree = cls(hasher=hasher)
        level = list(hashes)
        tree._levels = [level]
        while len(level) > 1:
            level = _parents(level, hasher)
            tree._levels.append(level)
        return tree

    @property
    def hasher(self) -> Hasher:
        """The tree's hash function."""
        return self._hasher

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def append(self, leaf_data: bytes) -> int:
        """Hash ``leaf_data`` as a leaf, append it, and return its index."""
        return self.append_hash(self._hasher.hash_leaf(leaf_data))

    def append_hash(self, leaf_hash: bytes) -> int:
        """Append an already computed leaf hash and return its index."""
        _check_hashes((leaf_hash,), self._hasher, "leaf_hash")
        hc = self._hasher.hash_children
        levels = self._levels
        index = len(levels[0])
        levels[0].append(leaf_hash)
        i, h = index, 0
        while i & 1:
            below = levels[h]
            if len(levels) == h + 1:
                levels.append([])
            levels[h + 1].append(hc(below[i - 1], below[i]))
            i >>= 1
            h += 1
        return index

    def leaf_hash(self, index: int) -> bytes:
        """The hash of leaf ``index``."""
        _check_index(index, self.size, self.size)
        return self._levels[0][index]

    def _subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for ``start`` aligned to the range's enclosing power of two."""
        if start == end:
            return self._hasher.empty_root()
        length = end - start
        if length & (length - 1) == 0:
            height = length.bit_length() - 1
            return self._levels[height][start >> height]
        k = _largest_power_of_two_below(length)
        height = k.bit_length() - 1
        # The right part is itself aligned: recurse on it, the left part is a stored node.
        return self._hasher.hash_children(
            self._levels[height][start >> height], self._subtree(start + k, end)
        )

    def root(self, size: int | None = None) -> bytes:
        """The root at ``size`` leaves (default: the current size)."""
        current = self.size
        if size is None:
            size = current
        elif isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= current:
            raise ConfigurationError(
                f"size must be an integer in [0, {current}]", expected=f"0..{current}", got=size
            )
        cached = self._root_cache
        if cached is not None and cached[0] == size:
            return cached[1]
        root = self._subtree(0, size)
        if size == current:
            self._root_cache = (size, root)
        return root

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Audit path (RFC 9162 §2.1.3.1) for leaf ``index`` in the tree of ``size`` leaves."""
        _check_index(index, size, self.size)
        return _inclusion_path(index, size, self._subtree)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Consistency proof (RFC 9162 §2.1.4.1) from ``old_size`` to ``new_size`` leaves."""
        _check_sizes(old_size, new_size, self.size)
        return _consistency_path(old_size, new_size, self._subtree)

    def __repr__(self) -> str:
        return f"MerkleTree(size={self.size}, hasher={self._hasher.name})"
