"""Optimizer steps as the recorder buffers them, and the values ``train.steps`` and
``data.order`` carry (docs/formats.md §3).

Apart from the recorder because these are pure functions over plain values: the exact numbers
and bytes the records hold, testable without a worker thread or a spool. A :class:`Step` holds
what the training loop handed over, unconverted (tensors stay tensors until the worker thread
calls :func:`finite` and :func:`sample_ids`), so recording a step costs training nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Segment",
    "Step",
    "finite",
    "ints_json",
    "order_json",
    "sample_ids",
    "segments",
]


@dataclass
class Step:
    """One optimizer step as the training loop reported it (see ``Recorder.step``)."""

    loss: Any
    lr: float
    grad_norm: Any
    ids: Any
    epoch: int
    batch: int


@dataclass(frozen=True)
class Segment:
    """The ids of consecutive buffered steps of one epoch: one ``data.order`` record."""

    epoch: int
    position: int  # the epoch's batch index of the first step
    batch_size: int  # ids per step (the most any of these steps saw)
    ids: list[int]


def segments(steps: Sequence[Step], ids: Sequence[list[int]]) -> list[Segment]:
    """Cut ``steps`` (with ``ids[i]`` the sample ids of ``steps[i]``) where the epoch changes."""
    out: list[Segment] = []
    start = 0
    for i, s in enumerate(steps):
        if i + 1 == len(steps) or steps[i + 1].epoch != s.epoch:
            run = ids[start : i + 1]
            joined = [n for x in run for n in x]
            out.append(Segment(s.epoch, steps[start].batch, max(len(x) for x in run), joined))
            start = i + 1
    return out


def finite(value: Any) -> float | None:
    """A loss or gradient norm as a float, or None when it is absent, NaN or infinite (RFC 8785
    has no encoding for those). A list is per-tensor norms: their total L2 norm is taken."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        import torch

        value = torch.linalg.vector_norm(torch.stack([torch.as_tensor(v) for v in value]))
    v = float(value)
    return v if v == v and v not in (float("inf"), float("-inf")) else None


def sample_ids(value: Any) -> list[int]:
    """A step's sample ids (a sequence of ints or a 1-d tensor) as a list of ints."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    return [int(x) for x in value]


def ints_json(ids: list[int]) -> bytes:
    """RFC 8785 bytes of a list of integers (|n| < 2**53, as sample ids are), without the
    general-purpose canonicaliser: integers serialise as plain decimals, no spaces."""
    return ("[" + ",".join(map(str, ids)) + "]").encode()


def order_json(epoch: int, ids: list[int]) -> bytes:
    """RFC 8785 bytes of the ``{"epoch": ..., "ids": [...]}`` blob a ``data.order`` names."""
    return b'{"epoch":' + str(epoch).encode() + b',"ids":' + ints_json(ids) + b"}"
