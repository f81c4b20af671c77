"""Copies of training state taken on the training thread, for the recorder's worker to hash.

Apart from the recorder because this is what a checkpoint costs training: hashing, writing
and signing happen on the recorder's worker thread, so a copy only copies. CUDA tensors go into
pinned memory with ``non_blocking`` and a CUDA event, so the training thread does not wait for
the copy; the worker waits for the event in :meth:`Snapshot.get` before it reads them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from attest.statefiles import capture_rng

if TYPE_CHECKING:
    import torch

__all__ = ["Snapshot", "TrainingState", "copy_optimizer_state"]


class Snapshot:
    """CPU copies of tensors, taken on the training thread; :meth:`get` waits for the copies."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        import torch

        self._event: Any = None
        self.tensors: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            t = t.detach()
            if t.device.type == "cuda":
                buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                buf.copy_(t, non_blocking=True)
                self._event = self._event or torch.cuda.Event()  # type: ignore[no-untyped-call]
            else:
                buf = t.clone(memory_format=torch.contiguous_format)
            self.tensors[name] = buf
        if self._event is not None:
            self._event.record()

    def get(self) -> dict[str, torch.Tensor]:
        if self._event is not None:
            self._event.synchronize()
        return self.tensors


def copy_optimizer_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """An optimizer ``state_dict`` with every tensor copied to the CPU and the rest deep-copied,
    so the next step cannot change what the worker hashes."""
    import torch

    def copy_value(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.detach().to("cpu", copy=True)
        return copy.deepcopy(v)

    return {
        "state": {
            pid: {k: copy_value(v) for k, v in e.items()} for pid, e in state["state"].items()
        },
        "param_groups": copy.deepcopy(state["param_groups"]),
    }


@dataclass(frozen=True)
class TrainingState:
    """What a ``weights.checkpoint`` covers, copied at one step: model weights, optimizer and
    scheduler state, RNG states."""

    weights: Snapshot
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    rng: dict[str, Any]

    @classmethod
    def capture(cls, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> TrainingState:
        """Copy the state now; ``optimizer`` and ``scheduler`` may be None (nothing attached)."""
        weights = Snapshot(model.state_dict())
        opt = (
            copy_optimizer_state(optimizer.state_dict())
            if optimizer is not None
            else {"state": {}, "param_groups": []}
        )
        sched = copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None
        return cls(weights, opt, sched, capture_rng())
