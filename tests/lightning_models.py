"""Small LightningModules with the features real models have and the demo's TinyGPT lacks (tied
weights, normalisation buffers, a scheduler), importable by the verifier when it rebuilds them,
and the quiet Trainer the tests run them with."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import Dataset


def quiet_trainer(max_steps: int, *callbacks: Callback, **options: Any) -> L.Trainer:
    """A Trainer for ``max_steps`` steps with ``callbacks`` and no logger, progress bar or model
    summary; checkpointing only through a ``ModelCheckpoint`` among ``callbacks``. ``options``
    go to the Trainer (devices, strategy, determinism, …)."""
    return L.Trainer(
        max_steps=max_steps,
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


class Blobs(Dataset[tuple[int, torch.Tensor, torch.Tensor]]):
    """Item ``i`` is ``(i, x, y)``: two noisy classes in ``dim`` dimensions."""

    def __init__(self, n: int = 40, dim: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        self.y = (self.x.sum(1) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        return i, self.x[i], self.y[i]


class StreamBlobs(torch.utils.data.IterableDataset[tuple[int, torch.Tensor, torch.Tensor]]):
    """:class:`Blobs` as a stream: samples come in order and cannot be loaded by id."""

    def __iter__(self) -> Any:
        yield from (Blobs()[i] for i in range(len(Blobs())))


class NoisyBlobs(Blobs):
    """:class:`Blobs` with random augmentation drawn from the global torch generator."""

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        j, x, y = super().__getitem__(i)
        return j, x + 0.1 * torch.randn_like(x), y


class TiedNorm(L.LightningModule):
    """A classifier with a BatchNorm layer (running statistics are buffers), two linear layers
    sharing one weight, AdamW and a step-wise scheduler."""

    def __init__(self, dim: int = 8, hidden: int = 16, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.inp = torch.nn.Linear(dim, hidden)
        self.norm = torch.nn.BatchNorm1d(hidden)
        self.mid = torch.nn.Linear(hidden, hidden, bias=False)
        self.out = torch.nn.Linear(hidden, hidden, bias=False)
        self.out.weight = self.mid.weight
        self.head = torch.nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.inp(x)))
        return self.head(torch.relu(self.out(torch.relu(self.mid(h)))))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        _, x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"])
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Dropped(TiedNorm):
    """:class:`TiedNorm` with dropout: replay reproduces it only from the RNG state the step
    really started with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.nn.functional.dropout(x, 0.3, self.training))


class Validated(Dropped):
    """:class:`Dropped` with a validation step: a validation run between two training steps
    draws from the global generator (its loader's seed)."""

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        _, x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)


class DroppedLogits(TiedNorm):
    """Dropout right before a head initialised with large weights: batch 0's loss on the init
    depends on which units the masks drop."""

    def __init__(self, dim: int = 8, hidden: int = 16, lr: float = 0.05) -> None:
        super().__init__(dim, hidden, lr)
        torch.nn.init.normal_(self.head.weight, std=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.inp(x)))
        h = torch.relu(self.out(torch.relu(self.mid(h))))
        return self.head(torch.nn.functional.dropout(h, 0.5, self.training))


class ManualSteps(TiedNorm):
    """:class:`TiedNorm` stepping its optimizer itself (Lightning's manual optimization)."""

    def __init__(self, dim: int = 8, hidden: int = 16, lr: float = 0.05) -> None:
        super().__init__(dim, hidden, lr)
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        _, x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        opt.zero_grad()  # type: ignore[union-attr]
        self.manual_backward(loss)
        opt.step()  # type: ignore[union-attr]
        return loss


class RmsProp(TiedNorm):
    """:class:`TiedNorm` on RMSprop with momentum (its update is not bounded by Adam's rule)."""

    def configure_optimizers(self) -> Any:
        return torch.optim.RMSprop(self.parameters(), lr=0.01, momentum=0.9)


class AdaGrad(TiedNorm):
    """:class:`TiedNorm` on Adagrad, whose accumulators exist before the first step."""

    def configure_optimizers(self) -> Any:
        return torch.optim.Adagrad(self.parameters(), lr=0.1, initial_accumulator_value=0.1)


class NAdamModel(TiedNorm):
    """:class:`TiedNorm` on NAdam (keeps ``betas`` like Adam, steps otherwise)."""

    def configure_optimizers(self) -> Any:
        return torch.optim.NAdam(self.parameters(), lr=0.05)


class Plateau(TiedNorm):
    """:class:`TiedNorm` on ReduceLROnPlateau, which keeps ``best = inf`` in its state and
    steps on a monitored metric."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "monitor": "train_loss", "interval": "step"},
        }


class RAdamModel(TiedNorm):
    """:class:`TiedNorm` on RAdam (unrectified first steps, bounded by the gradient norms)."""

    def configure_optimizers(self) -> Any:
        return torch.optim.RAdam(self.parameters(), lr=0.05)


class ManualWarmup(TiedNorm):
    """:class:`TiedNorm` warming its learning rate up in ``optimizer_step``, the recipe
    Lightning documents for that hook."""

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=0.05)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, closure: Any) -> None:  # type: ignore[override]
        scale = min(1.0, float(self.trainer.global_step + 1) / 4)
        for group in optimizer.param_groups:
            group["lr"] = scale * 0.05
        optimizer.step(closure=closure)
