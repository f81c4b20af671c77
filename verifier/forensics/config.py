"""Architecture config diff (DESIGN.md §6, Forensics).

Two ``config.json`` files are compared key by key, and the tensor layouts (names and shapes) are
compared too. The report states plainly that a shared architecture is not shared weights: many
unrelated models use the same layer count, width and head layout, so a matching config is never
evidence of copying by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["ARCHITECTURE_NOTE", "ConfigDiff", "config_diff"]

ARCHITECTURE_NOTE = (
    "A shared architecture is not shared weights: unrelated models often use identical configs; "
    "only the weight tests above speak to copying."
)

# Keys that name files, versions or runtimes rather than the architecture.
_IGNORED = {"_name_or_path", "transformers_version", "torch_dtype", "_commit_hash", "auto_map"}


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """Keys equal / different / one-sided, and how much of the tensor layout is shared."""

    same: dict[str, object]
    different: dict[str, tuple[object, object]]
    only_a: dict[str, object]
    only_b: dict[str, object]
    tensors_a: int
    tensors_b: int
    tensors_same_shape: int
    params_a: int
    params_b: int


def config_diff(
    config_a: dict[str, object],
    config_b: dict[str, object],
    tensors_a: dict[str, NDArray[np.float32]],
    tensors_b: dict[str, NDArray[np.float32]],
) -> ConfigDiff:
    """Compare two configs and tensor layouts."""
    ka = {k for k in config_a if k not in _IGNORED}
    kb = {k for k in config_b if k not in _IGNORED}
    same = {k: config_a[k] for k in sorted(ka & kb) if config_a[k] == config_b[k]}
    diff = {k: (config_a[k], config_b[k]) for k in sorted(ka & kb) if config_a[k] != config_b[k]}
    shared = sum(
        1 for n, t in tensors_a.items() if n in tensors_b and tensors_b[n].shape == t.shape
    )
    return ConfigDiff(
        same=same,
        different=diff,
        only_a={k: config_a[k] for k in sorted(ka - kb)},
        only_b={k: config_b[k] for k in sorted(kb - ka)},
        tensors_a=len(tensors_a),
        tensors_b=len(tensors_b),
        tensors_same_shape=shared,
        params_a=int(sum(t.size for t in tensors_a.values())),
        params_b=int(sum(t.size for t in tensors_b.values())),
    )
