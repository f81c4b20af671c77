"""A tiny GPT-style language model, as a LightningModule.

Small enough to train on two CPU cores in about a minute; shaped like the real thing (token and
position embeddings, pre-LayerNorm blocks with causal self-attention and a 4x MLP, a final
LayerNorm and a linear head) so the verifier's from-scratch checks see the tensors they would see
in a large model. The constructor's arguments are saved as hyperparameters, which is what lets a
verifier rebuild the exact init from the recorded import path, arguments and seed.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["TinyGPT"]


class _Block(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_head, batch_first=True)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        out: torch.Tensor = x + self.mlp(self.ln_2(x))
        return out


class TinyGPT(L.LightningModule):
    """A character-level GPT. Batches are ``(ids, x, y)``; ``ids`` are dataset indices."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 64,
        n_layer: int = 2,
        n_head: int = 4,
        block_size: int = 32,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2 and "pos" not in name:
                nn.init.normal_(p, mean=0.0, std=0.02)
        mask = torch.triu(torch.full((block_size, block_size), float("-inf")), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.tok(x) + self.pos(torch.arange(t, device=x.device))
        mask: torch.Tensor = self.mask  # type: ignore[assignment]
        for block in self.blocks:
            h = block(h, mask[:t, :t])
        logits: torch.Tensor = self.head(self.ln_f(h))
        return logits

    def loss(self, batch: Any) -> torch.Tensor:
        _, x, y = batch
        logits = self(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _Warmup(20))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @staticmethod
    def expected_initial_loss(vocab_size: int) -> float:
        """ln V: the cross-entropy of a uniform prediction, where a fresh init starts."""
        return math.log(vocab_size)


class _Warmup:
    """Linear warm-up factor; a class (not a lambda) so scheduler state stays picklable."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / self.steps)
