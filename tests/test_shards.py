"""Sharded digests: any way of cutting a tensor across ranks combines to the unsharded digest."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.digest import digest_arrays
from attest.errors import FormatError
from attest.shards import hash_shard, tensor_from_shards

CHUNK = 16


def cuts(nbytes: int, points: list[int]) -> list[tuple[int, int]]:
    edges = sorted({0, nbytes, *(p % (nbytes + 1) for p in points)})
    return list(itertools.pairwise(edges))


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=200),
    points=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    algorithm=st.sampled_from(["sha256", "blake3"]),
)
def test_any_sharding_gives_the_unsharded_digest(
    data: bytes, points: list[int], algorithm: str
) -> None:
    whole = digest_arrays([("w", "U8", (len(data),), data)], algorithm=algorithm, chunk_size=CHUNK)
    pieces = [
        hash_shard(data[s:e], start=s, nbytes=len(data), algorithm=algorithm, chunk_size=CHUNK)
        for s, e in cuts(len(data), points)
    ]
    combined = tensor_from_shards(
        "w",
        "U8",
        (len(data),),
        pieces[::-1],
        nbytes=len(data),
        algorithm=algorithm,
        chunk_size=CHUNK,
    )
    assert combined == whole.tensors[0]


def test_float_tensor_split_by_rows_like_fsdp() -> None:
    w = np.random.default_rng(0).standard_normal((10, 7)).astype(np.float32)
    whole = digest_arrays([("w", "F32", w.shape, w)], chunk_size=CHUNK)
    flat = w.tobytes()
    rows = np.array_split(np.arange(10), 3)
    pieces = [
        hash_shard(w[r].tobytes(), start=int(r[0]) * 28, nbytes=len(flat), chunk_size=CHUNK)
        for r in rows
    ]
    assert (
        tensor_from_shards("w", "F32", w.shape, pieces, nbytes=len(flat), chunk_size=CHUNK)
        == (whole.tensors[0])
    )


@pytest.mark.parametrize("attack", ["gap", "overlap", "flipped-byte", "missing-rank"])
def test_bad_or_altered_shards_do_not_combine_to_the_digest(attack: str) -> None:
    data = bytes(range(100))
    whole = digest_arrays([("w", "U8", (100,), data)], chunk_size=CHUNK).tensors[0]
    ranges = {
        "gap": [(0, 40), (41, 100)],
        "overlap": [(0, 50), (45, 100)],
        "missing-rank": [(0, 50)],
    }.get(attack, [(0, 50), (50, 100)])
    pieces = [hash_shard(data[s:e], start=s, nbytes=100, chunk_size=CHUNK) for s, e in ranges]
    if attack == "flipped-byte":
        tampered = bytearray(data[50:])
        tampered[3] ^= 1
        pieces[1] = hash_shard(bytes(tampered), start=50, nbytes=100, chunk_size=CHUNK)
        combined = tensor_from_shards("w", "U8", (100,), pieces, nbytes=100, chunk_size=CHUNK)
        assert combined.content_root != whole.content_root
        return
    with pytest.raises(FormatError):
        tensor_from_shards("w", "U8", (100,), pieces, nbytes=100, chunk_size=CHUNK)
