"""attest.callbacks: record a training run's lineage from the training loop (DESIGN §4).

``LineageCallback`` (Lightning) is the one-line integration; :class:`Recorder` is the
framework-free core it adapts, usable from a plain PyTorch loop.
"""

from __future__ import annotations

from .info import Component, DatasetInfo, ModelInfo, Parent, SamplerInfo, Shard
from .lightning import LineageCallback
from .recorder import Recorder
from .sampler import IndexedDataset, RecordingBatchSampler

__all__ = [
    "Component",
    "DatasetInfo",
    "IndexedDataset",
    "LineageCallback",
    "ModelInfo",
    "Parent",
    "Recorder",
    "RecordingBatchSampler",
    "SamplerInfo",
    "Shard",
]
