"""Recording which samples each batch held (DESIGN §4; REFERENCES "Lightning 2.6": Lightning keeps
no record of it).

Two ways, pick one:

* :class:`IndexedDataset` wraps a map-style dataset so each item is ``(index, *item)``; the
  callback then reads ``batch[0]`` (``ids_from="batch"``, the default). Works with any sampler,
  any number of workers and DDP.
* :class:`RecordingBatchSampler` wraps a batch sampler and remembers the indices of every batch
  it yields, by batch index within the current pass; the callback looks them up by ``batch_idx``
  (``ids_from="sampler"``). DataLoader workers make the sampler run ahead of training, which is
  why the lookup is by index and not "the last batch".
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from attest.errors import ConfigurationError

__all__ = ["IndexedDataset", "RecordingBatchSampler"]


class IndexedDataset:
    """``dataset[i]`` → ``(i, *dataset[i])`` (or ``(i, dataset[i])`` for a non-tuple item)."""

    def __init__(self, dataset: Any) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ConfigurationError("IndexedDataset needs a map-style dataset with __len__")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        item = self.dataset[index]
        if isinstance(item, tuple):
            return (index, *item)
        return (index, item)


class RecordingBatchSampler:
    """A batch sampler that remembers the sample indices of each batch of the current pass."""

    def __init__(self, batch_sampler: Iterable[Sequence[int]]) -> None:
        self.batch_sampler = batch_sampler
        self._lock = threading.Lock()
        self._batches: dict[int, list[int]] = {}

    @property
    def batch_size(self) -> int | None:
        return getattr(self.batch_sampler, "batch_size", None)

    @property
    def drop_last(self) -> bool:
        return bool(getattr(self.batch_sampler, "drop_last", False))

    @property
    def sampler(self) -> Any:
        return getattr(self.batch_sampler, "sampler", None)

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        with self._lock:
            self._batches = {}
        for i, batch in enumerate(self.batch_sampler):
            ids = [int(x) for x in batch]
            with self._lock:
                self._batches[i] = ids
            yield ids

    def ids_for(self, batch_idx: int) -> list[int]:
        """The indices of batch ``batch_idx`` of the current pass (forgotten once read)."""
        with self._lock:
            try:
                return self._batches.pop(batch_idx)
            except KeyError:
                raise ConfigurationError(
                    f"RecordingBatchSampler has no batch {batch_idx} in this pass",
                    got=sorted(self._batches)[:5],
                ) from None
