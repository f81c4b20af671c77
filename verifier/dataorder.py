"""The committed data order as a step → sample-ids schedule (docs/verifying.md, check 2).

A run commits the sample ids it trains on in ``data.order`` records: each names a blob
``{"epoch": e, "ids": [...]}``, the number of ids per step ``batch_size`` (global under DDP: all
ranks' ids of one step, rank 0 first) and ``position``, the epoch's batch index of the first
batch the record applies to. Two shapes of blob are read:

- a *segment* (what the recorder writes at each flush): ``ids`` lists exactly the batches of the
  steps that follow, batch ``position`` first, so step ``k`` of the segment is
  ``ids[k·B : (k+1)·B]`` and the segment covers ``ceil(len(ids) / B)`` steps (the last batch of
  an epoch may be shorter);
- a *whole epoch* (every sample id of the epoch, ``len(ids)`` equal to ``data.manifest``'s dataset
  size, ``position > 0``): step ``k`` of the segment is batch ``position + k``; a short final
  batch counts unless the sampler's ``drop_last`` is set.

Segments follow each other in log order: the first starts at step 0, each next one where the one
before ran out. A ``run.resume`` at step ``s`` abandons what was scheduled from ``s`` on (steps
logged after the checkpoint it resumes from are superseded) and the next ``data.order`` starts
at ``s``. :meth:`DataSchedule.batch_ids` answers ``None`` for a step no segment covers.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from attest.canonical import canonical_json, sha256_digest
from attest.errors import FormatError
from attest.records import Record

__all__ = ["DataSchedule", "Segment"]

_SAFE_INT = 2**53 - 1
_SHA256_PREFIX = "sha256:"
_HEX = type(hashlib.sha256()).hexdigest


@dataclass(frozen=True)
class Segment:
    """Steps ``[start, start + count)`` take batches ``base, base+1, …`` of ``ids``."""

    start: int
    count: int
    epoch: int
    position: int
    batch: int
    base: int
    ids: tuple[int, ...]
    order_seq: int

    @property
    def stop(self) -> int:
        return self.start + self.count

    def ids_at(self, step: int) -> list[int]:
        b = self.base + (step - self.start)
        return list(self.ids[b * self.batch : (b + 1) * self.batch])

    def digest_at(self, step: int) -> str:
        """``sha256:`` of the RFC 8785 encoding of :meth:`ids_at` (the batch digest of
        docs/formats.md §3.2). RFC 8785 writes a list of safe-range integers as their decimal
        forms joined by commas in brackets, so each id is formatted once per segment."""
        texts = self._decimals()
        if self.ids and not texts:  # an id RFC 8785 refuses: the reference raises FormatError
            return sha256_digest(canonical_json(self.ids_at(step)))
        b = self.base + (step - self.start)
        text = b"[" + b",".join(texts[b * self.batch : (b + 1) * self.batch]) + b"]"
        return _SHA256_PREFIX + hashlib.sha256(text).hexdigest()

    def digests(self, start: int, stop: int) -> list[str]:
        """``[digest_at(s) for s in range(start, stop)]`` for steps this segment covers, a
        whole range at a time: the batches are consecutive runs of ``batch`` ids (only the
        epoch's last may be shorter), so ``zip`` cuts them and ``map`` joins and hashes each
        at C speed, with no Python statement per step."""
        texts = self._decimals()
        size, first, count = self.batch, self.base + (start - self.start), stop - start
        if (self.ids and not texts) or size <= 0 or first < 0 or count <= 0:
            # an id RFC 8785 refuses (digest_at raises FormatError), or not the usual layout
            return [self.digest_at(s) for s in range(start, stop)]
        ids = texts[first * size : (first + count) * size]
        whole, rest = divmod(len(ids), size)
        if whole + (rest > 0) != count:  # a step past the last id: digest_at writes "[]"
            return [self.digest_at(s) for s in range(start, stop)]
        batches = zip(*[iter(ids)] * size, strict=False)  # the `whole` full batches
        lists = map(b"[%b]".__mod__, map(b",".join, batches))
        out = list(map(_SHA256_PREFIX.__add__, map(_HEX, map(hashlib.sha256, lists))))
        if rest:  # the epoch's short last batch
            out.append(
                _SHA256_PREFIX + _HEX(hashlib.sha256(b"[%b]" % b",".join(ids[whole * size :])))
            )
        return out

    def _decimals(self) -> tuple[bytes, ...]:
        """The decimal form of every id, ASCII (computed once), or ``()`` when an id is outside
        the range RFC 8785 writes exactly."""
        cache = self.__dict__
        texts: tuple[bytes, ...] | None = cache.get("_texts")
        if texts is None:
            safe = self.ids and min(self.ids) >= -_SAFE_INT and max(self.ids) <= _SAFE_INT
            # msgspec writes the list as RFC 8785 does, "[1,2,...]", in one C call
            texts = tuple(msgspec.json.encode(self.ids)[1:-1].split(b",")) if safe else ()
            cache["_texts"] = texts
        return texts


@dataclass(frozen=True)
class DataSchedule:
    """The segments in log order. They are sorted by ``start`` and disjoint: each new segment
    starts where the previous one stops, and a ``run.resume`` at ``s`` cuts every segment at
    ``s`` before the next one starts there. So the segment covering a step, if any, is the last
    one starting at or before it (a binary search)."""

    segments: tuple[Segment, ...]
    problems: tuple[str, ...]

    def segment_at(self, step: int) -> Segment | None:
        """The segment that schedules ``step``, or ``None``."""
        cache = self.__dict__
        starts: list[int] | None = cache.get("_starts")
        if starts is None:
            starts = cache["_starts"] = [seg.start for seg in self.segments]
        i = bisect.bisect_right(starts, step) - 1
        if i >= 0:
            seg = self.segments[i]
            if seg.start <= step < seg.stop:
                return seg
        return None

    def batch_ids(self, step: int) -> list[int] | None:
        seg = self.segment_at(step)
        return None if seg is None else seg.ids_at(step)

    def batch_digest(self, step: int) -> str | None:
        """``sha256:`` of the canonical JSON of :meth:`batch_ids`, or ``None`` likewise."""
        seg = self.segment_at(step)
        return None if seg is None else seg.digest_at(step)

    def batch_digests(self, start: int, stop: int) -> list[str | None]:
        """``[batch_digest(s) for s in range(start, stop)]``, a segment at a time
        (:meth:`Segment.digests`)."""
        segments = self.segments
        if any(a.stop > b.start for a, b in itertools.pairwise(segments)):
            return [self.batch_digest(s) for s in range(start, stop)]  # not the usual layout
        out: list[str | None] = []
        step = start
        for seg in segments:
            if seg.stop <= step or seg.count <= 0:
                continue
            if seg.start >= stop:
                break
            if seg.start > step:
                out += [None] * (seg.start - step)
                step = seg.start
            end = min(seg.stop, stop)
            out += seg.digests(step, end)
            step = end
        out += [None] * (stop - step)
        return out

    @classmethod
    def from_records(cls, records: Sequence[Record], blob: Callable[[str], Any]) -> DataSchedule:
        size: int | None = None
        drop_last = False
        for r in records:
            if r.type == "data.manifest":
                dataset, sampler = r.body.get("dataset"), r.body.get("sampler")
                if isinstance(dataset, dict) and isinstance(dataset.get("size"), int):
                    size = dataset["size"]
                if isinstance(sampler, dict):
                    drop_last = sampler.get("drop_last") is True
                break
        segments: list[Segment] = []
        problems: list[str] = []
        next_start = 0
        for r in records:
            if r.type == "data.order":
                ids = _order_ids(blob(str(r.body["order"])), r.body["epoch"], where=r.seq)
                bs, position = int(r.body["batch_size"]), int(r.body["position"])
                if bs <= 0 or position < 0:
                    raise FormatError(
                        f"record {r.seq}: data.order batch_size must be positive and position"
                        " non-negative",
                        got={"batch_size": bs, "position": position},
                    )
                whole = size is not None and len(ids) == size and position > 0
                total = len(ids) / bs
                batches = math.floor(total) if whole and drop_last else math.ceil(total)
                base = position if whole else 0
                seg = Segment(
                    next_start,
                    max(batches - base, 0),
                    int(r.body["epoch"]),
                    position,
                    bs,
                    base,
                    ids,
                    r.seq,
                )
                segments.append(seg)
                next_start = seg.stop
            elif r.type == "run.resume":
                step = int(r.body["step"])
                if step > next_start:
                    problems.append(
                        f"record {r.seq}: run.resume at step {step}, but the committed order"
                        f" only reaches step {next_start}"
                    )
                kept = [s for s in segments if s.start < step]
                segments = [
                    replace(s, count=min(s.count, step - s.start)) if s.stop > step else s
                    for s in kept
                ]
                next_start = step
        return cls(tuple(segments), tuple(problems))


def _order_ids(doc: Any, epoch: object, *, where: int) -> tuple[int, ...]:
    if not isinstance(doc, dict) or set(doc) != {"epoch", "ids"}:
        raise FormatError(f"record {where}: data.order blob must be {{'epoch', 'ids'}}")
    if doc["epoch"] != epoch:
        raise FormatError(
            f"record {where}: data.order blob is for another epoch",
            expected=epoch,
            got=doc["epoch"],
        )
    ids = doc["ids"]
    if not isinstance(ids, list) or not (
        set(map(type, ids)) <= {int}  # the usual case, checked at C speed
        or all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    ):
        raise FormatError(f"record {where}: data.order blob ids must be a list of integers")
    return tuple(ids)
