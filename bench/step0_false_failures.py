"""False failures and power of ``scratch.step0_loss`` on batch 0 (docs/verifying.md, check 3).

For each seed a fresh model is built (seed, then construct) and batch 0 (8 samples drawn with
the seed) is run in training mode, as the check recomputes it. Reported per model:

- how often the loss falls below the floor ``ln V − max(0.1·ln V, 0.5)`` (applied when batch 0
  cannot be recomputed) and below the former floor ``0.9·ln V``;
- the label z-score (:func:`attest.verifier.scratch._logit_stats`): how many standard errors the
  true-label loss sits below the loss of the same logits on random labels, its most negative
  value over the seeds, and how often it passes ``−STEP0_Z``.

Models: the demo TinyGPT on the demo text (V = its character set), and two MLPs on Gaussian
data with 2 and 10 classes (large logits: the output layer is initialised with std 2). Then the
power side: the TinyGPT trained 25, 50 and 100 steps, presented as an init.

    .venv/bin/python bench/step0_false_failures.py [--seeds 200]
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from attest.demo.data import CharDataset
from attest.demo.model import TinyGPT
from attest.verifier.scratch import STEP0_MARGIN, STEP0_MIN_MARGIN, STEP0_Z, _logit_stats


class _Classes(torch.utils.data.Dataset[tuple[int, torch.Tensor, torch.Tensor]]):
    def __init__(self, classes: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(256, 16, generator=g)
        self.y = torch.randint(0, classes, (256,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        return i, self.x[i], self.y[i]


def _mlp(classes: int) -> nn.Module:
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, classes))
    nn.init.normal_(model[3].weight, std=2.0)
    return model


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _loss(model: nn.Module, batch: Any) -> float:
    _, x, y = batch
    z = model(x)
    return float(nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1)))


def _row(name: str, vocab: int, losses: list[float], zs: list[float]) -> dict[str, Any]:
    ln_v = math.log(vocab)
    floor = ln_v - max(STEP0_MARGIN * ln_v, STEP0_MIN_MARGIN)
    return {
        "model": name,
        "vocab": vocab,
        "seeds": len(losses),
        "below_floor": sum(v < floor for v in losses) / len(losses),
        "below_former_floor_0.9_ln_v": sum(v < 0.9 * ln_v for v in losses) / len(losses),
        "label_z_min": min(zs),
        "label_z_below_threshold": sum(z < -STEP0_Z for z in zs) / len(zs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "step0.json"))
    args = ap.parse_args()
    text = CharDataset(sentences=400, seed=7, block_size=32)
    sets: list[tuple[str, Any, Any, int]] = [
        ("tinygpt", lambda: TinyGPT(text.vocab_size, 32, 2, 4, 32), text, text.vocab_size),
        ("mlp-2-classes", lambda: _mlp(2), _Classes(2), 2),
        ("mlp-10-classes", lambda: _mlp(10), _Classes(10), 10),
    ]
    rows = []
    for name, build, data, vocab in sets:
        losses, zs = [], []
        for seed in range(args.seeds):
            _seed(seed)
            model = build().train()
            batch = default_collate(
                [data[i] for i in random.Random(seed).sample(range(len(data)), 8)]
            )
            with torch.no_grad():
                losses.append(_loss(model, batch))
                stats = _logit_stats(model, batch)
            assert stats is not None and stats.z is not None
            zs.append(stats.z)
        rows.append(_row(name, vocab, losses, zs))
        print(json.dumps(rows[-1]))
    power = []
    for steps in (25, 50, 100):
        _seed(1000)
        model = TinyGPT(text.vocab_size, 32, 2, 4, 32).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        order = random.Random(1).choices(range(len(text)), k=8 * steps)
        for s in range(steps):
            batch = default_collate([text[i] for i in order[8 * s : 8 * s + 8]])
            opt.zero_grad()
            _, x, y = batch
            z = model(x)
            nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1)).backward()
            opt.step()
        batch = default_collate([text[i] for i in random.Random(2).sample(range(len(text)), 8)])
        with torch.no_grad():
            stats = _logit_stats(model, batch)
            loss = _loss(model, batch)
        assert stats is not None
        power.append(
            {
                "trained_steps": steps,
                "loss": loss,
                "ln_v": math.log(text.vocab_size),
                "label_z": stats.z,
            }
        )
        print(json.dumps(power[-1]))
    out = {
        "benchmark": "step0_false_failures",
        "threshold_z": STEP0_Z,
        "honest": rows,
        "trained": power,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
