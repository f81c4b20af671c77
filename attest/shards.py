"""Digests of tensors held in shards, combined into the unsharded digest (DESIGN §4).

Under a sharded strategy (FSDP, DeepSpeed ZeRO-3, ``torch.distributed.checkpoint``) no rank holds
a whole tensor, and gathering every tensor on one rank just to hash it defeats the point of
sharding. Instead each rank hashes the bytes it holds, and rank zero combines a few small pieces
into *exactly* the ``attest-tensors-v1`` content root of the whole tensor (docs/formats.md §2),
so a sharded run's checkpoint digests equal those of its consolidated safetensors file.

The content root is an RFC 6962 Merkle root over fixed chunks of the tensor's canonical byte
string (C order, little-endian). A rank holding bytes ``[start, end)`` therefore:

1. hashes every chunk that lies wholly inside its range (the bulk of the work, in parallel
   across ranks), and
2. keeps the bytes of the at most two chunks it holds only in part (its *edges*, each shorter
   than one chunk).

Rank zero gathers one :class:`ShardPiece` per rank and tensor (chunk hashes plus edge bytes),
checks that the pieces tile ``[0, nbytes)`` with no gap or overlap, joins the edges into the
chunks that straddle shard boundaries, hashes those, and takes the Merkle root over all chunk
hashes in order. Communication per shard is a few hashes and at most two partial chunks.

This module is pure (bytes in, hashes out); the distributed transport (``all_gather_object``
or ``gather_object`` to rank zero) belongs to the training-loop adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from attest.digest_format import TensorDigest, resolve_algorithm
from attest.errors import FormatError
from attest.merkle import root_from_leaf_hashes

__all__ = ["ShardPiece", "combine_shards", "hash_shard", "tensor_from_shards"]


@dataclass(frozen=True)
class ShardPiece:
    """What one rank contributes for one tensor: bytes ``[start, end)`` of ``nbytes``."""

    start: int
    end: int
    chunks: tuple[tuple[int, bytes], ...]  # (chunk index, RFC 6962 leaf hash), whole chunks
    edges: tuple[tuple[int, bytes], ...]  # (byte offset, bytes) of chunks held only in part


def hash_shard(
    data: Any, *, start: int, nbytes: int, algorithm: str = "sha256", chunk_size: int | None = None
) -> ShardPiece:
    """Hash the whole chunks of ``data`` (bytes ``[start, start + len)`` of the tensor)."""
    spec = resolve_algorithm(algorithm, chunk_size)
    view = memoryview(data).cast("B")
    end = start + view.nbytes
    if start < 0 or end > nbytes:
        raise FormatError(
            "shard lies outside the tensor", expected=f"within [0, {nbytes})", got=(start, end)
        )
    c = spec.chunk_size
    chunks: list[tuple[int, bytes]] = []
    edges: list[tuple[int, bytes]] = []
    pos = start
    while pos < end:
        k = pos // c
        chunk_start, chunk_end = k * c, min((k + 1) * c, nbytes)
        piece = view[pos - start : min(end, chunk_end) - start]
        if pos == chunk_start and chunk_end <= end:
            chunks.append((k, spec.hasher.hash_leaf(bytes(piece))))
        else:
            edges.append((pos, bytes(piece)))
        pos += piece.nbytes
    return ShardPiece(start, end, tuple(chunks), tuple(edges))


def combine_shards(
    pieces: Sequence[ShardPiece],
    *,
    nbytes: int,
    algorithm: str = "sha256",
    chunk_size: int | None = None,
) -> bytes:
    """The content root of the whole tensor from every rank's piece (any order)."""
    spec = resolve_algorithm(algorithm, chunk_size)
    c = spec.chunk_size
    ordered = sorted((p for p in pieces if p.end > p.start), key=lambda p: p.start)
    covered = 0
    for p in ordered:
        if p.start != covered:
            raise FormatError(
                "shards must tile the tensor with no gap or overlap",
                expected=f"a shard starting at byte {covered}",
                got=f"[{p.start}, {p.end})",
            )
        covered = p.end
    if covered != nbytes:
        raise FormatError("shards do not cover the whole tensor", expected=nbytes, got=covered)
    hashes: dict[int, bytes] = {}
    partial: dict[int, bytearray] = {}
    for p in ordered:
        hashes.update(p.chunks)
        for offset, data in p.edges:
            buf = partial.setdefault(offset // c, bytearray())
            if (offset // c) * c + len(buf) != offset:
                raise FormatError("shard edges do not join up", got=offset)
            buf += data
    for k, buf in partial.items():
        if len(buf) != min(c, nbytes - k * c):
            raise FormatError(f"chunk {k} is incomplete across the shards", got=len(buf))
        hashes[k] = spec.hasher.hash_leaf(bytes(buf))
    count = -(-nbytes // c)
    if sorted(hashes) != list(range(count)):
        raise FormatError("shards do not supply every chunk", expected=count, got=len(hashes))
    return root_from_leaf_hashes([hashes[k] for k in range(count)], hasher=spec.hasher)


def tensor_from_shards(
    name: str,
    dtype: str,
    shape: Sequence[int],
    pieces: Sequence[ShardPiece],
    *,
    nbytes: int,
    algorithm: str = "sha256",
    chunk_size: int | None = None,
) -> TensorDigest:
    """The :class:`TensorDigest` of a tensor known only through its shards."""
    root = combine_shards(pieces, nbytes=nbytes, algorithm=algorithm, chunk_size=chunk_size)
    return TensorDigest(name, dtype, tuple(shape), nbytes, content_root=root)
