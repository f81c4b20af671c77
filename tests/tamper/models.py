"""A tiny classifier and its dataset for the tamper corpus.

Importable as ``tamper.models:TinyMLP`` / ``tamper.models:TinyData`` (tests/ is on ``sys.path``
under pytest): the ``run.start`` import paths the honest runs record, which the verifier's
init re-creation and replay rebuild.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

__all__ = ["TinyData", "TinyMLP", "make_data"]


class TinyMLP(nn.Module):
    """An ``encoder`` (two Linear layers) and a ``head``; SGD with momentum."""

    def __init__(self, d_in: int = 8, hidden: int = 32, classes: int = 4, lr: float = 0.1) -> None:
        super().__init__()
        self.lr = lr
        self.encoder = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden))
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.encoder(x)))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def make_data(
    samples: int, *, d_in: int = 8, classes: int = 4, seed: int = 1234
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed synthetic classification set: ``x ~ N(0, 1)``, labels from a fixed linear map."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, d_in, generator=g)
    w = torch.randn(d_in, classes, generator=g)
    return x, (x @ w).argmax(dim=1)


class TinyData(Dataset[tuple[int, torch.Tensor, torch.Tensor]]):
    """Item ``i`` is ``(i, x_i, y_i)`` of :func:`make_data`."""

    def __init__(
        self, samples: int = 24, d_in: int = 8, classes: int = 4, seed: int = 1234
    ) -> None:
        self.x, self.y = make_data(samples, d_in=d_in, classes=classes, seed=seed)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        return i, self.x[i], self.y[i]
